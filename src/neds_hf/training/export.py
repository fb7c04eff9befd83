"""The final model folder of a run: the selected weights with their card, written atomically.

``<output_dir>/model`` holds the best validation step's weights when a best model was selected
(``<output_dir>/best``), else the last step's; its card carries the validation scores of those
weights and the training configuration with secrets left out. The folder is built in a hidden
sibling and swapped in only when complete, so a failure never leaves a half-written model
where a good one was. Uploading it is a separate step (:func:`neds_hf.hub.push_model_to_hub`,
called by the command-line entry point).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_directory
from ..modeling_neds import NedsForMaskedModeling
from .arguments import ARCHITECTURE_FIELDS, SECRET_FIELDS, NedsTrainingArguments, redacted_arguments

__all__ = ["MODEL_DIR_NAME", "training_config_for_card", "write_final_model"]

MODEL_DIR_NAME = "model"


def training_config_for_card(
    args: NedsTrainingArguments, state: Mapping[str, Any], model_step: int, seconds: float
) -> dict[str, Any]:
    """The training configuration written with the model (``training_config.yaml``, card).

    Secrets are left out; a fine-tuned model's architecture is its base model's, so the unused
    architecture arguments are left out too.
    """
    skipped = set(SECRET_FIELDS) | (set(ARCHITECTURE_FIELDS) if args.model_name_or_path else set())
    config = {k: v for k, v in redacted_arguments(args).items() if k not in skipped}
    config.update(
        global_step=state["global_step"],
        model_step=model_step,
        best_step=state["best_step"],
        best_validation_score=state["best_score"],
        training_seconds=round(seconds, 1),
    )
    return config


def write_final_model(
    model: NedsForMaskedModeling,
    args: NedsTrainingArguments,
    state: Mapping[str, Any],
    *,
    model_step: int,
    seconds: float,
    eval_trials: Sequence[Mapping[str, Any]],
    normalization: Mapping[str, Any],
) -> str:
    """Evaluate the selected weights on the validation trials and write ``model/`` with its card.

    Also writes the validation report (``evaluation.json``) into the output folder. Returns the
    model folder.
    """
    from ..evaluation import evaluate_trials, report_to_eval_results
    from ..hub import save_model_with_card

    output_dir = Path(args.output_dir)
    best = output_dir / "best"
    use_best = state["best_step"] is not None and best.is_dir()
    final_model = NedsForMaskedModeling.from_pretrained(best) if use_best else model
    report = evaluate_trials(
        final_model,
        eval_trials,
        normalization=normalization,
        batch_size=args.per_device_eval_batch_size,
        split="validation",
    )
    report.save(output_dir)
    model_dir = output_dir / MODEL_DIR_NAME
    with atomic_directory(model_dir) as staging:
        save_model_with_card(
            final_model,
            staging,
            repo_id=args.hub_model_id or f"local/{output_dir.name}",
            training_config=training_config_for_card(args, state, model_step, seconds),
            datasets=[str(args.dataset)],
            base_model=args.model_name_or_path,
            eval_results=report_to_eval_results(report, str(args.dataset)),
        )
    return str(model_dir)
