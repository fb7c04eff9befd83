"""A Hugging Face `datasets` dataset from the segmentation folder layout (one row per session).

Columns: ``session_id``, ``features`` (frames x features, float32), ``labels`` (class per
frame, 0 = unlabelled), ``num_frames``, ``labelled_frames``. Splits by whole session: ``test``
holds the sessions named in ``split.json`` (or ``--test-sessions``), ``train`` the others. The
feature names, class names and reader reports are in ``segmentation_info.json`` and the card.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..atomic import atomic_directory
from .readers import load_sessions

INFO_FILE = "segmentation_info.json"


def build_segmentation_dataset(
    data_dir: str | Path,
    input_dir: str = "markers",
    test_sessions: Sequence[str] | None = None,
    likelihood_threshold: float | None = None,
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """The dataset (train/test by session) and its info (names, classes, reports)."""
    data_dir = Path(data_dir)
    sessions = load_sessions(data_dir, None, input_dir, likelihood_threshold)
    if test_sessions is None and (data_dir / "split.json").is_file():
        test_sessions = json.loads((data_dir / "split.json").read_text())["test"]
    test = set(test_sessions or [])
    unknown = sorted(test - {s.session_id for s in sessions})
    if unknown:
        raise ValueError(f"test sessions {unknown} are not sessions of {data_dir}")
    unlabelled = [s.session_id for s in sessions if s.labels is None]
    if unlabelled:
        raise ValueError(f"{data_dir}/labels: no label file for sessions {unlabelled}")
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for session in sessions:
        rows["test" if session.session_id in test else "train"].append(
            {
                "session_id": session.session_id,
                "features": session.features.astype(np.float32).tolist(),
                "labels": session.labels.tolist(),
                "num_frames": session.num_frames,
                "labelled_frames": int((session.labels > 0).sum()),
            }
        )
    features = datasets.Features(
        {
            "session_id": datasets.Value("string"),
            "features": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
            "labels": datasets.Sequence(datasets.Value("int64")),
            "num_frames": datasets.Value("int64"),
            "labelled_frames": datasets.Value("int64"),
        }
    )
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(split_rows, features=features)
            for split, split_rows in rows.items()
            if split_rows
        }
    )
    info = {
        "source": str(data_dir),
        "input_dir": input_dir,
        "feature_names": sessions[0].feature_names,
        "class_names": next(s.class_names for s in sessions if s.class_names),
        "likelihood_threshold": likelihood_threshold,
        "reports": {s.session_id: s.report for s in sessions},
        "splits": {
            split: [r["session_id"] for r in split_rows] for split, split_rows in rows.items()
        },
    }
    return dataset, info


def dataset_card(info: dict[str, Any]) -> str:
    """The dataset card (README.md) text."""
    lines = [
        "---",
        "tags: [neuroscience, behavior, action-segmentation, pose-estimation]",
        "---",
        "",
        "# Action segmentation dataset",
        "",
        f"Built by `neds-hf segment prepare` from `{info['source']}` ({info['input_dir']}/).",
        "One row per session; `labels` holds a class index per frame (0 = background ="
        " unlabelled).",
        "",
        f"- Classes: {', '.join(info['class_names'])}",
        f"- Features: {', '.join(info['feature_names'])}",
        f"- Likelihood threshold: {info['likelihood_threshold']}",
        "",
        "| split | sessions |",
        "|---|---|",
    ]
    lines += [f"| {split} | {', '.join(ids)} |" for split, ids in info["splits"].items() if ids]
    filled = {k: v for k, v in info["reports"].items() if any(v.values())}
    if filled:
        lines += ["", "Interpolated values per session (missing or low-likelihood markers):", ""]
        lines += [f"- `{k}`: {v}" for k, v in filled.items()]
    return "\n".join(lines) + "\n"


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment prepare``."""
    parser.add_argument("--data-dir", required=True, help="folder with markers/ and labels/")
    parser.add_argument("--output", required=True, help="dataset folder (save_to_disk)")
    parser.add_argument("--input-dir", default="markers", choices=["markers", "features"])
    parser.add_argument("--test-sessions", nargs="*", default=None)
    parser.add_argument("--likelihood-threshold", type=float, default=None)
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment prepare``."""
    dataset, info = build_segmentation_dataset(
        args.data_dir, args.input_dir, args.test_sessions, args.likelihood_threshold
    )
    with atomic_directory(args.output) as tmp:
        dataset.save_to_disk(str(tmp))
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "README.md").write_text(dataset_card(info))
    print(
        f"wrote {', '.join(f'{k}: {len(v)} sessions' for k, v in dataset.items())} to {args.output}"
    )
    return 0


__all__ = ["add_prepare_arguments", "build_segmentation_dataset", "dataset_card", "run_prepare"]
