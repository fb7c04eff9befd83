"""Configuration of action segmentation models (per-frame behaviour classes from pose features).

This module imports only `transformers` (and the standard library) so that it can be copied next
to a checkpoint and loaded with ``trust_remote_code=True`` where neds_hf is not installed.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from transformers import PreTrainedConfig

#: Temporal heads a segmentation model can use.
SEGMENTATION_HEADS = ("dtcn", "temporal_mlp", "gru", "lstm")
#: Activations of the convolutional and MLP heads.
SEGMENTATION_ACTIVATIONS = ("leaky_relu", "relu", "gelu", "tanh")
#: Name of class 0: frames nobody labelled. It is never a training target nor a prediction.
BACKGROUND = "background"
#: Context frames a recurrent head gets on each side of a chunk.
RNN_CONTEXT_FRAMES = 4

_AUTO_MAP = {
    "AutoConfig": "configuration_segmentation.ActionSegmentationConfig",
    "AutoModel": "modeling_segmentation.ActionSegmentationModel",
    "AutoModelForTokenClassification": "modeling_segmentation.ActionSegmentationModel",
}


def _default_class_names() -> list[str]:
    return [BACKGROUND, "still", "move"]


class ActionSegmentationConfig(PreTrainedConfig):
    r"""Configuration of a per-frame action segmentation model.

    The defaults are the dilated TCN of the action segmentation literature: 32 channels, 2
    blocks, 4 lags (kernel 9), dilation 2^l in block l, residual connections, dropout 0.1,
    leaky ReLU, which sees 24 frames of context on each side.

    Args:
        num_features: width of the model input per frame (after the feature pipeline, so
            position + velocity features count twice).
        class_names: class names, index 0 must be ``"background"`` (unlabelled frames).
        head: ``"dtcn"`` (dilated TCN), ``"temporal_mlp"`` (one temporal convolution then
            per-frame layers), ``"gru"`` or ``"lstm"``.
        hidden_size: channels / hidden units of the head.
        num_layers: TCN blocks, MLP layers or recurrent layers.
        num_lags: half-width of the temporal kernels (kernel ``2 * num_lags + 1``).
        dropout: dropout inside the head.
        activation: nonlinearity of the convolutional and MLP heads.
        bidirectional: recurrent heads read the sequence in both directions.
        weight_norm: reparametrise the two dilated convolutions of every ``"dtcn"`` block as
            direction times norm (``torch.nn.utils.parametrizations.weight_norm``), as the
            daart / lightning-action TCN does; the residual 1x1 convolution and the other
            heads are unchanged. Off by default: it lowered held-out macro F1 and edit on the
            synthetic benchmark corpus (see ``SegmentationTrainingArguments.weight_norm``).
        class_weights: per-class loss weights (background weight 0); set from the training
            labels as ``max(count) / count`` and saved with the model.
        next_step_weight: weight of a loss predicting the next frame's features from every
            frame's hidden state (uses unlabelled frames too); 0 disables the extra head.
        initializer_range: std of the normal initialisation of linear layers.
    """

    model_type: ClassVar[str] = "action_segmentation"

    num_features: int = 4
    class_names: list[str] = field(default_factory=_default_class_names)
    head: str = "dtcn"
    hidden_size: int = 32
    num_layers: int = 2
    num_lags: int = 4
    dropout: float | int = 0.1
    activation: str = "leaky_relu"
    bidirectional: bool = True
    weight_norm: bool = False
    class_weights: list[float] | None = None
    next_step_weight: float | int = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.class_names = list(self.class_names)
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
        self._validate()
        if not getattr(self, "auto_map", None):
            self.auto_map = dict(_AUTO_MAP)
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        errors: list[str] = []
        for name in ("num_features", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_lags, int) or self.num_lags < 0:
            errors.append(f"num_lags must be an integer >= 0, got {self.num_lags!r}")
        if not isinstance(self.weight_norm, bool):
            errors.append(f"weight_norm must be true or false, got {self.weight_norm!r}")
        if self.head not in SEGMENTATION_HEADS:
            errors.append(f"head must be one of {SEGMENTATION_HEADS}, got {self.head!r}")
        if self.activation not in SEGMENTATION_ACTIVATIONS:
            errors.append(
                f"activation must be one of {SEGMENTATION_ACTIVATIONS}, got {self.activation!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            errors.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.next_step_weight < 0:
            errors.append(f"next_step_weight must be >= 0, got {self.next_step_weight!r}")
        names = self.class_names
        if len(names) < 2 or names[0] != BACKGROUND:
            errors.append(
                f"class_names must start with {BACKGROUND!r} followed by at least one class, "
                f"got {names!r}"
            )
        if len(set(names)) != len(names):
            errors.append(f"class_names has duplicates: {names!r}")
        if self.class_weights is not None and len(self.class_weights) != len(names):
            errors.append(
                f"class_weights has {len(self.class_weights)} entries for {len(names)} classes"
            )
        if errors:
            raise ValueError("Invalid ActionSegmentationConfig: " + "; ".join(errors))

    @property
    def num_labels_total(self) -> int:
        """Number of classes, background included (the width of the logits)."""
        return len(self.class_names)

    @property
    def context_frames(self) -> int:
        """Frames of context the head reads on each side of a frame (its receptive half-width).

        Training chunks and inference windows carry this many real neighbouring frames on both
        sides, so that the frames that count see the same inputs in training and inference.
        """
        if self.head == "dtcn":
            return sum(2 * self.num_lags * 2**layer for layer in range(self.num_layers))
        if self.head == "temporal_mlp":
            return self.num_lags
        return RNN_CONTEXT_FRAMES


__all__ = [
    "BACKGROUND",
    "SEGMENTATION_ACTIVATIONS",
    "SEGMENTATION_HEADS",
    "ActionSegmentationConfig",
]
