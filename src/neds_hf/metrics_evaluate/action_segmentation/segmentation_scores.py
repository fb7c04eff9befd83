"""Frame and segment metrics of action segmentation (numpy only, no neds_hf import).

Conventions:

* class 0 is background (unlabelled); frames whose TRUE label is background are not scored;
* frame metrics: accuracy, per-class precision / recall / F1 over the scored frames, and
  **macro F1** = unweighted mean of the per-class F1 over the non-background classes present in
  the true labels or the predictions of the scored frames (scikit-learn's default label set);
* segment metrics (MS-TCN definitions): segments are runs of equal labels (background runs are
  not segments; predictions on frames with a background truth are blanked first);
  edit = (1 - Levenshtein(true, predicted segment labels) / max(lengths)) * 100;
  F1@k: a predicted segment is a true positive if its best IoU with a same-label true segment
  not yet matched reaches k, else a false positive; unmatched true segments are false
  negatives; counts are summed over sessions before F1 is taken, in percent;
* empty cases: no segments on either side gives edit and F1@k of 100 (nothing to find, nothing
  found wrongly); segments on one side only give 0; a session without scored frames has no
  frame metrics (None) and is left out of the frame averages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Default IoU thresholds of the segmental F1 scores.
F1_THRESHOLDS = (0.10, 0.25, 0.50)


def _labels(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one label per frame (1-D), got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"`{name}` must hold integer class indices")
    return array.astype(np.int64)


def _pair(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _labels(true, "references"), _labels(pred, "predictions")
    if true.shape != pred.shape:
        raise ValueError(
            f"references have {true.size} frames but predictions have {pred.size}; "
            "one label per frame is needed on both sides"
        )
    return true, pred


def frame_scores(true: Any, pred: Any, num_classes: int, background: int = 0) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and macro F1 on frames whose truth is labelled."""
    true, pred = _pair(true, pred)
    scored = true != background
    true, pred = true[scored], pred[scored]
    result: dict[str, Any] = {"scored_frames": int(scored.sum())}
    if not true.size:
        result.update(accuracy=None, macro_f1=None, per_class={})
        return result
    present = sorted((set(true.tolist()) | set(pred.tolist())) - {background})
    per_class = {}
    for label in range(num_classes):
        if label == background:
            continue
        tp = float(np.sum((pred == label) & (true == label)))
        predicted, actual = float(np.sum(pred == label)), float(np.sum(true == label))
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1}
    result["accuracy"] = float(np.mean(true == pred))
    result["macro_f1"] = float(np.mean([per_class[label]["f1"] for label in present]))
    result["per_class"] = per_class
    return result


def segments(labels: Any, background: int = 0) -> list[tuple[int, int, int]]:
    """Runs of equal labels as ``(label, start, stop)`` (stop exclusive), without background."""
    labels = _labels(labels, "labels")
    if not labels.size:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [labels.size]])
    return [
        (int(labels[a]), int(a), int(b))
        for a, b in zip(starts, stops, strict=True)
        if labels[a] != background
    ]


def _blank(true: np.ndarray, pred: np.ndarray, background: int) -> np.ndarray:
    """Predictions with the frames of unlabelled truth set to background."""
    return np.where(true == background, background, pred)


def edit_score(true: Any, pred: Any, background: int = 0) -> float:
    """Segmental edit score in percent (100 = same sequence of segment labels)."""
    true, pred = _pair(true, pred)
    a = [s[0] for s in segments(true, background)]
    b = [s[0] for s in segments(_blank(true, pred, background), background)]
    if not a and not b:
        return 100.0
    distance = np.arange(len(b) + 1, dtype=np.float64)
    for i, label in enumerate(a, start=1):
        previous, distance[0] = distance.copy(), i
        for j in range(1, len(b) + 1):
            distance[j] = min(
                previous[j] + 1, distance[j - 1] + 1, previous[j - 1] + (label != b[j - 1])
            )
    return float((1.0 - distance[-1] / max(len(a), len(b))) * 100.0)


def segment_counts(true: Any, pred: Any, threshold: float, background: int = 0) -> tuple[int, ...]:
    """(true positives, false positives, false negatives) of predicted segments at IoU >= k."""
    true, pred = _pair(true, pred)
    true_segments = segments(true, background)
    hits = np.zeros(len(true_segments), dtype=bool)
    tp = fp = 0
    for label, start, stop in segments(_blank(true, pred, background), background):
        best, best_index = -1.0, -1
        for index, (t_label, t_start, t_stop) in enumerate(true_segments):
            if t_label != label or hits[index]:
                continue
            overlap = min(stop, t_stop) - max(start, t_start)
            iou = max(overlap, 0) / (max(stop, t_stop) - min(start, t_start))
            if iou > best:
                best, best_index = iou, index
        if best_index >= 0 and best >= threshold:
            tp, hits[best_index] = tp + 1, True
        else:
            fp += 1
    return tp, fp, len(true_segments) - int(hits.sum())


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """Segmental F1 in percent from summed counts (100 when there is nothing on either side)."""
    tp, fp, fn = int(tp), int(fp), int(fn)
    if tp + fp + fn == 0:
        return 100.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 200.0 * precision * recall / (precision + recall) if precision + recall else 0.0


def _threshold_name(threshold: float) -> str:
    return f"f1@{round(threshold * 100):d}"


def score_sessions(
    references: Sequence[Any],
    predictions: Sequence[Any],
    num_classes: int,
    thresholds: Sequence[float] = F1_THRESHOLDS,
    background: int = 0,
) -> dict[str, Any]:
    """All metrics per session and over sessions.

    The average pools frames for accuracy and macro F1, sums segment counts for F1@k and takes
    the mean edit score over sessions.
    """
    if len(references) != len(predictions):
        raise ValueError(
            f"{len(references)} reference sessions but {len(predictions)} prediction sessions"
        )
    per_session, totals = [], {k: np.zeros(3, dtype=np.int64) for k in thresholds}
    for true, pred in zip(references, predictions, strict=True):
        frames = frame_scores(true, pred, num_classes, background)
        row = {
            "accuracy": frames["accuracy"],
            "macro_f1": frames["macro_f1"],
            "edit": edit_score(true, pred, background),
            "scored_frames": frames["scored_frames"],
        }
        for k in thresholds:
            counts = segment_counts(true, pred, k, background)
            totals[k] += counts
            row[_threshold_name(k)] = f1_from_counts(*counts)
        per_session.append(row)
    pooled_true = np.concatenate([_labels(t, "references") for t in references] or [[]])
    pooled_pred = np.concatenate([_labels(p, "predictions") for p in predictions] or [[]])
    pooled = frame_scores(pooled_true, pooled_pred, num_classes, background)
    average = {
        "accuracy": pooled["accuracy"],
        "macro_f1": pooled["macro_f1"],
        "edit": float(np.mean([r["edit"] for r in per_session])) if per_session else None,
        "scored_frames": pooled["scored_frames"],
    }
    average.update({_threshold_name(k): f1_from_counts(*totals[k]) for k in thresholds})
    return {"per_session": per_session, "average": average, "per_class": pooled["per_class"]}
