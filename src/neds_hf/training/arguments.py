"""The arguments of a NEDS training run: one dataclass shared by YAML files and command lines.

The model-shaping arguments are not written out here: they are generated from the fields of
:class:`~neds_hf.configuration_neds.NedsConfig` listed in :data:`CONFIG_ARGUMENT_FIELDS` (same
name, type, default and help text), so a size added to or changed in the configuration reaches
the command line without a second copy. Which arguments must never be written anywhere
(:data:`SECRET_FIELDS`) is decided here too, in :func:`redacted_arguments`.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..configuration_neds import IBL_MODALITIES, NedsConfig

__all__ = [
    "ARCHITECTURE_FIELDS",
    "BEST_MODEL_METRICS",
    "CONFIG_ARGUMENT_FIELDS",
    "DATASET_CONFIGS",
    "FREEZE_MODES",
    "MODALITY_SETS",
    "MODES",
    "REDACTED",
    "SAMPLING_MODES",
    "SECRET_FIELDS",
    "NedsTrainingArguments",
    "bwb_behavior_names",
    "config_file_defaults",
    "parse_training_args",
    "redacted_arguments",
    "select_modalities",
]

FREEZE_MODES = ("none", "warmup", "all")
#: Named sets ``--modalities`` accepts besides modality names: ``paper`` (the five modalities of
#: the NEDS paper), ``bwb`` (those plus every BrainWideBench behaviour the dataset declares, see
#: :func:`bwb_behavior_names`) and ``all`` (every modality the dataset declares).
MODALITY_SETS = ("paper", "bwb", "all")
SAMPLING_MODES = ("mixed", "single_session")
#: What selects the best checkpoint: the mean validation score (bits per spike, R², balanced
#: accuracies) or the validation loss of the two evaluation protocols (lower is better).
BEST_MODEL_METRICS = ("score", "loss")
MODES = ("pretrain", "finetune")
#: Rows a run trains on: trial-aligned rows (config ``all``) or continuous windows.
DATASET_CONFIGS = ("trials", "windows")

#: NedsConfig fields a run can set; each becomes an argument of the same name and default.
CONFIG_ARGUMENT_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "spike_stitcher_size",
    "hidden_dropout",
    "attention_dropout",
    "attention_dropout_mode",
    "embedding_dropout",
    "trial_level_readout",
    "mask_ratio",
)
#: Arguments that only shape a new model (a pretrained one brings its own).
ARCHITECTURE_FIELDS = (
    "modalities",
    "spike_only",
    *(name for name in CONFIG_ARGUMENT_FIELDS if name != "mask_ratio"),
)
#: Arguments that are secrets: never logged, saved, printed or sent to a tracker.
SECRET_FIELDS = ("hub_token",)
#: What a secret's value is replaced with wherever the arguments are written.
REDACTED = "<redacted>"


def _config_docstring_help() -> dict[str, str]:
    """``{field: help}`` from the ``Args:`` section of NedsConfig's docstring."""
    helps: dict[str, str] = {}
    current = None
    for line in (NedsConfig.__doc__ or "").split("Args:", 1)[-1].splitlines():
        entry = re.match(r"^ {8}(\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            helps[current] = entry.group(2).strip()
        elif current and re.match(r"^ {12}\S", line):
            helps[current] += " " + line.strip()
    return helps


def _config_argument_fields() -> list[tuple[str, type, Any]]:
    """(name, type, dataclass field) for each of :data:`CONFIG_ARGUMENT_FIELDS`.

    The type is the default's (``float | int`` config fields become float arguments).
    """
    config_fields = {f.name: f for f in dataclasses.fields(NedsConfig)}
    helps = _config_docstring_help()
    generated = []
    for name in CONFIG_ARGUMENT_FIELDS:
        default = config_fields[name].default
        kind = type(default)
        generated.append(
            (name, kind, field(default=default, metadata={"help": helps.get(name, name)}))
        )
    return generated


#: The model-configuration arguments, generated from NedsConfig (base of the arguments class).
_ConfigArguments = dataclasses.make_dataclass("_ConfigArguments", _config_argument_fields())
_ConfigArguments.__module__ = __name__


@dataclass
class NedsTrainingArguments(_ConfigArguments):
    """Everything a NEDS training run needs; YAML keys and command-line flags share these names.

    The sizes, dropouts and mask ratio (:data:`CONFIG_ARGUMENT_FIELDS`) are NedsConfig's own
    fields, with its defaults.
    """

    # ---- run and data
    output_dir: str | None = field(
        default=None, metadata={"help": "Where checkpoints, logs and the model go."}
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Dataset folder or Hub id (built by prepare-data)."}
    )
    dataset_config: str = field(
        default="trials",
        metadata={
            "help": "Rows to train and validate on: trials (trial-aligned) or windows (the "
            "continuous windows of a dataset built with prepare-data --windows continuous)."
        },
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
        default=None,
        metadata={
            "help": "Modalities to model: names the dataset declares (its build_report.json) "
            "and/or the sets paper, bwb (paper + the BrainWideBench behaviours) or all. Default: "
            "every declared modality except the BrainWideBench behaviours (for IBL datasets the "
            "paper's five). Must include spikes."
        },
    )
    spike_only: bool = field(default=False, metadata={"help": "The spike-only MtM configuration."})
    masking_schemes: list[str] | None = field(
        default=None, metadata={"help": "name=probability pairs, e.g. neural=1 cross_modal=2."}
    )
    normalization_method: str | None = field(
        default=None,
        metadata={"help": "zscore, minmax or none (default: zscore, or the pretrained model's)."},
    )
    loss_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "modality=weight pairs multiplying that modality's mean loss, e.g. "
            "choice=2 (default: every modality 1, or the pretrained model's)."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations in the backward pass (less memory, slower)."},
    )
    torch_compile: bool = field(
        default=False, metadata={"help": "Compile the model with torch.compile before training."}
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
    fit_session_readouts: bool = field(
        default=False,
        metadata={
            "help": "Fine-tuning: start new sessions' spike readouts from a Poisson GLM of "
            "their training counts on the pretrained encoder's encoding features."
        },
    )
    keep_pretrained_sessions: bool = field(
        default=False,
        metadata={"help": "Keep the pretraining sessions' parameters when fine-tuning."},
    )
    # ---- optimisation
    learning_rate: float = 2e-4
    session_learning_rate_scale: float = field(
        default=1.0,
        metadata={
            "help": "Learning rate of the per-session parameters (stitchers, readouts) as a "
            "multiple of learning_rate."
        },
    )
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
    # ---- processes and data loading
    num_threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads per process (0 = auto: the cores this process may use "
            "divided by the processes per node)."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the train and validation trials (datasets streaming=True, sharded "
            "per rank with split_dataset_by_node, a shuffle buffer per epoch) instead of "
            "loading them: memory stays flat as sessions grow."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "Rows in the streaming shuffle buffer (0 = file order; streaming only)."},
    )
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "DataLoader worker processes (0 = load in the main one)."}
    )
    dataloader_pin_memory: bool | None = field(
        default=None, metadata={"help": "Pin batches in page-locked memory (default: on CUDA)."}
    )
    dataloader_prefetch_factor: int | None = field(
        default=None,
        metadata={"help": "Batches each worker loads ahead (needs dataloader_num_workers > 0)."},
    )
    # ---- evaluation, checkpoints, logging
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every N steps (0 = every epoch)."}
    )
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N steps (0 = every epoch)."}
    )
    save_total_limit: int = field(
        default=2, metadata={"help": "Checkpoints kept (the newest ones; 0 = all)."}
    )
    best_model_metric: str = field(
        default="score",
        metadata={
            "help": "score (mean validation score) or loss (validation loss of the encoding "
            "and decoding protocols) selects the best checkpoint."
        },
    )
    early_stopping_patience: int = field(
        default=0, metadata={"help": "Stop after N evaluations without improvement (0 = off)."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'latest'."}
    )
    logging_steps: int = 10
    report_to: str = field(default="tensorboard", metadata={"help": "tensorboard or none."})
    disable_progress_bar: bool = False
    # ---- Hub (the push happens after training, from the command-line entry point)
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_token: str | None = field(
        default=None,
        repr=False,
        metadata={"help": "Hub token (prefer HF_TOKEN or `hf auth login`; never written)."},
    )
    hub_private: bool = False

    def validate(self) -> None:
        """Raise a ValueError naming every invalid field, before any data is read."""
        errors = [
            *self._choice_errors(),
            *self._range_errors(),
            *self._combination_errors(),
            *self._config_errors(),
        ]
        if errors:
            raise ValueError("Invalid training arguments: " + "; ".join(errors))

    def _choice_errors(self) -> list[str]:
        """Fields that must take one of a few values."""
        errors = []
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("dataset_config", self.dataset_config, DATASET_CONFIGS),
            ("freeze_encoder", self.freeze_encoder, FREEZE_MODES),
            ("batch_sampling", self.batch_sampling, SAMPLING_MODES),
            ("best_model_metric", self.best_model_metric, BEST_MODEL_METRICS),
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
        if (
            self.modalities is not None
            and "spikes" not in self.modalities
            and not set(self.modalities) & set(MODALITY_SETS)
        ):
            errors.append("modalities must include 'spikes'")
        elif self.modalities is not None and self.dataset:
            # the dataset's modality table is one small JSON file; no data is read
            from ..data.load import load_modalities

            try:
                select_modalities(self.modalities, load_modalities(self.dataset), self.dataset)
            except ValueError as error:
                errors.append(str(error))
        return errors

    def _range_errors(self) -> list[str]:
        """Numbers outside their valid range."""
        errors = []
        at_least = {
            1: (
                "per_device_train_batch_size",
                "per_device_eval_batch_size",
                "gradient_accumulation_steps",
                "num_train_epochs",
                "logging_steps",
            ),
            0: (
                "learning_rate",
                "weight_decay",
                "max_grad_norm",
                "freeze_warmup_steps",
                "eval_steps",
                "save_steps",
                "save_total_limit",
                "early_stopping_patience",
                "num_threads",
                "dataloader_num_workers",
                "shuffle_buffer_size",
            ),
        }
        for minimum, names in at_least.items():
            for name in names:
                if not getattr(self, name) >= minimum:  # also catches NaN
                    errors.append(f"{name} must be >= {minimum}, got {getattr(self, name)}")
        if not self.adam_epsilon > 0:
            errors.append(f"adam_epsilon must be > 0, got {self.adam_epsilon}")
        if not self.session_learning_rate_scale > 0:
            errors.append(
                f"session_learning_rate_scale must be > 0, got {self.session_learning_rate_scale}"
            )
        if not 0 < self.warmup_ratio < 1:
            errors.append(f"warmup_ratio must be in (0, 1), got {self.warmup_ratio}")
        if self.dataloader_prefetch_factor is not None and self.dataloader_prefetch_factor < 1:
            errors.append(
                f"dataloader_prefetch_factor must be >= 1, got {self.dataloader_prefetch_factor}"
            )
        return errors

    def _combination_errors(self) -> list[str]:
        """Arguments that are required, or only valid, together."""
        errors = []
        if not self.output_dir:
            errors.append("output_dir is required")
        if not self.dataset:
            errors.append("dataset is required")
        if self.mode == "finetune" and not self.model_name_or_path:
            errors.append("mode=finetune needs model_name_or_path (a pretrained folder or Hub id)")
        if self.freeze_encoder != "none" and not self.model_name_or_path:
            errors.append("freeze_encoder needs a pretrained encoder (model_name_or_path)")
        if self.fit_session_readouts and not self.model_name_or_path:
            errors.append("fit_session_readouts needs a pretrained encoder (model_name_or_path)")
        if self.fit_session_readouts and self.streaming:
            errors.append("fit_session_readouts needs the training trials in memory (no streaming)")
        if self.freeze_encoder == "warmup" and self.freeze_warmup_steps <= 0:
            errors.append("freeze_encoder=warmup needs freeze_warmup_steps > 0")
        if self.dataloader_prefetch_factor is not None and self.dataloader_num_workers == 0:
            errors.append("dataloader_prefetch_factor needs dataloader_num_workers > 0")
        if self.streaming and self.dataloader_num_workers > 0:
            errors.append(
                "streaming reads its trials in the training process: set "
                "dataloader_num_workers=0 (each worker would read the whole stream again)"
            )
        if self.push_to_hub and not self.hub_model_id:
            errors.append("push_to_hub needs hub_model_id (ORG/NAME)")
        return errors

    def _config_errors(self) -> list[str]:
        """What NedsConfig itself refuses in the model arguments (sizes, dropouts, schemes)."""
        try:
            schemes = self.scheme_probabilities()
            self.modality_loss_weights()
        except ValueError as error:
            return [str(error)]
        values = {name: getattr(self, name) for name in CONFIG_ARGUMENT_FIELDS}
        try:
            if self.spike_only:
                NedsConfig.for_mtm(masking_schemes=schemes, **values)
            else:
                NedsConfig(masking_schemes=schemes, **values)
        except (ValueError, TypeError) as error:
            return [str(error)]
        return []

    def scheme_probabilities(self) -> dict[str, float] | None:
        """`masking_schemes` as ``{name: probability}`` (None: the config's default)."""
        return _name_value_pairs(self.masking_schemes, "masking_schemes", "probability")

    def modality_loss_weights(self) -> dict[str, float] | None:
        """`loss_weights` as ``{modality: weight}`` (None: the config's default)."""
        return _name_value_pairs(self.loss_weights, "loss_weights", "weight")


def _name_value_pairs(
    entries: Sequence[str] | None, argument: str, value_name: str
) -> dict[str, float] | None:
    """``name=value`` entries of a list argument as ``{name: float}`` (a bare name is 1)."""
    if entries is None:
        return None
    parsed = {}
    for entry in entries:
        name, _, value = str(entry).partition("=")
        try:
            parsed[name.strip()] = float(value) if value else 1.0
        except ValueError:
            raise ValueError(f"{argument} entry {entry!r} is not name={value_name}") from None
    return parsed


def bwb_behavior_names() -> list[str]:
    """Names of the BrainWideBench behaviours beyond the paper's five
    (:data:`neds_hf.data.preprocess.BWB_MODALITIES`): opt-in, never in a default selection."""
    from ..data.preprocess import BWB_MODALITIES

    return [spec["name"] for spec in BWB_MODALITIES]


def _expand_modality_sets(requested: Sequence[str], names: Sequence[str]) -> list[str]:
    """`requested` with each set of :data:`MODALITY_SETS` replaced by its modality names
    (``bwb`` and ``all`` only those the dataset declares, `names`)."""
    paper = [spec["name"] for spec in IBL_MODALITIES]
    sets = {
        "paper": paper,
        "bwb": [*paper, *(n for n in names if n in bwb_behavior_names())],
        "all": list(names),
    }
    expanded: list[str] = []
    for entry in requested:
        for name in sets.get(entry, [entry]):
            if name not in expanded:
                expanded.append(name)
    return expanded


def select_modalities(
    requested: Sequence[str] | None, declared: Sequence[dict[str, Any]], dataset: str
) -> list[dict[str, Any]]:
    """The entries of a dataset's modality table (`declared`, from
    :func:`neds_hf.data.load_modalities`) that a run models, in the dataset's order.

    `requested` (``--modalities``) names modalities and/or sets of :data:`MODALITY_SETS`; None
    takes every declared modality except the BrainWideBench behaviours
    (:func:`bwb_behavior_names`, opt-in), i.e. the paper's five on an IBL dataset. Raises a
    ValueError naming unknown modalities and what the dataset declares, or a selection without
    spikes.
    """
    from ..data.load import default_modalities

    names = [str(spec["name"]) for spec in declared]
    if requested is None:
        return default_modalities(declared)
    requested = _expand_modality_sets(requested, names)
    unknown = [name for name in requested if name not in names]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; dataset {dataset} declares {names}")
    if "spikes" not in requested:
        raise ValueError("modalities must include 'spikes'")
    return [dict(spec) for spec in declared if spec["name"] in requested]


def redacted_arguments(args: NedsTrainingArguments) -> dict[str, Any]:
    """The arguments as a plain dict with every secret (:data:`SECRET_FIELDS`) replaced.

    The one rule for writing arguments anywhere: trackers, ``training_config.yaml``, cards and
    logs all go through this function.
    """
    values = dataclasses.asdict(args)
    for name in SECRET_FIELDS:
        if values.get(name) is not None:
            values[name] = REDACTED
    return values


def config_file_defaults(
    argv: Sequence[str], arguments_class: type | None = None, help_command: str = "neds-hf train"
) -> dict[str, Any]:
    """The values of the ``--config`` YAML file named in `argv` (empty without one), checked
    against the fields of `arguments_class` (default :class:`NedsTrainingArguments`); the one
    rule for YAML configs of every training command."""
    arguments_class = arguments_class or NedsTrainingArguments
    if "--config" not in argv:
        return {}
    position = list(argv).index("--config")
    if position + 1 >= len(argv):
        raise ValueError("--config needs a YAML file path")
    config_path = Path(argv[position + 1])
    if not config_path.is_file():
        raise FileNotFoundError(f"training config {config_path} does not exist")
    values = yaml.safe_load(config_path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{config_path}: expected a mapping of argument names to values")
    known = {f.name for f in dataclasses.fields(arguments_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{config_path}: unknown keys {unknown}; see `{help_command} --help`")
    return values


def parse_training_args(
    argv: Sequence[str] | None = None, mode: str | None = None
) -> NedsTrainingArguments:
    """Parse ``--config YAML`` plus command-line overrides into :class:`NedsTrainingArguments`.

    Flags must be spelled in full: an abbreviation (``--learning_rat``) is an error, not a
    silent match.
    """
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(NedsTrainingArguments, allow_abbrev=False)
    parser.add_argument(
        "--config", type=str, default=None, help="YAML file with any of the fields below."
    )
    parser.set_defaults(**config_file_defaults(argv))
    parsed = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    args, extra = parsed[0], parsed[-1]
    if extra:
        raise ValueError(
            f"unrecognised arguments: {extra} (flags must be spelled in full; see --help)"
        )
    if mode is not None:
        args.mode = mode
    return args
