"""``neds-hf demo``: the whole NEDS pipeline end to end on the embedded synthetic corpus
(realistic preset by default) or on the sessions of any ONE cache (``--cache-dir``).

Runs offline on a CPU in a few minutes with the default sizes:

1. write a synthetic IBL-like corpus (ALF sessions + ONE cache + ground truth);
2. build the ``datasets`` dataset from it through the real ONE loader;
3. pretrain NEDS on the pretraining sessions;
4. fine-tune the pretrained model on the held-out sessions;
5. train the same architecture from scratch on the held-out sessions alone (same steps);
6. evaluate on the held-out sessions' test trials: both NEDS models, the oracle (the
   expected spike counts of the generative model given the behaviour a model observes, the
   stimulus and latent noise marginalised; synthetic sessions only), a reduced-rank linear
   encoder and ridge / logistic decoders; run the region probe on the per-neuron embeddings;
7. write ``<output>/report/`` (``report.md``, ``results.json``, plots) and ``<output>/model``
   (the fine-tuned model with a card whose ``model-index`` carries the test numbers).

Every figure in the report is computed by this run; the text that compares methods is
derived from the numbers, whichever way they go.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .atomic import atomic_write_text
from .configuration_neds import IBL_MODALITIES
from .metrics import ENCODING_METRICS
from .report import (
    demo_report_markdown,
    fmt,
    methods_table,
    metric_display_name,
    write_json,
    write_markdown,
)

logger = logging.getLogger("neds_hf.demo")  # also when run as __main__

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "DEMO_DEFAULTS",
    "DEMO_SUBDIRS",
    "FEATURE_PROBE_NAME",
    "METHODS",
    "RESULTS_SCHEMA_VERSION",
    "TABLE_METRICS",
    "TRUTH_PROBE_NAME",
    "StageTimer",
    "add_demo_arguments",
    "check_demo_settings",
    "check_output_dir",
    "check_own_sessions",
    "main",
    "physical_behavior",
    "prepare_output_dir",
    "read_eids_file",
    "reproduce_command",
    "restore_output_dir",
    "results_tables",
    "run_demo",
    "run_demo_cli",
    "score_baselines",
    "table_metrics",
]

#: Output folder of ``neds-hf demo`` when ``--output`` is not given (relative to the cwd).
DEFAULT_OUTPUT_DIR = "neds_demo_report"
#: Folders the demo writes inside its output folder (and replaces with ``overwrite``).
DEMO_SUBDIRS = ("one_cache", "dataset", "runs", "model", "report")
#: Methods of the results table, in row order, with their display names.
METHODS = {
    "oracle": "Oracle (expected counts given behaviour)",
    "neds_finetuned": "NEDS fine-tuned (pretrained)",
    "neds_scratch": "NEDS from scratch",
    "linear_encoder": "Linear encoder (reduced-rank)",
    "poisson_glm": "Poisson GLM encoder",
    "linear_decoder": "Ridge / logistic decoder",
}


def table_metrics(modalities: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Columns of the results table for a model's behaviour modalities: metric key -> header.

    The bits-per-spike pair, then the R² of every continuous behaviour and the balanced
    accuracy of every categorical one, named as evaluation and the model card name them.
    """
    keys = list(ENCODING_METRICS)
    for spec in modalities:
        if spec["kind"] == "continuous":
            keys.append(f"{spec['name']}_r2")
        elif spec["kind"] == "categorical":
            keys.append(f"{spec['name']}_balanced_accuracy")
    return {key: metric_display_name(key) for key in keys}


#: Columns of the table of the demo's synthetic IBL corpus (its models' modalities).
TABLE_METRICS = table_metrics(IBL_MODALITIES)
#: Name of the region probe on simple per-neuron features in ``results["region_probe"]``.
FEATURE_PROBE_NAME = "Per-neuron features (log rate, Poisson GLM weights), held-out sessions"
#: Name of the region probe on the generator's own per-neuron parameters (synthetic data).
TRUTH_PROBE_NAME = (
    "Generator's per-neuron parameters (log base rate, tuning weights, latent loadings), "
    "held-out sessions"
)
#: Default sizes of ``neds-hf demo`` (chosen to finish in a few minutes on 2 CPU cores).
DEMO_DEFAULTS: dict[str, Any] = {
    "n_sessions": 6,
    "n_heldout": 2,
    "n_trials": 300,
    "n_neurons": 60,
    "hidden_size": 128,
    "num_layers": 1,
    "pretrain_steps": 1500,
    # 1200 rather than 400: trial-level decoding on a held-out session is limited by the
    # fine-tuning budget, not pretraining (benchmarks/ablate_quality.py, 3 seeds: choice balanced
    # accuracy 0.83 -> 0.89 -> 0.91 and block 0.54 -> 0.60 -> 0.58 at 1x / 2x / 4x the steps,
    # while half the pretraining steps lost accuracy)
    "finetune_steps": 1200,
    "batch_size": 16,
    # 1e-3 rather than 3e-3: on the realistic preset (benchmarks/ablate_quality.py, 3 seeds)
    # choice balanced accuracy 0.83 ± 0.05 vs 0.69 ± 0.14 and block 0.54 vs 0.43, at 4 % less
    # bits per spike; at 3e-3 the trial-level heads often stay near chance
    "learning_rate": 1e-3,
    "seed": 0,
    "num_threads": 0,
    "preset": "realistic",
}
#: Version of the ``results`` block of ``results.json`` (see :func:`results_tables`); raised
#: whenever a key of that block changes meaning or disappears.
RESULTS_SCHEMA_VERSION = 1
#: File of the report folder listing the sessions of a run on the user's ONE cache.
EIDS_FILENAME = "eids.txt"
#: Masking schemes of the demo's runs (probability weights): the two evaluation protocols
#: (neural = encoding, behavior = decoding) are drawn more often than the other NEDS schemes so
#: that a short CPU run learns both directions.
DEMO_MASKING_SCHEMES = (
    "neural=2",
    "behavior=2",
    "cross_modal=1",
    "within_spikes=0.5",
    "within_behavior=0.5",
)
#: Dropout of the demo's models: none, as the runs are short and the corpus small.
DEMO_DROPOUT = 0.0
#: Model-index dataset fields of the demo's test results.
DATASET_TYPE = "neds-synthetic"
DATASET_NAME = "neds_hf synthetic IBL-like corpus"


# =============================================================================================
# Output folder and stage bookkeeping
# =============================================================================================


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse an `output_dir` that is a file, or not empty without `overwrite` (nothing is
    written)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"demo output {output_dir} exists and is not a directory")
    if not overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise FileExistsError(
            f"demo output directory {output_dir} already exists and is not empty; pass "
            "--overwrite (overwrite=True) to replace its demo folders "
            f"{list(DEMO_SUBDIRS)}, or choose another --output"
        )


def prepare_output_dir(output_dir: Path, overwrite: bool) -> Path | None:
    """Create `output_dir`; refuse a non-empty one unless `overwrite`.

    With `overwrite`, the demo's own sub-folders (never other files) are moved aside into a
    hidden backup folder, which is returned: :func:`restore_output_dir` puts them back when the
    new run fails, and deletes the backup when it succeeds. Returns None when nothing was moved.
    """
    check_output_dir(output_dir, overwrite)
    previous = [name for name in DEMO_SUBDIRS if (output_dir / name).exists()]
    backup = None
    if previous:
        backup = output_dir / f".neds-demo-previous-{uuid.uuid4().hex[:8]}"
        backup.mkdir()
        for name in previous:
            os.replace(output_dir / name, backup / name)
    output_dir.mkdir(parents=True, exist_ok=True)
    return backup


def restore_output_dir(output_dir: Path, backup: Path | None, succeeded: bool) -> None:
    """Finish an overwrite: drop the previous demo folders after a run that `succeeded`, or
    remove the failed run's folders and put the previous ones back."""
    if not succeeded:
        for name in DEMO_SUBDIRS:
            shutil.rmtree(output_dir / name, ignore_errors=True)
    if backup is None:
        return
    if not succeeded:
        for previous in backup.iterdir():
            os.replace(previous, output_dir / previous.name)
    shutil.rmtree(backup, ignore_errors=True)


class StageTimer:
    """Logs the start and end of each demo stage and records its wall time (s)."""

    def __init__(self, n_stages: int) -> None:
        self.n_stages = n_stages
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, description: str) -> Iterator[None]:
        """Context manager around one stage."""
        number = len(self.seconds) + 1
        logger.info("[%d/%d] %s ...", number, self.n_stages, description)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 1)
        logger.info(
            "[%d/%d] %s done in %.1f s", number, self.n_stages, description, self.seconds[name]
        )


# =============================================================================================
# Stages
# =============================================================================================


def _build_corpus(
    paths: Mapping[str, Path], settings: Mapping[str, Any], timer: StageTimer, notes: list[str]
) -> tuple[Any, list[str], list[str]]:
    """Stages 1-2: the ONE cache (synthetic, or the user's ``cache_dir``) and the dataset
    built from it through ONE.

    Returns ``(build report, pretraining sessions, held-out sessions)``.
    """
    from .data.build import build_dataset
    from .data.synthetic import make_synthetic_cache

    n_sessions, n_trials = settings["n_sessions"], settings["n_trials"]
    if settings["cache_dir"] is not None:
        with timer.stage("synthetic_corpus", f"using the ONE cache {paths['one_cache']}"):
            heldout_eids = list(settings["heldout_eids"])
            eids = [e for e in settings["eids"] if e not in heldout_eids] + heldout_eids
    else:
        with timer.stage(
            "synthetic_corpus",
            f"writing {n_sessions} synthetic sessions ({settings['preset']} preset) to "
            f"{paths['one_cache']}",
        ):
            # the first block (probabilityLeft 0.5) is shortened in small corpora so that every
            # session still has biased blocks for the block decoders
            eids = make_synthetic_cache(
                paths["one_cache"],
                n_sessions,
                settings["seed"],
                n_trials=n_trials,
                n_neurons_per_probe=settings["n_neurons"],
                first_block_trials=min(90, n_trials // 3),
                preset=settings["preset"],
            )
            heldout_eids = eids[n_sessions - settings["n_heldout"] :]
    with timer.stage("dataset", f"building the dataset through ONE into {paths['dataset']}"):
        build = build_dataset(
            paths["one_cache"], eids, paths["dataset"], progress=settings["progress"]
        )
        for session_id, reason in build.skipped.items():
            message = f"session {session_id} skipped by the dataset build: {reason}"
            logger.warning(message)
            notes.append(message)
        built = build.built_session_ids
        pretrain_sessions = [e for e in eids if e in built and e not in heldout_eids]
        heldout_sessions = [e for e in heldout_eids if e in built]
        if not pretrain_sessions or not heldout_sessions:
            raise RuntimeError(
                f"after skipping {build.skipped}, {len(pretrain_sessions)} "
                f"pretraining and {len(heldout_sessions)} held-out sessions remain;"
                " the demo needs at least one of each"
            )
        logger.info(
            "dataset: %d sessions (%s neurons); pretraining on %d, holding out %d",
            len(built),
            [s["counts"]["n_neurons"] for s in build.sessions if s["status"] == "ok"],
            len(pretrain_sessions),
            len(heldout_sessions),
        )
    return build, pretrain_sessions, heldout_sessions


def _train_one(
    name: str,
    sessions: list[str],
    steps: int,
    paths: Mapping[str, Path],
    settings: Mapping[str, Any],
    **extra: Any,
) -> Any:
    """One training run of the demo (pretraining, fine-tuning or from scratch)."""
    from .training import NedsTrainingArguments, train

    if "model_name_or_path" not in extra:  # a fine-tuned model keeps its architecture
        hidden_size = settings["hidden_size"]
        extra.update(
            hidden_size=hidden_size,
            num_hidden_layers=settings["num_layers"],
            num_attention_heads=settings["num_attention_heads"],
            intermediate_size=2 * hidden_size,
            spike_stitcher_size=hidden_size,
            hidden_dropout=DEMO_DROPOUT,
            attention_dropout=DEMO_DROPOUT,
            embedding_dropout=DEMO_DROPOUT,
        )
    arguments = NedsTrainingArguments(
        output_dir=str(paths["runs"] / name),
        dataset=str(paths["dataset"]),
        sessions=sessions,
        masking_schemes=list(DEMO_MASKING_SCHEMES),
        learning_rate=settings["learning_rate"],
        max_steps=steps,
        per_device_train_batch_size=settings["batch_size"],
        eval_steps=max(1, steps // 10),
        save_steps=steps,
        save_total_limit=1,
        logging_steps=max(1, min(10, steps // 20)),
        report_to="tensorboard",
        seed=settings["seed"],
        num_threads=settings["torch_threads"],
        disable_progress_bar=not settings["progress"],
        **extra,
    )
    result = train(arguments)
    logger.info(
        "%s: %d steps, best validation avg %s at step %s, model in %s",
        name,
        result.global_step,
        fmt(result.best_score),
        result.best_step,
        result.model_dir,
    )
    return result


def _train_runs(
    pretrain_sessions: list[str],
    heldout_sessions: list[str],
    paths: Mapping[str, Path],
    settings: Mapping[str, Any],
    timer: StageTimer,
) -> dict[str, Any]:
    """Stages 3-5: pretraining, fine-tuning and the from-scratch run; name -> TrainingResult."""
    pretrain_steps, finetune_steps = settings["pretrain_steps"], settings["finetune_steps"]
    runs = {}
    with timer.stage(
        "pretrain",
        f"pretraining on {_count(len(pretrain_sessions), 'session')} ({pretrain_steps} steps)",
    ):
        runs["pretrain"] = _train_one(
            "pretrain", pretrain_sessions, pretrain_steps, paths, settings
        )
    with timer.stage(
        "finetune",
        f"fine-tuning on {len(heldout_sessions)} held-out sessions ({finetune_steps} steps)",
    ):
        runs["finetune"] = _train_one(
            "finetune",
            heldout_sessions,
            finetune_steps,
            paths,
            settings,
            mode="finetune",
            model_name_or_path=runs["pretrain"].model_dir,
            # the held-out sessions' readouts start from a Poisson GLM on the pretrained
            # encoder's features (README, modelling notes)
            fit_session_readouts=True,
        )
    with timer.stage(
        "scratch", f"training from scratch on the held-out sessions ({finetune_steps} steps)"
    ):
        runs["scratch"] = _train_one("scratch", heldout_sessions, finetune_steps, paths, settings)
    return runs


def score_baselines(
    config: Any,
    session_id: str,
    test: Mapping[str, np.ndarray],
    oracle: np.ndarray | None,
    linear: Any,
) -> dict[str, dict[str, float]]:
    """Scores of the oracle (when there is one) and the linear baselines on one session,
    through the same ``evaluation.score_session`` as the NEDS models."""
    from .evaluation import SessionPredictions, score_session

    def encoder(rates: np.ndarray) -> SessionPredictions:
        return SessionPredictions(session_id=session_id, spikes=test["spikes"], rates=rates)

    decoder = SessionPredictions(
        session_id=session_id,
        spikes=test["spikes"],
        behavior_targets={name: test[name] for name in linear.decoded},
        behavior_predictions=dict(linear.decoded),
    )
    return {
        **({"oracle": score_session(config, encoder(oracle), None)} if oracle is not None else {}),
        "linear_encoder": score_session(config, encoder(linear.encoder_rates), None),
        "poisson_glm": score_session(config, encoder(linear.glm_rates), None),
        "linear_decoder": score_session(config, None, decoder),
    }


def _evaluate_methods(
    models: Mapping[str, Any],
    heldout_sessions: list[str],
    paths: Mapping[str, Path],
    settings: Mapping[str, Any],
    notes: list[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Stage 6: every method of the table on the held-out sessions' test trials.

    Returns ``(methods: key -> {"average", "per_session"}, plot inputs of the first held-out
    session)``.
    """
    from .baselines import (
        fit_linear_baselines,
        neuron_features,
        trials_to_arrays,
        true_neuron_parameters,
    )
    from .data.load import load_neurons
    from .data.training_data import NedsTrialDataset
    from .evaluation import average_over_sessions, evaluate_trials

    config = models["neds_finetuned"].config
    modalities = config.behavior_modalities
    test_data = NedsTrialDataset(paths["dataset"], "test", sessions=heldout_sessions)
    train_data = NedsTrialDataset(paths["dataset"], "train", sessions=heldout_sessions)
    test_trials = [test_data[i] for i in range(len(test_data))]
    methods = {
        key: {"average": report.average, "per_session": report.per_session}
        for key, report in (
            (key, evaluate_trials(model, test_trials, test_data.normalization, split="test"))
            for key, model in models.items()
        )
    }
    neurons = load_neurons(paths["dataset"], heldout_sessions)
    baselines: dict[str, dict[str, dict[str, float]]] = {}
    plot_inputs: dict[str, Any] = {}
    features: dict[str, np.ndarray] = {}
    truth_parameters: dict[str, np.ndarray] = {}
    for session_id in heldout_sessions:
        session_test = [t for t in test_trials if t["session_id"] == session_id]
        session_train = [train_data[int(i)] for i in train_data.session_indices()[session_id]]
        test = trials_to_arrays(session_test, modalities)
        session_neurons = neurons[neurons["session_id"] == session_id]
        truth, oracle = _session_truth(paths["one_cache"], session_id, session_neurons, test)
        if truth is None:
            notes.append(f"session {session_id}: no ground truth in the cache, no oracle row")
        else:
            truth_parameters[session_id] = true_neuron_parameters(truth, session_neurons)
        train = trials_to_arrays(session_train, modalities)
        linear = fit_linear_baselines(train, test, modalities, settings["seed"], poisson_glm=True)
        features[session_id] = neuron_features(train["spikes"], linear.glm)  # (N, F)
        notes.extend(f"session {session_id}: {note}" for note in linear.notes)
        for key, scores in score_baselines(config, session_id, test, oracle, linear).items():
            baselines.setdefault(key, {})[session_id] = scores
        if not plot_inputs:  # plots show the first held-out session
            plot_inputs = dict(
                session_id=session_id,
                truth=truth,
                test=test,
                trials=session_test,
                oracle=oracle,
                linear=linear,
                regions=session_neurons["region_beryl"].tolist(),
                normalization=test_data.normalization,
            )
    plot_inputs["neuron_features"] = features
    plot_inputs["true_neuron_parameters"] = truth_parameters
    plot_inputs["n_test_trials"] = len(test_trials)
    plot_inputs["split_sizes"] = _split_sizes(paths["dataset"], heldout_sessions)
    for key, per_session in baselines.items():
        methods[key] = {"average": average_over_sessions(per_session), "per_session": per_session}
    methods = {key: methods[key] for key in METHODS if key in methods}
    columns = table_metrics(modalities)
    for key in ("oracle", "linear_encoder", "poisson_glm", "linear_decoder"):
        for metric in columns:
            methods.get(key, {}).get("average", {}).setdefault(metric, float("nan"))
    return methods, plot_inputs


def _session_truth(
    one_cache: Path, session_id: str, neurons: Any, test: Mapping[str, np.ndarray]
) -> tuple[dict[str, Any] | None, np.ndarray | None]:
    """A held-out session's ground truth and oracle counts on its test trials (expected counts
    given what the model observes), or ``(None, None)`` when the cache holds no ground truth."""
    from .baselines import oracle_expected_counts
    from .data.synthetic import GROUND_TRUTH_DIRNAME, load_ground_truth

    if not (one_cache / GROUND_TRUTH_DIRNAME / f"{session_id}.npz").is_file():
        return None, None
    truth = load_ground_truth(one_cache, session_id)
    oracle = oracle_expected_counts(
        truth, neurons, test["trial_id"], array="expected_counts_observed"
    )
    return truth, oracle


def _split_sizes(dataset_dir: Path, sessions: list[str]) -> dict[str, dict[str, int]]:
    """Trials per split of each session: ``{session_id: {"train", "validation", "test"}}``."""
    from .data.preprocess import SPLITS
    from .data.training_data import NedsTrialDataset

    sizes: dict[str, dict[str, int]] = {s: {} for s in sessions}
    for split in SPLITS:
        indices = NedsTrialDataset(dataset_dir, split, sessions=sessions).session_indices()
        for session_id in sessions:
            sizes[session_id][split] = len(indices.get(session_id, ()))
    return sizes


def results_tables(
    methods: Mapping[str, Mapping[str, Any]],
    split_sizes: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str],
) -> dict[str, Any]:
    """The stable ``results`` block of ``results.json`` (schema :data:`RESULTS_SCHEMA_VERSION`).

    ::

        {"schema_version": 1,
         "metrics": [metric, ...],            # e.g. "bps", "bps_pooled", "choice_balanced_accuracy"
         "methods": [method, ...],            # keys of METHODS present in this run
         "per_session": {session_id: {"split_sizes": {"train": n, "validation": n, "test": n},
                                      "scores": {method: {metric: float | null}}}},
         "average": {"n_sessions": n,
                     "split_sizes": {"train": n, "validation": n, "test": n},   # summed
                     "scores": {method: {metric: float | null}}}}

    Every method has every metric; ``null`` where a metric does not apply (an encoder has no
    decoding score) or cannot be computed (no ground truth for the oracle of that session).
    ``average`` scores are the mean over held-out sessions as ``evaluation``
    computes it (``bps_pooled`` pools spikes over sessions).
    """

    def value(scores: Mapping[str, Any], metric: str) -> float | None:
        number = scores.get(metric)
        return None if number is None or not np.isfinite(number) else float(number)

    per_session = {
        session_id: {
            "split_sizes": dict(sizes),
            "scores": {
                method: {
                    m: value(entry.get("per_session", {}).get(session_id, {}), m) for m in metrics
                }
                for method, entry in methods.items()
            },
        }
        for session_id, sizes in split_sizes.items()
    }
    totals = {
        split: sum(sizes[split] for sizes in split_sizes.values())
        for split in ("train", "validation", "test")
    }
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "metrics": list(metrics),
        "methods": list(methods),
        "per_session": per_session,
        "average": {
            "n_sessions": len(split_sizes),
            "split_sizes": totals,
            "scores": {
                method: {m: value(entry["average"], m) for m in metrics}
                for method, entry in methods.items()
            },
        },
    }


def _all_region_probes(
    finetuned: Any,
    pretrained: Any,
    sessions: tuple[list[str], list[str]],
    plot_inputs: dict[str, Any],
    dataset_dir: Path,
    seed: int,
    notes: list[str],
) -> dict[str, Any]:
    """Every region probe of the report: NEDS embeddings (fine-tuned on the held-out sessions,
    pretrained on the others), simple per-neuron features and, when every held-out session has
    ground truth, the generator's parameters. Pops the feature arrays from `plot_inputs`."""
    pretrain_sessions, heldout_sessions = sessions
    region_probe = _region_probes(
        [
            ("NEDS fine-tuned, held-out sessions", finetuned, heldout_sessions),
            ("NEDS pretrained, pretraining sessions", pretrained, pretrain_sessions),
        ],
        dataset_dir,
        seed,
        notes,
    )
    feature_probe = _feature_region_probe(
        plot_inputs.pop("neuron_features"), dataset_dir, seed, notes
    )
    if feature_probe:
        region_probe[FEATURE_PROBE_NAME] = feature_probe
    truth_parameters = plot_inputs.pop("true_neuron_parameters")
    without_truth = [s for s in heldout_sessions if s not in truth_parameters]
    if without_truth:  # a probe on some sessions only would not compare with the others
        notes.append(
            "region probe on the generator's per-neuron parameters not run: no ground "
            f"truth for held-out sessions {without_truth}"
        )
        return region_probe
    truth_probe = _feature_region_probe(
        truth_parameters, dataset_dir, seed, notes, name="generator's per-neuron parameters"
    )
    if truth_probe:
        region_probe[TRUTH_PROBE_NAME] = truth_probe
    return region_probe


def _region_probes(
    probe_models: Sequence[tuple[str, Any, list[str]]],
    dataset_dir: Path,
    seed: int,
    notes: list[str],
) -> dict[str, Any]:
    """The region probe of each (name, model, sessions) on its per-neuron embeddings."""
    from .data.load import load_neurons
    from .evaluation import DEFAULT_REGION_LEVELS, run_region_probe

    results = {}
    for name, model, sessions in probe_models:
        neurons = load_neurons(dataset_dir, sessions)
        regions = {
            level: {s: neurons.loc[neurons["session_id"] == s, level].tolist() for s in sessions}
            for level in DEFAULT_REGION_LEVELS
        }
        try:
            results[name] = run_region_probe(model, regions, seed=seed)
        except ValueError as error:
            notes.append(f"region probe ({name}) not run: {error}")
    return results


def _feature_region_probe(
    features: Mapping[str, np.ndarray],
    dataset_dir: Path,
    seed: int,
    notes: list[str],
    name: str = "per-neuron features",
) -> dict[str, Any] | None:
    """The region probe on per-neuron feature vectors ``{session_id: (N, F)}`` of the held-out
    sessions: simple fitted features (``baselines.neuron_features``: log mean count and Poisson
    GLM weights), what the embedding probe must beat, or the generator's own parameters
    (``baselines.true_neuron_parameters``), what the corpus makes linearly readable."""
    if not features:
        return None
    from .data.load import load_neurons
    from .evaluation import DEFAULT_REGION_LEVELS
    from .metrics import region_probe

    sessions = list(features)
    neurons = load_neurons(dataset_dir, sessions)
    stacked = np.concatenate([features[s] for s in sessions])  # (neurons, F)
    results = {}
    for level in DEFAULT_REGION_LEVELS:
        labels = np.concatenate(
            [neurons.loc[neurons["session_id"] == s, level].to_numpy() for s in sessions]
        )
        try:
            results[level] = region_probe(stacked, labels, seed=seed)
        except ValueError as error:
            notes.append(f"region probe ({name}, {level}) not run: {error}")
    return results or None


def physical_behavior(
    config: Any,
    values: Mapping[str, np.ndarray],
    stats: Mapping[str, Mapping[str, float]],
) -> dict[str, np.ndarray]:
    """Continuous behaviour of one session from the model's normalised scale back to physical
    units (``evaluation.denormalize_behavior`` with the model's ``behavior_normalization``);
    `stats` are the session's normalisation constants."""
    from .evaluation import denormalize_behavior

    return {
        spec["name"]: denormalize_behavior(
            values[spec["name"]], stats[spec["name"]], config.behavior_normalization
        )
        for spec in config.continuous_modalities
        if spec["name"] in values
    }


def _write_plots(
    report_dir: Path, model: Any, plot_inputs: Mapping[str, Any], runs: Mapping[str, Any]
) -> None:
    """rates.png, behavior.png and training_curves.png of the first held-out session."""
    from .evaluation import predict_session
    from .metrics import bits_per_spike
    from .report import plot_behavior, plot_rates, plot_training_curves

    test, trials = plot_inputs["test"], plot_inputs["trials"]
    session_id, normalization = plot_inputs["session_id"], plot_inputs["normalization"]
    window_start, bin_size_s = float(plot_inputs["window_s"][0]), float(plot_inputs["bin_size_s"])
    time_s = window_start + bin_size_s * (np.arange(test["spikes"].shape[1]) + 0.5)  # (T,)
    encoding = predict_session(model, trials, "encoding", normalization)
    decoding = predict_session(model, trials, "decoding", normalization)
    oracle = plot_inputs["oracle"]
    # neurons ranked by how well the oracle (else the linear encoder) predicts them
    _, reference_per_neuron = bits_per_spike(
        oracle if oracle is not None else plot_inputs["linear"].encoder_rates,
        test["spikes"],
        log_input=False,
        return_per_neuron=True,
    )
    ranked = np.argsort(np.nan_to_num(reference_per_neuron, nan=-np.inf))[::-1]
    curves = {"observed": test["spikes"]}
    if oracle is not None:
        curves["expected given behaviour (oracle)"] = oracle
    curves.update(
        {
            "NEDS fine-tuned": encoding.rates,
            "linear encoder": plot_inputs["linear"].encoder_rates,
        }
    )
    # one row of panels per class of the first trial-level label (e.g. choice), if any
    labels = [
        spec["name"]
        for spec in model.config.categorical_modalities
        if spec["trial_level"] and spec["name"] in test
    ]
    conditions = (
        {f"{labels[0]} {value}": test[labels[0]] == value for value in np.unique(test[labels[0]])}
        if labels
        else {"all trials": np.ones(len(trials), dtype=bool)}
    )
    plot_rates(
        report_dir / "rates.png",
        time_s,
        bin_size_s,
        curves,
        conditions,
        ranked[:4].tolist(),
        plot_inputs["regions"],
    )
    continuous = [spec["name"] for spec in model.config.continuous_modalities]
    behavior_curves = {
        "true": {name: test[name] for name in continuous},
        "NEDS fine-tuned": physical_behavior(
            model.config, decoding.behavior_predictions, normalization[session_id]
        ),
        "ridge decoder": {n: plot_inputs["linear"].decoded[n] for n in continuous},
    }
    moving = np.argsort(test[continuous[0]].max(axis=1))[::-1] if continuous else []
    plot_behavior(
        report_dir / "behavior.png",
        time_s,
        behavior_curves,
        moving[[0, len(moving) // 2, -1]].tolist() if len(moving) >= 3 else list(moving),
        test["trial_id"],
    )
    plot_training_curves(
        report_dir / "training_curves.png",
        {
            "pretrain": runs["pretrain"].history,
            "fine-tune": runs["finetune"].history,
            "from scratch": runs["scratch"].history,
        },
    )


def _save_card(
    model: Any, paths: Mapping[str, Path], runs: Mapping[str, Any], average: Mapping[str, float]
) -> None:
    """The fine-tuned model with its card; the model-index is the table's fine-tuned row."""
    from .evaluation import report_to_eval_results
    from .hub import TRAINING_CONFIG_FILE, save_model_with_card

    training_config_path = Path(runs["finetune"].model_dir) / TRAINING_CONFIG_FILE
    training_config = (
        yaml.safe_load(training_config_path.read_text(encoding="utf-8"))
        if training_config_path.is_file()
        else None
    )
    eval_results = report_to_eval_results(
        average,
        DATASET_NAME,
        DATASET_TYPE,
        split="test",
        metrics=list(table_metrics(model.config.behavior_modalities)),
    )
    save_model_with_card(
        model,
        paths["model"],
        repo_id="local/neds-demo-finetuned",
        eval_results=eval_results,
        datasets=[str(paths["dataset"])],
        training_config=training_config,
        base_model=str(runs["pretrain"].model_dir),
    )


# =============================================================================================
# The demo
# =============================================================================================


def _results(
    settings: Mapping[str, Any],
    sessions: Mapping[str, Any],
    methods: Mapping[str, Any],
    region_probe: Mapping[str, Any],
    runs: Mapping[str, Any],
    extras: Mapping[str, Any],
) -> dict[str, Any]:
    """The results dict written as ``results.json`` (and rendered as ``report.md``)."""
    run_sessions = {
        "pretrain": sessions["pretrain"],
        "finetune": sessions["heldout"],
        "scratch": sessions["heldout"],
    }
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "results": results_tables(methods, extras["split_sizes"], list(extras["table_metrics"])),
        "settings": dict(settings),
        "sessions": dict(sessions),
        "n_test_trials": extras["n_test_trials"],
        "methods": methods,
        "table_metrics": extras["table_metrics"],
        "region_probe": region_probe,
        "training": {
            name: {
                "sessions": run_sessions[name],
                "global_step": run.global_step,
                "best_step": run.best_step,
                "best_score": run.best_score,
                "model_dir": run.model_dir,
                "history": run.history,
            }
            for name, run in runs.items()
        },
        "timings_s": extras["timings_s"],
        "notes": extras["notes"],
        "paths": {key: str(path) for key, path in extras["paths"].items()},
        "command": extras["command"],
    }


def _checked_settings(
    sizes: dict[str, Any],
    seed: int,
    num_threads: int,
    preset: str,
    cache_dir: str | Path | None,
    eids: Sequence[str] | None,
    heldout_eids: Sequence[str] | None,
    output_dir: str | Path,
) -> dict[str, Any]:
    """The demo's settings after checking them (nothing is written before); sets the torch
    thread count the three runs use."""
    from .training.setup import configure_threads

    check_demo_settings(**sizes, preset=preset)
    if cache_dir is not None:
        check_own_sessions(cache_dir, eids, heldout_eids, output_dir)
    elif eids is not None or heldout_eids is not None:
        raise ValueError("eids and heldout_eids are only used with cache_dir")
    return dict(
        sizes,
        num_attention_heads=max(1, sizes["hidden_size"] // 32),
        seed=seed,
        torch_threads=configure_threads(num_threads),
        preset=preset,
        cache_dir=None if cache_dir is None else str(cache_dir),
        eids=None if eids is None else list(eids),
        heldout_eids=None if heldout_eids is None else list(heldout_eids),
    )


def _count(number: int, noun: str) -> str:
    """``"1 session"``, ``"2 sessions"``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def run_demo(
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    *,
    n_sessions: int = DEMO_DEFAULTS["n_sessions"],
    n_heldout: int = DEMO_DEFAULTS["n_heldout"],
    n_trials: int = DEMO_DEFAULTS["n_trials"],
    n_neurons: int = DEMO_DEFAULTS["n_neurons"],
    hidden_size: int = DEMO_DEFAULTS["hidden_size"],
    num_layers: int = DEMO_DEFAULTS["num_layers"],
    pretrain_steps: int = DEMO_DEFAULTS["pretrain_steps"],
    finetune_steps: int = DEMO_DEFAULTS["finetune_steps"],
    batch_size: int = DEMO_DEFAULTS["batch_size"],
    learning_rate: float = DEMO_DEFAULTS["learning_rate"],
    seed: int = DEMO_DEFAULTS["seed"],
    num_threads: int = DEMO_DEFAULTS["num_threads"],
    preset: str = DEMO_DEFAULTS["preset"],
    cache_dir: str | Path | None = None,
    eids: Sequence[str] | None = None,
    heldout_eids: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the demo end to end and return the results (also written to ``report/results.json``).

    Args:
        output_dir: folder of the corpus, dataset, runs, model and report; refused when it
            exists and is not empty unless `overwrite`.
        n_sessions: synthetic sessions; the last `n_heldout` are held out (fine-tuning,
            from-scratch training and evaluation), the others are for pretraining.
        n_trials: trials per session (a few planted bad trials are excluded by preprocessing).
        n_neurons: units per probe (before the 2 Hz firing-rate filter).
        hidden_size, num_layers: model size (heads: one per 32 hidden units).
        pretrain_steps: optimizer steps of pretraining.
        finetune_steps: optimizer steps of fine-tuning and of the from-scratch run.
        batch_size, learning_rate, seed: optimisation settings shared by the three runs.
        num_threads: torch threads (0: the idle cores, as training chooses them; on a busy
            2-core machine one thread is several times faster than two).
        overwrite: replace the demo folders of an existing output folder; the previous ones
            are put back if this run fails.
        preset: realism preset of the synthetic corpus (``data.synthetic.PRESETS``).
        cache_dir: run on this ONE cache instead of a synthetic corpus: the sessions `eids`
            (all of them go into the dataset), of which `heldout_eids` are held out and the
            others pretrained on; `n_sessions`, `n_heldout`, `n_trials`, `n_neurons` and
            `preset` are then unused. The oracle row is scored for the held-out sessions
            with ground truth in ``<cache_dir>/ground_truth`` (synthetic caches) only.
        progress: show progress bars.

    ``report/results.json`` carries ``schema_version`` and the stable ``results`` block of
    :func:`results_tables` (per held-out session and averaged: method x metric, split sizes).
    """
    sizes = dict(
        n_sessions=n_sessions,
        n_heldout=n_heldout,
        n_trials=n_trials,
        n_neurons=n_neurons,
        hidden_size=hidden_size,
        num_layers=num_layers,
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
    )
    settings = _checked_settings(
        sizes, seed, num_threads, preset, cache_dir, eids, heldout_eids, output_dir
    )
    output_dir = Path(output_dir)
    backup = prepare_output_dir(output_dir, overwrite)
    succeeded = False
    try:
        results = _run_stages(output_dir, settings, progress)
        succeeded = True
    finally:
        restore_output_dir(output_dir, backup, succeeded)
    return results


def _run_stages(output_dir: Path, settings: dict[str, Any], progress: bool) -> dict[str, Any]:
    """The seven stages of :func:`run_demo` into a prepared `output_dir`."""
    from .modeling_neds import NedsForMaskedModeling

    paths = {
        "report": output_dir / "report",
        "model": output_dir / "model",
        "dataset": output_dir / "dataset",
        "one_cache": (
            output_dir / "one_cache"
            if settings["cache_dir"] is None
            else Path(settings["cache_dir"])
        ),
        "runs": output_dir / "runs",
    }
    stage_settings = dict(settings, progress=progress)
    timer, total_start, notes = StageTimer(n_stages=7), time.perf_counter(), []
    build, pretrain_sessions, heldout_sessions = _build_corpus(paths, stage_settings, timer, notes)
    runs = _train_runs(pretrain_sessions, heldout_sessions, paths, stage_settings, timer)
    with timer.stage("evaluate", "evaluating on the held-out test trials"):
        models = {
            key: NedsForMaskedModeling.from_pretrained(runs[run].model_dir)
            for key, run in (("neds_finetuned", "finetune"), ("neds_scratch", "scratch"))
        }
        methods, plot_inputs = _evaluate_methods(
            models, heldout_sessions, paths, stage_settings, notes
        )
        pretrained = NedsForMaskedModeling.from_pretrained(runs["pretrain"].model_dir)
        region_probe = _all_region_probes(
            models["neds_finetuned"],
            pretrained,
            (pretrain_sessions, heldout_sessions),
            plot_inputs,
            paths["dataset"],
            settings["seed"],
            notes,
        )
    with timer.stage("report", f"writing the report to {paths['report']}"):
        plot_inputs.update(window_s=build.config.window, bin_size_s=build.config.bin_size)
        _write_plots(paths["report"], models["neds_finetuned"], plot_inputs, runs)
        _save_card(models["neds_finetuned"], paths, runs, methods["neds_finetuned"]["average"])
    # written last so that they carry every stage's time
    timer.seconds["total"] = round(time.perf_counter() - total_start, 1)
    columns = table_metrics(models["neds_finetuned"].config.behavior_modalities)
    results = _results(
        dict(
            {k: v for k, v in settings.items() if k not in ("eids", "heldout_eids")},
            dropout=DEMO_DROPOUT,
            masking_schemes=list(DEMO_MASKING_SCHEMES),
        ),
        {"pretrain": pretrain_sessions, "heldout": heldout_sessions, "skipped": build.skipped},
        methods,
        region_probe,
        runs,
        {
            "n_test_trials": plot_inputs["n_test_trials"],
            "split_sizes": plot_inputs["split_sizes"],
            "table_metrics": columns,
            "timings_s": timer.seconds,
            "notes": notes,
            "paths": paths,
            "command": reproduce_command(output_dir, settings),
        },
    )
    write_markdown(
        paths["report"] / "report.md",
        demo_report_markdown(results, METHODS, columns),
    )
    if settings["cache_dir"] is not None:
        atomic_write_text(
            paths["report"] / EIDS_FILENAME, "".join(f"{eid}\n" for eid in settings["eids"])
        )
    write_json(paths["report"] / "results.json", results)
    return results


def reproduce_command(output_dir: Path, settings: Mapping[str, Any]) -> str:
    """The ``neds-hf demo`` command line that reruns this demo."""
    if settings["cache_dir"] is None:
        corpus = {
            "--sessions": settings["n_sessions"],
            "--heldout": settings["n_heldout"],
            "--trials": settings["n_trials"],
            "--neurons": settings["n_neurons"],
            "--preset": settings["preset"],
        }
    else:
        corpus = {
            "--cache-dir": settings["cache_dir"],
            "--eids-file": output_dir / "report" / EIDS_FILENAME,
            "--heldout-eids": ",".join(settings["heldout_eids"]),
        }
    flags = {
        "--output": output_dir,
        **corpus,
        "--hidden-size": settings["hidden_size"],
        "--layers": settings["num_layers"],
        "--pretrain-steps": settings["pretrain_steps"],
        "--finetune-steps": settings["finetune_steps"],
        "--batch-size": settings["batch_size"],
        "--learning-rate": settings["learning_rate"],
        "--seed": settings["seed"],
    }
    return (
        "neds-hf demo "
        + " ".join(f"{flag} {shlex.quote(str(value))}" for flag, value in flags.items())
        + " --overwrite"
    )


def read_eids_file(path: str | Path) -> list[str]:
    """Session ids of an eids file: one per line, blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--eids-file {path} is not a file")
    lines = path.read_text(encoding="utf-8").splitlines()
    eids = [line.split("#", 1)[0].strip() for line in lines]
    eids = [eid for eid in eids if eid]
    if not eids:
        raise ValueError(f"--eids-file {path} lists no session ids")
    duplicates = sorted({eid for eid in eids if eids.count(eid) > 1})
    if duplicates:
        raise ValueError(f"--eids-file {path} lists {duplicates} more than once")
    return eids


def check_own_sessions(
    cache_dir: str | Path,
    eids: Sequence[str] | None,
    heldout_eids: Sequence[str] | None,
    output_dir: str | Path | None = None,
) -> None:
    """Raise a ValueError unless `cache_dir` is a folder outside the demo folders of
    `output_dir` (which ``overwrite`` replaces) and `heldout_eids` are some, not all, of
    `eids` (at least one session is left for pretraining)."""
    if not Path(cache_dir).is_dir():
        raise ValueError(f"--cache-dir {cache_dir} is not a folder")
    if output_dir is not None:
        cache = Path(cache_dir).resolve()
        for name in DEMO_SUBDIRS:
            folder = (Path(output_dir) / name).resolve()
            if cache == folder or folder in cache.parents:
                raise ValueError(
                    f"--cache-dir {cache_dir} lies in the demo folder {folder}, which the "
                    "demo writes; copy the cache elsewhere or choose another --output"
                )
    if not eids or not heldout_eids:
        raise ValueError("--cache-dir needs --eids-file and --heldout-eids")
    unknown = [eid for eid in heldout_eids if eid not in eids]
    if unknown:
        raise ValueError(f"--heldout-eids {unknown} are not in the eids file")
    if len(set(heldout_eids)) != len(heldout_eids):
        raise ValueError(f"--heldout-eids lists a session twice: {list(heldout_eids)}")
    if len(set(eids) - set(heldout_eids)) < 1:
        raise ValueError("every session of the eids file is held out; none is left to pretrain")


def check_demo_settings(
    *,
    n_sessions: int,
    n_heldout: int,
    n_trials: int,
    n_neurons: int,
    hidden_size: int,
    num_layers: int,
    pretrain_steps: int,
    finetune_steps: int,
    batch_size: int,
    learning_rate: float,
    preset: str = DEMO_DEFAULTS["preset"],
) -> None:
    """Raise a ValueError naming every invalid demo setting (before anything is written)."""
    from .data.synthetic import PRESETS

    errors = []
    if preset not in PRESETS:
        errors.append(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if n_heldout < 1 or n_sessions - n_heldout < 1:
        errors.append(
            f"need at least one pretraining and one held-out session, got "
            f"sessions={n_sessions}, heldout={n_heldout}"
        )
    if n_trials < 40:
        errors.append(
            f"trials must be >= 40 (train / validation / test splits of every session "
            f"need trials of both choices), got {n_trials}"
        )
    for name, value in (
        ("neurons", n_neurons),
        ("pretrain_steps", pretrain_steps),
        ("finetune_steps", finetune_steps),
        ("batch_size", batch_size),
        ("hidden_size", hidden_size),
        ("layers", num_layers),
    ):
        if value < 1:
            errors.append(f"{name} must be >= 1, got {value}")
    if hidden_size >= 1 and hidden_size % 32 and hidden_size > 32:
        errors.append(
            f"hidden_size above 32 must be a multiple of 32 (one attention head per "
            f"32 units), got {hidden_size}"
        )
    if not learning_rate > 0:
        errors.append(f"learning_rate must be > 0, got {learning_rate}")
    if errors:
        raise ValueError("invalid demo settings: " + "; ".join(errors))


# =============================================================================================
# Command line
# =============================================================================================


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``neds-hf demo`` options to `parser`."""
    defaults = DEMO_DEFAULTS
    options = (
        ("--sessions", "n_sessions", int, "synthetic sessions"),
        ("--heldout", "n_heldout", int, "of which held out for fine-tuning and evaluation"),
        ("--trials", "n_trials", int, "trials per session"),
        ("--neurons", "n_neurons", int, "units per probe before the 2 Hz firing-rate filter"),
        ("--hidden-size", "hidden_size", int, "hidden size (one attention head per 32)"),
        ("--layers", "num_layers", int, "transformer layers"),
        ("--pretrain-steps", "pretrain_steps", int, "pretraining optimizer steps"),
        (
            "--finetune-steps",
            "finetune_steps",
            int,
            "fine-tuning (and from-scratch) optimizer steps",
        ),
        ("--batch-size", "batch_size", int, "trials per batch"),
        ("--learning-rate", "learning_rate", float, "peak learning rate of the three runs"),
        ("--seed", "seed", int, "corpus and training seed"),
        ("--num-threads", "num_threads", int, "torch threads per run; 0 = the idle cores"),
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(DEFAULT_OUTPUT_DIR),
        help=f"output folder (default ./{DEFAULT_OUTPUT_DIR})",
    )
    for flag, key, kind, description in options:
        parser.add_argument(
            flag,
            dest=key,
            metavar=key.removeprefix("n_").upper(),
            type=kind,
            default=defaults[key],
            help=f"{description} (default {defaults[key]})",
        )
    parser.add_argument(
        "--preset",
        default=defaults["preset"],
        help="realism preset of the synthetic corpus: 'realistic' (weak, IBL-like choice and "
        f"block signals) or 'easy' (default {defaults['preset']})",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="run on the sessions of this ONE cache instead of a synthetic corpus "
        "(with --eids-file and --heldout-eids)",
    )
    parser.add_argument(
        "--eids-file", type=Path, default=None, help="session ids of --cache-dir, one per line"
    )
    parser.add_argument(
        "--heldout-eids",
        type=lambda text: [eid.strip() for eid in text.split(",") if eid.strip()],
        default=None,
        metavar="EID[,EID...]",
        help="sessions of the eids file to hold out (fine-tuning, from-scratch, evaluation)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo folders of an existing output folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def run_demo_cli(args: argparse.Namespace) -> int:
    """Run ``neds-hf demo`` with parsed `args`; prints the report location and the table."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("neds_hf").setLevel(logging.INFO)
    # keep the output to the demo's stages and training bars, not every file written or read
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    settings = {key: getattr(args, key) for key in DEMO_DEFAULTS}
    own: dict[str, Any] = {}
    try:
        check_demo_settings(
            **{k: v for k, v in settings.items() if k not in ("seed", "num_threads")}
        )
        if args.cache_dir is not None:
            if args.eids_file is None:
                raise ValueError("--cache-dir needs --eids-file")
            own = dict(
                cache_dir=args.cache_dir,
                eids=read_eids_file(args.eids_file),
                heldout_eids=args.heldout_eids,
            )
            check_own_sessions(**own, output_dir=args.output)
        elif args.eids_file is not None or args.heldout_eids is not None:
            raise ValueError("--eids-file and --heldout-eids need --cache-dir")
        check_output_dir(args.output, args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as error:
        print(f"neds-hf demo: error: {error}", file=sys.stderr)
        return 2
    results = run_demo(
        args.output, overwrite=args.overwrite, progress=not args.no_progress, **settings, **own
    )
    print()
    print(
        f"Report: {Path(results['paths']['report']) / 'report.md'} (results.json and plots "
        f"next to it); fine-tuned model with its card: {results['paths']['model']}"
    )
    print(
        f"Held-out test split, {_count(len(results['sessions']['heldout']), 'session')}, total "
        f"{results['timings_s']['total']} s:"
    )
    print()
    print(methods_table(results["methods"], METHODS, results["table_metrics"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m neds_hf.demo [options]``."""
    parser = argparse.ArgumentParser(
        prog="neds-hf demo",
        allow_abbrev=False,
        description="Run NEDS end to end on a synthetic IBL-like corpus (offline, CPU): "
        "pretrain, fine-tune on held-out sessions, evaluate against the oracle rates "
        "and linear baselines, and write a report.",
    )
    add_demo_arguments(parser)
    return run_demo_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
