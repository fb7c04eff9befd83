"""The command-line entry of training (``neds-hf train|finetune``, ``python -m neds_hf.train``).

Parses the arguments, trains, pushes the model folder to the Hub when ``--push_to_hub`` is
set (training itself never uploads), and ends with one line saying which step's weights were
saved. A bad argument, dataset or checkpoint raises an error whose message names it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from .arguments import NedsTrainingArguments, parse_training_args
from .loop import TrainingResult, train

__all__ = ["final_message", "main", "push_trained_model"]


def push_trained_model(args: NedsTrainingArguments, result: TrainingResult) -> Any:
    """Upload the run's final model folder to ``args.hub_model_id`` (main process only).

    Returns the commit info, or None on other processes / when there is no model folder.
    """
    if not result.model_dir:
        return None
    from ..hub import push_model_to_hub

    return push_model_to_hub(
        result.model_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private
    )


def final_message(result: TrainingResult) -> str:
    """The closing line: where the model is and which step's weights it holds."""
    if result.best_step is not None and result.model_step == result.best_step:
        criterion = (
            f"validation loss {-result.best_score:.4f}"
            if result.best_model_metric == "loss"
            else f"validation score {result.best_score:.4f}"
        )
        which = f"the best validation step {result.best_step} of {result.global_step} ({criterion})"
    else:
        which = f"the last step {result.global_step} (no validation score selected a best step)"
    return f"model written to {result.model_dir}: weights of {which}"


def main(argv: Sequence[str] | None = None, mode: str | None = None) -> int:
    """Entry point of ``python -m neds_hf.train`` / ``neds-hf train``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_training_args(argv, mode=mode)
    result = train(args)
    if args.push_to_hub and push_trained_model(args, result) is not None:
        print(f"pushed {result.model_dir} to {args.hub_model_id}")
    if result.model_dir:
        print(final_message(result))
    return 0
