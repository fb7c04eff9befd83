"""NEDS: one multimodal transformer for neural encoding and decoding, as a transformers model.

Token layout of one trial (config order of the modalities, optional prompt token first):

* spikes: one token per time bin, from a per-session *stitcher* of the whole population vector;
* continuous behaviours: one token per time bin, from a small per-modality tokenizer;
* categorical behaviours: one token per trial (per bin when not trial-level; optionally spread
  over all bins as in the reference code).

Every token gets a modality, a time and a session embedding; queries and keys are rotated by the
token's time bin. Hidden tokens are replaced by a learned mask token; losses are computed only
where the target masks say so, and padded neurons never count.

Per-session parameters (spike stitchers, session embeddings, spike readouts) live in modules
whose attribute names start with ``session_``; their rows are stacked over sessions and gathered
per sample, so `forward` never loops over sessions or samples.

This module imports only torch, transformers and :mod:`configuration_neds`, so it can be copied
next to a checkpoint and loaded with ``trust_remote_code=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_neds import NedsConfig, _normalize_sessions

SESSION_PARAMETER_PREFIX = "session_"


def is_session_parameter(name: str) -> bool:
    """Whether a parameter name (as in `named_parameters`) belongs to a per-session module."""
    return any(part.startswith(SESSION_PARAMETER_PREFIX) for part in name.split("."))


def _is_tracing() -> bool:
    """True under torch.compile / torch.export, where data-dependent checks must be skipped."""
    return torch.compiler.is_compiling()


# =============================================================================================
# Outputs
# =============================================================================================


@dataclass
class NedsModelOutput(ModelOutput):
    """Output of :class:`NedsModel`.

    Args:
        last_hidden_state: final hidden states of every token, `(B, L, H)`.
        hidden_states: embeddings + the output of every layer, each `(B, L, H)`.
        attentions: attention weights of every layer, each `(B, heads, L, L)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class NedsMaskedModelingOutput(ModelOutput):
    """Output of :class:`NedsForMaskedModeling`.

    Args:
        loss: sum of the per-modality losses (present when any target mask is given).
        modality_losses: per-modality mean loss over its target entries (0 when it has none).
        spike_log_rates: predicted log firing rates per bin, `(B, T, N)`; padded neurons hold 0.
        behavior_predictions: per behaviour modality, continuous `(B, T)`, trial-level
            categorical logits `(B, C)`, per-bin categorical logits `(B, T, C)`.
        last_hidden_state: final hidden states, `(B, L, H)`.
        hidden_states: embeddings + every layer's output.
        attentions: every layer's attention weights.
    """

    loss: torch.FloatTensor | None = None
    modality_losses: dict[str, torch.FloatTensor] | None = None
    spike_log_rates: torch.FloatTensor | None = None
    behavior_predictions: dict[str, torch.FloatTensor] | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# =============================================================================================
# Per-session parameter tables
# =============================================================================================


class NedsSessionNeuronTable(nn.Module):
    """Per-neuron vectors of every session stacked in one table, plus a per-session bias.

    Row block ``offsets[s] : offsets[s + 1]`` belongs to session ``s``. `gather` returns, for a
    batch, each sample's neuron vectors padded to `N` with zeros for the padded neurons, so they
    contribute nothing and receive no gradient.
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
        return {
            "neuron_counts": torch.tensor(self._counts, dtype=torch.long),
            "offsets": _offsets(self._counts),
        }

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


def _offsets(neuron_counts: Sequence[int]) -> torch.Tensor:
    counts = torch.tensor([0, *neuron_counts], dtype=torch.long)
    return torch.cumsum(counts, 0)  # (S + 1,)


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
        self.projection = nn.Linear(config.spike_stitcher_size, config.hidden_size)

    def forward(self, spikes: torch.Tensor, session_index: torch.Tensor) -> torch.Tensor:
        """`spikes (B, T, N)` -> tokens `(B, T, H)`."""
        neuron_vectors = self.session_neurons.gather(session_index, spikes.shape[-1])  # (B, N, D)
        stitched = torch.bmm(spikes.to(neuron_vectors.dtype), neuron_vectors)  # (B, T, D)
        stitched = stitched + self.session_neurons.gather_bias(session_index).unsqueeze(1)
        return self.projection(F.softsign(stitched))  # (B, T, H)


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
        """`positions (L,)` -> per-token rotation matrices `(L, head_dim, head_dim)`.

        Dimension ``i`` of the first half turns with dimension ``i + head_dim / 2`` by the angle
        ``position * inv_freq[i]``. Applied as one batched matrix product, which on CPU is
        cheaper than the usual ``x * cos + rotate_half(x) * sin`` (one kernel instead of five).
        """
        angles = positions.float().unsqueeze(-1) * self.inv_freq  # (L, head_dim / 2)
        cos, sin = torch.diag_embed(angles.cos()), torch.diag_embed(angles.sin())  # (L, h, h)
        first = torch.cat([cos, sin], dim=-1)  # (L, head_dim / 2, head_dim)
        second = torch.cat([-sin, cos], dim=-1)  # (L, head_dim / 2, head_dim)
        return torch.cat([first, second], dim=-2)  # (L, head_dim, head_dim)


def apply_rotary(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate token vectors `x (B, L, ..., head_dim)` by per-token rotations `(L, hd, hd)`."""
    return torch.einsum("bl...d,lde->bl...e", x, rotation.to(x.dtype))


# =============================================================================================
# Transformer
# =============================================================================================


class NedsAttention(nn.Module):
    """Multi-head self-attention on `scaled_dot_product_attention` with rotary q/k.

    Regularisation is *key dropout*: in training each (trial, head) ignores a random fraction
    `attention_dropout` of the keys through a boolean mask. Unlike dropout on the attention
    probabilities it keeps SDPA on its fused kernels, which on CPU is ~7x faster for NEDS sizes.
    """

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.attention_dropout = float(config.attention_dropout)
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj._neds_fixup = True
        self.qkv_proj._neds_fixup_value = True
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, length, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(
            batch_size, length, 3, self.num_heads, self.head_dim
        )
        if rotary is not None:
            query_key = apply_rotary(qkv[:, :, :2], rotary)  # (B, L, 2, heads, head_dim)
            query, key = query_key.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, hd)
            value = qkv[:, :, 2].transpose(1, 2)  # (B, heads, L, head_dim)
        else:
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, L, hd)
        if self.training and self.attention_dropout > 0:
            keep = torch.rand(batch_size, self.num_heads, 1, length, device=hidden_states.device)
            keep = keep >= self.attention_dropout  # (B, heads, 1, L)
            if attention_mask is None:
                # a row that lost every key would give NaN: it sees all keys instead
                attention_mask = keep | ~keep.any(-1, keepdim=True)
            else:
                combined = attention_mask & keep  # (B, heads, L, L)
                attention_mask = torch.where(
                    combined.any(-1, keepdim=True), combined, attention_mask
                )
        weights = None
        if output_attentions:
            scores = query @ key.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, heads, L, L)
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            weights = scores.softmax(-1)
            context = weights @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        context = context.transpose(1, 2).reshape(batch_size, length, -1)  # (B, L, H)
        return self.dropout(self.out_proj(context)), weights


class NedsMLP(nn.Module):
    """Position-wise feed-forward block."""

    def __init__(self, config: NedsConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)
        self.up_proj._neds_fixup = True
        self.down_proj._neds_fixup = True
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.activation(self.up_proj(hidden_states))))


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
        attended, weights = self.attention(
            self.attention_norm(hidden_states), rotary, attention_mask, output_attentions
        )
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.mlp_norm(hidden_states))
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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) weights, zero biases, and the reference's fixup scaling.

        Uses `transformers.initialization`, which leaves weights loaded from a checkpoint alone.
        """
        if hasattr(module, "_buffer_values"):
            # non-persistent buffers are not in checkpoints: recompute them
            for name, value in module._buffer_values().items():
                init.copy_(getattr(module, name), value)
        std = self.config.initializer_range
        fixup = 0.67 * self.config.num_hidden_layers**-0.25 if self.config.fixup_init else 1.0
        if isinstance(module, nn.Linear):
            scale = fixup if getattr(module, "_neds_fixup", False) else 1.0
            if getattr(module, "_neds_fixup_value", False) and not getattr(
                module.weight, "_is_hf_initialized", False
            ):
                # queries/keys at `std`, values with the fixup scale x sqrt(2)
                hidden = module.weight.shape[1]
                module.weight.normal_(0.0, std)
                module.weight[2 * hidden :].mul_(fixup * math.sqrt(2.0))
            else:
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
        new_sessions = _normalize_sessions(sessions, field_name="add_sessions")
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
        old_ids = self.config.session_ids
        old_offsets = _offsets(list(self.config.sessions.values()))
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
        """Load a checkpoint; a `config` with another session set is a clear error.

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
        return super().from_pretrained(
            pretrained_model_name_or_path, *model_args, config=config, **kwargs
        )

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """`nn.Module.load_state_dict` with a clear error when per-session tables differ."""
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
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
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
        """Per-token modality, time-embedding row, rotary position and causal time, `(L,)` each."""
        config = self.config
        num_bins = config.num_time_bins
        modality_ids, time_rows, rope_positions, causal_times = [], [], [], []
        if config.use_prompt:
            # the prompt has no modality/time embedding of its own (rows unused); causal time -1
            modality_ids.append(0)
            time_rows.append(num_bins)
            rope_positions.append(0)
            causal_times.append(-1)
        for modality_id, spec in enumerate(config.modalities):
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
        return self.modality_embedding

    # ---------------------------------------------------------------------------------------
    def _check_inputs(
        self,
        spikes: torch.Tensor,
        session_index: torch.Tensor,
        behavior_values: torch.Tensor | None,
        behavior_labels: torch.Tensor | None,
    ) -> None:
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
        if not config.sessions:
            raise ValueError("The model knows no sessions yet: call model.add_sessions(...) first")
        if _is_tracing():
            return
        if int(session_index.min()) < 0 or int(session_index.max()) >= len(config.sessions):
            raise ValueError(
                f"session_index must lie in [0, {len(config.sessions)}), got values "
                f"{sorted(set(session_index.tolist()))}"
            )
        needed = int(self.spike_stitcher.session_neurons.neuron_counts[session_index].max())
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
    ) -> NedsModelOutput | tuple:
        """Encode one batch of trials; see the class docstring for the inputs."""
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
        self._check_inputs(spikes, session_index, behavior_values, behavior_labels)
        batch_size, _, num_neurons = spikes.shape
        dtype = self.mask_token.dtype

        # ---- spike tokens (B, T, H)
        spike_counts = spikes.to(dtype)
        _, neuron_mask = _neuron_index(
            self.spike_stitcher.session_neurons.offsets,
            self.spike_stitcher.session_neurons.neuron_counts,
            session_index,
            num_neurons,
        )  # (B, N)
        if spike_mask is not None:
            spike_counts = spike_counts.masked_fill(spike_mask, 0.0)
            hidden_bins = (spike_mask | ~neuron_mask.unsqueeze(1)).all(-1)  # (B, T)
        spike_tokens = self.spike_stitcher(spike_counts, session_index)
        if spike_mask is not None:
            spike_tokens = torch.where(hidden_bins.unsqueeze(-1), self.mask_token, spike_tokens)
        tokens = [spike_tokens]

        # ---- behaviour tokens, config order
        continuous_column = categorical_column = 0
        for behavior_column, spec in enumerate(config.behavior_modalities):
            count = config.modality_num_tokens(spec)
            if spec["kind"] == "continuous":
                values = behavior_values[..., continuous_column].to(dtype)  # (B, T)
                continuous_column += 1
                modality_tokens = self.continuous_tokenizers[spec["name"]](values)  # (B, T, H)
            else:
                labels = behavior_labels[..., categorical_column]  # (B, T)
                categorical_column += 1
                if spec["trial_level"]:
                    labels = labels[:, :1].expand(batch_size, count)  # (B, tokens)
                modality_tokens = self.categorical_embeddings[spec["name"]](
                    labels
                )  # (B, tokens, H)
            if behavior_mask is not None:
                hidden = behavior_mask[:, :count, behavior_column]  # (B, tokens)
                modality_tokens = torch.where(
                    hidden.unsqueeze(-1), self.mask_token, modality_tokens
                )
            tokens.append(modality_tokens)
        hidden_states = torch.cat(tokens, dim=1)  # (B, L_data, H)

        # ---- embeddings
        data_slice = slice(int(config.use_prompt), None)
        embeddings = self.modality_embedding(self.token_modality[data_slice]) + self.time_embedding(
            self.token_time_row[data_slice]
        )  # (L_data, H)
        hidden_states = (
            hidden_states + embeddings + self.session_embedding(session_index).unsqueeze(1)
        )
        if config.use_prompt:
            if prompt_index is None:
                raise ValueError(
                    "use_prompt=True: pass prompt_index (B,) naming the masking scheme"
                )
            prompt = self.prompt_embedding(prompt_index) + self.session_embedding(session_index)
            hidden_states = torch.cat([prompt.unsqueeze(1), hidden_states], dim=1)  # (B, L, H)
        hidden_states = self.embedding_dropout(hidden_states)

        # ---- attention mask (only for causal samples)
        attention_mask = None
        if causal_attention is not None:
            causal_time = self.token_causal_time
            allowed = causal_time.unsqueeze(0) <= causal_time.unsqueeze(1)  # (L_q, L_k)
            attention_mask = (allowed.unsqueeze(0) | ~causal_attention.view(-1, 1, 1)).unsqueeze(1)
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

        if not return_dict:
            return tuple(
                v for v in (hidden_states, all_hidden_states, all_attentions) if v is not None
            )
        return NedsModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


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
        self, spike_hidden: torch.Tensor, session_index: torch.Tensor, num_neurons: int
    ) -> torch.Tensor:
        """`spike_hidden (B, T, H)` -> log-rates `(B, T, N)` (0 at padded neurons)."""
        readout = self.session_neurons.gather(session_index, num_neurons)  # (B, N, H + 1)
        weight, bias = readout[..., :-1], readout[..., -1]
        return torch.bmm(spike_hidden, weight.transpose(1, 2)) + bias.unsqueeze(1)  # (B, T, N)


class NedsForMaskedModeling(NedsPreTrainedModel):
    """NEDS with its prediction heads and the multi-task masked-modelling losses.

    Losses (only where the target masks are set; padded neurons never count): Poisson NLL on
    spike log-rates, MSE on continuous behaviours, cross-entropy on categorical ones. The total
    loss is the sum of the per-modality means.
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
    ) -> NedsMaskedModelingOutput | tuple:
        """Predict every modality and, when masks are given, the masked-modelling loss.

        Target masks default to the input masks (hidden = scored); targets default to the
        inputs. See :class:`NedsModel` for the other inputs.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        outputs = self.neds(
            spikes,
            session_index,
            behavior_values=behavior_values,
            behavior_labels=behavior_labels,
            spike_mask=spike_mask,
            behavior_mask=behavior_mask,
            prompt_index=prompt_index,
            causal_attention=causal_attention,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden = outputs.last_hidden_state  # (B, L, H)
        _, num_bins, num_neurons = spikes.shape
        start = int(config.use_prompt)
        spike_log_rates = self.spike_readout(
            hidden[:, start : start + num_bins], session_index, num_neurons
        )  # (B, T, N)
        start += num_bins
        behavior_predictions: dict[str, torch.Tensor] = {}
        for spec in config.behavior_modalities:
            count = config.modality_num_tokens(spec)
            modality_hidden = hidden[:, start : start + count]  # (B, tokens, H)
            start += count
            if spec["kind"] == "continuous":
                behavior_predictions[spec["name"]] = self.continuous_heads[spec["name"]](
                    modality_hidden
                ).squeeze(-1)  # (B, T)
            elif spec["trial_level"]:
                pooled = modality_hidden.mean(1)  # (B, H)
                behavior_predictions[spec["name"]] = self.categorical_heads[spec["name"]](pooled)
            else:
                behavior_predictions[spec["name"]] = self.categorical_heads[spec["name"]](
                    modality_hidden
                )  # (B, T, C)

        loss = modality_losses = None
        if (
            spike_mask is not None
            or behavior_mask is not None
            or spike_target_mask is not None
            or behavior_target_mask is not None
        ):
            modality_losses = self._losses(
                spikes,
                session_index,
                spike_log_rates,
                behavior_predictions,
                behavior_values,
                behavior_labels,
                spike_target_mask if spike_target_mask is not None else spike_mask,
                behavior_target_mask if behavior_target_mask is not None else behavior_mask,
                spike_targets,
                behavior_value_targets,
                behavior_label_targets,
            )
            loss = torch.stack(list(modality_losses.values())).sum()

        if not return_dict:
            values = (
                loss,
                modality_losses,
                spike_log_rates,
                behavior_predictions,
                outputs.last_hidden_state,
                outputs.hidden_states,
                outputs.attentions,
            )
            return tuple(v for v in values if v is not None)
        return NedsMaskedModelingOutput(
            loss=loss,
            modality_losses=modality_losses,
            spike_log_rates=spike_log_rates,
            behavior_predictions=behavior_predictions,
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _losses(
        self,
        spikes,
        session_index,
        spike_log_rates,
        behavior_predictions,
        behavior_values,
        behavior_labels,
        spike_target_mask,
        behavior_target_mask,
        spike_targets,
        behavior_value_targets,
        behavior_label_targets,
    ) -> dict[str, torch.Tensor]:
        """Per-modality mean losses over target entries, `{name: scalar}`."""
        config = self.config
        losses: dict[str, torch.Tensor] = {}
        _, neuron_mask = _neuron_index(
            self.spike_readout.session_neurons.offsets,
            self.spike_readout.session_neurons.neuron_counts,
            session_index,
            spikes.shape[-1],
        )  # (B, N)
        log_rates = spike_log_rates.float()
        targets = (spike_targets if spike_targets is not None else spikes).float()
        if spike_target_mask is None:
            spike_weight = torch.zeros_like(log_rates)
        else:
            spike_weight = (spike_target_mask & neuron_mask.unsqueeze(1)).float()  # (B, T, N)
        targets = torch.where(spike_weight > 0, targets, torch.zeros_like(targets))
        poisson = torch.exp(log_rates) - targets * log_rates  # (B, T, N)
        poisson = torch.where(spike_weight > 0, poisson, torch.zeros_like(poisson))
        losses[config.spike_modality["name"]] = poisson.sum() / spike_weight.sum().clamp_min(1.0)

        value_targets = (
            behavior_value_targets if behavior_value_targets is not None else behavior_values
        )
        label_targets = (
            behavior_label_targets if behavior_label_targets is not None else behavior_labels
        )
        continuous_column = categorical_column = 0
        for behavior_column, spec in enumerate(config.behavior_modalities):
            prediction = behavior_predictions[spec["name"]].float()
            if behavior_target_mask is None:
                scored = torch.zeros(
                    prediction.shape[0],
                    config.num_time_bins,
                    dtype=torch.bool,
                    device=prediction.device,
                )
            else:
                scored = behavior_target_mask[..., behavior_column]  # (B, T)
            if spec["kind"] == "continuous":
                target = value_targets[..., continuous_column].float()  # (B, T)
                continuous_column += 1
                squared = torch.where(scored, (prediction - target) ** 2, torch.zeros_like(target))
                losses[spec["name"]] = squared.sum() / scored.sum().clamp_min(1)
                continue
            labels = label_targets[..., categorical_column].long()  # (B, T)
            categorical_column += 1
            if spec["trial_level"]:
                count = config.modality_num_tokens(spec)
                trial_scored = scored[:, :count].any(-1)  # (B,)
                per_trial = F.cross_entropy(prediction, labels[:, 0].clamp_min(0), reduction="none")
                per_trial = torch.where(trial_scored, per_trial, torch.zeros_like(per_trial))
                losses[spec["name"]] = per_trial.sum() / trial_scored.sum().clamp_min(1)
            else:
                per_bin = F.cross_entropy(
                    prediction.transpose(1, 2), labels.clamp_min(0), reduction="none"
                )  # (B, T)
                per_bin = torch.where(scored, per_bin, torch.zeros_like(per_bin))
                losses[spec["name"]] = per_bin.sum() / scored.sum().clamp_min(1)
        return losses

    @torch.no_grad()
    def set_baseline_rates(self, mean_counts: Mapping[str, Sequence[float] | torch.Tensor]) -> None:
        """Start each neuron's readout at its mean count per bin: bias = log(mean count).

        A fresh readout predicts one spike per bin for every neuron, far above typical rates, and
        learning the right offset takes hundreds of steps; starting from the data's mean rates
        lets training work on structure from the first step. `mean_counts` maps session ids to
        per-neuron mean counts per bin; other sessions are left as they are.
        """
        table = self.spike_readout.session_neurons
        counts = list(self.config.sessions.values())
        for session_id, values in mean_counts.items():
            if session_id not in self.config.sessions:
                raise ValueError(
                    f"set_baseline_rates: session {session_id!r} is unknown to the model"
                )
            row = self.config.session_ids.index(session_id)
            values = torch.as_tensor(values, dtype=torch.float64).flatten()
            if values.numel() != counts[row]:
                raise ValueError(
                    f"set_baseline_rates: session {session_id} has {counts[row]} neurons, got "
                    f"{values.numel()} mean counts"
                )
            start = sum(counts[:row])
            bias = torch.log(values.clamp_min(1e-4)).to(table.neuron_weight.dtype)
            table.neuron_weight[start : start + counts[row], -1] = bias.to(
                table.neuron_weight.device
            )

    # ---------------------------------------------------------------------------------------
    # Convenience for users
    def _placeholder_behavior(
        self, batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
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
        (dropout off) and restores the previous mode.
        """
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
        device = self.device
        session_index = session_index.to(device)
        counts = self.neds.spike_stitcher.session_neurons.neuron_counts[session_index]
        num_neurons = int(counts.max()) if num_neurons is None else num_neurons
        batch_size = session_index.shape[0]
        spikes = torch.zeros(batch_size, config.num_time_bins, num_neurons, device=device)
        placeholder_values, placeholder_labels = self._placeholder_behavior(batch_size, device)
        behavior_values = (
            placeholder_values if behavior_values is None else behavior_values.to(device)
        )
        behavior_labels = (
            placeholder_labels if behavior_labels is None else behavior_labels.to(device)
        )
        behavior_mask = torch.zeros(
            batch_size, config.num_time_bins, len(names), dtype=torch.bool, device=device
        )
        for column, name in enumerate(names):
            behavior_mask[..., column] = name not in visible
        with _eval_mode(self):
            outputs = self(
                spikes,
                session_index,
                behavior_values=behavior_values,
                behavior_labels=behavior_labels,
                spike_mask=torch.ones_like(spikes, dtype=torch.bool),
                behavior_mask=behavior_mask if names else None,
                prompt_index=self._prompt_for("neuron", batch_size, device),
            )
        _, neuron_mask = _neuron_index(
            self.spike_readout.session_neurons.offsets,
            self.spike_readout.session_neurons.neuron_counts,
            session_index,
            num_neurons,
        )
        return torch.exp(outputs.spike_log_rates) * neuron_mask.unsqueeze(1)

    @torch.no_grad()
    def predict_behavior(
        self, spikes: torch.Tensor, session_index: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Decoding: every behaviour from spikes alone.

        Returns continuous predictions `(B, T)` and class probabilities `(B, C)` (or `(B, T, C)`
        for per-bin categorical modalities). Runs in eval mode and restores the previous mode.
        """
        config = self.config
        device = self.device
        spikes, session_index = spikes.to(device), session_index.to(device)
        batch_size = spikes.shape[0]
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
    if config.use_prompt:
        batch["prompt_index"] = torch.zeros(batch_size, dtype=torch.long)
        batch["causal_attention"] = torch.zeros(batch_size, dtype=torch.bool)
    return {name: value.to(device) for name, value in batch.items()}


NedsConfig.register_for_auto_class()
NedsModel.register_for_auto_class("AutoModel")
NedsForMaskedModeling.register_for_auto_class("AutoModelForMaskedLM")

__all__ = [
    "NedsForMaskedModeling",
    "NedsMaskedModelingOutput",
    "NedsModel",
    "NedsModelOutput",
    "NedsPreTrainedModel",
    "check_same_sessions",
    "is_session_parameter",
    "make_dummy_inputs",
]
