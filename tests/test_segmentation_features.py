"""The saved feature pipeline: velocity, z-score, context, reload gives the same features."""

import json

import numpy as np
import pytest

from neds_hf.segmentation import ActionSegmentationFeatureExtractor


def test_velocity_is_first_difference_with_zero_first_row():
    raw = np.array([[0.0, 10.0], [1.0, 10.0], [3.0, 11.0]])
    extractor = ActionSegmentationFeatureExtractor(["a", "b"], normalization="none")
    out = extractor.transform(raw)
    np.testing.assert_allclose(out, [[0, 10, 0, 0], [1, 10, 1, 0], [3, 11, 2, 1]])
    assert extractor.model_feature_names == ["a", "b", "a_velocity", "b_velocity"]
    off = ActionSegmentationFeatureExtractor(["a", "b"], use_velocity=False, normalization="none")
    np.testing.assert_allclose(off.transform(raw), raw)
    assert off.num_model_features == 2


def test_zscore_per_session_and_constant_features_only_centred():
    raw = np.stack([np.arange(10.0), np.full(10, 7.0)], axis=1)
    out = ActionSegmentationFeatureExtractor(["a", "b"], use_velocity=False).transform(raw)
    assert out.mean(0) == pytest.approx([0, 0], abs=1e-6)
    assert out[:, 0].std() == pytest.approx(1.0, rel=1e-5) and np.all(out[:, 1] == 0)


def test_bad_features_name_the_session():
    extractor = ActionSegmentationFeatureExtractor(["a", "b"])
    with pytest.raises(ValueError, match="s1: expected 2 feature columns"):
        extractor.transform(np.zeros((4, 3)), session="s1")
    with pytest.raises(ValueError, match="s2: 1 frames have NaN"):
        extractor.transform(np.array([[0.0, 1.0], [np.nan, 1.0]]), session="s2")
    with pytest.raises(ValueError, match="at least one frame"):
        extractor.transform(np.zeros((0, 2)))


def test_reload_gives_identical_features_with_velocity_on(tmp_path):
    extractor = ActionSegmentationFeatureExtractor(
        ["a_x", "a_y"], use_velocity=True, context_frames=24
    )
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["use_velocity"] is True and saved["context_frames"] == 24
    assert saved["feature_names"] == ["a_x", "a_y"]
    reloaded = ActionSegmentationFeatureExtractor.from_pretrained(tmp_path)
    raw = np.random.default_rng(0).normal(size=(50, 2))
    np.testing.assert_array_equal(reloaded.transform(raw), extractor.transform(raw))
    assert reloaded.num_model_features == 4
