"""Scikit-learn baselines on time-lag-stacked features: logistic regression and a random forest.

Each frame's input is its features and those of the ±`lags` neighbouring frames (zeros beyond
the session's ends, never wrapped around); the classifier is fit on labelled frames only and
predicts a real class (never background) for every frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

#: Baseline classifiers by name.
BASELINES = ("logistic_regression", "random_forest")


def lag_stack(features: np.ndarray, lags: int) -> np.ndarray:
    """`(T, D)` -> `(T, (2 * lags + 1) * D)`: the features at t - lags ... t + lags."""
    num_frames = features.shape[0]
    padded = np.pad(features, ((lags, lags), (0, 0)))
    return np.concatenate([padded[i : i + num_frames] for i in range(2 * lags + 1)], axis=1)


class LagStackedBaseline:
    """A classifier on lag-stacked per-frame features, fit on labelled frames only.

    Args:
        kind: ``"logistic_regression"`` or ``"random_forest"``.
        lags: frames of context on each side.
        seed: random state of the classifier.
    """

    def __init__(self, kind: str = "logistic_regression", lags: int = 4, seed: int = 0):
        if kind not in BASELINES:
            raise ValueError(f"kind must be one of {BASELINES}, got {kind!r}")
        self.kind, self.lags = kind, lags
        if kind == "logistic_regression":
            self.classifier = LogisticRegression(max_iter=2000, class_weight="balanced")
        else:
            self.classifier = RandomForestClassifier(
                n_estimators=100,
                min_samples_leaf=2,
                class_weight="balanced",
                random_state=seed,
                n_jobs=1,
            )

    def fit(
        self, features: Sequence[np.ndarray], labels: Sequence[np.ndarray]
    ) -> LagStackedBaseline:
        """Fit on the labelled frames (label > 0) of sessions `(T_i, D)` with labels `(T_i,)`."""
        inputs, targets = [], []
        for session_features, session_labels in zip(features, labels, strict=True):
            keep = session_labels > 0
            inputs.append(lag_stack(session_features, self.lags)[keep])
            targets.append(session_labels[keep])
        targets_all = np.concatenate(targets)
        if not targets_all.size:
            raise ValueError("the baseline has no labelled frames to fit on")
        self.classifier.fit(np.concatenate(inputs), targets_all)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class index per frame `(T,)` for one session's features `(T, D)`."""
        return self.classifier.predict(lag_stack(features, self.lags)).astype(np.int64)


__all__ = ["BASELINES", "LagStackedBaseline", "lag_stack"]
