"""Per-frame action segmentation model: a temporal head over pose features and a linear classifier.

Input: features per frame `(B, T, D)`. Output: per-frame class logits `(B, T, C)` (class 0 is
background = unlabelled; it gets no loss and is never predicted). Heads: dilated TCN, temporal
MLP, bidirectional GRU/LSTM. The loss is a class-weighted cross-entropy over labelled frames only,
optionally plus weak (pseudo-)labels on unlabelled frames and a next-frame prediction loss.

This module imports only torch, transformers and :mod:`configuration_segmentation`, so it can be
copied next to a checkpoint and loaded with ``trust_remote_code=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_segmentation import ActionSegmentationConfig

#: Label value of frames that never count (context padding, batch padding).
IGNORE_INDEX = -100


@dataclass
class ActionSegmentationOutput(ModelOutput):
    """Output of :class:`ActionSegmentationModel`.

    Args:
        loss: total loss (present when `labels` are given).
        losses: the parts of the loss: ``supervised``, ``weak``, ``next_step``.
        logits: per-frame class logits `(B, T, C)`, background included at index 0.
        hidden_states: the head's per-frame features `(B, T, H)`.
        next_step_predictions: predicted features of frame t+1 from frame t `(B, T, D)`, when
            the config has a next-step loss.
    """

    loss: torch.FloatTensor | None = None
    losses: dict[str, torch.FloatTensor] | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: torch.FloatTensor | None = None
    next_step_predictions: torch.FloatTensor | None = None


def _activation(name: str) -> nn.Module:
    return {
        "leaky_relu": nn.LeakyReLU(0.05),
        "relu": nn.ReLU(),
        "gelu": nn.GELU(),
        "tanh": nn.Tanh(),
    }[name]


class DilatedBlock(nn.Module):
    """Two dilated convolutions with activation and channel dropout, plus a residual path.

    With ``config.weight_norm`` both dilated convolutions are weight-normalised.
    """

    def __init__(self, in_channels: int, config: ActionSegmentationConfig, dilation: int):
        super().__init__()
        width, lags = config.hidden_size, config.num_lags
        kernel, padding = 2 * lags + 1, lags * dilation
        self.conv1 = nn.Conv1d(in_channels, width, kernel, padding=padding, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, kernel, padding=padding, dilation=dilation)
        if config.weight_norm:
            # weight = g * v / ||v|| per output channel; starts as the same function (g = ||v||)
            self.conv1 = weight_norm(self.conv1)
            self.conv2 = weight_norm(self.conv2)
        self.activation = _activation(config.activation)
        self.dropout = nn.Dropout1d(config.dropout)
        self.residual = nn.Conv1d(in_channels, width, 1) if in_channels != width else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T) -> (B, H, T)
        out = self.dropout(self.activation(self.conv1(x)))
        out = self.dropout(self.activation(self.conv2(out)))
        return self.activation(out + self.residual(x))


class DilatedTCNHead(nn.Module):
    """Stack of dilated blocks, dilation 2^l in block l."""

    def __init__(self, config: ActionSegmentationConfig):
        super().__init__()
        self.blocks = nn.ModuleList(
            DilatedBlock(config.num_features if i == 0 else config.hidden_size, config, 2**i)
            for i in range(config.num_layers)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, H)
        x = features.transpose(1, 2)  # (B, D, T)
        for block in self.blocks:
            x = block(x)
        return x.transpose(1, 2)


class TemporalMLPHead(nn.Module):
    """One temporal convolution over ±num_lags frames, then per-frame linear layers."""

    def __init__(self, config: ActionSegmentationConfig):
        super().__init__()
        lags = config.num_lags
        self.conv = nn.Conv1d(config.num_features, config.hidden_size, 2 * lags + 1, padding=lags)
        self.activation = _activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(
            nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.num_layers - 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, H)
        x = self.dropout(self.activation(self.conv(features.transpose(1, 2)).transpose(1, 2)))
        for layer in self.layers:
            x = self.dropout(self.activation(layer(x)))
        return x


class RecurrentHead(nn.Module):
    """GRU or LSTM (optionally bidirectional) followed by a projection to `hidden_size`."""

    def __init__(self, config: ActionSegmentationConfig):
        super().__init__()
        rnn = nn.GRU if config.head == "gru" else nn.LSTM
        self.rnn = rnn(
            config.num_features,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        directions = 2 if config.bidirectional else 1
        self.projection = nn.Linear(directions * config.hidden_size, config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, H)
        out, _ = self.rnn(features)  # (B, T, directions * H)
        return self.projection(out)


_HEADS = {"dtcn": DilatedTCNHead, "temporal_mlp": TemporalMLPHead, "gru": RecurrentHead}
_HEADS["lstm"] = RecurrentHead


class ActionSegmentationPreTrainedModel(PreTrainedModel):
    """Weights initialisation shared by action segmentation models."""

    config: ActionSegmentationConfig
    config_class = ActionSegmentationConfig
    base_model_prefix = "segmenter"
    main_input_name = "features"
    input_modalities = ("time",)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) linear weights, zero biases; convolutions keep the
        PyTorch (Kaiming-uniform) initialisation, which suits the leaky-ReLU TCN."""
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)


class ActionSegmentationModel(ActionSegmentationPreTrainedModel):
    """Temporal head + per-frame linear classifier (+ optional next-frame feature predictor).

    Call with ``features`` `(B, T, D)`; pass ``labels`` `(B, T)` (class index, 0 = background,
    -100 = ignore) to get the loss.
    """

    def __init__(self, config: ActionSegmentationConfig):
        super().__init__(config)
        self.head = _HEADS[config.head](config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels_total)
        self.next_step = (
            nn.Linear(config.hidden_size, config.num_features)
            if config.next_step_weight > 0
            else None
        )
        self.post_init()

    def class_weight_tensor(self, device: torch.device) -> torch.Tensor:
        """Loss weight per class `(C,)`: the config's, or 1 for every class; background 0."""
        weights = self.config.class_weights or [1.0] * self.config.num_labels_total
        tensor = torch.tensor(weights, dtype=torch.float32, device=device)
        tensor[0] = 0.0
        return tensor

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        weak_labels: torch.Tensor | None = None,
        weak_label_weight: float = 0.0,
        pseudo_label_threshold: float | None = None,
        frame_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> ActionSegmentationOutput:
        """Per-frame logits, and the loss when `labels` are given.

        Args:
            features: `(B, T, D)` model features (after the feature pipeline).
            labels: `(B, T)` class per frame; 0 (background) and -100 frames get no loss.
            weak_labels: `(B, T)` weak or pseudo-labels for frames without a hand label
                (-100 where none); weighted by `weak_label_weight` and the class weights.
            weak_label_weight: weight of the weak-label loss (annealed by the trainer).
            pseudo_label_threshold: without `weak_labels`, use the model's own confident
                predictions (max class probability >= threshold, background excluded,
                gradient-free) on unlabelled frames (label 0) as weak labels.
            frame_mask: `(B, T)` True on real frames that count for the next-step loss
                (False on batch padding); all frames when omitted.
        """
        hidden = self.head(features)  # (B, T, H)
        logits = self.classifier(hidden)  # (B, T, C)
        next_step = self.next_step(hidden) if self.next_step is not None else None  # (B, T, D)
        loss, losses = None, None
        if labels is not None:
            weights = self.class_weight_tensor(logits.device)
            losses = {"supervised": weighted_cross_entropy(logits, labels, weights)}
            loss = losses["supervised"]
            if weak_labels is None and pseudo_label_threshold is not None:
                weak_labels = pseudo_labels(logits, labels, pseudo_label_threshold)
            if weak_labels is not None and weak_label_weight > 0:
                losses["weak"] = weighted_cross_entropy(logits, weak_labels, weights)
                loss = loss + weak_label_weight * losses["weak"]
            if next_step is not None:
                losses["next_step"] = next_step_loss(next_step, features, frame_mask)
                loss = loss + self.config.next_step_weight * losses["next_step"]
        return ActionSegmentationOutput(
            loss=loss,
            losses=losses,
            logits=logits,
            hidden_states=hidden,
            next_step_predictions=next_step,
        )


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor
) -> torch.Tensor:
    """Class-weighted mean cross-entropy over frames whose label has a positive weight.

    `logits` `(B, T, C)`, `labels` `(B, T)` (-100 = ignore), `class_weights` `(C,)`. A batch
    without any weighted frame gives an exact 0 that still backpropagates (never NaN).
    """
    valid = labels >= 0  # (B, T)
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    frame_weights = class_weights[safe_labels] * valid  # (B, T)
    nll = F.cross_entropy(logits.transpose(1, 2), safe_labels, reduction="none")  # (B, T)
    total = frame_weights.sum()
    if total <= 0:
        return logits.sum() * 0.0
    return (nll * frame_weights).sum() / total


def pseudo_labels(logits: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Confident predictions on unlabelled frames `(B, T)`; -100 elsewhere.

    `logits` `(B, T, C)`; only frames with label 0 (background = unlabelled) get one, and only
    where the highest real-class probability reaches `threshold`.
    """
    with torch.no_grad():
        masked = logits.detach().float().clone()
        masked[..., 0] = float("-inf")
        confidence, predicted = torch.softmax(masked, dim=-1).max(dim=-1)  # (B, T)
        keep = (labels == 0) & (confidence >= threshold)
        return torch.where(keep, predicted, torch.full_like(predicted, IGNORE_INDEX))


def next_step_loss(
    predictions: torch.Tensor, features: torch.Tensor, frame_mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean squared error between the prediction at t `(B, T, D)` and the features at t+1."""
    error = (predictions[:, :-1] - features[:, 1:]).pow(2).mean(-1)  # (B, T-1)
    if frame_mask is None:
        return error.mean() if error.numel() else predictions.sum() * 0.0
    pairs = (frame_mask[:, :-1] & frame_mask[:, 1:]).to(error.dtype)  # (B, T-1)
    if pairs.sum() <= 0:
        return predictions.sum() * 0.0
    return (error * pairs).sum() / pairs.sum()


ActionSegmentationConfig.register_for_auto_class()
ActionSegmentationModel.register_for_auto_class("AutoModel")

__all__ = [
    "IGNORE_INDEX",
    "ActionSegmentationModel",
    "ActionSegmentationOutput",
    "ActionSegmentationPreTrainedModel",
    "next_step_loss",
    "pseudo_labels",
    "weighted_cross_entropy",
]
