"""`NedsLinear`'s recomputing path: the same outputs and gradients as the plain composition,
fewer saved activations in training, and the plain path wherever recomputing would be wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_modeling_neds import make_batch, tiny_config
from torch import nn

from neds_hf import NedsForMaskedModeling
from neds_hf.modeling_neds import NedsLinear, NedsQKVProjection


def _inputs(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()


def _layer_norm() -> nn.LayerNorm:
    norm = nn.LayerNorm(8, eps=1e-5).double()
    with torch.no_grad():  # not the identity init, so the norm's own gradients are exercised
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


@pytest.mark.parametrize(
    "preceded_by",
    [_layer_norm, lambda: nn.GELU(), lambda: F.softsign],
    ids=["layer-norm", "gelu-module", "softsign-function"],
)
def test_recomputing_path_matches_the_composition(preceded_by):
    torch.manual_seed(0)
    step, linear = preceded_by(), NedsLinear(8, 5).double()
    hidden = _inputs(3, 4, 8, seed=1)
    assert linear._recomputes(hidden, step)
    fused = linear(hidden, preceded_by=step)
    assert fused.grad_fn.name().endswith("ThenLinearBackward")  # the recomputing function ran
    plain = F.linear(step(hidden), linear.weight, linear.bias)
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-12)

    parameters = [hidden, linear.weight, linear.bias, *getattr(step, "parameters", list)()]
    upstream = torch.randn_like(plain)
    want = torch.autograd.grad(plain, parameters, upstream)
    got = torch.autograd.grad(fused, parameters, upstream)
    for name, a, b in zip(["inputs", "weight", "bias", "norm weight", "norm bias"], got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("rotary", [True, False], ids=["rotary-order", "stored-order"])
def test_qkv_projection_recomputes_its_norm_and_takes_three_gradients(rotary):
    torch.manual_seed(1)
    projection, norm = NedsQKVProjection(8, 2, rotary=rotary).double(), _layer_norm()
    with torch.no_grad():
        projection.bias.uniform_(-1.0, 1.0)
    hidden = _inputs(2, 3, 8, seed=2)
    fused = projection(hidden, preceded_by=norm)
    assert all(t.grad_fn.name() == "_NormThenQKVBackward" for t in fused)
    assert all(t.is_contiguous() and t.shape == (2, 3, 8) for t in fused)
    plain = projection(norm(hidden))  # the plain path: views of one product
    assert plain[0].grad_fn.name() != "_NormThenQKVBackward"
    for got, want in zip(fused, plain):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    upstream = [torch.randn_like(t) for t in plain]
    parameters = [hidden, projection.weight, projection.bias, norm.weight, norm.bias]
    names = ["inputs", "weight", "bias", "norm weight", "norm bias"]
    for name, got, want in zip(
        names,
        torch.autograd.grad(fused, parameters, upstream),
        torch.autograd.grad(plain, parameters, upstream),
    ):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=name)


def test_plain_path_without_gradients_with_hooks_and_under_autocast():
    linear, norm = NedsLinear(8, 5), nn.LayerNorm(8)
    hidden = torch.randn(2, 8, requires_grad=True)
    assert linear._recomputes(hidden, norm)
    with torch.no_grad():
        assert not linear._recomputes(hidden, norm)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not linear._recomputes(hidden, norm)
    assert not linear._recomputes(hidden, nn.Linear(8, 8))  # a layer, not an activation
    assert linear._recomputes(hidden.detach(), norm)  # the weights still need gradients
    linear.requires_grad_(False)
    assert not linear._recomputes(hidden.detach(), norm)  # nothing to differentiate

    calls = []
    hook = norm.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert not linear._recomputes(hidden, norm)
        linear(hidden, preceded_by=norm)
    finally:
        hook.remove()
    assert calls == [1]  # the hook saw the norm run


def _saved_bytes(model: NedsForMaskedModeling, batch: dict[str, torch.Tensor]) -> int:
    """Bytes of distinct storages autograd keeps for the backward pass of one forward."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    loss.backward()  # outside the hooks: the recomputation in backward keeps nothing
    return sum(storages.values())


def test_model_training_saves_less_and_computes_the_same_gradients(monkeypatch):
    torch.manual_seed(2)
    config = tiny_config(num_hidden_layers=3)
    model = NedsForMaskedModeling(config).eval()  # dropout off: two runs must be comparable
    batch = make_batch(config, [0, 1, 2, 1], seed=21)

    recomputed_bytes = _saved_bytes(model, batch)
    recomputed = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    monkeypatch.setattr(NedsLinear, "_recomputes", lambda *_: False)
    plain_bytes = _saved_bytes(model, batch)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(recomputed[name], parameter.grad, rtol=1e-5, atol=1e-6)

    # per layer: the two norms' outputs (B, L, H) and statistics (mean, 1/std: (B, L, 1) each)
    # and the activation's output (B, L, I); plus the spike stitcher's softsign (its output and
    # the divisor it keeps, (B, T, D) each)
    batch_size, length = 4, model.config.num_tokens
    per_layer = batch_size * length * (2 * (config.hidden_size + 2) + config.intermediate_size)
    stitcher = 2 * batch_size * config.num_time_bins * config.spike_stitcher_size
    expected = 4 * (config.num_hidden_layers * per_layer + stitcher)
    saved = plain_bytes - recomputed_bytes
    assert saved == pytest.approx(expected, rel=0.01), (saved, expected)
