"""Continuous windows: fixed-length windows over a whole recording, besides the trial rows.

A dataset built with ``--windows continuous`` (:class:`WindowConfig`) holds, next to its
trial-aligned rows, one row per window of ``length`` seconds every ``stride`` seconds over the
session's recording. The rules, each defined once here:

* **Recording span**: from the session's first to its last spike (all clusters), the span of
  the neural recording every row is built from. Window ``k`` covers
  ``[recording_start + k * stride, recording_start + k * stride + length)``, for every ``k``
  whose window ends at or before the last spike; the uncovered tail (less than one stride) is
  reported (``uncovered_tail_s``), never silently dropped. A window longer than the recording
  is an error (:class:`WindowLongerThanRecordingError`) naming the session and both lengths.
* **Bins and neurons**: the trials' bin size (``PreprocessingConfig.bin_size``, so
  ``length`` and ``stride`` must be whole numbers of bins), the bin rule of
  :func:`~neds_hf.data.preprocess.bin_spikes`, and the session's trial-row neuron set in the
  same order, so the model's per-session stitchers apply to both.
* **Trial extent**: a kept trial occupies the span of its trial row,
  ``[align + window[0], align + window[1])`` (``PreprocessingConfig.window`` around
  ``align_event``); excluded trials have no extent (they are in no split and have no labels).
* **Assignment** (:func:`assign_trials`): a window takes the trial-level values (``choice``,
  ``block``, ...) of the kept trial whose extent overlaps it the most (overlap in seconds,
  ties to the earlier trial); a window overlapping no kept trial holds ``-1`` in every
  trial-level categorical modality and ``trial_id = -1``.
* **Split** (:func:`window_splits`, no leakage): a window overlapping (by any positive time)
  a test trial is ``test``; else one overlapping a validation trial is ``validation``; every
  other window, including those overlapping no trial, is ``train``. So no training window
  contains a bin of a validation or test trial row. Windows of different splits may share
  bins outside validation / test trials (stride shorter than length).
* **Declaration** (:func:`window_modalities`): a dataset with windows declares every behaviour
  with ``"allow_missing": True`` (the validity mechanism of :mod:`neds_hf.validity`): the
  collator masks the -1 labels and NaN bins of windows and the model never scores them; the
  trial rows' values are unchanged.
* **Per-bin behaviours** (:data:`CONTINUOUS_SAMPLERS`): computed like the trial rows (wheel
  speed and motion energy by linear interpolation at each bin's centre or right edge,
  ``behavior_sampling``; licking rate as licks per bin) but never excluded: a bin sampled
  outside a behaviour's recorded span (before the wheel or camera starts, after it stops) or
  where the signal is NaN holds NaN; a trial-level label without a trial holds
  ``INVALID_LABEL`` (-1). Per-bin categorical modalities (per-bin labels added to trial rows
  later) have no window form and are refused.

Behaviours stay in physical units; the session's normalisation constants (train trials) in
the sessions table apply to its windows too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..configuration_neds import INVALID_LABEL
from .pose import PAW_MARKERS, paw_speeds_at
from .preprocess import (
    SPLITS,
    PreprocessedSession,
    PreprocessingConfig,
    bin_sample_times,
    bin_spikes,
    lick_counts,
    session_wheel_velocity,
)
from .raw import RawSession

__all__ = [
    "ASSIGNMENT_RULE",
    "CONTINUOUS_SAMPLERS",
    "SPLIT_RULE",
    "WINDOW_MODES",
    "SessionWindows",
    "WindowConfig",
    "WindowLongerThanRecordingError",
    "assign_trials",
    "interval_overlaps",
    "make_session_windows",
    "recording_span",
    "window_modalities",
    "window_splits",
    "window_starts",
]

#: Values of ``prepare-data --windows``: trial rows only, or continuous windows besides them.
WINDOW_MODES = ("trials", "continuous")

#: The assignment and split rules in words (build report and card); implemented by
#: :func:`assign_trials` and :func:`window_splits`.
ASSIGNMENT_RULE = (
    "trial-level values of the kept trial whose row window [align + window[0], align + "
    "window[1]) overlaps the window the most (ties: the earlier trial); -1 when none overlaps"
)
SPLIT_RULE = (
    "test if the window overlaps a test trial's row window, else validation if it overlaps a "
    "validation trial's, else train"
)

#: Tolerance (s) when comparing lengths that should be whole numbers of bins.
_TIME_TOLERANCE = 1e-9


class WindowLongerThanRecordingError(ValueError):
    """A continuous window does not fit in a session's recording."""

    def __init__(self, session_id: str, recording_s: float, window_s: float):
        super().__init__(
            f"session {session_id}: the recording lasts {recording_s:.3f} s (first to last "
            f"spike) but a continuous window is {window_s:g} s long; choose a --window-length "
            "of at most the shortest recording"
        )
        self.session_id, self.recording_s, self.window_s = session_id, recording_s, window_s

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.session_id, self.recording_s, self.window_s))


@dataclass(frozen=True)
class WindowConfig:
    """Continuous windows: ``length`` and ``stride`` in seconds (whole numbers of bins)."""

    length: float = 2.0
    stride: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "length", float(self.length))
        object.__setattr__(self, "stride", float(self.stride))
        if not (math.isfinite(self.length) and self.length > 0):
            raise ValueError(f"window length must be a positive number of seconds: {self.length}")
        if not (math.isfinite(self.stride) and self.stride > 0):
            raise ValueError(f"window stride must be a positive number of seconds: {self.stride}")

    def n_bins(self, bin_size: float) -> int:
        """Bins per window; a ``ValueError`` unless ``length`` and ``stride`` are whole
        numbers of ``bin_size`` bins."""
        for name, value in (("length", self.length), ("stride", self.stride)):
            bins = value / bin_size
            if abs(bins - round(bins)) > 1e-6:
                raise ValueError(
                    f"window {name} {value:g} s is not a whole number of {bin_size:g} s bins"
                )
        return round(self.length / bin_size)

    def to_dict(self, bin_size: float) -> dict[str, Any]:
        """JSON-ready description with its rules (``build_report.json`` ``"windows"``)."""
        return {
            "mode": "continuous",
            "length_s": self.length,
            "stride_s": self.stride,
            "bin_size_s": bin_size,
            "n_bins": self.n_bins(bin_size),
            "recording_span": "first to last spike of the session",
            "assignment": ASSIGNMENT_RULE,
            "split": SPLIT_RULE,
        }


def window_modalities(modalities: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The modality table a dataset with continuous windows declares: ``modalities`` with
    every behaviour marked ``"allow_missing": True`` (windows hold NaN / -1 entries)."""
    return [
        dict(spec) if spec["kind"] == "spikes" else {**spec, "allow_missing": True}
        for spec in modalities
    ]


def recording_span(raw: RawSession) -> tuple[float, float]:
    """``(start, end)`` of a session's recording in s: its first and last spike."""
    if len(raw.spike_times) == 0:
        raise ValueError(f"session {raw.session_id}: no spikes, so no recording to window")
    return float(raw.spike_times[0]), float(raw.spike_times[-1])


def window_starts(session_id: str, span: tuple[float, float], config: WindowConfig) -> np.ndarray:
    """Start times ``(n_windows,)`` float64 of the windows over ``span`` (module docstring)."""
    start, end = span
    duration = end - start
    if config.length > duration + _TIME_TOLERANCE:
        raise WindowLongerThanRecordingError(session_id, duration, config.length)
    n_windows = math.floor((duration - config.length) / config.stride + _TIME_TOLERANCE) + 1
    return start + np.arange(n_windows, dtype=np.float64) * config.stride  # (W,)


def interval_overlaps(
    starts_a: np.ndarray, ends_a: np.ndarray, starts_b: np.ndarray, ends_b: np.ndarray
) -> np.ndarray:
    """Overlap in seconds of every pair of half-open intervals, ``(len(a), len(b))``."""
    latest_start = np.maximum(starts_a[:, None], starts_b[None, :])  # (A, B)
    earliest_end = np.minimum(ends_a[:, None], ends_b[None, :])  # (A, B)
    return np.clip(earliest_end - latest_start, 0.0, None)


def assign_trials(overlaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The trial each window takes its trial-level values from, and the overlap with it.

    ``overlaps`` is ``(n_windows, n_trials)`` seconds, trials sorted by trial id. Returns the
    trial position ``(n_windows,)`` int64 (-1 where no trial overlaps) and that overlap in
    seconds ``(n_windows,)``: the largest overlap, ties to the earlier trial (``argmax``
    takes the first maximum).
    """
    if overlaps.shape[1] == 0:
        return np.full(overlaps.shape[0], -1, dtype=np.int64), np.zeros(overlaps.shape[0])
    best = np.argmax(overlaps, axis=1)  # (W,)
    best_overlap = overlaps[np.arange(len(best)), best]  # (W,)
    return np.where(best_overlap > 0, best, -1).astype(np.int64), best_overlap


def window_splits(overlaps: np.ndarray, trial_splits: np.ndarray) -> np.ndarray:
    """Split of each window ``(n_windows,)`` str: ``test`` if it overlaps a test trial, else
    ``validation`` if it overlaps a validation trial, else ``train``."""
    touches = overlaps > 0  # (W, K)
    labels = np.full(overlaps.shape[0], "train", dtype=object)
    for split in ("validation", "test"):  # test last: it wins over validation
        labels[np.any(touches[:, trial_splits == split], axis=1)] = split
    return labels.astype(str)


# --------------------------------------------------------------------------------------------
# Per-bin behaviour samplers
# --------------------------------------------------------------------------------------------


def _interpolate_or_nan(
    sample_times: np.ndarray, times: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Linear interpolation of ``(times, values)`` at ``sample_times`` (any shape), NaN
    outside ``[times[0], times[-1]]`` (never extrapolated) and next to NaN samples."""
    sampled = np.interp(sample_times, times, values)
    sampled[(sample_times < times[0]) | (sample_times > times[-1])] = np.nan
    return sampled


def _sample_times(config: PreprocessingConfig, starts: np.ndarray, n_bins: int) -> np.ndarray:
    """Where a per-bin behaviour is sampled in each window ``(W, T)``, as in the trial rows."""
    return bin_sample_times(starts, n_bins, config.bin_size, config.behavior_sampling)


def _wheel_speed(
    raw: RawSession, config: PreprocessingConfig, starts: np.ndarray, n_bins: int
) -> np.ndarray:
    """Wheel speed (rad/s), ``|velocity|`` sampled as the trial rows do."""
    grid_times, velocity = session_wheel_velocity(raw, config)
    sample_times = _sample_times(config, starts, n_bins)
    return np.abs(_interpolate_or_nan(sample_times, grid_times, velocity))


def _whisker_motion_energy(
    raw: RawSession, config: PreprocessingConfig, starts: np.ndarray, n_bins: int
) -> np.ndarray:
    """Whisker motion energy sampled as the trial rows do."""
    return _interpolate_or_nan(
        _sample_times(config, starts, n_bins),
        np.asarray(raw.motion_energy_times, dtype=np.float64),
        np.asarray(raw.motion_energy, dtype=np.float64),
    )


def _licking_rate(
    raw: RawSession, config: PreprocessingConfig, starts: np.ndarray, n_bins: int
) -> np.ndarray:
    """Licks per bin on the spike bins, as the trial rows count them (all NaN without lick
    times)."""
    return lick_counts(raw.lick_times, starts, n_bins, config.bin_size)


def _paw_speed(
    name: str,
) -> Callable[[RawSession, PreprocessingConfig, np.ndarray, int], np.ndarray]:
    """The sampler of paw speed `name` (px/s, NaN where the pose is invalid), as the trial rows
    sample it (:func:`neds_hf.data.pose.paw_speeds_at`)."""

    def sample(
        raw: RawSession, config: PreprocessingConfig, starts: np.ndarray, n_bins: int
    ) -> np.ndarray:
        return paw_speeds_at(raw.paw_pose, _sample_times(config, starts, n_bins))[name]

    return sample


#: Per-bin continuous modality -> ``sampler(raw, config, starts (W,), n_bins) -> (W, T)``.
CONTINUOUS_SAMPLERS: dict[
    str, Callable[[RawSession, PreprocessingConfig, np.ndarray, int], np.ndarray]
] = {
    "wheel_speed": _wheel_speed,
    "whisker_motion_energy": _whisker_motion_energy,
    "licking_rate": _licking_rate,
    **{name: _paw_speed(name) for name in PAW_MARKERS},
}


# --------------------------------------------------------------------------------------------
# A session's windows
# --------------------------------------------------------------------------------------------


@dataclass
class SessionWindows:
    """The continuous windows of one session: per-window columns (windows schema), the split
    of each window, and the summary recorded in the build report."""

    session_id: str
    columns: dict[str, np.ndarray]  # windows schema columns, one row per window
    split: np.ndarray  # (W,) str, one of SPLITS
    summary: dict[str, Any]

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions of the windows of ``split``."""
        return np.flatnonzero(self.split == split)

    def window_columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The columns of the given rows."""
        return {name: values[rows] for name, values in self.columns.items()}


def _kept_cluster_rows(raw: RawSession, session: PreprocessedSession) -> np.ndarray:
    """Rows of ``raw.clusters`` of the session's kept neurons, in ``neuron_index`` order."""
    position = {
        (str(probe), int(cluster)): row
        for row, (probe, cluster) in enumerate(
            zip(raw.clusters["probe"].astype(str), raw.clusters["cluster_id"].astype(np.int64))
        )
    }
    neurons = session.neurons.sort_values("neuron_index")
    return np.array(
        [position[(str(p), int(c))] for p, c in zip(neurons["probe"], neurons["cluster_id"])],
        dtype=np.int64,
    )


def _window_spikes(
    raw: RawSession, session: PreprocessedSession, starts: np.ndarray, n_bins: int
) -> np.ndarray:
    """Spike counts ``(W, N, T)`` uint16 of the kept neurons, in the trial rows' order."""
    kept = _kept_cluster_rows(raw, session)  # (N,)
    new_index = np.full(raw.n_clusters, -1, dtype=np.int64)
    new_index[kept] = np.arange(len(kept))
    spike_rows = new_index[np.asarray(raw.spike_clusters, dtype=np.int64)]  # (S,)
    selected = spike_rows >= 0
    return bin_spikes(
        np.asarray(raw.spike_times, dtype=np.float64)[selected],
        spike_rows[selected],
        starts,
        len(kept),
        n_bins,
        session.config.bin_size,
    )


def _trial_extents(session: PreprocessedSession, raw: RawSession) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (s) of each kept trial's row window, ``(K,)`` each."""
    align = raw.trials[session.config.align_event].to_numpy(dtype=np.float64)
    positions = raw.trials.index.get_indexer(session.trial_ids)
    aligned = align[positions]  # (K,)
    return aligned + session.config.window[0], aligned + session.config.window[1]


def _invalid_fraction(values: np.ndarray, kind: str) -> float:
    """Share of invalid entries: NaN for continuous values, -1 for labels."""
    invalid = np.isnan(values) if kind == "continuous" else values == INVALID_LABEL
    return float(invalid.mean()) if invalid.size else 0.0


def _modality_columns(
    raw: RawSession,
    session: PreprocessedSession,
    modalities: Sequence[Mapping[str, Any]],
    starts: np.ndarray,
    n_bins: int,
    assigned: np.ndarray,
) -> dict[str, np.ndarray]:
    """One column per declared modality, per window."""
    trial_values = session.trial_columns()
    columns: dict[str, np.ndarray] = {}
    for spec in modalities:
        name, kind = spec["name"], spec["kind"]
        if kind == "spikes":
            columns[name] = _window_spikes(raw, session, starts, n_bins)  # (W, N, T)
        elif kind == "continuous" and name in CONTINUOUS_SAMPLERS:
            sampled = CONTINUOUS_SAMPLERS[name](raw, session.config, starts, n_bins)  # (W, T)
            columns[name] = sampled.astype(np.float32)
        elif kind == "categorical" and spec.get("trial_level", True) and name in trial_values:
            labels = np.asarray(trial_values[name], dtype=np.int64)  # (K,)
            columns[name] = np.where(assigned >= 0, labels[np.maximum(assigned, 0)], INVALID_LABEL)
        else:
            raise ValueError(
                f"session {session.session_id}: modality {name!r} ({kind}) has no continuous-"
                f"window form; windows support spikes, the per-bin behaviours "
                f"{sorted(CONTINUOUS_SAMPLERS)} and the trial-level labels of the trial rows"
            )
    return columns


def make_session_windows(
    raw: RawSession,
    session: PreprocessedSession,
    config: WindowConfig,
    modalities: Sequence[Mapping[str, Any]],
) -> SessionWindows:
    """The continuous windows of one session (rules in the module docstring).

    ``session`` is the preprocessed trial rows of ``raw`` (neuron set, kept trials, splits);
    ``modalities`` the dataset's declared modality table.
    """
    n_bins = config.n_bins(session.config.bin_size)
    span = recording_span(raw)
    starts = window_starts(raw.session_id, span, config)  # (W,)
    ends = starts + config.length  # (W,)
    trial_starts, trial_ends = _trial_extents(session, raw)  # (K,) each
    overlaps = interval_overlaps(starts, ends, trial_starts, trial_ends)  # (W, K)
    assigned, overlap_s = assign_trials(overlaps)  # (W,) each
    split = window_splits(overlaps, session.split)
    columns = {
        "session_id": np.full(len(starts), session.session_id, dtype=object),
        "window_id": np.arange(len(starts), dtype=np.int64),
        "trial_id": np.where(assigned >= 0, session.trial_ids[np.maximum(assigned, 0)], -1),
        **_modality_columns(raw, session, modalities, starts, n_bins, assigned),
        "start_time": starts,
        "end_time": ends,
        "trial_overlap": overlap_s.astype(np.float64),
    }
    kinds = {spec["name"]: spec["kind"] for spec in modalities if spec["kind"] != "spikes"}
    summary = {
        "recording_start_s": span[0],
        "recording_end_s": span[1],
        "n_windows": len(starts),
        **{split_name: int(np.sum(split == split_name)) for split_name in SPLITS},
        "n_windows_with_trial": int(np.sum(assigned >= 0)),
        "uncovered_tail_s": float(span[1] - ends[-1]),
        "missing_modalities": {
            name: fraction
            for name, kind in kinds.items()
            if (fraction := _invalid_fraction(columns[name], kind)) > 0
        },
    }
    return SessionWindows(session.session_id, columns, split, summary)
