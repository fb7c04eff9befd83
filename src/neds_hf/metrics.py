"""Evaluation metrics for neural encoding and decoding.

Numpy in, floats / arrays out (torch tensors are accepted and converted). Everything is
computed in float64 so that scores do not depend on the precision the model ran in.

Definitions (see DESIGN.md, "Metrics"):

* **Bits per spike** for spike prediction, per neuron ``n`` over the evaluated trials x bins::

      bps_n = (NLL(null) - NLL(model)) / (sum of spikes * ln 2)

  with the Poisson negative log-likelihood ``NLL = sum(rate - y * log(rate) + lgamma(y + 1))``
  and the null model predicting the neuron's mean count over the same evaluated entries.
  Two conventions are reported: ``"mean"`` (NEDS: mean of the per-neuron values, neurons
  without spikes ignored) and ``"pooled"`` (NLB / BrainWideBench / ``ibl-bwb-eval``: sums over
  neurons before dividing by the total spike count).
* **R²** for continuous behaviour, ``sklearn.metrics.r2_score`` on trials x bins flattened,
  and a PSTH R² on condition-averaged traces.
* **Accuracy** and **balanced accuracy** for categorical behaviour (scikit-learn's).
* :func:`encoding_scores`: the pair every table reports for an encoder (``bps`` mean and
  ``bps_pooled``), so no caller re-implements it.
* **Region probe**: a cross-validated linear classifier of brain region from per-neuron
  embeddings.

The ``evaluate``-library modules in ``metrics_evaluate/`` (paths: :func:`evaluate_metric_path`)
load on their own, without neds_hf, because ``evaluate`` copies them out of the package; the
bits-per-spike module therefore carries its own short copy of the computation, and the tests
check that every module agrees with the functions here.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import gammaln
from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score

logger = logging.getLogger(__name__)

__all__ = [
    "ENCODING_METRICS",
    "MIN_RATE",
    "accuracy",
    "balanced_accuracy",
    "bits_per_spike",
    "encoding_scores",
    "evaluate_metric_path",
    "poisson_nll",
    "r2_flattened",
    "r2_psth",
    "region_probe",
]

#: Rates that are exactly zero are replaced by this value before taking logs (NLB / NEDS),
#: and units whose null rate is below it are excluded from the pooled score (ibl-bwb-eval).
MIN_RATE = 1e-9

#: The encoding score pair every table reports: metric key -> bits-per-spike convention.
ENCODING_METRICS = {"bps": "mean", "bps_pooled": "pooled"}

_EVALUATE_DIR = Path(__file__).resolve().parent / "metrics_evaluate"


# ---------------------------------------------------------------------------------------------
# Input conversion
# ---------------------------------------------------------------------------------------------


def _to_numpy(values: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested sequence to a numpy array of ``dtype``."""
    if hasattr(values, "detach") and hasattr(
        values, "cpu"
    ):  # torch.Tensor, without importing torch
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.double()  # bfloat16 has no numpy equivalent
        values = values.numpy()
    try:
        array = np.asarray(values, dtype=dtype) if dtype is not None else np.asarray(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"`{name}` could not be converted to a numeric array: {error}") from error
    return array


def _as_bool_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Broadcast a boolean mask to ``shape``, with a clear error when it does not fit."""
    mask_array = _to_numpy(mask, name, dtype=None)
    if mask_array.dtype != bool:
        if not np.isin(mask_array, (0, 1)).all():
            raise ValueError(
                f"`{name}` must be boolean (or 0/1), got values of dtype {mask_array.dtype}"
            )
        mask_array = mask_array.astype(bool)
    try:
        return np.broadcast_to(mask_array, shape)
    except ValueError as error:
        raise ValueError(
            f"`{name}` of shape {mask_array.shape} cannot be broadcast to the data shape {shape}"
        ) from error


def _prepare_poisson_inputs(
    predictions: Any,
    spike_counts: Any,
    *,
    log_input: bool,
    eval_mask: Any | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and flatten Poisson inputs to ``(samples, N)``.

    Returns ``(rates, log_rates, counts, evaluated)``: float64 arrays where entries that are not
    evaluated hold 0 (rates, counts) and ``evaluated`` is the boolean mask of evaluated entries.
    Spike counts that are NaN are treated as not evaluated, as in NLB.
    """
    predictions_array = _to_numpy(predictions, "predictions")
    counts_array = _to_numpy(spike_counts, "spike_counts")
    if predictions_array.shape != counts_array.shape:
        raise ValueError(
            f"predictions shape {predictions_array.shape} does not match spike_counts shape "
            f"{counts_array.shape}; both must be (trials, T, N) or (samples, N)"
        )
    if counts_array.ndim < 1:
        raise ValueError("spike_counts must have at least one dimension (the neuron axis last)")
    shape = counts_array.shape
    evaluated = ~np.isnan(counts_array)
    if eval_mask is not None:
        evaluated = evaluated & _as_bool_mask(eval_mask, shape, "eval_mask")

    num_neurons = shape[-1]
    evaluated = evaluated.reshape(-1, num_neurons)  # (S, N)
    counts = np.where(evaluated, counts_array.reshape(-1, num_neurons), 0.0)  # (S, N)
    predictions_flat = predictions_array.reshape(-1, num_neurons)  # (S, N)

    if np.any(counts < 0):
        raise ValueError("spike_counts must be non-negative for a Poisson likelihood")
    if np.any(np.isnan(predictions_flat[evaluated])):
        raise ValueError("predictions contain NaN at evaluated entries")

    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if log_input:
            rates = np.exp(predictions_flat)  # (S, N)
            log_rates = predictions_flat.copy()
        else:
            if np.any(predictions_flat[evaluated] < 0):
                raise ValueError("rates must be non-negative (pass log_input=True for log-rates)")
            rates = predictions_flat.copy()
            log_rates = np.log(rates)
        # Exactly-zero rates (including underflowed exp) are floored as in the reference.
        zero_rate = rates == 0
        rates[zero_rate] = MIN_RATE
        log_rates[zero_rate] = math.log(MIN_RATE)
    rates = np.where(evaluated, rates, 0.0)
    log_rates = np.where(evaluated, log_rates, 0.0)
    return rates, log_rates, counts, evaluated


# ---------------------------------------------------------------------------------------------
# Poisson likelihood and bits per spike
# ---------------------------------------------------------------------------------------------


def poisson_nll(
    log_rates_or_rates: Any,
    spike_counts: Any,
    *,
    log_input: bool = True,
    eval_mask: Any | None = None,
    per_neuron: bool = False,
) -> float | np.ndarray:
    """Poisson negative log-likelihood ``sum(rate - y * log(rate) + lgamma(y + 1))``.

    Args:
        log_rates_or_rates: predicted log-rates (``log_input=True``) or rates, ``(..., N)``.
        spike_counts: observed counts, same shape.
        log_input: whether the predictions are log-rates.
        eval_mask: boolean mask broadcastable to the data; only True entries are summed.
        per_neuron: return the per-neuron sums ``(N,)`` instead of the total.

    Zero rates are floored at :data:`MIN_RATE`; NaN counts are not evaluated.
    """
    rates, log_rates, counts, evaluated = _prepare_poisson_inputs(
        log_rates_or_rates, spike_counts, log_input=log_input, eval_mask=eval_mask
    )
    with np.errstate(invalid="ignore"):
        terms = rates - counts * log_rates + gammaln(counts + 1.0)  # (S, N)
    terms = np.where(evaluated, terms, 0.0)
    per_neuron_nll = terms.sum(axis=0)  # (N,)
    return per_neuron_nll if per_neuron else float(per_neuron_nll.sum())


def _bits_per_spike_terms(
    log_rates_or_rates: Any,
    spike_counts: Any,
    *,
    log_input: bool,
    eval_mask: Any | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-neuron ``(NLL_null - NLL_model, total spikes, null rate)``, each ``(N,)``.

    The log-factorial terms of the two likelihoods cancel exactly and are left out of the
    difference for accuracy.
    """
    rates, log_rates, counts, evaluated = _prepare_poisson_inputs(
        log_rates_or_rates, spike_counts, log_input=log_input, eval_mask=eval_mask
    )
    num_evaluated = evaluated.sum(axis=0).astype(np.float64)  # (N,)
    total_spikes = counts.sum(axis=0)  # (N,)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        null_rate = total_spikes / num_evaluated  # (N,), NaN where nothing is evaluated
        floored_null = np.where(null_rate == 0, MIN_RATE, null_rate)
        nll_null = num_evaluated * floored_null - total_spikes * np.log(floored_null)  # (N,)
        nll_model = rates.sum(axis=0) - (counts * log_rates).sum(axis=0)  # (N,)
        gain = nll_null - nll_model  # (N,)
    return gain, total_spikes, null_rate


def bits_per_spike(
    log_rates_or_rates: Any,
    spike_counts: Any,
    *,
    log_input: bool = True,
    convention: Literal["mean", "pooled"] = "mean",
    neuron_mask: Any | None = None,
    eval_mask: Any | None = None,
    return_per_neuron: bool = False,
) -> float | tuple[float, np.ndarray]:
    """Bits per spike of predicted rates against observed spike counts.

    Args:
        log_rates_or_rates: predicted log-rates (default) or rates, ``(trials, T, N)`` or
            ``(samples, N)``; the neuron axis is last.
        spike_counts: observed counts, same shape.
        log_input: whether the predictions are log-rates.
        convention: ``"mean"`` (NEDS): mean over neurons of the per-neuron bits per spike,
            neurons without spikes (NaN) ignored. ``"pooled"`` (NLB / BrainWideBench, equal to
            ``ibl_bwb_eval.metrics.BPS``): ``(sum_n NLL_null - sum_n NLL_model) /
            (total spikes * ln 2)`` over the neurons whose null rate is at least 1e-9.
        neuron_mask: boolean ``(N,)``; only True neurons enter the score (e.g. held-out
            neurons in co-smoothing). Excluded neurons are NaN in the per-neuron output.
        eval_mask: boolean mask broadcastable to the data saying which (trial, bin, neuron)
            entries are evaluated; the null rate is the mean over each neuron's evaluated
            entries. NaN spike counts are never evaluated.
        return_per_neuron: also return the per-neuron values ``(N,)``.

    Returns:
        The score as a float (NaN when no neuron can be scored), or ``(score, per_neuron)``.
        Per-neuron values are NaN for neurons with no evaluated spike and where the value is
        infinite (e.g. an infinite predicted rate); a non-finite pooled score is NaN too.
        Predicted rates that are exactly 0 (or log-rates whose exp underflows) are floored at
        1e-9 as in the NLB reference.
    """
    if convention not in ("mean", "pooled"):
        raise ValueError(f"convention must be 'mean' or 'pooled', got {convention!r}")
    gain, total_spikes, null_rate = _bits_per_spike_terms(
        log_rates_or_rates, spike_counts, log_input=log_input, eval_mask=eval_mask
    )
    num_neurons = gain.shape[0]
    selected = np.ones(num_neurons, dtype=bool)
    if neuron_mask is not None:
        neuron_mask_array = _to_numpy(neuron_mask, "neuron_mask", dtype=None).reshape(-1)
        if neuron_mask_array.shape != (num_neurons,):
            raise ValueError(
                f"neuron_mask must have shape ({num_neurons},), got {neuron_mask_array.shape}"
            )
        selected = _as_bool_mask(neuron_mask_array, (num_neurons,), "neuron_mask").copy()

    with np.errstate(divide="ignore", invalid="ignore"):
        per_neuron = gain / (total_spikes * math.log(2.0))  # (N,)
    per_neuron[~np.isfinite(per_neuron) | ~selected] = np.nan

    if convention == "mean":
        scored = per_neuron[~np.isnan(per_neuron)]
        score = float(scored.mean()) if scored.size else float("nan")
    else:
        valid = selected & (null_rate >= MIN_RATE)  # NaN null rates compare False
        spikes_sum = total_spikes[valid].sum()
        if not valid.any() or spikes_sum == 0:
            score = float("nan")
        else:
            with np.errstate(invalid="ignore"):
                score = float(gain[valid].sum() / (spikes_sum * math.log(2.0)))
            if not math.isfinite(score):
                score = float("nan")
    return (score, per_neuron) if return_per_neuron else score


def encoding_scores(rates: Any, spike_counts: Any, *, log_input: bool = False) -> dict[str, float]:
    """The bits-per-spike pair of an encoder: ``{"bps": mean convention, "bps_pooled": pooled}``.

    Every encoder of a table (NEDS, the oracle, the linear baselines) is scored by this one
    function, so the two conventions are always computed the same way. `rates` are expected
    counts per bin (or log-rates with `log_input`), ``(trials, T, N)`` like `spike_counts`.
    """
    return {
        key: bits_per_spike(rates, spike_counts, log_input=log_input, convention=convention)
        for key, convention in ENCODING_METRICS.items()
    }


# ---------------------------------------------------------------------------------------------
# Continuous behaviour
# ---------------------------------------------------------------------------------------------


def _check_pair(predictions: Any, targets: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    prediction_array = _to_numpy(predictions, f"{what} predictions")
    target_array = _to_numpy(targets, f"{what} targets")
    if prediction_array.shape != target_array.shape:
        raise ValueError(
            f"{what}: predictions shape {prediction_array.shape} does not match targets shape "
            f"{target_array.shape}"
        )
    if prediction_array.size == 0:
        raise ValueError(f"{what}: empty inputs")
    if not (np.isfinite(prediction_array).all() and np.isfinite(target_array).all()):
        raise ValueError(f"{what}: predictions and targets must be finite (found NaN or inf)")
    return prediction_array, target_array


def r2_flattened(
    pred: Any,
    target: Any,
    *,
    multioutput: Literal["uniform_average", "raw_values"] = "uniform_average",
) -> float | np.ndarray:
    """R² on trials x bins flattened (``sklearn.metrics.r2_score`` semantics).

    Args:
        pred: predictions ``(trials, T)`` or ``(samples,)``; with a trailing output axis,
            ``(trials, T, D)``, each output gets its own R².
        target: targets, same shape.
        multioutput: ``"uniform_average"`` (mean over outputs) or ``"raw_values"`` (array).

    A constant target gives 1.0 for a perfect prediction and 0.0 otherwise, as ``r2_score``
    does by default.
    """
    predictions, targets = _check_pair(pred, target, "r2_flattened")
    if predictions.ndim <= 2:
        predictions, targets = predictions.reshape(-1, 1), targets.reshape(-1, 1)  # (S, 1)
    else:
        predictions = predictions.reshape(-1, predictions.shape[-1])  # (S, D)
        targets = targets.reshape(-1, targets.shape[-1])  # (S, D)
    if multioutput not in ("uniform_average", "raw_values"):
        raise ValueError(
            f"multioutput must be 'uniform_average' or 'raw_values', got {multioutput!r}"
        )
    scores = r2_score(targets, predictions, multioutput="raw_values")  # (D,)
    return scores if multioutput == "raw_values" else float(np.mean(scores))


def r2_psth(pred: Any, target: Any, conditions: Any) -> float:
    """R² between condition-averaged traces (PSTH R²).

    Trials are grouped by their condition (a row of labels, e.g. ``(choice, reward, block)``);
    predictions and targets are averaged over the trials of each condition, the condition
    means are concatenated (conditions in sorted order) and scored with :func:`r2_flattened`.

    Args:
        pred: predictions ``(trials, T)`` (or ``(trials, T, D)``).
        target: targets, same shape.
        conditions: ``(trials,)`` or ``(trials, K)`` condition labels.
    """
    predictions, targets = _check_pair(pred, target, "r2_psth")
    condition_array = _to_numpy(conditions, "conditions", dtype=None)
    if condition_array.ndim == 1:
        condition_array = condition_array[:, None]  # (trials, 1)
    if condition_array.ndim != 2 or condition_array.shape[0] != predictions.shape[0]:
        raise ValueError(
            f"conditions must be (trials,) or (trials, K) with trials={predictions.shape[0]}, "
            f"got shape {condition_array.shape}"
        )
    # Integer codes per label column (works for strings and mixed objects), then unique rows.
    column_codes = np.stack(
        [np.unique(column, return_inverse=True)[1].reshape(-1) for column in condition_array.T],
        axis=1,
    )  # (trials, K)
    _, condition_ids = np.unique(column_codes, axis=0, return_inverse=True)
    condition_ids = condition_ids.reshape(-1)  # (trials,)
    predicted_means = []
    target_means = []
    for condition in np.unique(condition_ids):
        in_condition = condition_ids == condition
        predicted_means.append(predictions[in_condition].mean(axis=0))  # (T, ...)
        target_means.append(targets[in_condition].mean(axis=0))  # (T, ...)
    return r2_flattened(np.stack(predicted_means), np.stack(target_means))


# ---------------------------------------------------------------------------------------------
# Categorical behaviour
# ---------------------------------------------------------------------------------------------


def _labels_from(pred: Any, target: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Return integer-comparable label vectors; ``pred`` may be logits ``(n, C)``."""
    target_array = _to_numpy(target, f"{what} targets", dtype=None).reshape(-1)
    prediction_array = _to_numpy(pred, f"{what} predictions", dtype=None)
    if prediction_array.ndim == 2 and prediction_array.shape[0] == target_array.shape[0]:
        prediction_array = prediction_array.argmax(axis=-1)  # logits or probabilities -> labels
    prediction_array = prediction_array.reshape(-1)
    if prediction_array.shape != target_array.shape:
        raise ValueError(
            f"{what}: got {prediction_array.shape[0]} predictions for "
            f"{target_array.shape[0]} targets"
        )
    if target_array.size == 0:
        raise ValueError(f"{what}: empty inputs")
    return prediction_array, target_array


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of correct predictions (``sklearn.metrics.accuracy_score``).

    ``pred`` holds labels ``(n,)`` or logits / probabilities ``(n, C)`` (argmax is taken).
    """
    predictions, targets = _labels_from(pred, target, "accuracy")
    return float(accuracy_score(targets, predictions))


def balanced_accuracy(pred: Any, target: Any) -> float:
    """Mean per-class recall (``sklearn.metrics.balanced_accuracy_score``).

    ``pred`` holds labels ``(n,)`` or logits / probabilities ``(n, C)`` (argmax is taken).
    Classes are those present in ``target``: a class never predicted has recall 0 and counts;
    a class that is only predicted (absent from the targets) has no recall and is left out of
    the mean (sklearn's warning about it is silenced).
    """
    predictions, targets = _labels_from(pred, target, "balanced_accuracy")
    with warnings.catch_warnings():  # the left-out class is documented above, not a surprise
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(targets, predictions))


# ---------------------------------------------------------------------------------------------
# Region probe
# ---------------------------------------------------------------------------------------------


def region_probe(
    embeddings: Any,
    labels: Any,
    n_splits: int = 5,
    seed: int = 0,
    *,
    classifier: Literal["logistic", "linear_svm"] = "logistic",
) -> dict[str, Any]:
    """Cross-validated linear probe of brain region from per-neuron embeddings.

    A standardised linear classifier (logistic regression, or a linear SVM as in the NEDS
    paper) is scored with stratified ``n_splits``-fold cross-validation (shuffled with
    ``seed``). Classes with fewer than ``n_splits`` neurons cannot be stratified and are
    dropped; they are listed in the result (``dropped_classes``) and logged, never dropped
    silently.

    Args:
        embeddings: ``(n_neurons, D)`` per-neuron embeddings.
        labels: ``(n_neurons,)`` region labels (strings or integers).
        n_splits: number of cross-validation folds.
        seed: shuffling seed of the folds.
        classifier: ``"logistic"`` or ``"linear_svm"``.

    Returns:
        ``accuracy`` and ``macro_f1`` (means over folds), their standard deviations
        (``accuracy_std``, ``macro_f1_std``), ``chance_accuracy`` (majority-class fraction),
        ``n_neurons`` and ``n_classes`` used, ``classes``, ``dropped_classes``
        (label -> count) and ``n_neurons_dropped``.

    Raises:
        ValueError: mismatched shapes, non-finite embeddings, or fewer than 2 classes left.
    """
    features, targets, kept_classes, counts_info = _probe_inputs(embeddings, labels, n_splits)
    fold_accuracy, fold_macro_f1 = _probe_folds(
        features, targets, kept_classes, n_splits, seed, classifier
    )
    dropped, n_dropped, kept_counts = counts_info
    return {
        "accuracy": float(np.mean(fold_accuracy)),
        "accuracy_std": float(np.std(fold_accuracy)),
        "macro_f1": float(np.mean(fold_macro_f1)),
        "macro_f1_std": float(np.std(fold_macro_f1)),
        "chance_accuracy": float(kept_counts.max() / kept_counts.sum()),
        "n_neurons": int(targets.shape[0]),
        "n_classes": int(kept_classes.size),
        "classes": [_plain(label) for label in kept_classes],
        "dropped_classes": dropped,
        "n_neurons_dropped": n_dropped,
        "n_splits": int(n_splits),
        "classifier": classifier,
    }


def _probe_inputs(
    embeddings: Any, labels: Any, n_splits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[dict[Any, int], int, np.ndarray]]:
    """Validated probe inputs without the classes too small to stratify.

    Returns ``(features (n_kept, D), targets (n_kept,), kept classes, (dropped classes ->
    count, neurons dropped, kept class counts))``.
    """
    embedding_array = _to_numpy(embeddings, "embeddings")
    label_array = np.asarray(labels).reshape(-1)
    if embedding_array.ndim != 2:
        raise ValueError(f"embeddings must be (n_neurons, D), got shape {embedding_array.shape}")
    if embedding_array.shape[0] != label_array.shape[0]:
        raise ValueError(
            f"{embedding_array.shape[0]} embeddings but {label_array.shape[0]} labels; "
            "one label per neuron is expected"
        )
    if not np.isfinite(embedding_array).all():
        raise ValueError("embeddings contain NaN or inf")
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")

    classes, counts = np.unique(label_array, return_counts=True)
    too_small = counts < n_splits
    dropped = {
        _plain(label): int(count) for label, count in zip(classes[too_small], counts[too_small])
    }
    if dropped:
        logger.warning(
            "region_probe: dropping %d class(es) with fewer than %d neurons: %s",
            len(dropped),
            n_splits,
            dropped,
        )
    kept_classes = classes[~too_small]
    if kept_classes.size < 2:
        raise ValueError(
            f"region_probe needs at least 2 classes with >= {n_splits} neurons each; class counts "
            f"were { {_plain(c): int(n) for c, n in zip(classes, counts)} }"
        )
    keep = np.isin(label_array, kept_classes)
    info = (dropped, int((~keep).sum()), counts[~too_small])
    return embedding_array[keep], label_array[keep], kept_classes, info


def _probe_folds(
    features: np.ndarray,
    targets: np.ndarray,
    kept_classes: np.ndarray,
    n_splits: int,
    seed: int,
    classifier: str,
) -> tuple[list[float], list[float]]:
    """Accuracy and macro F1 of a standardised linear classifier on each stratified fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if classifier == "logistic":
        estimator = LogisticRegression(max_iter=5000)
    elif classifier == "linear_svm":
        estimator = LinearSVC(max_iter=20000, random_state=seed)
    else:
        raise ValueError(f"classifier must be 'logistic' or 'linear_svm', got {classifier!r}")
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold_accuracy, fold_macro_f1 = [], []
    for train_index, test_index in folds.split(features, targets):
        model = make_pipeline(StandardScaler(), estimator)
        model.fit(features[train_index], targets[train_index])
        predicted = model.predict(features[test_index])
        fold_accuracy.append(float(np.mean(predicted == targets[test_index])))
        fold_macro_f1.append(
            f1_score(
                targets[test_index],
                predicted,
                labels=kept_classes,
                average="macro",
                zero_division=0,
            )
        )
    return fold_accuracy, fold_macro_f1


def _plain(label: Any) -> Any:
    """Numpy scalar -> Python scalar, so that results serialise to JSON."""
    return label.item() if isinstance(label, np.generic) else label


# ---------------------------------------------------------------------------------------------
# evaluate-library modules
# ---------------------------------------------------------------------------------------------


def evaluate_metric_path(name: str) -> str:
    """Path of the ``evaluate`` metric module ``name`` shipped with neds_hf.

    Load it offline with ``evaluate.load(evaluate_metric_path("bits_per_spike"))``.
    """
    module_dir = _EVALUATE_DIR / name
    if not (module_dir / f"{name}.py").is_file():
        available = sorted(
            path.name for path in _EVALUATE_DIR.iterdir() if (path / f"{path.name}.py").is_file()
        )
        raise ValueError(f"unknown evaluate metric {name!r}; available: {available}")
    return str(module_dir)
