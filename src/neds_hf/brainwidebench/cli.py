"""``neds-hf export-bwb``, ``export-bwb-gt`` and ``score-bwb``: arguments and entry points.

Each returns 0 on success and 2 with one ``neds-hf <command>: error: ...`` line when the
arguments, the data or the predictions are invalid (nothing is written then); ``score-bwb``
returns 1 when some prediction file could not be scored (listed, JSON still written).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..locking import OutputLockedError

__all__ = [
    "add_export_bwb_arguments",
    "add_export_bwb_gt_arguments",
    "add_score_bwb_arguments",
    "run_export_bwb",
    "run_export_bwb_gt",
    "run_score_bwb",
]

_SPLITS = ("train", "validation", "test")


def _error(command: str, error: BaseException) -> int:
    print(f"neds-hf {command}: error: {error}", file=sys.stderr)
    return 2


def add_export_bwb_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neds-hf export-bwb``."""
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="model folders or Hub ids, one per seed, in the order of --seeds",
    )
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id")
    parser.add_argument(
        "--output", required=True, help="predictions folder (files go under OUTPUT/LABEL/)"
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="benchmark seed of each model (default: the first EVAL_SEEDS, 43 44 ...)",
    )
    parser.add_argument(
        "--replicate-seeds",
        action="store_true",
        help="file ONE model under every seed (recorded as replicated_model in the metadata)",
    )
    parser.add_argument("--label", default=None, help="submission label (default: model folder)")
    parser.add_argument("--split", default="test", choices=_SPLITS)
    parser.add_argument(
        "--sessions", nargs="+", default=None, help="sessions (default: all the models know)"
    )
    parser.add_argument("--batch-size", type=int, default=64)


def run_export_bwb(args: argparse.Namespace) -> int:
    """Run ``neds-hf export-bwb`` and print what was written and what was left out."""
    from .predictions import export_predictions

    if args.batch_size < 1:
        return _error("export-bwb", ValueError(f"--batch-size must be >= 1, got {args.batch_size}"))
    try:
        summary = export_predictions(
            args.models,
            args.dataset,
            args.output,
            seeds=args.seeds,
            label=args.label,
            replicate_seeds=args.replicate_seeds,
            split=args.split,
            sessions=args.sessions,
            batch_size=args.batch_size,
        )
    except (ValueError, KeyError, ImportError, OutputLockedError) as error:
        return _error("export-bwb", error)
    print(
        f"wrote {summary.files} prediction files for label {summary.label!r}, seeds "
        f"{summary.seeds}, to {args.output}/{summary.label}"
    )
    _print_skips(summary.to_dict())
    return 0


def _print_skips(summary: dict) -> None:
    """The tasks left out and the entries skipped, one line each."""
    for task, reason in summary["skipped_tasks"].items():
        print(f"skipped task {task}: {reason}")
    for task, per_recording in summary["tasks"].items():
        if per_recording.get("skipped_units"):
            print(f"{task}: {per_recording['skipped_units']} unit(s) without a Cosmos label")
            continue
        for recording_id, counts in per_recording.items():
            if not isinstance(counts, dict):
                continue
            if counts.get("skipped_trials") or counts.get("masked_samples"):
                print(
                    f"{task} {recording_id}: {counts.get('skipped_trials', 0)} trial(s) skipped, "
                    f"{counts.get('masked_samples', 0)} sample(s) masked (invalid values)"
                )


def add_export_bwb_gt_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neds-hf export-bwb-gt``."""
    parser.add_argument("--dataset", required=True, help="dataset folder or Hub id")
    parser.add_argument("--output", required=True, help="ground-truth folder (replaced)")
    parser.add_argument("--split", default="test", choices=_SPLITS)
    parser.add_argument(
        "--sessions",
        nargs="+",
        default=None,
        help="sessions (default: every dataset session; TS3 pools the units of these, so "
        "use the sessions the predictions cover)",
    )


def run_export_bwb_gt(args: argparse.Namespace) -> int:
    """Run ``neds-hf export-bwb-gt``."""
    from .ground_truth import write_ground_truth

    try:
        summary = write_ground_truth(args.dataset, args.output, args.split, args.sessions)
    except (ValueError, KeyError, ImportError, OutputLockedError) as error:
        return _error("export-bwb-gt", error)
    print(f"wrote the ground truth of {len(summary['tasks'])} task(s) to {args.output}")
    _print_skips(summary)
    return 0


def add_score_bwb_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neds-hf score-bwb``."""
    parser.add_argument("--pred", required=True, help="predictions folder (export-bwb --output)")
    parser.add_argument("--gt", required=True, help="ground-truth folder")
    parser.add_argument("--output", default=None, help="JSON file for every score")


def run_score_bwb(args: argparse.Namespace) -> int:
    """Run ``neds-hf score-bwb``: print the table, write the JSON."""
    from ..atomic import atomic_write_text
    from .scoring import score_predictions

    try:
        scores = score_predictions(args.pred, args.gt)
    except (ValueError, ImportError) as error:
        return _error("score-bwb", error)
    print(scores.to_markdown())
    if args.output:
        atomic_write_text(args.output, json.dumps(scores.to_dict(), indent=2) + "\n")
        print(f"wrote {args.output}")
    return 1 if scores.unscored else 0
