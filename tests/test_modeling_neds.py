"""Behaviour of the NEDS transformers model: shapes, losses, gradients, saving and loading."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import pytest
import torch
from remote_code import run_without_neds_hf
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from neds_hf import NedsConfig, NedsForMaskedModeling, NedsModel
from neds_hf.modeling_neds import (
    DROPOUT_RATE_LEVELS,
    NedsQKVProjection,
    NedsRotaryEmbedding,
    apply_rotary,
    dropout_keep_mask,
    eager_attention_forward,
    is_session_parameter,
    make_dummy_inputs,
    neds_dropout,
)

NUM_BINS = 12
SESSIONS = {"session-a": 5, "session-b": 9, "session-c": 3}


def tiny_config(**overrides) -> NedsConfig:
    """A small NEDS config with dropout off so that outputs are deterministic."""
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=16,
        sessions=dict(SESSIONS),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        embedding_dropout=0.0,
    )
    values.update(overrides)
    return NedsConfig(**values)


def tiny_mtm_config(**overrides) -> NedsConfig:
    values = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        num_time_bins=NUM_BINS,
        spike_stitcher_size=16,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        embedding_dropout=0.0,
    )
    values.update(overrides)
    return NedsConfig.for_mtm(dict(SESSIONS), **values)


def make_batch(
    config: NedsConfig, session_index: list[int], num_neurons: int | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch with random counts, behaviours and masks; padded neurons filled with junk."""
    generator = torch.Generator().manual_seed(seed)
    counts = [list(config.sessions.values())[s] for s in session_index]
    num_neurons = num_neurons or max(counts)
    batch_size = len(session_index)
    spikes = torch.poisson(
        torch.full((batch_size, NUM_BINS, num_neurons), 1.5), generator=generator
    )
    for sample, count in enumerate(counts):
        spikes[sample, :, count:] = 7.0  # junk in padding must never matter
    batch = {
        "spikes": spikes,
        "session_index": torch.tensor(session_index),
        "spike_mask": (torch.rand(batch_size, NUM_BINS, 1, generator=generator) < 0.5)
        .expand(batch_size, NUM_BINS, num_neurons)
        .clone(),
    }
    if config.continuous_modalities:
        batch["behavior_values"] = torch.randn(
            batch_size, NUM_BINS, len(config.continuous_modalities), generator=generator
        )
    if config.categorical_modalities:
        batch["behavior_labels"] = torch.stack(
            [
                torch.randint(0, spec["num_classes"], (batch_size, 1), generator=generator).expand(
                    batch_size, NUM_BINS
                )
                for spec in config.categorical_modalities
            ],
            dim=-1,
        )
        mask = torch.rand(
            batch_size, NUM_BINS, len(config.behavior_modalities), generator=generator
        )
        mask = mask < 0.5
        mask[0, 0, :] = True  # sample 0 has its trial-level tokens hidden ...
        mask[-1, 0, :] = False  # ... the last one shows them
        batch["behavior_mask"] = mask
    if config.use_prompt:
        batch["prompt_index"] = torch.arange(batch_size) % len(config.prompt_schemes)
        batch["causal_attention"] = torch.arange(batch_size) % 2 == 1
    return batch


def select(batch: dict[str, torch.Tensor], rows: list[int], num_neurons: int | None = None):
    """Rows of a batch, optionally cropping / padding the neuron dimension."""
    out = {}
    for name, value in batch.items():
        value = value[rows]
        if num_neurons is not None and name in ("spikes", "spike_mask"):
            if value.shape[-1] >= num_neurons:
                value = value[..., :num_neurons]
            else:
                pad = torch.zeros(
                    *value.shape[:-1], num_neurons - value.shape[-1], dtype=value.dtype
                )
                value = torch.cat([value, pad], dim=-1)
        out[name] = value
    return out


@pytest.fixture(scope="module")
def model() -> NedsForMaskedModeling:
    torch.manual_seed(0)
    return NedsForMaskedModeling(tiny_config()).eval()


# ------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize(
    "session_index", [[0, 0], [0, 1, 2, 1]], ids=["single-session", "multi-session"]
)
def test_output_shapes(model, session_index):
    batch = make_batch(model.config, session_index)
    out = model(**batch, output_hidden_states=True, output_attentions=True)
    batch_size, num_neurons = len(session_index), batch["spikes"].shape[-1]
    num_tokens = model.config.num_tokens
    assert (
        num_tokens == 4 * NUM_BINS - 2 * NUM_BINS + 2 + NUM_BINS
    )  # spikes + 2 continuous + 2 trial
    assert out.spike_log_rates.shape == (batch_size, NUM_BINS, num_neurons)
    assert out.behavior_predictions["wheel_speed"].shape == (batch_size, NUM_BINS)
    assert out.behavior_predictions["whisker_motion_energy"].shape == (batch_size, NUM_BINS)
    assert out.behavior_predictions["choice"].shape == (batch_size, 2)
    assert out.behavior_predictions["block"].shape == (batch_size, 3)
    assert out.last_hidden_state.shape == (batch_size, num_tokens, 32)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (batch_size, 4, num_tokens, num_tokens)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(batch_size, 4, num_tokens))
    assert set(out.modality_losses) == {
        "spikes",
        "wheel_speed",
        "whisker_motion_energy",
        "choice",
        "block",
    }
    assert out.loss.shape == () and torch.isfinite(out.loss)
    # padded neurons carry log-rate 0
    counts = torch.tensor(list(SESSIONS.values()))[batch["session_index"]]
    for sample, count in enumerate(counts.tolist()):
        assert torch.all(out.spike_log_rates[sample, :, count:] == 0)


def test_spread_trial_tokens_shapes():
    config = tiny_config(spread_trial_tokens=True)
    model = NedsForMaskedModeling(config).eval()
    assert config.num_tokens == 5 * NUM_BINS
    out = model(**make_batch(config, [0, 1]))
    assert out.last_hidden_state.shape == (2, 5 * NUM_BINS, 32)
    assert out.behavior_predictions["choice"].shape == (2, 2)
    assert NedsConfig().num_tokens == 302 and NedsConfig(spread_trial_tokens=True).num_tokens == 500


def test_spike_only_mtm_shapes():
    config = tiny_mtm_config()
    model = NedsForMaskedModeling(config).eval()
    batch = make_batch(config, [0, 1, 2, 0])
    out = model(**batch)
    assert config.num_tokens == NUM_BINS + 1  # prompt token + one token per bin
    assert out.spike_log_rates.shape == (4, NUM_BINS, 9)
    assert out.behavior_predictions == {}
    assert set(out.modality_losses) == {"spikes"}
    with pytest.raises(ValueError, match="prompt_index"):
        model(**{k: v for k, v in batch.items() if k != "prompt_index"})


def test_per_bin_categorical_modality():
    modalities = [
        {"name": "spikes", "kind": "spikes"},
        {"name": "action", "kind": "categorical", "num_classes": 4, "trial_level": False},
    ]
    config = tiny_config(modalities=modalities)
    model = NedsForMaskedModeling(config).eval()
    batch = make_batch(config, [0, 1])
    batch["behavior_labels"] = torch.randint(0, 4, (2, NUM_BINS, 1))
    out = model(**batch)
    assert out.behavior_predictions["action"].shape == (2, NUM_BINS, 4)
    assert torch.isfinite(out.modality_losses["action"])


def test_rotary_depends_only_on_relative_position():
    rotary = NedsRotaryEmbedding(tiny_config())
    positions = torch.tensor([0, 3, 5, 8, 10])
    angles = rotary(positions)  # (2, 5, 4)
    query, key = torch.randn(8), torch.randn(8)
    rotated_query = apply_rotary(query.expand(1, 5, 8), angles)[0]  # (5, 8)
    rotated_key = apply_rotary(key.expand(1, 5, 8), angles)[0]
    # a rotation: norms are kept
    torch.testing.assert_close(rotated_query.norm(dim=-1), query.norm().expand(5))
    # (0, 3) and (5, 8) are 3 bins apart, (3, 0) and (8, 5) -3: same scores per offset
    torch.testing.assert_close(rotated_query[0] @ rotated_key[1], rotated_query[2] @ rotated_key[3])
    torch.testing.assert_close(rotated_query[1] @ rotated_key[0], rotated_query[3] @ rotated_key[2])
    assert not torch.isclose(rotated_query[0] @ rotated_key[1], rotated_query[1] @ rotated_key[0])


def test_rotary_turns_dimension_pairs_by_position_times_frequency():
    rotary = NedsRotaryEmbedding(tiny_config())  # head_dim 8: pairs (0, 1), (2, 3), ...
    angles = rotary(torch.tensor([2]))
    unit = torch.zeros(1, 1, 2, 8)  # (B, L, heads, head_dim): dimension 2 set in head 1 only
    unit[0, 0, 1, 2] = 1.0
    angle = 2 * rotary.inv_freq[1]
    expected = torch.zeros(2, 8)
    expected[1, 2], expected[1, 3] = torch.cos(angle), torch.sin(angle)
    torch.testing.assert_close(apply_rotary(unit, angles)[0, 0], expected)
    # position 0 is the identity; the real-arithmetic path (half precision) agrees
    vectors = torch.randn(3, 1, 2, 8)
    torch.testing.assert_close(apply_rotary(vectors, rotary(torch.tensor([0]))), vectors)
    angles = rotary(torch.arange(4))
    vectors = torch.randn(3, 4, 2, 8, dtype=torch.float64)
    torch.testing.assert_close(
        apply_rotary(vectors.bfloat16(), angles).double(),
        apply_rotary(vectors, angles),
        atol=0.05,
        rtol=0.02,
    )


def test_attention_scores_follow_the_stored_rotary_pairing():
    """Queries/keys come out of the projection with pairs (i, i + hd/2) interleaved; the scores
    equal those of the stored weights rotated in the reference's half-split pairing."""
    torch.manual_seed(0)
    config = tiny_config()
    heads, head_dim = config.num_attention_heads, config.head_dim
    projection = NedsQKVProjection(config.hidden_size, heads)
    torch.nn.init.normal_(projection.bias)
    hidden = torch.randn(2, 5, config.hidden_size)  # (B, L, H)
    angles = NedsRotaryEmbedding(config)(torch.arange(5))  # (2, L, head_dim / 2)

    def half_split_rotary(x):  # x (B, L, heads, head_dim), pairs (i, i + head_dim / 2)
        cos, sin = angles.view(2, 5, 1, -1).unbind(0)
        first, second = x.chunk(2, dim=-1)
        return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)

    stored = torch.nn.functional.linear(hidden, projection.weight, projection.bias).view(
        2, 5, 3, heads, head_dim
    )
    reference = torch.einsum(
        "blhd,bmhd->bhlm", half_split_rotary(stored[:, :, 0]), half_split_rotary(stored[:, :, 1])
    )
    emitted = [t.view(2, 5, heads, head_dim) for t in projection(hidden)]  # q, k, v
    query, key = (apply_rotary(t, angles) for t in emitted[:2])  # each (B, L, heads, hd)
    torch.testing.assert_close(torch.einsum("blhd,bmhd->bhlm", query, key), reference)
    torch.testing.assert_close(emitted[2], stored[:, :, 2])  # values in stored order
    assert not torch.allclose(emitted[0], stored[:, :, 0])


def test_model_without_rotary_takes_an_odd_head_size():
    """Without RoPE the projection keeps the stored order (no pairs to interleave), so an odd
    head size, which only RoPE forbids, still builds and runs."""
    config = tiny_config(hidden_size=24, num_attention_heads=8, use_rope=False)
    model = NedsForMaskedModeling(config).eval()
    projection = model.neds.layers[0].attention.qkv_proj
    hidden = torch.randn(2, 3, 24)
    torch.testing.assert_close(
        torch.cat(projection(hidden), -1),
        torch.nn.functional.linear(hidden, projection.weight, projection.bias),
    )
    out = model(**make_batch(config, [0, 1]))
    assert torch.isfinite(out.loss)


def test_causal_attention_ignores_the_future():
    config = tiny_mtm_config()
    model = NedsForMaskedModeling(config).eval()
    batch = make_batch(config, [1, 1])
    batch["causal_attention"] = torch.tensor([True, True])
    batch["spike_mask"][:] = False
    changed = {k: v.clone() for k, v in batch.items()}
    changed["spikes"][:, 8:, :] += 3.0  # change only the future of bin 7
    before = model(**batch).spike_log_rates
    after = model(**changed).spike_log_rates
    torch.testing.assert_close(before[:, :8], after[:, :8], atol=1e-5, rtol=0)
    assert not torch.allclose(before[:, 8:], after[:, 8:])


# ------------------------------------------------------------------------------------------------
# Invariances and losses


def test_batch_composition_invariance(model):
    batch = make_batch(model.config, [0, 1, 2, 1], seed=3)
    full = model(**batch)
    alone = model(**select(batch, [0], num_neurons=5))
    padded = model(**select(batch, [0], num_neurons=20))
    for other in (alone, padded):
        torch.testing.assert_close(
            other.spike_log_rates[0, :, :5], full.spike_log_rates[0, :, :5], atol=1e-5, rtol=0
        )
        for name, value in other.behavior_predictions.items():
            torch.testing.assert_close(
                value[0], full.behavior_predictions[name][0], atol=1e-5, rtol=0
            )
        torch.testing.assert_close(
            other.last_hidden_state[0], full.last_hidden_state[0], atol=1e-5, rtol=0
        )


def test_loss_only_on_target_entries(model):
    batch = make_batch(model.config, [0, 1, 2], seed=4)
    base = model(**batch)
    targets = {
        "spike_targets": batch["spikes"].clone(),
        "behavior_value_targets": batch["behavior_values"].clone(),
        "behavior_label_targets": batch["behavior_labels"].clone(),
    }
    same = model(**batch, **targets)
    torch.testing.assert_close(same.loss, base.loss)
    spike_outside = ~batch["spike_mask"]
    targets["spike_targets"][spike_outside] += 5.0
    behavior_outside = ~batch["behavior_mask"][..., :2]
    targets["behavior_value_targets"][behavior_outside] -= 3.0
    trial_visible = ~batch["behavior_mask"][:, 0, 2:]  # (B, 2)
    labels = targets["behavior_label_targets"]
    for column, classes in enumerate((2, 3)):
        flip = trial_visible[:, column]
        labels[flip, :, column] = (labels[flip, :, column] + 1) % classes
    changed = model(**batch, **targets)
    torch.testing.assert_close(changed.loss, base.loss, atol=1e-6, rtol=0)
    # ... and changing a target inside the mask does change it
    targets["spike_targets"][batch["spike_mask"]] += 1.0
    assert not torch.isclose(model(**batch, **targets).loss, base.loss)


def test_padded_neurons_never_change_loss_or_gradients():
    torch.manual_seed(1)
    model = NedsForMaskedModeling(tiny_config())
    batch = make_batch(model.config, [2, 0], num_neurons=9, seed=5)
    junk = {k: v.clone() for k, v in batch.items()}
    junk["spikes"][0, :, 3:] = 1000.0  # session-c has 3 neurons
    junk["spikes"][1, :, 5:] = -50.0  # session-a has 5 neurons
    junk["spike_mask"][0, :, 3:] = ~junk["spike_mask"][0, :, 3:]

    def loss_and_grads(inputs):
        model.zero_grad()
        loss = model(**inputs).loss
        loss.backward()
        return loss.detach(), {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }

    loss_a, grads_a = loss_and_grads(batch)
    loss_b, grads_b = loss_and_grads(junk)
    torch.testing.assert_close(loss_a, loss_b, atol=1e-6, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5, msg=name)


def _outputs_and_grads(model, batch):
    """Loss, per-modality losses, predictions and parameter gradients of one training step."""
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    predictions = {"spike_log_rates": out.spike_log_rates.detach()}
    predictions.update({k: v.detach() for k, v in out.behavior_predictions.items()})
    losses = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.modality_losses.items()}}
    return losses, predictions, grads


@pytest.mark.parametrize("config_of", [tiny_config, tiny_mtm_config], ids=["neds", "mtm"])
@pytest.mark.parametrize("num_neurons", [None, 9], ids=["unpadded", "padded"])
def test_single_session_batch_matches_the_gathering_path(monkeypatch, config_of, num_neurons):
    torch.manual_seed(3)
    model = NedsForMaskedModeling(config_of()).train()  # dropout 0: deterministic
    batch = make_batch(model.config, [2, 2, 2], num_neurons=num_neurons, seed=31)
    if num_neurons is not None:  # session-c has 3 neurons: visible junk in the padding
        batch["spike_mask"][..., 3:] = False
        batch["spike_mask"][0, :4, :3] = True  # bins whose real neurons are all hidden
    gathered = []
    gather = type(model.neds.spike_stitcher.session_neurons).gather
    monkeypatch.setattr(
        type(model.neds.spike_stitcher.session_neurons),
        "gather",
        lambda table, *args: gathered.append(1) or gather(table, *args),
    )
    fast = _outputs_and_grads(model, batch)
    assert not gathered  # one session: no per-sample gather
    check_inputs = model.neds._check_inputs
    # force the gathering path (what a mixed batch takes) on the same batch
    monkeypatch.setattr(model.neds, "_check_inputs", lambda *args: check_inputs(*args) and None)
    general = _outputs_and_grads(model, batch)
    assert len(gathered) == 2  # stitcher and readout
    for got, want in zip(fast, general):
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=1e-5, msg=name)
    if num_neurons is not None:
        assert torch.all(fast[1]["spike_log_rates"][..., 3:] == 0)  # padded neurons hold 0


def test_return_loss_false_gives_the_same_predictions_without_losses(model):
    batch = make_batch(model.config, [0, 1, 0], seed=32)
    with_loss = model(**batch)
    without = model(**batch, return_loss=False)
    assert with_loss.loss is not None
    assert without.loss is None and without.modality_losses is None
    torch.testing.assert_close(without.spike_log_rates, with_loss.spike_log_rates, rtol=0, atol=0)
    for name, value in with_loss.behavior_predictions.items():
        torch.testing.assert_close(without.behavior_predictions[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("session_index", [[1, 1, 1], [0, 1, 2]], ids=["one-session", "mixed"])
def test_all_hidden_spikes_skip_the_stitcher_only_without_gradients(model, session_index):
    batch = make_batch(model.config, session_index, seed=33)
    batch["spike_mask"][:] = True  # the encoding protocol: every spike hidden
    stitched = []
    hook = model.neds.spike_stitcher.register_forward_hook(lambda *_: stitched.append(1))
    try:
        with torch.no_grad():
            skipped = model(**batch, return_loss=False)
        assert not stitched  # its output would be replaced by the mask token everywhere
        full = model(**batch)  # with gradients: the stitcher runs (zero, not None, gradients)
        assert stitched == [1]
        full.loss.backward()
        assert model.neds.spike_stitcher.projection.weight.grad is not None
        batch["spike_mask"][0, 0, 0] = False  # one visible count: the stitcher is needed
        with torch.no_grad():
            partial = model(**batch, return_loss=False)
        assert stitched == [1, 1]
    finally:
        hook.remove()
        model.zero_grad(set_to_none=True)
    torch.testing.assert_close(skipped.spike_log_rates, full.spike_log_rates, rtol=0, atol=0)
    torch.testing.assert_close(skipped.last_hidden_state, full.last_hidden_state, rtol=0, atol=0)
    for name, value in full.behavior_predictions.items():
        torch.testing.assert_close(skipped.behavior_predictions[name], value, rtol=0, atol=0)
    assert not torch.equal(partial.spike_log_rates, skipped.spike_log_rates)


def session_rows(model: NedsForMaskedModeling, name: str, session_row: int) -> slice:
    """Rows of a per-session parameter that belong to one session."""
    counts = list(model.config.sessions.values())
    if name.endswith("neuron_weight"):
        start = sum(counts[:session_row])
        return slice(start, start + counts[session_row])
    return slice(session_row, session_row + 1)


def test_gradients_reach_used_parameters_and_no_other_session():
    torch.manual_seed(2)
    model = NedsForMaskedModeling(tiny_config())
    batch = make_batch(model.config, [0, 2, 0, 2], seed=6)
    model(**batch).loss.backward()
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        assert grad is not None, f"{name} got no gradient"
        if is_session_parameter(name):
            for row in (0, 2):
                assert grad[session_rows(model, name, row)].abs().sum() > 0, f"{name} session {row}"
            assert torch.all(grad[session_rows(model, name, 1)] == 0), f"{name} touched session-b"
        else:
            assert grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_session_parameters_are_recognisable(model):
    names = model.session_parameter_names()
    assert sorted(names) == sorted(
        [
            "neds.spike_stitcher.session_neurons.neuron_weight",
            "neds.spike_stitcher.session_neurons.session_bias",
            "neds.session_embedding.weight",
            "spike_readout.session_neurons.neuron_weight",
        ]
    )


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(3)
    model = NedsForMaskedModeling(tiny_config())
    batch = make_batch(model.config, [0, 1, 2, 0, 1, 2], seed=7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(**batch).loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.35 * first, (first, loss.item())


def test_train_mode_dropout_is_active_and_eval_is_deterministic():
    torch.manual_seed(4)
    model = NedsForMaskedModeling(
        tiny_config(attention_dropout=0.4, hidden_dropout=0.1, embedding_dropout=0.1)
    )
    batch = make_batch(model.config, [0, 1], seed=8)
    model.train()
    assert not torch.equal(model(**batch).spike_log_rates, model(**batch).spike_log_rates)
    model.eval()
    assert torch.equal(model(**batch).spike_log_rates, model(**batch).spike_log_rates)


@pytest.mark.parametrize("p", [0.1, 0.4, 0.9])
def test_cpu_dropout_is_inverted_dropout_at_rate_p(p):
    """The CPU dropout zeroes a share p of entries (binomial tolerance, 5 sd), scales the rest by
    1 / (1 - p) for p on its 2^-16 grid (within 7.6e-6 of p), passes gradients only through
    kept entries with the same scale, is a pure function of the torch seed, and is the identity
    outside training or at p = 0."""
    hidden = torch.rand(64, 50, 32) + 0.5  # (B, L, H), no exact zeros
    hidden.requires_grad_(True)
    torch.manual_seed(0)
    dropped = neds_dropout(hidden, p, training=True)
    kept = dropped != 0
    n = kept.numel()
    assert abs((~kept).sum().item() / n - p) < 5 * (p * (1 - p) / n) ** 0.5
    p_used = round(p * DROPOUT_RATE_LEVELS) / DROPOUT_RATE_LEVELS
    assert abs(p_used - p) <= 0.5 / DROPOUT_RATE_LEVELS
    torch.testing.assert_close(dropped[kept], hidden.detach()[kept] / (1 - p_used))
    dropped.backward(torch.ones_like(dropped))
    torch.testing.assert_close(hidden.grad, kept.float() / (1 - p_used))
    torch.manual_seed(0)
    assert torch.equal(neds_dropout(hidden, p, training=True), dropped)
    assert neds_dropout(hidden, p, training=False) is hidden
    assert neds_dropout(hidden, 0.0, training=True) is hidden


def test_dropout_keep_mask_uses_every_random_bit_evenly():
    """Four entries share one 64-bit draw: each of the four lanes keeps the same share (5 sd), so
    no lane reads a constant sign bit, and the rate tracks p finely (p = 0.5 and 0.5 + 2^-10
    differ by 2^-10 and their masks' shares differ accordingly)."""
    torch.manual_seed(3)
    n = 1 << 20
    keep, scale = dropout_keep_mask((n,), 0.5, torch.device("cpu"))
    assert keep.dtype == torch.bool and keep.shape == (n,) and scale == 2.0
    tolerance = 5 * (0.25 / (n // 4)) ** 0.5
    for lane in range(4):
        assert abs(keep[lane::4].float().mean().item() - 0.5) < tolerance
    many = 1 << 24  # 5 sd of the share (6e-4) below the 2^-10 (9.8e-4) to resolve
    finer, finer_scale = dropout_keep_mask((many,), 0.5 + 2**-10, torch.device("cpu"))
    assert abs((1 - finer.float().mean().item()) - (0.5 + 2**-10)) < 5 * (0.25 / many) ** 0.5
    assert finer_scale == pytest.approx(1 / (0.5 - 2**-10), rel=1e-12)


@pytest.mark.parametrize("p", [1e-7, 1 - 1e-7])
def test_dropout_keep_mask_off_its_grid_uses_p_exactly(p):
    """Rates that round to 0 or 1 on the 2^-16 grid are drawn per entry at p itself, never as
    'drop nothing' or 'drop everything with an infinite scale'."""
    torch.manual_seed(0)
    keep, scale = dropout_keep_mask((1000,), p, torch.device("cpu"))
    assert scale == 1 / (1 - p)
    assert keep.all() if p < 0.5 else not keep.any()


def test_dropout_keeps_a_boolean_mask_for_backward():
    """What the CPU dropout saves for the backward pass is its boolean keep mask, not a float
    noise tensor of the activation's size (4x the memory)."""
    hidden = torch.randn(8, 20, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        neds_dropout(hidden, 0.4, training=True)
    assert [t.dtype for t in saved if t.shape == hidden.shape] == [torch.bool]


# ------------------------------------------------------------------------------------------------
# Sessions


def test_add_sessions_then_a_step_changes_only_new_and_shared_parameters():
    torch.manual_seed(5)
    model = NedsForMaskedModeling(tiny_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    new_ids = model.add_sessions({"session-new": 6})
    assert new_ids == ["session-new"] and model.config.sessions["session-new"] == 6
    after_add = dict(model.named_parameters())
    for name, old in before.items():  # nothing changed by adding
        value = after_add[name].detach()
        torch.testing.assert_close(value[: old.shape[0]], old, msg=name)
    assert after_add["neds.session_embedding.weight"].shape[0] == 4
    assert after_add["neds.spike_stitcher.session_neurons.neuron_weight"].shape[0] == 17 + 6

    no_decay = [p for n, p in model.named_parameters() if is_session_parameter(n)]
    decay = [p for n, p in model.named_parameters() if not is_session_parameter(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
    )
    batch = make_batch(model.config, [3, 3], seed=9)
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        old = before[name]
        if is_session_parameter(name):
            torch.testing.assert_close(
                parameter[: old.shape[0]].detach(),
                old,
                atol=0,
                rtol=0,
                msg=f"{name}: rows of old sessions changed",
            )
            assert not torch.equal(
                parameter[old.shape[0] :].detach(), parameter[old.shape[0] :].detach() * 0
            ), name
        else:
            assert not torch.equal(parameter.detach(), old), f"shared {name} did not change"


def test_add_sessions_rejects_known_and_bad_sessions(model):
    with pytest.raises(ValueError, match=r"already known.*session-a"):
        model.add_sessions({"session-a": 5})
    with pytest.raises(ValueError, match="positive integer"):
        model.add_sessions({"session-z": 0})


def test_keep_and_remove_sessions_keep_rows():
    torch.manual_seed(6)
    model = NedsForMaskedModeling(tiny_config()).eval()
    batch = make_batch(model.config, [2, 2], seed=10)
    reference = model(**batch).spike_log_rates
    model.keep_sessions(["session-c"])
    assert model.config.session_ids == ["session-c"]
    batch["session_index"] = torch.tensor([0, 0])
    torch.testing.assert_close(model(**batch).spike_log_rates, reference, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"unknown.*session-a"):
        model.remove_sessions(["session-a"])


def test_loading_with_other_sessions_is_a_clear_error(tmp_path, model):
    model.save_pretrained(tmp_path)
    other = tiny_config(sessions={"session-a": 5, "session-x": 4})
    with pytest.raises(
        ValueError,
        match=r"unknown to the checkpoint \['session-x'\].*"
        r"missing from the config \['session-b', 'session-c'\]",
    ):
        NedsForMaskedModeling.from_pretrained(tmp_path, config=other)
    fresh = NedsForMaskedModeling(other)
    with pytest.raises(ValueError, match="another set of sessions"):
        fresh.load_state_dict(model.state_dict())
    # the explicit way: load as saved, then change the sessions
    loaded = NedsForMaskedModeling.from_pretrained(tmp_path)
    loaded.keep_sessions(["session-a"])
    loaded.add_sessions({"session-x": 4})
    assert loaded.config.sessions == other.sessions


def test_unknown_session_index_and_too_few_neurons_are_clear_errors(model):
    batch = make_batch(model.config, [0, 1])
    with pytest.raises(ValueError, match=r"session_index must lie in \[0, 3\)"):
        model(**{**batch, "session_index": torch.tensor([0, 5])})
    with pytest.raises(ValueError, match="9 neurons"):
        model(**select(batch, [0, 1], num_neurons=6))
    with pytest.raises(ValueError, match="no sessions yet"):
        NedsForMaskedModeling(tiny_config(sessions={}))(**batch)


# ------------------------------------------------------------------------------------------------
# Saving, loading, Auto classes


def test_save_load_round_trip(tmp_path, model):
    batch = make_batch(model.config, [0, 1, 2], seed=11)
    expected = model(**batch)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert {"configuration_neds.py", "modeling_neds.py", "config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "neds" and saved["sessions"] == [
        [k, v] for k, v in SESSIONS.items()
    ]
    assert saved["auto_map"]["AutoModel"] == "modeling_neds.NedsModel"
    for loader in (NedsForMaskedModeling.from_pretrained, AutoModelForMaskedLM.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, NedsForMaskedModeling) and not loaded.training
        out = loaded(**batch)
        assert torch.equal(out.spike_log_rates, expected.spike_log_rates)
        for name in expected.behavior_predictions:
            assert torch.equal(out.behavior_predictions[name], expected.behavior_predictions[name])
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, NedsModel)
    torch.testing.assert_close(
        backbone(
            **{
                k: batch[k]
                for k in (
                    "spikes",
                    "session_index",
                    "behavior_values",
                    "behavior_labels",
                    "spike_mask",
                    "behavior_mask",
                )
            }
        ).last_hidden_state,
        expected.last_hidden_state,
    )
    assert isinstance(AutoConfig.from_pretrained(tmp_path), NedsConfig)


def test_trust_remote_code_load_without_neds_hf(tmp_path, model):
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    batch = make_batch(model.config, [1, 0], seed=12)
    torch.save(batch, tmp_path / "batch.pt")
    torch.save(model(**batch).spike_log_rates, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        from transformers import AutoModelForMaskedLM
        model = AutoModelForMaskedLM.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
        assert "neds_hf" not in sys.modules, "neds_hf was imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        out = model(**torch.load({str(tmp_path / "batch.pt")!r})).spike_log_rates
        assert torch.equal(out, torch.load({str(tmp_path / "expected.pt")!r}))
        print("REMOTE-CODE-OK")
    """)
    result = run_without_neds_hf(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-CODE-OK" in result.stdout


# ------------------------------------------------------------------------------------------------
# Export, mixed precision, convenience


def test_torch_export_matches_eager(model):
    batch = make_batch(model.config, [0, 1], seed=13)
    names = (
        "spikes",
        "session_index",
        "behavior_values",
        "behavior_labels",
        "spike_mask",
        "behavior_mask",
    )
    args = tuple(batch[name] for name in names)

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(
            self, spikes, session_index, behavior_values, behavior_labels, spike_mask, behavior_mask
        ):
            out = self.inner(
                spikes, session_index, behavior_values, behavior_labels, spike_mask, behavior_mask
            )
            return out.spike_log_rates, out.behavior_predictions["choice"], out.loss

    exported = torch.export.export(Wrapper(model), args)
    eager = Wrapper(model)(*args)
    for got, want in zip(exported.module()(*args), eager):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_torch_export_of_a_single_session_batch_serves_any_sessions(model):
    # traced on one session, the graph must not bake in that session's rows
    single = make_batch(model.config, [0, 0], num_neurons=9, seed=15)
    mixed = make_batch(model.config, [1, 2], num_neurons=9, seed=16)
    names = ("spikes", "session_index", "behavior_values", "behavior_labels", "spike_mask")

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, spikes, session_index, behavior_values, behavior_labels, spike_mask):
            out = self.inner(spikes, session_index, behavior_values, behavior_labels, spike_mask)
            return out.spike_log_rates, out.loss

    exported = torch.export.export(Wrapper(model), tuple(single[name] for name in names))
    for batch in (single, mixed):
        args = tuple(batch[name] for name in names)
        for got, want in zip(exported.module()(*args), Wrapper(model)(*args)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_forward_on_cpu(model):
    batch = make_batch(model.config, [0, 1, 2], seed=14)
    reference = model(**batch)
    seen = []
    hook = model.neds.layers[0].attention.qkv_proj.register_forward_hook(
        lambda module, inputs, output: seen.append(output[0].dtype)
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    hook.remove()
    assert seen == [torch.bfloat16]
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(
        out.spike_log_rates.float(), reference.spike_log_rates, atol=0.1, rtol=0.1
    )


def test_dummy_inputs_are_a_valid_batch(model):
    inputs = model.dummy_inputs
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    mtm = NedsForMaskedModeling(tiny_mtm_config())
    assert torch.isfinite(mtm(**mtm.dummy_inputs).loss)
    assert make_dummy_inputs(model.config, batch_size=5)["spikes"].shape[0] == 5


def test_predict_neural_activity_and_behavior(model):
    batch = make_batch(model.config, [0, 2], seed=15)
    model.train()
    rates = model.predict_neural_activity(
        batch["session_index"], batch["behavior_values"], batch["behavior_labels"]
    )
    assert model.training  # mode restored
    model.eval()
    assert (
        rates.shape == (2, NUM_BINS, 5)
        and torch.all(rates[1, :, 3:] == 0)
        and torch.all(rates[0] > 0)
    )
    manual = model(
        batch["spikes"][:, :, :5] * 0,
        batch["session_index"],
        batch["behavior_values"],
        batch["behavior_labels"],
        spike_mask=torch.ones(2, NUM_BINS, 5, dtype=torch.bool),
        behavior_mask=torch.zeros(2, NUM_BINS, 4, dtype=torch.bool),
    )
    torch.testing.assert_close(rates[0], manual.spike_log_rates[0].exp())
    only_wheel = model.predict_neural_activity(
        batch["session_index"],
        batch["behavior_values"],
        batch["behavior_labels"],
        visible_behaviors=["wheel_speed"],
    )
    assert not torch.allclose(only_wheel, rates)
    decoded = model.predict_behavior(batch["spikes"], batch["session_index"])
    assert decoded["wheel_speed"].shape == (2, NUM_BINS)
    torch.testing.assert_close(decoded["choice"].sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="unknown modalities"):
        model.predict_neural_activity(batch["session_index"], visible_behaviors=["pupil"])


def test_encoding_without_behaviour_hides_it(model):
    batch = make_batch(model.config, [0, 1], seed=16)
    rates = model.predict_neural_activity(batch["session_index"])
    hidden = model(
        torch.zeros(2, NUM_BINS, 9),
        batch["session_index"],
        batch["behavior_values"] * 0 + 5.0,
        batch["behavior_labels"],
        spike_mask=torch.ones(2, NUM_BINS, 9, dtype=torch.bool),
        behavior_mask=torch.ones(2, NUM_BINS, 4, dtype=torch.bool),
    )
    torch.testing.assert_close(rates[0, :, :5], hidden.spike_log_rates[0, :, :5].exp())
    with pytest.raises(ValueError, match="need their values"):
        model.predict_neural_activity(batch["session_index"], visible_behaviors=["choice"])


def test_freeze_encoder_freezes_exactly_the_shared_layers():
    model = NedsForMaskedModeling(tiny_config())
    encoder = {name for name, _ in model.encoder_parameters()}
    assert encoder and all(".layers." in name or ".final_norm." in name for name in encoder)
    assert not any(is_session_parameter(name) for name in encoder)
    model.freeze_encoder()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == encoder
    model.freeze_encoder(False)
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# Attention implementations, attention dropout, initialisation, checkpointing, compile


def test_attention_implementations_agree_and_eager_returns_weights():
    torch.manual_seed(0)
    for config_of in (tiny_config, tiny_mtm_config):  # the MtM batch has causal samples
        sdpa_model = NedsForMaskedModeling(config_of()).eval()
        assert sdpa_model.config._attn_implementation == "sdpa"
        eager_model = NedsForMaskedModeling(config_of(attn_implementation="eager")).eval()
        eager_model.load_state_dict(sdpa_model.state_dict())
        batch = make_batch(sdpa_model.config, [0, 1, 2, 1], seed=21)
        eager_out = eager_model(**batch, output_attentions=True)
        length = sdpa_model.config.num_tokens
        assert [tuple(a.shape) for a in eager_out.attentions] == [(4, 4, length, length)] * 2
        torch.testing.assert_close(eager_out.attentions[0].sum(-1), torch.ones(4, 4, length))
        sdpa_out = sdpa_model(**batch)
        assert sdpa_out.attentions is None
        torch.testing.assert_close(eager_out.spike_log_rates, sdpa_out.spike_log_rates)
        torch.testing.assert_close(eager_out.loss, sdpa_out.loss)
        # weights asked of an sdpa model: that call runs eager attention
        weights = sdpa_model(**batch, output_attentions=True).attentions
        torch.testing.assert_close(weights[1], eager_out.attentions[1])
    if sdpa_model.config.use_prompt:  # causal samples never attend to later bins
        causal_row = eager_out.attentions[0][1, 0, 1]  # sample 1 is causal; query: bin 0 spikes
        assert torch.all(causal_row[2 : NUM_BINS + 1] == 0)
    sdpa_model.set_attn_implementation("eager")
    assert sdpa_model.config._attn_implementation == "eager"
    assert sdpa_model.neds.layers[0].attention.config._attn_implementation == "eager"


@pytest.mark.skipif(
    importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed"
)
def test_flash_attention_needs_flash_attn_and_no_attention_mask():
    with pytest.raises(ImportError, match="FlashAttention2"):
        NedsForMaskedModeling(tiny_config(attn_implementation="flash_attention_2"))
    model = NedsForMaskedModeling(tiny_mtm_config()).eval()
    model.config._attn_implementation = "flash_attention_2"  # as if flash-attn were installed
    with pytest.raises(ValueError, match=r"takes no attention mask.*causal MtM attention"):
        model(**make_batch(model.config, [0, 1], seed=22))


def test_attention_dropout_modes(monkeypatch):
    """Key dropout goes through the boolean mask; probability dropout through the attention
    function's own dropout (SDPA's dropout_p on GPU, the eager form on CPU); neither acts in
    eval mode."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("dropout_p", 0.0)))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    keys = NedsForMaskedModeling(tiny_config(attention_dropout=0.5))
    probabilities = NedsForMaskedModeling(
        tiny_config(attention_dropout=0.5, attention_dropout_mode="probabilities")
    )
    probabilities.load_state_dict(keys.state_dict())
    batch = make_batch(keys.config, [0, 1, 2], seed=23)
    keys.train()(**batch)
    assert calls and all(mask is not None and mask.dtype == torch.bool for mask, _ in calls)
    assert all(p == 0.0 for _, p in calls)
    calls.clear()
    probabilities.train()
    torch.manual_seed(1)
    first = probabilities(**batch).spike_log_rates
    assert not calls  # CPU: the eager form, cheaper than SDPA's dropout path
    torch.manual_seed(2)
    assert not torch.allclose(first, probabilities(**batch).spike_log_rates)
    torch.manual_seed(1)
    assert torch.equal(first, probabilities(**batch).spike_log_rates)  # seeded
    attention = probabilities.neds.layers[0].attention
    eager = attention._attention_function(False, None, 0.5, "cpu")
    assert eager is eager_attention_forward
    gpu = attention._attention_function(False, None, 0.5, "cuda")
    assert gpu is ALL_ATTENTION_FUNCTIONS["sdpa"]  # SDPA's dropout_p keeps the fused kernels
    calls.clear()
    evaluated = probabilities.eval()(**batch).spike_log_rates
    assert all(mask is None and p == 0.0 for mask, p in calls)
    torch.testing.assert_close(evaluated, keys.eval()(**batch).spike_log_rates)
    with pytest.raises(ValueError, match="attention_dropout_mode must be one of"):
        tiny_config(attention_dropout_mode="heads")


def test_fixup_initialisation_follows_module_types():
    from neds_hf.modeling_neds import NedsFixupLinear, NedsQKVProjection

    torch.manual_seed(0)
    config = tiny_config(hidden_size=64, intermediate_size=256, num_hidden_layers=4)
    model = NedsForMaskedModeling(config)
    std, fixup = config.initializer_range, 0.67 * 4**-0.25
    layer = model.neds.layers[0]
    assert isinstance(layer.attention.qkv_proj, NedsQKVProjection)
    for linear in (layer.mlp.up_proj, layer.mlp.down_proj, layer.attention.out_proj):
        assert isinstance(linear, NedsFixupLinear)
        assert linear.weight.std().item() == pytest.approx(std * fixup, rel=0.05)
        assert torch.all(linear.bias == 0)
    qkv = layer.attention.qkv_proj.weight
    assert qkv[:128].std().item() == pytest.approx(std, rel=0.05)  # queries and keys
    assert qkv[128:].std().item() == pytest.approx(std * fixup * 2**0.5, rel=0.05)  # values
    plain = model.categorical_heads["block"].weight
    assert plain.std().item() == pytest.approx(std, rel=0.2)
    no_fixup = NedsForMaskedModeling(
        tiny_config(hidden_size=64, intermediate_size=256, fixup_init=False)
    )
    assert no_fixup.neds.layers[0].mlp.up_proj.weight.std().item() == pytest.approx(std, rel=0.05)


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    grads = {
        name.removeprefix("_orig_mod."): p.grad.clone()
        for name, p in model.named_parameters()
        if p.grad is not None
    }
    return out.loss.detach(), out.spike_log_rates.detach(), grads


@pytest.mark.parametrize("config_of", [tiny_config, tiny_mtm_config], ids=["neds", "mtm"])
def test_gradient_checkpointing_gives_the_same_losses_and_gradients(config_of):
    torch.manual_seed(0)
    model = NedsForMaskedModeling(config_of()).train()  # dropout 0: deterministic
    batch = make_batch(model.config, [0, 1, 2, 0], seed=24)
    loss, _, grads = _loss_and_grads(model, batch)
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.neds.layers)
    checkpointed_loss, _, checkpointed_grads = _loss_and_grads(model, batch)
    assert torch.equal(loss, checkpointed_loss)
    assert grads.keys() == checkpointed_grads.keys()
    for name in grads:
        torch.testing.assert_close(checkpointed_grads[name], grads[name], rtol=0, atol=0)


@pytest.mark.slow  # inductor compiles C++ kernels: 12-90 s on 2 busy cores
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = NedsForMaskedModeling(tiny_config()).train()  # dropout 0: deterministic
    batch = make_batch(model.config, [0, 1, 2], seed=25)
    loss, rates, grads = _loss_and_grads(model, batch)
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: no graph breaks in forward
    compiled_loss, compiled_rates, compiled_grads = _loss_and_grads(compiled, batch)
    torch.testing.assert_close(compiled_loss, loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_rates, rates, atol=1e-5, rtol=1e-5)
    for name in grads:
        torch.testing.assert_close(compiled_grads[name], grads[name], atol=1e-5, rtol=1e-4)


def test_modality_loss_weights_scale_each_modality_in_the_total_loss(model):
    batch = make_batch(model.config, [0, 1, 2], seed=4)
    base = model(**batch)
    weighted = NedsForMaskedModeling(tiny_config(modality_loss_weights={"choice": 3.0}))
    weighted.load_state_dict(model.state_dict())
    weighted.eval()
    out = weighted(**batch)
    for name, value in base.modality_losses.items():  # the per-modality means are unweighted
        torch.testing.assert_close(out.modality_losses[name], value)
    expected = base.loss + 2.0 * base.modality_losses["choice"]
    torch.testing.assert_close(out.loss, expected)


def test_token_and_spikes_readout_adds_the_mean_spike_state_to_trial_level_heads(model):
    batch = make_batch(model.config, [0, 1, 2], seed=5)
    readout = NedsForMaskedModeling(tiny_config(trial_level_readout="token_and_spikes"))
    readout.load_state_dict(model.state_dict())
    readout.eval()
    base = model(**batch, output_hidden_states=True)
    out = readout(**batch)
    hidden = base.last_hidden_state  # (B, L, H), after the final norm
    spike_mean = hidden[:, :NUM_BINS].mean(1)  # (B, H)
    config = model.config
    start = NUM_BINS + NUM_BINS * len(config.continuous_modalities)
    for offset, spec in enumerate(config.categorical_modalities):
        head = model.categorical_heads[spec["name"]]
        token = hidden[:, start + offset]
        torch.testing.assert_close(out.behavior_predictions[spec["name"]], head(token + spike_mean))
        torch.testing.assert_close(base.behavior_predictions[spec["name"]], head(token))
    torch.testing.assert_close(out.spike_log_rates, base.spike_log_rates)
