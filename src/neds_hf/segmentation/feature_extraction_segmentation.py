"""The feature pipeline of an action segmentation model, saved with it (`preprocessor_config.json`).

Raw per-frame features of one session `(T, D)` (marker positions or any feature columns) become
the model input `(T, D')`: optional velocity features (first difference, the first row repeated
so velocity[0] = 0) appended after the positions, then a per-session z-score (features with
std <= 1e-8 are only centred). The context the model's head needs on each side of a frame is
stored here too, so inference windows are built the way training chunks were.

This module imports only numpy and transformers, so it can be loaded with
``trust_remote_code=True`` where neds_hf is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature, FeatureExtractionMixin

#: Per-session normalisations the pipeline knows.
FEATURE_NORMALIZATIONS = ("zscore", "none")
#: Standard deviations at or below this are treated as constant features (only centred).
MIN_STD = 1e-8


class ActionSegmentationFeatureExtractor(FeatureExtractionMixin):
    """Turns a session's raw features into model features, with the settings the model was
    trained with.

    Args:
        feature_names: names of the raw input columns, in order (checked at call time).
        use_velocity: append the first difference of every feature.
        normalization: ``"zscore"`` (per session, per feature) or ``"none"``.
        context_frames: real frames of context each model window carries on both sides.
        likelihood_threshold: marker positions below this likelihood were treated as missing
            (interpolated) when the model was trained; prediction reads markers the same way.
    """

    model_input_names = ["features"]  # noqa: RUF012 (transformers API)

    def __init__(
        self,
        feature_names: Sequence[str] = (),
        use_velocity: bool = True,
        normalization: str = "zscore",
        context_frames: int = 0,
        likelihood_threshold: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if normalization not in FEATURE_NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {FEATURE_NORMALIZATIONS}, got {normalization!r}"
            )
        if not isinstance(context_frames, int) or context_frames < 0:
            raise ValueError(f"context_frames must be an integer >= 0, got {context_frames!r}")
        self.feature_names = [str(name) for name in feature_names]
        self.use_velocity = bool(use_velocity)
        self.normalization = normalization
        self.context_frames = context_frames
        self.likelihood_threshold = likelihood_threshold

    @property
    def num_model_features(self) -> int:
        """Width of the model input produced from `len(feature_names)` raw features."""
        return len(self.feature_names) * (2 if self.use_velocity else 1)

    @property
    def model_feature_names(self) -> list[str]:
        """Names of the model input columns (positions, then their velocities)."""
        names = list(self.feature_names)
        return names + [f"{name}_velocity" for name in names] if self.use_velocity else names

    def transform(self, features: Any, session: str = "session") -> np.ndarray:
        """Model features `(T, D')` float32 from one session's raw features `(T, D)`."""
        array = np.asarray(features, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(
                f"{session}: expected features of shape (frames, {len(self.feature_names)}) with "
                f"at least one frame, got shape {array.shape}"
            )
        if self.feature_names and array.shape[1] != len(self.feature_names):
            raise ValueError(
                f"{session}: expected {len(self.feature_names)} feature columns "
                f"{self.feature_names}, got {array.shape[1]}"
            )
        if not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).any(axis=1).sum())
            raise ValueError(
                f"{session}: {bad} frames have NaN or infinite features; interpolate them first "
                "(the readers do)"
            )
        if self.use_velocity:
            velocity = np.diff(array, axis=0, prepend=array[:1])  # (T, D), velocity[0] = 0
            array = np.concatenate([array, velocity], axis=1)  # (T, 2D)
        if self.normalization == "zscore":
            mean, std = array.mean(axis=0), array.std(axis=0)
            array = (array - mean) / np.where(std > MIN_STD, std, 1.0)
        return array.astype(np.float32)

    def __call__(
        self,
        sessions: Any,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Transform one session `(T, D)` or a list of sessions; returns ``{"features": ...}``
        (a list of `(T_i, D')` arrays for a list; a `(1, T, D')` batch for one session)."""
        if isinstance(sessions, list | tuple):
            return BatchFeature({"features": [self.transform(s) for s in sessions]})
        batch = self.transform(sessions)[None]  # (1, T, D')
        return BatchFeature({"features": batch}, tensor_type=return_tensors)


ActionSegmentationFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["FEATURE_NORMALIZATIONS", "ActionSegmentationFeatureExtractor"]
