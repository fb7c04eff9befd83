"""Multi-task masking schemes: which inputs a NEDS model sees and which it must predict.

Every function here is a pure function of shapes, a few per-sample facts and a
`torch.Generator`, so masks are reproducible and testable in isolation. The collator draws one
scheme per trial and calls :func:`build_masks`.

Mask conventions (True = hidden from the input; target masks True = scored in the loss):

* `spike_mask` `(B, T, N)`, `spike_target_mask` `(B, T, N)`;
* `behavior_mask` `(B, T, M)` over the behaviour modalities in config order; a trial-level
  variable with one token uses bin 0 (all bins when spread over T tokens).

NEDS schemes (per trial): ``neural`` (all spikes hidden), ``behavior`` (all behaviour hidden),
``within_spikes`` (random bins of spikes), ``within_behavior`` (each behaviour its own random bins
/ tokens), ``cross_modal`` (the same random bins in every modality). MtM schemes (spike-only
configuration): ``neuron`` (random neurons, all bins), ``causal`` (random bins, causal attention),
``intra_region`` (everything outside one region hidden, random neurons inside it scored),
``inter_region`` (every neuron of one region hidden and scored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .configuration_neds import MTM_SCHEMES, NEDS_SCHEMES, NedsConfig

#: Fixed evaluation protocols; ``encoding:<behaviour>`` shows only that behaviour.
EVAL_PROTOCOLS = ("encoding", "decoding")


@dataclass
class Masks:
    """The masks of one batch (see the module docstring for shapes and meaning)."""

    spike_mask: torch.Tensor
    spike_target_mask: torch.Tensor
    behavior_mask: torch.Tensor
    causal_attention: torch.Tensor


def _bernoulli(shape: Sequence[int], ratio: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator) < ratio


def _at_least_one(selected: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Make sure a 1-D selection is not empty by selecting one random entry if it is."""
    if selected.numel() and not bool(selected.any()):
        selected = selected.clone()
        selected[int(torch.randint(selected.numel(), (1,), generator=generator))] = True
    return selected


def _token_counts(config: NedsConfig) -> list[int]:
    return [config.modality_num_tokens(spec) for spec in config.behavior_modalities]


def build_masks(
    config: NedsConfig,
    schemes: Sequence[str],
    neuron_counts: Sequence[int],
    num_neurons: int,
    generator: torch.Generator,
    mask_ratio: float | None = None,
    causal_mask_ratio: float | None = None,
    neuron_regions: Sequence[Sequence[str] | None] | None = None,
) -> Masks:
    """Masks for a batch whose sample `b` uses `schemes[b]`.

    Args:
        config: the model configuration (modalities, time bins, token layout).
        schemes: one scheme or evaluation protocol name per sample.
        neuron_counts: real neurons of each sample (the rest of `num_neurons` is padding).
        num_neurons: padded neuron dimension N of the batch.
        generator: source of all randomness.
        mask_ratio: ratio for ratio-based schemes (default `config.mask_ratio`).
        causal_mask_ratio: ratio of the causal scheme (default `config.causal_mask_ratio`).
        neuron_regions: per sample, the region of each real neuron (region schemes only).
    """
    ratio = config.mask_ratio if mask_ratio is None else mask_ratio
    causal_ratio = config.causal_mask_ratio if causal_mask_ratio is None else causal_mask_ratio
    batch_size, num_bins = len(schemes), config.num_time_bins
    behavior_specs = config.behavior_modalities
    token_counts = _token_counts(config)
    spike_mask = torch.zeros(batch_size, num_bins, num_neurons, dtype=torch.bool)
    spike_target = torch.zeros_like(spike_mask)
    behavior_mask = torch.zeros(batch_size, num_bins, len(behavior_specs), dtype=torch.bool)
    causal = torch.zeros(batch_size, dtype=torch.bool)

    for sample, scheme in enumerate(schemes):
        real = neuron_counts[sample]
        if scheme == "neural":
            spike_mask[sample, :, :real] = True
        elif scheme == "behavior":
            behavior_mask[sample] = True
        elif scheme == "within_spikes":
            bins = _at_least_one(_bernoulli((num_bins,), ratio, generator), generator)
            spike_mask[sample, bins, :real] = True
        elif scheme == "within_behavior":
            for column, count in enumerate(token_counts):
                tokens = _bernoulli((count,), ratio, generator)
                behavior_mask[sample, :count, column] = tokens
            if behavior_specs and not bool(behavior_mask[sample].any()):
                column = int(torch.randint(len(behavior_specs), (1,), generator=generator))
                token = int(torch.randint(token_counts[column], (1,), generator=generator))
                behavior_mask[sample, token, column] = True
        elif scheme == "cross_modal":
            bins = _at_least_one(_bernoulli((num_bins,), ratio, generator), generator)
            spike_mask[sample, bins, :real] = True
            for column, count in enumerate(token_counts):
                if count == num_bins:
                    behavior_mask[sample, :, column] = bins
                else:  # a one-token trial-level variable: hidden with the same ratio
                    behavior_mask[sample, 0, column] = _bernoulli((1,), ratio, generator)[0]
        elif scheme == "neuron":
            neurons = _at_least_one(_bernoulli((real,), ratio, generator), generator)
            spike_mask[sample, :, :real] = neurons
        elif scheme == "causal":
            bins = _at_least_one(_bernoulli((num_bins,), causal_ratio, generator), generator)
            spike_mask[sample, bins, :real] = True
            causal[sample] = True
        elif scheme in ("inter_region", "intra_region"):
            regions = _sample_regions(neuron_regions, sample, real)
            names = sorted(set(regions))
            target_region = names[int(torch.randint(len(names), (1,), generator=generator))]
            inside = torch.tensor([region == target_region for region in regions])  # (real,)
            if scheme == "inter_region":
                spike_mask[sample, :, :real] = inside
            else:
                chosen = _bernoulli((real,), ratio, generator) & inside
                if not bool(chosen.any()):
                    candidates = torch.nonzero(inside).flatten()
                    pick = int(torch.randint(len(candidates), (1,), generator=generator))
                    chosen[candidates[pick]] = True
                spike_mask[sample, :, :real] = ~inside | chosen
                spike_target[sample, :, :real] = chosen
                continue
        elif scheme == "encoding":
            spike_mask[sample, :, :real] = True
        elif scheme == "decoding":
            behavior_mask[sample] = True
        elif scheme.startswith("encoding:"):
            shown = scheme.split(":", 1)[1]
            spike_mask[sample, :, :real] = True
            for column, spec in enumerate(behavior_specs):
                behavior_mask[sample, :, column] = spec["name"] != shown
        else:
            raise ValueError(f"unknown masking scheme {scheme!r}")
        spike_target[sample] = spike_mask[sample]
    return Masks(spike_mask, spike_target, behavior_mask, causal)


def _sample_regions(
    neuron_regions: Sequence[Sequence[str] | None] | None, sample: int, real: int
) -> list[str]:
    if neuron_regions is None or neuron_regions[sample] is None:
        raise ValueError(
            "region masking schemes need the brain region of every neuron: give the collator "
            "`neuron_regions={session_id: [region, ...]}` or a `neuron_regions` field per trial"
        )
    regions = list(neuron_regions[sample])
    if len(regions) != real:
        raise ValueError(
            f"neuron_regions has {len(regions)} entries for a trial with {real} neurons"
        )
    return regions


def validate_schemes(config: NedsConfig, schemes: Sequence[str]) -> None:
    """Raise a ValueError when a scheme is unknown or does not fit the config."""
    behavior_names = [spec["name"] for spec in config.behavior_modalities]
    for scheme in schemes:
        if scheme.startswith("encoding:"):
            shown = scheme.split(":", 1)[1]
            if shown not in behavior_names:
                raise ValueError(
                    f"evaluation protocol {scheme!r}: unknown behaviour {shown!r}; "
                    f"known: {behavior_names}"
                )
            continue
        if scheme not in (*NEDS_SCHEMES, *MTM_SCHEMES, *EVAL_PROTOCOLS):
            raise ValueError(
                f"unknown masking scheme {scheme!r}; NEDS schemes {list(NEDS_SCHEMES)}, "
                f"MtM schemes "
                f"{list(MTM_SCHEMES)}, evaluation protocols {[*EVAL_PROTOCOLS, 'encoding:<name>']}"
            )
        needs_behavior = scheme in ("behavior", "within_behavior", "decoding")
        if needs_behavior and not behavior_names:
            raise ValueError(f"scheme {scheme!r} needs behaviour modalities; the config has none")
        if config.use_prompt and scheme in MTM_SCHEMES and scheme not in config.prompt_schemes:
            raise ValueError(
                f"scheme {scheme!r} has no prompt token; config.prompt_schemes = "
                f"{config.prompt_schemes}"
            )
