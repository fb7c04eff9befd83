"""Readers of the action segmentation folder layout (one CSV per session in each folder).

::

    DATA_DIR/markers/<session>.csv    DeepLabCut / Lightning Pose: 3 header rows
                                      (scorer, bodyparts, coords), frame index first
    DATA_DIR/features/<session>.csv   plain features: one header row, frame index first
    DATA_DIR/labels/<session>.csv     one-hot labels: 'background' (= unlabelled) first

Marker features are ``<marker>_x, <marker>_y`` per marker, in file order. Missing values (NaN
runs) and, with a likelihood threshold, low-likelihood positions are linearly interpolated
(nearest value at the ends); how many were filled is counted in each session's ``report``.
Every problem is an error naming the file and what was expected.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .configuration_segmentation import BACKGROUND

#: Input folders a session's features can come from.
INPUT_DIRS = ("markers", "features")
#: Folder of the hand labels.
LABELS_DIR = "labels"
_COORDS = {"x", "y", "likelihood"}


class SegmentationDataError(ValueError):
    """A data file does not have the expected layout or content."""


@dataclass
class Session:
    """One session: raw features `(T, D)`, optional labels `(T,)` (0 = unlabelled), report."""

    session_id: str
    features: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return int(self.features.shape[0])


def interpolate_missing(values: np.ndarray, path: Path, names: Sequence[str]) -> int:
    """Fill NaNs in place column by column (linear, nearest value at the ends); returns how
    many values were filled. `path` and `names` name the file and columns in errors."""
    missing = np.isnan(values)
    for column in np.flatnonzero(missing.any(axis=0)):
        good = ~missing[:, column]
        if not good.any():
            raise SegmentationDataError(
                f"{path}: column {names[column]!r} has no valid value in any frame"
            )
        frames = np.arange(len(values))
        values[~good, column] = np.interp(frames[~good], frames[good], values[good, column])
    return int(missing.sum())


def _numeric(frame: pd.DataFrame, path: Path) -> np.ndarray:
    try:
        return frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise SegmentationDataError(f"{path}: expected numeric values only ({error})") from error


def read_marker_csv(
    path: str | Path,
    likelihood_threshold: float | None = None,
    markers: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Marker positions `(T, 2M)`, their names and a report of what was interpolated.

    Args:
        path: a DeepLabCut / Lightning Pose CSV (3 header rows: scorer, bodyparts, coords).
        likelihood_threshold: positions whose likelihood is below it are treated as missing.
        markers: the markers expected (in this order); others in the file are not used.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        head = [row for _, row in zip(range(4), csv.reader(handle), strict=False)]
    coords = {cell.strip() for cell in head[2][1:]} if len(head) >= 3 else set()
    if len(head) < 4 or not coords or not coords <= _COORDS:
        raise SegmentationDataError(
            f"{path}: expected 3 header rows (scorer, bodyparts, coords with x/y/likelihood) "
            "then one row per frame, as DeepLabCut and Lightning Pose write them; the third "
            f"row is {head[2][:6] if len(head) >= 3 else 'missing'}"
        )
    table = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    if table.empty:
        raise SegmentationDataError(f"{path}: no frames after the 3 header rows")
    available = list(dict.fromkeys(table.columns.get_level_values(1)))
    wanted = list(markers) if markers is not None else available
    missing = [m for m in wanted if m not in available]
    if missing:
        raise SegmentationDataError(
            f"{path}: markers {missing} are missing; the file has {available}"
        )
    by_marker = table.droplevel(0, axis=1)
    columns, names = [], []
    low_likelihood = 0
    for marker in wanted:
        present = set(by_marker[marker].columns)
        if not {"x", "y"} <= present:
            raise SegmentationDataError(f"{path}: marker {marker!r} needs x and y columns")
        xy = _numeric(by_marker[marker][["x", "y"]], path)  # (T, 2)
        if likelihood_threshold is not None and "likelihood" in present:
            likelihood = _numeric(by_marker[marker][["likelihood"]], path)[:, 0]
            low = likelihood < likelihood_threshold
            low_likelihood += int((low & ~np.isnan(xy).any(axis=1)).sum())
            xy[low] = np.nan
        columns.append(xy)
        names += [f"{marker}_x", f"{marker}_y"]
    values = np.concatenate(columns, axis=1)  # (T, 2M)
    nan_values = int(np.isnan(values).sum())
    interpolate_missing(values, path, names)
    report = {"interpolated_values": nan_values, "low_likelihood_frames": low_likelihood}
    return values, names, report


def read_feature_csv(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, int]]:
    """Feature values `(T, D)`, names and a report (NaNs are interpolated and counted)."""
    path = Path(path)
    table = pd.read_csv(path, index_col=0)
    if table.empty or table.shape[1] == 0:
        raise SegmentationDataError(
            f"{path}: expected a header row of feature names and one row per frame"
        )
    values = _numeric(table, path)
    names = [str(c) for c in table.columns]
    filled = interpolate_missing(values, path, names)
    return values, names, {"interpolated_values": filled, "low_likelihood_frames": 0}


def read_label_csv(
    path: str | Path, class_names: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Class index per frame `(T,)` (0 = background) and the class names.

    With `class_names` (a model's classes), the file's classes must be among them and the
    indices follow their order.
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, index_col=0)
    except pd.errors.EmptyDataError as error:
        raise SegmentationDataError(f"{path}: the labels file is empty") from error
    names = [str(c) for c in table.columns]
    if table.empty or not names:
        raise SegmentationDataError(f"{path}: the labels file has no frames")
    if names[0] != BACKGROUND:
        raise SegmentationDataError(
            f"{path}: the first label column must be {BACKGROUND!r} (unlabelled frames), "
            f"got {names[0]!r}"
        )
    values = _numeric(table, path)
    if not np.isin(values, (0, 1)).all():
        raise SegmentationDataError(f"{path}: labels must be one-hot 0/1 values")
    per_frame = values.sum(axis=1)
    for count, problem in ((2, "several classes"), (0, "no class")):
        bad = np.flatnonzero(per_frame >= 2) if count else np.flatnonzero(per_frame == 0)
        if bad.size:
            raise SegmentationDataError(
                f"{path}: {bad.size} frames have {problem} (first: frame {table.index[bad[0]]}); "
                f"expected exactly one 1 per row (use {BACKGROUND!r} for unlabelled frames)"
            )
    labels = values.argmax(axis=1)
    if class_names is None:
        return labels.astype(np.int64), names
    class_names = list(class_names)
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise SegmentationDataError(
            f"{path}: classes {unknown} are not classes of the model {class_names}"
        )
    remap = np.array([class_names.index(n) for n in names])
    return remap[labels].astype(np.int64), class_names


def list_sessions(data_dir: str | Path, input_dir: str = "markers") -> list[str]:
    """Session ids (file stems) of `data_dir/input_dir`, sorted."""
    folder = Path(data_dir) / input_dir
    if not folder.is_dir():
        raise SegmentationDataError(
            f"{folder}: no such folder; expected {Path(data_dir)}/{{{','.join(INPUT_DIRS)}}}/"
            "<session>.csv"
        )
    sessions = sorted(p.stem for p in folder.glob("*.csv"))
    if not sessions:
        raise SegmentationDataError(f"{folder}: no <session>.csv files")
    return sessions


def load_session(
    data_dir: str | Path,
    session_id: str,
    input_dir: str = "markers",
    likelihood_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    labels_dir: str | None = LABELS_DIR,
) -> Session:
    """Read one session's features, and its labels when `labels_dir/<session>.csv` exists
    (`labels_dir=None`: features only)."""
    if input_dir not in INPUT_DIRS:
        raise ValueError(f"input_dir must be one of {INPUT_DIRS}, got {input_dir!r}")
    data_dir = Path(data_dir)
    feature_path = data_dir / input_dir / f"{session_id}.csv"
    if not feature_path.is_file():
        raise SegmentationDataError(f"{feature_path}: no such file for session {session_id!r}")
    if input_dir == "markers":
        features, names, report = read_marker_csv(feature_path, likelihood_threshold)
    else:
        features, names, report = read_feature_csv(feature_path)
    session = Session(session_id, features, names, report=report)
    label_path = data_dir / (labels_dir or "") / f"{session_id}.csv"
    if labels_dir is not None and label_path.is_file():
        labels, session.class_names = read_label_csv(label_path, class_names)
        if len(labels) != len(features):
            raise SegmentationDataError(
                f"{label_path}: {len(labels)} label rows but {feature_path} has "
                f"{len(features)} frames; both need one row per frame"
            )
        session.labels = labels
    return session


def load_sessions(
    data_dir: str | Path,
    session_ids: Sequence[str] | None = None,
    input_dir: str = "markers",
    likelihood_threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    labels_dir: str | None = LABELS_DIR,
) -> list[Session]:
    """Read several sessions; they must share feature names and (labelled ones) class names."""
    ids = list(session_ids) if session_ids is not None else list_sessions(data_dir, input_dir)
    sessions: list[Session] = []
    for session_id in ids:
        session = load_session(
            data_dir, session_id, input_dir, likelihood_threshold, class_names, labels_dir
        )
        if sessions and session.feature_names != sessions[0].feature_names:
            raise SegmentationDataError(
                f"session {session_id!r} has features {session.feature_names} but "
                f"{sessions[0].session_id!r} has {sessions[0].feature_names}"
            )
        if class_names is None and session.class_names is not None:
            class_names = session.class_names
        sessions.append(session)
    return sessions


__all__ = [
    "INPUT_DIRS",
    "LABELS_DIR",
    "SegmentationDataError",
    "Session",
    "interpolate_missing",
    "list_sessions",
    "load_session",
    "load_sessions",
    "read_feature_csv",
    "read_label_csv",
    "read_marker_csv",
]
