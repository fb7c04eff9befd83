"""NEDS link: segmented actions become a per-bin categorical NEDS modality.

Recipe (configuration only, no new NEDS model code):

1. pose features of an IBL session: :func:`load_ibl_pose_session` reads
   ``alf/_ibl_leftCamera.lightningPose.pqt`` (or ``.dlc.pqt``) and the camera times, and adds
   the wheel velocity at the camera times (from ``_ibl_wheel.position/timestamps``); with ONE
   pass ``one.eid2path(eid)`` after loading those datasets;
2. a trained segmentation model labels every frame (:func:`~.inference.predict_session`);
3. :func:`add_action_modality` bins the per-frame labels to the NEDS trial grid (20 ms bins from
   ``stim_on_time + window_start``; each bin takes the label of the frame nearest its centre)
   and adds them to the NEDS trials as a ``[T]`` integer column;
4. NEDS gets ``action_modality_spec(...)`` appended to its ``modalities``
   (``{"kind": "categorical", "trial_level": False}``); the collator and model handle it like
   any per-bin behaviour, so NEDS decodes actions from spikes.

Action indices in NEDS are the segmentation class index minus 1 (background is never
predicted, so NEDS sees ``len(class_names) - 1`` classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .readers import SegmentationDataError, Session, interpolate_missing
from .synthetic import render_markers, sample_bouts

#: Markers of IBL's pose files used as features (x and y of each).
IBL_POSE_MARKERS = ("paw_l", "paw_r", "nose_tip")
#: NEDS's bin size (s) and the start of its trial window relative to stimulus onset (s).
NEDS_BIN_SIZE = 0.02
NEDS_WINDOW_START = -0.5


def write_synthetic_ibl_pose(
    session_path: str | Path, camera: str = "left", seed: int = 0
) -> tuple[Path, np.ndarray]:
    """Write ``alf/_ibl_<camera>Camera.lightningPose.pqt`` for an existing (synthetic) session.

    One row per camera timestamp; markers ``paw_l``, ``paw_r``, ``nose_tip`` (and ``tube_top``)
    with ``_x``, ``_y``, ``_likelihood`` columns, moving with known actions (the synthetic
    segmentation corpus's kinematics). Returns the file and the true action per frame (1-based
    class indices of ``SYNTHETIC_ACTIONS``).
    """
    alf = Path(session_path) / "alf"
    times_path = alf / f"_ibl_{camera}Camera.times.npy"
    if not times_path.is_file():
        raise FileNotFoundError(f"{times_path}: the session has no {camera} camera times")
    num_frames = len(np.load(times_path))
    rng = np.random.default_rng(seed)
    labels = sample_bouts(num_frames, rng)
    positions, likelihood = render_markers(labels, rng)  # (T, 4, 2), (T, 4)
    columns: dict[str, np.ndarray] = {}
    for m, marker in enumerate(("paw_l", "paw_r", "nose_tip", "tube_top")):
        columns[f"{marker}_x"] = positions[:, m, 0]
        columns[f"{marker}_y"] = positions[:, m, 1]
        columns[f"{marker}_likelihood"] = likelihood[:, m]
    path = alf / f"_ibl_{camera}Camera.lightningPose.pqt"
    pd.DataFrame(columns).to_parquet(path)
    return path, labels


def load_ibl_pose_session(
    session_path: str | Path,
    camera: str = "left",
    likelihood_threshold: float | None = 0.9,
    markers: Sequence[str] = IBL_POSE_MARKERS,
    wheel: bool = True,
) -> tuple[Session, np.ndarray]:
    """Pose (and wheel velocity) features of an IBL session, and the camera time of each frame.

    When the times file has more entries than the pose file has frames, the extra leading
    timestamps are dropped (the IBL convention) and counted in the report.
    """
    session_path = Path(session_path)
    alf = session_path / "alf"
    candidates = [alf / f"_ibl_{camera}Camera.{kind}.pqt" for kind in ("lightningPose", "dlc")]
    pose_path = next((p for p in candidates if p.is_file()), None)
    if pose_path is None:
        raise FileNotFoundError(f"{alf}: neither {candidates[0].name} nor {candidates[1].name}")
    table = pd.read_parquet(pose_path)
    missing = [f"{m}_{c}" for m in markers for c in "xy" if f"{m}_{c}" not in table.columns]
    if missing:
        raise SegmentationDataError(f"{pose_path}: columns {missing} are missing")
    names = [f"{m}_{c}" for m in markers for c in "xy"]
    values = table[names].to_numpy(dtype=np.float64, copy=True)  # (T, 2M)
    low = 0
    if likelihood_threshold is not None:
        for i, marker in enumerate(markers):
            if f"{marker}_likelihood" in table.columns:
                bad = table[f"{marker}_likelihood"].to_numpy() < likelihood_threshold
                low += int(bad.sum())
                values[bad, 2 * i : 2 * i + 2] = np.nan
    filled = interpolate_missing(values, pose_path, names)
    times = np.load(alf / f"_ibl_{camera}Camera.times.npy")
    if len(times) < len(values):
        raise SegmentationDataError(
            f"{pose_path}: {len(values)} frames but only {len(times)} camera timestamps"
        )
    report = {
        "interpolated_values": filled,
        "low_likelihood_frames": low,
        "dropped_leading_timestamps": len(times) - len(values),
    }
    times = times[len(times) - len(values) :]
    if wheel:
        position = np.load(alf / "_ibl_wheel.position.npy")
        stamps = np.load(alf / "_ibl_wheel.timestamps.npy")
        velocity = np.gradient(position, stamps)
        values = np.concatenate([values, np.interp(times, stamps, velocity)[:, None]], axis=1)
        names.append("wheel_velocity")
    return Session(session_path.name, values, names, report=report), times


def write_feature_folder(sessions: Sequence[Session], data_dir: str | Path) -> list[Path]:
    """Write sessions as ``data_dir/features/<session>.csv`` (the folder layout of
    :mod:`readers`), e.g. IBL pose + wheel features for ``neds-hf segment predict
    --input-dir features``. Existing files of other sessions are kept."""
    folder = Path(data_dir) / "features"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for session in sessions:
        table = pd.DataFrame(session.features, columns=session.feature_names)
        table.index.name = "frame"
        path = folder / f"{session.session_id}.csv"
        table.to_csv(path)
        paths.append(path)
    return paths


def bin_frame_labels(
    frame_times: np.ndarray,
    frame_labels: np.ndarray,
    trial_starts: np.ndarray,
    num_bins: int,
    bin_size: float = NEDS_BIN_SIZE,
) -> np.ndarray:
    """Per-bin labels `(n_trials, num_bins)`: the label of the frame nearest each bin centre.

    Raises when a bin centre lies outside the camera's recording (no label can be given).
    """
    centres = np.asarray(trial_starts)[:, None] + (np.arange(num_bins) + 0.5) * bin_size
    outside = (centres < frame_times[0] - bin_size) | (centres > frame_times[-1] + bin_size)
    if outside.any():
        trial = int(np.flatnonzero(outside.any(axis=1))[0])
        raise ValueError(
            f"trial {trial}: bins outside the camera recording "
            f"[{frame_times[0]:.2f}, {frame_times[-1]:.2f}] s"
        )
    right = np.clip(np.searchsorted(frame_times, centres), 1, len(frame_times) - 1)
    nearer_left = (centres - frame_times[right - 1]) < (frame_times[right] - centres)
    return np.asarray(frame_labels)[np.where(nearer_left, right - 1, right)]


def action_modality_spec(class_names: Sequence[str], name: str = "action") -> dict[str, Any]:
    """The NEDS modality entry for per-bin actions (background excluded)."""
    return {
        "name": name,
        "kind": "categorical",
        "num_classes": len(class_names) - 1,
        "trial_level": False,
    }


def add_action_modality(
    trials: Any,
    frames: Mapping[str, tuple[np.ndarray, np.ndarray]],
    name: str = "action",
    window_start: float = NEDS_WINDOW_START,
    bin_size: float = NEDS_BIN_SIZE,
) -> Any:
    """Add a ``[T]`` action column to NEDS trials (a `datasets.Dataset` with ``session_id``,
    ``stim_on_time`` and ``spikes``).

    `frames` maps session id -> (camera time per frame, segmentation class per frame, 1-based);
    NEDS gets class - 1. Every session of the trials needs an entry.
    """
    missing = sorted(set(trials["session_id"]) - set(frames))
    if missing:
        raise ValueError(f"no frame labels for sessions {missing}")
    num_bins = len(trials[0]["spikes"][0])
    session_ids = np.asarray(trials["session_id"])
    starts = np.asarray(trials["stim_on_time"], dtype=np.float64) + window_start
    column = np.zeros((len(trials), num_bins), dtype=np.int64)
    for session_id, (times, labels) in frames.items():
        rows = np.flatnonzero(session_ids == session_id)
        if rows.size:
            if (np.asarray(labels) < 1).any():
                raise ValueError(f"session {session_id}: frame labels must be real classes (>= 1)")
            column[rows] = bin_frame_labels(times, labels, starts[rows], num_bins, bin_size) - 1
    return trials.add_column(name, column.tolist())


__all__ = [
    "IBL_POSE_MARKERS",
    "action_modality_spec",
    "add_action_modality",
    "bin_frame_labels",
    "load_ibl_pose_session",
    "write_feature_folder",
    "write_synthetic_ibl_pose",
]
