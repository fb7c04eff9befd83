"""What each BrainWideBench task scores on a NEDS dataset: one rule per task, shared by the
ground-truth writer and the prediction export so both always select the same entries.

BrainWideBench (the ``ibl-bwb-eval`` package) defines three suites; this module maps them onto
the trial windows of a dataset built by ``neds-hf prepare-data``:

* **TS1** (behaviour decoding): one BrainWideBench task per dataset modality of the same name
  (:data:`TS1_MODALITIES`, the single table mapping tasks to modalities). Sequence-level tasks
  score one class per trial; timestep-level tasks score ``BEHAVIOR_SFREQ * TARGET_WINDOW`` = 50
  samples (1 s at 50 Hz) per trial: the second after the window's alignment event (stimulus
  onset). BrainWideBench aligns its movement window to movement onset, which the dataset rows do
  not carry, so this window is where the two differ. Invalid entries (``-1`` classes, ``NaN``
  values, the dataset convention) are handled consistently: a trial without a valid class, or
  with a ``NaN`` in the scored second of a task the package scores without a mask, is skipped;
  a task the package scores with a mask (the paw speeds) keeps the trial and masks its invalid
  samples, skipping only a trial with none left. Every skip is counted.
* **TS2** (spike prediction): ``co_smoothing`` hides a fixed 10 % of the units (the first by
  sha256 rank of their unit id, at least one) in the whole window and scores them in the
  trailing second (``COSMOOTH_TARGET_WINDOW``); ``forecasting`` hides and scores the last
  ``FORECAST_RATIO * FORECAST_BASE_WINDOW`` seconds (5 bins of 20 ms) of every unit. MtM's
  co-smoothing (``neds-hf evaluate --protocols co_smoothing``) leaves ONE neuron out at a time
  and scores every bin, and its forward prediction forecasts the last 10 bins: both differ, so
  these tasks reuse MtM's held-out-set masks (:class:`neds_hf.masking.HeldOutSet`) with
  BrainWideBench's sets. Windows are keyed by their start time on the session clock as float32
  (:func:`window_timestamps`), which the scorer matches bit-exactly.
* **TS3** (``unit_cosmos``): every unit whose Cosmos region is one of the package's
  ``COSMOS_LABELS``; other units (``void``, ``root``, empty) are skipped and counted.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BWB_PACKAGE",
    "FORECAST_RATIO",
    "HELDOUT_UNIT_FRACTION",
    "TS1_MODALITIES",
    "TS1_TRANSFORMS",
    "RecordingWindows",
    "TS1Targets",
    "TS2Targets",
    "TS3Targets",
    "cosmoothing_units",
    "require_bwb",
    "ts1_targets",
    "ts1_tasks_for",
    "ts2_targets",
    "ts3_targets",
    "unit_id",
    "window_timestamps",
]

#: How to install the benchmark's package (its exact pins would downgrade numpy and torch).
BWB_PACKAGE = (
    "ibl-bwb-eval 0.1.0 is needed: pip install --no-deps ibl-bwb-eval==0.1.0 "
    "(it uses torchmetrics, safetensors, rich, scikit-learn and scipy)"
)

#: BrainWideBench TS1 task -> the dataset / model modality it decodes (the one mapping table).
TS1_MODALITIES: dict[str, str] = {
    "choice": "choice",
    "reward": "reward",
    "stimulus_contrast": "stimulus_contrast",
    "whisker_motion_energy": "whisker_motion_energy",
    "wheel_speed": "wheel_speed",
    "right_paw_speed": "right_paw_speed",
    "left_paw_speed": "left_paw_speed",
    "licking_rate": "licking_rate",
}
#: How a model's prediction of each timestep-level task becomes what the scorer reads:
#: ``"value"`` (physical units) or ``"log_rate"`` (the log of a non-negative rate; the scorer's
#: Poisson D² reads log-rates). Sequence-level tasks always write the model's class logits.
TS1_TRANSFORMS: dict[str, str] = {"licking_rate": "log_rate"}

#: Fraction of the units co-smoothing holds out (at least one unit).
HELDOUT_UNIT_FRACTION = 0.1
#: Forecasting scores this fraction of ``FORECAST_BASE_WINDOW`` (the package documents the
#: ratio on its training suite, not as a constant of the evaluation package).
FORECAST_RATIO = 0.1


def require_bwb() -> Any:
    """Import ``ibl_bwb_eval`` or raise an ImportError saying how to install it."""
    try:
        import ibl_bwb_eval
    except ImportError as error:
        raise ImportError(BWB_PACKAGE) from error
    return ibl_bwb_eval


@dataclass
class RecordingWindows:
    """The trial windows of ONE recording (session) and split, with the window geometry.

    `trials` are dataset items (:class:`neds_hf.data.training_data.NedsTrialDataset`) that
    carry ``stim_on_time``; `window` is the preprocessing window around stimulus onset (s) and
    `bin_size` its bin width (s); `units` are the session's neurons-table rows in neuron order.
    """

    recording_id: str
    trials: list[dict[str, Any]]
    window: tuple[float, float]
    bin_size: float
    units: list[dict[str, Any]] = field(default_factory=list)

    @property
    def num_bins(self) -> int:
        """Bins of one window."""
        return round((self.window[1] - self.window[0]) / self.bin_size)

    def bins_of(self, seconds: float) -> int:
        """Whole bins in `seconds` (an error when it is not a whole number of bins)."""
        count = seconds / self.bin_size
        if abs(count - round(count)) > 1e-6:
            raise ValueError(
                f"recording {self.recording_id}: {seconds} s is not a whole number of "
                f"{self.bin_size} s bins"
            )
        return round(count)


def unit_id(unit: Mapping[str, Any]) -> str:
    """The id a unit is filed under: its cluster uuid, else ``<session>/<probe>/<cluster>``."""
    uuid = str(unit.get("cluster_uuid") or "")
    if uuid:
        return uuid
    return f"{unit['session_id']}/{unit['probe']}/{int(unit['cluster_id'])}"


def window_timestamps(recording: RecordingWindows, rows: Sequence[int]) -> np.ndarray:
    """``(len(rows),)`` float32 start times of the windows `rows` on the session clock.

    The one rule both the ground truth and the predictions use, so the scorer's bit-exact
    match (``np.intersect1d``) pairs them; duplicate float32 times are an error, since the
    match would silently drop one of the two windows.
    """
    starts = np.array(
        [float(recording.trials[row]["stim_on_time"]) + recording.window[0] for row in rows],
        dtype=np.float64,
    )
    if not np.isfinite(starts).all():
        bad = [recording.trials[r]["trial_id"] for r, s in zip(rows, starts) if not np.isfinite(s)]
        raise ValueError(
            f"recording {recording.recording_id}: trials {bad} have no finite stim_on_time; "
            "their windows have no timestamp"
        )
    stamps = starts.astype(np.float32)
    values, counts = np.unique(stamps, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"recording {recording.recording_id}: windows share the float32 start time(s) "
            f"{values[counts > 1].tolist()}; the scorer could not tell them apart"
        )
    return stamps


# =============================================================================================
# TS1
# =============================================================================================


@dataclass
class TS1Targets:
    """The scored trials of one TS1 task in one recording.

    `rows` index the recording's trials; `values` are ``(N, 1)`` int64 classes or
    ``(N, 50, 1)`` float32 values; `mask` ``(N, 50)`` marks valid samples (masked tasks only).
    """

    task: str
    rows: np.ndarray  # (N,)
    trial_ids: np.ndarray  # (N,) int64
    values: np.ndarray
    mask: np.ndarray | None
    skipped_trials: int
    masked_samples: int = 0


def ts1_tasks_for(modality_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(tasks, skipped)``: the TS1 tasks whose modality is in `modality_names`, the others."""
    bwb = require_bwb()
    tasks = [t for t in bwb.SUITE_TASKS["ts1"] if TS1_MODALITIES[t] in modality_names]
    skipped = [t for t in bwb.SUITE_TASKS["ts1"] if t not in tasks]
    return tasks, skipped


def ts1_scored_bins(recording: RecordingWindows) -> slice:
    """The bins of the scored second: from the alignment event, ``BEHAVIOR_SFREQ`` Hz."""
    from ibl_bwb_eval.tasks import BEHAVIOR_SFREQ, TARGET_WINDOW

    if abs(recording.bin_size * BEHAVIOR_SFREQ - 1.0) > 1e-9:
        raise ValueError(
            f"recording {recording.recording_id}: TS1 samples behaviour at {BEHAVIOR_SFREQ} Hz, "
            f"the dataset bins are {recording.bin_size} s"
        )
    if recording.window[0] > 0 or recording.window[1] < TARGET_WINDOW:
        raise ValueError(
            f"recording {recording.recording_id}: TS1 scores the {TARGET_WINDOW} s after "
            f"stimulus onset; the dataset window {recording.window} does not cover it"
        )
    start = recording.bins_of(-recording.window[0])
    return slice(start, start + recording.bins_of(TARGET_WINDOW))


def ts1_targets(task: str, recording: RecordingWindows) -> TS1Targets:
    """The scored trials and ground truth of TS1 `task` (see the module docstring)."""
    from ibl_bwb_eval.tasks import TargetResolution, get_ts1_readout_spec

    spec = get_ts1_readout_spec(task)
    name = TS1_MODALITIES[task]
    if spec.target_resolution == TargetResolution.SEQUENCE:
        labels = np.array([int(np.asarray(t[name]).reshape(-1)[0]) for t in recording.trials])
        rows = np.flatnonzero(labels >= 0)
        return TS1Targets(
            task,
            rows,
            _trial_ids(recording, rows),
            labels[rows].astype(np.int64)[:, None],
            None,
            skipped_trials=len(labels) - len(rows),
        )
    scored = ts1_scored_bins(recording)
    values = np.stack([np.asarray(t[name], dtype=np.float32)[scored] for t in recording.trials])
    valid = np.isfinite(values)  # (R, 50)
    keep = valid.any(1) if spec.mask_key is not None else valid.all(1)
    rows = np.flatnonzero(keep)
    mask = valid[rows] if spec.mask_key is not None else None
    return TS1Targets(
        task,
        rows,
        _trial_ids(recording, rows),
        np.where(valid[rows], values[rows], 0.0).astype(np.float32)[..., None],
        mask,
        skipped_trials=len(values) - len(rows),
        masked_samples=int((~mask).sum()) if mask is not None else 0,
    )


def _trial_ids(recording: RecordingWindows, rows: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 trial ids of `rows` (an error when two trials share an id)."""
    ids = np.array([int(recording.trials[r]["trial_id"]) for r in rows], dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(
            f"recording {recording.recording_id}: duplicate trial ids; the scorer aligns "
            "trials by id"
        )
    return ids


# =============================================================================================
# TS2
# =============================================================================================


@dataclass
class TS2Targets:
    """The scored block of one TS2 task in one recording: every window, `bins` x `units`.

    `targets` are ``(B, len(bins), len(units))`` float32 spike counts; `timestamps` ``(B,)``
    float32 window start times; `unit_ids` the ids of `units`.
    """

    task: str
    rows: np.ndarray  # (B,)
    timestamps: np.ndarray  # (B,) float32
    bins: np.ndarray  # scored bins
    units: np.ndarray  # scored neuron indices
    unit_ids: list[str]
    targets: np.ndarray  # (B, T', N')
    context_window: float = 0.0


def cosmoothing_units(recording: RecordingWindows) -> np.ndarray:
    """Neuron indices co-smoothing holds out: the first 10 % by sha256 rank of the unit id."""
    if not recording.units:
        raise ValueError(f"recording {recording.recording_id}: no units in the neurons table")
    digests = [hashlib.sha256(unit_id(u).encode()).hexdigest() for u in recording.units]
    count = max(1, math.ceil(HELDOUT_UNIT_FRACTION * len(digests) - 1e-9))
    return np.sort(np.argsort(digests, kind="stable")[:count])


def ts2_targets(task: str, recording: RecordingWindows) -> TS2Targets:
    """The scored windows, bins, units and spike counts of TS2 `task`."""
    from ibl_bwb_eval.tasks.ts2 import COSMOOTH_TARGET_WINDOW, FORECAST_BASE_WINDOW

    num_bins = recording.num_bins
    if task == "co_smoothing":
        units = cosmoothing_units(recording)
        width = recording.bins_of(COSMOOTH_TARGET_WINDOW)
    elif task == "forecasting":
        units = np.arange(len(recording.units))
        width = recording.bins_of(FORECAST_RATIO * FORECAST_BASE_WINDOW)
    else:
        raise ValueError(f"unknown TS2 task {task!r}; expected co_smoothing or forecasting")
    if width >= num_bins:
        raise ValueError(
            f"recording {recording.recording_id}: {task} scores the last {width} bins and "
            f"needs a longer window than {num_bins} bins"
        )
    rows = np.arange(len(recording.trials))
    bins = np.arange(num_bins - width, num_bins)
    spikes = np.stack([np.asarray(t["spikes"]) for t in recording.trials])  # (B, N, T)
    block = spikes[:, units][:, :, bins].transpose(0, 2, 1)  # (B, T', N')
    targets = np.ascontiguousarray(block, dtype=np.float32)
    return TS2Targets(
        task,
        rows,
        window_timestamps(recording, rows),
        bins,
        units,
        [unit_id(recording.units[u]) for u in units],
        targets,
        context_window=num_bins * recording.bin_size,
    )


# =============================================================================================
# TS3
# =============================================================================================


@dataclass
class TS3Targets:
    """The scored units of ``unit_cosmos`` pooled over recordings.

    `units` are ``(recording_id, neuron index)`` pairs; `targets` ``(n,)`` int64 indices into
    ``COSMOS_LABELS``; `skipped_units` counts units without a Cosmos label.
    """

    unit_ids: list[str]
    units: list[tuple[str, int]]
    targets: np.ndarray  # (n,)
    skipped_units: int


def ts3_targets(recordings: Sequence[RecordingWindows]) -> TS3Targets:
    """The units of `recordings` with a Cosmos label, and their class indices."""
    from ibl_bwb_eval.tasks import COSMOS_LABELS

    ids, units, targets, skipped = [], [], [], 0
    for recording in recordings:
        for index, unit in enumerate(recording.units):
            region = str(unit.get("region_cosmos") or "")
            if region not in COSMOS_LABELS:
                skipped += 1
                continue
            ids.append(unit_id(unit))
            units.append((recording.recording_id, index))
            targets.append(COSMOS_LABELS.index(region))
    if len(set(ids)) != len(ids):
        raise ValueError("unit_cosmos: two units share a unit id")
    return TS3Targets(ids, units, np.asarray(targets, dtype=np.int64), skipped)
