"""Pretraining and fine-tuning of NEDS with Accelerate: one code path for 1 CPU process, several
CPU processes (gloo) and many GPUs or nodes.

Launch with ``accelerate launch -m neds_hf.train --config CONFIG.yaml`` (or ``neds-hf train``);
every field of :class:`NedsTrainingArguments` can be set in the YAML file and overridden on the
command line. Checkpoints are written atomically every `save_steps` optimizer steps and a run
resumes exactly (same loss curve) from any of them.

Modules, one concept each: :mod:`.arguments` (the arguments, derived from NedsConfig for the
model sizes; secret redaction), :mod:`.checkpointing` (run fingerprint, resume, safe atomic
checkpoints), :mod:`.setup` (threads, data checks, model, optimizer, schedule), :mod:`.loop`
(the training loop), :mod:`.export` (the final model folder) and :mod:`.entry_point` (command
line, push to the Hub after training).
"""

from __future__ import annotations

from .arguments import (
    ARCHITECTURE_FIELDS,
    CONFIG_ARGUMENT_FIELDS,
    FREEZE_MODES,
    MODES,
    SAMPLING_MODES,
    SECRET_FIELDS,
    NedsTrainingArguments,
    parse_training_args,
    redacted_arguments,
    select_modalities,
)
from .checkpointing import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    CheckpointLoadError,
    check_resume_compatible,
    list_checkpoints,
    resolve_checkpoint,
    run_fingerprint,
)
from .entry_point import main, push_trained_model
from .loop import NedsTrainer, TrainingResult, train
from .setup import (
    build_config,
    check_dataset_source,
    configure_threads,
    mean_counts_per_bin,
    parameter_groups,
)

__all__ = [
    "ARCHITECTURE_FIELDS",
    "CHECKPOINT_PREFIX",
    "CONFIG_ARGUMENT_FIELDS",
    "FREEZE_MODES",
    "MODES",
    "SAMPLING_MODES",
    "SECRET_FIELDS",
    "TRAINER_STATE_FILE",
    "CheckpointLoadError",
    "NedsTrainer",
    "NedsTrainingArguments",
    "TrainingResult",
    "build_config",
    "check_dataset_source",
    "check_resume_compatible",
    "configure_threads",
    "list_checkpoints",
    "main",
    "mean_counts_per_bin",
    "parameter_groups",
    "parse_training_args",
    "push_trained_model",
    "redacted_arguments",
    "resolve_checkpoint",
    "run_fingerprint",
    "select_modalities",
    "train",
]
