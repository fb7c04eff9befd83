"""``neds-hf segment ...``: the action segmentation subcommands.

Subcommands import their modules lazily so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

_PACKAGE = "neds_hf.segmentation"

#: subcommand -> (module, add-arguments function, run function, help text)
SEGMENT_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "make-synthetic": (
        "synthetic",
        "add_make_synthetic_arguments",
        "run_make_synthetic",
        "Write a synthetic pose corpus with known action segments (markers/, labels/, "
        "labels-true/, split.json).",
    ),
    "prepare": (
        "dataset",
        "add_prepare_arguments",
        "run_prepare",
        "Build a Hugging Face dataset (one row per session, splits by session, card) from a "
        "markers/ or features/ + labels/ folder.",
    ),
    "prepare-ibl": (
        "ibl",
        "add_prepare_ibl_arguments",
        "run_prepare_ibl",
        "Write features/ (paw and nose pose + wheel velocity at the camera times) of IBL "
        "sessions read through ONE; --truth-labels adds labels of a synthetic corpus.",
    ),
    "predict": (
        "inference",
        "add_predict_arguments",
        "run_predict",
        "Write <session>_predictions.csv (or .parquet) for every frame of every session.",
    ),
    "evaluate": (
        "evaluation",
        "add_evaluate_arguments",
        "run_evaluate",
        "Score prediction files against label files: macro F1, accuracy, edit, F1@k per "
        "session and averaged (printed; JSON and Markdown with --output).",
    ),
    "push": (
        "card",
        "add_push_arguments",
        "run_push",
        "Upload a trained model folder to the Hub with its card (model-index: macro F1, "
        "accuracy, edit, F1@50 on validation).",
    ),
    "add-to-neds": (
        "neds_link",
        "add_add_to_neds_arguments",
        "run_add_to_neds",
        "Write a new NEDS dataset with the per-frame actions of prediction files binned to "
        "its trials as a per-bin categorical modality (train NEDS on it with --modalities).",
    ),
    "demo": (
        "demo",
        "add_demo_arguments",
        "run_demo_cli",
        "Run the whole workflow offline on a synthetic corpus and write a report with a "
        "score table and an ethogram.",
    ),
}
TRAIN_HELP = (
    "Train a segmentation model with Accelerate: `neds-hf segment train --config CONFIG.yaml "
    "[--data_dir DIR --output_dir OUT --field value ...]` (see --help for every field)."
)


def _usage() -> str:
    lines = [f"  {'train':<15} {TRAIN_HELP}"]
    lines += [f"  {name:<15} {spec[3]}" for name, spec in SEGMENT_COMMANDS.items()]
    return "usage: neds-hf segment COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """Dispatch ``neds-hf segment COMMAND ...``."""
    argv = list(argv)
    if argv and argv[0] == "train":
        from .training import main as train_main

        return train_main(argv[1:])
    if not argv or argv[0] not in SEGMENT_COMMANDS:
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage())
            return 0
        argparse.ArgumentParser(prog="neds-hf segment").exit(
            2, f"neds-hf segment: unknown command {argv[0]!r}\n\n{_usage()}"
        )
    module_name, add_arguments, run, help_text = SEGMENT_COMMANDS[argv[0]]
    module = importlib.import_module(f"{_PACKAGE}.{module_name}")
    parser = argparse.ArgumentParser(
        prog=f"neds-hf segment {argv[0]}", description=help_text, allow_abbrev=False
    )
    getattr(module, add_arguments)(parser)
    return int(getattr(module, run)(parser.parse_args(argv[1:])) or 0)


__all__ = ["SEGMENT_COMMANDS", "main"]
