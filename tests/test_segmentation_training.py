"""Segmentation training: chunks with context, class weights, splits, best/final, exact resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from neds_hf.segmentation.readers import Session
from neds_hf.segmentation.synthetic import make_synthetic_corpus
from neds_hf.segmentation.training import (
    SegmentationTrainingArguments,
    class_weights,
    list_checkpoints,
    parse_segmentation_args,
    split_frames,
    train_segmentation,
)
from neds_hf.segmentation.windows import chunk_bounds, feature_window, label_window


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("segtrain") / "corpus"
    make_synthetic_corpus(
        root,
        num_train_sessions=3,
        num_test_sessions=1,
        num_frames=500,
        seed=3,
        labelled_fraction=0.3,
    )
    return root


def tiny_args(corpus, output, **kwargs):
    values = {
        "data_dir": str(corpus),
        "output_dir": str(output),
        "hidden_size": 8,
        "chunk_length": 100,
        "num_epochs": 2,
        "batch_size": 4,
        "report_to": "none",
        "disable_progress_bar": True,
    }
    values.update(kwargs)
    return SegmentationTrainingArguments(**values)


def test_chunks_cover_every_frame_and_carry_real_context():
    assert chunk_bounds(0, 250, 100) == [(0, 100), (100, 200), (200, 250)]
    features = np.arange(10, dtype=np.float32)[:, None]
    window = feature_window(features, 2, 5, context=3)  # frames -1..7
    assert window[:, 0].tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7]
    labels = label_window(np.arange(10), 2, 5, context=3)
    assert labels.tolist() == [-100] * 3 + [2, 3, 4] + [-100] * 3


def test_class_weights_are_max_over_count_with_background_zero():
    labels = [np.array([0] * 7 + [1] * 450 + [2] * 600 + [3] * 600)]
    assert class_weights(labels, 5) == pytest.approx([0.0, 600 / 450, 1.0, 1.0, 0.0])


def test_block_validation_leaves_a_gap_of_at_least_the_context():
    sessions = [Session("s", np.zeros((1000, 2)), ["a", "b"], labels=np.ones(1000, dtype=int))]
    args = SegmentationTrainingArguments(
        data_dir="x", validation="blocks", validation_fraction=0.2, block_gap=30
    )
    train, validation = split_frames(args, sessions, context=24)
    assert (train[0].start, train[0].stop) == (0, 770) and (validation[0].start,) == (800,)
    with pytest.raises(ValueError, match=r"block_gap .* at least the model's context"):
        split_frames(
            SegmentationTrainingArguments(data_dir="x", validation="blocks", block_gap=10),
            sessions,
            context=24,
        )


def test_session_validation_never_shares_a_session_with_training():
    sessions = [
        Session(f"s{i}", np.zeros((50, 1)), ["a"], labels=np.ones(50, dtype=int)) for i in range(4)
    ]
    args = SegmentationTrainingArguments(data_dir="x", validation_sessions=["s2"])
    train, validation = split_frames(args, sessions, context=24)
    assert [c.session for c in validation] == [2] and 2 not in [c.session for c in train]


def test_yaml_and_command_line_without_abbreviations(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data_dir: d\nnum_epochs: 3\nhead: gru\n")
    args = parse_segmentation_args(["--config", str(config), "--num_epochs", "5"])
    assert (args.data_dir, args.num_epochs, args.head) == ("d", 5, "gru")
    with pytest.raises(ValueError, match="num_epo"):
        parse_segmentation_args(["--config", str(config), "--num_epo", "5"])
    config.write_text("data_dir: d\nepochs: 3\n")
    with pytest.raises(ValueError, match="unknown"):
        parse_segmentation_args(["--config", str(config)])


def test_weak_label_weight_is_annealed():
    args = SegmentationTrainingArguments(
        weak_labels="pseudo", anneal_start_epoch=2, anneal_end_epoch=6, weak_label_weight=2.0
    )
    assert [args.weak_weight(e) for e in (0, 1, 2, 3, 5, 9)] == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]


def test_training_keeps_best_and_final_and_resumes_exactly(corpus, tmp_path):
    full = train_segmentation(tiny_args(corpus, tmp_path / "full", num_epochs=3))
    assert [h["epoch"] for h in full["history"]] == [1, 2, 3]
    assert all(np.isfinite(h["train_loss"]) for h in full["history"])
    for name in ("best", "final"):
        folder = tmp_path / "full" / name
        assert (folder / "model.safetensors").is_file()
        assert (folder / "preprocessor_config.json").is_file() and (folder / "README.md").is_file()
    saved = json.loads((tmp_path / "full" / "final" / "config.json").read_text())
    assert saved["class_weights"][0] == 0.0 and max(saved["class_weights"]) > 1.0
    best_scores = json.loads((tmp_path / "full" / "best" / "validation_scores.json").read_text())
    assert best_scores["epoch"] == full["best_epoch"]
    top = max(h["macro_f1"] for h in full["history"])
    assert best_scores["macro_f1"] == top
    # the later epoch wins ties (small validation sets saturate early)
    assert full["best_epoch"] == max(h["epoch"] for h in full["history"] if h["macro_f1"] == top)

    train_segmentation(tiny_args(corpus, tmp_path / "resumed", num_epochs=2))
    assert [p.name for p in list_checkpoints(tmp_path / "resumed")] == ["epoch-1", "epoch-2"]
    resumed = train_segmentation(
        tiny_args(corpus, tmp_path / "resumed", num_epochs=3, resume_from_checkpoint="latest")
    )
    assert resumed["history"] == full["history"]
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="other arguments"):
        train_segmentation(
            tiny_args(corpus, tmp_path / "resumed", hidden_size=4, resume_from_checkpoint="latest")
        )


def test_weight_norm_option_reaches_the_saved_model(corpus, tmp_path):
    from neds_hf.segmentation.inference import load_model

    train_segmentation(tiny_args(corpus, tmp_path, num_epochs=1, weight_norm=True))
    saved = json.loads((tmp_path / "final" / "config.json").read_text())
    assert saved["weight_norm"] is True
    weights = load_file(tmp_path / "final" / "model.safetensors")
    assert "head.blocks.0.conv1.parametrizations.weight.original0" in weights
    model, _ = load_model(tmp_path / "final")
    assert model.config.weight_norm and hasattr(model.head.blocks[1].conv2, "parametrizations")


def test_example_config_parses():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples/configs/segment_synthetic.yaml"
    args = parse_segmentation_args(["--config", str(path)])
    assert args.head == "dtcn" and args.use_velocity and args.data_dir.endswith("segment_synthetic")


def test_segment_config_file_with_an_unknown_key_is_refused(tmp_path):
    from neds_hf.segmentation.training import parse_segmentation_args

    config = tmp_path / "segment.yaml"
    config.write_text("learning_rte: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rte'\].*neds-hf segment train"):
        parse_segmentation_args(["--config", str(config)])
