"""Action segmentation metrics against hand-computed values."""

from pathlib import Path

import evaluate
import pytest

from neds_hf.segmentation.metrics import (
    edit_score,
    frame_scores,
    score_sessions,
    segment_counts,
    segments,
)

TRUE = [1, 1, 1, 1, 2, 2, 2, 2, 0, 0]
PRED = [1, 2, 2, 1, 2, 2, 2, 2, 1, 1]


def test_frame_scores_skip_background_truth_and_macro_average():
    scores = frame_scores(TRUE, PRED, num_classes=3)
    assert scores["scored_frames"] == 8
    assert scores["accuracy"] == pytest.approx(6 / 8)
    # class 1: precision 2/2, recall 2/4 -> F1 2/3; class 2: precision 4/6, recall 1 -> F1 0.8
    assert scores["per_class"][1]["f1"] == pytest.approx(2 / 3)
    assert scores["per_class"][2]["precision"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_macro_f1_is_not_accuracy():
    # 9 frames of class 1 right, 1 frame of class 2 called class 1: accuracy 0.9, macro F1 ~0.47
    scores = frame_scores([1] * 9 + [2], [1] * 10, num_classes=3)
    assert scores["accuracy"] == pytest.approx(0.9)
    assert scores["macro_f1"] == pytest.approx((2 * 0.9 / 1.9) / 2)


def test_segments_are_label_runs_without_background():
    assert segments([0, 1, 1, 2, 0, 0, 2]) == [(1, 1, 3), (2, 3, 4), (2, 6, 7)]
    assert segments([]) == []


def test_edit_and_segmental_f1_hand_computed():
    # predicted segments (after blanking unlabelled truth): 1[0,1) 2[1,3) 1[3,4) 2[4,8)
    assert edit_score(TRUE, PRED) == pytest.approx(50.0)  # 2 insertions / max(2, 4)
    assert segment_counts(TRUE, PRED, 0.10) == (2, 2, 0)
    assert segment_counts(TRUE, PRED, 0.25) == (2, 2, 0)
    assert segment_counts(TRUE, PRED, 0.50) == (1, 3, 1)
    scores = score_sessions([TRUE], [PRED], num_classes=3)["average"]
    assert scores["f1@10"] == pytest.approx(200 * 0.5 * 1 / 1.5)
    assert scores["f1@50"] == pytest.approx(200 * 0.25 * 0.5 / 0.75)


def test_a_second_prediction_of_a_matched_segment_is_a_false_positive():
    true = [1] * 10
    pred = [1] * 6 + [2] + [1] * 3  # two class-1 segments compete for one true segment
    assert segment_counts(true, pred, 0.1) == (1, 2, 0)


def test_empty_and_single_segment_cases():
    empty = score_sessions([[0, 0, 0]], [[1, 2, 2]], num_classes=3)
    row = empty["per_session"][0]
    assert row["accuracy"] is None and row["macro_f1"] is None and row["scored_frames"] == 0
    assert row["edit"] == 100.0 and row["f1@50"] == 100.0
    same = score_sessions([[2] * 10], [[2] * 10], num_classes=3)["average"]
    assert same["macro_f1"] == 1.0 and same["edit"] == 100.0 and same["f1@50"] == 100.0
    wrong = score_sessions([[2] * 10], [[1] * 10], num_classes=3)["average"]
    assert wrong["macro_f1"] == 0.0 and wrong["edit"] == 0.0 and wrong["f1@10"] == 0.0


def test_sessions_pool_frames_and_sum_segment_counts():
    result = score_sessions([TRUE, [2] * 4], [PRED, [2] * 4], num_classes=3)
    average = result["average"]
    assert average["accuracy"] == pytest.approx(10 / 12)
    assert average["edit"] == pytest.approx((50.0 + 100.0) / 2)
    # counts at 0.5: (1, 3, 1) + (1, 0, 0) -> precision 2/5, recall 2/3
    assert average["f1@50"] == pytest.approx(200 * 0.4 * (2 / 3) / (0.4 + 2 / 3))


def test_mismatched_lengths_are_clear_errors():
    with pytest.raises(ValueError, match="references have 3 frames but predictions have 2"):
        frame_scores([1, 1, 1], [1, 1], num_classes=2)


def test_evaluate_module_matches_the_functions():
    path = Path(__file__).resolve().parents[1] / "src/neds_hf/metrics_evaluate/action_segmentation"
    metric = evaluate.load(str(path))
    result = metric.compute(predictions=[PRED], references=[TRUE], num_classes=3)
    assert result["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert result["edit"] == pytest.approx(50.0)
    assert result["f1@50"] == pytest.approx(200 * 0.25 * 0.5 / 0.75)
