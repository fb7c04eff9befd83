"""The ``neds-hf`` command line: one subcommand per step of the NEDS workflow.

Subcommands import their modules lazily so that ``neds-hf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module, add-arguments function, run function, help text)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "make-synthetic": (
        "neds_hf.data.synthetic.cli",
        "add_make_synthetic_arguments",
        "run_make_synthetic",
        "Write synthetic IBL-like sessions in the ALF layout plus a ONE cache and "
        "their ground truth (true rates, latents).",
    ),
    "prepare-data": (
        "neds_hf.data.cli_prepare",
        "add_prepare_data_arguments",
        "run_prepare_data",
        "Load IBL sessions through ONE (online or a local cache), preprocess them and "
        "write the Hugging Face dataset with its card and build_report.json.",
    ),
    "evaluate": (
        "neds_hf.evaluation",
        "add_evaluate_arguments",
        "run_evaluate",
        "Evaluate a model on a dataset split: encoding bits per spike, decoding R² and "
        "balanced accuracy, optional per-behaviour encoding and region probe.",
    ),
    "export-bwb": (
        "neds_hf.brainwidebench.cli",
        "add_export_bwb_arguments",
        "run_export_bwb",
        "Write BrainWideBench predictions (TS1 behaviours, TS2 co-smoothing and forecasting, "
        "TS3 Cosmos region) of one model per benchmark seed with the benchmark's writer.",
    ),
    "export-bwb-gt": (
        "neds_hf.brainwidebench.cli",
        "add_export_bwb_gt_arguments",
        "run_export_bwb_gt",
        "Write a dataset's BrainWideBench ground truth (gt/<task_id>/<recording_id>/).",
    ),
    "score-bwb": (
        "neds_hf.brainwidebench.cli",
        "add_score_bwb_arguments",
        "run_score_bwb",
        "Score BrainWideBench predictions with the benchmark's scorers and aggregation.",
    ),
    "push": (
        "neds_hf.hub",
        "add_push_arguments",
        "run_push",
        "Upload a trained model folder (weights, config, remote code, model card) to the Hub.",
    ),
    "demo": (
        "neds_hf.demo",
        "add_demo_arguments",
        "run_demo_cli",
        "Run the whole pipeline on a synthetic corpus (no internet, no GPU): data, "
        "pretraining, fine-tuning, evaluation against the true rates and baselines, report.",
    ),
}

#: subcommands that hand their arguments to the training argument parser
TRAINING_COMMANDS = {
    "train": (
        "pretrain",
        "Pretrain NEDS (or train from scratch) with Accelerate: "
        "`neds-hf train --config CONFIG.yaml [--field value ...]`.",
    ),
    "finetune": (
        "finetune",
        "Fine-tune a pretrained NEDS on new sessions: `neds-hf finetune "
        "--config CONFIG.yaml --model_name_or_path DIR_OR_HUB_ID ...`.",
    ),
}


SEGMENT_HELP = (
    "Action segmentation of behaviour videos (per-frame classes from pose): "
    "make-synthetic | prepare | train | predict | evaluate | demo."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neds-hf`` console script.

    Ctrl-C ends any subcommand with one line and exit code 130 (the shell convention for
    SIGINT); outputs are written atomically, so nothing half-written is left behind.
    """
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        print("neds-hf: interrupted; no partial output was kept", file=sys.stderr)
        return 130


def _dispatch(argv: list[str]) -> int:
    """Run the subcommand named by `argv[0]` with the rest of `argv`."""
    if argv and argv[0] == "segment":
        from .segmentation.cli import main as segment_main

        return segment_main(argv[1:])
    if argv and argv[0] in TRAINING_COMMANDS:
        from .training import main as training_main

        mode, _ = TRAINING_COMMANDS[argv[0]]
        return training_main(argv[1:], mode=mode)
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="neds-hf")
        # list the subcommands without importing their modules
        lines = [
            f"  {name:<15} {text[1] if isinstance(text, tuple) and len(text) == 2 else text[3]}"
            for name, text in {**TRAINING_COMMANDS, **COMMANDS}.items()
        ]
        lines.append(f"  {'segment':<15} {SEGMENT_HELP}")
        message = "usage: neds-hf COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + "\n"
        if not argv or argv[0] in ("-h", "--help"):
            print(message)
            return 0
        parser.exit(2, f"neds-hf: unknown command {argv[0]!r}\n\n{message}")
    module_name, add_arguments, run, help_text = COMMANDS[argv[0]]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"neds-hf {argv[0]}", description=help_text, allow_abbrev=False
    )
    getattr(module, add_arguments)(parser)
    args = parser.parse_args(argv[1:])
    return int(getattr(module, run)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
