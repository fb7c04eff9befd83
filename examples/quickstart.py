"""Quickstart: encode and decode with a trained NEDS model on a dataset's held-out trials.

Loads a model (a folder written by ``neds_hf.train`` / ``save_pretrained``, or a Hub id) and a
dataset (a folder written by ``neds-hf prepare-data``, or a Hub id), then, for every session of
the dataset that the model knows, runs the paper's two test-time protocols on the chosen split:

* **encoding**: predict the neural activity from the behaviour (every spike hidden, every
  behaviour shown), scored in bits per spike (mean over neurons, and pooled);
* **decoding**: predict the behaviour from the spikes (every behaviour hidden), scored in R²
  for wheel speed and whisker motion energy and balanced accuracy for choice and block.

It prints one block per session and the average over sessions, and with ``--output DIR``
writes ``evaluation.json`` and ``evaluation.md`` there.

    python examples/quickstart.py --model runs/synthetic_small/model --dataset data/synthetic
    python examples/quickstart.py --model ORG/neds-ibl --dataset ORG/neds-ibl-heldout \
        --output runs/quickstart

Sessions of the dataset that the model was not trained on are listed and skipped: fine-tune the
model on them first (``neds_hf.finetune``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

SPLITS = ("train", "validation", "test")
NORMALIZATION_METHODS = ("minmax", "zscore", "none")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the quickstart."""
    parser = argparse.ArgumentParser(
        description="Run NEDS encoding (behaviour -> spikes) and decoding (spikes -> behaviour) "
        "on a dataset split and print bits per spike, R² and balanced accuracy per session.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split (default test)")
    parser.add_argument(
        "--sessions",
        nargs="+",
        default=None,
        metavar="ID",
        help="evaluate only these sessions (default: every dataset session the model knows)",
    )
    parser.add_argument(
        "--normalization-method",
        default=None,
        choices=NORMALIZATION_METHODS,
        help="behaviour normalisation (default: the model's config.behavior_normalization, "
        "which training sets)",
    )
    parser.add_argument(
        "--per-behavior-encoding",
        action="store_true",
        help="also score encoding from each behaviour alone (bits per spike per behaviour)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="trials per forward pass")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--output", type=Path, default=None, help="write evaluation.json/.md here")
    return parser.parse_args(argv)


def format_score(value: float | None) -> str:
    """A score with 4 decimals, or n/a when it could not be computed."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def print_scores(scores: dict[str, float], behavior_modalities: list[dict], indent: str) -> None:
    """One line per metric: encoding bits per spike, then decoding per behaviour."""
    if "bps" in scores:
        print(
            f"{indent}bits per spike: {format_score(scores['bps'])} "
            f"(pooled {format_score(scores.get('bps_pooled'))})"
        )
    for name in [
        key[len("bps_") : -len("_only")]
        for key in scores
        if key.startswith("bps_") and key.endswith("_only")
    ]:
        print(
            f"{indent}bits per spike from {name} alone: {format_score(scores[f'bps_{name}_only'])}"
        )
    for spec in behavior_modalities:
        name = spec["name"]
        if spec["kind"] == "continuous" and f"{name}_r2" in scores:
            psth = scores.get(f"{name}_r2_psth")
            print(
                f"{indent}{name} R²: {format_score(scores[f'{name}_r2'])}"
                + (f" (PSTH R² {format_score(psth)})" if psth is not None else "")
            )
        elif spec["kind"] == "categorical" and f"{name}_balanced_accuracy" in scores:
            print(
                f"{indent}{name} balanced accuracy: "
                f"{format_score(scores[f'{name}_balanced_accuracy'])} "
                f"(accuracy {format_score(scores.get(f'{name}_accuracy'))})"
            )


def main(argv: list[str] | None = None) -> int:
    """Load, evaluate, print (and save); returns the exit code."""
    args = parse_args(argv)
    import torch

    from neds_hf import NedsForMaskedModeling
    from neds_hf.data import load_sessions
    from neds_hf.data.training_data import NedsTrialDataset
    from neds_hf.evaluation import evaluate_trials

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = NedsForMaskedModeling.from_pretrained(args.model).to(device)
    known = set(model.config.session_ids)
    dataset_sessions = [str(s) for s in load_sessions(args.dataset)["session_id"]]
    if args.sessions is not None:
        missing = [s for s in args.sessions if s not in dataset_sessions]
        if missing:
            print(
                f"error: sessions {missing} are not in the dataset {args.dataset}", file=sys.stderr
            )
            return 2
        dataset_sessions = list(args.sessions)
    sessions = [s for s in dataset_sessions if s in known]
    unknown = [s for s in dataset_sessions if s not in known]
    if unknown:
        print(
            f"skipping {len(unknown)} dataset session(s) the model was not trained on "
            f"(fine-tune it on them first): {', '.join(unknown)}"
        )
    if not sessions:
        print(
            f"error: the model {args.model} knows none of the sessions of {args.dataset}; "
            f"it knows {sorted(known)}",
            file=sys.stderr,
        )
        return 2

    method, source = (
        (args.normalization_method, "--normalization-method")
        if args.normalization_method
        else (model.config.behavior_normalization, "the model config")
    )
    trials = NedsTrialDataset(args.dataset, args.split, sessions=sessions)
    if len(trials) == 0:
        print(
            f"error: the {args.split} split of {args.dataset} has no trials for the selected "
            "sessions",
            file=sys.stderr,
        )
        return 2
    print(
        f"model {args.model}: {len(known)} session(s), "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, on {device}"
    )
    print(
        f"dataset {args.dataset}: {len(trials)} {args.split} trials of {len(sessions)} "
        f"session(s); behaviour normalisation {method} (from {source})"
    )

    report = evaluate_trials(
        model,
        (trials[i] for i in range(len(trials))),
        normalization=trials.normalization,
        per_behavior_encoding=args.per_behavior_encoding,
        normalization_method=method,
        batch_size=args.batch_size,
        split=args.split,
    )
    trial_counts = {s: len(indices) for s, indices in trials.session_indices().items()}
    behaviors = model.config.behavior_modalities
    for session_id, scores in report.per_session.items():
        print(
            f"\nsession {session_id} ({trial_counts[session_id]} trials, "
            f"{trials.n_neurons[session_id]} neurons)"
        )
        print_scores(scores, behaviors, indent="  ")
    print(f"\naverage over {len(report.per_session)} session(s)")
    print_scores(report.average, behaviors, indent="  ")
    print(
        f"  avg score (bits per spike, R², balanced accuracy): "
        f"{format_score(report.average.get('avg'))}"
    )
    if args.output is not None:
        json_path, markdown_path = report.save(args.output)
        print(f"\nwrote {json_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
