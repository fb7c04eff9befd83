"""Scoring prediction files against label files: a table per session and over sessions."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_write_json, atomic_write_text
from .inference import LABEL_COLUMN
from .metrics import F1_THRESHOLDS, score_sessions
from .readers import SegmentationDataError, read_label_csv

#: Columns of the score tables, in order.
TABLE_COLUMNS = ("macro_f1", "accuracy", "edit", *(f"f1@{round(k * 100)}" for k in F1_THRESHOLDS))


def read_predicted_labels(path: Path, class_names: Sequence[str]) -> np.ndarray:
    """Class indices `(T,)` from a `<session>_predictions.csv|parquet` file's label column."""
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, index_col=0)
    if LABEL_COLUMN not in table.columns:
        raise SegmentationDataError(f"{path}: no {LABEL_COLUMN!r} column")
    unknown = sorted(set(table[LABEL_COLUMN]) - set(class_names))
    if unknown:
        raise SegmentationDataError(f"{path}: labels {unknown} are not classes {list(class_names)}")
    index = {name: i for i, name in enumerate(class_names)}
    return table[LABEL_COLUMN].map(index).to_numpy(dtype=np.int64)


def score_prediction_folder(
    predictions_dir: str | Path, labels_dir: str | Path
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Scores of every prediction file that has a label file; returns (scores, sessions,
    class names). Prediction files without labels are reported, never silently skipped."""
    predictions_dir, labels_dir = Path(predictions_dir), Path(labels_dir)
    files = sorted(predictions_dir.glob("*_predictions.*"))
    if not files:
        raise FileNotFoundError(f"{predictions_dir}: no <session>_predictions.csv/.parquet files")
    sessions, truths, predictions, class_names = [], [], [], None
    unlabelled = []
    for path in files:
        session = path.name[: -len(f"_predictions{path.suffix}")]
        label_path = labels_dir / f"{session}.csv"
        if not label_path.is_file():
            unlabelled.append(session)
            continue
        truth, class_names = read_label_csv(label_path, class_names)
        predicted = read_predicted_labels(path, class_names)
        if len(predicted) != len(truth):
            raise SegmentationDataError(
                f"{path}: {len(predicted)} frames but {label_path} has {len(truth)}"
            )
        sessions.append(session)
        truths.append(truth)
        predictions.append(predicted)
    if not sessions:
        raise FileNotFoundError(f"{labels_dir}: no label file for any of {len(files)} sessions")
    scores = score_sessions(truths, predictions, len(class_names))
    scores["unscored_sessions"] = unlabelled
    return scores, sessions, class_names


def markdown_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table with one row per entry and the metric columns."""

    def cell(value: Any) -> str:
        if value is None:
            return "n/a"
        return f"{value:.3f}" if abs(value) <= 1.0 else f"{value:.1f}"

    lines = ["| | " + " | ".join(TABLE_COLUMNS) + " |", "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c)) for c in TABLE_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment evaluate``."""
    parser.add_argument("predictions", help="folder of <session>_predictions.csv/.parquet files")
    parser.add_argument(
        "--labels-dir", required=True, help="folder of <session>.csv one-hot label files"
    )
    parser.add_argument(
        "--output", default=None, help="file stem for OUTPUT.json and OUTPUT.md (optional)"
    )
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment evaluate``: print and write the table."""
    scores, sessions, _ = score_prediction_folder(args.predictions, args.labels_dir)
    rows = dict(zip(sessions, scores["per_session"], strict=True))
    rows["average"] = scores["average"]
    table = markdown_table(rows)
    print(table, end="")
    if scores["unscored_sessions"]:
        print(f"not scored (no labels): {scores['unscored_sessions']}")
    if args.output:
        atomic_write_json(f"{args.output}.json", {"sessions": sessions, **scores}, indent=2)
        atomic_write_text(f"{args.output}.md", table)
    return 0


__all__ = [
    "TABLE_COLUMNS",
    "add_evaluate_arguments",
    "markdown_table",
    "read_predicted_labels",
    "run_evaluate",
    "score_prediction_folder",
]
