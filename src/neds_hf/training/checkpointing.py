"""Checkpoints of a training run: what identifies a run, where to resume, and safe save/load.

A checkpoint folder ``checkpoint-<step>`` holds

* ``model.safetensors``: the weights (safetensors: no code can run when it is read);
* ``optimizer.pt``: the optimizer state (tensors and plain numbers; read with
  ``torch.load(weights_only=True)``);
* ``scheduler.json`` and ``rng_state_<rank>.json`` (one per process): the learning-rate
  schedule and the Python, NumPy and torch random states, as JSON;
* ``trainer_state.json``: step, epoch, position in the epoch, best score, history and the
  run's fingerprint.

Nothing is unpickled on resume, so a checkpoint file replaced by a hostile pickle gives an
error naming the file, never code execution (accelerate's ``load_state`` reads registered
objects with ``weights_only=False``, which is why it is not used here). Folders are built in a
hidden sibling and swapped in whole (:mod:`neds_hf.atomic`); old checkpoints are renamed aside
before they are deleted, so a visible ``checkpoint-<step>`` is always complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_json, replace_directory
from ..configuration_neds import NedsConfig
from .arguments import NedsTrainingArguments

__all__ = [
    "CHECKPOINT_PREFIX",
    "OPTIMIZER_FILE",
    "SCHEDULER_FILE",
    "TRAINER_STATE_FILE",
    "WEIGHTS_FILE",
    "CheckpointLoadError",
    "check_resume_compatible",
    "list_checkpoints",
    "load_checkpoint",
    "remove_directory",
    "resolve_checkpoint",
    "run_fingerprint",
    "save_checkpoint",
]

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
RNG_STATE_FILE = "rng_state_{rank}.json"

#: Arguments that make a run what it is; a resume must match them exactly.
FINGERPRINT_FIELDS = (
    "dataset",
    "mode",
    "sessions",
    "model_name_or_path",
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "warmup_ratio",
    "batch_sampling",
    "seed",
    "mask_ratio",
    "masking_schemes",
    "normalization_method",
    "freeze_encoder",
    "freeze_warmup_steps",
)


class CheckpointLoadError(ValueError):
    """A checkpoint file is missing, damaged, or holds something other than plain state."""


def run_fingerprint(
    args: NedsTrainingArguments, config: NedsConfig, num_processes: int
) -> dict[str, Any]:
    """The settings that make a run what it is; a resume must match them exactly."""
    fingerprint = {key: getattr(args, key) for key in FINGERPRINT_FIELDS}
    fingerprint["num_processes"] = num_processes
    if args.streaming:  # absent otherwise, so in-memory checkpoints keep their fingerprint
        fingerprint["streaming"] = {"shuffle_buffer_size": args.shuffle_buffer_size}
    if args.dataset_config != "trials":  # absent for trials, as in earlier checkpoints
        fingerprint["dataset_config"] = args.dataset_config
    # present only when set, so checkpoints of runs that predate them keep their fingerprint
    if args.loss_weights is not None:
        fingerprint["loss_weights"] = list(args.loss_weights)
    if args.best_model_metric != "score":
        fingerprint["best_model_metric"] = args.best_model_metric
    if args.session_learning_rate_scale != 1.0:
        fingerprint["session_learning_rate_scale"] = args.session_learning_rate_scale
    fingerprint["model_config_sha"] = _config_digest(config)
    return fingerprint


def _config_digest(config: NedsConfig) -> str:
    """A short hash of the model configuration (without version fields)."""
    relevant = {
        k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "dtype")
    }
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The complete ``checkpoint-<step>`` folders of a run, oldest first."""
    found = [
        p
        for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_checkpoint(args: NedsTrainingArguments) -> Path | None:
    """The checkpoint folder to resume from, or None."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(Path(args.output_dir))
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint=latest: no {CHECKPOINT_PREFIX}* in {args.output_dir}"
            )
        return found[-1]
    path = Path(args.resume_from_checkpoint)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a neds_hf checkpoint (no {TRAINER_STATE_FILE})")
    return path


def _read_json(path: Path) -> Any:
    """A checkpoint's JSON file, or a CheckpointLoadError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointLoadError(f"checkpoint file {path} is missing") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointLoadError(
            f"checkpoint file {path} is not valid JSON (damaged or replaced?): {error}"
        ) from None


def check_resume_compatible(checkpoint: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Load a checkpoint's trainer state, raising if it belongs to another run or config."""
    state = _read_json(checkpoint / TRAINER_STATE_FILE)
    saved = state.get("fingerprint", {})
    if saved.get("model_config_sha") != fingerprint["model_config_sha"]:
        raise ValueError(
            f"checkpoint {checkpoint} was written by a model with another configuration "
            "(architecture, modalities or sessions differ); resume it with the config it was "
            "trained with"
        )
    differing = {k: (saved.get(k), v) for k, v in fingerprint.items() if saved.get(k) != v}
    if differing:
        details = "; ".join(
            f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items()
        )
        raise ValueError(f"checkpoint {checkpoint} belongs to another run: {details}")
    return state


# =============================================================================================
# Random states as JSON
# =============================================================================================


def _rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and CUDA) random states as JSON values."""
    version, internal, gauss = random.getstate()
    # the legacy global NumPy state is what libraries draw from: it is saved, not replaced
    kind, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: Mapping[str, Any], path: Path) -> None:
    """Restore what :func:`_rng_state` saved; a malformed file is an error naming it."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, position, has_gauss, cached = state["numpy"]
        numpy_state = (kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached)
        np.random.set_state(numpy_state)  # noqa: NPY002
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]]
            )
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointLoadError(
            f"checkpoint file {path} holds no valid random state: {error}"
        ) from None


# =============================================================================================
# Save and load
# =============================================================================================


def remove_directory(path: Path) -> None:
    """Delete a folder by first renaming it to a hidden sibling: it never looks half-deleted."""
    trash = path.parent / f".{path.name}.trash-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    output_dir: Path,
    trainer_state: Mapping[str, Any],
    save_total_limit: int,
) -> Path:
    """Write ``checkpoint-<global_step>`` atomically on every process, then rotate old ones.

    All processes write their random state into one staging folder (a shared filesystem, as
    with any multi-process checkpoint); the main process writes the rest and swaps it in.
    Keeps the newest `save_total_limit` checkpoints (0 keeps all).
    """
    final = output_dir / f"{CHECKPOINT_PREFIX}{trainer_state['global_step']}"
    staging = output_dir / f".{final.name}.tmp"
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    rng_file = staging / RNG_STATE_FILE.format(rank=accelerator.process_index)
    atomic_write_json(rng_file, _rng_state())
    if accelerator.is_main_process:
        from safetensors.torch import save_model

        save_model(accelerator.unwrap_model(model), str(staging / WEIGHTS_FILE))
        torch.save(optimizer.state_dict(), staging / OPTIMIZER_FILE)
        atomic_write_json(staging / SCHEDULER_FILE, scheduler.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(staging / TRAINER_STATE_FILE, dict(trainer_state), default=float)
        replace_directory(staging, final)
        checkpoints = list_checkpoints(output_dir)
        for old in checkpoints[:-save_total_limit] if save_total_limit > 0 else []:
            remove_directory(old)
    accelerator.wait_for_everyone()
    return final


def _load_torch_state(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain values only, never code."""
    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint file {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to read it is the file's fault here
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointLoadError(
            f"checkpoint file {path} could not be loaded safely: it is damaged or holds more "
            f"than tensors and plain values, and is not unpickled ({first_line})"
        ) from None


def load_checkpoint(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    checkpoint: Path,
) -> None:
    """Restore weights, optimizer, schedule and this process's random state from `checkpoint`.

    Raises :class:`CheckpointLoadError` naming the file when one is missing or not plain data.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    weights = checkpoint / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointLoadError(f"checkpoint file {weights} is missing")
    try:
        load_model(accelerator.unwrap_model(model), str(weights))
    except (SafetensorError, RuntimeError, OSError) as error:
        raise CheckpointLoadError(
            f"checkpoint file {weights} is not a valid safetensors file for this model: {error}"
        ) from None
    optimizer.load_state_dict(_load_torch_state(checkpoint / OPTIMIZER_FILE))
    scheduler.load_state_dict(_read_json(checkpoint / SCHEDULER_FILE))
    rng_file = checkpoint / RNG_STATE_FILE.format(rank=accelerator.process_index)
    _set_rng_state(_read_json(rng_file), rng_file)
