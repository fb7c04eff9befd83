"""Shared by the training tests: a tiny model's arguments on the shared synthetic corpus."""

from __future__ import annotations

from pathlib import Path

from neds_hf.training import NedsTrainingArguments, TrainingResult

#: A model small enough to train a few steps in about a second.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=32,
    spike_stitcher_size=16,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=64,
    report_to="none",
    disable_progress_bar=True,
    logging_steps=1,
    num_threads=1,  # the same thread count in every run: resumed losses compare bit-close
)


def tiny_args(corpus: dict, output_dir: Path, **overrides) -> NedsTrainingArguments:
    """TINY arguments training on the corpus's pretraining sessions, with `overrides`."""
    values = dict(
        TINY,
        output_dir=str(output_dir),
        dataset=str(corpus["dataset_dir"]),
        sessions=list(corpus["pretrain_eids"]),
    )
    values.update(overrides)
    return NedsTrainingArguments(**values)


def train_losses(history: list[dict]) -> dict[int, float]:
    """``{step: training loss}`` from a run's history."""
    return {entry["step"]: entry["train/loss"] for entry in history if "train/loss" in entry}


def losses(result: TrainingResult) -> list[float]:
    """A run's logged training losses in step order."""
    return list(train_losses(result.history).values())
