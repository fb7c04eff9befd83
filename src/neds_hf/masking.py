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

Fixed MtM evaluation tasks (``MTM_EVAL_TASKS``, mtm.md §3): the training schemes above draw
their neurons / bins / region at random, so the evaluation tasks get their own deterministic
held-out sets (:func:`mtm_heldout_sets`), one per forward pass, turned into batch masks by
:func:`heldout_masks`: ``co_smoothing`` (leave one neuron out), ``forward_prediction`` (the
last ``FORWARD_PREDICTION_BINS`` bins of every neuron), ``inter_region`` (every neuron of one
region) and ``intra_region`` (leave one neuron out within its region, other regions hidden).
Behaviour stays visible in every task, except the forecast bins of forward prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .configuration_neds import MTM_SCHEMES, NEDS_SCHEMES, NedsConfig

#: Fixed evaluation protocols; ``encoding:<behaviour>`` shows only that behaviour.
EVAL_PROTOCOLS = ("encoding", "decoding")

#: The fixed MtM spike-prediction tasks and the prompt (training scheme) each one runs with.
MTM_EVAL_TASKS = {
    "co_smoothing": "neuron",
    "forward_prediction": "causal",
    "inter_region": "inter_region",
    "intra_region": "intra_region",
}
#: Bins forecast by the forward-prediction task: the last ones of the trial.
FORWARD_PREDICTION_BINS = 10

__all__ = [
    "EVAL_PROTOCOLS",
    "FORWARD_PREDICTION_BINS",
    "MTM_EVAL_TASKS",
    "HeldOutSet",
    "Masks",
    "build_masks",
    "forecast_is_causal",
    "heldout_masks",
    "mtm_heldout_sets",
    "validate_schemes",
]


@dataclass
class Masks:
    """The masks of one batch (see the module docstring for shapes and meaning).

    The masks are built in NumPy and handed over without a copy (`torch.from_numpy`): the
    fills and row copies of a `(B, T, N)` mask are each large enough for torch to run them on
    its intra-op thread pool, and waking that pool once per trial cost far more than the work
    itself (≈60 ms against ≈7 ms per case-a batch with 2 threads on a busy 2-core machine).
    Random draws still come from the `torch.Generator`, so masks do not depend on the number
    of threads and stay bit-identical for a seed.
    """

    spike_mask: torch.Tensor
    spike_target_mask: torch.Tensor
    behavior_mask: torch.Tensor
    causal_attention: torch.Tensor


def _bernoulli(shape: Sequence[int], ratio: float, generator: torch.Generator) -> np.ndarray:
    return (torch.rand(tuple(shape), generator=generator) < ratio).numpy()


def _random_index(size: int, generator: torch.Generator) -> int:
    """A uniform index in ``[0, size)`` drawn from `generator`."""
    return int(torch.randint(size, (1,), generator=generator))


def _at_least_one(selected: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Make sure a 1-D selection is not empty by selecting one random entry if it is."""
    if selected.size and not selected.any():
        selected = selected.copy()
        selected[_random_index(selected.size, generator)] = True
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
    spike_mask = np.zeros((batch_size, num_bins, num_neurons), dtype=bool)
    spike_target = np.zeros_like(spike_mask)
    behavior_mask = np.zeros((batch_size, num_bins, len(config.behavior_modalities)), dtype=bool)
    causal = np.zeros(batch_size, dtype=bool)
    for sample, scheme in enumerate(schemes):
        trial = _TrialMasks(
            spike_mask[sample], spike_target[sample], behavior_mask[sample], neuron_counts[sample]
        )
        if scheme in NEDS_SCHEMES:
            _mask_neds_scheme(trial, scheme, config, ratio, generator)
        elif scheme == "causal":
            bins = _at_least_one(_bernoulli((num_bins,), causal_ratio, generator), generator)
            trial.spike_mask[bins, : trial.real] = True
            causal[sample] = True
        elif scheme in MTM_SCHEMES:
            regions = (
                _sample_regions(neuron_regions, sample, trial.real)
                if scheme in ("inter_region", "intra_region")
                else None
            )
            _mask_mtm_scheme(trial, scheme, ratio, regions, generator)
            if scheme == "intra_region":
                continue  # its scored neurons are a subset of the hidden ones
        elif scheme in EVAL_PROTOCOLS or scheme.startswith("encoding:"):
            _mask_protocol(trial, scheme, config)
        else:
            raise ValueError(f"unknown masking scheme {scheme!r}")
        trial.spike_target[:] = trial.spike_mask
    return _as_tensors(spike_mask, spike_target, behavior_mask, causal)


def _as_tensors(
    spike_mask: np.ndarray, spike_target: np.ndarray, behavior_mask: np.ndarray, causal: np.ndarray
) -> Masks:
    """The NumPy masks as a :class:`Masks` of tensors sharing their memory (no copy)."""
    return Masks(
        torch.from_numpy(spike_mask),
        torch.from_numpy(spike_target),
        torch.from_numpy(behavior_mask),
        torch.from_numpy(causal),
    )


@dataclass
class _TrialMasks:
    """One trial's rows of the batch masks (views written in place) and its real neurons."""

    spike_mask: np.ndarray  # (T, N)
    spike_target: np.ndarray  # (T, N)
    behavior_mask: np.ndarray  # (T, M)
    real: int


def _mask_neds_scheme(
    trial: _TrialMasks,
    scheme: str,
    config: NedsConfig,
    ratio: float,
    generator: torch.Generator,
) -> None:
    """The NEDS multi-task schemes (see the module docstring)."""
    num_bins, real = config.num_time_bins, trial.real
    token_counts = _token_counts(config)
    if scheme == "neural":
        trial.spike_mask[:, :real] = True
    elif scheme == "behavior":
        trial.behavior_mask[:] = True
    elif scheme == "within_spikes":
        bins = _at_least_one(_bernoulli((num_bins,), ratio, generator), generator)
        trial.spike_mask[bins, :real] = True
    elif scheme == "within_behavior":
        for column, count in enumerate(token_counts):
            trial.behavior_mask[:count, column] = _bernoulli((count,), ratio, generator)
        if token_counts and not trial.behavior_mask.any():
            column = _random_index(len(token_counts), generator)
            token = _random_index(token_counts[column], generator)
            trial.behavior_mask[token, column] = True
    else:  # cross_modal
        bins = _at_least_one(_bernoulli((num_bins,), ratio, generator), generator)
        trial.spike_mask[bins, :real] = True
        for column, count in enumerate(token_counts):
            if count == num_bins:
                trial.behavior_mask[:, column] = bins
            else:  # a one-token trial-level variable: hidden with the same ratio
                trial.behavior_mask[0, column] = _bernoulli((1,), ratio, generator)[0]


def _mask_mtm_scheme(
    trial: _TrialMasks,
    scheme: str,
    ratio: float,
    regions: list[str] | None,
    generator: torch.Generator,
) -> None:
    """The MtM neuron and region schemes (the causal one is set by :func:`build_masks`)."""
    real = trial.real
    if scheme == "neuron":
        trial.spike_mask[:, :real] = _at_least_one(_bernoulli((real,), ratio, generator), generator)
        return
    names = sorted(set(regions))
    target_region = names[_random_index(len(names), generator)]
    inside = np.array([region == target_region for region in regions], dtype=bool)  # (real,)
    if scheme == "inter_region":
        trial.spike_mask[:, :real] = inside
        return
    chosen = _bernoulli((real,), ratio, generator) & inside
    if not chosen.any():
        candidates = np.flatnonzero(inside)
        chosen[candidates[_random_index(len(candidates), generator)]] = True
    trial.spike_mask[:, :real] = ~inside | chosen
    trial.spike_target[:, :real] = chosen


def _mask_protocol(trial: _TrialMasks, protocol: str, config: NedsConfig) -> None:
    """The fixed evaluation protocols: encoding (optionally showing one behaviour), decoding."""
    if protocol == "decoding":
        trial.behavior_mask[:] = True
        return
    trial.spike_mask[:, : trial.real] = True
    if protocol.startswith("encoding:"):
        shown = protocol.split(":", 1)[1]
        for column, spec in enumerate(config.behavior_modalities):
            trial.behavior_mask[:, column] = spec["name"] != shown


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


# =============================================================================================
# Fixed MtM evaluation tasks
# =============================================================================================


@dataclass(frozen=True)
class HeldOutSet:
    """The entries one forward pass of a fixed MtM task hides and scores.

    `hidden_neurons` are hidden in bins ``first_bin..T-1`` (all bins unless forward
    prediction); `scored_neurons` (a subset of them) are scored in the same bins. `region` names
    the region of the region tasks.
    """

    task: str
    hidden_neurons: tuple[int, ...]
    scored_neurons: tuple[int, ...]
    first_bin: int = 0
    region: str | None = None


def mtm_heldout_sets(
    task: str,
    num_neurons: int,
    num_bins: int,
    regions: Sequence[str] | None = None,
    heldout_neurons: Sequence[int] | None = None,
) -> list[HeldOutSet]:
    """The held-out sets of one MtM task for a session of `num_neurons` neurons.

    Args:
        task: a key of ``MTM_EVAL_TASKS``.
        num_neurons: neurons of the session.
        num_bins: time bins of a trial.
        regions: region of every neuron (the region tasks).
        heldout_neurons: the neurons left out one at a time by ``co_smoothing`` and
            ``intra_region`` (default: every neuron); ignored by the other tasks.
    """
    if task not in MTM_EVAL_TASKS:
        raise ValueError(f"unknown MtM task {task!r}; known: {list(MTM_EVAL_TASKS)}")
    every = tuple(range(num_neurons))
    chosen = every if heldout_neurons is None else tuple(int(n) for n in heldout_neurons)
    bad = [n for n in chosen if not 0 <= n < num_neurons]
    if bad:
        raise ValueError(f"heldout_neurons {bad} lie outside [0, {num_neurons})")
    if task == "co_smoothing":
        return [HeldOutSet(task, (n,), (n,)) for n in chosen]
    if task == "forward_prediction":
        if num_bins <= FORWARD_PREDICTION_BINS:
            raise ValueError(
                f"forward prediction forecasts the last {FORWARD_PREDICTION_BINS} bins and needs "
                f"more than that per trial, got {num_bins} bins"
            )
        return [HeldOutSet(task, every, every, first_bin=num_bins - FORWARD_PREDICTION_BINS)]
    if regions is None or len(regions) != num_neurons:
        raise ValueError(
            f"task {task!r} needs the region of each of the {num_neurons} neurons, got "
            f"{'none' if regions is None else len(regions)}"
        )
    regions = [str(region) for region in regions]
    if task == "inter_region":
        return [
            HeldOutSet(task, members, members, region=name)
            for name in sorted(set(regions))
            for members in [tuple(n for n in every if regions[n] == name)]
        ]
    return [
        HeldOutSet(
            task,
            tuple(m for m in every if regions[m] != regions[n] or m == n),
            (n,),
            region=regions[n],
        )
        for n in chosen
    ]


def forecast_is_causal(config: NedsConfig) -> bool:
    """Whether forward prediction runs with causal attention: when the model was trained with
    the ``causal`` scheme (MtM); otherwise the forecast bins are only hidden (bidirectional
    attention, MtM's temporal-masking baseline)."""
    return config.default_masking_schemes.get("causal", 0.0) > 0


def heldout_masks(config: NedsConfig, sets: Sequence[HeldOutSet], num_neurons: int) -> Masks:
    """Batch masks `(K, ...)` of `K` held-out sets (one sample per set) over `num_neurons`.

    Hidden and scored entries follow each set; behaviour is shown, except per-bin behaviour in
    the forecast bins of forward prediction, whose samples attend causally when
    :func:`forecast_is_causal`.
    """
    num_bins, count = config.num_time_bins, len(sets)
    spike_mask = np.zeros((count, num_bins, num_neurons), dtype=bool)
    spike_target = np.zeros_like(spike_mask)
    behavior_mask = np.zeros((count, num_bins, len(config.behavior_modalities)), dtype=bool)
    causal = np.zeros(count, dtype=bool)
    token_counts = _token_counts(config)
    for sample, heldout in enumerate(sets):
        start = heldout.first_bin
        spike_mask[sample, start:, list(heldout.hidden_neurons)] = True
        spike_target[sample, start:, list(heldout.scored_neurons)] = True
        if heldout.task == "forward_prediction":
            causal[sample] = forecast_is_causal(config)
            for column, tokens in enumerate(token_counts):
                if tokens == num_bins:
                    behavior_mask[sample, start:, column] = True
    return _as_tensors(spike_mask, spike_target, behavior_mask, causal)
