"""Accuracy as an ``evaluate`` metric module (sklearn ``accuracy_score``, as ``neds_hf.metrics``).

Self-contained: ``evaluate`` copies this file into its module cache, so it imports no neds_hf
code.

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("accuracy"))``.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Fraction of trials whose predicted class equals the true class (sklearn `accuracy_score`).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class per trial (int).
    references: true class per trial (int).
Returns:
    accuracy (float).
Examples:
    >>> metric = evaluate.load(evaluate_metric_path("accuracy"))
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
"""


def _accuracy(predictions, references):
    """Fraction of correct labels; logits / probabilities ``(n, C)`` are reduced by argmax."""
    predicted, target = np.asarray(predictions), np.asarray(references).reshape(-1)
    if predicted.ndim == 2 and predicted.shape[0] == target.shape[0]:
        predicted = predicted.argmax(axis=-1)
    return float(accuracy_score(target, predicted.reshape(-1)))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Accuracy of categorical predictions."""

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
        return {"accuracy": _accuracy(predictions, references)}
