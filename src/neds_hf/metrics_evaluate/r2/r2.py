"""R² (trials x bins flattened) as an ``evaluate`` metric module (wraps ``neds_hf.metrics``).

Load offline with ``evaluate.load(neds_hf.metrics.evaluate_metric_path("r2"))``. With
``conditions`` given, the PSTH R² over condition-averaged traces is returned as ``r2_psth``.
"""

import datasets
import evaluate
import numpy as np

from neds_hf.metrics import r2_flattened, r2_psth

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
        result = {"r2": r2_flattened(predicted, target)}
        if conditions is not None:
            result["r2_psth"] = r2_psth(predicted, target, conditions)
        return result
