"""Missing behaviour entries: the one rule for what counts as missing, shared by the collator,
evaluation and the baselines.

A behaviour declared with ``"allow_missing": True`` (see
:func:`neds_hf.configuration_neds.allows_missing`) stores a missing entry in the value itself:
NaN in a continuous trace ``[T]``, ``INVALID_LABEL`` (-1) for a categorical label (one per trial,
or ``[T]`` per bin). The collator turns these into the ``behavior_valid`` batch field, the model
hides invalid entries on input and never scores them, and evaluation skips and counts them.
For the other behaviours such values stay errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .configuration_neds import INVALID_LABEL, allows_missing

__all__ = ["INVALID_LABEL", "allows_missing", "invalid_entries", "missing_counts"]


def invalid_entries(spec: Mapping[str, Any], values: Any) -> np.ndarray:
    """Boolean array shaped like `values`, True where the entry of behaviour `spec` is missing
    (NaN for a continuous one, ``INVALID_LABEL`` for a categorical one); all False for a
    behaviour without ``allow_missing``, whose values are checked as before."""
    values = np.asarray(values)
    if not allows_missing(spec):
        return np.zeros(values.shape, dtype=bool)
    if spec["kind"] == "continuous":
        return np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    return values == INVALID_LABEL


def missing_counts(
    specs: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[int, int]]:
    """``{name: (invalid entries, entries)}`` over `trials` for each behaviour of `specs` that
    may be missing (a trial-level label is one entry per trial, a trace one per bin)."""
    counts: dict[str, tuple[int, int]] = {}
    for spec in specs:
        if not allows_missing(spec):
            continue
        invalid = total = 0
        for trial in trials:
            entries = invalid_entries(spec, trial[spec["name"]])
            invalid += int(entries.sum())
            total += int(entries.size)
        counts[spec["name"]] = (invalid, total)
    return counts
