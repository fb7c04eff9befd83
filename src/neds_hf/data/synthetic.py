"""Realistic synthetic IBL-like sessions with known ground truth, in the real ALF layout.

A synthetic session imitates an IBL repeated-site Neuropixels recording closely enough that the
real loading code (:mod:`neds_hf.data.ibl`, through ONE-api) and the real preprocessing run on it
unchanged, while every quantity they estimate is known exactly:

* **Task**: IBL biased-choice-world trials. The first block has ``probabilityLeft = 0.5``
  (``first_block_trials``, 90 by default), then blocks alternate between 0.2 and 0.8 with lengths
  drawn from an exponential of mean 60 truncated to [20, 100]. Stimuli of contrast
  {0, 0.0625, 0.125, 0.25, 1} appear left with probability ``probabilityLeft``; choices follow a
  psychometric curve biased by the block; reaction times are log-normal and slower at low
  contrast. A fixed number of *planted bad trials* of each exclusion kind is inserted (see
  :data:`EXCLUSION_REASONS`).
* **Behaviour**: a continuous wheel trajectory (minimum-jerk turns from first movement to
  response, small movements in the inter-trial intervals) recorded like the FPGA rotary encoder
  (quantised to 2π/4096 rad, one irregular timestamp per encoder tick), and whisker ROI motion
  energy driven by wheel movement plus spontaneous whisking, sampled by a 60 Hz left camera
  (whose timestamps file carries a few extra leading timestamps, as in older sessions) and a
  150 Hz right camera.
* **Neurons**: regions along a repeated-site insertion (VISa, CA1, DG, LP, PO with their Allen
  layer ids; fibre tracts and the outside of the brain on channels without units). Each neuron's
  log-rate is a region-specific tuning to six covariates (:data:`COVARIATE_NAMES`: wheel speed,
  whisker motion energy, choice, block prior, signed and unsigned stimulus) plus loadings on a
  few shared latent factors (driven by the covariates plus smooth noise). Rates are piecewise
  constant on a 5 ms grid and spikes are drawn from the exact inhomogeneous Poisson process, so
  the expected spike count of any bin is known exactly. Baseline rates span 0.2-40 Hz with a
  fraction below 2 Hz for the firing-rate filter to remove.

Files are written in the real ALF layout (``lab/Subjects/subject/date/number/alf/...``) with a
real ONE cache (``sessions.pqt``, ``datasets.pqt``) at the root, so ``One(cache_dir=root,
mode='local')`` lists and loads them without warnings. Ground truth goes to
``<root>/ground_truth/<eid>.npz`` and ``<eid>.json`` (not indexed by ONE); see
:func:`load_ground_truth` and :data:`GROUND_TRUTH_ARRAYS` for the exact format.

Session ids are ``uuid5(SYNTHETIC_NAMESPACE, "lab/Subjects/subject/date/number")`` and the
session path is a function of ``(seed, index)``, so the same seed always gives the same ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter, oaconvolve

from .preprocess import EXCLUSION_REASONS as PREPROCESSING_EXCLUSION_REASONS
from .preprocess import NAN_CHECKED_FIELDS

# --------------------------------------------------------------------------------------------
# Constants shared with tests and preprocessing
# --------------------------------------------------------------------------------------------

#: Namespace of the synthetic session ids (``uuid5`` of the relative session path).
SYNTHETIC_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "neds_hf/synthetic-ibl-session")

#: Standard trial grid of the ground truth: window around ``stimOn_times`` (s), bin size (s),
#: number of bins (``round(2.0 / 0.02) = 100``); bin ``k`` is ``[t0 + k*dt, t0 + (k+1)*dt)``.
STANDARD_WINDOW_S = (-0.5, 1.5)
STANDARD_BIN_SIZE_S = 0.02
STANDARD_N_BINS = 100

#: Trial exclusion reasons, in precedence order. A bad trial is counted once under the first
#: reason it satisfies (``exclusion_first_reason_counts`` in the ground truth) and once under
#: every reason it satisfies (``exclusion_reason_counts``):
#:
#: * ``nan_field``: any of :data:`NAN_CHECKED_FIELDS` is NaN;
#: * ``no_choice``: ``choice == 0`` (no-go trial);
#: * ``rt_negative``: ``firstMovement_times - stimOn_times < DEFAULT_MIN_RT_S``;
#: * ``rt_too_long``: ``firstMovement_times - stimOn_times > DEFAULT_MAX_RT_S``;
#: * ``trial_too_long``: ``feedback_times - goCue_times > DEFAULT_MAX_TRIAL_DURATION_S``.
#:
#: Comparisons involving NaN are false. These are the trials-table reasons of
#: :mod:`neds_hf.data.preprocess`, in its order (its two further reasons concern behaviour
#: sampling, which the generator never plants).
EXCLUSION_REASONS = PREPROCESSING_EXCLUSION_REASONS[:5]

#: Thresholds under which the ground-truth exclusion counts are computed (s).
DEFAULT_MIN_RT_S = 0.0
DEFAULT_MAX_RT_S = 10.0
DEFAULT_MAX_TRIAL_DURATION_S = 10.0

#: Planted faults (``SyntheticSessionSpec.fault``) for the bad-input paths, with what they do.
FAULTS: dict[str, str] = {
    "no_motion_energy": "no ROIMotionEnergy file on either camera (camera times are kept)",
    "no_spike_sorting": "probe folders hold channels only: no spikes/clusters in any collection",
    "empty_trials": "_ibl_trials.table.pqt has every column but zero rows",
    "mismatched_spike_lengths": "probe00 spikes.clusters is 7 entries shorter than spikes.times",
    "clusters_out_of_range": "3 spikes of probe00 point past the end of its clusters table",
    "corrupted_spike_times": "probe00 spikes.times.npy is truncated (valid header, cut data)",
}

#: Stimulus contrasts of the IBL task.
CONTRAST_LEVELS = (0.0, 0.0625, 0.125, 0.25, 1.0)

#: Covariates that drive the latent factors and the neurons, in the order of the weight arrays.
COVARIATE_NAMES = (
    "wheel_speed",
    "whisker_motion_energy",
    "choice",
    "block",
    "stimulus_signed",
    "stimulus_onset",
)

#: Camera frame rates (Hz).
CAMERA_RATES_HZ = {"left": 60.0, "right": 150.0}

#: Rotary encoder resolution of the wheel (rad per tick, X4 decoding of 1024 lines).
WHEEL_RESOLUTION_RAD = 2.0 * math.pi / 4096

#: Time step of the piecewise-constant firing rates (s).
SIMULATION_DT_S = 0.005

#: Number of channels of a Neuropixels 1.0 probe.
N_CHANNELS = 384

#: Channel ranges of the simulated insertion, from the tip (channel 0) upwards:
#: ``(first_channel, stop_channel, Allen acronym, Beryl region of the units placed there or
#: None where no unit is placed)``. The Allen ids of these acronyms are in :data:`ALLEN_IDS`.
PROBE_LAYOUT = (
    (0, 60, "PO", "PO"),
    (60, 120, "LP", "LP"),
    (120, 130, "dhc", None),
    (130, 140, "DG-po", "DG"),
    (140, 150, "DG-sg", "DG"),
    (150, 170, "DG-mo", "DG"),
    (170, 180, "CA1slm", "CA1"),
    (180, 190, "CA1sr", "CA1"),
    (190, 200, "CA1sp", "CA1"),
    (200, 210, "CA1so", "CA1"),
    (210, 220, "alv", None),
    (220, 230, "VISa6b", "VISa"),
    (230, 250, "VISa6a", "VISa"),
    (250, 280, "VISa5", "VISa"),
    (280, 300, "VISa4", "VISa"),
    (300, 340, "VISa2/3", "VISa"),
    (340, 360, "VISa1", "VISa"),
    (360, 384, "void", None),
)

#: Allen CCF ids of the acronyms in :data:`PROBE_LAYOUT` (``iblatlas.regions.BrainRegions``).
ALLEN_IDS = {
    "PO": 1020,
    "LP": 218,
    "dhc": 443,
    "DG-po": 10704,
    "DG-sg": 632,
    "DG-mo": 10703,
    "CA1slm": 391,
    "CA1sr": 415,
    "CA1sp": 407,
    "CA1so": 399,
    "alv": 466,
    "VISa6b": 312782570,
    "VISa6a": 312782566,
    "VISa5": 312782562,
    "VISa4": 312782558,
    "VISa2/3": 312782554,
    "VISa1": 312782550,
    "void": 0,
}

#: Beryl region -> Cosmos region of the unit-bearing regions.
COSMOS_OF_BERYL = {"PO": "TH", "LP": "TH", "DG": "HPF", "CA1": "HPF", "VISa": "Isocortex"}

#: Region tuning magnitudes to :data:`COVARIATE_NAMES` (log-rate per unit of covariate).
REGION_TUNING = {
    "VISa": (0.15, 0.15, 0.20, 0.15, 0.60, 0.80),
    "CA1": (0.45, 0.20, 0.30, 0.25, 0.10, 0.20),
    "DG": (0.30, 0.20, 0.20, 0.35, 0.10, 0.15),
    "LP": (0.45, 0.50, 0.20, 0.10, 0.30, 0.45),
    "PO": (0.35, 0.70, 0.25, 0.10, 0.10, 0.25),
}

#: Labs the synthetic sessions are attributed to (cycled by session index).
SYNTHETIC_LABS = ("cortexlab", "churchlandlab", "hoferlab", "mainenlab", "angelakilab", "danlab")

TRIALS_TABLE_COLUMNS = (
    "intervals_0",
    "intervals_1",
    "goCue_times",
    "response_times",
    "choice",
    "stimOn_times",
    "contrastLeft",
    "contrastRight",
    "feedback_times",
    "feedbackType",
    "rewardVolume",
    "probabilityLeft",
    "firstMovement_times",
)

#: Arrays of the ground-truth ``.npz`` (C = clusters of all probes in merged order: probe00
#: rows then probe01 rows..., K = latent factors, n = trials, T = 100 bins), name -> meaning.
GROUND_TRUTH_ARRAYS = {
    "eid": "() str, session id",
    "fault": "() str, planted fault name or ''",
    "window_s": "(2,) float64, trial window around stimOn (s)",
    "bin_size_s": "() float64, bin width (s)",
    "stim_on_times": "(n,) float64, true stimulus onsets (s); equal to the table's stimOn_times "
    "except in trials where a NaN was planted there",
    "expected_counts": "(n, C, T) float64, expected spike count per bin (integral of the rate)",
    "latents": "(n, K, T) float64, latent factors at the bin centres",
    "covariates": "(n, 6, T) float64, normalised covariates at the bin centres",
    "covariate_names": "(6,) str",
    "wheel_speed": "(n, T) float64, |wheel velocity| of the noise-free trajectory at bin "
    "centres (rad/s)",
    "cluster_probe": "(C,) str, probe name",
    "cluster_id": "(C,) int64, row in that probe's ALF clusters tables",
    "cluster_uuid": "(C,) str",
    "cluster_channel": "(C,) int64, peak channel",
    "cluster_depth_um": "(C,) float64",
    "cluster_region_allen_id": "(C,) int64",
    "cluster_region_allen": "(C,) str",
    "cluster_region_beryl": "(C,) str",
    "cluster_region_cosmos": "(C,) str",
    "cluster_base_rate_hz": "(C,) float64, baseline rate",
    "cluster_mean_rate_hz": "(C,) float64, true mean rate over the whole recording",
    "cluster_covariate_weights": "(C, 6) float64, log-rate weights on the covariates",
    "cluster_latent_loadings": "(C, K) float64, log-rate loadings on the latents",
    "trial_first_reason": "(n,) str, planted exclusion reason ('' for a good trial)",
    "exclusion_reasons": "(5,) str, EXCLUSION_REASONS",
    "exclusion_first_reason_counts": "(5,) int64, trials counted under their first reason",
    "exclusion_reason_counts": "(5,) int64, trials satisfying each reason",
}

GROUND_TRUTH_DIRNAME = "ground_truth"
SESSIONS_PROJECT = "ibl_neuropixel_brainwide_01"
TASK_PROTOCOL = "_iblrig_tasks_ephysChoiceWorld6.6.2"


# --------------------------------------------------------------------------------------------
# Specification and in-memory session
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSessionSpec:
    """Sizes, seed and options of one synthetic session.

    ``seed`` and ``index`` fully determine the session (its path, id and every array).
    ``sorters`` gives each probe's spike-sorting collection (``alf/probeXX/<sorter>``; the last
    entry is repeated for further probes; ``""`` writes straight into ``alf/probeXX``).
    ``sorting_revision`` (``"YYYY-MM-DD"``) writes spike sorting into a ``#revision#`` folder.
    ``duration_s`` stretches the inter-trial intervals to reach that recording length (it must
    be at least the natural length). ``fault`` is a key of :data:`FAULTS` or None.
    """

    seed: int = 0
    index: int = 0
    n_trials: int = 200
    n_neurons_per_probe: int = 40
    n_probes: int = 1
    n_latents: int = 3
    duration_s: float | None = None
    first_block_trials: int = 90
    n_nan_trials: int = 3
    n_no_choice_trials: int = 2
    n_rt_negative_trials: int = 2
    n_rt_too_long_trials: int = 2
    n_trial_too_long_trials: int = 2
    no_choice_timeout_s: float = 60.0
    low_rate_fraction: float = 0.25
    sorters: tuple[str, ...] = ("pykilosort",)
    sorting_revision: str | None = None
    cameras: tuple[str, ...] = ("left", "right")
    n_extra_left_timestamps: int = 3
    fault: str | None = None

    def __post_init__(self) -> None:
        if self.n_trials < 1 or self.n_neurons_per_probe < 1 or self.n_probes < 1:
            raise ValueError(
                f"n_trials, n_neurons_per_probe and n_probes must be >= 1, got "
                f"{self.n_trials}, {self.n_neurons_per_probe}, {self.n_probes}"
            )
        if self.n_probes > 100:
            raise ValueError(f"n_probes must be <= 100 (probe00..probe99), got {self.n_probes}")
        if self.n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {self.n_latents}")
        if self.n_bad_trials > self.n_trials // 2:
            raise ValueError(
                f"{self.n_bad_trials} planted bad trials is more than half of the "
                f"{self.n_trials} trials"
            )
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; known faults: {sorted(FAULTS)}")
        unknown_cameras = set(self.cameras) - set(CAMERA_RATES_HZ)
        if unknown_cameras:
            raise ValueError(f"unknown cameras {sorted(unknown_cameras)}; use 'left' / 'right'")
        if not self.sorters:
            raise ValueError("sorters must name at least one spike-sorting collection")
        if self.sorting_revision is not None:
            try:
                pd.Timestamp(self.sorting_revision)
            except ValueError as error:
                raise ValueError(
                    f"sorting_revision must be an ISO date, got {self.sorting_revision!r}"
                ) from error
        if not 0.0 <= self.low_rate_fraction <= 1.0:
            raise ValueError(f"low_rate_fraction must lie in [0, 1], got {self.low_rate_fraction}")
        if self.n_extra_left_timestamps < 0:
            raise ValueError("n_extra_left_timestamps must be >= 0")

    @property
    def n_bad_trials(self) -> int:
        """Total number of planted bad trials."""
        return (
            self.n_nan_trials
            + self.n_no_choice_trials
            + self.n_rt_negative_trials
            + self.n_rt_too_long_trials
            + self.n_trial_too_long_trials
        )

    @property
    def planted_counts(self) -> dict[str, int]:
        """Number of planted bad trials per exclusion reason (their first reason)."""
        return {
            "nan_field": self.n_nan_trials,
            "no_choice": self.n_no_choice_trials,
            "rt_negative": self.n_rt_negative_trials,
            "rt_too_long": self.n_rt_too_long_trials,
            "trial_too_long": self.n_trial_too_long_trials,
        }

    def probe_names(self) -> list[str]:
        """Probe names ``probe00``, ``probe01``..."""
        return [f"probe{p:02d}" for p in range(self.n_probes)]

    def sorter_of(self, probe_index: int) -> str:
        """Spike-sorting collection name of a probe."""
        return self.sorters[min(probe_index, len(self.sorters) - 1)]


@dataclass
class SyntheticProbe:
    """Spike sorting and channels of one probe, as written to ALF (row ``i`` = cluster ``i``)."""

    name: str
    sorter: str
    spike_times: np.ndarray  # (n_spikes,) float64, s, sorted
    spike_clusters: np.ndarray  # (n_spikes,) uint16
    spike_amps: np.ndarray  # (n_spikes,) float32, V
    spike_depths: np.ndarray  # (n_spikes,) float32, µm from the tip
    cluster_channels: np.ndarray  # (n_clusters,) int64
    cluster_depths: np.ndarray  # (n_clusters,) float64, µm
    cluster_metrics: pd.DataFrame  # n_clusters rows
    cluster_uuids: list[str]
    channel_allen_ids: np.ndarray  # (384,) int64
    channel_mlapdv: np.ndarray  # (384, 3) float64, µm from bregma
    channel_local_coordinates: np.ndarray  # (384, 2) float64, [lateral, axial] µm
    has_spike_sorting: bool = True

    @property
    def n_clusters(self) -> int:
        """Number of clusters (rows of the clusters tables)."""
        return len(self.cluster_channels)

    def collection(self) -> str:
        """ALF collection of the spike sorting, e.g. ``alf/probe00/pykilosort``."""
        return f"alf/{self.name}/{self.sorter}" if self.sorter else f"alf/{self.name}"


@dataclass
class SyntheticSession:
    """One generated session: everything written to ALF plus the ground truth."""

    spec: SyntheticSessionSpec
    eid: str
    lab: str
    subject: str
    date: str  # ISO date
    number: int
    trials: pd.DataFrame  # ALF trials table, columns TRIALS_TABLE_COLUMNS
    trials_extra: dict[str, np.ndarray]  # loose _ibl_trials.<name>.npy datasets
    wheel_timestamps: np.ndarray  # (n_wheel,) float64, s, irregular
    wheel_position: np.ndarray  # (n_wheel,) float64, rad
    camera_times: dict[str, np.ndarray]  # camera -> timestamps as written (extras included)
    camera_motion_energy: dict[str, np.ndarray]  # camera -> (n_frames,) float32
    probes: list[SyntheticProbe]
    ground_truth: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able description

    @property
    def session_rel_path(self) -> str:
        """``lab/Subjects/subject/date/number`` relative to the cache root."""
        return session_rel_path(self.lab, self.subject, self.date, self.number)


def session_rel_path(lab: str, subject: str, date: str, number: int) -> str:
    """Relative ALF session path ``lab/Subjects/subject/YYYY-MM-DD/NNN``."""
    return f"{lab}/Subjects/{subject}/{date}/{int(number):03d}"


def session_eid(rel_path: str) -> str:
    """Deterministic session id of a relative session path (``uuid5`` in our namespace)."""
    return str(uuid.uuid5(SYNTHETIC_NAMESPACE, rel_path))


def synthetic_session_identity(seed: int, index: int) -> dict[str, Any]:
    """Lab, subject, date, number, relative path and eid of session ``index`` of ``seed``."""
    lab = SYNTHETIC_LABS[index % len(SYNTHETIC_LABS)]
    subject = f"SYN{seed:03d}_{index:03d}"
    date = (pd.Timestamp("2023-01-02") + pd.Timedelta(days=index)).date().isoformat()
    number = 1
    rel = session_rel_path(lab, subject, date, number)
    return {
        "lab": lab,
        "subject": subject,
        "date": date,
        "number": number,
        "rel_path": rel,
        "eid": session_eid(rel),
    }


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _block_probabilities(rng: np.random.Generator, n_trials: int, first_block: int) -> np.ndarray:
    """IBL block design: 0.5 first, then alternating 0.2 / 0.8 blocks of 20-100 trials."""
    p_left = np.empty(n_trials)  # (n,)
    n_first = min(first_block, n_trials)
    p_left[:n_first] = 0.5
    position = n_first
    is_high = bool(rng.random() < 0.5)
    while position < n_trials:
        length = 0
        while not 20 <= length <= 100:
            length = round(rng.exponential(60.0))
        p_left[position : position + length] = 0.8 if is_high else 0.2
        position += length
        is_high = not is_high
    return p_left


def exclusion_flags(
    trials: pd.DataFrame,
    min_rt: float = DEFAULT_MIN_RT_S,
    max_rt: float = DEFAULT_MAX_RT_S,
    max_trial_duration: float = DEFAULT_MAX_TRIAL_DURATION_S,
) -> dict[str, np.ndarray]:
    """Per :data:`EXCLUSION_REASONS` entry, which trials satisfy it, ``(n_trials,)`` bool each."""

    def column(name: str) -> np.ndarray:
        return trials[name].to_numpy(dtype=np.float64)

    is_nan = np.zeros(len(trials), dtype=bool)
    for name in NAN_CHECKED_FIELDS:
        is_nan |= np.isnan(column(name))
    reaction_time = column("firstMovement_times") - column("stimOn_times")
    trial_duration = column("feedback_times") - column("goCue_times")
    with np.errstate(invalid="ignore"):
        return {
            "nan_field": is_nan,
            "no_choice": column("choice") == 0,
            "rt_negative": reaction_time < min_rt,
            "rt_too_long": reaction_time > max_rt,
            "trial_too_long": trial_duration > max_trial_duration,
        }


def first_exclusion_reason(flags: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per trial, the first reason of :data:`EXCLUSION_REASONS` it satisfies ('' if none)."""
    n_trials = len(next(iter(flags.values())))
    first = np.full(n_trials, "", dtype=f"<U{max(map(len, EXCLUSION_REASONS))}")  # (n,)
    for reason in reversed(EXCLUSION_REASONS):
        first[flags[reason]] = reason
    return first


def _min_jerk(u: np.ndarray) -> np.ndarray:
    return u**3 * (10.0 - 15.0 * u + 6.0 * u**2)


def _min_jerk_rate(u: np.ndarray) -> np.ndarray:
    return 30.0 * u**2 * (1.0 - u) ** 2


def wheel_kinematics(times: np.ndarray, movements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position (rad) and velocity (rad/s) of the noise-free wheel at ``times``.

    ``movements`` is ``(n_moves, 3)``: start time, duration and amplitude of minimum-jerk turns
    that add up. ``times`` may be in any order.
    """
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    position = np.zeros(len(times))  # (n_times,)
    velocity = np.zeros(len(times))
    steps = np.zeros(len(times) + 1)
    for start, duration, amplitude in movements:
        i0, i1 = np.searchsorted(sorted_times, [start, start + duration])
        u = (sorted_times[i0:i1] - start) / duration
        position[i0:i1] += amplitude * _min_jerk(u)
        velocity[i0:i1] += amplitude * _min_jerk_rate(u) / duration
        steps[i1] += amplitude
    position += np.cumsum(steps)[:-1]
    unsorted_position = np.empty_like(position)
    unsorted_velocity = np.empty_like(velocity)
    unsorted_position[order] = position
    unsorted_velocity[order] = velocity
    return unsorted_position, unsorted_velocity


def _smooth(signal: np.ndarray, tau_s: float, dt: float) -> np.ndarray:
    """Causal exponential smoothing along the last axis."""
    decay = math.exp(-dt / tau_s)
    return lfilter([1.0 - decay], [1.0, -decay], signal, axis=-1)


def _ou_noise(rng: np.random.Generator, shape: tuple[int, ...], tau_s: float, dt: float):
    """Stationary Ornstein-Uhlenbeck noise of unit variance along the last axis."""
    decay = math.exp(-dt / tau_s)
    white = rng.standard_normal(shape) * math.sqrt(1.0 - decay**2)
    white[..., 0] = rng.standard_normal(shape[:-1])
    return lfilter([1.0], [1.0, -decay], white, axis=-1)


def _at_times(grid_signal: np.ndarray, times: np.ndarray, dt: float) -> np.ndarray:
    """Value of a piecewise-constant grid signal ``(..., G)`` at ``times`` -> ``(..., *times)``."""
    index = np.clip(np.floor(times / dt).astype(np.int64), 0, grid_signal.shape[-1] - 1)
    return grid_signal[..., index]


def _trial_grid(stim_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges ``(n, T+1)`` and centres ``(n, T)`` of the standard grid around ``stim_on``."""
    offsets = STANDARD_WINDOW_S[0] + STANDARD_BIN_SIZE_S * np.arange(STANDARD_N_BINS + 1)
    edges = stim_on[:, None] + offsets[None, :]  # (n, T+1)
    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])  # (n, T)
    return edges, centres


def _generate_trials(spec: SyntheticSessionSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Trial table (true and as recorded), wheel movements and session duration."""
    n = spec.n_trials
    p_left = _block_probabilities(rng, n, spec.first_block_trials)
    stim_left = rng.random(n) < p_left
    contrast = rng.choice(np.asarray(CONTRAST_LEVELS), size=n)
    contrast_left = np.where(stim_left, contrast, np.nan)
    contrast_right = np.where(stim_left, np.nan, contrast)
    signed_contrast = np.nan_to_num(contrast_right) - np.nan_to_num(contrast_left)  # + = right

    # Planted bad trials: a random set of rows, each assigned one kind (its first reason).
    kinds = np.full(n, "", dtype="<U16")
    bad_rows = rng.permutation(n)[: spec.n_bad_trials]
    position = 0
    for reason, count in spec.planted_counts.items():
        kinds[bad_rows[position : position + count]] = reason
        position += count

    # Choices: psychometric curve (left evidence + block bias), +1 = left, -1 = right.
    evidence = 6.0 * (-signed_contrast) + 1.2 * (p_left - 0.5) / 0.3
    p_choose_left = 0.05 + 0.9 / (1.0 + np.exp(-evidence))
    choice = np.where(rng.random(n) < p_choose_left, 1.0, -1.0)
    choice[kinds == "no_choice"] = 0.0
    correct = (stim_left & (choice == 1)) | (~stim_left & (choice == -1))

    quiescence = 0.2 + rng.uniform(0.2, 0.5, n)
    screen_delay = rng.uniform(0.01, 0.03, n)
    go_cue_delay = rng.uniform(0.0, 0.015, n)
    median_rt = 0.25 + 0.35 * (1.0 - contrast)
    reaction_time = np.clip(np.exp(rng.normal(np.log(median_rt), 0.45)), 0.09, 8.0)
    move_duration = rng.uniform(0.15, 0.5, n)

    rel = {name: np.empty(n) for name in ("stimOnTrigger", "stimOn", "goCue", "firstMovement")}
    rel_response = np.empty(n)
    trial_moves: list[tuple[float, float, float]] = []  # (start, duration, amplitude), rel.
    for i in range(n):
        stim_on_trigger = quiescence[i]
        stim_on = stim_on_trigger + screen_delay[i]
        go_cue = stim_on_trigger + go_cue_delay[i]
        amplitude = -choice[i] * rng.uniform(0.2, 0.35)  # CCW (+) turn for a right choice
        kind = kinds[i]
        if kind == "rt_negative":
            first_movement = stim_on - rng.uniform(0.05, 0.3)
            response = stim_on + rng.uniform(0.3, 0.8)
        elif kind == "rt_too_long":
            first_movement = stim_on + rng.uniform(10.5, 20.0)
            response = first_movement + move_duration[i]
        elif kind == "trial_too_long":
            first_movement = stim_on + reaction_time[i]
            response = go_cue + rng.uniform(10.5, 15.0)
        elif kind == "no_choice":
            first_movement = stim_on + rng.uniform(0.3, 2.0)
            response = go_cue + spec.no_choice_timeout_s
            amplitude = rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.05)  # below threshold
        else:
            first_movement = stim_on + reaction_time[i]
            response = first_movement + move_duration[i]
        move_length = response - first_movement if kind != "no_choice" else 0.4
        rel["stimOnTrigger"][i] = stim_on_trigger
        rel["stimOn"][i] = stim_on
        rel["goCue"][i] = go_cue
        rel["firstMovement"][i] = first_movement
        rel_response[i] = response
        trial_moves.append((first_movement, move_length, amplitude))

    feedback_delay = rng.uniform(0.0, 0.002, n)
    rel_feedback = rel_response + feedback_delay
    feedback_type = np.where(correct, 1.0, -1.0)
    reward_volume = np.where(correct, 1.5, 0.0)
    rel_end = rel_feedback + np.where(correct, 1.0, 2.0) + rng.uniform(0.0, 0.05, n)
    gaps = rng.uniform(0.3, 0.7, n)

    lead_in_s, tail_s = 5.0, 5.0
    natural = lead_in_s + float(np.sum(rel_end + gaps)) + tail_s
    if spec.duration_s is not None:
        if spec.duration_s < natural:
            raise ValueError(
                f"duration_s={spec.duration_s} is shorter than the {natural:.1f} s that "
                f"{n} trials need"
            )
        gaps = gaps + (spec.duration_s - natural) / n
        duration = float(spec.duration_s)
    else:
        duration = natural
    starts = lead_in_s + np.concatenate([[0.0], np.cumsum(rel_end + gaps)[:-1]])  # (n,)

    # Wheel: the trial's own turn plus a small re-centring movement after feedback (50 %).
    moves = []  # (start, duration, amplitude) in session time
    for i in range(n):
        start, length, amplitude = trial_moves[i]
        moves.append((starts[i] + start, length, amplitude))
        if rng.random() < 0.5:
            t0 = starts[i] + rel_feedback[i] + rng.uniform(0.2, 0.6)
            moves.append((t0, rng.uniform(0.2, 0.5), rng.normal(0.0, 0.04)))

    true_times = {
        "intervals_0": starts,
        "intervals_1": starts + rel_end,
        "stimOnTrigger_times": starts + rel["stimOnTrigger"],
        "stimOn_times": starts + rel["stimOn"],
        "goCue_times": starts + rel["goCue"],
        "goCueTrigger_times": starts + rel["goCue"] - 0.0005,
        "firstMovement_times": starts + rel["firstMovement"],
        "response_times": starts + rel_response,
        "feedback_times": starts + rel_feedback,
        "stimOff_times": starts + rel_feedback + np.where(correct, 1.0, 2.0),
    }
    table = pd.DataFrame(
        {
            "intervals_0": true_times["intervals_0"],
            "intervals_1": true_times["intervals_1"],
            "goCue_times": true_times["goCue_times"],
            "response_times": true_times["response_times"],
            "choice": choice.copy(),
            "stimOn_times": true_times["stimOn_times"],
            "contrastLeft": contrast_left,
            "contrastRight": contrast_right,
            "feedback_times": true_times["feedback_times"],
            "feedbackType": feedback_type,
            "rewardVolume": reward_volume,
            "probabilityLeft": p_left.copy(),
            "firstMovement_times": true_times["firstMovement_times"],
        },
        columns=list(TRIALS_TABLE_COLUMNS),
    )
    # NaN trials: one checked field each, cycling through the fields.
    nan_rows = np.flatnonzero(kinds == "nan_field")
    field_offset = int(rng.integers(len(NAN_CHECKED_FIELDS)))
    for k, row in enumerate(nan_rows):
        name = NAN_CHECKED_FIELDS[(field_offset + k) % len(NAN_CHECKED_FIELDS)]
        table.loc[row, name] = np.nan
    trials_extra = {
        "stimOnTrigger_times": true_times["stimOnTrigger_times"],
        "goCueTrigger_times": true_times["goCueTrigger_times"],
        "stimOff_times": true_times["stimOff_times"],
        "quiescencePeriod": quiescence,
    }
    return {
        "table": table,
        "extra": trials_extra,
        "kinds": kinds,
        "true_times": true_times,
        "choice": choice,
        "p_left": p_left,
        "signed_contrast": signed_contrast,
        "contrast": contrast,
        "moves": np.asarray(sorted(moves), dtype=np.float64).reshape(-1, 3),
        "duration": duration,
    }


def _probe_geometry(rng: np.random.Generator, probe_index: int) -> dict[str, np.ndarray]:
    """Channel Allen ids, local coordinates and mlapdv of a repeated-site-like insertion."""
    channels = np.arange(N_CHANNELS)
    allen_ids = np.zeros(N_CHANNELS, dtype=np.int64)
    for first, stop, acronym, _ in PROBE_LAYOUT:
        allen_ids[first:stop] = ALLEN_IDS[acronym]
    lateral = np.array([43.0, 11.0, 59.0, 27.0])[channels % 4]
    axial = 20.0 * (channels // 2) + 20.0
    local = np.stack([lateral, axial], axis=1)  # (384, 2)
    # Insertion near the repeated site (ML -2243, AP -2000 µm), 15 degrees from vertical; the
    # brain surface lies at the first "void" channel.
    theta = math.radians(15.0)
    surface_axial = axial[PROBE_LAYOUT[-1][0]]
    entry_ml = -2243.0 + 400.0 * probe_index + rng.normal(0.0, 20.0)
    entry_ap = -2000.0 - 300.0 * probe_index + rng.normal(0.0, 20.0)
    distance = surface_axial - axial  # µm below the surface along the shank
    mlapdv = np.stack(
        [
            entry_ml + distance * math.sin(theta) + (lateral - 35.0),
            np.full(N_CHANNELS, entry_ap),
            -distance * math.cos(theta),
        ],
        axis=1,
    )  # (384, 3)
    return {"allen_ids": allen_ids, "local": local, "mlapdv": mlapdv}


def _place_units(rng: np.random.Generator, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak channel and Beryl region of each unit, spread over the unit-bearing regions."""
    regions = list(REGION_TUNING)
    region_of_unit = np.array([regions[k % len(regions)] for k in range(n_units)])
    rng.shuffle(region_of_unit)
    channels = np.empty(n_units, dtype=np.int64)
    for region in regions:
        candidates = np.concatenate(
            [np.arange(a, b) for a, b, _, beryl in PROBE_LAYOUT if beryl == region]
        )
        mask = region_of_unit == region
        channels[mask] = rng.choice(candidates, size=int(mask.sum()))
    return channels, region_of_unit


def _cluster_metrics(
    rng: np.random.Generator,
    spike_counts: np.ndarray,
    amplitudes_v: np.ndarray,
    duration: float,
) -> pd.DataFrame:
    """An IBL ``clusters.metrics`` table (label = fraction of the 3 QC tests passed)."""
    n = len(spike_counts)
    failed = rng.random((n, 3)) < np.array([0.15, 0.2, 0.1])  # (n, 3): amp, RP, noise cutoff
    bitwise = (failed * np.array([1, 2, 4])).sum(axis=1).astype(np.uint8)
    label = (3 - failed.sum(axis=1)) / 3.0
    amp_db = 20.0 * np.log10(amplitudes_v / 1e-6)
    return pd.DataFrame(
        {
            "cluster_id": np.arange(n, dtype=np.int64),
            "amp_max": amplitudes_v * 1.6,
            "amp_min": amplitudes_v * 0.5,
            "amp_median": amplitudes_v,
            "amp_std_dB": rng.uniform(1.0, 4.0, n),
            "contamination": rng.uniform(0.0, 0.3, n),
            "contamination_alt": rng.uniform(0.0, 0.3, n),
            "drift": rng.uniform(0.0, 30.0, n),
            "missed_spikes_est": rng.uniform(0.0, 0.2, n),
            "noise_cutoff": np.where(failed[:, 2], rng.uniform(5, 20, n), rng.uniform(0, 4, n)),
            "presence_ratio": rng.uniform(0.7, 1.0, n),
            "presence_ratio_std": rng.uniform(0.0, 0.5, n),
            "slidingRP_viol": failed[:, 1].astype(np.float64),
            "spike_count": spike_counts.astype(np.float64),
            "firing_rate": spike_counts / duration,
            "label": label,
            "bitwise_fail": bitwise,
            "ks2_label": np.where(amp_db > 42.0, "good", "mua"),
        }
    )


def generate_session(spec: SyntheticSessionSpec) -> SyntheticSession:
    """Generate one synthetic session (arrays in memory plus ground truth) from its spec."""
    identity = synthetic_session_identity(spec.seed, spec.index)
    rng = np.random.default_rng([spec.seed, spec.index, 20240506])
    trials = _generate_trials(spec, rng)
    duration = trials["duration"]
    dt = SIMULATION_DT_S
    n_grid = math.ceil(duration / dt)
    grid_centres = (np.arange(n_grid) + 0.5) * dt  # (G,)
    true_times = trials["true_times"]
    moves = trials["moves"]

    # ---- wheel: fine trajectory, then the rotary encoder's irregular tick timestamps --------
    wheel_fine_t = np.arange(0.0, duration, 0.001)  # (W,)
    wheel_fine_pos, _ = wheel_kinematics(wheel_fine_t, moves)
    ticks = np.round(wheel_fine_pos / WHEEL_RESOLUTION_RAD).astype(np.int64)
    keep = np.concatenate([[0], np.flatnonzero(np.diff(ticks)) + 1, [len(ticks) - 1]])
    keep = np.unique(keep)
    wheel_timestamps = wheel_fine_t[keep] + rng.uniform(0.0, 0.0009, len(keep))
    wheel_position = ticks[keep] * WHEEL_RESOLUTION_RAD

    # ---- covariates on the simulation grid ---------------------------------------------------
    _, grid_velocity = wheel_kinematics(grid_centres, moves)
    grid_speed = np.abs(grid_velocity)  # (G,) rad/s
    whisking = np.maximum(_ou_noise(rng, (n_grid,), 0.5, dt) - 0.3, 0.0)
    me_signal = 1.0 + 0.8 * _smooth(grid_speed, 0.05, dt) + 1.2 * whisking  # (G,) a.u.

    def step_signal(starts: np.ndarray, stops: np.ndarray, values: np.ndarray) -> np.ndarray:
        steps = np.zeros(n_grid + 1)
        i0 = np.clip((starts / dt).astype(np.int64), 0, n_grid)
        i1 = np.clip((stops / dt).astype(np.int64), 0, n_grid)
        np.add.at(steps, i0, values)
        np.add.at(steps, i1, -values)
        return np.cumsum(steps)[:-1]

    choice = trials["choice"]
    choice_signal = _smooth(
        step_signal(
            true_times["firstMovement_times"] - 0.1, true_times["feedback_times"] + 0.5, choice
        ),
        0.1,
        dt,
    )
    next_start = np.append(true_times["intervals_0"][1:], duration)
    block_signal = step_signal(
        true_times["intervals_0"], next_start, (trials["p_left"] - 0.5) / 0.3
    )
    impulses = np.zeros((2, n_grid))
    onset_index = np.clip((true_times["stimOn_times"] / dt).astype(np.int64), 0, n_grid - 1)
    np.add.at(impulses[0], onset_index, trials["signed_contrast"])
    np.add.at(impulses[1], onset_index, 0.3 + trials["contrast"])
    kernel_t = np.arange(0.0, 0.8, dt)
    latency, tau = 0.04, 0.08
    shifted = np.maximum(kernel_t - latency, 0.0) / tau
    kernel = shifted * np.exp(1.0 - shifted)  # alpha function peaking at latency + tau
    stimulus = oaconvolve(impulses, kernel[None, :], axes=1)[:, :n_grid]  # (2, G)
    covariates = np.stack(
        [
            grid_speed / 2.0,
            (me_signal - me_signal.mean()) / me_signal.std(),
            choice_signal,
            block_signal,
            stimulus[0],
            stimulus[1],
        ]
    )  # (6, G)

    # ---- shared latent factors ---------------------------------------------------------------
    n_latents = spec.n_latents
    latent_mixing = rng.normal(0.0, 0.5, (n_latents, len(COVARIATE_NAMES)))
    latents = latent_mixing @ covariates + 0.6 * _ou_noise(rng, (n_latents, n_grid), 0.3, dt)

    # ---- cameras -----------------------------------------------------------------------------
    camera_times: dict[str, np.ndarray] = {}
    camera_me: dict[str, np.ndarray] = {}
    camera_info: dict[str, Any] = {}
    for camera in ("left", "right"):
        rate = CAMERA_RATES_HZ[camera]
        frames = np.arange(0.2, duration - 0.05, 1.0 / rate)
        frames = np.sort(frames + rng.normal(0.0, 0.0003, len(frames)))
        scale = 1500.0 if camera == "left" else 900.0
        values = scale * _at_times(me_signal, frames, dt) + rng.normal(0.0, 40.0, len(frames))
        n_extra = spec.n_extra_left_timestamps if camera == "left" else 0
        extra = frames[0] - (np.arange(n_extra, 0, -1) + 0.5) / rate
        if camera in spec.cameras:
            camera_times[camera] = np.concatenate([extra, frames])
            camera_me[camera] = np.maximum(values, 0.0).astype(np.float32)
        camera_info[camera] = {"n_frames": len(frames), "n_extra_timestamps": n_extra}

    # ---- probes ------------------------------------------------------------------------------
    stim_on_true = true_times["stimOn_times"]
    edges, centres = _trial_grid(stim_on_true)
    probes: list[SyntheticProbe] = []
    per_cluster: dict[str, list[np.ndarray]] = {
        key: []
        for key in (
            "probe",
            "id",
            "uuid",
            "channel",
            "depth",
            "allen_id",
            "allen",
            "beryl",
            "cosmos",
            "base",
            "mean",
            "weights",
            "loadings",
            "expected",
        )
    }
    acronym_of_id = {value: key for key, value in ALLEN_IDS.items()}
    region_loadings = {r: rng.normal(0.0, 0.4, n_latents) for r in REGION_TUNING}
    for probe_index, probe_name in enumerate(spec.probe_names()):
        geometry = _probe_geometry(rng, probe_index)
        n_units = spec.n_neurons_per_probe
        channels, beryl = _place_units(rng, n_units)
        n_low = round(spec.low_rate_fraction * n_units)
        base_rate = np.exp(rng.uniform(np.log(3.0), np.log(40.0), n_units))
        base_rate[rng.permutation(n_units)[:n_low]] = rng.uniform(0.2, 1.0, n_low)
        tuning = np.stack([REGION_TUNING[r] for r in beryl])  # (N, 6)
        signs = np.where(rng.random((n_units, len(COVARIATE_NAMES))) < 0.5, -1.0, 1.0)
        signs[:, [0, 1, 5]] = np.where(rng.random((n_units, 3)) < 0.85, 1.0, -1.0)
        weights = tuning * signs * rng.uniform(0.5, 1.5, (n_units, len(COVARIATE_NAMES)))
        loadings = np.stack([region_loadings[r] for r in beryl]) + rng.normal(
            0.0, 0.15, (n_units, n_latents)
        )  # (N, K)
        drive = weights @ covariates + loadings @ latents  # (N, G)
        drive -= drive.mean(axis=1, keepdims=True)
        rates = base_rate[:, None] * np.exp(np.clip(drive, -4.0, 3.0))  # (N, G) Hz
        del drive

        # Exact inhomogeneous Poisson spikes from the piecewise-constant rates.
        counts = rng.poisson(rates * dt)  # (N, G)
        unit_index, grid_index = np.nonzero(counts)
        repeats = counts[unit_index, grid_index]
        unit_of_spike = np.repeat(unit_index, repeats)
        spike_times = (np.repeat(grid_index, repeats) + rng.random(repeats.sum())) * dt
        order = np.argsort(spike_times, kind="stable")
        spike_times = spike_times[order]
        unit_of_spike = unit_of_spike[order]
        spikes_per_unit = np.bincount(unit_of_spike, minlength=n_units)

        # Expected counts on the standard grid: exact integral of the piecewise-constant rate.
        cumulative = np.concatenate(
            [np.zeros((n_units, 1)), np.cumsum(rates * dt, axis=1)], axis=1
        )  # (N, G+1)
        flat_edges = edges.ravel()
        cell = np.clip(np.floor(flat_edges / dt).astype(np.int64), 0, n_grid - 1)
        fraction = flat_edges / dt - cell
        integral_at_edges = cumulative[:, cell] + fraction * rates[:, cell] * dt  # (N, n*(T+1))
        integral_at_edges = integral_at_edges.reshape(n_units, *edges.shape)
        expected = np.diff(integral_at_edges, axis=2).transpose(1, 0, 2)  # (n, N, T)
        mean_rate = cumulative[:, -1] / (n_grid * dt)
        del rates, counts, cumulative

        cluster_depths = geometry["local"][channels, 1] + rng.normal(0.0, 8.0, n_units)
        amplitudes = np.exp(rng.uniform(np.log(4e-5), np.log(3e-4), n_units))  # V
        spike_amps = (
            amplitudes[unit_of_spike] * np.exp(rng.normal(0.0, 0.15, len(spike_times)))
        ).astype(np.float32)
        spike_depths = (
            cluster_depths[unit_of_spike] + rng.normal(0.0, 6.0, len(spike_times))
        ).astype(np.float32)
        uuids = [
            str(uuid.uuid5(uuid.UUID(identity["eid"]), f"{probe_name}/cluster/{k}"))
            for k in range(n_units)
        ]
        metrics = _cluster_metrics(rng, spikes_per_unit, amplitudes, n_grid * dt)
        probes.append(
            SyntheticProbe(
                name=probe_name,
                sorter=spec.sorter_of(probe_index),
                spike_times=spike_times.astype(np.float64),
                spike_clusters=unit_of_spike.astype(np.uint16),
                spike_amps=spike_amps,
                spike_depths=spike_depths,
                cluster_channels=channels,
                cluster_depths=cluster_depths,
                cluster_metrics=metrics,
                cluster_uuids=uuids,
                channel_allen_ids=geometry["allen_ids"],
                channel_mlapdv=geometry["mlapdv"],
                channel_local_coordinates=geometry["local"],
            )
        )
        allen_id = geometry["allen_ids"][channels]
        per_cluster["probe"].append(np.full(n_units, probe_name))
        per_cluster["id"].append(np.arange(n_units, dtype=np.int64))
        per_cluster["uuid"].append(np.array(uuids))
        per_cluster["channel"].append(channels)
        per_cluster["depth"].append(cluster_depths)
        per_cluster["allen_id"].append(allen_id)
        per_cluster["allen"].append(np.array([acronym_of_id[a] for a in allen_id]))
        per_cluster["beryl"].append(beryl)
        per_cluster["cosmos"].append(np.array([COSMOS_OF_BERYL[b] for b in beryl]))
        per_cluster["base"].append(base_rate)
        per_cluster["mean"].append(mean_rate)
        per_cluster["weights"].append(weights)
        per_cluster["loadings"].append(loadings)
        per_cluster["expected"].append(expected)

    # ---- ground truth ------------------------------------------------------------------------
    table = trials["table"]
    flags = exclusion_flags(table)
    first_reason = first_exclusion_reason(flags)
    planted = trials["kinds"]
    if not np.array_equal(first_reason, planted.astype(first_reason.dtype)):
        raise RuntimeError("planted bad trials do not match their intended exclusion reason")
    _, wheel_velocity_centres = wheel_kinematics(centres.ravel(), moves)
    ground_truth = {
        "eid": np.array(identity["eid"]),
        "fault": np.array(spec.fault or ""),
        "window_s": np.array(STANDARD_WINDOW_S, dtype=np.float64),
        "bin_size_s": np.array(STANDARD_BIN_SIZE_S),
        "stim_on_times": stim_on_true.astype(np.float64),
        "expected_counts": np.concatenate(per_cluster["expected"], axis=1),
        "latents": _at_times(latents, centres, dt).transpose(1, 0, 2),
        "covariates": _at_times(covariates, centres, dt).transpose(1, 0, 2),
        "covariate_names": np.array(COVARIATE_NAMES),
        "wheel_speed": np.abs(wheel_velocity_centres).reshape(centres.shape),
        "cluster_probe": np.concatenate(per_cluster["probe"]),
        "cluster_id": np.concatenate(per_cluster["id"]),
        "cluster_uuid": np.concatenate(per_cluster["uuid"]),
        "cluster_channel": np.concatenate(per_cluster["channel"]),
        "cluster_depth_um": np.concatenate(per_cluster["depth"]),
        "cluster_region_allen_id": np.concatenate(per_cluster["allen_id"]),
        "cluster_region_allen": np.concatenate(per_cluster["allen"]),
        "cluster_region_beryl": np.concatenate(per_cluster["beryl"]),
        "cluster_region_cosmos": np.concatenate(per_cluster["cosmos"]),
        "cluster_base_rate_hz": np.concatenate(per_cluster["base"]),
        "cluster_mean_rate_hz": np.concatenate(per_cluster["mean"]),
        "cluster_covariate_weights": np.concatenate(per_cluster["weights"]),
        "cluster_latent_loadings": np.concatenate(per_cluster["loadings"]),
        "trial_first_reason": first_reason,
        "exclusion_reasons": np.array(EXCLUSION_REASONS),
        "exclusion_first_reason_counts": np.array(
            [int((first_reason == r).sum()) for r in EXCLUSION_REASONS], dtype=np.int64
        ),
        "exclusion_reason_counts": np.array(
            [int(flags[r].sum()) for r in EXCLUSION_REASONS], dtype=np.int64
        ),
    }
    info = {
        "eid": identity["eid"],
        "session_rel_path": identity["rel_path"],
        "lab": identity["lab"],
        "subject": identity["subject"],
        "date": identity["date"],
        "number": identity["number"],
        "spec": dataclasses.asdict(spec),
        "fault": spec.fault,
        "fault_description": FAULTS.get(spec.fault or "", ""),
        "duration_s": n_grid * dt,
        "simulation_dt_s": dt,
        "n_trials": spec.n_trials,
        "probes": [],
        "cameras": camera_info,
        "exclusion_reasons": list(EXCLUSION_REASONS),
        "exclusion_thresholds_s": {
            "min_rt": DEFAULT_MIN_RT_S,
            "max_rt": DEFAULT_MAX_RT_S,
            "max_trial_duration": DEFAULT_MAX_TRIAL_DURATION_S,
        },
        "exclusion_first_reason_counts": {
            r: int(c)
            for r, c in zip(EXCLUSION_REASONS, ground_truth["exclusion_first_reason_counts"])
        },
        "exclusion_reason_counts": {
            r: int(c) for r, c in zip(EXCLUSION_REASONS, ground_truth["exclusion_reason_counts"])
        },
        "n_planted_bad_trials": int(spec.n_bad_trials),
    }
    session = SyntheticSession(
        spec=spec,
        eid=identity["eid"],
        lab=identity["lab"],
        subject=identity["subject"],
        date=identity["date"],
        number=identity["number"],
        trials=table,
        trials_extra=trials["extra"],
        wheel_timestamps=wheel_timestamps,
        wheel_position=wheel_position,
        camera_times=camera_times,
        camera_motion_energy=camera_me,
        probes=probes,
        ground_truth=ground_truth,
        info=info,
    )
    _apply_fault(session)
    info["probes"] = [
        {
            "name": probe.name,
            "collection": probe.collection(),
            "revision": spec.sorting_revision,
            "n_clusters": probe.n_clusters,
            "has_spike_sorting": probe.has_spike_sorting,
        }
        for probe in session.probes
    ]
    return session


def _apply_fault(session: SyntheticSession) -> None:
    """Plant ``session.spec.fault`` in the in-memory arrays (the ground truth is unchanged)."""
    fault = session.spec.fault
    if fault is None:
        return
    probe = session.probes[0]
    if fault == "no_motion_energy":
        session.camera_motion_energy = {}
    elif fault == "no_spike_sorting":
        for each in session.probes:
            each.has_spike_sorting = False
    elif fault == "empty_trials":
        session.trials = session.trials.iloc[0:0].reset_index(drop=True)
        session.trials_extra = {k: v[:0] for k, v in session.trials_extra.items()}
    elif fault == "mismatched_spike_lengths":
        probe.spike_clusters = probe.spike_clusters[:-7]
    elif fault == "clusters_out_of_range":
        clusters = probe.spike_clusters.copy()
        clusters[[0, len(clusters) // 2, len(clusters) - 1]] = probe.n_clusters + 2
        probe.spike_clusters = clusters
    elif fault == "corrupted_spike_times":
        pass  # applied when the file is written
    else:  # guarded by SyntheticSessionSpec
        raise ValueError(f"unknown fault {fault!r}")


# --------------------------------------------------------------------------------------------
# ALF writing
# --------------------------------------------------------------------------------------------


def _save_parquet(path: Path, table: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)


def write_spike_sorting(
    probe: SyntheticProbe,
    session_path: str | Path,
    *,
    sorter: str | None = None,
    revision: str | None = None,
    truncate_spike_times: bool = False,
) -> Path:
    """Write a probe's ``spikes.*`` / ``clusters.*`` into its ALF collection; returns the folder.

    The collection is ``alf/<probe>/<sorter>`` (``sorter`` defaults to ``probe.sorter``), inside
    ``#revision#`` when ``revision`` is given. Also used on its own to add a second sorting or
    revision of a probe to an existing session.
    """
    sorter = probe.sorter if sorter is None else sorter
    folder = Path(session_path) / "alf" / probe.name
    if sorter:
        folder = folder / sorter
    if revision:
        folder = folder / f"#{revision}#"
    folder.mkdir(parents=True, exist_ok=True)
    spike_times_path = folder / "spikes.times.npy"
    np.save(spike_times_path, probe.spike_times.astype(np.float64))
    if truncate_spike_times:
        size = spike_times_path.stat().st_size
        with open(spike_times_path, "r+b") as handle:
            handle.truncate(max(size - 8 * max(len(probe.spike_times) // 2, 1), 128))
    np.save(folder / "spikes.clusters.npy", probe.spike_clusters.astype(np.uint16))
    np.save(folder / "spikes.amps.npy", probe.spike_amps)
    np.save(folder / "spikes.depths.npy", probe.spike_depths)
    np.save(folder / "clusters.channels.npy", probe.cluster_channels.astype(np.int64))
    np.save(folder / "clusters.depths.npy", probe.cluster_depths.astype(np.float64))
    _save_parquet(folder / "clusters.metrics.pqt", probe.cluster_metrics)
    pd.DataFrame({"uuids": probe.cluster_uuids}).to_csv(folder / "clusters.uuids.csv", index=False)
    return folder


def write_channels(probe: SyntheticProbe, session_path: str | Path) -> Path:
    """Write a probe's histology channels (``alf/<probe>/channels.*``); returns the folder."""
    folder = Path(session_path) / "alf" / probe.name
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "channels.brainLocationIds_ccf_2017.npy", probe.channel_allen_ids)
    np.save(folder / "channels.mlapdv.npy", probe.channel_mlapdv)
    np.save(folder / "channels.localCoordinates.npy", probe.channel_local_coordinates)
    np.save(folder / "channels.rawInd.npy", np.arange(N_CHANNELS, dtype=np.int64))
    return folder


def write_ground_truth(session: SyntheticSession, root: str | Path) -> Path:
    """Write ``<root>/ground_truth/<eid>.npz`` and ``.json``; returns the ``.npz`` path."""
    folder = Path(root) / GROUND_TRUTH_DIRNAME
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{session.eid}.npz"
    np.savez(path, **session.ground_truth)
    with open(folder / f"{session.eid}.json", "w") as handle:
        json.dump(session.info, handle, indent=2, sort_keys=True)
    return path


def write_alf_session(session: SyntheticSession, root: str | Path) -> Path:
    """Write a session in the ALF layout under ``root`` plus its ground truth; returns its path.

    An existing folder at the session's path is replaced. The ONE cache tables are not
    touched: call :func:`write_one_cache` once all sessions are written.
    """
    root = Path(root)
    session_path = root / session.session_rel_path
    if session_path.exists():
        shutil.rmtree(session_path)
    alf = session_path / "alf"
    alf.mkdir(parents=True)
    fault = session.spec.fault

    for probe_index, probe in enumerate(session.probes):
        write_channels(probe, session_path)
        if probe.has_spike_sorting:
            write_spike_sorting(
                probe,
                session_path,
                revision=session.spec.sorting_revision,
                truncate_spike_times=fault == "corrupted_spike_times" and probe_index == 0,
            )

    _save_parquet(alf / "_ibl_trials.table.pqt", session.trials)
    for name, values in session.trials_extra.items():
        np.save(alf / f"_ibl_trials.{name}.npy", values)
    np.save(alf / "_ibl_wheel.timestamps.npy", session.wheel_timestamps)
    np.save(alf / "_ibl_wheel.position.npy", session.wheel_position)
    for camera, times in session.camera_times.items():
        np.save(alf / f"_ibl_{camera}Camera.times.npy", times)
        if camera in session.camera_motion_energy:
            np.save(
                alf / f"{camera}Camera.ROIMotionEnergy.npy", session.camera_motion_energy[camera]
            )
    write_ground_truth(session, root)
    return session_path


def load_ground_truth(root: str | Path, eid: str) -> dict[str, Any]:
    """Read a session's ground truth: the :data:`GROUND_TRUTH_ARRAYS` plus ``"info"`` (JSON)."""
    folder = Path(root) / GROUND_TRUTH_DIRNAME
    path = folder / f"{eid}.npz"
    if not path.exists():
        raise FileNotFoundError(f"no ground truth for session {eid}: {path} does not exist")
    with np.load(path) as archive:
        arrays: dict[str, Any] = {key: archive[key] for key in archive.files}
    with open(folder / f"{eid}.json") as handle:
        arrays["info"] = json.load(handle)
    return arrays


# --------------------------------------------------------------------------------------------
# ONE cache
# --------------------------------------------------------------------------------------------


def _session_folders(root: Path) -> list[Path]:
    from one.alf.path import session_path_parts

    folders = []
    for candidate in sorted(root.glob("*/Subjects/*/*/*")):
        if not candidate.is_dir():
            continue
        try:
            session_path_parts(candidate.relative_to(root).as_posix(), assert_valid=True)
        except ValueError:
            continue
        folders.append(candidate)
    return folders


def write_one_cache(root: str | Path) -> pd.DataFrame:
    """Index every ALF session under ``root`` into ONE cache tables; returns the sessions table.

    Writes ``sessions.pqt`` and ``datasets.pqt`` at ``root`` the way ONE's own tables are
    written (``iblutil.io.parquet.save`` with ``date_created`` metadata, ``qc`` as the ordered
    ``QC_TYPE`` categorical, ``hash=None`` so no md5 check runs, sorted index). Each dataset is
    ``default_revision`` when it is the newest revision of its collection and name, so loads
    without a revision pick the newest without warnings. Session ids are
    :func:`session_eid` of the relative session path.
    """
    from iblutil.io import parquet
    from one.alf.cache import QC_TYPE
    from one.alf.path import ALFPath, rel_path_parts

    root = Path(root)
    session_rows = []
    dataset_rows = []
    for folder in _session_folders(root):
        rel = folder.relative_to(root).as_posix()
        lab, _, subject, date, number = rel.split("/")
        eid = session_eid(rel)
        session_rows.append(
            {
                "id": eid,
                "lab": lab,
                "subject": subject,
                "date": pd.Timestamp(date).date(),
                "number": int(number),
                "task_protocol": TASK_PROTOCOL,
                "projects": SESSIONS_PROJECT,
            }
        )
        session_path = ALFPath(folder)
        rows = []
        for dataset in sorted(session_path.iter_datasets(recursive=True)):
            rel_path = dataset.relative_to_session().as_posix()
            collection, revision, *_ = rel_path_parts(rel_path, assert_valid=False)
            rows.append(
                {
                    "eid": eid,
                    "id": str(uuid.uuid5(uuid.UUID(eid), rel_path)),
                    "rel_path": rel_path,
                    "file_size": dataset.stat().st_size,
                    "hash": None,
                    "exists": True,
                    "qc": "NOT_SET",
                    "_key": f"{collection or ''}/{dataset.name}",
                    "_revision": revision or "",
                }
            )
        newest = {}
        for row in rows:
            newest[row["_key"]] = max(newest.get(row["_key"], ""), row["_revision"])
        for row in rows:
            row["default_revision"] = row["_revision"] == newest[row["_key"]]
            del row["_key"], row["_revision"]
        dataset_rows.extend(rows)

    sessions = pd.DataFrame(
        session_rows,
        columns=["id", "lab", "subject", "date", "number", "task_protocol", "projects"],
    ).set_index("id")
    sessions = sessions.sort_index()
    dataset_columns = [
        "eid",
        "id",
        "rel_path",
        "file_size",
        "hash",
        "exists",
        "qc",
        "default_revision",
    ]
    datasets = pd.DataFrame(dataset_rows, columns=dataset_columns)
    datasets = datasets.astype({"qc": QC_TYPE, "file_size": "UInt64", "exists": bool})
    datasets["default_revision"] = datasets["default_revision"].astype(bool)
    datasets = datasets.set_index(["eid", "id"]).sort_index()
    metadata = {
        "date_created": pd.Timestamp.now().isoformat(sep=" ", timespec="minutes"),
        "origin": "local",
    }
    parquet.save(root / "sessions.pqt", sessions, metadata)
    parquet.save(root / "datasets.pqt", datasets, metadata)
    return sessions


# --------------------------------------------------------------------------------------------
# Corpus and command line
# --------------------------------------------------------------------------------------------


def make_synthetic_cache(
    output_dir: str | Path,
    n_sessions: int = 6,
    seed: int = 0,
    *,
    faults: Mapping[int, str] | None = None,
    **spec_overrides: Any,
) -> list[str]:
    """Write ``n_sessions`` synthetic sessions, their ground truth and the ONE cache tables.

    Session ``i`` is ``SyntheticSessionSpec(seed=seed, index=i, **spec_overrides)``, with the
    fault ``faults[i]`` when given. Returns the session ids in index order. Other sessions
    already under ``output_dir`` stay and are indexed too.
    """
    if n_sessions < 1:
        raise ValueError(f"n_sessions must be >= 1, got {n_sessions}")
    faults = dict(faults or {})
    out_of_range = [i for i in faults if not 0 <= i < n_sessions]
    if out_of_range:
        raise ValueError(f"fault indices {out_of_range} outside 0..{n_sessions - 1}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    eids = []
    for index in range(n_sessions):
        overrides = dict(spec_overrides)
        if index in faults:
            overrides["fault"] = faults[index]
        spec = SyntheticSessionSpec(seed=seed, index=index, **overrides)
        session = generate_session(spec)
        write_alf_session(session, output_dir)
        eids.append(session.eid)
    write_one_cache(output_dir)
    return eids


def _parse_fault(text: str) -> tuple[int, str]:
    index, separator, name = text.partition("=")
    if not separator or not index.strip().isdigit() or name not in FAULTS:
        raise argparse.ArgumentTypeError(
            f"--fault expects INDEX=NAME with NAME one of {sorted(FAULTS)}, got {text!r}"
        )
    return int(index), name


def add_make_synthetic_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``neds-hf make-synthetic`` options to ``parser``."""
    parser.add_argument("--output", required=True, type=Path, help="cache directory to write")
    parser.add_argument("--sessions", type=int, default=6, help="number of sessions (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--trials", type=int, default=None, help="trials per session")
    parser.add_argument("--neurons-per-probe", type=int, default=None, help="units per probe")
    parser.add_argument("--probes", type=int, default=None, help="probes per session")
    parser.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        metavar="INDEX=NAME",
        help=f"plant a fault in session INDEX; NAME in {sorted(FAULTS)}",
    )
    return parser


def run_make_synthetic(args: argparse.Namespace) -> int:
    """Run ``neds-hf make-synthetic`` with parsed ``args``; prints the session ids."""
    overrides: dict[str, Any] = {}
    if args.trials is not None:
        overrides["n_trials"] = args.trials
    if args.neurons_per_probe is not None:
        overrides["n_neurons_per_probe"] = args.neurons_per_probe
    if args.probes is not None:
        overrides["n_probes"] = args.probes
    eids = make_synthetic_cache(
        args.output, args.sessions, args.seed, faults=dict(args.fault), **overrides
    )
    eids_file = Path(args.output) / "eids.txt"
    eids_file.write_text("".join(f"{eid}\n" for eid in eids))
    print(f"wrote {len(eids)} synthetic sessions and the ONE cache to {args.output}")
    print(f"session ids (also in {eids_file}, for prepare-data --eids-file):")
    for eid in eids:
        print(eid)
    return 0


def make_synthetic_main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point of ``make-synthetic`` (parses ``argv``)."""
    parser = argparse.ArgumentParser(
        prog="neds-hf make-synthetic", description="Write a synthetic IBL-like ONE cache."
    )
    add_make_synthetic_arguments(parser)
    return run_make_synthetic(parser.parse_args(argv))
