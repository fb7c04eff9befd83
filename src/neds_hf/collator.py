"""`DataCollatorForNedsMasking`: trial examples -> a padded, masked NEDS batch.

Examples follow the dataset schema: ``session_id`` (str), ``spikes`` (neuron-major ``[N, T]``
counts), one field per behaviour modality (continuous ``[T]``, categorical an int or ``[T]``),
and optionally ``neuron_regions`` (``[N]`` region names, for the MtM region schemes).

A behaviour declared with ``allow_missing`` may hold missing entries (NaN, or -1 for a label;
:mod:`neds_hf.validity`): they become False in the ``behavior_valid`` batch field `(B, T, M)`
(behaviour modalities in config order, trial-level validity repeated over T) and a finite
filler (0) in ``behavior_values`` / ``behavior_labels``. Batches carry ``behavior_valid`` exactly
when the config has such a behaviour, so other batches are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .configuration_neds import BEHAVIOR_NORMALIZATIONS, MTM_SCHEMES, NedsConfig
from .masking import Masks, build_masks, validate_schemes
from .validity import INVALID_LABEL, allows_missing, invalid_entries

NORMALIZATION_METHODS = BEHAVIOR_NORMALIZATIONS

__all__ = ["NORMALIZATION_METHODS", "DataCollatorForNedsMasking"]


class DataCollatorForNedsMasking:
    """Pad neurons, build session indices and behaviour tensors, and sample masks.

    In training mode (no `eval_protocol`) one scheme is drawn per trial from `schemes`
    (probabilities; default `config.default_masking_schemes`) and masked with `mask_ratio`.
    With `eval_protocol` = ``"encoding"``, ``"decoding"`` or ``"encoding:<behaviour>"`` the masks
    are the fixed evaluation masks and no randomness is used.

    Args:
        config: the model configuration (sessions, modalities, time bins).
        schemes: training schemes and their probabilities.
        mask_ratio: ratio of the ratio-based schemes (default `config.mask_ratio`).
        causal_mask_ratio: ratio of the MtM causal scheme (default `config.causal_mask_ratio`).
        eval_protocol: a fixed evaluation protocol instead of random schemes.
        normalization: per-session constants ``{session_id: {modality: {"mean", "std", "min",
            "max"}}}`` (the dataset's sessions table), applied to continuous behaviours.
        normalization_method: ``"zscore"``, ``"minmax"`` (the reference's [0, 1] scaling) or
            ``"none"``; default: the model's `config.behavior_normalization`.
        neuron_regions: ``{session_id: [region of each neuron]}`` for the MtM region schemes.
        seed: seed of the collator's own generator (ignored when `generator` is given).
        generator: a `torch.Generator` to draw masks from.
        return_scheme_index: add ``scheme_index`` `(B,)` (row in `self.scheme_names`) to batches.
    """

    def __init__(
        self,
        config: NedsConfig,
        schemes: Mapping[str, float] | None = None,
        mask_ratio: float | None = None,
        causal_mask_ratio: float | None = None,
        eval_protocol: str | None = None,
        normalization: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
        normalization_method: str | None = None,
        neuron_regions: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        return_scheme_index: bool = False,
    ):
        self.config = config
        self.schemes = dict(schemes if schemes is not None else config.default_masking_schemes)
        self.scheme_names = list(self.schemes)
        weights = torch.tensor([float(w) for w in self.schemes.values()], dtype=torch.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"schemes: probabilities must be >= 0 with a positive sum, got {self.schemes}"
            )
        self.scheme_probabilities = weights / weights.sum()
        validate_schemes(config, self.scheme_names)
        if eval_protocol is not None:
            validate_schemes(config, [eval_protocol])
            if eval_protocol in MTM_SCHEMES or not (
                eval_protocol in ("encoding", "decoding") or eval_protocol.startswith("encoding:")
            ):
                raise ValueError(
                    f"eval_protocol must be 'encoding', 'decoding' or 'encoding:<behaviour>', "
                    f"got {eval_protocol!r}"
                )
        self.eval_protocol = eval_protocol
        self.mask_ratio = config.mask_ratio if mask_ratio is None else mask_ratio
        self.causal_mask_ratio = (
            config.causal_mask_ratio if causal_mask_ratio is None else causal_mask_ratio
        )
        for name, value in (
            ("mask_ratio", self.mask_ratio),
            ("causal_mask_ratio", self.causal_mask_ratio),
        ):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if normalization_method is None:
            normalization_method = config.behavior_normalization
        if normalization_method not in NORMALIZATION_METHODS:
            raise ValueError(
                f"normalization_method must be one of {NORMALIZATION_METHODS}, got "
                f"{normalization_method!r}"
            )
        self.normalization = normalization
        self.normalization_method = normalization_method
        self.neuron_regions = neuron_regions
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self.return_scheme_index = return_scheme_index
        self._session_rows = {session_id: row for row, session_id in enumerate(config.session_ids)}
        self._emits_causal = "causal" in self.scheme_names and eval_protocol is None
        self._behavior_columns = {
            spec["name"]: column for column, spec in enumerate(config.behavior_modalities)
        }

    # ------------------------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate trial examples into model inputs (see :class:`NedsForMaskedModeling`)."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        config = self.config
        session_ids = [
            self._session_id(example, position) for position, example in enumerate(examples)
        ]
        session_index = torch.tensor([self._session_rows[s] for s in session_ids], dtype=torch.long)
        spikes, neuron_counts = self._spike_batch(examples, session_ids)
        batch: dict[str, torch.Tensor] = {"spikes": spikes, "session_index": session_index}
        valid = None
        if config.behaviors_with_missing:
            valid = np.ones(
                (len(examples), config.num_time_bins, len(config.behavior_modalities)), dtype=bool
            )  # (B, T, M)
        if config.continuous_modalities:
            batch["behavior_values"] = self._continuous(examples, session_ids, valid)
        if config.categorical_modalities:
            batch["behavior_labels"] = self._categorical(examples, session_ids, valid)
        if valid is not None:
            batch["behavior_valid"] = torch.from_numpy(valid)
        schemes, scheme_rows = self._draw_schemes(len(examples))
        regions = None
        if any(s in ("intra_region", "inter_region") for s in schemes):
            regions = [
                self._regions(example, session_id, count)
                for example, session_id, count in zip(examples, session_ids, neuron_counts)
            ]
        masks = build_masks(
            config,
            schemes,
            neuron_counts,
            spikes.shape[-1],
            self.generator,
            self.mask_ratio,
            self.causal_mask_ratio,
            regions,
        )
        batch.update(self._mask_fields(masks, schemes))
        if self.return_scheme_index and scheme_rows is not None:
            batch["scheme_index"] = scheme_rows
        return batch

    def _spike_batch(
        self, examples: Sequence[Mapping[str, Any]], session_ids: list[str]
    ) -> tuple[torch.Tensor, list[int]]:
        """Spike counts `(B, T, N)` padded with zeros to the largest session, and the real
        neuron count of each trial."""
        spike_rows = [
            self._spikes(example, session_id) for example, session_id in zip(examples, session_ids)
        ]
        neuron_counts = [rows.shape[0] for rows in spike_rows]
        # NumPy, not torch: per-trial copies on torch's intra-op pool cost a thread wake-up each
        # (see `masking.Masks`).
        spikes = np.zeros(
            (len(examples), self.config.num_time_bins, max(neuron_counts)), dtype=np.float32
        )
        for sample, rows in enumerate(spike_rows):
            spikes[sample, :, : rows.shape[0]] = rows.T  # (T, N_s)
        return torch.from_numpy(spikes), neuron_counts

    def _draw_schemes(self, batch_size: int) -> tuple[list[str], torch.Tensor | None]:
        """One scheme name per trial (the evaluation protocol, or drawn with the scheme
        probabilities) and the drawn rows of `self.scheme_names` (`None` for a protocol)."""
        if self.eval_protocol is not None:
            return [self.eval_protocol] * batch_size, None
        scheme_rows = torch.multinomial(
            self.scheme_probabilities, batch_size, replacement=True, generator=self.generator
        )
        return [self.scheme_names[row] for row in scheme_rows.tolist()], scheme_rows

    def _mask_fields(self, masks: Masks, schemes: list[str]) -> dict[str, torch.Tensor]:
        """The batch fields the masks become: input masks, the spike target mask where it
        may differ from the input mask, prompt rows and causal flags.

        Only the ``intra_region`` scheme scores fewer entries than it hides (`build_masks`
        sets the target mask to the input mask for every other scheme and protocol), so the
        target mask is sent exactly when that scheme can be drawn.
        """
        config = self.config
        fields = {"spike_mask": masks.spike_mask}
        if "intra_region" in self.scheme_names:
            fields["spike_target_mask"] = masks.spike_target_mask
        if config.behavior_modalities:
            fields["behavior_mask"] = masks.behavior_mask
        if config.use_prompt:
            fields["prompt_index"] = torch.tensor(
                [
                    config.prompt_schemes.index(s) if s in config.prompt_schemes else 0
                    for s in schemes
                ],
                dtype=torch.long,
            )
        if self._emits_causal:
            fields["causal_attention"] = masks.causal_attention
        return fields

    # ------------------------------------------------------------------------------------------
    def _session_id(self, example: Mapping[str, Any], position: int) -> str:
        session_id = example.get("session_id")
        if session_id not in self._session_rows:
            raise ValueError(
                f"example {position}: session {session_id!r} is unknown to the model config "
                f"(known sessions: {self.config.session_ids}); add it with add_sessions first"
            )
        return session_id

    def _spikes(self, example: Mapping[str, Any], session_id: str) -> np.ndarray:
        spikes = np.asarray(_to_numpy(example.get("spikes")), dtype=np.float32)
        expected = (self.config.sessions[session_id], self.config.num_time_bins)
        if spikes.ndim != 2 or spikes.shape != expected:
            raise ValueError(
                f"session {session_id}: spikes must be neuron-major [N, T] = {list(expected)}, "
                f"got shape {list(spikes.shape)}"
            )
        _check_finite(spikes, session_id, "spikes")
        return spikes  # (N_s, T)

    def _continuous(
        self,
        examples: Sequence[Mapping[str, Any]],
        session_ids: list[str],
        valid: np.ndarray | None,
    ) -> torch.Tensor:
        """Continuous behaviours `(B, T, M_continuous)`, normalised; missing entries (behaviours
        with ``allow_missing``) become 0 and False in `valid` `(B, T, M)`."""
        specs = self.config.continuous_modalities
        values = np.zeros((len(examples), self.config.num_time_bins, len(specs)), dtype=np.float32)
        for sample, (example, session_id) in enumerate(zip(examples, session_ids)):
            for column, spec in enumerate(specs):
                name = spec["name"]
                if name not in example:
                    raise ValueError(f"session {session_id}: trial lacks behaviour field {name!r}")
                trace = np.asarray(_to_numpy(example[name]), dtype=np.float64)
                if trace.shape != (self.config.num_time_bins,):
                    raise ValueError(
                        f"session {session_id}: {name} must have shape "
                        f"[{self.config.num_time_bins}],"
                        f" got {list(trace.shape)}"
                    )
                if not allows_missing(spec):
                    _check_finite(trace, session_id, name)
                    values[sample, :, column] = self._normalize(trace, session_id, name)
                    continue
                invalid = invalid_entries(spec, trace)  # (T,)
                trace = np.where(invalid, 0.0, trace)
                _check_finite(trace, session_id, name)  # inf stays an error
                if not invalid.all():
                    normalized = self._normalize(trace, session_id, name)
                    if not np.isfinite(normalized[~invalid]).all():
                        raise ValueError(
                            f"session {session_id}: {name} has present entries but no finite "
                            "normalisation constants (it is missing in every train trial)"
                        )
                    values[sample, :, column] = np.where(invalid, 0.0, normalized)
                valid[sample, :, self._behavior_columns[name]] = ~invalid
        return torch.from_numpy(values)  # (B, T, M_continuous)

    def _normalize(self, trace: np.ndarray, session_id: str, name: str) -> np.ndarray:
        if self.normalization is None or self.normalization_method == "none":
            return trace
        try:
            stats = self.normalization[session_id][name]
        except KeyError:
            raise ValueError(
                f"normalization constants for session {session_id!r}, behaviour {name!r} are "
                "missing (expected in the sessions table)"
            ) from None
        if self.normalization_method == "minmax":
            span = stats["max"] - stats["min"]
            return (trace - stats["min"]) / (span if span > 0 else 1.0)
        return (trace - stats["mean"]) / (stats["std"] if stats["std"] > 0 else 1.0)

    def _categorical(
        self,
        examples: Sequence[Mapping[str, Any]],
        session_ids: list[str],
        valid: np.ndarray | None,
    ) -> torch.Tensor:
        """Categorical labels `(B, T, M_categorical)` (trial-level ones repeated over T); missing
        labels (behaviours with ``allow_missing``) become 0 and False in `valid` `(B, T, M)`."""
        specs = self.config.categorical_modalities
        num_bins = self.config.num_time_bins
        labels = np.zeros((len(examples), num_bins, len(specs)), dtype=np.int64)
        for sample, (example, session_id) in enumerate(zip(examples, session_ids)):
            for column, spec in enumerate(specs):
                value = self._label_row(example, session_id, spec)  # (T,)
                if allows_missing(spec):
                    invalid = invalid_entries(spec, value)  # (T,)
                    value = np.where(invalid, 0, value)
                    valid[sample, :, self._behavior_columns[spec["name"]]] = ~invalid
                labels[sample, :, column] = value
        return torch.from_numpy(labels)  # (B, T, M_categorical)

    def _label_row(
        self, example: Mapping[str, Any], session_id: str, spec: Mapping[str, Any]
    ) -> np.ndarray:
        """One example's labels of one categorical behaviour, checked, as `(T,)` integers
        (``INVALID_LABEL`` kept where the behaviour may be missing)."""
        name = spec["name"]
        num_bins = self.config.num_time_bins
        if name not in example:
            raise ValueError(f"session {session_id}: trial lacks behaviour field {name!r}")
        value = np.asarray(_to_numpy(example[name]))
        if value.dtype.kind == "f":
            _check_finite(value, session_id, name)
        integral = value.dtype.kind in "iub" or (
            value.dtype.kind == "f" and np.array_equal(value, np.round(value))
        )
        if not integral:
            raise ValueError(
                f"session {session_id}: {name} labels must be integer classes, got "
                f"{value.dtype} values {sorted(set(value.ravel().tolist()))[:10]}"
            )
        if spec["trial_level"]:
            if value.size != 1:
                raise ValueError(
                    f"session {session_id}: {name} is trial-level and needs one label, "
                    f"got shape {list(value.shape)}"
                )
            value = np.full(num_bins, value.reshape(()).item())
        elif value.shape != (num_bins,):
            raise ValueError(
                f"session {session_id}: {name} needs one label per bin [{num_bins}], got "
                f"shape {list(value.shape)}"
            )
        checked = value[value != INVALID_LABEL] if allows_missing(spec) else value
        if (checked < 0).any() or (checked >= spec["num_classes"]).any():
            where_missing = f" ({INVALID_LABEL} where missing)" if allows_missing(spec) else ""
            raise ValueError(
                f"session {session_id}: {name} labels must lie in "
                f"[0, {spec['num_classes']}){where_missing}"
                f", got {sorted(set(value.tolist()))}"
            )
        return value  # (T,)

    def _regions(self, example: Mapping[str, Any], session_id: str, count: int) -> list[str]:
        if "neuron_regions" in example and example["neuron_regions"] is not None:
            regions = list(example["neuron_regions"])
        elif self.neuron_regions is not None and session_id in self.neuron_regions:
            regions = list(self.neuron_regions[session_id])
        else:
            raise ValueError(
                f"session {session_id}: region masking schemes need neuron regions; pass "
                "neuron_regions={session_id: [...]} to the collator or a 'neuron_regions' field"
            )
        if len(regions) != count:
            raise ValueError(
                f"session {session_id}: {len(regions)} neuron regions for {count} neurons"
            )
        return regions


def _check_finite(values: np.ndarray, session_id: str, field: str) -> None:
    """A ValueError naming the session and field when `values` holds NaN or inf."""
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise ValueError(
            f"session {session_id}: {field} has {bad} non-finite entries (NaN or inf) of "
            f"{values.size}; expected finite values (trials with missing data are excluded "
            "when the dataset is built)"
        )


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value
