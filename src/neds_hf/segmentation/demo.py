"""``neds-hf segment demo``: the whole segmentation workflow on a synthetic corpus, offline.

Writes ``OUT/data`` (the corpus), ``OUT/models/<name>/{best,final}`` (model folders with card),
``OUT/predictions/<name>/`` (prediction files of the test sessions), and the report:
``OUT/report.md`` / ``report.json`` (macro F1, accuracy, edit, F1@k on the held-out, fully
labelled test sessions for TCNs with and without velocity, a semi-supervised TCN and the
baselines) and ``OUT/ethogram.png`` (true vs predicted actions of one test session).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..locking import OutputLock
from .baselines import LagStackedBaseline
from .evaluation import markdown_table
from .feature_extraction_segmentation import ActionSegmentationFeatureExtractor
from .inference import load_model, predict_session, predictions_table
from .metrics import score_sessions
from .readers import load_sessions
from .synthetic import make_synthetic_corpus
from .training import SegmentationTrainingArguments, train_segmentation

#: The TCN variants of the demo: name -> training overrides.
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "tcn_velocity": {"use_velocity": True},
    "tcn_position": {"use_velocity": False},
    "tcn_position_semi": {
        "use_velocity": False,
        "weak_labels": "pseudo",
        "next_step_weight": 1.0,
    },
}


def _train_and_predict(
    name: str, overrides: dict[str, Any], out: Path, epochs: int, seed: int, test: list
) -> tuple[list[np.ndarray], float]:
    """Train one TCN variant; returns its test predictions (class per frame) and train time."""
    args = SegmentationTrainingArguments(
        data_dir=str(out / "data"),
        output_dir=str(out / "models" / name),
        num_epochs=epochs,
        chunk_length=250,
        batch_size=4,
        seed=seed,
        anneal_start_epoch=epochs // 4,
        anneal_end_epoch=epochs // 2,
        report_to="none",
        disable_progress_bar=True,
        **overrides,
    )
    start = time.perf_counter()
    train_segmentation(args)
    seconds = time.perf_counter() - start
    model, extractor = load_model(out / "models" / name / "best")
    folder = out / "predictions" / name
    folder.mkdir(parents=True, exist_ok=True)
    predicted = []
    for session in test:
        table = predictions_table(
            predict_session(model, extractor, session), model.config.class_names
        )
        table.to_csv(folder / f"{session.session_id}_predictions.csv")
        predicted.append(table[model.config.class_names].to_numpy().argmax(axis=1))
    return predicted, seconds


def _baseline_predictions(kind: str, train: list, test: list, seed: int) -> list[np.ndarray]:
    """Fit a lag-stacked baseline on position + velocity features; predict the test sessions."""
    extractor = ActionSegmentationFeatureExtractor(use_velocity=True)
    baseline = LagStackedBaseline(kind, lags=4, seed=seed).fit(
        [extractor.transform(s.features) for s in train], [s.labels for s in train]
    )
    return [baseline.predict(extractor.transform(s.features)) for s in test]


def plot_ethogram(
    path: Path, truth: np.ndarray, rows: dict[str, np.ndarray], classes: list
) -> None:
    """True vs predicted actions of one session, one coloured row per labelling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = ["truth", *rows]
    image = np.stack([truth, *rows.values()])  # (rows, T)
    colours = ["#dddddd", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
    colormap = ListedColormap(colours[: len(classes)])
    figure, axis = plt.subplots(figsize=(12, 0.5 * len(names) + 1.2))
    axis.imshow(
        image, aspect="auto", interpolation="nearest", cmap=colormap, vmin=0, vmax=len(classes) - 1
    )
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("frame")
    handles = [Patch(color=colormap(i), label=c) for i, c in enumerate(classes) if i > 0]
    axis.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(handles))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run_demo(
    output: str | Path, epochs: int = 40, frames: int = 3000, seed: int = 0
) -> dict[str, Any]:
    """Run the demo and write its report; returns the scores per model."""
    out = Path(output)
    with OutputLock(out, "segmentation demo"):
        out.mkdir(parents=True, exist_ok=True)
        split = make_synthetic_corpus(out / "data", num_frames=frames, seed=seed)
        train = load_sessions(out / "data", split["train"])
        test = load_sessions(out / "data", split["test"])
        classes = split["class_names"]
        predictions, seconds = {}, {}
        for name, overrides in DEMO_MODELS.items():
            predictions[name], seconds[name] = _train_and_predict(
                name, overrides, out, epochs, seed, test
            )
        for kind in ("logistic_regression", "random_forest"):
            start = time.perf_counter()
            predictions[kind] = _baseline_predictions(kind, train, test, seed)
            seconds[kind] = time.perf_counter() - start
        truths = [s.labels for s in test]
        scores = {
            name: {
                **score_sessions(truths, predicted, len(classes))["average"],
                "train_seconds": seconds[name],
            }
            for name, predicted in predictions.items()
        }
        plot_ethogram(
            out / "ethogram.png", truths[0], {k: v[0] for k, v in predictions.items()}, classes
        )
        report = (
            "# Action segmentation demo (synthetic corpus)\n\n"
            f"{len(split['train'])} training sessions ({frames} frames, ~4 % labelled in 50-frame "
            f"bouts), {len(split['test'])} fully labelled test sessions; {epochs} epochs; "
            "scores on the test sessions.\n\n"
            + markdown_table(scores)
            + "\n![ethogram](ethogram.png)\n\nModel folder with card: `models/tcn_velocity/best`.\n"
        )
        atomic_write_text(out / "report.md", report)
        atomic_write_json(out / "report.json", scores, indent=2)
    return scores


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment demo``."""
    parser.add_argument("--output", required=True, help="folder for the corpus, models, report")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--frames", type=int, default=3000, help="frames per session")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def run_demo_cli(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment demo`` and print the table."""
    scores = run_demo(args.output, args.epochs, args.frames, args.seed)
    print(markdown_table(scores), end="")
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0


__all__ = ["DEMO_MODELS", "add_demo_arguments", "plot_ethogram", "run_demo", "run_demo_cli"]
