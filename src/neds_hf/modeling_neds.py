"""NEDS: one multimodal transformer for neural encoding and decoding, as a transformers model.

Token layout of one trial (optional prompt token first, spikes, then the behaviours in config
order):

* spikes: one token per time bin, from a per-session *stitcher* of the whole population vector;
* continuous behaviours: one token per time bin, from a small per-modality tokenizer;
* categorical behaviours: one token per trial (per bin when not trial-level; optionally spread
  over all bins as in the reference code).

Every token gets a modality, a time and a session embedding; queries and keys are rotated by the
token's time bin. Hidden tokens are replaced by a learned mask token; losses are computed only
where the target masks say so, and padded neurons never count.

Per-session parameters (spike stitchers, session embeddings, spike readouts) live in modules
whose attribute names start with ``session_``; their rows are stacked over sessions and gathered
per sample, so `forward` never loops over sessions or samples. Session ``s`` owns rows
``offsets[s]:offsets[s + 1]`` of every per-neuron table (:func:`session_row_offsets`). When every
sample of a batch comes from one session (evaluation, and training one session per batch), the
stitcher and the readout use that session's row block directly (one matmul each, no per-sample
gather); under torch.compile / torch.export they always take the gathering path.

Attention runs through the function named by ``config._attn_implementation`` (``"sdpa"`` by
default, ``"eager"`` for attention weights, ``"flash_attention_2"`` where flash-attn is installed),
looked up in transformers' `ALL_ATTENTION_FUNCTIONS` as in the library's own models.

This module imports only torch, transformers and :mod:`configuration_neds`, so it can be copied
next to a checkpoint and loaded with ``trust_remote_code=True``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

from .configuration_neds import INVALID_LABEL, NedsConfig, allows_missing, normalize_sessions

logger = logging.get_logger(__name__)

SESSION_PARAMETER_PREFIX = "session_"


def is_session_parameter(name: str) -> bool:
    """Whether a parameter name (as in `named_parameters`) belongs to a per-session module."""
    return any(part.startswith(SESSION_PARAMETER_PREFIX) for part in name.split("."))


def _is_tracing() -> bool:
    """True under torch.compile / torch.export, where data-dependent checks must be skipped."""
    return torch.compiler.is_compiling()


def _all_hidden_without_grad(hidden: torch.Tensor) -> bool:
    """Whether every token of a modality is hidden (`hidden`, bool) in a forward that records
    no gradient, so its tokenizer can be skipped; never under tracing (data-dependent), and
    never with gradients, where skipping would leave the tokenizer's gradients `None` instead
    of zero and change what the optimizer does."""
    return not torch.is_grad_enabled() and not _is_tracing() and bool(hidden.all())


# =============================================================================================
# Outputs
# =============================================================================================


@dataclass
class NedsModelOutput(ModelOutput):
    """Output of :class:`NedsModel` (B: trials, L: tokens per trial, H: hidden size).

    Args:
        last_hidden_state: final (normalised) hidden states of every token, `(B, L, H)`.
        hidden_states: with ``output_hidden_states``: the embeddings and the output of every
            layer (the last one normalised), a tuple of ``num_hidden_layers + 1`` `(B, L, H)`.
        attentions: with ``output_attentions``: the attention probabilities of every layer, a
            tuple of ``num_hidden_layers`` `(B, heads, L, L)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class NedsMaskedModelingOutput(ModelOutput):
    """Output of :class:`NedsForMaskedModeling` (T: time bins, N: padded neurons, C: classes).

    Args:
        loss: sum of the per-modality losses, a scalar `()` (present when any mask is given
            and `return_loss` is True).
        modality_losses: ``{modality name: ()}`` mean loss over that modality's target entries
            (0 when it has none).
        spike_log_rates: predicted log firing rates per bin, `(B, T, N)`; padded neurons hold 0.
        behavior_predictions: ``{behaviour name: tensor}``: continuous `(B, T)`, trial-level
            categorical logits `(B, C)`, per-bin categorical logits `(B, T, C)`.
        last_hidden_state: final hidden states, `(B, L, H)`.
        hidden_states: embeddings + every layer's output, ``num_hidden_layers + 1`` x `(B, L, H)`.
        attentions: every layer's attention probabilities, ``num_hidden_layers`` x
            `(B, heads, L, L)`.
    """

    loss: torch.FloatTensor | None = None
    modality_losses: dict[str, torch.FloatTensor] | None = None
    spike_log_rates: torch.FloatTensor | None = None
    behavior_predictions: dict[str, torch.FloatTensor] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class NedsLossTargets:
    """What the masked-modelling losses compare the predictions with, and where.

    Args:
        spike_counts: target spike counts, `(B, T, N)`.
        spike_scored: True where a spike count is scored (target mask and a real neuron),
            `(B, T, N)`; `None` scores no spike.
        behavior_values: continuous targets in config order, `(B, T, n_continuous)`, or `None`.
        behavior_labels: categorical targets in config order, `(B, T, n_categorical)` (trial-level
            labels read at bin 0), or `None`.
        behavior_scored: True where a behaviour token is scored, `(B, T, n_behavior)` in config
            order of the behaviour modalities; `None` scores no behaviour.
    """

    spike_counts: torch.Tensor
    spike_scored: torch.Tensor | None
    behavior_values: torch.Tensor | None
    behavior_labels: torch.Tensor | None
    behavior_scored: torch.Tensor | None


# =============================================================================================
# Linear layers that recompute their cheap input step for the backward pass
# =============================================================================================


def _linear_backward(
    grad_output: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, has_bias: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of ``F.linear(inputs, weight, bias)`` for the input, weight and bias."""
    grad_flat = grad_output.reshape(-1, grad_output.shape[-1])  # (M, out)
    grad_inputs = grad_output @ weight  # (..., in)
    grad_weight = grad_flat.t() @ inputs.reshape(-1, inputs.shape[-1])  # (out, in)
    return grad_inputs, grad_weight, grad_flat.sum(0) if has_bias else None  # bias (out,)


def _recompute_layer_norm(
    hidden: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A LayerNorm's output `(..., H)` recomputed in a backward pass, with a graph to its
    (detached) input, weight and bias, which are returned for `torch.autograd.grad`."""
    with torch.enable_grad():
        norm_inputs = [t.detach().requires_grad_() for t in (hidden, norm_weight, norm_bias)]
        normed = F.layer_norm(norm_inputs[0], hidden.shape[-1:], *norm_inputs[1:], eps)
    return normed, norm_inputs


class _NormThenLinear(torch.autograd.Function):
    """``F.linear(F.layer_norm(hidden))`` keeping the norm's input (which the residual stream
    keeps anyway) instead of its output: the norm is recomputed in the backward pass."""

    @staticmethod
    def forward(ctx, hidden, norm_weight, norm_bias, eps, weight, bias):
        """`hidden (..., H)` -> ``linear(layer_norm(hidden))`` `(..., out)`."""
        normed = F.layer_norm(hidden, hidden.shape[-1:], norm_weight, norm_bias, eps)  # (..., H)
        ctx.eps, ctx.has_bias = eps, bias is not None
        ctx.save_for_backward(hidden, norm_weight, norm_bias, weight)
        return F.linear(normed, weight, bias)  # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """Gradients for the input, the norm's and the linear's parameters (`eps`: none)."""
        hidden, norm_weight, norm_bias, weight = ctx.saved_tensors
        normed, norm_inputs = _recompute_layer_norm(hidden, norm_weight, norm_bias, ctx.eps)
        grad_normed, grad_weight, grad_bias = _linear_backward(
            grad_output, normed.detach(), weight, ctx.has_bias
        )
        grad_hidden, grad_norm_weight, grad_norm_bias = torch.autograd.grad(
            normed, norm_inputs, grad_normed
        )
        return grad_hidden, grad_norm_weight, grad_norm_bias, None, grad_weight, grad_bias


class _ActivationThenLinear(torch.autograd.Function):
    """``F.linear(activation(pre_activation))`` keeping only the activation's input: the
    activation is recomputed in the backward pass."""

    @staticmethod
    def forward(ctx, pre_activation, activation, weight, bias):
        """`pre_activation (..., in)` -> ``linear(activation(pre_activation))`` `(..., out)`."""
        ctx.activation, ctx.has_bias = activation, bias is not None
        ctx.save_for_backward(pre_activation, weight)
        return F.linear(activation(pre_activation), weight, bias)  # (..., out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        """Gradients for the input and the linear's parameters."""
        pre_activation, weight = ctx.saved_tensors
        with torch.enable_grad():
            leaf = pre_activation.detach().requires_grad_()
            activated = ctx.activation(leaf)  # (..., in)
        grad_activated, grad_weight, grad_bias = _linear_backward(
            grad_output, activated.detach(), weight, ctx.has_bias
        )
        (grad_pre_activation,) = torch.autograd.grad(activated, leaf, grad_activated)
        return grad_pre_activation, None, grad_weight, grad_bias


class _NormThenQKV(torch.autograd.Function):
    """``F.layer_norm`` then the fused query/key/value projection, returning queries, keys and
    values as three tensors `(..., H)`. Keeps the norm's input (recomputing the norm in the
    backward pass) and takes the three gradients as they come: no concatenation of them, and
    the weight gradient is written straight into the stored row order (`output_order`)."""

    @staticmethod
    def forward(ctx, hidden, norm_weight, norm_bias, eps, weight, bias, output_order):
        """`hidden (..., H)` -> queries, keys, values `(..., H)` each."""
        normed = F.layer_norm(hidden, hidden.shape[-1:], norm_weight, norm_bias, eps)  # (..., H)
        emitted_weight = weight if output_order is None else weight[output_order]  # (3H, H)
        emitted_bias = bias if output_order is None else bias[output_order]  # (3H,)
        ctx.eps = eps
        ctx.save_for_backward(hidden, norm_weight, norm_bias, emitted_weight, output_order)
        return tuple(
            F.linear(normed, part_weight, part_bias)  # (..., H)
            for part_weight, part_bias in zip(emitted_weight.chunk(3), emitted_bias.chunk(3))
        )

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_query, grad_key, grad_value):
        """Gradients for the input, the norm's parameters and the stored weight and bias."""
        hidden, norm_weight, norm_bias, emitted_weight, output_order = ctx.saved_tensors
        normed, norm_inputs = _recompute_layer_norm(hidden, norm_weight, norm_bias, ctx.eps)
        normed_flat = normed.detach().reshape(-1, normed.shape[-1])  # (M, H)
        grad_weight = torch.empty_like(emitted_weight)  # (3H, H), emitted row order
        grad_bias = emitted_weight.new_empty(emitted_weight.shape[0])  # (3H,)
        grads = (grad_query, grad_key, grad_value)
        grad_normed = None
        for grad, part_weight, weight_rows, bias_rows in zip(
            grads, emitted_weight.chunk(3), grad_weight.chunk(3), grad_bias.chunk(3)
        ):
            grad_flat = grad.reshape(-1, grad.shape[-1])  # (M, H)
            if grad_normed is None:
                grad_normed = grad_flat @ part_weight  # (M, H)
            else:
                grad_normed.addmm_(grad_flat, part_weight)
            torch.mm(grad_flat.t(), normed_flat, out=weight_rows)  # (H, H)
            torch.sum(grad_flat, 0, out=bias_rows)  # (H,)
        if output_order is not None:  # emitted row i is stored row output_order[i]
            grad_weight = torch.empty_like(grad_weight).index_copy_(0, output_order, grad_weight)
            grad_bias = torch.empty_like(grad_bias).index_copy_(0, output_order, grad_bias)
        grad_hidden, grad_norm_weight, grad_norm_bias = torch.autograd.grad(
            normed, norm_inputs, grad_normed.view_as(normed)
        )
        return grad_hidden, grad_norm_weight, grad_norm_bias, None, grad_weight, grad_bias, None


class NedsLinear(nn.Linear):
    """A Linear layer that can apply the cheap step before it (a LayerNorm or an elementwise
    activation, `preceded_by`) itself.

    In a forward that records gradients, the step's input is kept for the backward pass instead
    of its output, and the step is recomputed there: a pre-LayerNorm block's norms and the MLP's
    activation then keep no tensor of their own (about 30 % of a training step's saved
    activations at the reference's settings) for one extra elementwise pass each. Outputs and
    gradients are those of ``self(preceded_by(inputs))``. Without gradients, under tracing or
    autocast, and when `preceded_by` is not a plain LayerNorm or activation (hooks, other
    module types), it is exactly that composition.
    """

    def forward(
        self,
        inputs: torch.Tensor,
        preceded_by: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`inputs (..., in)` -> ``linear(preceded_by(inputs))`` `(..., out)`."""
        return self._project(inputs, self.weight, self.bias, preceded_by)

    def _project(
        self,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        preceded_by: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """``F.linear(preceded_by(inputs), weight, bias)``, recomputing `preceded_by` in the
        backward pass where that is exact (see the class docstring)."""
        if preceded_by is None:
            return F.linear(inputs, weight, bias)
        if not self._recomputes(inputs, preceded_by):
            return F.linear(preceded_by(inputs), weight, bias)
        if isinstance(preceded_by, nn.LayerNorm):
            return _NormThenLinear.apply(
                inputs, preceded_by.weight, preceded_by.bias, preceded_by.eps, weight, bias
            )
        return _ActivationThenLinear.apply(inputs, preceded_by, weight, bias)

    def _recomputes(
        self, inputs: torch.Tensor, preceded_by: Callable[[torch.Tensor], torch.Tensor]
    ) -> bool:
        """Whether this forward takes the recomputing path."""
        if not torch.is_grad_enabled() or _is_tracing():
            return False
        if torch.is_autocast_enabled(inputs.device.type):
            return False
        if not (inputs.requires_grad or self.weight.requires_grad):
            return False
        if isinstance(preceded_by, nn.Module):
            if preceded_by._forward_hooks or preceded_by._forward_pre_hooks:
                return False  # the hooks must see the module run
            if isinstance(preceded_by, nn.LayerNorm):
                return (
                    type(preceded_by) is nn.LayerNorm
                    and preceded_by.weight is not None
                    and preceded_by.bias is not None
                    and preceded_by.normalized_shape == inputs.shape[-1:]
                )
            return not list(preceded_by.parameters())  # an activation, not a layer
        return True


# =============================================================================================
# Per-session parameter tables
# =============================================================================================


class NedsSessionNeuronTable(nn.Module):
    """Per-neuron vectors of every session stacked in one table, plus a per-session bias.

    Row block ``offsets[s] : offsets[s + 1]`` belongs to session ``s``. `gather` returns, for a
    batch, each sample's neuron vectors padded to `N` with zeros for the padded neurons, so they
    contribute nothing and receive no gradient; `session_weight` is the block of one session,
    for batches whose samples all share it.
    """

    def __init__(self, neuron_counts: Sequence[int], width: int, session_bias_width: int | None):
        super().__init__()
        total = int(sum(neuron_counts))
        self.width = width
        self.neuron_weight = nn.Parameter(torch.empty(total, width))
        self.session_bias = (
            nn.Parameter(torch.empty(len(neuron_counts), session_bias_width))
            if session_bias_width is not None
            else None
        )
        self._counts = [int(count) for count in neuron_counts]
        for name, value in self._buffer_values().items():
            self.register_buffer(name, value, persistent=False)

    def _buffer_values(self) -> dict[str, torch.Tensor]:
        """Non-persistent buffers, recomputed from the session neuron counts."""
        # host copy of the offsets: slicing one session's block never reads the device
        self._row_offsets = _session_row_offset_list(self._counts)
        return {
            "neuron_counts": torch.tensor(self._counts, dtype=torch.long),
            "offsets": session_row_offsets(self._counts),
        }

    def session_rows(self, session: int) -> slice:
        """The table rows of session row `session` (its neurons, in order)."""
        start = self._row_offsets[session]
        return slice(start, start + self._counts[session])

    def session_neuron_count(self, session: int) -> int:
        """How many neurons session row `session` has."""
        return self._counts[session]

    def session_weight(self, session: int) -> torch.Tensor:
        """The neuron vectors of session row `session`, `(n_session, width)` (a view)."""
        return self.neuron_weight[self.session_rows(session)]

    def neuron_mask(self, session_index: torch.Tensor, num_neurons: int) -> torch.Tensor:
        """True at each sample's real neurons, False at padding, `(B, N)`."""
        return _neuron_index(self.offsets, self.neuron_counts, session_index, num_neurons)[1]

    def gather(self, session_index: torch.Tensor, num_neurons: int) -> torch.Tensor:
        """Neuron vectors for each sample, `(B, N, width)`, zero at padded neurons."""
        neuron_index, neuron_mask = _neuron_index(
            self.offsets, self.neuron_counts, session_index, num_neurons
        )
        vectors = self.neuron_weight[neuron_index]  # (B, N, width)
        return vectors * neuron_mask.unsqueeze(-1).to(vectors.dtype)

    def gather_bias(self, session_index: torch.Tensor) -> torch.Tensor:
        """Per-session bias rows, `(B, width)`."""
        return self.session_bias[session_index]

    @torch.no_grad()
    def resize_for_sessions(
        self,
        neuron_counts: Sequence[int],
        keep_rows: torch.Tensor,
        keep_sessions: torch.Tensor,
        init_std: float,
    ) -> None:
        """Rebuild the table for a new session list, copying kept rows and initialising new ones.

        `keep_rows[i]` is the old row copied into new row `i` (or -1 for a fresh row);
        `keep_sessions[j]` likewise for session bias rows.
        """
        device, dtype = self.neuron_weight.device, self.neuron_weight.dtype
        new_weight = torch.empty(int(sum(neuron_counts)), self.width, device=device, dtype=dtype)
        new_weight.normal_(0.0, init_std)
        copied = keep_rows >= 0
        new_weight[copied] = self.neuron_weight[keep_rows[copied]]
        self.neuron_weight = nn.Parameter(new_weight)
        if self.session_bias is not None:
            new_bias = torch.zeros(
                len(neuron_counts), self.session_bias.shape[1], device=device, dtype=dtype
            )
            copied = keep_sessions >= 0
            new_bias[copied] = self.session_bias[keep_sessions[copied]]
            self.session_bias = nn.Parameter(new_bias)
        self._counts = [int(count) for count in neuron_counts]
        for name, value in self._buffer_values().items():
            setattr(self, name, value.to(device))


def session_row_offsets(neuron_counts: Sequence[int]) -> torch.Tensor:
    """First table row of every session plus the total, `(S + 1,)`.

    The one rule for how per-neuron tables are laid out: session ``s`` owns rows
    ``offsets[s]:offsets[s + 1]``, sessions in config order.
    """
    return torch.tensor(_session_row_offset_list(neuron_counts), dtype=torch.long)  # (S + 1,)


def _session_row_offset_list(neuron_counts: Sequence[int]) -> list[int]:
    """:func:`session_row_offsets` as a Python list (no tensor, so also on the meta device)."""
    return list(itertools.accumulate([0, *(int(count) for count in neuron_counts)]))


def _neuron_index(
    offsets: torch.Tensor,
    neuron_counts: torch.Tensor,
    session_index: torch.Tensor,
    num_neurons: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows of each sample's neurons `(B, N)` and the real-neuron mask `(B, N)`.

    Padded positions point at the session's own last row (and are masked out), so a batch never
    reads rows of sessions it does not contain.
    """
    positions = torch.arange(num_neurons, device=session_index.device)  # (N,)
    counts = neuron_counts[session_index].unsqueeze(-1)  # (B, 1)
    neuron_mask = positions.unsqueeze(0) < counts  # (B, N)
    clamped = torch.minimum(positions.unsqueeze(0), counts - 1)  # (B, N)
    return offsets[session_index].unsqueeze(-1) + clamped, neuron_mask


# =============================================================================================
# Tokenizers and embeddings
# =============================================================================================


class NedsSpikeStitcher(nn.Module):
    """Per-session spike stitcher: the population vector of one bin -> one token.

    ``token = W_shared softsign(Σ_n count_n · e_n + b_session)`` with a per-neuron input vector
    `e_n` and a per-session bias (both per-session parameters), followed by a shared projection.
    Hidden entries (`spike_mask`) are zeroed before stitching.
    """

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.session_neurons = NedsSessionNeuronTable(
            list(config.sessions.values()), config.spike_stitcher_size, config.spike_stitcher_size
        )
        self.projection = NedsLinear(config.spike_stitcher_size, config.hidden_size)

    def forward(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        batch_session: int | None = None,
    ) -> torch.Tensor:
        """`spikes (B, T, N)` -> tokens `(B, T, H)`.

        `batch_session`: the session row every sample shares, when the caller knows it (see
        `NedsModel`); its neuron block is then used directly, with the same result as the
        per-sample gather. `None`: gather each sample's vectors.
        """
        if batch_session is None:
            neuron_vectors = self.session_neurons.gather(
                session_index, spikes.shape[-1]
            )  # (B, N, D)
            stitched = torch.bmm(spikes.to(neuron_vectors.dtype), neuron_vectors)  # (B, T, D)
            stitched = stitched + self.session_neurons.gather_bias(session_index).unsqueeze(1)
        else:
            weight = self.session_neurons.session_weight(batch_session)  # (n, D)
            batch_size, num_bins, _ = spikes.shape
            # padded neuron columns (beyond n) have zero vectors in the gathering path: drop them
            counts = spikes[..., : weight.shape[0]].reshape(-1, weight.shape[0])  # (B*T, n)
            stitched = torch.addmm(
                self.session_neurons.session_bias[batch_session], counts.to(weight.dtype), weight
            ).view(batch_size, num_bins, -1)  # (B, T, D)
        return self.projection(stitched, preceded_by=F.softsign)  # (B, T, H)


class NedsContinuousTokenizer(nn.Module):
    """Per-modality tokenizer of one continuous value per bin: Linear -> softsign -> Linear."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.expand = nn.Linear(1, config.behavior_stitcher_size)
        self.projection = nn.Linear(config.behavior_stitcher_size, config.hidden_size)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """`values (B, T)` -> tokens `(B, T, H)`."""
        return self.projection(F.softsign(self.expand(values.unsqueeze(-1))))


class NedsRotaryEmbedding(nn.Module):
    """Rotary position embedding of queries and keys by time bin."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.head_dim, self.theta = config.head_dim, float(config.rope_theta)
        self.register_buffer("inv_freq", self._buffer_values()["inv_freq"], persistent=False)

    def _buffer_values(self) -> dict[str, torch.Tensor]:
        """Non-persistent buffers: the rotary inverse frequencies."""
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
        return {"inv_freq": 1.0 / (self.theta**exponents)}

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """`positions (L,)` -> per-token cosines and sines `(2, L, head_dim / 2)`.

        Pair ``i`` of a head's dimensions turns by the angle ``position * inv_freq[i]``
        (:func:`apply_rotary`).
        """
        angles = positions.float().unsqueeze(-1) * self.inv_freq  # (L, head_dim / 2)
        return torch.stack([angles.cos(), angles.sin()])  # (2, L, head_dim / 2)


def apply_rotary(x: torch.Tensor, rotary: torch.Tensor) -> torch.Tensor:
    """Rotate token vectors `x (B, L, ..., head_dim)` by the angles of `rotary (2, L, hd / 2)`.

    Dimensions ``(2i, 2i + 1)`` form pair ``i`` and become ``(a cos - b sin, a sin + b cos)``:
    in float32/64 one complex product (one kernel instead of seven real ones), otherwise (half
    precision, tracing) the same in real arithmetic. The result keeps `x`'s token-major layout,
    so attention reads it without a copy, and its backward keeps only the angles.
    :class:`NedsQKVProjection` emits queries and keys with their pairs interleaved this way.
    """
    middle = (1,) * (x.dim() - 3)
    cos, sin = rotary.view(2, rotary.shape[1], *middle, -1).unbind(0)  # each (L, ..., hd / 2)
    pairs = x.unflatten(-1, (-1, 2))  # (B, L, ..., head_dim / 2, 2)
    if x.dtype in (torch.float32, torch.float64) and not _is_tracing():
        turn = torch.complex(cos.to(x.dtype), sin.to(x.dtype))  # (L, ..., hd / 2)
        return torch.view_as_real(torch.view_as_complex(pairs) * turn).flatten(-2)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    first, second = pairs.unbind(-1)  # each (B, L, ..., head_dim / 2)
    return torch.stack([first * cos - second * sin, first * sin + second * cos], -1).flatten(-2)


# =============================================================================================
# Transformer
# =============================================================================================


DROPOUT_RATE_LEVELS = 1 << 16  # the CPU dropout rounds its rate to a multiple of 1 / this


def dropout_keep_mask(
    shape: Sequence[int], p: float, device: torch.device
) -> tuple[torch.Tensor, float]:
    """A random boolean keep mask of `shape` for dropout at rate ≈ `p`, and the scale that keeps
    the expectation exact, ``1 / (1 - p_used)``.

    Each entry compares 16 random bits with a threshold, so four entries share one 64-bit draw
    of the generator (on CPU 2.3x faster than ``torch.rand(shape) >= p``, which draws one
    number per entry: 1.7 vs 3.9 ms on `(16, 302, 256)`): the rate used is `p`
    rounded to a multiple of 2⁻¹⁶ (within 7.6e-6 of `p`), and the scale is computed from that
    rate. Rates too close to 0 or 1 for that grid use ``torch.rand(shape) >= p`` and `p` itself.
    """
    dropped_levels = round(p * DROPOUT_RATE_LEVELS)
    if not 0 < dropped_levels < DROPOUT_RATE_LEVELS:
        return torch.rand(shape, device=device) >= p, 1.0 / (1.0 - p)
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), 2**63 - 1)  # the full int64 range: all 64 bits random
    lanes = words.view(torch.int16)[:numel]  # (numel,) uniform over the 2^16 int16 values
    keep = lanes >= dropped_levels - DROPOUT_RATE_LEVELS // 2  # P(keep) = 1 - levels / 2^16
    return keep.view(shape), DROPOUT_RATE_LEVELS / (DROPOUT_RATE_LEVELS - dropped_levels)


def neds_dropout(hidden: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as `F.dropout(hidden, p, training)`.

    On CPU the keep mask comes from :func:`dropout_keep_mask` instead of ``bernoulli_``, which
    is single-threaded there and was 8 % of a training step at the reference's settings: 8x
    faster per call (1.7 vs 13.6 ms on `(16, 302, 256)`), and the mask kept for the backward
    pass is boolean (a quarter of the float mask's memory). Its rate is `p` rounded to a
    multiple of 2⁻¹⁶, with the matching scale, so the expectation is exact. On other devices
    (fused kernels) and under tracing it is `F.dropout`.
    """
    if not training or p == 0.0:
        return hidden
    if hidden.device.type != "cpu" or p >= 1.0 or _is_tracing():
        return F.dropout(hidden, p, training=True)
    keep, scale = dropout_keep_mask(hidden.shape, p, hidden.device)  # bool, shaped like hidden
    # `where`, not `hidden * keep`: a product would first convert the mask to a float copy
    return torch.where(keep, hidden, 0.0).mul_(scale)


class NedsDropout(nn.Dropout):
    """`nn.Dropout` computed by :func:`neds_dropout` (same rate, state and representation)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`hidden_states` with a random `p` share of entries zeroed and the rest scaled."""
        return neds_dropout(hidden_states, self.p, self.training)


class NedsFixupLinear(NedsLinear):
    """A Linear layer initialised with the fixup-scaled std (``0.67 * L**-0.25``, `fixup_init`):
    the MLP projections and the attention output projection, as in the reference."""


class NedsQKVProjection(NedsLinear):
    """The fused query/key/value projection: queries and keys initialised at the plain std,
    values at the fixup-scaled std x sqrt(2), as in the reference.

    Weights are stored in the reference's order, where rotary dimension ``i`` of a head pairs
    with ``i + head_dim / 2``; with `rotary`, the projection returns each query and key head
    with those pairs interleaved (``2i, 2i + 1``), the layout :func:`apply_rotary` turns in one
    complex product. Queries and keys are permuted alike, so attention scores are unchanged.

    Queries, keys and values come out as three tensors. Preceded by a LayerNorm in a forward
    that records gradients (see :class:`NedsLinear`), they are three products whose gradients
    reach the backward pass separately, so neither their concatenation nor a copy of the values
    out of a fused output is needed; otherwise they are views of one fused product.
    """

    def __init__(self, hidden_size: int, num_heads: int, rotary: bool = True):
        super().__init__(hidden_size, 3 * hidden_size)
        self.num_heads, self.rotary = num_heads, rotary
        for name, value in self._buffer_values().items():
            self.register_buffer(name, value, persistent=False)

    def _buffer_values(self) -> dict[str, torch.Tensor]:
        """Non-persistent buffer (with `rotary`): the stored row behind each output feature."""
        if not self.rotary:
            return {}
        head_dim = self.in_features // self.num_heads
        rows = torch.arange(3 * self.in_features).view(3, self.num_heads, head_dim)
        interleaved = torch.arange(head_dim).view(2, head_dim // 2).t().reshape(-1)  # (hd,)
        query_key = rows[:2, :, interleaved]  # (2, heads, head_dim)
        return {"output_order": torch.cat([query_key.reshape(-1), rows[2].reshape(-1)])}

    def forward(
        self,
        hidden_states: torch.Tensor,
        preceded_by: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`hidden_states (..., H)` (through `preceded_by` first, see :class:`NedsLinear`) ->
        queries, keys (pairs interleaved with `rotary`) and values, `(..., H)` each."""
        output_order = self.output_order if self.rotary else None
        if isinstance(preceded_by, nn.LayerNorm) and self._recomputes(hidden_states, preceded_by):
            return _NormThenQKV.apply(
                hidden_states,
                preceded_by.weight,
                preceded_by.bias,
                preceded_by.eps,
                self.weight,
                self.bias,
                output_order,
            )
        weight, bias = self.weight, self.bias
        if output_order is not None:
            weight, bias = weight[output_order], bias[output_order]
        query, key, value = self._project(hidden_states, weight, bias, preceded_by).chunk(3, -1)
        if torch.is_grad_enabled():
            # a copy: attention keeps its value input for backward, and a view would keep the
            # whole (..., 3H) product alive for it
            value = value.contiguous()
        return query, key, value


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out, returning the attention probabilities too.

    `query`, `key`, `value` `(B, heads, L, head_dim)`; `attention_mask` bool, True where a query
    may attend a key, broadcastable to `(B, heads, L, L)`. Returns the context
    `(B, L, heads, head_dim)` (the layout of transformers' attention functions) and the
    probabilities `(B, heads, L, L)` after dropout.
    """
    scores = query @ key.transpose(-1, -2)  # (B, heads, L, L)
    scores = scores / math.sqrt(query.shape[-1]) if scaling is None else scores * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = neds_dropout(scores.softmax(-1), dropout, module.training)
    context = weights @ value  # (B, heads, L, head_dim)
    return context.transpose(1, 2), weights


class NedsAttention(nn.Module):
    """Multi-head self-attention with rotary q/k, through the configured attention function.

    The function comes from ``config._attn_implementation``: ``"sdpa"`` (default,
    `scaled_dot_product_attention`), ``"eager"`` (:func:`eager_attention_forward`, the only one
    that returns attention probabilities: ``output_attentions=True`` uses it for that call
    whatever the configuration), ``"flash_attention_2"`` (transformers' flash-attn path; no
    attention mask, so neither causal MtM attention nor key dropout).

    Regularisation follows `config.attention_dropout_mode`: ``"keys"`` (default) drops keys per
    (trial, head) through the boolean attention mask, which keeps SDPA on its fused CPU kernel;
    ``"probabilities"`` passes `attention_dropout` to the attention function as its own dropout
    (the reference's regulariser): SDPA's ``dropout_p`` on GPU (fused kernels), the eager form
    on CPU during training (cheaper there than SDPA's unfused dropout path).
    """

    is_causal = False  # read by transformers' attention functions: NEDS attention is not causal

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_dropout = float(config.attention_dropout)
        self.dropout_mode = config.attention_dropout_mode
        self.qkv_proj = NedsQKVProjection(
            config.hidden_size, config.num_attention_heads, rotary=config.use_rope
        )
        self.out_proj = NedsFixupLinear(config.hidden_size, config.hidden_size)
        self.dropout = NedsDropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
        norm: nn.LayerNorm | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states (B, L, H)`, normalised first by `norm` if given, -> attended
        `(B, L, H)` and, if asked, the probabilities."""
        batch_size, length, _ = hidden_states.shape
        head_shape = (batch_size, length, self.num_heads, self.head_dim)
        query, key, value = (
            projected.view(head_shape)  # (B, L, heads, head_dim)
            for projected in self.qkv_proj(hidden_states, preceded_by=norm)
        )
        if rotary is not None:
            query, key = apply_rotary(query, rotary), apply_rotary(key, rotary)  # token-major
        # token-major layouts seen head-major: attention reads them, and hands its gradients
        # back, without a copy
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, heads, L, hd)
        dropout = 0.0
        if self.training and self.attention_dropout > 0:
            if self.dropout_mode == "keys":
                attention_mask = self._key_dropout_mask(attention_mask, batch_size, length, query)
            else:
                dropout = self.attention_dropout
        attention_function = self._attention_function(
            output_attentions, attention_mask, dropout, query.device.type
        )
        context, weights = attention_function(self, query, key, value, attention_mask, dropout)
        context = context.reshape(batch_size, length, -1)  # (B, L, H)
        return self.dropout(self.out_proj(context)), weights if output_attentions else None

    def _key_dropout_mask(
        self,
        attention_mask: torch.Tensor | None,
        batch_size: int,
        length: int,
        like: torch.Tensor,
    ) -> torch.Tensor:
        """`attention_mask` with a random `attention_dropout` share of keys dropped per
        (trial, head), `(B, heads, 1 or L, L)`; a query that would lose every key keeps them."""
        keep = torch.rand(batch_size, self.num_heads, 1, length, device=like.device)
        keep = keep >= self.attention_dropout  # (B, heads, 1, L)
        if attention_mask is None:
            # a row that lost every key would give NaN: it sees all keys instead
            return keep | ~keep.any(-1, keepdim=True)
        combined = attention_mask & keep  # (B, heads, L, L)
        return torch.where(combined.any(-1, keepdim=True), combined, attention_mask)

    def _attention_function(
        self,
        output_attentions: bool,
        attention_mask: torch.Tensor | None,
        dropout: float,
        device_type: str,
    ) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
        """The attention function of `config._attn_implementation`, with two substitutions:
        eager when weights are asked for, and eager for probability dropout on CPU, where
        SDPA's `dropout_p` runs a math path ~2x slower than the eager form (measured: NEDS
        training step 3.6 s with SDPA dropout_p vs 1.8 s eager, 1.1 s with key dropout)."""
        implementation = self.config._attn_implementation or "sdpa"
        if output_attentions and implementation != "eager":
            logger.warning_once(
                f"attn_implementation={implementation!r} cannot return attention weights; "
                "output_attentions=True uses eager attention for those calls. Load the model "
                "with attn_implementation='eager' to make this explicit."
            )
            return eager_attention_forward
        if implementation == "sdpa" and dropout > 0 and device_type == "cpu":
            return eager_attention_forward
        if implementation.startswith("flash_attention") and attention_mask is not None:
            raise ValueError(
                f"attn_implementation={implementation!r} takes no attention mask, but this "
                "forward needs one (causal MtM attention, or attention_dropout_mode='keys' in "
                "training). Use attention_dropout_mode='probabilities' without causal "
                "attention, or attn_implementation='sdpa'."
            )
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)


class NedsMLP(nn.Module):
    """Position-wise feed-forward block."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.up_proj = NedsFixupLinear(config.hidden_size, config.intermediate_size)
        self.down_proj = NedsFixupLinear(config.intermediate_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = NedsDropout(config.hidden_dropout)

    def forward(
        self, hidden_states: torch.Tensor, norm: nn.LayerNorm | None = None
    ) -> torch.Tensor:
        """`hidden_states (B, L, H)`, normalised first by `norm` if given, -> `(B, L, H)`."""
        pre_activation = self.up_proj(hidden_states, preceded_by=norm)  # (B, L, I)
        return self.dropout(self.down_proj(pre_activation, preceded_by=self.activation))


class NedsEncoderLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: ``x += Attn(LN(x)); x += MLP(LN(x))``."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = NedsAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = NedsMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`hidden_states (B, L, H)` -> `(B, L, H)` and the attention probabilities (or None).

        `hidden_states` comes first and positionally: activation checkpointing
        (`GradientCheckpointingLayer`) recomputes the block from its positional arguments.
        """
        # the norms run inside the projections after them (see `NedsLinear`)
        attended, weights = self.attention(
            hidden_states, rotary, attention_mask, output_attentions, norm=self.attention_norm
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(hidden_states, norm=self.mlp_norm)
        return hidden_states, weights


# =============================================================================================
# Pretrained base
# =============================================================================================


class NedsPreTrainedModel(PreTrainedModel):
    """Weights initialisation, session management and loading checks shared by NEDS models."""

    config: NedsConfig
    config_class = NedsConfig
    base_model_prefix = "neds"
    main_input_name = "spikes"
    input_modalities = ("time",)
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["NedsEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weights, zero biases, and the reference's fixup scaling,
        chosen by module type (:class:`NedsFixupLinear`, :class:`NedsQKVProjection`, ...).

        Uses `transformers.initialization`, which leaves weights loaded from a checkpoint alone.
        """
        if hasattr(module, "_buffer_values"):
            # non-persistent buffers are not in checkpoints: recompute them
            for name, value in module._buffer_values().items():
                init.copy_(getattr(module, name), value)
        std = self.config.initializer_range
        fixup = 0.67 * self.config.num_hidden_layers**-0.25 if self.config.fixup_init else 1.0
        if isinstance(module, NedsQKVProjection):
            if not getattr(module.weight, "_is_hf_initialized", False):
                # queries/keys at `std`, values with the fixup scale x sqrt(2)
                hidden = module.weight.shape[1]
                module.weight.normal_(0.0, std)
                module.weight[2 * hidden :].mul_(fixup * math.sqrt(2.0))
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            scale = fixup if isinstance(module, NedsFixupLinear) else 1.0
            init.normal_(module.weight, std=std * scale)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, NedsSessionNeuronTable):
            init.normal_(module.neuron_weight, std=std)
            if module.session_bias is not None:
                init.zeros_(module.session_bias)
        elif isinstance(module, NedsSessionEmbedding):
            init.normal_(module.weight, std=std)
        elif isinstance(module, NedsModel):
            init.normal_(module.mask_token, std=std)

    # ---------------------------------------------------------------------------------------
    # Sessions
    def session_parameter_names(self) -> list[str]:
        """Names of the per-session parameters (their rows are stacked over sessions)."""
        return [name for name, _ in self.named_parameters() if is_session_parameter(name)]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The shared transformer encoder's parameters (its layers and final norm): what
        fine-tuning freezes to keep pretrained dynamics while new sessions' stitchers adapt."""
        backbone = self.base_model
        prefix = "" if backbone is self else f"{self.base_model_prefix}."
        return [
            (f"{prefix}{part}.{name}", parameter)
            for part in ("layers", "final_norm")
            for name, parameter in getattr(backbone, part).named_parameters()
        ]

    def freeze_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart, with ``frozen=False``) gradient updates of the shared encoder."""
        for _, parameter in self.encoder_parameters():
            parameter.requires_grad_(not frozen)

    def add_sessions(self, sessions: Mapping[str, int]) -> list[str]:
        """Add new sessions ``{session_id: n_neurons}`` with freshly initialised parameters.

        Shared parameters and the rows of known sessions are left untouched. Parameters are
        replaced by larger ones, so build the optimizer after this call. Returns the new ids.
        """
        new_sessions = normalize_sessions(sessions, field_name="add_sessions")
        known = sorted(set(new_sessions) & set(self.config.sessions))
        if known:
            raise ValueError(f"add_sessions: sessions already known to the model: {known}")
        self._set_sessions({**self.config.sessions, **new_sessions})
        return list(new_sessions)

    def remove_sessions(self, session_ids: Iterable[str]) -> None:
        """Drop sessions and their per-session parameters (e.g. pretraining sessions)."""
        session_ids = list(session_ids)
        unknown = sorted(set(session_ids) - set(self.config.sessions))
        if unknown:
            raise ValueError(f"remove_sessions: sessions unknown to the model: {unknown}")
        self._set_sessions({s: n for s, n in self.config.sessions.items() if s not in session_ids})

    def keep_sessions(self, session_ids: Iterable[str]) -> None:
        """Keep only these sessions (in this order), dropping the others' parameters."""
        session_ids = list(session_ids)
        unknown = sorted(set(session_ids) - set(self.config.sessions))
        if unknown:
            raise ValueError(f"keep_sessions: sessions unknown to the model: {unknown}")
        self._set_sessions({s: self.config.sessions[s] for s in session_ids})

    @torch.no_grad()
    def _set_sessions(self, sessions: Mapping[str, int]) -> None:
        """Resize every per-session module for `sessions`, keeping the rows of known ones."""
        old_ids = self.config.session_ids
        old_offsets = session_row_offsets(list(self.config.sessions.values()))
        keep_sessions = torch.tensor(
            [old_ids.index(s) if s in old_ids else -1 for s in sessions], dtype=torch.long
        )
        keep_rows = []
        for session_id, count in sessions.items():
            if session_id in old_ids:
                start = int(old_offsets[old_ids.index(session_id)])
                keep_rows.extend(range(start, start + count))
            else:
                keep_rows.extend([-1] * count)
        keep_rows_tensor = torch.tensor(keep_rows, dtype=torch.long)
        counts = list(sessions.values())
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, NedsSessionNeuronTable):
                module.resize_for_sessions(
                    counts,
                    keep_rows_tensor.to(module.neuron_weight.device),
                    keep_sessions.to(module.neuron_weight.device),
                    std,
                )
            elif isinstance(module, NedsSessionEmbedding):
                module.resize_for_sessions(len(counts), keep_sessions, std)
        self.config.sessions = dict(sessions)

    # ---------------------------------------------------------------------------------------
    # Loading checks
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *model_args: Any, config: Any = None, **kwargs: Any
    ) -> NedsPreTrainedModel:
        """Load a checkpoint; a `config` with another session set, or non-finite (NaN/inf)
        weights, are clear errors naming the sessions or tensors.

        To fine-tune on other sessions, load the checkpoint as saved and then call
        :meth:`add_sessions` / :meth:`keep_sessions` explicitly.
        """
        if isinstance(config, NedsConfig) and pretrained_model_name_or_path is not None:
            hub_kwargs = {
                k: kwargs[k]
                for k in (
                    "cache_dir",
                    "force_download",
                    "local_files_only",
                    "token",
                    "revision",
                    "subfolder",
                )
                if k in kwargs
            }
            saved = NedsConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            check_same_sessions(saved.sessions, config.sessions, str(pretrained_model_name_or_path))
        loaded = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        damaged = non_finite_tensors(model.named_parameters())
        if damaged:
            raise ValueError(
                f"Checkpoint {pretrained_model_name_or_path} holds non-finite weights (NaN or "
                f"inf) in {', '.join(damaged)}: the file is damaged or the training diverged. "
                "Load an earlier checkpoint or a good copy."
            )
        return loaded

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """`nn.Module.load_state_dict` with clear errors when per-session tables differ or a
        tensor holds NaN/inf."""
        own = dict(self.state_dict())
        mismatched = [
            f"{name}: checkpoint {tuple(value.shape)} vs model {tuple(own[name].shape)}"
            for name, value in state_dict.items()
            if is_session_parameter(name)
            and name in own
            and tuple(value.shape) != tuple(own[name].shape)
        ]
        if mismatched:
            raise ValueError(
                "The checkpoint was trained on another set of sessions than this model "
                f"(model sessions: {self.config.session_ids}); per-session tables differ: "
                + "; ".join(mismatched)
                + ". Load the checkpoint with its own config, then call add_sessions / "
                "keep_sessions explicitly."
            )
        damaged = non_finite_tensors(
            (name, value) for name, value in state_dict.items() if isinstance(value, torch.Tensor)
        )
        if damaged:
            raise ValueError(
                f"The state dict holds non-finite values (NaN or inf) in {', '.join(damaged)}"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_same_sessions(
    saved: Mapping[str, int], requested: Mapping[str, int], source: str
) -> None:
    """Raise a ValueError listing unknown / missing sessions when two session sets differ."""
    if dict(saved) == dict(requested):
        return
    unknown = sorted(set(requested) - set(saved))
    missing = sorted(set(saved) - set(requested))
    resized = sorted(s for s in set(saved) & set(requested) if saved[s] != requested[s])
    order = "" if unknown or missing or resized else " (same sessions in another order)"
    raise ValueError(
        f"Checkpoint {source} was saved with other sessions than the given config{order}: "
        f"unknown to the checkpoint {unknown}, missing from the config {missing}, "
        f"different neuron counts {resized}. Load it without `config=` and call "
        "`model.add_sessions(...)` / `model.keep_sessions(...)` to change sessions explicitly."
    )


class NedsSessionEmbedding(nn.Module):
    """One learned vector per session, added to every token of that session's trials."""

    def __init__(self, num_sessions: int, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_sessions, hidden_size))

    def forward(self, session_index: torch.Tensor) -> torch.Tensor:
        """`session_index (B,)` -> each sample's session vector `(B, H)`."""
        return self.weight[session_index]  # (B, H)

    @torch.no_grad()
    def resize_for_sessions(
        self, num_sessions: int, keep_sessions: torch.Tensor, std: float
    ) -> None:
        """Rebuild for a new session list; `keep_sessions[j]` is the old row of new row j or -1."""
        new_weight = torch.empty(
            num_sessions, self.weight.shape[1], device=self.weight.device, dtype=self.weight.dtype
        ).normal_(0.0, std)
        keep_sessions = keep_sessions.to(self.weight.device)
        copied = keep_sessions >= 0
        new_weight[copied] = self.weight[keep_sessions[copied]]
        self.weight = nn.Parameter(new_weight)


# =============================================================================================
# Backbone
# =============================================================================================


class NedsModel(NedsPreTrainedModel):
    """The NEDS backbone: tokenizes every modality, masks, and encodes; returns hidden states.

    Inputs (all batch-first; the data collator builds them):
        spikes: spike counts `(B, T, N)`, neurons padded with anything (ignored) beyond the
            sample's session neuron count.
        session_index: row of each sample's session in `config.session_ids`, `(B,)`.
        behavior_values: continuous behaviours `(B, T, n_continuous)`, config order.
        behavior_labels: categorical labels `(B, T, n_categorical)` (trial-level labels
            repeated over T; only bin 0 is read), config order.
        spike_mask: `(B, T, N)` bool, True where spike counts are hidden from the model. A
            bin whose real neurons are all hidden becomes the mask token.
        behavior_mask: `(B, T, n_behavior)` bool over the behaviour modalities in config order,
            True where hidden (trial-level variables: bin 0, or every bin when spread).
        behavior_valid: `(B, T, n_behavior)` bool, same layout, False where a behaviour entry
            is missing (the collator's ``behavior_valid``): hidden on input like a masked entry
            (its value, even NaN, never reaches a layer) and never scored.
        prompt_index: `(B,)` row of `config.prompt_schemes` for the prompt token (MtM).
        causal_attention: `(B,)` bool, causal-in-time attention for these samples (MtM causal).
    """

    def __init__(self, config: NedsConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.spike_stitcher = NedsSpikeStitcher(config)
        self.session_embedding = NedsSessionEmbedding(len(config.sessions), hidden)
        self.continuous_tokenizers = nn.ModuleDict(
            {spec["name"]: NedsContinuousTokenizer(config) for spec in config.continuous_modalities}
        )
        self.categorical_embeddings = nn.ModuleDict(
            {
                spec["name"]: nn.Embedding(spec["num_classes"], hidden)
                for spec in config.categorical_modalities
            }
        )
        self.modality_embedding = nn.Embedding(len(config.modalities), hidden)
        # rows 0..T-1: time bins; row T: the trial slot of trial-level tokens
        self.time_embedding = nn.Embedding(config.num_time_bins + 1, hidden)
        self.prompt_embedding = (
            nn.Embedding(len(config.prompt_schemes), hidden) if config.use_prompt else None
        )
        self.mask_token = nn.Parameter(torch.empty(hidden))
        self.embedding_dropout = NedsDropout(config.embedding_dropout)
        self.rotary = NedsRotaryEmbedding(config) if config.use_rope else None
        self.layers = nn.ModuleList(
            NedsEncoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.final_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self._register_token_layout()
        self.gradient_checkpointing = False
        self.post_init()

    def _register_token_layout(self) -> None:
        for name, value in self._buffer_values().items():
            self.register_buffer(name, value, persistent=False)

    def _buffer_values(self) -> dict[str, torch.Tensor]:
        """Per-token modality, time-embedding row, rotary position and causal time, `(L,)` each.

        Token order: the prompt (MtM), the spike tokens, then the behaviour modalities in config
        order, wherever the spikes entry sits in `config.modalities` (the order `forward`
        concatenates and the heads read); modality ids are config positions.
        """
        config = self.config
        num_bins = config.num_time_bins
        modality_ids, time_rows, rope_positions, causal_times = [], [], [], []
        if config.use_prompt:
            # the prompt has no modality/time embedding of its own (rows unused); causal time -1
            modality_ids.append(0)
            time_rows.append(num_bins)
            rope_positions.append(0)
            causal_times.append(-1)
        for spec in (config.spike_modality, *config.behavior_modalities):
            modality_id = config.modalities.index(spec)
            count = config.modality_num_tokens(spec)
            modality_ids.extend([modality_id] * count)
            if count == num_bins:
                time_rows.extend(range(num_bins))
                rope_positions.extend(range(num_bins))
                trial_level = spec["kind"] == "categorical" and spec.get("trial_level", True)
                # a spread trial-level variable is only known at the end of the trial
                causal_times.extend([num_bins] * num_bins if trial_level else range(num_bins))
            else:
                time_rows.append(num_bins)
                rope_positions.append(0)
                causal_times.append(num_bins)
        return {
            name: torch.tensor(values, dtype=torch.long)
            for name, values in (
                ("token_modality", modality_ids),
                ("token_time_row", time_rows),
                ("token_rope_position", rope_positions),
                ("token_causal_time", causal_times),
            )
        }

    def get_input_embeddings(self) -> nn.Module:
        """The modality embedding (transformers API; NEDS has no token vocabulary)."""
        return self.modality_embedding

    # ---------------------------------------------------------------------------------------
    def _check_inputs(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None,
        behavior_labels: torch.Tensor | None,
        behavior_valid: torch.Tensor | None = None,
    ) -> int | None:
        """Shape and dtype checks always; value checks (session rows, neuron counts) only
        outside torch.compile / torch.export, where they would be data-dependent.

        Returns the session row every sample shares (read with the same host sync as the
        neuron-count check), or `None` for a mixed batch and always under tracing, so that a
        traced graph never bakes in one batch's session.
        """
        config = self.config
        if spikes.dim() != 3 or spikes.shape[1] != config.num_time_bins:
            raise ValueError(
                f"spikes must be (batch, {config.num_time_bins} time bins, neurons), "
                f"got {tuple(spikes.shape)}"
            )
        if session_index.shape != spikes.shape[:1]:
            raise ValueError(
                f"session_index must be ({spikes.shape[0]},), got {tuple(session_index.shape)}"
            )
        if session_index.is_floating_point() or session_index.dtype == torch.bool:
            raise ValueError(
                f"session_index must hold integer session rows, got dtype {session_index.dtype}"
            )
        if not config.sessions:
            raise ValueError("The model knows no sessions yet: call model.add_sessions(...) first")
        expected_valid = (spikes.shape[0], config.num_time_bins, len(config.behavior_modalities))
        if behavior_valid is not None and (
            tuple(behavior_valid.shape) != expected_valid or behavior_valid.dtype != torch.bool
        ):
            raise ValueError(
                f"behavior_valid has {_describe(behavior_valid)}; expected a bool tensor "
                f"{expected_valid} for {[s['name'] for s in config.behavior_modalities]}"
            )
        if _is_tracing():
            return None
        check_session_index(session_index, len(config.sessions))
        session_index = session_index.long()
        first, last, needed = torch.stack(
            [
                session_index.min(),
                session_index.max(),
                self.spike_stitcher.session_neurons.neuron_counts[session_index].max(),
            ]
        ).tolist()
        if spikes.shape[-1] < needed:
            raise ValueError(
                f"spikes have {spikes.shape[-1]} neuron columns but a session in the batch has "
                f"{needed} neurons"
            )
        n_continuous, n_categorical = (
            len(config.continuous_modalities),
            len(config.categorical_modalities),
        )
        if n_continuous and (
            behavior_values is None
            or tuple(behavior_values.shape) != (spikes.shape[0], config.num_time_bins, n_continuous)
        ):
            raise ValueError(
                f"behavior_values must be (batch, {config.num_time_bins}, {n_continuous}) for "
                f"{[s['name'] for s in config.continuous_modalities]}, got "
                f"{None if behavior_values is None else tuple(behavior_values.shape)}"
            )
        if n_categorical and (
            behavior_labels is None
            or tuple(behavior_labels.shape)
            != (spikes.shape[0], config.num_time_bins, n_categorical)
        ):
            raise ValueError(
                f"behavior_labels must be (batch, {config.num_time_bins}, {n_categorical}) for "
                f"{[s['name'] for s in config.categorical_modalities]}, got "
                f"{None if behavior_labels is None else tuple(behavior_labels.shape)}"
            )
        return first if first == last else None

    def forward(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None = None,
        behavior_labels: torch.Tensor | None = None,
        spike_mask: torch.Tensor | None = None,
        behavior_mask: torch.Tensor | None = None,
        prompt_index: torch.Tensor | None = None,
        causal_attention: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        behavior_valid: torch.Tensor | None = None,
    ) -> NedsModelOutput | tuple:
        """Encode one batch of trials; see the class docstring for the inputs."""
        batch_session = self._check_inputs(
            spikes, session_index, behavior_values, behavior_labels, behavior_valid
        )
        inputs = (behavior_values, behavior_labels, spike_mask, behavior_mask, prompt_index)
        options = (causal_attention, output_attentions, output_hidden_states, return_dict)
        return self._forward_checked(
            spikes, session_index, batch_session, *inputs, *options, behavior_valid=behavior_valid
        )

    def _forward_checked(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        batch_session: int | None,
        behavior_values: torch.Tensor | None = None,
        behavior_labels: torch.Tensor | None = None,
        spike_mask: torch.Tensor | None = None,
        behavior_mask: torch.Tensor | None = None,
        prompt_index: torch.Tensor | None = None,
        causal_attention: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        behavior_valid: torch.Tensor | None = None,
    ) -> NedsModelOutput | tuple:
        """`forward` after `_check_inputs`, which found `batch_session` (the session row all
        samples share, or `None`); `NedsForMaskedModeling` calls it to check only once."""
        config = self.config
        output_attentions = (
            output_attentions if output_attentions is not None else config.output_attentions
        )
        output_hidden_states = (
            output_hidden_states
            if output_hidden_states is not None
            else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        tokens = [
            self._spike_tokens(spikes, session_index, spike_mask, batch_session),
            *self._behavior_tokens(behavior_values, behavior_labels, behavior_mask, behavior_valid),
        ]
        hidden_states = self._embed(torch.cat(tokens, dim=1), session_index, prompt_index)
        hidden_states, all_hidden_states, all_attentions = self._encode(
            hidden_states,
            self._attention_mask(causal_attention),
            output_attentions,
            output_hidden_states,
        )
        output = NedsModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()  # to_tuple drops the None fields

    def _spike_tokens(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        spike_mask: torch.Tensor | None,
        batch_session: int | None,
    ) -> torch.Tensor:
        """Spike tokens `(B, T, H)`; a bin whose real neurons are all hidden is the mask token.

        When every bin is hidden (the encoding protocol, `predict_neural_activity`) and no
        gradient is recorded, the stitcher's output would be discarded whole: it is not
        computed (≈10 % of a case-a evaluation forward), with the same tokens as a result.
        """
        spike_counts = spikes.to(self.mask_token.dtype)  # (B, T, N)
        if spike_mask is None:
            return self.spike_stitcher(spike_counts, session_index, batch_session)
        if batch_session is None:
            neuron_mask = self.spike_stitcher.session_neurons.neuron_mask(
                session_index, spikes.shape[-1]
            )  # (B, N)
            hidden_bins = (spike_mask | ~neuron_mask.unsqueeze(1)).all(-1)  # (B, T)
        else:  # one session: its real neurons are the first n columns
            num_real = self.spike_stitcher.session_neurons.session_neuron_count(batch_session)
            hidden_bins = spike_mask[..., :num_real].all(-1)  # (B, T)
        if _all_hidden_without_grad(hidden_bins):
            return self.mask_token.expand(*hidden_bins.shape, -1)  # (B, T, H)
        spike_counts = spike_counts.masked_fill(spike_mask, 0.0)
        spike_tokens = self.spike_stitcher(spike_counts, session_index, batch_session)
        return torch.where(hidden_bins.unsqueeze(-1), self.mask_token, spike_tokens)

    def _behavior_tokens(
        self,
        behavior_values: torch.Tensor | None,
        behavior_labels: torch.Tensor | None,
        behavior_mask: torch.Tensor | None,
        behavior_valid: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """One `(B, tokens, H)` block per behaviour modality, config order; hidden ones masked.

        Entries that `behavior_valid` marks missing are hidden like masked ones, and their
        values are replaced by 0 first so that a NaN filler never reaches a tokenizer.
        """
        config = self.config
        blocks = []
        continuous_column = categorical_column = 0
        for behavior_column, spec in enumerate(config.behavior_modalities):
            count = config.modality_num_tokens(spec)
            valid = None if behavior_valid is None else behavior_valid[..., behavior_column]
            if spec["kind"] == "continuous":
                values = behavior_values[..., continuous_column].to(self.mask_token.dtype)  # (B, T)
                continuous_column += 1
                if valid is not None:
                    values = torch.where(valid, values, torch.zeros_like(values))
                modality_tokens = self.continuous_tokenizers[spec["name"]](values)  # (B, T, H)
            else:
                labels = behavior_labels[..., categorical_column]  # (B, T)
                categorical_column += 1
                if valid is not None:
                    labels = torch.where(valid, labels, torch.zeros_like(labels))
                if spec["trial_level"]:
                    labels = labels[:, :1].expand(labels.shape[0], count)  # (B, tokens)
                modality_tokens = self.categorical_embeddings[spec["name"]](
                    labels
                )  # (B, tokens, H)
            hidden = None if behavior_mask is None else behavior_mask[:, :count, behavior_column]
            if valid is not None:
                missing = ~valid[:, :count]  # (B, tokens)
                hidden = missing if hidden is None else hidden | missing
            if hidden is not None:
                modality_tokens = torch.where(
                    hidden.unsqueeze(-1), self.mask_token, modality_tokens
                )
            blocks.append(modality_tokens)
        return blocks

    def _embed(
        self,
        data_tokens: torch.Tensor,
        session_index: torch.Tensor,
        prompt_index: torch.Tensor | None,
    ) -> torch.Tensor:
        """Add modality, time and session embeddings to `data_tokens (B, L_data, H)`, prepend the
        prompt token (MtM) and apply embedding dropout: `(B, L, H)`."""
        config = self.config
        data_slice = slice(int(config.use_prompt), None)
        embeddings = self.modality_embedding(self.token_modality[data_slice]) + self.time_embedding(
            self.token_time_row[data_slice]
        )  # (L_data, H)
        hidden_states = (
            data_tokens + embeddings + self.session_embedding(session_index).unsqueeze(1)
        )  # (B, L_data, H)
        if config.use_prompt:
            if prompt_index is None:
                raise ValueError(
                    "use_prompt=True: pass prompt_index (B,) naming the masking scheme"
                )
            prompt = self.prompt_embedding(prompt_index) + self.session_embedding(session_index)
            hidden_states = torch.cat([prompt.unsqueeze(1), hidden_states], dim=1)  # (B, L, H)
        return self.embedding_dropout(hidden_states)

    def _attention_mask(self, causal_attention: torch.Tensor | None) -> torch.Tensor | None:
        """Boolean attention mask `(B, 1, L, L)` (True = may attend) for causal-in-time samples;
        `None` (full attention) when no sample is causal."""
        if causal_attention is None:
            return None
        causal_time = self.token_causal_time
        allowed = causal_time.unsqueeze(0) <= causal_time.unsqueeze(1)  # (L_q, L_k)
        return (allowed.unsqueeze(0) | ~causal_attention.view(-1, 1, 1)).unsqueeze(1)

    def _encode(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        output_attentions: bool,
        output_hidden_states: bool,
    ) -> tuple[torch.Tensor, tuple | None, tuple | None]:
        """Run the layers and the final norm; returns `(B, L, H)` and the optional per-layer
        hidden states / attention probabilities."""
        rotary = self.rotary(self.token_rope_position) if self.rotary is not None else None
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, rotary, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states = (*all_hidden_states[:-1], hidden_states)
        return hidden_states, all_hidden_states, all_attentions


# =============================================================================================
# Heads
# =============================================================================================


class NedsSpikeReadout(nn.Module):
    """Per-session spike readout: each neuron's log-rate is a dot product with its own vector."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.session_neurons = NedsSessionNeuronTable(
            list(config.sessions.values()), config.hidden_size + 1, None
        )

    def forward(
        self,
        spike_hidden: torch.Tensor,
        session_index: torch.Tensor,
        num_neurons: int,
        batch_session: int | None = None,
    ) -> torch.Tensor:
        """`spike_hidden (B, T, H)` -> log-rates `(B, T, N)` (0 at padded neurons).

        `batch_session`: the session row every sample shares (one `F.linear` with its block),
        or `None` to gather each sample's vectors; both give the same log-rates.
        """
        if batch_session is None:
            readout = self.session_neurons.gather(session_index, num_neurons)  # (B, N, H + 1)
            weight, bias = readout[..., :-1], readout[..., -1]
            return torch.bmm(spike_hidden, weight.transpose(1, 2)) + bias.unsqueeze(1)
        readout = self.session_neurons.session_weight(batch_session)  # (n, H + 1)
        log_rates = F.linear(spike_hidden, readout[:, :-1], readout[:, -1])  # (B, T, n)
        padding = num_neurons - readout.shape[0]
        return F.pad(log_rates, (0, padding)) if padding else log_rates  # (B, T, N)


class NedsForMaskedModeling(NedsPreTrainedModel):
    """NEDS with its prediction heads and the multi-task masked-modelling losses.

    Losses (only where the target masks are set; padded neurons never count): Poisson NLL on
    spike log-rates, MSE on continuous behaviours, cross-entropy on categorical ones. The total
    loss is the sum of the per-modality means, each times its
    ``config.modality_loss_weight`` (1 by default).
    """

    def __init__(self, config: NedsConfig):
        super().__init__(config)
        self.neds = NedsModel(config)
        self.spike_readout = NedsSpikeReadout(config)
        self.continuous_heads = nn.ModuleDict(
            {
                spec["name"]: nn.Linear(config.hidden_size, 1)
                for spec in config.continuous_modalities
            }
        )
        self.categorical_heads = nn.ModuleDict(
            {
                spec["name"]: nn.Linear(config.hidden_size, spec["num_classes"])
                for spec in config.categorical_modalities
            }
        )
        self.post_init()

    def forward(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None = None,
        behavior_labels: torch.Tensor | None = None,
        spike_mask: torch.Tensor | None = None,
        behavior_mask: torch.Tensor | None = None,
        spike_target_mask: torch.Tensor | None = None,
        behavior_target_mask: torch.Tensor | None = None,
        spike_targets: torch.Tensor | None = None,
        behavior_value_targets: torch.Tensor | None = None,
        behavior_label_targets: torch.Tensor | None = None,
        prompt_index: torch.Tensor | None = None,
        causal_attention: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_loss: bool = True,
        behavior_valid: torch.Tensor | None = None,
    ) -> NedsMaskedModelingOutput | tuple:
        """Predict every modality and, when masks are given, the masked-modelling loss.

        Target masks default to the input masks (hidden = scored); targets default to the
        inputs; entries `behavior_valid` marks missing are hidden and never scored (nor
        counted). `return_loss=False` skips the losses (`loss` and `modality_losses` are
        `None`), for prediction. See :class:`NedsModel` for the other inputs."""
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        batch_session = self.neds._check_inputs(
            spikes, session_index, behavior_values, behavior_labels, behavior_valid
        )
        outputs = self.neds._forward_checked(
            spikes,
            session_index,
            batch_session,
            behavior_values=behavior_values,
            behavior_labels=behavior_labels,
            spike_mask=spike_mask,
            behavior_mask=behavior_mask,
            prompt_index=prompt_index,
            causal_attention=causal_attention,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            behavior_valid=behavior_valid,
        )
        spike_log_rates, behavior_predictions = self._predict(
            outputs.last_hidden_state, session_index, spikes.shape[-1], batch_session
        )
        loss = modality_losses = None
        if return_loss and any(
            m is not None
            for m in (spike_mask, behavior_mask, spike_target_mask, behavior_target_mask)
        ):
            targets = self._loss_targets(
                spikes,
                session_index,
                behavior_values,
                behavior_labels,
                spike_target_mask if spike_target_mask is not None else spike_mask,
                behavior_target_mask if behavior_target_mask is not None else behavior_mask,
                spike_targets,
                behavior_value_targets,
                behavior_label_targets,
                behavior_valid,
            )
            modality_losses = self._losses(spike_log_rates, behavior_predictions, targets)
            loss = self._weighted_loss(modality_losses)
        output = NedsMaskedModelingOutput(
            loss=loss,
            modality_losses=modality_losses,
            spike_log_rates=spike_log_rates,
            behavior_predictions=behavior_predictions,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()  # to_tuple drops the None fields

    def _weighted_loss(self, modality_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The total loss: each modality's loss times its weight (``modality_loss_weight``)."""
        weighted = [
            self.config.modality_loss_weight(name) * value
            for name, value in modality_losses.items()
        ]
        return torch.stack(weighted).sum()

    def _predict(
        self,
        hidden: torch.Tensor,
        session_index: torch.Tensor,
        num_neurons: int,
        batch_session: int | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Heads on the final hidden states `(B, L, H)`: spike log-rates `(B, T, N)` and the
        behaviour predictions (see :class:`NedsMaskedModelingOutput`)."""
        config = self.config
        spike_hidden, modality_hiddens = self._token_groups(hidden)
        spike_log_rates = self.spike_readout(
            spike_hidden, session_index, num_neurons, batch_session
        )  # (B, T, N)
        behavior_predictions: dict[str, torch.Tensor] = {}
        for spec, modality_hidden in zip(config.behavior_modalities, modality_hiddens):
            if spec["kind"] == "continuous":
                behavior_predictions[spec["name"]] = self.continuous_heads[spec["name"]](
                    modality_hidden
                ).squeeze(-1)  # (B, T)
            elif spec["trial_level"]:
                pooled = modality_hidden.mean(1)  # (B, H)
                if config.trial_level_readout == "token_and_spikes":
                    pooled = pooled + spike_hidden.mean(1)  # (B, H)
                behavior_predictions[spec["name"]] = self.categorical_heads[spec["name"]](pooled)
            else:
                behavior_predictions[spec["name"]] = self.categorical_heads[spec["name"]](
                    modality_hidden
                )  # (B, T, C)
        return spike_log_rates, behavior_predictions

    def spike_hidden_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """The final hidden states of the spike tokens, `(B, T, H)`: what the spike readout
        reads (each neuron's log-rate is a dot product with one of them, plus a bias)."""
        return self._token_groups(hidden)[0]

    def _token_groups(self, hidden: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The final hidden states `(B, L, H)` by token group: the spike tokens `(B, T, H)` and
        each behaviour modality's tokens `(B, tokens, H)` in config order.

        One split rather than a slice per group: a slice's backward zero-fills a whole
        `(B, L, H)` gradient, the split's writes each group's gradient once.
        """
        config = self.config
        sizes = [int(config.use_prompt), config.num_time_bins]
        sizes += [config.modality_num_tokens(spec) for spec in config.behavior_modalities]
        _, spike_hidden, *modality_hiddens = hidden.split(sizes, dim=1)
        return spike_hidden, modality_hiddens

    def _loss_targets(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None,
        behavior_labels: torch.Tensor | None,
        spike_target_mask: torch.Tensor | None,
        behavior_target_mask: torch.Tensor | None,
        spike_targets: torch.Tensor | None,
        behavior_value_targets: torch.Tensor | None,
        behavior_label_targets: torch.Tensor | None,
        behavior_valid: torch.Tensor | None = None,
    ) -> NedsLossTargets:
        """Targets (explicit ones, else the inputs) and where they are scored; padded neurons
        and missing behaviour entries (`behavior_valid` False) are never scored, and missing
        targets are replaced by 0 so that no NaN enters a loss or its gradient."""
        spike_scored = None
        if spike_target_mask is not None:
            neuron_mask = self.spike_readout.session_neurons.neuron_mask(
                session_index, spikes.shape[-1]
            )  # (B, N)
            spike_scored = spike_target_mask & neuron_mask.unsqueeze(1)  # (B, T, N)
        values = behavior_value_targets if behavior_value_targets is not None else behavior_values
        labels = behavior_label_targets if behavior_label_targets is not None else behavior_labels
        behavior_scored = behavior_target_mask
        if behavior_valid is not None:
            values, labels = self._valid_behavior_targets(values, labels, behavior_valid)
            if behavior_scored is not None:
                behavior_scored = behavior_scored & behavior_valid  # (B, T, n_behavior)
        return NedsLossTargets(
            spike_counts=spike_targets if spike_targets is not None else spikes,
            spike_scored=spike_scored,
            behavior_values=values,
            behavior_labels=labels,
            behavior_scored=behavior_scored,
        )

    def _valid_behavior_targets(
        self,
        values: torch.Tensor | None,
        labels: torch.Tensor | None,
        behavior_valid: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Behaviour targets with every missing entry replaced by 0: values `(B, T, n_continuous)`
        and labels `(B, T, n_categorical)`, from `behavior_valid` `(B, T, n_behavior)`."""
        columns = {"continuous": [], "categorical": []}
        for behavior_column, spec in enumerate(self.config.behavior_modalities):
            columns[spec["kind"]].append(behavior_column)
        if values is not None and columns["continuous"]:
            valid = behavior_valid[..., columns["continuous"]]  # (B, T, n_continuous)
            values = torch.where(valid, values, torch.zeros_like(values))
        if labels is not None and columns["categorical"]:
            valid = behavior_valid[..., columns["categorical"]]  # (B, T, n_categorical)
            labels = torch.where(valid, labels, torch.zeros_like(labels))
        return values, labels

    def _losses(
        self,
        spike_log_rates: torch.Tensor,
        behavior_predictions: Mapping[str, torch.Tensor],
        targets: NedsLossTargets,
    ) -> dict[str, torch.Tensor]:
        """Per-modality mean losses over scored entries, ``{name: ()}``, config order."""
        config = self.config
        losses = {config.spike_modality["name"]: _poisson_loss(spike_log_rates, targets)}
        continuous_column = categorical_column = 0
        for behavior_column, spec in enumerate(config.behavior_modalities):
            prediction = behavior_predictions[spec["name"]].float()
            if targets.behavior_scored is None:
                scored = torch.zeros(
                    prediction.shape[0],
                    config.num_time_bins,
                    dtype=torch.bool,
                    device=prediction.device,
                )
            else:
                scored = targets.behavior_scored[..., behavior_column]  # (B, T)
            if spec["kind"] == "continuous":
                target = targets.behavior_values[..., continuous_column].float()  # (B, T)
                continuous_column += 1
                squared = torch.where(scored, (prediction - target) ** 2, torch.zeros_like(target))
                losses[spec["name"]] = squared.sum() / scored.sum().clamp_min(1)
            else:
                labels = targets.behavior_labels[..., categorical_column].long()  # (B, T)
                categorical_column += 1
                losses[spec["name"]] = _cross_entropy_loss(
                    prediction,
                    labels,
                    scored,
                    config.modality_num_tokens(spec),
                    spec["trial_level"],
                )
        return losses

    @torch.no_grad()
    def set_baseline_rates(self, mean_counts: Mapping[str, Sequence[float] | torch.Tensor]) -> None:
        """Start each neuron's readout at its mean count per bin: bias = log(mean count).

        A fresh readout predicts one spike per bin for every neuron, far above typical rates, and
        learning the right offset takes hundreds of steps; starting from the data's mean rates
        lets training work on structure from the first step. `mean_counts` maps session ids to
        per-neuron mean counts per bin; other sessions are left as they are.
        """
        for session_id, values in mean_counts.items():
            rows = self._readout_rows(session_id, "set_baseline_rates")
            values = torch.as_tensor(values, dtype=torch.float64).flatten()
            if values.numel() != rows.stop - rows.start:
                raise ValueError(
                    f"set_baseline_rates: session {session_id} has {rows.stop - rows.start} "
                    f"neurons, got {values.numel()} mean counts"
                )
            table = self.spike_readout.session_neurons
            bias = torch.log(values.clamp_min(1e-4)).to(table.neuron_weight.dtype)
            table.neuron_weight[rows, -1] = bias.to(table.neuron_weight.device)

    @torch.no_grad()
    def set_spike_readout(self, session_id: str, weight: Any, bias: Any) -> None:
        """Set one session's spike readout from arrays `weight (n, H)` and `bias (n,)`, so
        that neuron `i`'s log-rate is ``spike_hidden @ weight[i] + bias[i]`` (e.g. a Poisson
        regression on :meth:`spike_hidden_states`, to start fine-tuning from a fitted
        readout)."""
        rows = self._readout_rows(session_id, "set_spike_readout")
        table = self.spike_readout.session_neurons
        num_neurons, width = rows.stop - rows.start, table.width - 1
        weight = torch.as_tensor(weight, dtype=torch.float64)
        bias = torch.as_tensor(bias, dtype=torch.float64)
        if tuple(weight.shape) != (num_neurons, width) or tuple(bias.shape) != (num_neurons,):
            raise ValueError(
                f"set_spike_readout: session {session_id} needs weight ({num_neurons}, {width}) "
                f"and bias ({num_neurons},), got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError(f"set_spike_readout: session {session_id}: non-finite readout")
        readout = torch.cat([weight, bias[:, None]], dim=1)  # (n, H + 1)
        table.neuron_weight[rows] = readout.to(table.neuron_weight)

    def _readout_rows(self, session_id: str, caller: str) -> slice:
        """The spike-readout table rows of a session (a ValueError naming `caller` if unknown)."""
        if session_id not in self.config.sessions:
            raise ValueError(f"{caller}: session {session_id!r} is unknown to the model")
        session = self.config.session_ids.index(session_id)
        return self.spike_readout.session_neurons.session_rows(session)

    # ---------------------------------------------------------------------------------------
    # Convenience for users
    def _placeholder_behavior(
        self, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Zero behaviour tensors for modalities whose values are hidden anyway."""
        config = self.config
        values = labels = None
        if config.continuous_modalities:
            values = torch.zeros(
                batch_size, config.num_time_bins, len(config.continuous_modalities), device=device
            )
        if config.categorical_modalities:
            labels = torch.zeros(
                batch_size,
                config.num_time_bins,
                len(config.categorical_modalities),
                dtype=torch.long,
                device=device,
            )
        return values, labels

    def _visible_behavior_mask(
        self,
        behavior_values: torch.Tensor | None,
        behavior_labels: torch.Tensor | None,
        visible_behaviors: Sequence[str] | None,
        batch_size: int,
    ) -> torch.Tensor | None:
        """`behavior_mask` `(B, T, n_behavior)` hiding every behaviour not in
        `visible_behaviors` (default: those whose tensor is given); `None` without behaviours."""
        config = self.config
        names = [spec["name"] for spec in config.behavior_modalities]
        given = [
            spec["name"]
            for spec in config.behavior_modalities
            if (behavior_values if spec["kind"] == "continuous" else behavior_labels) is not None
        ]
        visible = given if visible_behaviors is None else list(visible_behaviors)
        unknown = sorted(set(visible) - set(names))
        if unknown:
            raise ValueError(f"visible_behaviors: unknown modalities {unknown}; known: {names}")
        missing = sorted(set(visible) - set(given))
        if missing:
            raise ValueError(
                f"visible_behaviors {missing} need their values: pass behavior_values / "
                "behavior_labels"
            )
        if not names:
            return None
        hidden = torch.tensor([name not in visible for name in names], device=self.device)
        return hidden.expand(batch_size, config.num_time_bins, len(names)).clone()

    @torch.no_grad()
    def predict_neural_activity(
        self,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None = None,
        behavior_labels: torch.Tensor | None = None,
        visible_behaviors: Sequence[str] | None = None,
        num_neurons: int | None = None,
    ) -> torch.Tensor:
        """Encoding: firing rates (counts per bin) `(B, T, N)` from behaviour alone.

        All spikes are hidden; the behaviours in `visible_behaviors` (default: every behaviour
        whose tensor is given) are shown and the others hidden, so leaving out `behavior_values`
        or `behavior_labels` hides those modalities rather than showing zeros. Runs in eval mode
        (dropout off) and restores the previous mode. Bad inputs (session rows out of range,
        non-finite behaviour, float or out-of-range labels, wrong shapes) are clear errors; NaN
        / -1 entries of a behaviour with ``allow_missing`` mark it missing there (hidden).
        """
        config = self.config
        device = self.device
        session_index = check_session_index(session_index, len(config.sessions)).to(device)
        batch_size = session_index.shape[0]
        behavior_values, behavior_labels = check_behavior_inputs(
            config, behavior_values, behavior_labels, batch_size
        )
        behavior_mask = self._visible_behavior_mask(
            behavior_values, behavior_labels, visible_behaviors, batch_size
        )
        behavior_valid = behavior_validity(config, behavior_values, behavior_labels, batch_size)
        counts = self.neds.spike_stitcher.session_neurons.neuron_counts[session_index]
        num_neurons = int(counts.max()) if num_neurons is None else num_neurons
        spikes = torch.zeros(batch_size, config.num_time_bins, num_neurons, device=device)
        placeholder_values, placeholder_labels = self._placeholder_behavior(batch_size, device)
        with _eval_mode(self):
            outputs = self(
                spikes,
                session_index,
                behavior_values=(
                    placeholder_values if behavior_values is None else behavior_values.to(device)
                ),
                behavior_labels=(
                    placeholder_labels if behavior_labels is None else behavior_labels.to(device)
                ),
                spike_mask=torch.ones_like(spikes, dtype=torch.bool),
                behavior_mask=behavior_mask,
                prompt_index=self._prompt_for("neuron", batch_size, device),
                return_loss=False,
                behavior_valid=None if behavior_valid is None else behavior_valid.to(device),
            )
        neuron_mask = self.spike_readout.session_neurons.neuron_mask(session_index, num_neurons)
        return torch.exp(outputs.spike_log_rates) * neuron_mask.unsqueeze(1)  # (B, T, N)

    @torch.no_grad()
    def predict_behavior(
        self, spikes: torch.Tensor, session_index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Decoding: every behaviour from spikes alone.

        Returns continuous predictions `(B, T)` and class probabilities `(B, C)` (or `(B, T, C)`
        for per-bin categorical modalities). Runs in eval mode and restores the previous mode.
        Session rows out of range, non-finite spike counts and wrong shapes are clear errors.
        """
        config = self.config
        device = self.device
        session_index = check_session_index(session_index, len(config.sessions)).to(device)
        batch_size = session_index.shape[0]
        spikes = check_spike_counts(spikes, config.num_time_bins, batch_size).to(device)
        values, labels = self._placeholder_behavior(batch_size, device)
        behavior_mask = torch.ones(
            batch_size,
            config.num_time_bins,
            len(config.behavior_modalities),
            dtype=torch.bool,
            device=device,
        )
        with _eval_mode(self):
            outputs = self(
                spikes,
                session_index,
                behavior_values=values,
                behavior_labels=labels,
                behavior_mask=behavior_mask,
                prompt_index=self._prompt_for("neuron", batch_size, device),
                return_loss=False,
            )
        return {
            spec["name"]: (
                outputs.behavior_predictions[spec["name"]].softmax(-1)
                if spec["kind"] == "categorical"
                else outputs.behavior_predictions[spec["name"]]
            )
            for spec in config.behavior_modalities
        }

    def _prompt_for(
        self, scheme: str, batch_size: int, device: torch.device
    ) -> torch.Tensor | None:
        if not self.config.use_prompt:
            return None
        row = (
            self.config.prompt_schemes.index(scheme) if scheme in self.config.prompt_schemes else 0
        )
        return torch.full((batch_size,), row, dtype=torch.long, device=device)

    @property
    def dummy_inputs(self) -> dict[str, torch.Tensor]:
        """A complete, valid batch for this config, as the collator would produce it."""
        return make_dummy_inputs(self.config, device=self.device)


def _poisson_loss(spike_log_rates: torch.Tensor, targets: NedsLossTargets) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to a constant) over scored spike counts, `()`."""
    log_rates = spike_log_rates.float()  # (B, T, N)
    counts = targets.spike_counts.float()
    if targets.spike_scored is None:
        spike_weight = torch.zeros_like(log_rates)
    else:
        spike_weight = targets.spike_scored.float()  # (B, T, N)
    counts = torch.where(spike_weight > 0, counts, torch.zeros_like(counts))
    poisson = torch.exp(log_rates) - counts * log_rates  # (B, T, N)
    poisson = torch.where(spike_weight > 0, poisson, torch.zeros_like(poisson))
    return poisson.sum() / spike_weight.sum().clamp_min(1.0)


def _cross_entropy_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scored: torch.Tensor,
    num_tokens: int,
    trial_level: bool,
) -> torch.Tensor:
    """Mean cross-entropy of one categorical modality over its scored trials / bins, `()`.

    `logits` `(B, C)` (trial-level) or `(B, T, C)`; `labels` and `scored` `(B, T)`; a trial-level
    label is read at bin 0 and scored when any of its `num_tokens` tokens is.
    """
    if trial_level:
        trial_scored = scored[:, :num_tokens].any(-1)  # (B,)
        per_trial = F.cross_entropy(logits, labels[:, 0].clamp_min(0), reduction="none")
        per_trial = torch.where(trial_scored, per_trial, torch.zeros_like(per_trial))
        return per_trial.sum() / trial_scored.sum().clamp_min(1)
    per_bin = F.cross_entropy(
        logits.transpose(1, 2), labels.clamp_min(0), reduction="none"
    )  # (B, T)
    per_bin = torch.where(scored, per_bin, torch.zeros_like(per_bin))
    return per_bin.sum() / scored.sum().clamp_min(1)


# =============================================================================================
# Input checks of the user-facing entry points (never inside a traced forward)
# =============================================================================================


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {tuple(tensor.shape)}, dtype {tensor.dtype}"


def _non_finite_count(tensor: torch.Tensor) -> int:
    """How many entries of a floating tensor are NaN or inf (0 for other dtypes)."""
    if not tensor.is_floating_point():
        return 0
    return int((~torch.isfinite(tensor)).sum())


def check_session_index(session_index: Any, num_sessions: int) -> torch.Tensor:
    """`session_index` as a 1-D long tensor of rows in ``[0, num_sessions)``, else a ValueError
    naming its shape, dtype or offending values and what was expected."""
    if not isinstance(session_index, torch.Tensor):
        session_index = torch.as_tensor(session_index)
    expected = (
        f"expected a 1-D integer tensor with one row of config.session_ids per trial, "
        f"in [0, {num_sessions})"
    )
    if session_index.dim() != 1:
        raise ValueError(f"session_index has {_describe(session_index)}; {expected}")
    if (
        session_index.is_floating_point()
        or session_index.is_complex()
        or (session_index.dtype == torch.bool)
    ):
        raise ValueError(f"session_index has {_describe(session_index)}; {expected}")
    if session_index.numel() == 0:
        raise ValueError(f"session_index is empty ({_describe(session_index)}); {expected}")
    out_of_range = (session_index < 0) | (session_index >= num_sessions)
    if bool(out_of_range.any()):
        raise ValueError(
            f"session_index must lie in [0, {num_sessions}) (rows of config.session_ids; the "
            f"model knows {num_sessions} sessions), got out-of-range rows "
            f"{sorted(set(session_index[out_of_range].tolist()))}"
        )
    return session_index.long()


def check_spike_counts(spikes: Any, num_time_bins: int, batch_size: int) -> torch.Tensor:
    """`spikes` as a finite `(B, T, N)` tensor, else a ValueError naming what is wrong."""
    if not isinstance(spikes, torch.Tensor):
        spikes = torch.as_tensor(spikes)
    if spikes.dim() != 3 or spikes.shape[:2] != (batch_size, num_time_bins):
        raise ValueError(
            f"spikes has {_describe(spikes)}; expected (batch={batch_size}, "
            f"time bins={num_time_bins}, neurons) spike counts"
        )
    bad = _non_finite_count(spikes)
    if bad:
        raise ValueError(
            f"spikes has {bad} non-finite entries (NaN or inf) of {spikes.numel()} "
            f"({_describe(spikes)}); expected finite spike counts"
        )
    return spikes


def check_behavior_inputs(
    config: NedsConfig,
    behavior_values: Any,
    behavior_labels: Any,
    batch_size: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Validate the optional behaviour tensors of `predict_neural_activity`: shapes
    `(B, T, n_continuous)` / `(B, T, n_categorical)`, finite values, integer labels in range.

    A behaviour with ``allow_missing`` may hold NaN (continuous) or ``INVALID_LABEL``
    (categorical) where it is missing (:func:`behavior_validity` finds them); inf and other
    labels stay errors."""
    num_bins = config.num_time_bins
    if behavior_values is not None:
        behavior_values = torch.as_tensor(behavior_values)
        specs = config.continuous_modalities
        names = [spec["name"] for spec in specs]
        if tuple(behavior_values.shape) != (batch_size, num_bins, len(names)):
            raise ValueError(
                f"behavior_values has {_describe(behavior_values)}; expected "
                f"(batch={batch_size}, time bins={num_bins}, {len(names)}) for {names}"
            )
        may_be_nan = torch.tensor(
            [allows_missing(spec) for spec in specs],
            dtype=torch.bool,
            device=behavior_values.device,
        )
        checked = behavior_values
        if behavior_values.is_floating_point() and bool(may_be_nan.any()):
            checked = behavior_values.masked_fill(behavior_values.isnan() & may_be_nan, 0.0)
        bad = _non_finite_count(checked)
        if bad:
            raise ValueError(
                f"behavior_values has {bad} non-finite entries (NaN or inf) of "
                f"{behavior_values.numel()}; expected finite values for {names}"
            )
    if behavior_labels is not None:
        behavior_labels = torch.as_tensor(behavior_labels)
        _check_behavior_labels(config, behavior_labels, batch_size)
    return behavior_values, behavior_labels


def _check_behavior_labels(config: NedsConfig, behavior_labels: torch.Tensor, batch_size: int):
    """Shape `(B, T, n_categorical)`, an integer dtype and labels in range (``INVALID_LABEL``
    allowed for behaviours with ``allow_missing``), else a ValueError naming the modality."""
    num_bins = config.num_time_bins
    specs = config.categorical_modalities
    names = [spec["name"] for spec in specs]
    if tuple(behavior_labels.shape) != (batch_size, num_bins, len(names)):
        raise ValueError(
            f"behavior_labels has {_describe(behavior_labels)}; expected "
            f"(batch={batch_size}, time bins={num_bins}, {len(names)}) for {names}"
        )
    if behavior_labels.is_floating_point() or behavior_labels.dtype == torch.bool:
        raise ValueError(
            f"behavior_labels has {_describe(behavior_labels)}; expected integer class "
            f"labels (torch.long) for {names}"
        )
    for column, spec in enumerate(specs):
        labels = behavior_labels[..., column]
        if allows_missing(spec):
            labels = labels[labels != INVALID_LABEL]
            if labels.numel() == 0:
                continue
        if bool(((labels < 0) | (labels >= spec["num_classes"])).any()):
            missing = f" (or {INVALID_LABEL} where missing)" if allows_missing(spec) else ""
            raise ValueError(
                f"behavior_labels[..., {column}] ({spec['name']}) holds labels in "
                f"[{int(labels.min())}, {int(labels.max())}]; expected classes in "
                f"[0, {spec['num_classes']}){missing}"
            )


def behavior_validity(
    config: NedsConfig,
    behavior_values: torch.Tensor | None,
    behavior_labels: torch.Tensor | None,
    batch_size: int,
) -> torch.Tensor | None:
    """`behavior_valid` `(B, T, n_behavior)` of checked behaviour tensors: False where a
    behaviour with ``allow_missing`` holds NaN / ``INVALID_LABEL``; `None` when the config has
    no such behaviour (the batch then needs no validity mask)."""
    specs = config.behavior_modalities
    if not any(allows_missing(spec) for spec in specs):
        return None
    valid = torch.ones(batch_size, config.num_time_bins, len(specs), dtype=torch.bool)
    continuous_column = categorical_column = 0
    for behavior_column, spec in enumerate(specs):
        if spec["kind"] == "continuous":
            column, continuous_column = continuous_column, continuous_column + 1
            if behavior_values is not None and allows_missing(spec):
                valid[..., behavior_column] = ~behavior_values[..., column].isnan().cpu()
        else:
            column, categorical_column = categorical_column, categorical_column + 1
            if behavior_labels is not None and allows_missing(spec):
                valid[..., behavior_column] = behavior_labels[..., column].cpu() != INVALID_LABEL
    return valid


def non_finite_tensors(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """``"name (k of n entries)"`` for every floating tensor holding NaN or inf."""
    return [
        f"{name} ({bad} of {tensor.numel()} entries)"
        for name, tensor in named_tensors
        if tensor.device.type != "meta" and (bad := _non_finite_count(tensor.detach()))
    ]


class _eval_mode:
    """Context manager: eval mode inside, previous mode restored after."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.was_training = model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)


def make_dummy_inputs(
    config: NedsConfig, batch_size: int = 2, seed: int = 0, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """A seeded random batch with every input a `NedsForMaskedModeling` accepts."""
    if not config.sessions:
        raise ValueError("dummy_inputs need at least one session: call add_sessions(...) first")
    generator = torch.Generator().manual_seed(seed)
    num_sessions = len(config.sessions)
    session_index = torch.arange(batch_size) % num_sessions
    counts = torch.tensor(list(config.sessions.values()))[session_index]
    num_neurons, num_bins = int(counts.max()), config.num_time_bins
    spikes = torch.poisson(
        torch.full((batch_size, num_bins, num_neurons), 0.5), generator=generator
    )
    spikes = spikes * (torch.arange(num_neurons) < counts.unsqueeze(-1)).unsqueeze(1)
    spike_mask = torch.rand(batch_size, num_bins, 1, generator=generator) < config.mask_ratio
    batch: dict[str, torch.Tensor] = {
        "spikes": spikes,
        "session_index": session_index,
        "spike_mask": spike_mask.expand(batch_size, num_bins, num_neurons).clone(),
    }
    if config.continuous_modalities:
        batch["behavior_values"] = torch.randn(
            batch_size, num_bins, len(config.continuous_modalities), generator=generator
        )
    if config.categorical_modalities:
        labels = torch.stack(
            [
                torch.randint(0, spec["num_classes"], (batch_size, 1), generator=generator).expand(
                    batch_size, num_bins
                )
                if spec["trial_level"]
                else torch.randint(
                    0, spec["num_classes"], (batch_size, num_bins), generator=generator
                )
                for spec in config.categorical_modalities
            ],
            dim=-1,
        )
        batch["behavior_labels"] = labels
    if config.behavior_modalities:
        batch["behavior_mask"] = (
            torch.rand(batch_size, num_bins, len(config.behavior_modalities), generator=generator)
            < config.mask_ratio
        )
    if config.behaviors_with_missing:
        batch["behavior_valid"] = torch.ones(
            batch_size, num_bins, len(config.behavior_modalities), dtype=torch.bool
        )
    if config.use_prompt:
        batch["prompt_index"] = torch.zeros(batch_size, dtype=torch.long)
        batch["causal_attention"] = torch.zeros(batch_size, dtype=torch.bool)
    return {name: value.to(device) for name, value in batch.items()}


NedsConfig.register_for_auto_class()
NedsModel.register_for_auto_class("AutoModel")
NedsForMaskedModeling.register_for_auto_class("AutoModelForMaskedLM")

__all__ = [
    "DROPOUT_RATE_LEVELS",
    "NedsAttention",
    "NedsDropout",
    "NedsEncoderLayer",
    "NedsFixupLinear",
    "NedsForMaskedModeling",
    "NedsLossTargets",
    "NedsMaskedModelingOutput",
    "NedsModel",
    "NedsModelOutput",
    "NedsPreTrainedModel",
    "NedsQKVProjection",
    "NedsSessionNeuronTable",
    "apply_rotary",
    "behavior_validity",
    "check_behavior_inputs",
    "check_same_sessions",
    "check_session_index",
    "check_spike_counts",
    "dropout_keep_mask",
    "eager_attention_forward",
    "is_session_parameter",
    "make_dummy_inputs",
    "neds_dropout",
    "non_finite_tensors",
    "session_row_offsets",
]
