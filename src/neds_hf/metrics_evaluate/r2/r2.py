"""R² (trials x bins flattened) as an ``evaluate`` metric module (sklearn ``r2_score``).

Self-contained: ``evaluate`` copies this file into its module cache, so it imports no neds_hf
code; ``tests/test_metrics.py`` checks it against ``neds_hf.metrics.r2_flattened`` / ``r2_psth``.

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("r2"))``. With
``conditions`` given, the PSTH R² over condition-averaged traces is returned as ``r2_psth``.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import r2_score

_DESCRIPTION = """
Coefficient of determination of a continuous behaviour, computed on all trials x bins
flattened (sklearn `r2_score` semantics). Optionally also the R² of condition-averaged traces.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one example per trial, each a (T,) trace; or one float per sample.
    references: targets, same layout.
    conditions: optional (trials,) or (trials, K) condition labels, one row per trial example;
        adds `r2_psth`.
Returns:
    r2 (float), and r2_psth (float) when conditions are given.
Examples:
    >>> metric = evaluate.load(evaluate_metric_path("r2"))
    >>> metric.compute(predictions=predicted_wheel, references=wheel_speed)
"""


def _r2(predicted, target):
    """R² over every trial x bin flattened (one output)."""
    return float(r2_score(target.reshape(-1), predicted.reshape(-1)))


def _r2_psth(predicted, target, conditions):
    """R² of the condition-averaged traces, conditions in sorted order."""
    labels = np.asarray(conditions)
    labels = labels[:, None] if labels.ndim == 1 else labels  # (trials, K)
    if labels.ndim != 2 or labels.shape[0] != predicted.shape[0]:
        raise ValueError(f"conditions must be (trials,) or (trials, K), got {labels.shape}")
    codes = np.stack([np.unique(c, return_inverse=True)[1].reshape(-1) for c in labels.T], 1)
    _, condition_ids = np.unique(codes, axis=0, return_inverse=True)
    condition_ids = condition_ids.reshape(-1)  # (trials,)
    groups = [condition_ids == c for c in np.unique(condition_ids)]
    predicted_means = np.stack([predicted[g].mean(axis=0) for g in groups])
    target_means = np.stack([target[g].mean(axis=0) for g in groups])
    return _r2(predicted_means, target_means)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2(evaluate.Metric):
    """R² flattened over trials x bins (and PSTH R² given conditions)."""

    def _info(self):
        per_sample = datasets.Features(
            {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
        )
        per_trial = datasets.Features(
            {
                "predictions": datasets.Sequence(datasets.Value("float64")),
                "references": datasets.Sequence(datasets.Value("float64")),
            }
        )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[per_sample, per_trial],
        )

    def _compute(self, predictions, references, conditions=None):
        predicted = np.asarray(predictions, dtype=np.float64)
        target = np.asarray(references, dtype=np.float64)
        if predicted.shape != target.shape or not (
            np.isfinite(predicted).all() and np.isfinite(target).all()
        ):
            raise ValueError("r2: predictions and references must be finite and of one shape")
        result = {"r2": _r2(predicted, target)}
        if conditions is not None:
            result["r2_psth"] = _r2_psth(predicted, target, conditions)
        return result
