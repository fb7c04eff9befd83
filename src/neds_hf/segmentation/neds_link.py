"""NEDS link: segmented actions become a per-bin categorical NEDS modality.

Recipe (configuration only, no new NEDS model code):

1. pose features of an IBL session: :func:`load_ibl_pose_session` reads
   ``alf/_ibl_leftCamera.lightningPose.pqt`` (or ``.dlc.pqt``) and the camera times, and adds
   the wheel velocity at the camera times (from ``_ibl_wheel.position/timestamps``); through
   ONE, :func:`~.ibl.load_ibl_pose_via_one` (``neds-hf segment prepare-ibl`` writes the
   ``features/`` folder of many sessions);
2. a trained segmentation model labels every frame (:func:`~.inference.predict_session`);
3. :func:`add_actions_to_dataset` (``neds-hf segment add-to-neds``) bins the per-frame labels
   to the dataset's trial grid (its own bins from ``stim_on_time + window[0]``; each bin takes
   the label of the frame nearest its centre, :func:`trial_actions`) and writes a NEW dataset
   folder that declares the modality ``action_modality_spec(...)``
   (``{"kind": "categorical", "trial_level": False}``) in its ``build_report.json`` and card,
   with fresh file records (:func:`neds_hf.data.derive.add_categorical_modality`);
   :func:`add_action_modality` does the same to a ``datasets.Dataset`` in memory;
4. ``neds-hf train --dataset NEW --modalities spikes wheel_speed action``: training reads the
   modality table of the dataset, and the collator and model handle the action like any
   per-bin behaviour, so NEDS decodes actions from spikes (``predict_behavior(...)["action"]``
   is ``(B, T, K)``).

Action indices in NEDS are the segmentation class index minus 1 (background is never
predicted, so NEDS sees ``len(class_names) - 1`` classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .inference import LABEL_COLUMN
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
    times, dropped = camera_frame_times(session_path, len(values), camera, pose_path)
    report = {
        "interpolated_values": filled,
        "low_likelihood_frames": low,
        "dropped_leading_timestamps": dropped,
    }
    if wheel:
        position = np.load(alf / "_ibl_wheel.position.npy")
        stamps = np.load(alf / "_ibl_wheel.timestamps.npy")
        velocity = np.gradient(position, stamps)
        values = np.concatenate([values, np.interp(times, stamps, velocity)[:, None]], axis=1)
        names.append("wheel_velocity")
    return Session(session_path.name, values, names, report=report), times


def camera_frame_times(
    session_path: str | Path, num_frames: int, camera: str = "left", source: str | Path = ""
) -> tuple[np.ndarray, int]:
    """The camera time of each of `num_frames` frames, and how many leading timestamps were
    dropped (a times file longer than the video: the IBL convention drops the first ones).
    `source` names the per-frame file in the error when there are fewer timestamps."""
    path = Path(session_path) / "alf" / f"_ibl_{camera}Camera.times.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the session has no {camera} camera times")
    times = np.load(path, allow_pickle=False)
    if len(times) < num_frames:
        raise SegmentationDataError(
            f"{source or path}: {num_frames} frames but only {len(times)} camera timestamps "
            f"in {path}"
        )
    return times[len(times) - num_frames :], len(times) - num_frames


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
    stim_on = np.asarray(trials["stim_on_time"], dtype=np.float64)
    column = np.zeros((len(trials), num_bins), dtype=np.int64)
    for session_id in frames:
        rows = np.flatnonzero(session_ids == session_id)
        if rows.size:
            column[rows] = trial_actions(
                frames, session_id, stim_on[rows], num_bins, window_start, bin_size
            )
    return trials.add_column(name, column.tolist())


def trial_actions(
    frames: Mapping[str, tuple[np.ndarray, np.ndarray]],
    session_id: str,
    stim_on_times: np.ndarray,
    num_bins: int,
    window_start: float = NEDS_WINDOW_START,
    bin_size: float = NEDS_BIN_SIZE,
) -> np.ndarray:
    """NEDS action labels `(n_trials, num_bins)` of some trials of one session: the
    segmentation class (1-based, in `frames[session_id]`) of the frame nearest each bin centre,
    minus 1. Raises for a session without frame labels or with background frames."""
    if session_id not in frames:
        raise ValueError(f"no frame labels for session {session_id}")
    times, labels = frames[session_id]
    if (np.asarray(labels) < 1).any():
        raise ValueError(f"session {session_id}: frame labels must be real classes (>= 1)")
    starts = np.asarray(stim_on_times, dtype=np.float64) + window_start
    return bin_frame_labels(np.asarray(times), labels, starts, num_bins, bin_size) - 1


def add_actions_to_dataset(
    dataset: str | Path,
    output: str | Path,
    frames: Mapping[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    name: str = "action",
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """Write `output`: the NEDS dataset folder `dataset` plus a per-bin action modality.

    `frames` maps every session id of the dataset to (camera time per frame, segmentation
    class per frame, 1-based; e.g. the arg-max of :func:`~.inference.predict_session` or a
    predictions CSV); `class_names` are the segmentation classes, background first. The bins
    follow the dataset's own trial window and bin size (its ``build_report.json``). The new
    folder declares ``action_modality_spec(class_names, name)`` and passes
    :func:`neds_hf.data.verify_dataset`; ``neds-hf train --dataset output --modalities spikes
    ... action`` trains on it. Returns `output`.
    """
    from ..data.derive import add_categorical_modality, load_preprocessing_config

    config = load_preprocessing_config(dataset)
    if config.align_event != "stimOn_times":
        raise ValueError(
            f"dataset {dataset}: trials are aligned to {config.align_event}, but the action "
            "bins are placed from stim_on_time; rebuild with align_event='stimOn_times'"
        )
    window_start, bin_size = config.window[0], config.bin_size

    def labels(session_id: str, split: str, trials: Any) -> np.ndarray:
        num_bins = len(trials.column("spikes")[0][0]) if trials.num_rows else 0
        stim_on = trials.column("stim_on_time").to_numpy()
        return trial_actions(frames, session_id, stim_on, num_bins, window_start, bin_size)

    spec = action_modality_spec(class_names, name)
    classes = ", ".join(f"{index} = {action}" for index, action in enumerate(class_names[1:]))
    description = f"classes {classes}" + (f"; {description}" if description else "")
    return add_categorical_modality(dataset, output, spec, labels, description, overwrite)


def decode_actions(
    model: Any, dataset: str | Path, split: str = "test", name: str = "action"
) -> dict[str, np.ndarray]:
    """NEDS's decoding of the per-bin modality `name` from spikes alone, on the trials of
    `split` of `dataset` (the model's sessions only): ``predicted`` and ``labels`` ``(K, T)``
    (the arg-max class and the dataset's label per bin), ``session_ids`` and ``trial_ids``
    ``(K,)``; score it e.g. with ``sklearn.metrics.balanced_accuracy_score`` on the
    flattened arrays."""
    import torch

    from ..data import NedsTrialDataset

    sessions = list(model.config.sessions)
    trials = NedsTrialDataset(dataset, split, sessions=sessions)
    predicted, labels, session_ids, trial_ids = [], [], [], []
    model.eval()
    with torch.no_grad():
        for item in (trials[i] for i in range(len(trials))):
            spikes = torch.as_tensor(item["spikes"].T, dtype=torch.float32)[None]  # (1, T, N)
            session = torch.tensor([sessions.index(item["session_id"])])
            logits = model.predict_behavior(spikes, session)[name][0]  # (T, K)
            predicted.append(logits.argmax(-1).numpy())
            labels.append(np.asarray(item[name]))
            session_ids.append(item["session_id"])
            trial_ids.append(item["trial_id"])
    return {
        "predicted": np.stack(predicted),
        "labels": np.stack(labels),
        "session_ids": np.asarray(session_ids),
        "trial_ids": np.asarray(trial_ids, dtype=np.int64),
    }


def load_frame_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Class names and per-frame actions of a ``<session>_predictions.csv`` / ``.parquet``
    (written by ``neds-hf segment predict``): the most probable class other than background
    (the first class), 1-based, so that every frame gets an action NEDS can model."""
    path = Path(path)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    class_names = [c for c in table.columns if c not in ("frame", LABEL_COLUMN)]
    if len(class_names) < 3 or LABEL_COLUMN not in table.columns:
        raise SegmentationDataError(
            f"{path}: expected a predictions file with a background column, at least two "
            f"action probability columns and {LABEL_COLUMN!r}; got columns {list(table.columns)}"
        )
    probabilities = table[class_names].to_numpy(dtype=np.float64)  # (frames, classes)
    if not np.isfinite(probabilities).all():
        raise SegmentationDataError(f"{path}: non-finite class probabilities")
    return class_names, 1 + probabilities[:, 1:].argmax(axis=1)


def session_folder(sessions_root: str | Path, session_id: str) -> Path:
    """The ALF session folder of `session_id` under `sessions_root`: a ONE cache (its
    ``sessions.pqt`` gives ``lab/Subjects/subject/date/number``) or a folder with one
    sub-folder per session id."""
    root = Path(sessions_root)
    table_path = root / "sessions.pqt"
    if table_path.is_file():
        table = pd.read_parquet(table_path)
        if session_id not in table.index:
            raise KeyError(f"session {session_id} is not in the ONE cache table {table_path}")
        row = table.loc[session_id]
        number = int(row["number"])
        return (
            root
            / str(row["lab"])
            / "Subjects"
            / str(row["subject"])
            / str(row["date"])
            / (f"{number:03d}")
        )
    folder = root / session_id
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found: --sessions-root must be a ONE cache or hold one folder per "
            "session id"
        )
    return folder


def add_add_to_neds_arguments(parser: Any) -> Any:
    """Arguments of ``neds-hf segment add-to-neds``."""
    parser.add_argument("--dataset", required=True, help="NEDS dataset folder (prepare-data)")
    parser.add_argument(
        "--predictions",
        required=True,
        help="folder of <session>_predictions.csv/.parquet (segment predict), one per session",
    )
    parser.add_argument(
        "--sessions-root",
        required=True,
        help="ONE cache (or folder of <session>/alf) holding each session's camera times",
    )
    parser.add_argument("--output", required=True, help="the new dataset folder")
    parser.add_argument("--name", default="action", help="name of the new modality")
    parser.add_argument("--camera", default="left", help="camera the predictions come from")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def run_add_to_neds(args: Any) -> int:
    """Run ``neds-hf segment add-to-neds``: per-frame predictions become a per-bin modality."""
    from ..data.load import load_sessions

    session_ids = [str(s) for s in load_sessions(args.dataset)["session_id"]]
    frames, class_names = {}, None
    for session_id in session_ids:
        candidates = [
            Path(args.predictions) / f"{session_id}_predictions.{kind}"
            for kind in ("csv", "parquet")
        ]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"session {session_id}: {candidates[0]} not found")
        names, labels = load_frame_predictions(path)
        if class_names is not None and names != class_names:
            raise SegmentationDataError(f"{path}: classes {names}, other files have {class_names}")
        class_names = names
        folder = session_folder(args.sessions_root, session_id)
        times, _ = camera_frame_times(folder, len(labels), args.camera, path)
        frames[session_id] = (times, labels)
    output = add_actions_to_dataset(
        args.dataset,
        args.output,
        frames,
        class_names,
        args.name,
        description=f"arg-max actions of the predictions in {Path(args.predictions).resolve()}",
        overwrite=args.overwrite,
    )
    print(f"wrote {output} with the per-bin modality {args.name!r} ({class_names[1:]})")
    return 0


__all__ = [
    "IBL_POSE_MARKERS",
    "action_modality_spec",
    "add_action_modality",
    "add_actions_to_dataset",
    "add_add_to_neds_arguments",
    "bin_frame_labels",
    "camera_frame_times",
    "decode_actions",
    "load_frame_predictions",
    "load_ibl_pose_session",
    "run_add_to_neds",
    "session_folder",
    "trial_actions",
    "write_feature_folder",
    "write_synthetic_ibl_pose",
]
