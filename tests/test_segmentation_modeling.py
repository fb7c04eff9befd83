"""Action segmentation model: heads, loss, receptive field, save/load, Auto classes, remote code."""

import json
import textwrap

import numpy as np
import pytest
import torch
from remote_code import run_without_neds_hf
from torch.nn.utils import parametrize
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from neds_hf.segmentation import (
    ActionSegmentationConfig,
    ActionSegmentationFeatureExtractor,
    ActionSegmentationModel,
)
from neds_hf.segmentation.modeling_segmentation import weighted_cross_entropy

CLASSES = ["background", "still", "walk", "groom"]


def tiny_config(**kwargs):
    defaults = {"num_features": 6, "class_names": CLASSES, "hidden_size": 8}
    defaults.update(kwargs)
    return ActionSegmentationConfig(**defaults)


@pytest.mark.parametrize("head", ["dtcn", "temporal_mlp", "gru", "lstm"])
def test_every_head_gives_per_frame_logits(head):
    torch.manual_seed(0)
    model = ActionSegmentationModel(tiny_config(head=head)).eval()
    out = model(torch.randn(3, 37, 6))
    assert out.logits.shape == (3, 37, 4) and out.hidden_states.shape == (3, 37, 8)


def test_default_config_is_the_reference_tcn():
    config = ActionSegmentationConfig()
    assert (config.head, config.hidden_size, config.num_layers, config.num_lags) == (
        "dtcn",
        32,
        2,
        4,
    )
    assert config.dropout == 0.1 and config.activation == "leaky_relu"
    assert config.context_frames == 24  # 2*4*1 + 2*4*2


def test_dtcn_receptive_field_is_context_frames():
    torch.manual_seed(1)
    config = tiny_config()
    model = ActionSegmentationModel(config).eval()
    features = torch.randn(1, 101, 6)
    centre, reach = 50, config.context_frames
    base = model(features).logits[0, centre]
    inside, outside = features.clone(), features.clone()
    inside[0, centre + reach] += 5.0
    outside[0, centre + reach + 1] += 5.0
    assert not torch.allclose(model(inside).logits[0, centre], base)
    assert torch.equal(model(outside).logits[0, centre], base)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match="start with 'background'"):
        tiny_config(class_names=["still", "walk"])
    with pytest.raises(ValueError, match="head must be one of"):
        tiny_config(head="transformer")
    with pytest.raises(ValueError, match="class_weights has 2 entries"):
        tiny_config(class_weights=[0.0, 1.0])
    with pytest.raises(ValueError, match="weight_norm must be true or false, got 'yes'"):
        tiny_config(weight_norm="yes")


def test_loss_uses_only_labelled_frames_with_class_weights():
    logits = torch.randn(1, 5, 3, requires_grad=True)
    labels = torch.tensor([[0, 1, 2, -100, 2]])
    weights = torch.tensor([0.0, 3.0, 1.0])
    loss = weighted_cross_entropy(logits, labels, weights)
    nll = -torch.log_softmax(logits[0], -1)
    expected = (3 * nll[1, 1] + nll[2, 2] + nll[4, 2]) / 5.0
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 3].abs().sum() == 0


def test_all_unlabelled_batch_gives_zero_loss_not_nan():
    model = ActionSegmentationModel(tiny_config(next_step_weight=0.0))
    out = model(torch.randn(2, 20, 6), labels=torch.zeros(2, 20, dtype=torch.long))
    assert out.loss.item() == 0.0 and not torch.isnan(out.loss)
    out.loss.backward()  # still a valid graph


def test_next_step_loss_uses_unlabelled_frames():
    torch.manual_seed(2)
    model = ActionSegmentationModel(tiny_config(next_step_weight=1.0))
    out = model(torch.randn(2, 20, 6), labels=torch.zeros(2, 20, dtype=torch.long))
    assert out.losses["next_step"] > 0 and out.loss > 0
    assert out.next_step_predictions.shape == (2, 20, 6)


def weight_normed_convs(model):
    return [name for name, module in model.named_modules() if parametrize.is_parametrized(module)]


def test_weight_norm_parametrises_only_the_dilated_convolutions():
    torch.manual_seed(4)
    plain = ActionSegmentationModel(tiny_config(num_features=6)).eval()
    torch.manual_seed(4)
    normed = ActionSegmentationModel(tiny_config(num_features=6, weight_norm=True)).eval()
    assert weight_normed_convs(plain) == []
    assert weight_normed_convs(normed) == [
        f"head.blocks.{block}.{conv}" for block in (0, 1) for conv in ("conv1", "conv2")
    ]
    assert not parametrize.is_parametrized(normed.head.blocks[0].residual)
    # same draws, and g starts at ||v||: the same function before training
    features = torch.randn(2, 30, 6)
    torch.testing.assert_close(normed(features).logits, plain(features).logits)


def save_model_and_extractor(path, **config_kwargs):
    torch.manual_seed(3)
    config = tiny_config(class_weights=[0.0, 1.0, 2.0, 1.5], **config_kwargs)
    model = ActionSegmentationModel(config).eval()
    if config.weight_norm:  # trained-like g (not ||v||), so a dropped g would show after reload
        with torch.no_grad():
            for name in weight_normed_convs(model):
                model.get_submodule(name).parametrizations.weight.original0.mul_(1.7)
    extractor = ActionSegmentationFeatureExtractor(
        feature_names=["a_x", "a_y", "b_x"], use_velocity=True, context_frames=24
    )
    model.save_pretrained(path)
    extractor.save_pretrained(path)
    return model, extractor


def test_save_load_round_trip_and_auto_classes(tmp_path):
    model, extractor = save_model_and_extractor(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert {"configuration_segmentation.py", "modeling_segmentation.py"} <= {
        p.name for p in tmp_path.iterdir()
    }
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "action_segmentation"
    assert saved["class_names"] == CLASSES and saved["class_weights"] == [0.0, 1.0, 2.0, 1.5]
    raw = np.random.default_rng(0).normal(size=(40, 3))
    features = torch.from_numpy(extractor(raw)["features"])
    expected = model(features).logits
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ActionSegmentationConfig)
    for loader in (ActionSegmentationModel.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, ActionSegmentationModel) and not loaded.training
        assert torch.equal(loaded(features).logits, expected)


def test_weight_norm_save_load_round_trip_is_exact(tmp_path):
    model, extractor = save_model_and_extractor(tmp_path, weight_norm=True)
    assert json.loads((tmp_path / "config.json").read_text())["weight_norm"] is True
    features = torch.from_numpy(
        extractor(np.random.default_rng(2).normal(size=(40, 3)))["features"]
    )
    expected = model(features).logits
    for loader in (ActionSegmentationModel.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path)
        assert loaded.config.weight_norm is True
        assert weight_normed_convs(loaded) == weight_normed_convs(model)
        state, loaded_state = model.state_dict(), loaded.state_dict()
        assert state.keys() == loaded_state.keys()
        assert all(torch.equal(state[key], loaded_state[key]) for key in state)
        assert torch.equal(loaded(features).logits, expected)


@pytest.mark.parametrize("weight_norm", [False, True])
def test_trust_remote_code_load_without_neds_hf(tmp_path, weight_norm):
    checkpoint = tmp_path / "checkpoint"
    model, extractor = save_model_and_extractor(checkpoint, weight_norm=weight_norm)
    raw = np.random.default_rng(1).normal(size=(30, 3))
    np.save(tmp_path / "raw.npy", raw)
    expected = model(torch.from_numpy(extractor(raw)["features"])).logits
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        from transformers import AutoFeatureExtractor, AutoModel
        path = {str(checkpoint)!r}
        model = AutoModel.from_pretrained(path, trust_remote_code=True)
        extractor = AutoFeatureExtractor.from_pretrained(path, trust_remote_code=True)
        assert "neds_hf" not in sys.modules, "neds_hf was imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        features = extractor(np.load({str(tmp_path / "raw.npy")!r}), return_tensors="pt")
        out = model(features["features"]).logits
        assert torch.equal(out, torch.load({str(tmp_path / "expected.pt")!r}))
        print("REMOTE-CODE-OK")
    """)
    result = run_without_neds_hf(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-CODE-OK" in result.stdout
    assert isinstance(
        AutoFeatureExtractor.from_pretrained(checkpoint), ActionSegmentationFeatureExtractor
    )
