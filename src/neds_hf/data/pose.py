"""Paw speed from IBL pose: the ``left_paw_speed`` / ``right_paw_speed`` modalities.

Source: the left camera's pose table through ONE, ``alf/_ibl_leftCamera.lightningPose.pqt``
(or the older ``_ibl_leftCamera.dlc.pqt``), with columns ``paw_l_x``, ``paw_l_y``,
``paw_l_likelihood``, ``paw_r_*``..., and the frame times ``_ibl_leftCamera.times.npy``
(a times file longer than the table loses its *leading* extra timestamps, the IBL
convention also used for motion energy).

Rules (each lives here only):

* a marker position is valid where its likelihood is at least :data:`LIKELIHOOD_THRESHOLD`
  and both coordinates are finite;
* the speed between two consecutive frames is ``|Δposition| / Δt`` (px/s) placed at their
  mid-time, and is invalid (NaN) when either frame is invalid or the frames are more than
  :data:`MAX_FRAME_GAP_S` apart (dropped frames);
* a bin's paw speed is that frame-pair speed linearly interpolated at the bin's sample time
  (the behaviours' sampling, centre or right edge of the bin); NaN when a neighbouring
  frame-pair speed is NaN or the bin lies outside the video: missing values are stored in the
  value itself (NaN), never interpolated across a gap;
* a session without a pose table keeps the two modalities all-NaN, and its preprocessing
  report says why (:attr:`PawPose.absent` / ``"pose_absent"`` in the session metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "LIKELIHOOD_THRESHOLD",
    "MAX_FRAME_GAP_S",
    "PAW_MARKERS",
    "PAW_SPEED_MODALITIES",
    "POSE_CAMERA",
    "POSE_KINDS",
    "PawPose",
    "frame_pair_speed",
    "load_paw_pose",
    "paw_pose_from_table",
    "paw_speeds_at",
]

#: The paw-speed modalities (per-bin continuous, px/s, NaN where the pose is invalid: declared
#: ``allow_missing``, so the collator masks those entries and the model never scores them).
PAW_SPEED_MODALITIES: tuple[dict[str, Any], ...] = (
    {"name": "left_paw_speed", "kind": "continuous", "allow_missing": True},
    {"name": "right_paw_speed", "kind": "continuous", "allow_missing": True},
)
#: Modality name -> pose marker (IBL Lightning Pose / DLC names).
PAW_MARKERS = {"left_paw_speed": "paw_l", "right_paw_speed": "paw_r"}
#: Camera whose pose gives the paw speeds, and the pose tables tried, in order.
POSE_CAMERA = "left"
POSE_KINDS = ("lightningPose", "dlc")
#: Positions with a lower likelihood are invalid.
LIKELIHOOD_THRESHOLD = 0.9
#: Consecutive frames further apart than this (s) give no speed (dropped frames).
MAX_FRAME_GAP_S = 0.1


@dataclass
class PawPose:
    """Paw positions of one session's pose table, invalid positions already NaN.

    ``times`` ``(F,)`` s; ``positions`` maps marker -> ``(F, 2)`` px; ``source`` names the
    table read; ``n_invalid`` counts the invalid frames per marker; ``absent`` is the reason
    when the session has no pose (then ``times`` is empty and ``positions`` too).
    """

    times: np.ndarray
    positions: dict[str, np.ndarray]
    source: str = ""
    n_invalid: dict[str, int] = field(default_factory=dict)
    n_dropped_timestamps: int = 0
    absent: str = ""

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the session metadata / build report."""
        if self.absent:
            return {"absent": self.absent}
        return {
            "source": self.source,
            "n_frames": len(self.times),
            "invalid_frames": dict(self.n_invalid),
            "dropped_timestamps": self.n_dropped_timestamps,
            "likelihood_threshold": LIKELIHOOD_THRESHOLD,
        }


def paw_pose_from_table(
    table: pd.DataFrame, times: np.ndarray, source: str, session_id: str
) -> PawPose:
    """Paw positions of a pose `table` (one row per frame) at camera `times` (s); a times array
    longer than the table loses its leading extra entries. Raises a ValueError naming the
    session, the file and the missing columns or the timestamp shortfall."""
    needed = [f"{m}_{c}" for m in PAW_MARKERS.values() for c in ("x", "y", "likelihood")]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"session {session_id}: {source} lacks the pose columns {missing}")
    times = np.asarray(times, dtype=np.float64).ravel()
    n_frames = len(table)
    if len(times) < n_frames:
        raise ValueError(
            f"session {session_id}: {source} has {n_frames} frames but the camera times only "
            f"{len(times)} timestamps (fewer timestamps than frames)"
        )
    positions, n_invalid = {}, {}
    for marker in PAW_MARKERS.values():
        xy = table[[f"{marker}_x", f"{marker}_y"]].to_numpy(dtype=np.float64, copy=True)
        likelihood = table[f"{marker}_likelihood"].to_numpy(dtype=np.float64)
        invalid = ~(likelihood >= LIKELIHOOD_THRESHOLD) | ~np.isfinite(xy).all(axis=1)
        xy[invalid] = np.nan
        positions[marker] = xy  # (F, 2)
        n_invalid[marker] = int(invalid.sum())
    return PawPose(
        times=times[len(times) - n_frames :],
        positions=positions,
        source=source,
        n_invalid=n_invalid,
        n_dropped_timestamps=len(times) - n_frames,
    )


def load_paw_pose(
    one: Any, eid: str, revision: str | None = None, camera: str = POSE_CAMERA
) -> PawPose:
    """The paw pose of session `eid` through ONE: the first pose table of :data:`POSE_KINDS`
    listed for `camera`, with its frame times. A session without one (or without the camera
    times) gives a :class:`PawPose` whose ``absent`` says what is missing."""
    obj = f"{camera}Camera"
    for kind in POSE_KINDS:
        listed = one.list_datasets(
            eid, collection="alf", filename={"object": obj, "attribute": kind}
        )
        if len(listed) == 0:
            continue
        times_listed = one.list_datasets(
            eid, collection="alf", filename={"object": obj, "attribute": "times"}
        )
        if len(times_listed) == 0:
            return PawPose(np.empty(0), {}, absent=f"alf/{obj}.{kind} without alf/{obj}.times")
        table_path = _local_file(one, eid, listed[0], revision)
        times_path = _local_file(one, eid, times_listed[0], revision)
        times = np.load(times_path, allow_pickle=False)
        return paw_pose_from_table(
            pd.read_parquet(table_path), times, f"alf/{Path(table_path).name}", eid
        )
    tried = " / ".join(f"alf/{obj}.{kind}" for kind in POSE_KINDS)
    return PawPose(np.empty(0), {}, absent=f"no pose table ({tried})")


def _local_file(one: Any, eid: str, rel_path: str, revision: str | None) -> Path:
    """Local path of a listed dataset (downloaded first when ONE is online)."""
    name = Path(str(rel_path)).name
    return Path(
        one.load_dataset(eid, name, collection="alf", revision=revision, download_only=True)
    )


def frame_pair_speed(times: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speeds ``(F-1,)`` (px/s) between consecutive frames and their mid-times ``(F-1,)``;
    NaN where either frame is invalid or the frames are over :data:`MAX_FRAME_GAP_S` apart."""
    step = np.diff(times)  # (F-1,)
    speed = np.hypot(*np.diff(xy, axis=0).T) / np.where(step > 0, step, np.nan)  # (F-1,)
    speed[step > MAX_FRAME_GAP_S] = np.nan
    return speed, times[:-1] + 0.5 * step


def paw_speeds_at(pose: PawPose | None, sample_times: np.ndarray) -> dict[str, np.ndarray]:
    """``left_paw_speed`` / ``right_paw_speed`` at `sample_times` ``(K, T)`` (s): float32
    ``(K, T)`` each, NaN where the pose is invalid, outside the video, or absent."""
    speeds = {}
    for name, marker in PAW_MARKERS.items():
        values = np.full(np.shape(sample_times), np.nan)  # (K, T)
        if pose is not None and not pose.absent and len(pose.times) >= 2:
            speed, mid = frame_pair_speed(pose.times, pose.positions[marker])
            inside = (sample_times >= mid[0]) & (sample_times <= mid[-1])
            values[inside] = np.interp(sample_times[inside], mid, speed)
        speeds[name] = values.astype(np.float32)
    return speeds
