"""Chunks of sessions and the model windows around them, shared by training and inference.

A chunk is a stretch of frames whose outputs count (`start` to `stop`); its window adds
`context` frames on each side: real neighbouring frames where the session has them, zeros
beyond its ends. Training and inference build windows the same way, so a frame's prediction
sees the same inputs in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .modeling_segmentation import IGNORE_INDEX


@dataclass(frozen=True)
class Chunk:
    """Frames `start:stop` of session number `session` (in some list of sessions)."""

    session: int
    start: int
    stop: int


def chunk_bounds(start: int, stop: int, chunk_length: int) -> list[tuple[int, int]]:
    """Consecutive `(start, stop)` pieces of at most `chunk_length` covering `start:stop`
    entirely (the last piece is shorter when the length is not a multiple)."""
    if chunk_length < 1:
        raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")
    return [(a, min(a + chunk_length, stop)) for a in range(start, stop, chunk_length)]


def feature_window(features: np.ndarray, start: int, stop: int, context: int) -> np.ndarray:
    """Features of frames `start - context : stop + context`, zeros outside the session.

    `features` `(T, D)` -> `(stop - start + 2 * context, D)`.
    """
    num_frames = features.shape[0]
    window = np.zeros((stop - start + 2 * context, features.shape[1]), dtype=np.float32)
    lo, hi = max(start - context, 0), min(stop + context, num_frames)
    offset = lo - (start - context)
    window[offset : offset + hi - lo] = features[lo:hi]
    return window


def label_window(labels: np.ndarray, start: int, stop: int, context: int) -> np.ndarray:
    """Labels of a window: the chunk's labels, IGNORE_INDEX on the context frames."""
    window = np.full(stop - start + 2 * context, IGNORE_INDEX, dtype=np.int64)
    window[context : context + stop - start] = labels[start:stop]
    return window


def pad_batch(windows: Sequence[np.ndarray], fill: float) -> np.ndarray:
    """Stack windows of different lengths, padding at the end with `fill`: `(B, L_max, ...)`."""
    length = max(w.shape[0] for w in windows)
    batch = np.full((len(windows), length, *windows[0].shape[1:]), fill, dtype=windows[0].dtype)
    for row, window in enumerate(windows):
        batch[row, : window.shape[0]] = window
    return batch


__all__ = ["Chunk", "chunk_bounds", "feature_window", "label_window", "pad_batch"]
