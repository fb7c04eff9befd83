"""Pretraining and fine-tuning of NEDS with Accelerate: one code path for 1 CPU process, several
CPU processes (gloo) and many GPUs or nodes.

Launch with ``accelerate launch -m neds_hf.train --config CONFIG.yaml`` (or ``neds-hf train``);
every field of :class:`NedsTrainingArguments` can be set in the YAML file and overridden on the
command line. Checkpoints are written atomically every `save_steps` optimizer steps and a run
resumes exactly (same loss curve) from any of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .collator import DataCollatorForNedsMasking
from .configuration_neds import IBL_MODALITIES, NedsConfig
from .modeling_neds import NedsForMaskedModeling, is_session_parameter

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
FREEZE_MODES = ("none", "warmup", "all")
SAMPLING_MODES = ("mixed", "single_session")
MODES = ("pretrain", "finetune")
KNOWN_MODALITIES = {spec["name"]: spec for spec in IBL_MODALITIES}
#: Arguments that only shape a new model (a pretrained one brings its own).
ARCHITECTURE_FIELDS = (
    "modalities",
    "spike_only",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "spike_stitcher_size",
    "hidden_dropout",
    "attention_dropout",
    "embedding_dropout",
)


@dataclass
class NedsTrainingArguments:
    """Everything a NEDS training run needs; YAML keys and command-line flags share these names."""

    # ---- run and data
    output_dir: str | None = field(
        default=None, metadata={"help": "Where checkpoints, logs and the model go."}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Dataset folder or Hub id (built by prepare-data)."}
    )
    mode: str = field(
        default="pretrain",
        metadata={"help": "pretrain (new model) or finetune (from model_name_or_path)."},
    )
    sessions: list[str] | None = field(
        default=None, metadata={"help": "Sessions to train on (default: all)."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow an output_dir that holds checkpoints."}
    )
    # ---- model
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained model folder or Hub id."}
    )
    modalities: list[str] | None = field(
        default=None, metadata={"help": "Modalities to model (default: the five IBL ones)."}
    )
    spike_only: bool = field(default=False, metadata={"help": "The spike-only MtM configuration."})
    hidden_size: int = 256
    num_hidden_layers: int = 5
    num_attention_heads: int = 8
    intermediate_size: int = 512
    spike_stitcher_size: int = 512
    hidden_dropout: float = 0.4
    attention_dropout: float = 0.4
    embedding_dropout: float = 0.2
    mask_ratio: float = 0.3
    masking_schemes: list[str] | None = field(
        default=None, metadata={"help": "name=probability pairs, e.g. neural=1 cross_modal=2."}
    )
    normalization_method: str | None = field(
        default=None,
        metadata={"help": "zscore, minmax or none (default: zscore, or the pretrained model's)."},
    )
    # ---- fine-tuning
    freeze_encoder: str = field(
        default="none", metadata={"help": "none, warmup (for freeze_warmup_steps) or all."}
    )
    freeze_warmup_steps: int = 0
    init_baseline_rates: bool = field(
        default=True,
        metadata={"help": "Start new sessions' readouts at each neuron's mean training rate."},
    )
    keep_pretrained_sessions: bool = field(
        default=False,
        metadata={"help": "Keep the pretraining sessions' parameters when fine-tuning."},
    )
    # ---- optimisation
    learning_rate: float = 2e-4
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    num_train_epochs: int = 10
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps; overrides num_train_epochs when > 0."}
    )
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = field(
        default=0.15, metadata={"help": "Share of the one-cycle schedule spent warming up."}
    )
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Gradient clipping norm (0 = off)."}
    )
    mixed_precision: str | None = field(
        default=None, metadata={"help": "no or bf16 (default: what the launcher says)."}
    )
    batch_sampling: str = field(
        default="mixed", metadata={"help": "mixed or single_session batches."}
    )
    seed: int = 42
    num_workers: int = 0
    # ---- evaluation, checkpoints, logging
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N steps (0 = every epoch)."}
    )
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N steps (0 = every epoch)."}
    )
    save_total_limit: int = 2
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after N evaluations without improvement (0 = off)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest'."}
    )
    logging_steps: int = 10
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard or none."})
    disable_progress_bar: bool = False
    # ---- Hub
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = None
    hub_private: bool = False

    def validate(self) -> None:
        """Raise a ValueError naming every invalid field before anything runs."""
        errors = []
        if not self.output_dir:
            errors.append("output_dir is required")
        if not self.dataset:
            errors.append("dataset is required")
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("freeze_encoder", self.freeze_encoder, FREEZE_MODES),
            ("batch_sampling", self.batch_sampling, SAMPLING_MODES),
            ("report_to", self.report_to, ("tensorboard", "none")),
            ("normalization_method", self.normalization_method, (None, "minmax", "zscore", "none")),
        ):
            if value not in allowed:
                errors.append(f"{name} must be one of {list(allowed)}, got {value!r}")
        if self.mixed_precision not in (None, "no", "bf16"):
            errors.append(
                "mixed_precision must be 'no' or 'bf16' on this code path, got "
                f"{self.mixed_precision!r}"
            )
        if self.mode == "finetune" and not self.model_name_or_path:
            errors.append("mode=finetune needs model_name_or_path (a pretrained folder or Hub id)")
        if self.freeze_encoder != "none" and not self.model_name_or_path:
            errors.append("freeze_encoder needs a pretrained encoder (model_name_or_path)")
        if self.freeze_encoder == "warmup" and self.freeze_warmup_steps <= 0:
            errors.append("freeze_encoder=warmup needs freeze_warmup_steps > 0")
        if self.modalities is not None:
            unknown = [m for m in self.modalities if m not in KNOWN_MODALITIES]
            if unknown:
                errors.append(
                    f"unknown modalities {unknown}; the dataset provides {list(KNOWN_MODALITIES)}"
                )
            elif "spikes" not in self.modalities:
                errors.append("modalities must include 'spikes'")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "num_train_epochs",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.warmup_ratio < 1:
            errors.append(f"warmup_ratio must be in (0, 1), got {self.warmup_ratio}")
        try:
            self.scheme_probabilities()
        except ValueError as error:
            errors.append(str(error))
        if self.push_to_hub and not self.hub_model_id:
            errors.append("push_to_hub needs hub_model_id (ORG/NAME)")
        if errors:
            raise ValueError("Invalid training arguments: " + "; ".join(errors))

    def scheme_probabilities(self) -> dict[str, float] | None:
        """`masking_schemes` as ``{name: probability}`` (None: the config's default)."""
        if self.masking_schemes is None:
            return None
        parsed = {}
        for entry in self.masking_schemes:
            name, _, value = str(entry).partition("=")
            try:
                parsed[name.strip()] = float(value) if value else 1.0
            except ValueError:
                raise ValueError(
                    f"masking_schemes entry {entry!r} is not name=probability"
                ) from None
        return parsed


@dataclass
class TrainingResult:
    """What a finished run reports (per process)."""

    output_dir: str
    model_dir: str | None
    global_step: int
    epochs_completed: int
    best_score: float | None
    best_step: int | None
    samples_seen: int
    global_batch_size: int
    num_processes: int
    stopped_early: bool
    history: list[dict[str, float]]
    model: NedsForMaskedModeling | None = field(default=None, repr=False)  # this process's copy


# =============================================================================================
# Argument parsing
# =============================================================================================


def parse_training_args(
    argv: Sequence[str] | None = None, mode: str | None = None
) -> NedsTrainingArguments:
    """Parse ``--config YAML`` plus command-line overrides into :class:`NedsTrainingArguments`."""
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(NedsTrainingArguments)
    parser.add_argument(
        "--config", type=str, default=None, help="YAML file with any of the fields below."
    )
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path")
        config_path = Path(argv[position + 1])
        if not config_path.is_file():
            raise FileNotFoundError(f"training config {config_path} does not exist")
        values = yaml.safe_load(config_path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config_path}: expected a mapping of argument names to values")
        known = {f.name for f in dataclasses.fields(NedsTrainingArguments)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{config_path}: unknown keys {unknown}; see `neds-hf train --help`")
        parser.set_defaults(**values)
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    args, extra = parsed[0], parsed[-1]
    if extra:
        raise ValueError(f"unrecognised arguments: {extra}")
    if mode is not None:
        args.mode = mode
    return args


# =============================================================================================
# Helpers
# =============================================================================================


def build_config(args: NedsTrainingArguments, sessions: Mapping[str, int]) -> NedsConfig:
    """A fresh model configuration for a pretraining run."""
    sizes = dict(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size,
        spike_stitcher_size=args.spike_stitcher_size,
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        embedding_dropout=args.embedding_dropout,
        mask_ratio=args.mask_ratio,
        masking_schemes=args.scheme_probabilities(),
        behavior_normalization=args.normalization_method or NedsConfig.behavior_normalization,
    )
    if args.spike_only:
        return NedsConfig.for_mtm(dict(sessions), **sizes)
    names = args.modalities or list(KNOWN_MODALITIES)
    modalities = [dict(KNOWN_MODALITIES[name]) for name in KNOWN_MODALITIES if name in names]
    return NedsConfig(modalities=modalities, sessions=dict(sessions), **sizes)


def mean_counts_per_bin(trials: Any, session_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Each neuron's mean spike count per bin over a trial dataset, ``{session_id: (N,)}``."""
    means = {}
    indices = trials.session_indices()
    for session_id in session_ids:
        rows = indices[session_id]
        if len(rows) == 0:
            raise ValueError(f"session {session_id} has no training trials")
        spikes = [np.asarray(trials[int(i)]["spikes"], dtype=np.float64) for i in rows]  # (N, T)
        means[session_id] = np.mean([trial.mean(-1) for trial in spikes], axis=0)  # (N,)
    return means


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decoupled weight decay on weight matrices only.

    No decay on biases, norms, embeddings (incl. the mask token) and the per-session neuron
    tables (per-neuron embeddings), so that sessions absent from a batch never move. Encoder
    parameters are in their own groups (``"encoder": True``) so that they can be frozen.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        no_decay = (
            parameter.ndim < 2
            or id(parameter) in embedding_ids
            or is_session_parameter(name)
            or "norm" in name
        )
        encoder = ".layers." in f".{name}" or "final_norm" in name
        groups.setdefault((no_decay, encoder), []).append(parameter)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "encoder": encoder}
        for (no_decay, encoder), params in groups.items()
    ]


def run_fingerprint(
    args: NedsTrainingArguments, config: NedsConfig, num_processes: int
) -> dict[str, Any]:
    """The settings that make a run what it is; a resume must match them exactly."""
    keys = (
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
    fingerprint = {key: getattr(args, key) for key in keys}
    fingerprint["num_processes"] = num_processes
    fingerprint["model_config_sha"] = _config_digest(config)
    return fingerprint


def _config_digest(config: NedsConfig) -> str:
    relevant = {
        k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "dtype")
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [
        p
        for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def resolve_checkpoint(args: NedsTrainingArguments) -> Path | None:
    """The checkpoint folder to resume from, or None."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = _checkpoints(Path(args.output_dir))
        if not found:
            raise FileNotFoundError(
                f"resume_from_checkpoint=latest: no {CHECKPOINT_PREFIX}* in {args.output_dir}"
            )
        return found[-1]
    path = Path(args.resume_from_checkpoint)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a neds_hf checkpoint (no {TRAINER_STATE_FILE})")
    return path


def check_resume_compatible(checkpoint: Path, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """Load a checkpoint's trainer state, raising if it belongs to another run or config."""
    state = json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
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


class _SeededMasking:
    """Collate function whose masks are a pure function of (seed, epoch, rank, the batch's trials).

    Deterministic whatever the worker layout, and a resumed run draws exactly the masks the
    uninterrupted run would have drawn.
    """

    def __init__(self, collator: DataCollatorForNedsMasking, seed: int, rank: int):
        self.collator, self.seed, self.rank, self.epoch = collator, seed, rank, 0

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        key = ",".join(f"{e['session_id']}:{e.get('trial_id', '')}" for e in examples)
        digest = hashlib.blake2b(
            f"{self.seed}|{self.epoch}|{self.rank}|{key}".encode(), digest_size=8
        )
        self.collator.generator.manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))
        return self.collator(examples)


def _atomic_replace(tmp_dir: Path, final_dir: Path) -> None:
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)


# =============================================================================================
# The training loop
# =============================================================================================


def train(args: NedsTrainingArguments) -> TrainingResult:
    """Run pretraining or fine-tuning as configured; returns what happened on this process."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed

    from .data.dataset import TRIAL_FEATURES, load_neds_dataset
    from .data.training_data import NedsTrialDataset, SessionBatchSampler
    from .evaluation import evaluate_trials

    args.validate()
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes but Accelerate sees "
            f"{accelerator.num_processes}: on CPU launch with `ACCELERATE_USE_CPU=1 accelerate "
            "launch --multi_gpu --num_processes N` (a bare --cpu --num_processes N runs one "
            "process)"
        )
    is_main = accelerator.is_main_process
    set_seed(args.seed)

    # ---- data (errors here come before any training)
    trials = load_neds_dataset(args.dataset)
    if "train" not in trials:
        raise ValueError(f"dataset {args.dataset} has no 'train' split (splits: {list(trials)})")
    features = trials["train"].features
    missing = [name for name in TRIAL_FEATURES if name not in features]
    mismatched = [
        name
        for name in TRIAL_FEATURES
        if name in features and features[name] != TRIAL_FEATURES[name]
    ]
    if missing or mismatched:
        raise ValueError(
            f"dataset {args.dataset} does not match the neds_hf trials schema: missing columns "
            f"{missing}, columns of another type {mismatched}"
        )
    train_data = NedsTrialDataset(args.dataset, "train", sessions=args.sessions)
    eval_data = NedsTrialDataset(args.dataset, "validation", sessions=args.sessions)
    dataset_sessions = {s: train_data.n_neurons[s] for s in train_data.session_ids}

    # ---- model
    if args.model_name_or_path:
        model = NedsForMaskedModeling.from_pretrained(args.model_name_or_path, dtype=torch.float32)
        for session_id, count in dataset_sessions.items():
            known = model.config.sessions.get(session_id)
            if known is not None and known != count:
                raise ValueError(
                    f"session {session_id}: the pretrained model has {known} neurons for it but "
                    f"the dataset has {count}; the datasets differ (other preprocessing "
                    "parameters?)"
                )
        fresh_sessions = model.add_sessions(
            {s: n for s, n in dataset_sessions.items() if s not in model.config.sessions}
        )
        if not args.keep_pretrained_sessions:
            model.keep_sessions(list(dataset_sessions))
        if args.masking_schemes is not None:
            model.config.masking_schemes = args.scheme_probabilities()
        model.config.mask_ratio = args.mask_ratio
        pretrained_normalization = model.config.behavior_normalization
        if args.normalization_method and args.normalization_method != pretrained_normalization:
            logger.warning(
                "fine-tuning with behaviour normalisation %r although %s was pretrained with %r",
                args.normalization_method,
                args.model_name_or_path,
                pretrained_normalization,
            )
            model.config.behavior_normalization = args.normalization_method
        ignored = [
            f"{f.name}={getattr(args, f.name)!r}"
            for f in dataclasses.fields(NedsTrainingArguments)
            if f.name in ARCHITECTURE_FIELDS and getattr(args, f.name) != f.default
        ]
        if ignored:
            logger.warning(
                "the architecture comes from %s; ignoring %s",
                args.model_name_or_path,
                ", ".join(ignored),
            )
    else:
        model = NedsForMaskedModeling(build_config(args, dataset_sessions))
        fresh_sessions = list(dataset_sessions)
    if args.init_baseline_rates and fresh_sessions:
        model.set_baseline_rates(mean_counts_per_bin(train_data, fresh_sessions))
    config = model.config
    for spec in config.behavior_modalities:
        if spec["name"] not in features:
            raise ValueError(
                f"the model predicts {spec['name']!r} but dataset {args.dataset} has no such column"
            )
    if args.freeze_encoder == "all":
        model.freeze_encoder()

    fingerprint = run_fingerprint(args, config, accelerator.num_processes)
    checkpoint = resolve_checkpoint(args)
    state: dict[str, Any] = {
        "global_step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best_score": None,
        "best_step": None,
        "evaluations_without_improvement": 0,
        "history": [],
        "samples_seen": 0,
    }
    if checkpoint is not None:
        state = check_resume_compatible(checkpoint, fingerprint)
    elif _checkpoints(output_dir) and not args.overwrite_output_dir:
        raise FileExistsError(
            f"{output_dir} already holds checkpoints of a run; pass "
            "resume_from_checkpoint=latest to "
            "continue it or overwrite_output_dir=true to start over"
        )

    # ---- optimisation
    sampler = SessionBatchSampler(
        train_data,
        args.per_device_train_batch_size,
        mode=args.batch_sampling,
        seed=args.seed,
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
    )
    batches_per_epoch = len(sampler)
    if batches_per_epoch == 0:
        raise ValueError(f"dataset {args.dataset}: the train split has no batches")
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else steps_per_epoch * args.num_train_epochs
    groups = parameter_groups(model, args.weight_decay)
    optimizer = torch.optim.AdamW(
        [{k: v for k, v in g.items() if k != "encoder"} for g in groups],
        lr=args.learning_rate,
        eps=args.adam_epsilon,
    )
    encoder_groups = [i for i, g in enumerate(groups) if g["encoder"]]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=args.learning_rate,
        total_steps=total_steps,
        pct_start=args.warmup_ratio,
        div_factor=10.0,
        final_div_factor=1e4,
        anneal_strategy="cos",
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, state["global_step"])

    collator = DataCollatorForNedsMasking(
        config,
        schemes=args.scheme_probabilities(),
        mask_ratio=args.mask_ratio,
        normalization=train_data.normalization,
        neuron_regions=train_data.neuron_regions,
    )
    collate = _SeededMasking(collator, args.seed, accelerator.process_index)
    eval_trials = [eval_data[i] for i in range(len(eval_data))] if is_main else []
    global_batch = (
        args.per_device_train_batch_size
        * accelerator.num_processes
        * args.gradient_accumulation_steps
    )
    eval_every = args.eval_steps or steps_per_epoch
    save_every = args.save_steps or steps_per_epoch

    if args.report_to != "none":
        accelerator.init_trackers(
            "neds",
            config={
                k: (v if isinstance(v, int | float | str | bool) else str(v))
                for k, v in dataclasses.asdict(args).items()
            },
        )
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        logger.info(
            "training %s: %d sessions, %d train / %d validation trials, %d steps of %d trials",
            args.mode,
            len(dataset_sessions),
            len(train_data),
            len(eval_data),
            total_steps,
            global_batch,
        )

    def evaluate_now() -> float:
        score = None
        if is_main:
            unwrapped = accelerator.unwrap_model(model)
            report = evaluate_trials(
                unwrapped,
                eval_trials,
                normalization=eval_data.normalization,
                batch_size=args.per_device_eval_batch_size,
                split="validation",
            )
            score = report.average["avg"]
            record = {f"eval/{k}": v for k, v in report.average.items()}
            record["step"] = state["global_step"]
            state["history"].append(record)
            accelerator.log(
                {k: v for k, v in record.items() if k != "step"}, step=state["global_step"]
            )
        shared = [score]
        broadcast_object_list(shared, from_process=0)
        return shared[0]

    def save_checkpoint() -> None:
        final = output_dir / f"{CHECKPOINT_PREFIX}{state['global_step']}"
        tmp = output_dir / f".{final.name}.tmp"
        if is_main and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if is_main:
            (tmp / TRAINER_STATE_FILE).write_text(
                json.dumps({**state, "fingerprint": fingerprint}, indent=2, default=float) + "\n"
            )
            _atomic_replace(tmp, final)
            for old in (
                _checkpoints(output_dir)[: -args.save_total_limit]
                if args.save_total_limit > 0
                else []
            ):
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    def save_best() -> None:
        if is_main:
            tmp, final = output_dir / ".best.tmp", output_dir / "best"
            if tmp.exists():
                shutil.rmtree(tmp)
            accelerator.unwrap_model(model).save_pretrained(tmp)
            _atomic_replace(tmp, final)

    progress = tqdm(
        total=total_steps,
        initial=state["global_step"],
        desc=args.mode,
        disable=not is_main or args.disable_progress_bar,
        dynamic_ncols=True,
    )
    accumulation = args.gradient_accumulation_steps
    stopped_early = False
    running: dict[str, float] = {}
    running_batches = 0
    model.train()
    start_time = time.perf_counter()
    while state["global_step"] < total_steps and not stopped_early:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        collate.epoch = epoch
        batches = list(sampler)[state["batch_in_epoch"] :]
        # a private generator: creating the loader must not draw from the global RNG (dropout),
        # or a resumed run would diverge from the uninterrupted one
        loader = DataLoader(
            train_data,
            batch_sampler=batches,
            collate_fn=collate,
            num_workers=args.num_workers,
            generator=torch.Generator().manual_seed(args.seed + epoch),
        )
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            micro = state["batch_in_epoch"]  # index of this batch in the epoch
            group_start = (micro // accumulation) * accumulation
            group_size = min(accumulation, batches_per_epoch - group_start)
            sync = micro + 1 == group_start + group_size
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                outputs = model(**batch)
                accelerator.backward(outputs.loss / group_size)
            state["batch_in_epoch"] += 1
            state["samples_seen"] += len(batch["session_index"])
            running_batches += 1
            for name, value in {
                "loss": outputs.loss,
                **{f"loss/{k}": v for k, v in outputs.modality_losses.items()},
            }.items():
                running[name] = running.get(name, 0.0) + float(value.detach())
            if not sync:
                continue
            if args.freeze_encoder == "warmup" and state["global_step"] < args.freeze_warmup_steps:
                for index in encoder_groups:
                    for parameter in optimizer.param_groups[index]["params"]:
                        parameter.grad = None
            if args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state["global_step"] += 1
            progress.update(1)
            step = state["global_step"]
            if step % args.logging_steps == 0 or step == total_steps:
                names = sorted(running)
                sums = torch.tensor(
                    [running[n] for n in names] + [running_batches], device=accelerator.device
                )
                sums = accelerator.reduce(sums, "sum")
                record = {f"train/{n}": float(sums[i] / sums[-1]) for i, n in enumerate(names)}
                record["train/learning_rate"] = scheduler.get_last_lr()[0]
                running, running_batches = {}, 0
                accelerator.log(record, step=step)
                state["history"].append({**record, "step": step})
                progress.set_postfix(loss=f"{record['train/loss']:.4f}")
            if step % eval_every == 0 or step == total_steps:
                score = evaluate_now()
                improved = (
                    score is not None
                    and np.isfinite(score)
                    and (state["best_score"] is None or score > state["best_score"])
                )
                if improved:
                    state["best_score"], state["best_step"] = float(score), step
                    state["evaluations_without_improvement"] = 0
                    save_best()
                else:
                    state["evaluations_without_improvement"] += 1
                if 0 < args.early_stopping_patience <= state["evaluations_without_improvement"]:
                    stopped_early = True
            if step % save_every == 0 or step == total_steps or stopped_early:
                save_checkpoint()
            if step >= total_steps or stopped_early:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    progress.close()

    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(model)
    model_dir = None
    if is_main:
        model_dir = _finalise(
            trained,
            args,
            output_dir,
            state,
            time.perf_counter() - start_time,
            eval_trials,
            eval_data.normalization,
        )
    accelerator.end_training()
    return TrainingResult(
        output_dir=str(output_dir),
        model_dir=model_dir,
        global_step=state["global_step"],
        epochs_completed=state["epoch"],
        best_score=state["best_score"],
        best_step=state["best_step"],
        samples_seen=state["samples_seen"],
        global_batch_size=global_batch,
        num_processes=accelerator.num_processes,
        stopped_early=stopped_early,
        history=state["history"],
        model=trained,
    )


def _finalise(
    model: NedsForMaskedModeling,
    args: NedsTrainingArguments,
    output_dir: Path,
    state: Mapping[str, Any],
    seconds: float,
    eval_trials: Sequence[Mapping[str, Any]],
    normalization: Mapping[str, Any],
) -> str:
    """Write the final model (the best checkpoint when there is one) with its card; push it.

    The card's model-index carries the final model's validation scores.
    """
    from .evaluation import evaluate_trials, report_to_eval_results
    from .hub import push_model_to_hub, save_model_with_card

    best = output_dir / "best"
    final_model = NedsForMaskedModeling.from_pretrained(best) if best.is_dir() else model
    model_dir = output_dir / "model"
    # a fine-tuned model's architecture is its base model's: leave out the unused flags
    skipped = {"hub_token"} | (set(ARCHITECTURE_FIELDS) if args.model_name_or_path else set())
    training_config = {k: v for k, v in dataclasses.asdict(args).items() if k not in skipped}
    training_config.update(
        global_step=state["global_step"],
        best_step=state["best_step"],
        best_validation_score=state["best_score"],
        training_seconds=round(seconds, 1),
    )
    report = evaluate_trials(
        final_model,
        eval_trials,
        normalization=normalization,
        batch_size=args.per_device_eval_batch_size,
        split="validation",
    )
    report.save(output_dir)
    save_model_with_card(
        final_model,
        model_dir,
        repo_id=args.hub_model_id or f"local/{output_dir.name}",
        training_config=training_config,
        datasets=[str(args.dataset)],
        base_model=args.model_name_or_path,
        eval_results=report_to_eval_results(report, str(args.dataset)),
    )
    if args.push_to_hub:
        push_model_to_hub(
            model_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private
        )
    return str(model_dir)


def main(argv: Sequence[str] | None = None, mode: str | None = None) -> int:
    """Entry point of ``python -m neds_hf.train`` / ``neds-hf train``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_training_args(argv, mode=mode)
    result = train(args)
    if result.model_dir:
        print(
            f"model written to {result.model_dir} (step {result.global_step}, best "
            "validation score "
            f"{result.best_score})"
        )
    return 0
