"""`neds-hf segment` subcommands: help, the synthetic -> prepare -> train -> predict ->
evaluate chain, baselines and the demo report (tiny settings)."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from neds_hf.cli import main
from neds_hf.segmentation.baselines import LagStackedBaseline, lag_stack
from neds_hf.segmentation.demo import run_demo

SUBCOMMANDS = ["make-synthetic", "prepare", "train", "predict", "evaluate", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: neds-hf segment" in capsys.readouterr().out


def test_segment_lists_its_commands(capsys):
    assert main(["segment"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in SUBCOMMANDS)


def test_unknown_segment_command_is_an_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "make"])
    assert exit_info.value.code == 2


def test_lag_stack_pads_with_zeros_instead_of_wrapping():
    stacked = lag_stack(np.array([[1.0], [2.0], [3.0]]), lags=1)
    assert stacked.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 0]]


@pytest.mark.parametrize("kind", ["logistic_regression", "random_forest"])
def test_baselines_learn_a_separable_problem_from_labelled_frames_only(kind):
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 1, 2], 50)
    features = (labels[:, None] == 2) * 3.0 + rng.normal(0, 0.3, size=(200, 2))
    given = labels.copy()
    given[::2] = 0  # half the frames unlabelled
    baseline = LagStackedBaseline(kind, lags=2).fit([features], [given])
    assert np.mean(baseline.predict(features) == labels) > 0.95


def test_workflow_from_the_command_line(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "run"
    assert (
        main(
            [
                "segment",
                "make-synthetic",
                "--output",
                str(data),
                "--frames",
                "400",
                "--train-sessions",
                "3",
                "--test-sessions",
                "1",
                "--labelled-fraction",
                "0.3",
            ]
        )
        == 0
    )
    assert (
        main(["segment", "prepare", "--data-dir", str(data), "--output", str(tmp_path / "ds")]) == 0
    )
    dataset = datasets.load_from_disk(str(tmp_path / "ds"))
    assert dataset["train"].num_rows == 3 and dataset["test"]["session_id"] == ["test_00"]
    assert len(dataset["test"][0]["features"]) == 400 and (tmp_path / "ds" / "README.md").is_file()
    assert (
        main(
            [
                "segment",
                "train",
                "--data_dir",
                str(data),
                "--output_dir",
                str(out),
                "--num_epochs",
                "1",
                "--hidden_size",
                "4",
                "--chunk_length",
                "100",
                "--report_to",
                "none",
                "--disable_progress_bar",
                "true",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "segment",
                "predict",
                str(out / "best"),
                "--data-dir",
                str(data),
                "--output",
                str(tmp_path / "pred"),
                "--sessions",
                "test_00",
            ]
        )
        == 0
    )
    assert (tmp_path / "pred" / "test_00_predictions.csv").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "segment",
                "evaluate",
                str(tmp_path / "pred"),
                "--labels-dir",
                str(data / "labels"),
                "--output",
                str(tmp_path / "scores"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| test_00 |" in printed and "| average |" in printed
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["sessions"] == ["test_00"] and scores["average"]["scored_frames"] == 400


def test_demo_writes_report_ethogram_and_model_card(tmp_path):
    scores = run_demo(tmp_path / "demo", epochs=1, frames=400)
    assert set(scores) == {
        "tcn_velocity",
        "tcn_position",
        "tcn_position_semi",
        "logistic_regression",
        "random_forest",
    }
    assert all(0.0 <= row["macro_f1"] <= 1.0 for row in scores.values())
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| tcn_velocity |" in report and "f1@50" in report
    assert (tmp_path / "demo" / "ethogram.png").stat().st_size > 1000
    card = (tmp_path / "demo" / "models" / "tcn_velocity" / "best" / "README.md").read_text()
    assert "model-index" in card and "macro F1" in card and "synthetic" in card


def test_push_renders_the_card_for_the_repo_and_uploads_the_folder(tmp_path, monkeypatch):
    from neds_hf.segmentation import card

    data, out = tmp_path / "data", tmp_path / "run"
    main(
        [
            "segment",
            "make-synthetic",
            "--output",
            str(data),
            "--frames",
            "300",
            "--train-sessions",
            "2",
            "--test-sessions",
            "1",
            "--labelled-fraction",
            "0.3",
        ]
    )
    main(
        [
            "segment",
            "train",
            "--data_dir",
            str(data),
            "--output_dir",
            str(out),
            "--num_epochs",
            "1",
            "--hidden_size",
            "4",
            "--report_to",
            "none",
            "--disable_progress_bar",
            "true",
        ]
    )
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return "commit"

    monkeypatch.setattr(card, "HfApi", FakeApi)
    assert main(["segment", "push", str(out / "best"), "lab/segmenter"]) == 0
    readme = (out / "best" / "README.md").read_text()
    assert "lab/segmenter" in readme and "model-index" in readme and "macro F1" in readme
    assert calls[0] == ("create", "lab/segmenter")
    assert {"model.safetensors", "preprocessor_config.json", "README.md"} <= set(calls[1][2])
    with pytest.raises(ValueError, match="org/name"):
        card.push_segmentation_model(out / "best", "no-slash")


def test_segmentation_card_takes_eval_results_without_optional_keys():
    """Like the NEDS card: an entry without task_name / dataset_split / metric_name renders."""
    from neds_hf.segmentation import ActionSegmentationConfig, ActionSegmentationModel
    from neds_hf.segmentation.card import render_segmentation_card
    from neds_hf.segmentation.feature_extraction_segmentation import (
        ActionSegmentationFeatureExtractor,
    )

    extractor = ActionSegmentationFeatureExtractor(feature_names=["a_x", "a_y"])
    config = ActionSegmentationConfig(
        num_features=extractor.num_model_features, class_names=["background", "still", "walk"]
    )
    entry = {
        "task_type": "token-classification",
        "dataset_type": "synthetic",
        "dataset_name": "poses",
        "metric_type": "macro_f1",
        "metric_value": 0.61,
    }
    card = render_segmentation_card(
        ActionSegmentationModel(config), extractor, "org/seg", eval_results=[entry]
    )
    assert "0.61" in str(card) and str(card).endswith("\n")
    assert card.data.eval_results[0].metric_value == 0.61
