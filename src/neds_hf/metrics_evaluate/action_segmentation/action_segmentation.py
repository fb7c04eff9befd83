"""Action segmentation metrics as an ``evaluate`` metric module (self-contained).

Frame accuracy and macro F1 on frames whose true label is not background (class 0), the
segmental edit score and F1@{10, 25, 50} (MS-TCN definitions). Each input row is one session:
a list of per-frame class indices.
"""

import datasets
import evaluate

from .segmentation_scores import F1_THRESHOLDS, score_sessions

_DESCRIPTION = """
Action segmentation scores per session and over sessions: accuracy and macro F1 over frames
whose reference is not background (0), segmental edit score and F1@k in percent.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per session, the predicted class of every frame (list of int).
    references: per session, the true class of every frame (0 = unlabelled).
    num_classes: number of classes including background.
    thresholds: IoU thresholds of the segmental F1 (default 0.1, 0.25, 0.5).
Returns:
    accuracy, macro_f1, edit, f1@10, f1@25, f1@50 over all sessions, and `per_session`.
Examples:
    >>> metric = evaluate.load(evaluate_metric_path("action_segmentation"))
    >>> metric.compute(predictions=[[1, 1, 2]], references=[[1, 2, 2]], num_classes=3)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ActionSegmentation(evaluate.Metric):
    """Frame and segment scores of per-frame action labels."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, num_classes, thresholds=F1_THRESHOLDS):
        scores = score_sessions(references, predictions, num_classes, thresholds)
        return {**scores["average"], "per_session": scores["per_session"]}
