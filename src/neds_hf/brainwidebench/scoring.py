"""Scoring BrainWideBench predictions with the package's own scorers (``neds-hf score-bwb``).

Every number comes from ``ibl_bwb_eval``: ``scoring.ts1/ts2/ts3.score_dir`` per file and seed,
``scoring.aggregation.aggregate`` (per recording, clipped at 0 per seed, then mean / SEM over
seeds), ``aggregate_over_seeds`` (per task: recordings averaged within a seed, then mean / SEM
over seeds) and, with several labels, ``rank``. The package's scorers print and skip a file they
cannot score; here every such file is listed with its reason, so nothing is dropped silently.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ground_truth import GROUND_TRUTH_FILE
from .tasks import require_bwb

__all__ = ["BwbScores", "primary_metric", "score_predictions"]


def primary_metric(task_id: str) -> str:
    """The metric a task is ranked on: its readout spec's, ``macro/f1-score`` for TS3."""
    from ibl_bwb_eval.tasks import get_ts1_readout_spec, get_ts2_readout_spec, task_of

    suite = task_id.split("-", 1)[0]
    if suite == "ts1":
        return get_ts1_readout_spec(task_of("ts1", task_id)).primary_metric
    if suite == "ts2":
        return get_ts2_readout_spec(task_of("ts2", task_id)).primary_metric
    return "macro/f1-score"


@dataclass
class BwbScores:
    """Scores of a prediction folder against a ground-truth folder."""

    raw: dict[tuple, dict[str, float]]
    per_recording: dict[tuple[str, str, str], dict[str, tuple[float, float | None, int]]]
    per_task: dict[tuple[str, str], dict[str, tuple[float, float | None, int]]]
    ranks: dict[str, dict[str, float]] | None = None
    unscored: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN as null)."""
        return {
            "per_task": [
                {
                    "label": label,
                    "task": task,
                    "primary_metric": primary_metric(task),
                    "metrics": _summaries(metrics),
                }
                for (label, task), metrics in sorted(self.per_task.items())
            ],
            "per_recording": [
                {"label": label, "task": task, "recording_id": rec, "metrics": _summaries(m)}
                for (label, task, rec), m in sorted(self.per_recording.items())
            ],
            "per_seed": [
                {
                    "label": key[0],
                    "task": key[1],
                    "recording_id": key[2] if len(key) == 4 else None,
                    "seed": key[-1],
                    "metrics": {name: _finite(v) for name, v in metrics.items()},
                }
                for key, metrics in sorted(self.raw.items(), key=lambda item: str(item[0]))
            ],
            "ranks": self.ranks,
            "unscored": self.unscored,
        }

    def to_markdown(self) -> str:
        """One row per (label, task, metric), per-class TS3 metrics left to the JSON; the
        primary metric of each task is marked with ``*``."""
        lines = [
            "| label | task | metric | mean ± SEM over seeds | seeds |",
            "|---|---|---|---|---|",
        ]
        for (label, task), metrics in sorted(self.per_task.items()):
            for name, (mean, sem, count) in metrics.items():
                if "/" in name and not name.startswith("macro/"):
                    continue
                star = "*" if name == primary_metric(task) else ""
                spread = "" if sem is None else f" ± {sem:.4f}"
                lines.append(f"| {label} | {task} | {name}{star} | {mean:.4f}{spread} | {count} |")
        for entry in self.unscored:
            lines.append(f"\nunscored: {entry['file']}: {entry['reason']}")
        return "\n".join(lines)


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _summaries(metrics: Mapping[str, tuple[float, float | None, int]]) -> dict[str, Any]:
    return {
        name: {"mean": _finite(mean), "sem": _finite(sem) if sem is not None else None, "n": n}
        for name, (mean, sem, n) in metrics.items()
    }


def _prediction_files(pred_dir: Path) -> list[tuple[Path, dict[str, str]]]:
    """Every ``seed_*.safetensors`` under `pred_dir` with its metadata."""
    from safetensors import safe_open

    files = []
    for path in sorted(pred_dir.rglob("seed_*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            files.append((path, dict(handle.metadata() or {})))
    return files


def _unscored_reason(path: Path, metadata: Mapping[str, str], gt_dir: Path) -> str:
    """Why the package's scorer left a file out: no ground truth, or its own error."""
    from ibl_bwb_eval.scoring import ts1, ts2, ts3

    task = metadata.get("task", "")
    suite = task.split("-", 1)[0]
    if suite not in ("ts1", "ts2", "ts3"):
        return f"unknown task {task!r} in the metadata"
    parts = [task] if suite == "ts3" else [task, metadata.get("recording_id", "")]
    gt_path = gt_dir.joinpath(*parts, GROUND_TRUTH_FILE)
    if not gt_path.is_file():
        return f"no ground truth at {gt_path}"
    try:
        if suite == "ts1":
            ts1.score_file(task, path, gt_path)
        else:
            (ts2 if suite == "ts2" else ts3).score_file(path, gt_path)
    except Exception as error:  # the package's own message is the reason
        return f"{type(error).__name__}: {error}"
    return "not scored by the package's score_dir"


def score_predictions(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike) -> BwbScores:
    """Score every prediction file under `pred_dir` against `gt_dir` (see the module doc)."""
    require_bwb()
    from ibl_bwb_eval.scoring import aggregation, ts1, ts2, ts3

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    files = _prediction_files(pred_dir)
    if not files:
        raise ValueError(f"no seed_*.safetensors prediction files under {pred_dir}")
    if not gt_dir.is_dir():
        raise ValueError(f"ground-truth folder {gt_dir} does not exist")
    raw: dict[tuple, dict[str, float]] = {}
    raw.update(ts1.score_dir(pred_dir, gt_dir))
    raw.update(ts2.score_dir(pred_dir, gt_dir))
    for task in sorted({m["task"] for _, m in files if m.get("task", "").startswith("ts3-")}):
        raw.update(aggregation.from_ts3(ts3.score_dir(pred_dir, gt_dir), task=task))
    unscored = []
    for path, metadata in files:
        suite = metadata.get("task", "").split("-", 1)[0]
        key = (metadata.get("label"), metadata.get("task"))
        key += (
            (int(metadata.get("seed", -1)),)
            if suite == "ts3"
            else (
                metadata.get("recording_id"),
                int(metadata.get("seed", -1)),
            )
        )
        if key not in raw:
            unscored.append({"file": str(path), "reason": _unscored_reason(path, metadata, gt_dir)})
    per_recording = aggregation.aggregate(raw)
    primary = {task: primary_metric(task) for _, task, _ in per_recording}
    ranks = None
    if len({label for label, _, _ in per_recording}) > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ranks = aggregation.rank(per_recording, primary)
    return BwbScores(
        raw=raw,
        per_recording=per_recording,
        per_task=aggregation.aggregate_over_seeds(raw),
        ranks=ranks,
        unscored=unscored,
    )
