"""Model cards of segmentation models (Hub metadata with a model-index of macro F1 etc.)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, ModelCard, ModelCardData

from ..hub import card_eval_results, to_eval_results, with_final_newline
from .feature_extraction_segmentation import ActionSegmentationFeatureExtractor
from .modeling_segmentation import ActionSegmentationModel

TEMPLATE = "segmentation_model_card.md"
CARD_TAGS = ("neuroscience", "behavior", "action-segmentation", "pose-estimation")
#: metrics of the model-index: (key in the score dicts, metric type, metric name)
CARD_METRICS = (
    ("macro_f1", "f1", "macro F1"),
    ("accuracy", "accuracy", "accuracy"),
    ("edit", "edit_score", "edit score"),
    ("f1@50", "f1", "F1@50"),
)


def eval_results_for_card(
    scores: Mapping[str, Any], dataset_name: str, split: str
) -> list[dict[str, Any]]:
    """Model-index entries from averaged scores (metrics that are None are left out)."""
    entries = []
    for key, metric_type, metric_name in CARD_METRICS:
        if scores.get(key) is not None:
            entries.append(
                {
                    "task_type": "action-segmentation",
                    "task_name": "Action segmentation",
                    "dataset_type": "pose-markers",
                    "dataset_name": dataset_name,
                    "dataset_split": split,
                    "metric_type": metric_type,
                    "metric_name": metric_name,
                    "metric_value": float(scores[key]),
                }
            )
    return entries


def render_segmentation_card(
    model: ActionSegmentationModel,
    extractor: ActionSegmentationFeatureExtractor,
    repo_id: str,
    eval_results: Sequence[Mapping[str, Any]] = (),
    training_config: Mapping[str, Any] | None = None,
    synthetic_data: bool = False,
) -> ModelCard:
    """Fill the segmentation card template for a model and its feature pipeline."""
    config = model.config
    tags = list(CARD_TAGS) + (["synthetic-data"] if synthetic_data else [])
    card_data = ModelCardData(
        library_name="transformers",
        license="mit",
        pipeline_tag="token-classification",
        tags=tags,
        model_name=repo_id.rstrip("/").split("/")[-1],
        eval_results=to_eval_results(eval_results) if eval_results else None,
    )
    template_text = (resources.files("neds_hf") / "templates" / TEMPLATE).read_text()
    card = ModelCard.from_template(
        card_data,
        template_str=template_text,
        repo_id=repo_id,
        model_name=card_data.model_name,
        class_names=config.class_names,
        head=config.head,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_lags=config.num_lags,
        context_frames=config.context_frames,
        num_parameters=sum(p.numel() for p in model.parameters()),
        feature_names=extractor.feature_names,
        use_velocity=extractor.use_velocity,
        normalization=extractor.normalization,
        synthetic_data=synthetic_data,
        eval_results=card_eval_results(eval_results),
        training_config_yaml=yaml.safe_dump(dict(training_config), sort_keys=False)
        if training_config
        else None,
    )
    return with_final_newline(card)


def push_segmentation_model(
    model_dir: str | Path, repo_id: str, token: str | None = None, private: bool = False
) -> Any:
    """Upload a saved segmentation model folder (weights, code, pipeline, card) to the Hub.

    The card is re-rendered for `repo_id` from the folder's `validation_scores.json` and
    `training_args.yaml` (model-index with macro F1); nothing is sent when a file is missing.
    """
    from .inference import load_model

    model_dir = Path(model_dir)
    needed = ("config.json", "model.safetensors", "preprocessor_config.json")
    for name in (*needed, "validation_scores.json", "training_args.yaml"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir}: {name} is missing; nothing was uploaded")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    model, extractor = load_model(model_dir)
    scores = json.loads((model_dir / "validation_scores.json").read_text())
    training = yaml.safe_load((model_dir / "training_args.yaml").read_text())
    card = render_segmentation_card(
        model,
        extractor,
        repo_id,
        eval_results_for_card(scores, Path(str(training.get("data_dir"))).name, "validation"),
        training,
        synthetic_data="synthetic" in str(training.get("data_dir")),
    )
    card.save(model_dir / "README.md")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), repo_type="model")


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``neds-hf segment push``."""
    parser.add_argument("model", help="model folder (OUTPUT/best or OUTPUT/final of train)")
    parser.add_argument("repo_id", help="Hub model repository, org/name")
    parser.add_argument("--private", action="store_true")
    return parser


def run_push(args: argparse.Namespace) -> int:
    """Run ``neds-hf segment push``."""
    info = push_segmentation_model(args.model, args.repo_id, private=args.private)
    print(f"uploaded {args.model} to {args.repo_id}: {getattr(info, 'commit_url', info)}")
    return 0


__all__ = [
    "add_push_arguments",
    "eval_results_for_card",
    "push_segmentation_model",
    "render_segmentation_card",
    "run_push",
]
