"""Writing a synthetic session in the ALF layout, with its ground truth next to the ONE cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .neurons import N_CHANNELS, SyntheticProbe
from .session import SyntheticSession

__all__ = [
    "GROUND_TRUTH_DIRNAME",
    "POSE_TRUTH_SUFFIX",
    "load_ground_truth",
    "load_pose_truth",
    "write_alf_session",
    "write_channels",
    "write_ground_truth",
    "write_spike_sorting",
]

GROUND_TRUTH_DIRNAME = "ground_truth"
#: File name suffix of a session's pose truth next to its ground truth (``<eid>.pose.npz``).
POSE_TRUTH_SUFFIX = ".pose.npz"


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
    if session.pose_truth is not None:
        np.savez(folder / f"{session.eid}{POSE_TRUTH_SUFFIX}", **session.pose_truth)
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
    if session.lick_times is not None:
        np.save(alf / "licks.times.npy", session.lick_times)
    if session.pose is not None:
        _save_parquet(alf / "_ibl_leftCamera.lightningPose.pqt", session.pose.table)
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


def load_pose_truth(root: str | Path, eid: str) -> dict[str, np.ndarray]:
    """Read a session's left-camera pose truth (:data:`.pose.POSE_GROUND_TRUTH_ARRAYS`): the
    true action of every video frame and trial bin, the noise-free paw speeds."""
    path = Path(root) / GROUND_TRUTH_DIRNAME / f"{eid}{POSE_TRUTH_SUFFIX}"
    if not path.exists():
        raise FileNotFoundError(
            f"no pose truth for session {eid}: {path} does not exist (a session without a "
            "left camera has no pose)"
        )
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}
