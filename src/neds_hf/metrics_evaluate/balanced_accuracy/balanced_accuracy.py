"""Balanced accuracy as an ``evaluate`` metric module (sklearn, as ``neds_hf.metrics``).

Self-contained: ``evaluate`` copies this file into its module cache, so it imports no neds_hf
code.

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("balanced_accuracy"))``.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import balanced_accuracy_score

_DESCRIPTION = """
Mean per-class recall over the classes present in the references (sklearn
`balanced_accuracy_score`); a class that only appears in the predictions is left out.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class per trial (int).
    references: true class per trial (int).
Returns:
    balanced_accuracy (float).
Examples:
    >>> metric = evaluate.load(evaluate_metric_path("balanced_accuracy"))
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
"""


def _balanced_accuracy(predictions, references):
    """Mean per-class recall over the reference classes; logits are reduced by argmax."""
    predicted, target = np.asarray(predictions), np.asarray(references).reshape(-1)
    if predicted.ndim == 2 and predicted.shape[0] == target.shape[0]:
        predicted = predicted.argmax(axis=-1)
    with warnings.catch_warnings():  # a class only predicted is left out of the mean
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(target, predicted.reshape(-1)))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BalancedAccuracy(evaluate.Metric):
    """Balanced accuracy of categorical predictions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        return {"balanced_accuracy": _balanced_accuracy(predictions, references)}
