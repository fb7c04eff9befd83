"""NedsConfig: defaults, validation, serialisation and sessions."""

from __future__ import annotations

import pytest

from neds_hf import IBL_MODALITIES, NedsConfig
from neds_hf.configuration_neds import normalize_sessions


def test_default_config_is_the_paper_single_session_neds():
    config = NedsConfig()
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        256,
        8,
        512,
    )
    assert config.num_hidden_layers == 5 and config.num_time_bins == 100
    assert (config.hidden_dropout, config.attention_dropout, config.embedding_dropout) == (
        0.4,
        0.4,
        0.2,
    )
    assert [m["name"] for m in config.modalities] == [m["name"] for m in IBL_MODALITIES]
    assert config.sessions == {} and config.use_rope and not config.use_prompt
    assert config.num_tokens == 100 + 100 + 100 + 1 + 1
    assert config.default_masking_schemes == {
        name: 0.2
        for name in ("neural", "behavior", "within_spikes", "within_behavior", "cross_modal")
    }


def test_mtm_config():
    config = NedsConfig.for_mtm({"s": 7})
    assert [m["kind"] for m in config.modalities] == ["spikes"]
    assert config.use_prompt and config.num_tokens == 101
    assert set(config.default_masking_schemes) == {
        "neuron",
        "causal",
        "intra_region",
        "inter_region",
    }


def test_json_round_trip(tmp_path):
    config = NedsConfig(
        sessions={"b": 3, "a": 5},
        hidden_size=64,
        num_attention_heads=4,
        masking_schemes={"neural": 1.0, "cross_modal": 3.0},
    )
    config.save_pretrained(tmp_path)
    loaded = NedsConfig.from_pretrained(tmp_path)
    assert loaded.sessions == {"b": 3, "a": 5} and loaded.session_ids == ["b", "a"]
    assert (
        loaded.modalities == config.modalities and loaded.masking_schemes == config.masking_schemes
    )
    assert loaded.hidden_size == 64
    assert loaded.attention_dropout_mode == "keys"  # the default when a checkpoint predates it
    probabilities = NedsConfig(attention_dropout_mode="probabilities", attn_implementation="eager")
    probabilities.save_pretrained(tmp_path / "probabilities")
    reloaded = NedsConfig.from_pretrained(tmp_path / "probabilities")
    assert reloaded.attention_dropout_mode == "probabilities"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"hidden_size": 100, "num_attention_heads": 8},
            r"hidden_size \(100\).*num_attention_heads \(8\)",
        ),
        ({"hidden_size": 24, "num_attention_heads": 8}, r"even head size"),
        (
            {
                "modalities": [
                    {"name": "spikes", "kind": "spikes"},
                    {"name": "choice", "kind": "categorical"},
                ]
            },
            r"modalities\[1\] \('choice'\).*num_classes >= 2.*None",
        ),
        (
            {"modalities": [{"name": "spikes", "kind": "spikes"}, {"name": "x", "kind": "video"}]},
            r"modalities\[1\] \('x'\): kind must be one of",
        ),
        (
            {"modalities": [{"name": "wheel", "kind": "continuous"}]},
            r"exactly one modality of kind 'spikes'",
        ),
        (
            {
                "modalities": [
                    {"name": "spikes", "kind": "spikes"},
                    {"name": "spikes", "kind": "continuous"},
                ]
            },
            r"duplicate names \['spikes'\]",
        ),
        (
            {
                "modalities": [
                    {"name": "spikes", "kind": "spikes"},
                    {"name": "w", "kind": "continuous", "num_classes": 3},
                ]
            },
            r"num_classes is only valid for categorical",
        ),
        ({"sessions": [("s1", 4), ("s1", 5)]}, r"duplicate session id 's1'"),
        ({"sessions": {"s1": 0}}, r"sessions\['s1'\]: n_neurons must be a positive integer, got 0"),
        ({"hidden_dropout": 1.0}, r"hidden_dropout must be in \[0, 1\), got 1.0"),
        ({"mask_ratio": 0.0}, r"mask_ratio must be in \(0, 1\]"),
        ({"masking_schemes": {"neural": 1.0, "teleport": 1.0}}, r"unknown schemes \['teleport'\]"),
        ({"masking_schemes": {"neural": -1.0}}, r"probabilities must be >= 0"),
        ({"behavior_normalization": "robust"}, r"behavior_normalization must be one of"),
        (
            {"attention_dropout_mode": "heads"},
            r"attention_dropout_mode must be one of \('keys', 'probabilities'\), got 'heads'",
        ),
        (
            {"modality_loss_weights": {"choise": 2.0}},
            r"modality_loss_weights: unknown modalities \['choise'\]",
        ),
        (
            {"modality_loss_weights": {"choice": -1.0}},
            r"modality_loss_weights must be finite and >= 0, got \{'choice': -1.0\}",
        ),
        (
            {"trial_level_readout": "pooled"},
            r"trial_level_readout must be one of \('token', 'token_and_spikes'\), got 'pooled'",
        ),
    ],
)
def test_invalid_configs_name_fields_and_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        NedsConfig(**overrides)


def test_spike_only_config_rejects_behaviour_schemes():
    with pytest.raises(ValueError, match=r"need behaviour modalities"):
        NedsConfig.for_mtm({"s": 3}, masking_schemes={"behavior": 1.0})


def test_normalize_sessions_is_the_one_session_table_rule():
    assert normalize_sessions([("a", 2), {"session_id": "b", "n_neurons": 3}]) == {"a": 2, "b": 3}
    assert normalize_sessions(None) == {}
    with pytest.raises(ValueError, match=r"add_sessions: session ids must be non-empty strings"):
        normalize_sessions({"": 2}, field_name="add_sessions")


def test_add_sessions_on_config():
    config = NedsConfig()
    assert config.add_sessions({"x": 4, "y": 2}) == ["x", "y"]
    assert config.session_ids == ["x", "y"]
    with pytest.raises(ValueError, match=r"already known.*\['x'\]"):
        config.add_sessions({"x": 4})


def test_loss_weights_and_readout_round_trip(tmp_path):
    config = NedsConfig(
        modality_loss_weights={"choice": 4.0, "block": 4},
        trial_level_readout="token_and_spikes",
    )
    assert config.modality_loss_weight("choice") == 4.0
    assert config.modality_loss_weight("spikes") == 1.0
    config.save_pretrained(tmp_path)
    loaded = NedsConfig.from_pretrained(tmp_path)
    assert loaded.modality_loss_weights == {"choice": 4.0, "block": 4}
    assert loaded.trial_level_readout == "token_and_spikes"
    assert NedsConfig().modality_loss_weights is None
    assert NedsConfig().trial_level_readout == "token"
