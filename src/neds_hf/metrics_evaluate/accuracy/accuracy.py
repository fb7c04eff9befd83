"""Accuracy as an ``evaluate`` metric module (wraps ``neds_hf.metrics.accuracy``).

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("accuracy"))``.
"""

import datasets
import evaluate

from neds_hf.metrics import accuracy

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
        return {"accuracy": accuracy(predictions, references)}
