"""Balanced accuracy as an ``evaluate`` metric module (wraps ``neds_hf.metrics``).

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("balanced_accuracy"))``.
"""

import datasets
import evaluate

from neds_hf.metrics import balanced_accuracy

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
        return {"balanced_accuracy": balanced_accuracy(predictions, references)}
