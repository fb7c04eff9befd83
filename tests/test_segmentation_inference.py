"""Inference: every frame of any-length session, chunking invisible, prediction files, reload."""

import numpy as np
import pandas as pd
import pytest
import torch

from neds_hf.segmentation import (
    ActionSegmentationConfig,
    ActionSegmentationFeatureExtractor,
    ActionSegmentationModel,
)
from neds_hf.segmentation.inference import (
    class_probabilities,
    predict_features,
    predict_session,
    write_predictions,
)
from neds_hf.segmentation.readers import Session
from neds_hf.segmentation.synthetic import make_synthetic_corpus

CLASSES = ["background", "still", "walk", "groom", "rear"]


def make_model(num_features=16, **kwargs):
    torch.manual_seed(0)
    config = ActionSegmentationConfig(
        num_features=num_features, class_names=CLASSES, hidden_size=8, **kwargs
    )
    return ActionSegmentationModel(config).eval()


@pytest.mark.parametrize("num_frames", [7, 100, 251])
def test_chunked_prediction_equals_one_pass_over_the_padded_session(num_frames):
    model = make_model(num_features=3)
    features = np.random.default_rng(num_frames).normal(size=(num_frames, 3)).astype(np.float32)
    context = model.config.context_frames
    chunked = predict_features(model, features, context, chunk_length=50)
    # reference: the whole session in one window, with `context` zero frames on each side
    padded = np.pad(features, ((context, context), (0, 0)))
    with torch.no_grad():
        logits = model(torch.from_numpy(padded)[None]).logits[:, context:-context]
    whole = class_probabilities(logits)[0].numpy()
    assert chunked.shape == (num_frames, 5)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    assert np.all(chunked[:, 0] == 0) and np.allclose(chunked.sum(1), 1, atol=1e-5)


def test_a_range_of_frames_reads_real_context_outside_it():
    model = make_model(num_features=3)
    features = np.random.default_rng(1).normal(size=(300, 3)).astype(np.float32)
    context = model.config.context_frames
    full = predict_features(model, features, context, chunk_length=64)
    part = predict_features(model, features, context, chunk_length=64, start=120, stop=200)
    np.testing.assert_allclose(part, full[120:200], atol=1e-6)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("seginf")
    make_synthetic_corpus(root / "data", num_train_sessions=1, num_test_sessions=1, num_frames=333)
    model = make_model(num_features=16)
    extractor = ActionSegmentationFeatureExtractor(
        feature_names=[f"{m}_{c}" for m in ("paw_l", "paw_r", "nose", "tail") for c in "xy"],
        use_velocity=True,
        context_frames=model.config.context_frames,
    )
    model.save_pretrained(root / "model")
    extractor.save_pretrained(root / "model")
    return root, model, extractor


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_prediction_files_have_every_frame_and_reload_matches(saved_model, file_format):
    root, model, extractor = saved_model
    paths = write_predictions(
        root / "model", root / "data", root / f"out_{file_format}", file_format=file_format
    )
    assert [p.name for p in paths] == [
        f"test_00_predictions.{file_format}",
        f"train_00_predictions.{file_format}",
    ]
    table = (
        pd.read_csv(paths[0], index_col=0) if file_format == "csv" else pd.read_parquet(paths[0])
    )
    assert list(table.columns) == [*CLASSES, "label"] and len(table) == 333
    assert table.notna().all().all() and (table["background"] == 0).all()
    assert set(table["label"]) <= set(CLASSES[1:])
    from neds_hf.segmentation.readers import load_session

    session = load_session(root / "data", "test_00", labels_dir=None)
    expected = predict_session(model, extractor, session)  # in-memory model, velocity on
    np.testing.assert_allclose(table[CLASSES].to_numpy(), expected, atol=1e-6)


def test_features_other_than_the_model_s_are_a_clear_error(saved_model):
    _, model, extractor = saved_model
    session = Session("odd", np.zeros((10, 2)), ["a_x", "a_y"])
    with pytest.raises(ValueError, match="session 'odd' has features"):
        predict_session(model, extractor, session)
