"""Exact, configurable preprocessing of one IBL session into trial-aligned, binned arrays.

A :class:`~neds_hf.data.raw.RawSession` (spike times, clusters, trials table, wheel, whisker
motion energy) becomes a :class:`PreprocessedSession`: per kept trial, spike counts
``[N, T]`` (neuron-major), wheel speed and whisker motion energy ``[T]`` on the same bins,
categorical behaviours, a train/validation/test label, plus the kept-neurons table, the
sessions-table row and a report of everything excluded.

Conventions (all recorded in :class:`PreprocessingConfig` and therefore in the dataset):

* Trial exclusion (IBL / NEDS query): a trial is dropped when any of stimOn / choice /
  feedback / probabilityLeft / firstMovement / feedbackType (and the alignment event) is NaN
  (``"nan_field"``), when ``choice == 0`` (``"no_choice"``), when the reaction time
  ``firstMovement - stimOn`` is below ``min_rt`` (``"rt_negative"``) or above ``max_rt``
  (``"rt_too_long"``), or when ``feedback - goCue`` exceeds ``max_trial_duration``
  (``"trial_too_long"``). A trial whose window is not entirely covered by the wheel or the
  motion-energy recording is dropped as ``"behavior_out_of_range"`` (behaviour is never
  extrapolated), and one whose sampled behaviour contains NaN as ``"behavior_nan"``.
  Each excluded trial is counted once, under its most specific reason (a no-go trial under
  ``"no_choice"`` even when its movement times are NaN); the number of trials satisfying each
  reason (overlaps included) is reported too. The rules live in :mod:`neds_hf.data.exclusion`.
* Bins: ``T = round((end - start) / bin_size)``; with ``t0 = align + start`` bin ``k`` counts
  the spikes with ``t0 + k*dt <= t < t0 + (k+1)*dt`` (edges evaluated in float64 exactly as
  written, so spikes lying on an edge go to the later bin).
* Neurons: kept when their mean firing rate over the kept trials' windows is strictly greater
  than ``min_firing_rate`` (and, with ``qc_only``, when ``qc_label == 1``).
* Wheel speed: ``|d/dt lowpass(position)|`` with the position linearly interpolated to a
  uniform ``wheel_fs`` grid, a zero-phase Butterworth low-pass (``sosfiltfilt``) and a
  second-order central difference (``numpy.gradient``), in rad/s.
* Behaviours are sampled per bin by linear interpolation at the bin centre
  (``behavior_sampling="center"``) or at its right edge (``"right_edge"``, as the NEDS
  reference code did). They are stored in physical units.
* ``choice``: ALF -1 -> 0 (right), +1 -> 1 (left). ``block``: probabilityLeft 0.2 / 0.5 / 0.8
  -> 0 / 1 / 2. ``reward``: 1 when ``feedbackType == 1`` (rewarded), else 0. ``contrast``:
  signed, ``contrastRight - contrastLeft`` with NaN (no stimulus on that side) read as 0, so
  positive = stimulus on the right.
* BrainWideBench behaviours (``"allow_missing"``: a missing value is stored in the value, NaN
  or -1, and never drops a trial): ``reward`` (the column above, -1 where ``feedbackType`` is
  missing), ``stimulus_contrast`` (the absolute contrast of the shown stimulus, the side that
  is not NaN, 0 / 0.0625 / 0.125 / 0.25 / 1 -> classes 0..4; -1 when neither side has one; any
  other contrast is an error) and ``licking_rate`` (licks of ``alf/licks.times`` per bin, the
  bins of the spikes; all NaN in a session without lick times). The sessions-table row and the
  build report list, per session, the fraction of missing entries of each behaviour that has
  any (``missing_modalities``).
* Split: 70/10/20 by trial with a generator seeded from ``(split_seed, sha256(session_id))``,
  so a session's split never depends on the other sessions processed.
* Normalisation constants (mean, std, min, max) of each continuous behaviour are computed on
  the train split only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import butter, sosfiltfilt

from ..configuration_neds import IBL_MODALITIES, INVALID_LABEL
from ..validity import invalid_entries
from .exclusion import (
    DEFAULT_MAX_RT_S,
    DEFAULT_MAX_TRIAL_DURATION_S,
    DEFAULT_MIN_RT_S,
    EXCLUSION_REASONS,
    numeric_trial_column,
    one_reason_per_trial,
    trial_exclusion_masks,
)
from .pose import PAW_SPEED_MODALITIES, paw_speeds_at
from .raw import TRIAL_COLUMNS, RawSession

__all__ = [
    "BLOCK_CLASSES",
    "BWB_MODALITIES",
    "CONTINUOUS_BEHAVIORS",
    "CONTRAST_CLASSES",
    "DATASET_MODALITIES",
    "EXCLUSION_REASONS",
    "MODALITY_UNITS",
    "NEURON_COLUMNS",
    "RECORDED_PACKAGES",
    "SPLITS",
    "EmptySessionError",
    "ExclusionReport",
    "PreprocessedSession",
    "PreprocessingConfig",
    "bin_sample_times",
    "bin_spikes",
    "exclusion_masks",
    "lick_counts",
    "missing_fractions",
    "normalization_stats",
    "package_versions",
    "preprocess_session",
    "session_wheel_velocity",
    "split_assignment",
    "wheel_velocity",
]

#: Names of the splits, in the order of :attr:`PreprocessingConfig.split_fractions`.
SPLITS = ("train", "validation", "test")

#: The BrainWideBench behaviours beyond the paper's (ibl-bwb-eval's TS1 tasks); each may be
#: missing in a session or a trial (``"allow_missing"``), which masks it rather than dropping
#: the trial. A new behaviour is one more entry here and in :data:`MODALITY_UNITS`, plus its
#: values in :func:`_bwb_behaviors`.
BWB_MODALITIES: tuple[dict[str, Any], ...] = (
    {"name": "reward", "kind": "categorical", "num_classes": 2, "allow_missing": True},
    {"name": "stimulus_contrast", "kind": "categorical", "num_classes": 5, "allow_missing": True},
    {"name": "licking_rate", "kind": "continuous", "allow_missing": True},
    *(dict(spec) for spec in PAW_SPEED_MODALITIES),  # left / right paw speed (data.pose)
)

#: The modalities this preprocessing produces, in token order: the spikes, the BrainWideBench
#: behaviours (:data:`BWB_MODALITIES`), then the behaviours of the NEDS paper, so that the
#: paper's five (:data:`neds_hf.configuration_neds.IBL_MODALITIES`, the model's default) keep
#: their order and a modality a derived dataset appends (e.g. ``action``) follows ``block``.
#: Every dataset built from it declares them (``build_report.json`` ``"modalities"``, the
#: card); the writer, the schema and the loaders read that declaration rather than these names.
DATASET_MODALITIES: tuple[dict[str, Any], ...] = (
    dict(IBL_MODALITIES[0]),
    *(dict(spec) for spec in BWB_MODALITIES),
    *(dict(spec) for spec in IBL_MODALITIES[1:]),
)

#: Unit / meaning of each produced modality (for the card).
MODALITY_UNITS = {
    "spikes": "[N, T] spike counts, neuron-major",
    "wheel_speed": "[T] rad/s",
    "whisker_motion_energy": "[T] camera ROI motion energy (a.u.)",
    "choice": "0 = right (ALF -1), 1 = left (ALF +1)",
    "block": "0/1/2 = probabilityLeft 0.2/0.5/0.8",
    "reward": "0 = no reward (feedbackType -1), 1 = rewarded (+1); -1 = missing",
    "stimulus_contrast": "0..4 = absolute contrast of the shown stimulus 0 / 0.0625 / 0.125 / "
    "0.25 / 1; -1 = missing",
    "licking_rate": "[T] licks per bin (alf/licks.times); NaN = missing (no lick times)",
    "left_paw_speed": "[T] left paw speed from the left camera's pose (px/s); NaN where invalid",
    "right_paw_speed": "[T] right paw speed from the left camera's pose (px/s); NaN where invalid",
}

#: Continuous behaviours produced per bin, in physical units: the paper's first (the order of
#: the sessions table's ``normalization`` entries), then the BrainWideBench ones.
CONTINUOUS_BEHAVIORS = tuple(
    m["name"] for m in (*IBL_MODALITIES, *BWB_MODALITIES) if m["kind"] == "continuous"
)

#: probabilityLeft value -> block class.
BLOCK_CLASSES = {0.2: 0, 0.5: 1, 0.8: 2}

#: Absolute contrast of the shown stimulus -> stimulus_contrast class (the five IBL contrasts).
CONTRAST_CLASSES = {0.0: 0, 0.0625: 1, 0.125: 2, 0.25: 3, 1.0: 4}

#: Columns of :attr:`PreprocessedSession.neurons` (the neurons table of the dataset).
NEURON_COLUMNS = (
    "session_id",
    "neuron_index",
    "probe",
    "cluster_id",
    "cluster_uuid",
    "region_allen",
    "region_beryl",
    "region_cosmos",
    "depth_um",
    "x_um",
    "y_um",
    "z_um",
    "firing_rate_hz",
    "qc_label",
)

#: Distributions whose versions are recorded with every preprocessed session.
RECORDED_PACKAGES = {
    "neds_hf": "neds_hf",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "pyarrow": "pyarrow",
    "datasets": "datasets",
    "one_api": "ONE-api",
    "iblatlas": "iblatlas",
}


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the preprocessed data (``"not installed"`` if absent)."""
    versions = {}
    for key, distribution in RECORDED_PACKAGES.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = "not installed"
    return versions


@dataclass(frozen=True)
class PreprocessingConfig:
    """Every parameter of the preprocessing; recorded with each session of the dataset."""

    align_event: str = "stimOn_times"  # trials column the window is aligned to
    window: tuple[float, float] = (-0.5, 1.5)  # seconds relative to the alignment event
    bin_size: float = 0.02  # seconds
    min_firing_rate: float = 2.0  # Hz, neurons kept when their rate is strictly greater
    qc_only: bool = False  # keep only clusters with qc_label == 1
    min_rt: float = DEFAULT_MIN_RT_S  # s, firstMovement - stimOn below this -> "rt_negative"
    max_rt: float = DEFAULT_MAX_RT_S  # s, above this -> "rt_too_long"
    max_trial_duration: float = DEFAULT_MAX_TRIAL_DURATION_S  # s, feedback - goCue above this
    behavior_sampling: str = "center"  # "center" or "right_edge" of each bin
    wheel_fs: int = 1000  # Hz, uniform grid the wheel position is interpolated to
    wheel_filter_order: int = 8  # Butterworth order
    wheel_corner_hz: float = 20.0  # Butterworth low-pass corner frequency
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # train/validation/test
    split_seed: int = 42

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", tuple(float(v) for v in self.window))
        object.__setattr__(self, "split_fractions", tuple(float(v) for v in self.split_fractions))
        if len(self.window) != 2 or not self.window[1] > self.window[0]:
            raise ValueError(f"window must be (start, end) with end > start, got {self.window}")
        if not self.bin_size > 0:
            raise ValueError(f"bin_size must be positive, got {self.bin_size}")
        n_bins_float = (self.window[1] - self.window[0]) / self.bin_size
        if abs(n_bins_float - round(n_bins_float)) > 1e-6 or round(n_bins_float) < 1:
            raise ValueError(
                f"window {self.window} is not a whole number of bins of {self.bin_size} s "
                f"({n_bins_float} bins)"
            )
        if self.behavior_sampling not in ("center", "right_edge"):
            raise ValueError(
                f"behavior_sampling must be 'center' or 'right_edge', got "
                f"{self.behavior_sampling!r}"
            )
        if len(self.split_fractions) != len(SPLITS) or min(self.split_fractions) < 0:
            raise ValueError(
                f"split_fractions must be 3 non-negative numbers: {self.split_fractions}"
            )
        if self.split_fractions[0] <= 0:
            raise ValueError(f"the train fraction must be positive, got {self.split_fractions}")
        if abs(sum(self.split_fractions) - 1.0) > 1e-9:
            raise ValueError(f"split_fractions must sum to 1, got {self.split_fractions}")
        if self.min_firing_rate < 0:
            raise ValueError(f"min_firing_rate must be >= 0, got {self.min_firing_rate}")
        if not 0 < self.wheel_corner_hz < self.wheel_fs / 2:
            raise ValueError(
                f"wheel_corner_hz must lie in (0, wheel_fs / 2), got {self.wheel_corner_hz}"
            )

    @property
    def n_bins(self) -> int:
        """Number of time bins per trial, ``round((end - start) / bin_size)``."""
        return round((self.window[1] - self.window[0]) / self.bin_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists), suitable for JSON and the sessions table."""
        values = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessingConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {sorted(unknown)}")
        return cls(**values)


@dataclass
class ExclusionReport:
    """What preprocessing dropped from one session, and why.

    ``excluded`` counts each excluded trial once, under the first reason of
    :data:`EXCLUSION_REASONS`; ``matching`` counts every trial satisfying each reason.
    """

    n_trials_total: int
    n_trials_kept: int
    excluded: dict[str, int]
    matching: dict[str, int]
    excluded_trial_ids: dict[str, list[int]]
    n_clusters_total: int
    n_neurons_kept: int
    n_clusters_below_rate: int
    n_clusters_failed_qc: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class PreprocessedSession:
    """One session after preprocessing: kept trials (sorted by trial id) and kept neurons."""

    session_id: str
    config: PreprocessingConfig
    trial_ids: np.ndarray  # (n_trials,) int64, row in the ALF trials table
    spikes: np.ndarray  # (n_trials, N, T) uint16, neuron-major counts
    wheel_speed: np.ndarray  # (n_trials, T) float32, rad/s
    whisker_motion_energy: np.ndarray  # (n_trials, T) float32, camera ROI motion energy
    left_paw_speed: np.ndarray  # (n_trials, T) float32, px/s, NaN where the pose is invalid
    right_paw_speed: np.ndarray  # (n_trials, T) float32, px/s, NaN where the pose is invalid
    choice: np.ndarray  # (n_trials,) int64, 0 = right, 1 = left
    block: np.ndarray  # (n_trials,) int64, 0/1/2 for probabilityLeft 0.2/0.5/0.8
    reward: np.ndarray  # (n_trials,) int64, 1 = rewarded
    contrast: np.ndarray  # (n_trials,) float32, contrastRight - contrastLeft
    stim_on_time: np.ndarray  # (n_trials,) float64, s
    split: np.ndarray  # (n_trials,) str, one of SPLITS
    neurons: pd.DataFrame  # (N rows) NEURON_COLUMNS
    normalization: dict[str, dict[str, float]]  # modality -> mean/std/min/max (train split)
    session: dict[str, Any]  # the sessions-table row
    report: ExclusionReport = field(repr=False)
    #: the BrainWideBench behaviours besides ``reward``, by name: (n_trials,) int64 labels or
    #: (n_trials, T) float32 traces, -1 / NaN where missing
    behaviors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_trials(self) -> int:
        """Number of kept trials."""
        return len(self.trial_ids)

    @property
    def n_neurons(self) -> int:
        """Number of kept neurons (N)."""
        return self.spikes.shape[1]

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions (into the per-trial arrays) of the trials of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.split == split)

    def trial_columns(self, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-trial columns (dataset trials schema) for the given rows (all rows by default)."""
        if rows is None:
            rows = np.arange(self.n_trials)
        return {
            "session_id": np.full(len(rows), self.session_id, dtype=object),
            "trial_id": self.trial_ids[rows],
            "spikes": self.spikes[rows],
            "wheel_speed": self.wheel_speed[rows],
            "whisker_motion_energy": self.whisker_motion_energy[rows],
            "left_paw_speed": self.left_paw_speed[rows],
            "right_paw_speed": self.right_paw_speed[rows],
            "choice": self.choice[rows],
            "block": self.block[rows],
            "reward": self.reward[rows],
            "contrast": self.contrast[rows],
            "stim_on_time": self.stim_on_time[rows],
            **{name: values[rows] for name, values in self.behaviors.items()},
        }

    def missing_fractions(self) -> dict[str, float]:
        """``{modality: fraction of missing entries}`` for every produced behaviour that has
        any missing entry (the build report's ``missing_modalities``)."""
        return missing_fractions(DATASET_MODALITIES, self.trial_columns())


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


def bin_spikes(
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    window_starts: np.ndarray,
    n_clusters: int,
    n_bins: int,
    bin_size: float,
) -> np.ndarray:
    """Count spikes per trial, cluster and bin; returns ``(n_trials, n_clusters, n_bins)`` uint16.

    Bin ``k`` of trial ``j`` holds the spikes with
    ``window_starts[j] + k*bin_size <= t < window_starts[j] + (k+1)*bin_size``. ``spike_times``
    must be sorted. Per trial: one searchsorted slice and one ``bincount``; the float bin
    index is corrected against the exact edges so spikes on an edge land in the later bin.
    """
    spike_times = np.asarray(spike_times, dtype=np.float64)
    window_starts = np.asarray(window_starts, dtype=np.float64)
    n_trials = len(window_starts)
    counts = np.zeros((n_trials, n_clusters, n_bins), dtype=np.uint16)  # (K, C, T)
    window_ends = window_starts + n_bins * bin_size
    first_spike = np.searchsorted(spike_times, window_starts, side="left")
    end_spike = np.searchsorted(spike_times, window_ends, side="left")
    inverse_bin = 1.0 / bin_size
    n_cells = n_clusters * n_bins
    for trial, (t0, i0, i1) in enumerate(zip(window_starts, first_spike, end_spike)):
        if i1 <= i0:
            continue
        times = spike_times[i0:i1]  # (S,)
        bins = ((times - t0) * inverse_bin).astype(np.int64)  # (S,) floor: times >= t0
        bins -= times < t0 + bins * bin_size  # float rounding put it one bin too far
        bins += times >= t0 + (bins + 1) * bin_size  # ... or one bin too early
        flat = spike_clusters[i0:i1].astype(np.int64) * n_bins + bins  # (S,)
        trial_counts = np.bincount(flat, minlength=n_cells)  # (C*T,) int64
        if i1 - i0 > np.iinfo(np.uint16).max and trial_counts.max() > np.iinfo(np.uint16).max:
            raise OverflowError(f"more than 65535 spikes in one bin of trial {trial}")
        counts[trial] = trial_counts.reshape(n_clusters, n_bins)
    return counts


def bin_sample_times(window_starts: np.ndarray, n_bins: int, bin_size: float, sampling: str):
    """Times at which behaviours are sampled, ``(n_trials, n_bins)``: bin centres or right edges."""
    offset = 0.5 if sampling == "center" else 1.0
    if sampling not in ("center", "right_edge"):
        raise ValueError(f"sampling must be 'center' or 'right_edge', got {sampling!r}")
    return window_starts[:, None] + (np.arange(n_bins) + offset) * bin_size  # (K, T)


def wheel_velocity(
    timestamps: np.ndarray,
    position: np.ndarray,
    fs: int = 1000,
    order: int = 8,
    corner_hz: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Low-passed wheel velocity on a uniform grid; returns ``(grid_times, velocity)`` (rad/s).

    The position is linearly interpolated to ``fs`` Hz between the first and last timestamp,
    filtered with a zero-phase Butterworth low-pass (``sosfiltfilt``) and differentiated with
    second-order central differences.
    """
    if len(timestamps) < 2:
        raise ValueError(f"need at least 2 wheel samples, got {len(timestamps)}")
    n_grid = math.floor((timestamps[-1] - timestamps[0]) * fs + 1e-9) + 1
    grid_times = timestamps[0] + np.arange(n_grid) / fs  # (G,)
    grid_position = np.interp(grid_times, timestamps, position)  # (G,)
    sos = butter(order, corner_hz, btype="low", fs=fs, output="sos")
    min_length = 3 * (2 * len(sos) + 1)  # sosfiltfilt default padlen + 1
    if n_grid <= min_length:
        raise ValueError(f"wheel recording too short to filter ({n_grid} samples at {fs} Hz)")
    filtered = sosfiltfilt(sos, grid_position)  # (G,)
    velocity = np.gradient(filtered, 1.0 / fs)  # (G,)
    return grid_times, velocity


def session_wheel_velocity(
    raw: RawSession, config: PreprocessingConfig
) -> tuple[np.ndarray, np.ndarray]:
    """A session's :func:`wheel_velocity` with the configured grid and filter, ``(grid_times,
    velocity)``; trial rows and continuous windows sample its absolute value."""
    return wheel_velocity(
        np.asarray(raw.wheel_timestamps, dtype=np.float64),
        np.asarray(raw.wheel_position, dtype=np.float64),
        fs=config.wheel_fs,
        order=config.wheel_filter_order,
        corner_hz=config.wheel_corner_hz,
    )


def split_assignment(
    n_trials: int, session_id: str, seed: int, fractions: tuple[float, float, float]
) -> np.ndarray:
    """Split label per trial (``(n_trials,)`` str) from a generator seeded by (seed, session id).

    The seed words come from ``sha256(session_id)``, so the assignment is stable across
    processes, platforms and the set of sessions being processed. Split sizes are
    ``floor(cumsum(fractions) * n)`` boundaries over a random permutation.
    """
    digest = hashlib.sha256(session_id.encode("utf-8")).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), *words]))
    order = rng.permutation(n_trials)  # (n_trials,)
    cumulative = np.cumsum(fractions)
    boundaries = [math.floor(c * n_trials + 1e-9) for c in cumulative]
    boundaries[-1] = n_trials
    labels = np.empty(n_trials, dtype=object)
    start = 0
    for name, stop in zip(SPLITS, boundaries):
        labels[order[start:stop]] = name
        start = stop
    return labels.astype(str)


# --------------------------------------------------------------------------------------------
# Session preprocessing
# --------------------------------------------------------------------------------------------


def _trial_column(raw: RawSession, name: str) -> np.ndarray:
    """A trials column as float64, or a ``ValueError`` naming the session and column."""
    return numeric_trial_column(raw.trials, name, raw.session_id)


def exclusion_masks(raw: RawSession, config: PreprocessingConfig) -> dict[str, np.ndarray]:
    """Boolean mask ``(n_trials,)`` per IBL exclusion reason (the trials-table ones only)."""
    for name in TRIAL_COLUMNS:
        _trial_column(raw, name)
    return trial_exclusion_masks(
        raw.trials,
        min_rt=config.min_rt,
        max_rt=config.max_rt,
        max_trial_duration=config.max_trial_duration,
        extra_nan_fields=(config.align_event,),
        session_id=raw.session_id,
    )


def _validate_series(raw: RawSession, name: str, times: np.ndarray, values: np.ndarray) -> None:
    if len(times) < 2:
        raise ValueError(f"session {raw.session_id}: {name} has {len(times)} samples (need >= 2)")
    if not (np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0)):
        raise ValueError(f"session {raw.session_id}: {name} timestamps are not finite and sorted")
    if name == "wheel" and not np.all(np.isfinite(values)):
        raise ValueError(f"session {raw.session_id}: wheel position contains NaN or inf")


def _covered(sample_times: np.ndarray, series_times: np.ndarray) -> np.ndarray:
    """Per trial, whether all sample times lie within the recorded span, ``(n_trials,)``."""
    return (sample_times[:, 0] >= series_times[0]) & (sample_times[:, -1] <= series_times[-1])


def _map_block(raw: RawSession, trial_ids: np.ndarray, probability_left: np.ndarray) -> np.ndarray:
    block = np.full(len(probability_left), -1, dtype=np.int64)
    for value, label in BLOCK_CLASSES.items():
        block[np.isclose(probability_left, value, rtol=0, atol=1e-6)] = label
    bad = np.flatnonzero(block < 0)
    if len(bad):
        raise ValueError(
            f"session {raw.session_id}: trial {int(trial_ids[bad[0]])} has probabilityLeft "
            f"{probability_left[bad[0]]!r}; expected one of {sorted(BLOCK_CLASSES)}"
        )
    return block


def _map_choice(raw: RawSession, trial_ids: np.ndarray, choice: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero((choice != -1) & (choice != 1))
    if len(bad):
        raise ValueError(
            f"session {raw.session_id}: trial {int(trial_ids[bad[0]])} has choice "
            f"{choice[bad[0]]!r}; expected -1 or +1 after exclusion"
        )
    return (choice == 1).astype(np.int64)


def _map_contrast(
    raw: RawSession, trial_ids: np.ndarray, contrast_left: np.ndarray, contrast_right: np.ndarray
) -> np.ndarray:
    """``stimulus_contrast`` classes ``(n_trials,)`` from the contrast of the shown stimulus
    (the side that is not NaN; the left one if both are set); ``INVALID_LABEL`` when neither
    side has a contrast, a ValueError naming the trial for a contrast not in the IBL set."""
    shown = np.where(np.isfinite(contrast_left), contrast_left, contrast_right)  # (n_trials,)
    classes = np.full(len(shown), INVALID_LABEL, dtype=np.int64)
    for value, label in CONTRAST_CLASSES.items():
        classes[np.isclose(shown, value, rtol=0, atol=1e-6)] = label
    bad = np.flatnonzero((classes == INVALID_LABEL) & np.isfinite(shown))
    if len(bad):
        raise ValueError(
            f"session {raw.session_id}: trial {int(trial_ids[bad[0]])} shows a stimulus of "
            f"contrast {float(shown[bad[0]])}; expected one of {sorted(CONTRAST_CLASSES)}"
        )
    return classes


def lick_counts(
    lick_times: np.ndarray | None, window_starts: np.ndarray, n_bins: int, bin_size: float
) -> np.ndarray:
    """Licks per bin ``(n_trials, n_bins)`` float32 on the spike bins (:func:`bin_spikes`'s
    edges); all NaN (missing) when the session has no lick times."""
    if lick_times is None:
        return np.full((len(window_starts), n_bins), np.nan, dtype=np.float32)
    lick_times = np.asarray(lick_times, dtype=np.float64)
    counts = bin_spikes(
        lick_times, np.zeros(len(lick_times), dtype=np.int64), window_starts, 1, n_bins, bin_size
    )  # (K, 1, T)
    return counts[:, 0, :].astype(np.float32)


def missing_fractions(modalities: Any, columns: dict[str, np.ndarray]) -> dict[str, float]:
    """``{name: fraction of missing entries}`` of the behaviours of `modalities` that may be
    missing and have a missing entry in the trial `columns` (NaN / -1, :mod:`neds_hf.validity`)."""
    fractions = {}
    for spec in modalities:
        if spec["name"] not in columns:
            continue
        missing = invalid_entries(spec, columns[spec["name"]])
        if missing.size and missing.any():
            fractions[spec["name"]] = float(missing.mean())
    return fractions


def _bwb_behaviors(
    raw: RawSession,
    config: PreprocessingConfig,
    kept_rows: np.ndarray,
    trial_ids: np.ndarray,
    window_starts: np.ndarray,
) -> dict[str, np.ndarray]:
    """The BrainWideBench behaviours besides ``reward`` of the kept trials: ``stimulus_contrast``
    ``(K,)`` and ``licking_rate`` ``(K, T)`` (missing entries -1 / NaN, never a reason to drop a
    trial). ``window_starts`` are the kept trials' window starts ``(K,)``."""
    return {
        "stimulus_contrast": _map_contrast(
            raw,
            trial_ids,
            _trial_column(raw, "contrastLeft")[kept_rows],
            _trial_column(raw, "contrastRight")[kept_rows],
        ),
        "licking_rate": lick_counts(raw.lick_times, window_starts, config.n_bins, config.bin_size),
    }


def _continuous_normalization(
    behaviour: dict[str, np.ndarray], split: np.ndarray
) -> dict[str, dict[str, float]]:
    """Normalisation constants of each continuous behaviour over its present train entries
    (missing ones, NaN, left out); a behaviour missing from every train trial gets NaN
    constants, so that every session lists the same behaviours."""
    normalization = {}
    for name, values in behaviour.items():
        train = values[split == "train"]
        present = train[~np.isnan(train)]
        normalization[name] = (
            normalization_stats(present)
            if present.size
            else dict.fromkeys(("mean", "std", "min", "max"), float("nan"))
        )
    return normalization


def normalization_stats(values: np.ndarray) -> dict[str, float]:
    """mean / std (population) / min / max of all values, as Python floats (float64 sums).

    Missing values (NaN, e.g. pose gaps) are left out; all missing gives NaN constants.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("cannot compute normalisation constants of an empty train split")
    values = values[~np.isnan(values)]
    if values.size == 0:
        return dict.fromkeys(("mean", "std", "min", "max"), float("nan"))
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def preprocess_session(raw: RawSession, config: PreprocessingConfig) -> PreprocessedSession:
    """Turn one raw session into binned, aligned, split trials; see the module docstring.

    Raises ``ValueError`` (naming the session and the field or trial) on inconsistent data,
    and :class:`EmptySessionError` when no trial or no neuron survives the filters.
    """
    trial_ids_all = np.asarray(raw.trials.index, dtype=np.int64)  # (n_all,)
    masks = exclusion_masks(raw, config)
    window_starts_all = _trial_column(raw, config.align_event) + config.window[0]  # (n_all,)
    behaviour_all = _sample_behaviour(raw, config, window_starts_all, masks)  # adds 2 reasons
    excluded_by = one_reason_per_trial({r: masks[r] for r in EXCLUSION_REASONS})
    kept_rows = np.flatnonzero(~np.any([masks[r] for r in EXCLUSION_REASONS], axis=0))
    counts = bin_spikes(
        raw.spike_times,
        np.asarray(raw.spike_clusters),
        window_starts_all[kept_rows],
        raw.n_clusters,
        config.n_bins,
        config.bin_size,
    )  # (K, C, T)
    neurons = _select_neurons(raw, config, counts)
    report = ExclusionReport(
        n_trials_total=len(trial_ids_all),
        n_trials_kept=len(kept_rows),
        excluded={r: int(excluded_by[r].sum()) for r in EXCLUSION_REASONS},
        matching={r: int(masks[r].sum()) for r in EXCLUSION_REASONS},
        excluded_trial_ids={r: trial_ids_all[excluded_by[r]].tolist() for r in EXCLUSION_REASONS},
        n_clusters_total=raw.n_clusters,
        n_neurons_kept=len(neurons["kept"]),
        n_clusters_below_rate=int((~neurons["above_rate"]).sum()),
        n_clusters_failed_qc=int((~neurons["passes_qc"]).sum()),
    )
    _check_not_empty(raw.session_id, config, report)
    trial_ids = trial_ids_all[kept_rows]
    behaviour = {
        name: values[kept_rows].astype(np.float32) for name, values in behaviour_all.items()
    }
    sample_times = bin_sample_times(
        window_starts_all[kept_rows], config.n_bins, config.bin_size, config.behavior_sampling
    )  # (K, T)
    behaviour.update(paw_speeds_at(raw.paw_pose, sample_times))  # NaN where invalid
    split = _split_or_raise(raw.session_id, config, report)
    behaviors = _bwb_behaviors(raw, config, kept_rows, trial_ids, window_starts_all[kept_rows])
    continuous = {**behaviour, **{k: v for k, v in behaviors.items() if v.ndim == 2}}
    normalization = _continuous_normalization(
        {name: continuous[name] for name in CONTINUOUS_BEHAVIORS}, split
    )
    session = PreprocessedSession(
        session_id=raw.session_id,
        config=config,
        trial_ids=trial_ids,
        spikes=np.ascontiguousarray(counts[:, neurons["kept"], :]),  # (K, N, T)
        wheel_speed=behaviour["wheel_speed"],  # (K, T)
        whisker_motion_energy=behaviour["whisker_motion_energy"],  # (K, T)
        left_paw_speed=behaviour["left_paw_speed"],  # (K, T)
        right_paw_speed=behaviour["right_paw_speed"],  # (K, T)
        **_trial_values(raw, kept_rows, trial_ids),
        split=split,
        neurons=_neurons_table(raw, neurons["kept"], neurons["firing_rate"]),
        normalization=normalization,
        session={},
        report=report,
        behaviors=behaviors,
    )
    session.session = _session_row(raw, session)
    return session


def _sample_behaviour(
    raw: RawSession,
    config: PreprocessingConfig,
    window_starts: np.ndarray,
    masks: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Continuous behaviours per trial and bin, ``(n_all, T)`` float64 each (NaN where not
    sampled); adds the ``behavior_out_of_range`` and ``behavior_nan`` masks to ``masks``.

    Only trials still in play after the trials-table reasons are sampled; a window not wholly
    covered by a recording is excluded, never extrapolated.
    """
    _validate_series(raw, "wheel", raw.wheel_timestamps, raw.wheel_position)
    _validate_series(raw, "motion energy", raw.motion_energy_times, raw.motion_energy)
    wheel_times, velocity = session_wheel_velocity(raw, config)
    finite_align = np.isfinite(window_starts)
    sample_times = bin_sample_times(
        np.where(finite_align, window_starts, 0.0),
        config.n_bins,
        config.bin_size,
        config.behavior_sampling,
    )  # (n_all, T)
    motion_energy_times = np.asarray(raw.motion_energy_times, dtype=np.float64)
    covered = _covered(sample_times, wheel_times) & _covered(sample_times, motion_energy_times)
    masks["behavior_out_of_range"] = finite_align & ~covered
    in_play = ~np.any(list(masks.values()), axis=0)  # (n_all,)
    wheel_speed = np.full(sample_times.shape, np.nan)  # (n_all, T)
    motion_energy = np.full(sample_times.shape, np.nan)  # (n_all, T)
    wheel_speed[in_play] = np.abs(np.interp(sample_times[in_play], wheel_times, velocity))
    motion_energy[in_play] = np.interp(
        sample_times[in_play], motion_energy_times, np.asarray(raw.motion_energy, np.float64)
    )
    masks["behavior_nan"] = in_play & ~(
        np.all(np.isfinite(wheel_speed), axis=1) & np.all(np.isfinite(motion_energy), axis=1)
    )
    return {"wheel_speed": wheel_speed, "whisker_motion_energy": motion_energy}


def _select_neurons(
    raw: RawSession, config: PreprocessingConfig, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Firing rate of every cluster over the kept trials ``counts`` ``(K, C, T)`` and the
    clusters kept (rate strictly above ``min_firing_rate``, and QC with ``qc_only``)."""
    n_kept = counts.shape[0]
    total_counts = counts.sum(axis=(0, 2), dtype=np.int64)  # (C,)
    window_seconds = config.n_bins * config.bin_size
    firing_rate = (
        total_counts / (n_kept * window_seconds) if n_kept else np.zeros(raw.n_clusters)
    )  # (C,)
    above_rate = firing_rate > config.min_firing_rate
    qc_label = raw.clusters["qc_label"].to_numpy(dtype=np.float64)
    passes_qc = qc_label == 1 if config.qc_only else np.ones(raw.n_clusters, dtype=bool)
    return {
        "firing_rate": firing_rate,
        "above_rate": above_rate,
        "passes_qc": passes_qc,
        "kept": np.flatnonzero(above_rate & passes_qc),
    }


def _check_not_empty(session_id: str, config: PreprocessingConfig, report: ExclusionReport):
    """:class:`EmptySessionError` when no trial or no neuron survived the filters."""
    if report.n_trials_kept == 0:
        raise EmptySessionError(session_id, "no_trials", "no trial survived exclusion", report)
    if report.n_neurons_kept == 0:
        raise EmptySessionError(
            session_id,
            "no_neurons",
            f"no neuron above {config.min_firing_rate} Hz"
            + (" with qc_label == 1" if config.qc_only else ""),
            report,
        )


def _trial_values(
    raw: RawSession, kept_rows: np.ndarray, trial_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-trial values of the kept trials: choice, block, reward, contrast, stimOn time."""
    contrast_right = np.nan_to_num(_trial_column(raw, "contrastRight")[kept_rows], nan=0.0)
    contrast_left = np.nan_to_num(_trial_column(raw, "contrastLeft")[kept_rows], nan=0.0)
    return {
        "choice": _map_choice(raw, trial_ids, _trial_column(raw, "choice")[kept_rows]),
        "block": _map_block(raw, trial_ids, _trial_column(raw, "probabilityLeft")[kept_rows]),
        "reward": (_trial_column(raw, "feedbackType")[kept_rows] == 1).astype(np.int64),
        "contrast": (contrast_right - contrast_left).astype(np.float32),
        "stim_on_time": _trial_column(raw, "stimOn_times")[kept_rows],
    }


def _split_or_raise(
    session_id: str, config: PreprocessingConfig, report: ExclusionReport
) -> np.ndarray:
    """The split label of each kept trial; :class:`EmptySessionError` if a used split is empty."""
    n_kept = report.n_trials_kept
    split = split_assignment(n_kept, session_id, config.split_seed, config.split_fractions)
    empty_splits = [
        name
        for name, fraction in zip(SPLITS, config.split_fractions)
        if fraction > 0 and not np.any(split == name)
    ]
    if empty_splits:
        raise EmptySessionError(
            session_id,
            "too_few_trials",
            f"{n_kept} kept trial(s) leave the split(s) {empty_splits} empty",
            report,
        )
    return split


def _session_row(raw: RawSession, session: PreprocessedSession) -> dict[str, Any]:
    """The sessions-table row of a preprocessed session (dataset ``sessions`` config)."""
    return {
        "session_id": session.session_id,
        "subject": raw.subject,
        "lab": raw.lab,
        "date": str(raw.date),
        "probes": list(raw.probes),
        "n_neurons": session.n_neurons,
        "n_clusters": raw.n_clusters,
        "n_trials": session.n_trials,
        **{f"n_trials_{name}": int((session.split == name).sum()) for name in SPLITS},
        "n_trials_alf": session.report.n_trials_total,
        "excluded_trials": dict(session.report.excluded),
        "normalization": [
            {"modality": name, **stats} for name, stats in session.normalization.items()
        ],
        "motion_energy_camera": raw.motion_energy_camera,
        "one_revision": _one_revision(raw.metadata),
        "preprocessing": session.config.to_dict(),
        "package_versions": package_versions(),
    }


def _one_revision(metadata: dict[str, Any]) -> str:
    """The ONE revision a session was loaded at: the requested one, else the revisions of the
    spike-sorting datasets actually loaded (comma-joined), else ``""`` (default revision)."""
    requested = metadata.get("revision_requested") or metadata.get("revision")
    if requested:
        return str(requested)
    probes = metadata.get("probes") or {}
    loaded = sorted({str(p["revision"]) for p in probes.values() if p.get("revision")})
    return ",".join(loaded)


def _neurons_table(
    raw: RawSession, kept_clusters: np.ndarray, firing_rate: np.ndarray
) -> pd.DataFrame:
    clusters = raw.clusters.iloc[kept_clusters]
    table = pd.DataFrame(
        {
            "session_id": [raw.session_id] * len(kept_clusters),
            "neuron_index": np.arange(len(kept_clusters), dtype=np.int64),
            "probe": clusters["probe"].astype(str).to_numpy(),
            "cluster_id": clusters["cluster_id"].to_numpy(dtype=np.int64),
            "cluster_uuid": clusters["cluster_uuid"].astype(str).to_numpy(),
            "region_allen": clusters["region_allen"].astype(str).to_numpy(),
            "region_beryl": clusters["region_beryl"].astype(str).to_numpy(),
            "region_cosmos": clusters["region_cosmos"].astype(str).to_numpy(),
            "depth_um": clusters["depth_um"].to_numpy(dtype=np.float64),
            "x_um": clusters["x_um"].to_numpy(dtype=np.float64),
            "y_um": clusters["y_um"].to_numpy(dtype=np.float64),
            "z_um": clusters["z_um"].to_numpy(dtype=np.float64),
            "firing_rate_hz": firing_rate[kept_clusters].astype(np.float64),
            "qc_label": clusters["qc_label"].to_numpy(dtype=np.float64),
        }
    )
    return table[list(NEURON_COLUMNS)]


class EmptySessionError(ValueError):
    """A session with no trial or no neuron left after preprocessing (it is skipped in builds).

    ``reason`` is ``"no_trials"``, ``"no_neurons"`` or ``"too_few_trials"`` (a split with a
    positive fraction would be empty); ``report`` holds the exclusion counts.
    """

    def __init__(self, session_id: str, reason: str, detail: str, report: ExclusionReport):
        super().__init__(f"session {session_id}: {detail}")
        self.session_id = session_id
        self.reason = reason
        self.report = report

    def __reduce__(self):  # picklable across worker processes
        detail = str(self).split(": ", 1)[-1]
        return (type(self), (self.session_id, self.reason, detail, self.report))
