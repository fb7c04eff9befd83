"""Publishing NEDS models on the Hugging Face Hub: model cards, saving with a card, and pushing.

The card is a Jinja template (``templates/neds_model_card.md`` inside the package; the same file
as ``model_cards/neds_model_card.md`` in the source tree) filled from the model configuration, the
evaluation results (rendered as the card's ``model-index``), the datasets and the training
configuration. Pushing uploads a `save_pretrained` directory as it is, after checking that it
holds everything that ``AutoModelForMaskedLM.from_pretrained(repo_id, trust_remote_code=True)``
needs, so a broken repository is never published.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import httpx2
import torch
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants
from huggingface_hub.errors import OfflineModeIsEnabled
from transformers import PreTrainedModel

from .atomic import atomic_directory, atomic_write_bytes
from .configuration_neds import NedsConfig
from .modeling_neds import NedsForMaskedModeling

#: File name of the model card template (package copy: ``neds_hf/templates/``).
MODEL_CARD_TEMPLATE = "neds_model_card.md"
#: Files a pushed model directory must hold besides the weights.
REQUIRED_MODEL_FILES = ("config.json", "configuration_neds.py", "modeling_neds.py")
#: Optional side files written next to the card and read back when the card is re-rendered.
TRAINING_CONFIG_FILE = "training_config.yaml"
EVAL_RESULTS_FILE = "eval_results.json"
#: Keys of one evaluation result; the first six are required.
EVAL_RESULT_KEYS = (
    "task_type",
    "dataset_type",
    "dataset_name",
    "metric_type",
    "metric_value",
    "dataset_split",
    "task_name",
    "metric_name",
)
_REQUIRED_EVAL_RESULT_KEYS = EVAL_RESULT_KEYS[:5]
#: Default tags of every NEDS card.
CARD_TAGS = (
    "neuroscience",
    "neds",
    "ibl",
    "neuropixels",
    "electrophysiology",
    "spikes",
    "multimodal",
    "neural-encoding",
    "neural-decoding",
)
_CARD_MARKER = re.compile(r"<!-- neds_hf model card for (\S+) -->")
_IGNORED_UPLOAD_PATTERNS = ["__pycache__/*", "**/__pycache__/*", "*.pyc", ".DS_Store"]


def default_template_path() -> Path:
    """Path of the model card template shipped inside the package."""
    return Path(str(resources.files("neds_hf") / "templates" / MODEL_CARD_TEMPLATE))


# =============================================================================================
# Evaluation results
# =============================================================================================


def to_eval_results(eval_results: Sequence[Mapping[str, Any]]) -> list[EvalResult]:
    """Turn plain dicts into `huggingface_hub.EvalResult` objects (the card's ``model-index``).

    Each entry needs ``task_type``, ``dataset_type``, ``dataset_name``, ``metric_type`` and a
    finite numeric ``metric_value``; ``dataset_split``, ``task_name`` and ``metric_name`` are
    optional. Unknown keys are an error, so a misspelt field is never silently dropped.
    """
    if isinstance(eval_results, Mapping) or not isinstance(eval_results, Sequence):
        raise ValueError(f"eval_results must be a list of dicts, got {type(eval_results).__name__}")
    results: list[EvalResult] = []
    groups: dict[tuple[Any, ...], tuple[int, Mapping[str, Any]]] = {}
    seen_metrics: dict[tuple[Any, ...], int] = {}
    for position, entry in enumerate(eval_results):
        if not isinstance(entry, Mapping):
            raise ValueError(f"eval_results[{position}] must be a dict, got {entry!r}")
        missing = [key for key in _REQUIRED_EVAL_RESULT_KEYS if entry.get(key) in (None, "")]
        if missing:
            raise ValueError(f"eval_results[{position}] lacks required keys {missing}: {entry!r}")
        unknown = sorted(set(entry) - set(EVAL_RESULT_KEYS))
        if unknown:
            raise ValueError(
                f"eval_results[{position}] has unknown keys {unknown}; "
                f"known keys: {list(EVAL_RESULT_KEYS)}"
            )
        value = entry["metric_value"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(float(value))
        ):
            raise ValueError(
                f"eval_results[{position}].metric_value must be a finite number, got {value!r}"
            )
        # The model-index groups metrics by (task type, dataset, split) and keeps one task name
        # and one dataset name per group: refuse entries whose names would be dropped there.
        group = (entry["task_type"], entry["dataset_type"], entry.get("dataset_split"))
        first_position, first = groups.setdefault(group, (position, entry))
        for key in ("task_name", "dataset_name"):
            if entry.get(key) != first.get(key):
                raise ValueError(
                    f"eval_results[{position}] and eval_results[{first_position}] share task_type "
                    f"{group[0]!r}, dataset_type {group[1]!r} and split {group[2]!r} but differ "
                    f"in {key} ({entry.get(key)!r} vs {first.get(key)!r}); the model-index keeps "
                    "one per group, so give each task its own task_type"
                )
        metric = (*group, entry["metric_type"], entry.get("metric_name"))
        if metric in seen_metrics:
            raise ValueError(
                f"eval_results[{position}] repeats eval_results[{seen_metrics[metric]}] "
                f"(same task, dataset, split and metric {entry['metric_type']!r})"
            )
        seen_metrics[metric] = position
        results.append(
            EvalResult(
                task_type=str(entry["task_type"]),
                task_name=entry.get("task_name"),
                dataset_type=str(entry["dataset_type"]),
                dataset_name=str(entry["dataset_name"]),
                dataset_split=entry.get("dataset_split"),
                metric_type=str(entry["metric_type"]),
                metric_name=entry.get("metric_name"),
                metric_value=float(value),
            )
        )
    return results


def load_eval_results(source: str | Path) -> list[dict[str, Any]]:
    """Read evaluation results from a JSON file or a JSON string.

    Accepted shapes: a list of result dicts, or a dict with an ``eval_results`` list (the shape
    of ``eval_results.json`` written by :func:`save_model_with_card`).
    """
    text = str(source)
    path = Path(text)
    origin = "--eval-results"
    if not text.lstrip().startswith(("[", "{")):
        if not path.is_file():
            raise FileNotFoundError(f"eval results file not found: {path}")
        text, origin = path.read_text(encoding="utf-8"), str(path)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{origin}: not valid JSON ({error})") from error
    if isinstance(parsed, Mapping):
        if "eval_results" not in parsed:
            raise ValueError(f"{origin}: expected a list of results or {{'eval_results': [...]}}")
        parsed = parsed["eval_results"]
    to_eval_results(parsed)  # validate early, with positions in the message
    return list(parsed)


# =============================================================================================
# Card rendering
# =============================================================================================


def _plain(value: Any, where: str) -> Any:
    """Convert a training configuration into YAML-safe builtins (dataclasses, paths, tuples)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(items)]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    raise TypeError(
        f"training_config{where}: cannot write {type(value).__name__} {value!r} as YAML; "
        "use numbers, strings, lists and dicts"
    )


def _config_of(model_or_config: PreTrainedModel | NedsConfig) -> NedsConfig:
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, NedsConfig):
        raise TypeError(
            f"render_model_card needs a NEDS model or NedsConfig, got {type(config).__name__}"
        )
    return config


def _count_parameters(model_or_config: PreTrainedModel | NedsConfig, config: NedsConfig) -> int:
    """Number of parameters; for a bare config the model is built on the meta device (no memory)."""
    if isinstance(model_or_config, torch.nn.Module):
        return sum(parameter.numel() for parameter in model_or_config.parameters())
    with torch.device("meta"):
        skeleton = NedsForMaskedModeling(config)
    return sum(parameter.numel() for parameter in skeleton.parameters())


def is_hub_id(name: str | None) -> bool:
    """Whether a name is a Hub repo id (``org/name``) rather than a local path."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", name) is not None


def _mentions_synthetic(datasets: Sequence[str], training_config: Any) -> bool:
    text = " ".join(datasets) + " " + json.dumps(training_config or {}, default=str)
    return "synthetic" in text.lower()


def _card_modalities(config: NedsConfig) -> list[dict[str, Any]]:
    """Rows of the card's modalities table, read from the model config."""
    rows = []
    for spec in config.modalities:
        trial_level = spec["kind"] == "categorical" and spec["trial_level"]
        rows.append(
            {
                "name": spec["name"],
                "kind": spec["kind"] + (" (one label per trial)" if trial_level else ""),
                "classes": spec.get("num_classes", "") or "",
                "tokens": config.modality_num_tokens(spec),
            }
        )
    return rows


def _card_architecture(config: NedsConfig) -> list[tuple[str, Any]]:
    """Rows of the card's architecture table."""
    return [
        ("hidden size", config.hidden_size),
        ("transformer layers", config.num_hidden_layers),
        ("attention heads", config.num_attention_heads),
        ("MLP size", config.intermediate_size),
        ("time bins per trial", config.num_time_bins),
        ("tokens per trial", config.num_tokens),
        ("spike stitcher size", config.spike_stitcher_size),
        ("rotary positions", "yes" if config.use_rope else "no"),
        ("prompt token", "yes" if config.use_prompt else "no"),
        (
            "dropout (hidden / attention / embedding)",
            f"{config.hidden_dropout} / {config.attention_dropout} / {config.embedding_dropout}",
        ),
        ("masking schemes", ", ".join(config.default_masking_schemes)),
    ]


def _card_data(
    config: NedsConfig,
    model_name: str,
    datasets: Sequence[str],
    base_model: str | None,
    results: list[EvalResult],
    synthetic_data: bool,
) -> ModelCardData:
    """The card's metadata (YAML front matter); the Hub only takes repo ids as datasets /
    base model, so local paths stay in the card's text."""
    tags = list(CARD_TAGS) + (["mtm"] if not config.behavior_modalities else [])
    if synthetic_data:
        tags.append("synthetic-data")
    return ModelCardData(
        library_name="transformers",
        license="mit",
        pipeline_tag="feature-extraction",
        tags=tags,
        datasets=[d for d in datasets if is_hub_id(d)] or None,
        base_model=base_model if is_hub_id(base_model) else None,
        model_name=model_name,
        eval_results=results or None,
    )


def render_model_card(
    model_or_config: PreTrainedModel | NedsConfig,
    *,
    repo_id: str,
    eval_results: Sequence[Mapping[str, Any]] | None = None,
    datasets: Sequence[str] | None = None,
    training_config: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    template_path: str | Path | None = None,
    synthetic_data: bool | None = None,
) -> ModelCard:
    """Fill the NEDS model card template for a model (or its config).

    Args:
        model_or_config: a NEDS model (parameters are counted on it) or a `NedsConfig`.
        repo_id: Hub repository id the card describes (``org/name``); used in the code samples.
        eval_results: evaluation results as dicts (see :func:`to_eval_results`); they become the
            card's ``model-index`` and its evaluation table. Optional keys may be left out.
        datasets: Hub dataset ids the model was trained on.
        training_config: the training configuration, shown as YAML.
        base_model: the Hub id of the pretrained model this one was fine-tuned from.
        template_path: another Jinja template; defaults to the one shipped in the package.
        synthetic_data: whether the model was trained on synthetic data (adds a warning to the
            limitations); `None` infers it from the dataset ids and the training configuration.

    Returns:
        The card (``ModelCard.from_template``); its metadata has ``library_name:
        transformers``, ``license: mit``, tags, ``pipeline_tag``, ``datasets``, ``base_model``
        and ``model-index``. The modalities and sessions come from the model config.
    """
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string like 'org/name', got {repo_id!r}")
    config = _config_of(model_or_config)
    datasets = list(datasets or [])
    results = to_eval_results(eval_results) if eval_results else []
    plain_training_config = _plain(training_config, "") if training_config else None
    if synthetic_data is None:
        synthetic_data = _mentions_synthetic(datasets, plain_training_config)
    is_mtm = not config.behavior_modalities
    model_name = repo_id.rstrip("/").split("/")[-1]
    template_file = Path(template_path) if template_path is not None else default_template_path()
    if not template_file.is_file():
        raise FileNotFoundError(f"model card template not found: {template_file}")
    card = ModelCard.from_template(
        _card_data(config, model_name, datasets, base_model, results, synthetic_data),
        template_path=str(template_file),
        repo_id=repo_id,
        model_name=model_name,
        model_family="MtM (spike-only NEDS)"
        if is_mtm
        else "NEDS (Neural Encoding and Decoding at Scale)",
        is_mtm=is_mtm,
        base_model=base_model,
        base_model_is_hub_id=is_hub_id(base_model),
        datasets=[
            {"name": d, "url": f"https://huggingface.co/datasets/{d}" if is_hub_id(d) else None}
            for d in datasets
        ],
        num_parameters=_count_parameters(model_or_config, config),
        num_time_bins=config.num_time_bins,
        modalities=_card_modalities(config),
        sessions=list(config.sessions.items()),
        total_neurons=sum(config.sessions.values()),
        architecture=_card_architecture(config),
        training_config_yaml=(
            yaml.safe_dump(plain_training_config, sort_keys=False, default_flow_style=False)
            if plain_training_config
            else None
        ),
        eval_results=card_eval_results(eval_results),
        synthetic_data=synthetic_data,
    )
    return with_final_newline(card)


def card_eval_results(eval_results: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Evaluation entries for a card template with every key of :data:`EVAL_RESULT_KEYS`
    present (optional ones as None), so a template never meets a missing one."""
    return [{key: entry.get(key) for key in EVAL_RESULT_KEYS} for entry in eval_results or []]


def with_final_newline(card: ModelCard) -> ModelCard:
    """The card ending with a newline (jinja2 drops the template's final one)."""
    return ModelCard(card.content if card.content.endswith("\n") else card.content + "\n")


# =============================================================================================
# Saving and pushing
# =============================================================================================


def _side_files(
    training_config: Mapping[str, Any] | None, eval_results: Sequence[Mapping[str, Any]] | None
) -> dict[str, bytes]:
    """``training_config.yaml`` / ``eval_results.json`` contents (only those that are given)."""
    files = {}
    if training_config:
        files[TRAINING_CONFIG_FILE] = yaml.safe_dump(
            _plain(training_config, ""), sort_keys=False
        ).encode("utf-8")
    if eval_results:
        payload = {"eval_results": [dict(entry) for entry in eval_results]}
        files[EVAL_RESULTS_FILE] = (json.dumps(payload, indent=2) + "\n").encode("utf-8")
    return files


def save_model_with_card(
    model: PreTrainedModel, output_dir: str | Path, **card_kwargs: Any
) -> Path:
    """`save_pretrained` plus a rendered ``README.md`` card, ready for :func:`push_model_to_hub`.

    ``card_kwargs`` are those of :func:`render_model_card` (``repo_id`` is required). When given,
    the training configuration is also written as ``training_config.yaml`` and the evaluation
    results as ``eval_results.json``, so that a later push can re-render the card from them.
    The folder is built aside and swapped in whole (``neds_hf.atomic``): a failed save leaves
    the previous folder as it was, and no side file of an earlier save outlives this card.
    Returns the output directory.
    """
    if "repo_id" not in card_kwargs:
        raise TypeError("save_model_with_card needs repo_id=... for the model card")
    output_dir = Path(output_dir)
    card = render_model_card(model, **card_kwargs)  # render first: bad card input writes nothing
    side_files = _side_files(card_kwargs.get("training_config"), card_kwargs.get("eval_results"))
    with atomic_directory(output_dir) as staging:
        model.save_pretrained(staging)
        (staging / "README.md").write_text(card.content, encoding="utf-8")
        for name, data in side_files.items():
            (staging / name).write_bytes(data)
    return output_dir


def validate_model_dir(model_dir: str | Path) -> NedsConfig:
    """Check that a directory is a complete NEDS checkpoint for the Hub; returns its config.

    Needed: ``config.json`` with ``model_type: neds`` and an ``auto_map``, the weights as
    ``model.safetensors`` or as shards listed in ``model.safetensors.index.json`` (all present),
    and the remote-code files ``configuration_neds.py`` and ``modeling_neds.py``.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    for name in REQUIRED_MODEL_FILES:
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir}: missing required file {name!r} (a NEDS model directory needs "
                f"{list(REQUIRED_MODEL_FILES)} and model.safetensors; write it with "
                "save_pretrained / save_model_with_card)"
            )
    config_path = model_dir / "config.json"
    try:
        raw_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error})") from error
    if raw_config.get("model_type") != NedsConfig.model_type:
        raise ValueError(
            f"{config_path}: model_type must be {NedsConfig.model_type!r}, "
            f"got {raw_config.get('model_type')!r}"
        )
    if not raw_config.get("auto_map"):
        raise ValueError(
            f"{config_path}: no auto_map, so trust_remote_code loading from the Hub cannot work"
        )
    index_path = model_dir / "model.safetensors.index.json"
    if index_path.is_file():
        shards = sorted(
            set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values())
        )
        missing_shards = [shard for shard in shards if not (model_dir / shard).is_file()]
        if missing_shards:
            raise FileNotFoundError(
                f"{model_dir}: missing weight shard(s) {missing_shards} listed in {index_path.name}"
            )
    elif not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{model_dir}: missing required file 'model.safetensors' "
            "(or a sharded model.safetensors.index.json with its shards)"
        )
    return NedsConfig.from_pretrained(str(model_dir))


def _existing_card(model_dir: Path) -> ModelCard | None:
    readme = model_dir / "README.md"
    return ModelCard.load(readme) if readme.is_file() else None


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached (offline mode or no connection); nothing was uploaded."""


def _card_updates(
    model_dir: Path,
    config: NedsConfig,
    repo_id: str,
    eval_results: Sequence[Mapping[str, Any]] | None,
    datasets: Sequence[str] | None,
    training_config: Mapping[str, Any] | None,
    base_model: str | None,
) -> dict[str, bytes]:
    """Files of `model_dir` a push rewrites (``README.md``, ``eval_results.json``), rendered
    in memory; empty when the existing card is kept (see :func:`push_model_to_hub`)."""
    card = _existing_card(model_dir)
    marker = _CARD_MARKER.search(card.content) if card is not None else None
    rerender = (
        card is None
        or eval_results is not None
        or (marker is not None and marker.group(1) != repo_id)
    )
    if not rerender:
        return {}
    metadata = card.data.to_dict() if card is not None else {}
    if training_config is None and (model_dir / TRAINING_CONFIG_FILE).is_file():
        training_config = yaml.safe_load(
            (model_dir / TRAINING_CONFIG_FILE).read_text(encoding="utf-8")
        )
    updates = {}
    if eval_results is None and (model_dir / EVAL_RESULTS_FILE).is_file():
        eval_results = load_eval_results(model_dir / EVAL_RESULTS_FILE)
    elif eval_results is not None:
        updates.update(_side_files(None, eval_results))
    new_card = render_model_card(
        config,
        repo_id=repo_id,
        eval_results=eval_results,
        datasets=datasets if datasets is not None else metadata.get("datasets"),
        training_config=training_config,
        base_model=base_model if base_model is not None else metadata.get("base_model"),
    )
    updates["README.md"] = new_card.content.encode("utf-8")
    return updates


@contextlib.contextmanager
def _files_in_place(folder: Path, files: Mapping[str, bytes]) -> Iterator[None]:
    """Write `files` into `folder` (atomically, each) for the duration of the block; if the
    block fails, put back what was there before (or remove what was not)."""
    previous = {
        name: (folder / name).read_bytes() if (folder / name).is_file() else None for name in files
    }
    try:
        for name, data in files.items():
            atomic_write_bytes(folder / name, data)
        yield
    except BaseException:
        for name, data in previous.items():
            if data is None:
                (folder / name).unlink(missing_ok=True)
            else:
                atomic_write_bytes(folder / name, data)
        raise


def push_model_to_hub(
    model_dir: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload NEDS model",
    eval_results: Sequence[Mapping[str, Any]] | None = None,
    datasets: Sequence[str] | None = None,
    training_config: Mapping[str, Any] | None = None,
    base_model: str | None = None,
) -> Any:
    """Upload a saved NEDS model directory to a Hub model repository (created if needed).

    The directory is validated first (:func:`validate_model_dir`); nothing is sent when a file
    is missing. ``README.md`` is (re)rendered when it is missing, when ``eval_results`` are
    given, or when it is a NEDS card written for another repo id; a hand-written card is kept
    otherwise. Card inputs not passed here are taken from the existing card's metadata
    (datasets, base model) and from ``training_config.yaml`` / ``eval_results.json`` in the
    directory. The new card is rendered in memory and written into the folder only once the
    repository exists, right before the upload; a failed upload puts the previous files back,
    so a push that cannot happen leaves the folder unchanged. Raises
    :class:`HubUnreachableError` when the Hub cannot be reached (offline mode, no network).
    Returns the `CommitInfo` of the upload (``.commit_url``, ``.oid``).
    """
    model_dir = Path(model_dir)
    config = validate_model_dir(model_dir)
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    updates = _card_updates(
        model_dir, config, repo_id, eval_results, datasets, training_config, base_model
    )
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        with _files_in_place(model_dir, updates):
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=str(model_dir),
                repo_type="model",
                commit_message=commit_message,
                ignore_patterns=_IGNORED_UPLOAD_PATTERNS,
            )
    except (OfflineModeIsEnabled, httpx2.TransportError, ConnectionError) as error:
        raise HubUnreachableError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to push {model_dir} "
            f"to {repo_id} ({type(error).__name__}: {error}); nothing was uploaded and the "
            "folder is unchanged. Unset HF_HUB_OFFLINE, check the network, or set HF_ENDPOINT "
            "to a reachable Hub"
        ) from error


# =============================================================================================
# Command line: neds-hf push
# =============================================================================================


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``neds-hf push`` to a parser (sub-command or standalone)."""
    parser.description = (
        "Upload a saved NEDS model directory (config.json, model.safetensors, the remote-code "
        "files and a model card) to a Hugging Face Hub model repository. The directory is "
        "checked first; README.md is rendered when missing or when --eval-results is given. "
        "Set HF_ENDPOINT to use another Hub server."
    )
    parser.add_argument("model_dir", type=Path, help="directory written by save_pretrained")
    parser.add_argument("--repo-id", required=True, help="target repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument(
        "--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)"
    )
    parser.add_argument(
        "--commit-message", default="Upload NEDS model", help="message of the upload commit"
    )
    parser.add_argument(
        "--eval-results",
        default=None,
        help="evaluation results for the card's model-index: a JSON file or a JSON string, "
        "a list of {task_type, task_name, dataset_type, dataset_name, dataset_split, "
        "metric_type, metric_name, metric_value}",
    )
    return parser


def run_push(args: argparse.Namespace) -> int:
    """Run ``neds-hf push`` from parsed arguments; prints the commit URL.

    Returns 0; 2 (with the reason on stderr) when the folder or the arguments are invalid; 1
    when the Hub cannot be reached.
    """
    try:
        eval_results = load_eval_results(args.eval_results) if args.eval_results else None
        commit = push_model_to_hub(
            args.model_dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.commit_message,
            eval_results=eval_results,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HubUnreachableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed {args.model_dir} to {args.repo_id}: {getattr(commit, 'commit_url', commit)}")
    return 0


__all__ = [
    "CARD_TAGS",
    "EVAL_RESULT_KEYS",
    "MODEL_CARD_TEMPLATE",
    "REQUIRED_MODEL_FILES",
    "HubUnreachableError",
    "add_push_arguments",
    "card_eval_results",
    "default_template_path",
    "load_eval_results",
    "push_model_to_hub",
    "render_model_card",
    "run_push",
    "save_model_with_card",
    "to_eval_results",
    "validate_model_dir",
    "with_final_newline",
]
