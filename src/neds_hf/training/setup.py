"""Everything a run needs before its first step: threads, data, model, optimizer and schedule.

* :func:`check_dataset_source` looks at ``--dataset`` cheaply (no data read) so that a missing
  path or a folder that is not a neds_hf dataset (a ONE cache, say) fails at once with a
  description of what a dataset folder holds.
* :func:`load_training_data` loads the train and validation trials and checks their schema.
* :func:`prepare_model` builds a new model (pretraining) or loads a pretrained one and
  reconciles its sessions with the dataset's (fine-tuning), then applies freezing, gradient
  checkpointing and baseline rates.
* :func:`build_optimizer` / :func:`build_scheduler`: AdamW (fused on CPU and CUDA) with decay on
  weight matrices only, and the one-cycle cosine schedule.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_neds import NedsConfig, allows_missing, check_declared_modalities
from ..modeling_neds import NedsForMaskedModeling, is_session_parameter
from .arguments import ARCHITECTURE_FIELDS, CONFIG_ARGUMENT_FIELDS, select_modalities
from .readout_fit import fit_session_readouts

__all__ = [
    "build_config",
    "build_optimizer",
    "build_scheduler",
    "check_dataset_source",
    "configure_threads",
    "fused_adamw_supported",
    "load_streaming_data",
    "load_training_data",
    "mean_counts_per_bin",
    "parameter_groups",
    "prepare_model",
]

logger = logging.getLogger(__name__)


# =============================================================================================
# Threads
# =============================================================================================


def configure_threads(num_threads: int = 0) -> int:
    """Set torch's intra-op thread count and return it.

    ``num_threads`` > 0 is taken as given. 0 (auto) gives each process started on this node
    (``LOCAL_WORLD_SIZE``) its share of the cores it may run on that are idle now (1-minute
    load average), never above torch's own default: threads beyond the free cores make every
    step slower, not faster (one step of a small model on a busy 2-core machine: 0.31 s with
    1 thread, 0.92 s with 2).
    """
    if num_threads > 0:
        chosen, how = num_threads, "as configured"
    else:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        idle = max(1, round(cores - load))
        per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        chosen = max(1, min(torch.get_num_threads(), cores // per_node, idle // per_node))
        how = f"auto: {cores} usable cores, load {load:.1f}, {per_node} process(es) on this node"
    torch.set_num_threads(chosen)
    logger.info("using %d torch thread(s) per process (%s; set with --num_threads)", chosen, how)
    return chosen


# =============================================================================================
# Data
# =============================================================================================


def check_dataset_source(dataset: str) -> None:
    """Fail fast, without reading data, when `dataset` cannot be a neds_hf dataset: a local
    path must be a dataset folder (:func:`neds_hf.data.check_dataset_folder`); anything else is
    taken as a Hub id, whose loading says whether it exists."""
    from ..data.load import check_dataset_folder, is_local_dataset_path

    if is_local_dataset_path(str(dataset)):
        check_dataset_folder(dataset)


def load_training_data(args: Any) -> tuple[Any, Any, Mapping[str, Any]]:
    """The train and validation rows of `args.sessions` (trials, or the continuous windows
    with ``dataset_config=windows``), and the dataset's features.

    Raises when the dataset has no train split or does not follow the trials (windows) schema.
    """
    from ..data.load import DATASET_FOLDER_LAYOUT, load_modalities, load_neds_dataset, load_windows
    from ..data.schema import trial_features, window_features
    from ..data.training_data import NedsTrialDataset

    windows = args.dataset_config == "windows"
    try:
        rows = load_windows(args.dataset) if windows else load_neds_dataset(args.dataset)
    except (ConnectionError, FileNotFoundError) as error:
        if Path(args.dataset).exists():
            raise
        raise FileNotFoundError(
            f"dataset {args.dataset} is not a local folder and could not be loaded from the Hub "
            f"({error}); {DATASET_FOLDER_LAYOUT}"
        ) from None
    if "train" not in rows:
        raise ValueError(f"dataset {args.dataset} has no 'train' split (splits: {list(rows)})")
    features = rows["train"].features
    # a local folder was verified file by file when it was loaded; a Hub dataset's files were
    # not, so the loaded features are checked against the declared schema here
    expected = (window_features if windows else trial_features)(load_modalities(args.dataset))
    missing = [name for name in expected if name not in features]
    mismatched = [
        name for name in expected if name in features and features[name] != expected[name]
    ]
    if missing or mismatched:
        raise ValueError(
            f"dataset {args.dataset} does not match the neds_hf {args.dataset_config} schema: "
            f"missing columns {missing}, columns of another type {mismatched}"
        )
    # every declared modality: the model (new or pretrained) takes the ones it has
    served = [spec["name"] for spec in load_modalities(args.dataset)]
    train_data, eval_data = (
        NedsTrialDataset(
            args.dataset,
            split,
            sessions=args.sessions,
            modalities=served,
            table=args.dataset_config,
        )
        for split in ("train", "validation")
    )
    return train_data, eval_data, features


def load_streaming_data(
    args: Any, num_processes: int, process_index: int
) -> tuple[Any, Any, Mapping[str, Any]]:
    """The train rows (trials, or continuous windows with ``dataset_config=windows``) streamed
    and sharded for this rank, the validation rows streamed (read whole by the main process),
    and the streamed features; the features are checked against the declared schema like
    :func:`load_training_data` does."""
    from ..data.load import load_modalities
    from ..data.schema import trial_features, window_features
    from ..data.streaming import NedsStreamingTrials

    served = [spec["name"] for spec in load_modalities(args.dataset)]
    train_data = NedsStreamingTrials(
        args.dataset,
        "train",
        sessions=args.sessions,
        modalities=served,
        shuffle_buffer_size=args.shuffle_buffer_size,
        seed=args.seed,
        num_replicas=num_processes,
        rank=process_index,
        table=args.dataset_config,
    )
    eval_data = NedsStreamingTrials(
        args.dataset,
        "validation",
        sessions=args.sessions,
        modalities=served,
        shuffle_buffer_size=0,
        num_replicas=1,
        rank=0,
        table=args.dataset_config,
    )
    features = train_data.features
    schema = window_features if args.dataset_config == "windows" else trial_features
    expected = schema(load_modalities(args.dataset))
    # the streamed columns only (the stream selects them); each must have its declared type
    wrong = [
        name
        for name in train_data.columns
        if name in expected and (features is None or features.get(name) != expected[name])
    ]
    if wrong:
        raise ValueError(
            f"dataset {args.dataset} does not match the neds_hf {args.dataset_config} schema: "
            "columns of "
            f"another type or without type {wrong}"
        )
    return train_data, eval_data, features


def mean_counts_per_bin(trials: Any, session_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Each neuron's mean spike count per bin over a trial dataset, ``{session_id: (N,)}``
    (a streamed dataset computes it in one pass over its stream)."""
    if hasattr(trials, "mean_counts_per_bin"):
        return trials.mean_counts_per_bin(session_ids)
    means = {}
    indices = trials.session_indices()
    for session_id in session_ids:
        rows = indices[session_id]
        if len(rows) == 0:
            raise ValueError(f"session {session_id} has no training trials")
        spikes = [np.asarray(trials[int(i)]["spikes"], dtype=np.float64) for i in rows]  # (N, T)
        means[session_id] = np.mean([trial.mean(-1) for trial in spikes], axis=0)  # (N,)
    return means


# =============================================================================================
# Model
# =============================================================================================


def build_config(args: Any, sessions: Mapping[str, int]) -> NedsConfig:
    """A fresh model configuration for a pretraining run.

    Its modalities are the entries of the dataset's modality table
    (:func:`neds_hf.data.load_modalities`) that ``args.modalities`` selects (all by default),
    in the dataset's order.
    """
    from ..data.load import load_modalities

    values = {name: getattr(args, name) for name in CONFIG_ARGUMENT_FIELDS}
    values.update(
        masking_schemes=args.scheme_probabilities(),
        behavior_normalization=args.normalization_method or NedsConfig.behavior_normalization,
        modality_loss_weights=args.modality_loss_weights(),
    )
    if args.spike_only:
        return NedsConfig.for_mtm(dict(sessions), **values)
    modalities = select_modalities(
        args.modalities, load_modalities(args.dataset), str(args.dataset)
    )
    return NedsConfig(modalities=modalities, sessions=dict(sessions), **values)


def _load_pretrained(args: Any, dataset_sessions: Mapping[str, int]) -> tuple[Any, list[str]]:
    """The pretrained model with the dataset's sessions added (and others dropped unless
    `keep_pretrained_sessions`); returns it and the ids of the sessions it did not know."""
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
    if args.loss_weights is not None:
        # checked as a whole configuration, so an unknown modality is refused by name
        NedsConfig(
            modalities=model.config.modalities,
            modality_loss_weights=args.modality_loss_weights(),
        )
        model.config.modality_loss_weights = args.modality_loss_weights()
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
        for f in dataclasses.fields(args)
        if f.name in ARCHITECTURE_FIELDS and getattr(args, f.name) != f.default
    ]
    if ignored:
        logger.warning(
            "the architecture comes from %s; ignoring %s",
            args.model_name_or_path,
            ", ".join(ignored),
        )
    return model, fresh_sessions


def _check_dataset_modalities(model: NedsForMaskedModeling, dataset: Any) -> None:
    """The dataset's declared modalities must feed the model (else a ValueError naming both
    lists); a behaviour the dataset declares as possibly missing becomes so in the model's
    config, so that its missing entries are masked rather than rejected."""
    from ..data.load import load_modalities

    declared = load_modalities(dataset)
    check_declared_modalities(model.config.modalities, declared, str(dataset))
    may_be_missing = {spec["name"] for spec in declared if allows_missing(spec)}
    for spec in model.config.modalities:
        if spec["name"] in may_be_missing:
            spec["allow_missing"] = True


def prepare_model(args: Any, train_data: Any, features: Mapping[str, Any]) -> NedsForMaskedModeling:
    """The model to train: new (pretraining) or pretrained with the dataset's sessions.

    New sessions' readouts start at each neuron's mean training rate (`init_baseline_rates`)
    or, with `fit_session_readouts`, at a Poisson GLM on the pretrained encoder's features;
    `freeze_encoder=all` freezes the shared encoder; `gradient_checkpointing` turns it on.
    """
    dataset_sessions = {s: train_data.n_neurons[s] for s in train_data.session_ids}
    if args.model_name_or_path:
        model, fresh_sessions = _load_pretrained(args, dataset_sessions)
    else:
        model = NedsForMaskedModeling(build_config(args, dataset_sessions))
        fresh_sessions = list(dataset_sessions)
    _check_dataset_modalities(model, args.dataset)
    for spec in model.config.behavior_modalities:
        if spec["name"] not in features:
            raise ValueError(
                f"the model predicts {spec['name']!r} but dataset {args.dataset} has no such column"
            )
    if args.init_baseline_rates and fresh_sessions:
        model.set_baseline_rates(mean_counts_per_bin(train_data, fresh_sessions))
    if args.fit_session_readouts and fresh_sessions:
        # after the modality checks: missing behaviour entries are known to the model by now
        fit_session_readouts(model, train_data, fresh_sessions)
    if args.freeze_encoder == "all":
        model.freeze_encoder()
    if args.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (deprecated) to this
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    return model


# =============================================================================================
# Optimisation
# =============================================================================================


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, session_groups: bool = True
) -> list[dict[str, Any]]:
    """AdamW groups: decoupled weight decay on weight matrices only.

    No decay on biases, norms, embeddings (incl. the mask token) and the per-session neuron
    tables (per-neuron embeddings), so that sessions absent from a batch never move. The shared
    encoder's parameters (``model.encoder_parameters()``) are in their own groups
    (``"encoder": True``) so that they can be frozen for a warm-up and, with `session_groups`,
    the per-session parameters in theirs (``"session": True``) so that they can have their own
    learning rate. Without it the groups are those of checkpoints written before the per-session
    rate existed, whose optimizer state then loads as it was saved.
    """
    groups: dict[tuple[bool, bool, bool], list[torch.nn.Parameter]] = {}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    encoder_ids = {id(p) for _, p in model.encoder_parameters()}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_session = is_session_parameter(name)
        no_decay = (
            parameter.ndim < 2 or id(parameter) in embedding_ids or is_session or "norm" in name
        )
        key = (no_decay, id(parameter) in encoder_ids, is_session and session_groups)
        groups.setdefault(key, []).append(parameter)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "encoder": encoder,
            "session": session,
        }
        for (no_decay, encoder, session), params in groups.items()
    ]


def fused_adamw_supported(device: torch.device) -> bool:
    """Whether torch's fused AdamW runs on `device` (CPU and CUDA, in torch versions that
    accept ``fused=``)."""
    return device.type in ("cpu", "cuda") and (
        "fused" in inspect.signature(torch.optim.AdamW).parameters
    )


def build_optimizer(
    model: torch.nn.Module, args: Any, device: torch.device
) -> tuple[torch.optim.Optimizer, list[int]]:
    """AdamW over :func:`parameter_groups`; returns it and the indices of the encoder groups.

    Per-session parameters run at ``learning_rate * session_learning_rate_scale`` (in groups
    of their own only when the scale is not 1, so that default runs keep their groups). On CPU
    and CUDA the update is torch's fused AdamW kernel (:func:`fused_adamw_supported`): one pass
    over each parameter with no temporaries, where the default CPU implementation makes five
    passes and two parameter-sized temporaries per tensor; elsewhere torch's default.
    """
    groups = parameter_groups(
        model, args.weight_decay, session_groups=args.session_learning_rate_scale != 1.0
    )
    options: dict[str, Any] = {"lr": args.learning_rate, "eps": args.adam_epsilon}
    if fused_adamw_supported(device):
        options["fused"] = True
    session_lr = args.learning_rate * args.session_learning_rate_scale
    optimizer = torch.optim.AdamW(
        [
            {
                "params": g["params"],
                "weight_decay": g["weight_decay"],
                **({"lr": session_lr} if g["session"] else {}),
            }
            for g in groups
        ],
        **options,
    )
    return optimizer, [i for i, g in enumerate(groups) if g["encoder"]]


def build_scheduler(optimizer: torch.optim.Optimizer, args: Any, total_steps: int) -> Any:
    """One-cycle cosine schedule: warm-up over `warmup_ratio` of the steps to each group's peak
    rate (the optimizer's learning rate of that group)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=args.warmup_ratio,
        div_factor=10.0,
        final_div_factor=1e4,
        anneal_strategy="cos",
    )
