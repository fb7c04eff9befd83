"""Training of action segmentation models with Accelerate (YAML + command line, resumable).

Rules, each in one place:

* loss: class-weighted cross-entropy on labelled frames only (weights ``max(count) / count``
  over the training frames, background 0), see :mod:`modeling_segmentation`;
* chunks: every training chunk carries the model's context frames on both sides, exactly like
  inference windows (:mod:`windows`); the session tail is a shorter chunk, never dropped;
* validation: whole sessions (``validation: sessions``) or, per session, a final block of
  frames separated from the training frames by a gap of at least the context
  (``validation: blocks``); never interleaved chunks;
* checkpoints: ``OUTPUT/checkpoints/epoch-N`` (Accelerate state, loaded with
  ``weights_only``) for exact resume at an epoch boundary; ``OUTPUT/best`` (highest validation
  macro F1, the later epoch on ties: small validation sets saturate early) and ``OUTPUT/final``
  are complete model folders with feature pipeline and card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from ..atomic import atomic_directory, atomic_write_json
from ..locking import OutputLock
from .card import eval_results_for_card, render_segmentation_card
from .configuration_segmentation import SEGMENTATION_HEADS, ActionSegmentationConfig
from .feature_extraction_segmentation import (
    FEATURE_NORMALIZATIONS,
    ActionSegmentationFeatureExtractor,
)
from .inference import predict_features
from .metrics import frame_scores
from .modeling_segmentation import IGNORE_INDEX, ActionSegmentationModel
from .readers import Session, load_sessions
from .windows import Chunk, chunk_bounds, feature_window, label_window, pad_batch

logger = logging.getLogger(__name__)

VALIDATION_MODES = ("sessions", "blocks")
WEAK_LABEL_MODES = ("none", "pseudo")
CHECKPOINT_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
TRAINING_ARGS_FILE = "training_args.yaml"
#: Arguments that may change when a run is resumed.
_RESUMABLE = {"num_epochs", "resume_from_checkpoint", "report_to", "disable_progress_bar"}


@dataclass
class SegmentationTrainingArguments:
    """Everything a segmentation training run needs (YAML keys = command-line flags)."""

    data_dir: str | None = field(
        default=None, metadata={"help": "Folder with markers/ (or features/) and labels/."}
    )
    output_dir: str = field(default="segmentation_model", metadata={"help": "Output folder."})
    input_dir: str = field(default="markers", metadata={"help": "markers or features."})
    likelihood_threshold: float | None = field(
        default=None, metadata={"help": "Marker positions below it are interpolated."}
    )
    train_sessions: list[str] | None = field(
        default=None,
        metadata={"help": "Sessions to train on (default: split.json 'train', else all)."},
    )
    validation: str = field(default="sessions", metadata={"help": "sessions or blocks."})
    validation_sessions: list[str] | None = field(
        default=None, metadata={"help": "Validation sessions (validation=sessions)."}
    )
    validation_fraction: float = field(
        default=0.25, metadata={"help": "Share of sessions / of each session's frames."}
    )
    block_gap: int = field(
        default=100, metadata={"help": "Frames between training and validation blocks."}
    )
    head: str = field(default="dtcn", metadata={"help": f"One of {SEGMENTATION_HEADS}."})
    hidden_size: int = 32
    num_layers: int = 2
    num_lags: int = 4
    dropout: float = 0.1
    # Off: on the same corpus and seeds (bench_action_segmentation.py --experiment weight_norm,
    # 5 seeds) held-out macro F1 0.961 -> 0.941, edit 77.8 -> 66.2 (edit lower on every seed; one
    # seed fell to 0.853), train CPU 9.7 -> 10.2 s; it is not what separates neds_hf from
    # lightning-action there.
    weight_norm: bool = field(
        default=False, metadata={"help": "Weight-normalise the dtcn head's convolutions."}
    )
    use_velocity: bool = field(default=True, metadata={"help": "Append velocity features."})
    normalization: str = field(default="zscore", metadata={"help": "zscore or none."})
    chunk_length: int = field(default=500, metadata={"help": "Frames per training chunk."})
    # 4 rather than 8: twice the optimizer steps per epoch; on the synthetic corpus (4 training
    # sessions of 12,000 frames, 5 seeds, 40 epochs) held-out macro F1 0.955 -> 0.961 and edit
    # 71.9 -> 77.8 (benchmarks/README.md, action segmentation).
    batch_size: int = field(default=4, metadata={"help": "Training chunks per optimizer step."})
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    num_epochs: int = 40
    seed: int = 0
    weak_labels: str = field(default="none", metadata={"help": "none or pseudo."})
    pseudo_label_threshold: float = 0.9
    weak_label_weight: float = field(default=1.0, metadata={"help": "Weight after annealing."})
    anneal_start_epoch: int = 5
    anneal_end_epoch: int = 15
    next_step_weight: float = field(default=0.0, metadata={"help": "Next-frame loss weight."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Epoch checkpoints kept."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder."}
    )
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard or none."})
    disable_progress_bar: bool = False

    def __post_init__(self) -> None:
        checks = (
            ("validation", self.validation, VALIDATION_MODES),
            ("weak_labels", self.weak_labels, WEAK_LABEL_MODES),
            ("head", self.head, SEGMENTATION_HEADS),
            ("normalization", self.normalization, FEATURE_NORMALIZATIONS),
            ("report_to", self.report_to, ("tensorboard", "none")),
        )
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"--{name} must be one of {allowed}, got {value!r}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"--validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )
        if self.anneal_end_epoch < self.anneal_start_epoch:
            raise ValueError("--anneal_end_epoch must be >= --anneal_start_epoch")

    def weak_weight(self, epoch: int) -> float:
        """Weak-label weight at `epoch`: 0 before the start, linear ramp, full after the end."""
        if self.weak_labels == "none" or epoch < self.anneal_start_epoch:
            return 0.0
        span = max(self.anneal_end_epoch - self.anneal_start_epoch, 1)
        return self.weak_label_weight * min(1.0, (epoch - self.anneal_start_epoch + 1) / span)


def parse_segmentation_args(argv: Sequence[str] | None = None) -> SegmentationTrainingArguments:
    """Parse ``--config YAML`` plus command-line overrides (no abbreviations)."""
    from transformers import HfArgumentParser

    from ..training.arguments import config_file_defaults

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(
        SegmentationTrainingArguments, prog="neds-hf segment train", allow_abbrev=False
    )
    parser.add_argument("--config", default=None, help="YAML file with any of the fields below.")
    parser.set_defaults(
        **config_file_defaults(argv, SegmentationTrainingArguments, "neds-hf segment train")
    )
    args, _ = parser.parse_args_into_dataclasses(args=argv)
    return args


# =============================================================================================
# Data: sessions, splits, chunks
# =============================================================================================


@dataclass
class TrainingData:
    """Transformed sessions and the chunks of frames to train and validate on."""

    sessions: list[Session]
    features: list[np.ndarray]
    train_chunks: list[Chunk]
    validation_parts: list[Chunk]
    class_weights: list[float]


def _training_session_ids(args: SegmentationTrainingArguments) -> list[str] | None:
    if args.train_sessions:
        return list(args.train_sessions)
    split = Path(args.data_dir) / "split.json"
    return json.loads(split.read_text())["train"] if split.is_file() else None


def split_frames(
    args: SegmentationTrainingArguments, sessions: Sequence[Session], context: int
) -> tuple[list[Chunk], list[Chunk]]:
    """Training and validation stretches `(session, start, stop)` per the validation mode."""
    labelled = [i for i, s in enumerate(sessions) if s.labels is not None and s.labels.any()]
    if not labelled:
        raise ValueError(f"{args.data_dir}: no training session has labelled frames")
    if args.validation == "blocks":
        if args.block_gap < context:
            raise ValueError(
                f"--block_gap ({args.block_gap}) must be at least the model's context "
                f"({context} frames) so no training window reads a validation frame"
            )
        train, validation = [], []
        for i in labelled:
            num_frames = sessions[i].num_frames
            cut = int(num_frames * (1 - args.validation_fraction))
            if cut - args.block_gap <= 0:
                raise ValueError(
                    f"session {sessions[i].session_id!r} ({num_frames} frames) is too short "
                    f"for a validation block with a gap of {args.block_gap} frames"
                )
            train.append(Chunk(i, 0, cut - args.block_gap))
            validation.append(Chunk(i, cut, num_frames))
        return train, validation
    ids = [s.session_id for s in sessions]
    if args.validation_sessions:
        unknown = sorted(set(args.validation_sessions) - set(ids))
        if unknown:
            raise ValueError(f"--validation_sessions {unknown} are not training sessions {ids}")
        chosen = {ids.index(v) for v in args.validation_sessions}
    else:
        if len(labelled) < 2:
            raise ValueError(
                "validation by sessions needs at least 2 labelled sessions; use "
                "--validation blocks for a single session"
            )
        count = max(1, round(args.validation_fraction * len(labelled)))
        rng = np.random.default_rng(args.seed)
        chosen = {int(i) for i in rng.choice(labelled, size=count, replace=False)}
    train = [Chunk(i, 0, sessions[i].num_frames) for i in labelled if i not in chosen]
    validation = [Chunk(i, 0, sessions[i].num_frames) for i in sorted(chosen)]
    if not train:
        raise ValueError("no labelled training session is left after choosing validation")
    return train, validation


def class_weights(labels: Sequence[np.ndarray], num_classes: int) -> list[float]:
    """``max(count) / count`` per class over labelled frames; 0 for background and absent ones."""
    counts = np.bincount(np.concatenate(labels), minlength=num_classes).astype(float)
    counts[0] = 0.0
    weights = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
    return weights.tolist()


def build_training_data(
    args: SegmentationTrainingArguments, extractor: ActionSegmentationFeatureExtractor
) -> TrainingData:
    """Read, transform and split the sessions; chunk the training stretches."""
    sessions = load_sessions(
        args.data_dir, _training_session_ids(args), args.input_dir, args.likelihood_threshold
    )
    for session in sessions:
        if any(session.report.values()):
            logger.info("session %s: %s", session.session_id, session.report)
    extractor.feature_names = list(sessions[0].feature_names)
    features = [extractor.transform(s.features, session=s.session_id) for s in sessions]
    train, validation = split_frames(args, sessions, extractor.context_frames)
    chunks = [
        Chunk(part.session, a, b)
        for part in train
        for a, b in chunk_bounds(part.start, part.stop, args.chunk_length)
    ]
    class_names = next(s.class_names for s in sessions if s.class_names is not None)
    weights = class_weights(
        [sessions[c.session].labels[c.start : c.stop] for c in train], len(class_names)
    )
    if not any(sessions[v.session].labels[v.start : v.stop].any() for v in validation):
        raise ValueError("the validation frames have no labels; choose other sessions")
    return TrainingData(sessions, features, chunks, validation, weights)


def collate_chunks(data: TrainingData, chunks: Sequence[Chunk], context: int) -> dict[str, Any]:
    """A padded batch: features `(B, L, D)`, labels `(B, L)`, frame_mask `(B, L)`."""
    features = [feature_window(data.features[c.session], c.start, c.stop, context) for c in chunks]
    labels = [
        label_window(data.sessions[c.session].labels, c.start, c.stop, context) for c in chunks
    ]
    masks = [np.ones(len(f), dtype=bool) for f in features]
    return {
        "features": torch.from_numpy(pad_batch(features, 0.0)),
        "labels": torch.from_numpy(pad_batch(labels, IGNORE_INDEX)),
        "frame_mask": torch.from_numpy(pad_batch(masks, False)),
    }


def validate(model: ActionSegmentationModel, data: TrainingData, context: int) -> dict[str, Any]:
    """Macro F1 and accuracy over the labelled validation frames (pooled)."""
    truths, predictions = [], []
    for part in data.validation_parts:
        probabilities = predict_features(
            model, data.features[part.session], context, start=part.start, stop=part.stop
        )
        truths.append(data.sessions[part.session].labels[part.start : part.stop])
        predictions.append(probabilities.argmax(axis=1))
    scores = frame_scores(
        np.concatenate(truths), np.concatenate(predictions), model.config.num_labels_total
    )
    return {"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"]}


# =============================================================================================
# Checkpoints and model folders
# =============================================================================================


def fingerprint(args: SegmentationTrainingArguments) -> str:
    """Digest of the arguments a resumed run must share with the original one."""
    relevant = {k: v for k, v in dataclasses.asdict(args).items() if k not in _RESUMABLE}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Epoch checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [p for p in folder.glob("epoch-*") if (p / TRAINER_STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_checkpoint(args: SegmentationTrainingArguments) -> Path | None:
    """The checkpoint to resume from (checked against this run's arguments), or None."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(args.output_dir)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: none in {args.output_dir}")
        path = found[-1]
    else:
        path = Path(args.resume_from_checkpoint)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a segmentation checkpoint (no {TRAINER_STATE_FILE})"
        )
    saved = json.loads((path / TRAINER_STATE_FILE).read_text())["fingerprint"]
    if saved != fingerprint(args):
        raise ValueError(
            f"checkpoint {path} was written with other arguments (only {sorted(_RESUMABLE)} may "
            "change when resuming)"
        )
    return path


def save_model_folder(
    path: Path,
    model: ActionSegmentationModel,
    extractor: ActionSegmentationFeatureExtractor,
    args: SegmentationTrainingArguments,
    scores: dict[str, Any],
) -> None:
    """Write a complete model folder atomically: weights, code, pipeline, scores, card."""
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        plain_args = {k: v for k, v in dataclasses.asdict(args).items() if v is not None}
        (tmp / TRAINING_ARGS_FILE).write_text(yaml.safe_dump(plain_args, sort_keys=False))
        atomic_write_json(tmp / "validation_scores.json", scores, indent=2)
        card = render_segmentation_card(
            model,
            extractor,
            repo_id=f"local/{Path(args.output_dir).name}-{path.name}",
            eval_results=eval_results_for_card(scores, Path(str(args.data_dir)).name, "validation"),
            training_config=plain_args,
            synthetic_data=(Path(str(args.data_dir)) / "labels-true").is_dir(),
        )
        card.save(tmp / "README.md")


def _save_checkpoint(accelerator: Any, args: SegmentationTrainingArguments, state: dict) -> None:
    folder = Path(args.output_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_directory(folder / f"epoch-{state['epoch']}") as tmp:
        accelerator.save_state(str(tmp))
        atomic_write_json(tmp / TRAINER_STATE_FILE, {**state, "fingerprint": fingerprint(args)})
    for old in list_checkpoints(args.output_dir)[: -max(args.keep_checkpoints, 1)]:
        shutil.rmtree(old)


# =============================================================================================
# The training loop
# =============================================================================================


def build_model(
    args: SegmentationTrainingArguments, extractor: ActionSegmentationFeatureExtractor, data: Any
) -> ActionSegmentationModel:
    """A fresh model sized for the data, with the training class weights in its config."""
    class_names = next(s.class_names for s in data.sessions if s.class_names is not None)
    config = ActionSegmentationConfig(
        num_features=extractor.num_model_features,
        class_names=class_names,
        head=args.head,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_lags=args.num_lags,
        dropout=args.dropout,
        weight_norm=args.weight_norm,
        class_weights=data.class_weights,
        next_step_weight=args.next_step_weight,
    )
    return ActionSegmentationModel(config)


def _train_epoch(
    args: SegmentationTrainingArguments,
    accelerator: Any,
    model: Any,
    optimizer: torch.optim.Optimizer,
    data: Any,
    context: int,
    epoch: int,
    progress: Any,
) -> list[float]:
    """One epoch over this rank's share of the training chunks (a seeded order per epoch, so
    resume is exact); returns the batch losses."""
    model.train()
    rank, world = accelerator.process_index, accelerator.num_processes
    generator = torch.Generator().manual_seed(args.seed + epoch)
    order = torch.randperm(len(data.train_chunks), generator=generator).tolist()[rank::world]
    losses = []
    for first in range(0, len(order), args.batch_size):
        chunks = [data.train_chunks[i] for i in order[first : first + args.batch_size]]
        batch = {
            k: v.to(accelerator.device) for k, v in collate_chunks(data, chunks, context).items()
        }
        outputs = model(
            **batch,
            weak_label_weight=args.weak_weight(epoch),
            pseudo_label_threshold=args.pseudo_label_threshold
            if args.weak_labels == "pseudo"
            else None,
        )
        accelerator.backward(outputs.loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(outputs.loss.item())
        progress.update(1)
    return losses


def _end_epoch(
    args: SegmentationTrainingArguments,
    accelerator: Any,
    model: Any,
    extractor: ActionSegmentationFeatureExtractor,
    data: Any,
    state: dict[str, Any],
    epoch: int,
    losses: list[float],
    progress: Any,
) -> None:
    """Validate, log, keep `best` (validation macro F1, the later epoch on ties) and write the
    epoch checkpoint; updates `state` in place."""
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    scores = (
        validate(unwrapped, data, extractor.context_frames) if accelerator.is_main_process else {}
    )
    record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **scores}
    state["history"].append(record)
    accelerator.log(
        {
            "train/loss": record["train_loss"],
            **{f"val/{k}": v for k, v in scores.items() if v is not None},
        },
        step=epoch + 1,
    )
    progress.set_postfix(loss=record["train_loss"], val_macro_f1=scores.get("macro_f1"))
    best = state["best_macro_f1"]
    if (
        accelerator.is_main_process
        and scores.get("macro_f1") is not None
        and (best is None or scores["macro_f1"] >= best)
    ):
        state["best_macro_f1"], state["best_epoch"] = scores["macro_f1"], epoch + 1
        save_model_folder(output_dir / "best", unwrapped, extractor, args, record)
    state["epoch"] = epoch + 1
    accelerator.wait_for_everyone()
    _save_checkpoint(accelerator, args, state)


def train_segmentation(args: SegmentationTrainingArguments) -> dict[str, Any]:
    """Train, validate every epoch, keep `best` and `final`; returns the run summary."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if args.data_dir is None:
        raise ValueError("--data_dir is required")
    output_dir = Path(args.output_dir)
    checkpoint = resolve_checkpoint(args)
    accelerator = Accelerator(
        log_with=None if args.report_to == "none" else args.report_to, project_dir=str(output_dir)
    )
    set_seed(args.seed)
    probe = ActionSegmentationConfig(
        head=args.head, num_layers=args.num_layers, num_lags=args.num_lags
    )
    extractor = ActionSegmentationFeatureExtractor(
        use_velocity=args.use_velocity,
        normalization=args.normalization,
        context_frames=probe.context_frames,
        likelihood_threshold=args.likelihood_threshold,
    )
    data = build_training_data(args, extractor)
    model = build_model(args, extractor, data)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    state: dict[str, Any] = {"epoch": 0, "best_macro_f1": None, "best_epoch": None, "history": []}
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint), load_kwargs={"weights_only": True})
        state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
        state.pop("fingerprint")
    if args.report_to != "none":
        accelerator.init_trackers("segmentation")
    context = extractor.context_frames
    rank, world = accelerator.process_index, accelerator.num_processes
    batches_per_epoch = -(-len(data.train_chunks[rank::world]) // args.batch_size)
    progress = tqdm(
        total=args.num_epochs * batches_per_epoch,
        initial=state["epoch"] * batches_per_epoch,
        desc="segment train",
        disable=args.disable_progress_bar or not accelerator.is_main_process,
    )
    with OutputLock(output_dir, "segmentation training"):
        for epoch in range(state["epoch"], args.num_epochs):
            losses = _train_epoch(
                args, accelerator, model, optimizer, data, context, epoch, progress
            )
            _end_epoch(args, accelerator, model, extractor, data, state, epoch, losses, progress)
        progress.close()
        final_record = state["history"][-1] if state["history"] else {}
        if accelerator.is_main_process:
            save_model_folder(
                output_dir / "final", accelerator.unwrap_model(model), extractor, args, final_record
            )
            atomic_write_json(output_dir / "training_history.json", state, indent=2)
    accelerator.end_training()
    return state


def main(argv: Sequence[str] | None = None) -> int:
    """``neds-hf segment train``: parse arguments and train."""
    args = parse_segmentation_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state = train_segmentation(args)
    print(
        f"best validation macro F1 {state['best_macro_f1']} at epoch {state['best_epoch']}; "
        f"models in {args.output_dir}/best and {args.output_dir}/final"
    )
    return 0


__all__ = [
    "SegmentationTrainingArguments",
    "TrainingData",
    "build_training_data",
    "class_weights",
    "collate_chunks",
    "list_checkpoints",
    "main",
    "parse_segmentation_args",
    "split_frames",
    "train_segmentation",
    "validate",
]
