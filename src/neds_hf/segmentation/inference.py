"""Inference for every frame of every session, whatever its length, and prediction files.

Each session is cut into chunks of `chunk_length` frames (the last one shorter); every chunk is
run with `context_frames` real neighbouring frames on each side (zeros beyond the session's
ends), exactly like the training chunks, and only its own frames are kept. Windows of equal
length are batched together, so no padding ever enters a prediction. Probabilities are a
softmax over the real classes: background (unlabelled) has probability 0 and is never the
predicted label.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_directory
from .configuration_segmentation import ActionSegmentationConfig
from .feature_extraction_segmentation import ActionSegmentationFeatureExtractor
from .modeling_segmentation import ActionSegmentationModel
from .readers import Session, load_sessions
from .windows import chunk_bounds, feature_window

#: Formats of the prediction files.
PREDICTION_FORMATS = ("csv", "parquet")
#: Name of the arg-max label column of the prediction files.
LABEL_COLUMN = "label"


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the real classes `(..., C)`; the background column is 0."""
    masked = logits.float().clone()
    masked[..., 0] = float("-inf")
    return torch.softmax(masked, dim=-1)


@torch.no_grad()
def predict_features(
    model: ActionSegmentationModel,
    features: np.ndarray,
    context: int,
    chunk_length: int = 1000,
    batch_size: int = 16,
    start: int = 0,
    stop: int | None = None,
) -> np.ndarray:
    """Class probabilities `(stop - start, C)` for frames `start:stop` (default: all) of one
    session's model features `(T, D')`; the windows read real context outside that range."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    stop = features.shape[0] if stop is None else stop
    bounds = chunk_bounds(start, stop, chunk_length)
    probabilities = np.zeros((stop - start, model.config.num_labels_total), np.float32)
    by_length: dict[int, list[tuple[int, int]]] = {}
    for a, b in bounds:
        by_length.setdefault(b - a, []).append((a, b))
    for length, group in by_length.items():
        for first in range(0, len(group), batch_size):
            part = group[first : first + batch_size]
            windows = np.stack([feature_window(features, a, b, context) for a, b in part])
            logits = model(torch.from_numpy(windows).to(device)).logits  # (B, L + 2c, C)
            probs = class_probabilities(logits[:, context : context + length]).cpu().numpy()
            for (a, b), row in zip(part, probs, strict=True):
                probabilities[a - start : b - start] = row
    model.train(was_training)
    return probabilities


def predict_session(
    model: ActionSegmentationModel,
    extractor: ActionSegmentationFeatureExtractor,
    session: Session,
    chunk_length: int = 1000,
) -> np.ndarray:
    """Class probabilities `(T, C)` for a session's raw features."""
    if extractor.feature_names and session.feature_names != extractor.feature_names:
        raise ValueError(
            f"session {session.session_id!r} has features {session.feature_names}, but the "
            f"model was trained on {extractor.feature_names}"
        )
    features = extractor.transform(session.features, session=session.session_id)
    return predict_features(model, features, extractor.context_frames, chunk_length)


def predictions_table(probabilities: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """One probability column per class (background included) and the arg-max `label`."""
    table = pd.DataFrame(probabilities, columns=list(class_names))
    table.index.name = "frame"
    table[LABEL_COLUMN] = np.asarray(class_names)[probabilities.argmax(axis=1)]
    return table


def load_model(
    model_dir: str | Path,
) -> tuple[ActionSegmentationModel, ActionSegmentationFeatureExtractor]:
    """A saved segmentation model and its feature pipeline."""
    model_dir = Path(model_dir)
    if not (model_dir / "preprocessor_config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir}: no preprocessor_config.json; expected a folder written by "
            "`neds-hf segment train` (for example OUTPUT/best or OUTPUT/final)"
        )
    model = ActionSegmentationModel.from_pretrained(model_dir).eval()
    return model, ActionSegmentationFeatureExtractor.from_pretrained(model_dir)


def write_predictions(
    model_dir: str | Path,
    data_dir: str | Path,
    output: str | Path,
    input_dir: str = "markers",
    sessions: Sequence[str] | None = None,
    file_format: str = "csv",
    likelihood_threshold: float | None = None,
    chunk_length: int = 1000,
) -> list[Path]:
    """Write `<session>_predictions.csv` (or `.parquet`) for every session; returns the paths."""
    if file_format not in PREDICTION_FORMATS:
        raise ValueError(f"format must be one of {PREDICTION_FORMATS}, got {file_format!r}")
    model, extractor = load_model(model_dir)
    config: ActionSegmentationConfig = model.config
    if likelihood_threshold is None:
        likelihood_threshold = extractor.likelihood_threshold
    loaded = load_sessions(data_dir, sessions, input_dir, likelihood_threshold, labels_dir=None)
    written = []
    with atomic_directory(output) as tmp:
        for session in loaded:
            table = predictions_table(
                predict_session(model, extractor, session, chunk_length), config.class_names
            )
            name = f"{session.session_id}_predictions.{file_format}"
            if file_format == "csv":
                table.to_csv(tmp / name)
            else:
                table.to_parquet(tmp / name)
            written.append(Path(output) / name)
    return written


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment predict``."""
    parser.add_argument("model", help="model folder (OUTPUT/best or OUTPUT/final of train)")
    parser.add_argument("--data-dir", required=True, help="folder with markers/ or features/")
    parser.add_argument("--output", required=True, help="folder for the prediction files")
    parser.add_argument("--input-dir", default="markers", choices=["markers", "features"])
    parser.add_argument("--sessions", nargs="*", default=None, help="default: every session")
    parser.add_argument("--format", default="csv", choices=PREDICTION_FORMATS)
    parser.add_argument(
        "--likelihood-threshold",
        type=float,
        default=None,
        help="default: the threshold the model was trained with",
    )
    parser.add_argument("--chunk-length", type=int, default=1000)
    return parser


def run_predict(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment predict``."""
    paths = write_predictions(
        args.model,
        args.data_dir,
        args.output,
        args.input_dir,
        args.sessions,
        args.format,
        args.likelihood_threshold,
        args.chunk_length,
    )
    print(f"wrote {len(paths)} prediction files to {args.output}")
    return 0


__all__ = [
    "LABEL_COLUMN",
    "PREDICTION_FORMATS",
    "add_predict_arguments",
    "class_probabilities",
    "load_model",
    "predict_features",
    "predict_session",
    "predictions_table",
    "run_predict",
    "write_predictions",
]
