"""Simple linear baselines for encoding and decoding (numpy / scikit-learn).

They follow the NEDS linear baselines: a reduced-rank (or ridge) encoder from standardised
behaviours to Gaussian-smoothed spike counts with predictions clipped at 1e-3 before bits per
spike, a ridge decoder per time bin for continuous behaviours and a cross-validated logistic
decoder on flattened trial activity for categorical ones.

Array conventions: spikes ``(trials, T, N)`` counts, continuous behaviours ``(trials, T)`` or
``(trials, T, B)``, trial labels ``(trials,)`` or ``(trials, L)`` integer codes (e.g. choice,
block). Everything is deterministic.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.ndimage import gaussian_filter1d
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .validity import invalid_entries

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPHAS",
    "GLM_L2_GRID",
    "LinearBaselinePredictions",
    "LinearEncoder",
    "LogisticDecoder",
    "PoissonGlmEncoder",
    "RidgeDecoder",
    "fit_linear_baselines",
    "fit_linear_encoder",
    "fit_logistic_decoder",
    "fit_poisson_glm_encoder",
    "fit_poisson_regression",
    "fit_ridge_decoder",
    "neuron_features",
    "oracle_expected_counts",
    "trials_to_arrays",
    "true_neuron_parameters",
]

#: Regularisation grid of the NEDS linear baselines (ridge alpha and logistic C).
DEFAULT_ALPHAS = np.logspace(-4, 4, 9)


def _float_array(values: Any, name: str, ndim: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in ndim:
        raise ValueError(
            f"`{name}` must have {' or '.join(map(str, ndim))} dimensions, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or inf")
    return array


def _continuous_3d(continuous_behaviours: Any) -> np.ndarray:
    array = _float_array(continuous_behaviours, "continuous_behaviours", (2, 3))
    return array[..., None] if array.ndim == 2 else array  # (trials, T, B)


def _labels_2d(trial_labels: Any | None, num_trials: int) -> np.ndarray | None:
    if trial_labels is None:
        return None
    labels = np.asarray(trial_labels)
    labels = labels[:, None] if labels.ndim == 1 else labels  # (trials, L)
    if labels.ndim != 2 or labels.shape[0] != num_trials:
        raise ValueError(
            f"`trial_labels` must be (trials,) or (trials, L) with trials={num_trials}, "
            f"got shape {labels.shape}"
        )
    return labels


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


@dataclass
class LinearEncoder:
    """A fitted linear encoder: behaviours -> spike rates ``(trials, T, N)``.

    Built by :func:`fit_linear_encoder`. The design matrix of a trial's bin concatenates the
    standardised continuous behaviours of that bin, one-hot codes of the trial labels
    (broadcast over bins) and, with ``include_time``, a one-hot of the bin index (which lets
    the encoder capture the trial-averaged response).
    """

    coefficients: np.ndarray  # (P, N)
    intercept: np.ndarray  # (N,)
    feature_mean: np.ndarray  # (B,)
    feature_scale: np.ndarray  # (B,)
    label_categories: list[np.ndarray]  # one array of categories per label column
    num_bins: int
    include_time: bool
    min_rate: float
    method: str
    rank: int | None
    alpha: float

    def design_matrix(
        self, continuous_behaviours: Any, trial_labels: Any | None = None
    ) -> np.ndarray:
        """Design matrix ``(trials * T, P)`` for the given trials."""
        behaviours = _continuous_3d(continuous_behaviours)  # (trials, T, B)
        num_trials, num_bins, num_features = behaviours.shape
        if num_features != self.feature_mean.shape[0]:
            raise ValueError(
                f"encoder was fitted on {self.feature_mean.shape[0]} continuous behaviours, "
                f"got {num_features}"
            )
        if num_bins != self.num_bins:
            raise ValueError(
                f"encoder was fitted on {self.num_bins} bins per trial, got {num_bins}"
            )
        blocks = [((behaviours - self.feature_mean) / self.feature_scale).reshape(-1, num_features)]
        labels = _labels_2d(trial_labels, num_trials)
        if (labels is None) != (not self.label_categories):
            raise ValueError(
                f"encoder was fitted with {len(self.label_categories)} trial-label columns; "
                f"got {'none' if labels is None else labels.shape[1]}"
            )
        if labels is not None:
            if labels.shape[1] != len(self.label_categories):
                raise ValueError(
                    f"encoder was fitted with {len(self.label_categories)} trial-label columns, "
                    f"got {labels.shape[1]}"
                )
            for column, categories in enumerate(self.label_categories):
                unseen = np.setdiff1d(labels[:, column], categories)
                if unseen.size:
                    raise ValueError(
                        f"trial-label column {column} has values {unseen.tolist()} that were not "
                        f"in the training trials (seen: {categories.tolist()})"
                    )
                one_hot = (labels[:, column, None] == categories[None, :]).astype(np.float64)
                blocks.append(np.repeat(one_hot, num_bins, axis=0))  # (trials * T, C)
        if self.include_time:
            blocks.append(np.tile(np.eye(num_bins), (num_trials, 1)))  # (trials * T, T)
        return np.concatenate(blocks, axis=1)

    def predict_rates(
        self, continuous_behaviours: Any, trial_labels: Any | None = None
    ) -> np.ndarray:
        """Predicted spike rates ``(trials, T, N)``, clipped below at ``min_rate``."""
        design = self.design_matrix(continuous_behaviours, trial_labels)  # (trials * T, P)
        rates = design @ self.coefficients + self.intercept  # (trials * T, N)
        rates = np.clip(rates, self.min_rate, None)
        return rates.reshape(-1, self.num_bins, self.intercept.shape[0])


def _reduced_rank_ridge(
    design: np.ndarray, targets: np.ndarray, rank: int, l2: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-rank ridge regression: ridge fit projected on the top ``rank`` components.

    ``design`` (S, P) and ``targets`` (S, N) are centred internally; returns
    ``(coefficients (P, N), intercept (N,))``.
    """
    design_mean = design.mean(axis=0)  # (P,)
    target_mean = targets.mean(axis=0)  # (N,)
    centred_design = design - design_mean
    centred_targets = targets - target_mean
    gram = centred_design.T @ centred_design + l2 * np.eye(design.shape[1])  # (P, P)
    ridge_coefficients = np.linalg.solve(gram, centred_design.T @ centred_targets)  # (P, N)
    fitted = centred_design @ ridge_coefficients  # (S, N)
    _, _, right_vectors = np.linalg.svd(fitted, full_matrices=False)  # (min(S, N), N)
    projection = right_vectors[:rank].T @ right_vectors[:rank]  # (N, N)
    coefficients = ridge_coefficients @ projection  # (P, N)
    intercept = target_mean - design_mean @ coefficients  # (N,)
    return coefficients, intercept


def _check_encoder_inputs(
    continuous_behaviours: Any, spike_counts: Any, method: str, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(behaviours (trials, T, B), counts (trials, T, N))`` of the encoder."""
    behaviours = _continuous_3d(continuous_behaviours)  # (trials, T, B)
    counts = _float_array(spike_counts, "spike_counts", (3,))  # (trials, T, N)
    if counts.shape[:2] != behaviours.shape[:2]:
        raise ValueError(
            f"spike_counts (trials, T) = {counts.shape[:2]} does not match continuous_behaviours "
            f"{behaviours.shape[:2]}"
        )
    if method not in ("rrr", "ridge"):
        raise ValueError(f"method must be 'rrr' or 'ridge', got {method!r}")
    num_neurons = counts.shape[-1]
    if method == "rrr" and not 1 <= rank <= num_neurons:
        raise ValueError(
            f"rank must be between 1 and the number of neurons ({num_neurons}), got {rank}"
        )
    return behaviours, counts


def _unfitted_encoder(
    encoder_class: type[LinearEncoder],
    behaviours: np.ndarray,
    counts: np.ndarray,
    labels: np.ndarray | None,
    **settings: Any,
) -> LinearEncoder:
    """An encoder of `encoder_class` holding the design statistics of the training trials
    (behaviour mean and scale, label categories, bins) and zero coefficients."""
    feature_mean = behaviours.reshape(-1, behaviours.shape[-1]).mean(axis=0)  # (B,)
    feature_scale = behaviours.reshape(-1, behaviours.shape[-1]).std(axis=0)  # (B,)
    num_neurons = counts.shape[-1]
    return encoder_class(
        coefficients=np.zeros((0, num_neurons)),
        intercept=np.zeros(num_neurons),
        feature_mean=feature_mean,
        feature_scale=np.where(feature_scale > 0, feature_scale, 1.0),
        label_categories=[] if labels is None else [np.unique(column) for column in labels.T],
        num_bins=counts.shape[1],
        **settings,
    )


def fit_linear_encoder(
    continuous_behaviours: Any,
    spike_counts: Any,
    *,
    trial_labels: Any | None = None,
    method: Literal["rrr", "ridge"] = "rrr",
    rank: int = 3,
    l2: float = 100.0,
    alphas: Any = DEFAULT_ALPHAS,
    smooth_sigma: float | None = 2.0,
    include_time: bool = True,
    min_rate: float = 1e-3,
) -> LinearEncoder:
    """Fit a linear encoder from behaviours to spike counts.

    Args:
        continuous_behaviours: ``(trials, T)`` or ``(trials, T, B)`` per-bin behaviours
            (standardised with the training mean and standard deviation; a constant feature
            keeps scale 1).
        spike_counts: ``(trials, T, N)`` spike counts.
        trial_labels: optional ``(trials,)`` or ``(trials, L)`` categorical labels (e.g. choice,
            block), one-hot encoded and broadcast over bins.
        method: ``"rrr"`` (reduced-rank ridge regression with ``rank`` and ``l2``) or
            ``"ridge"`` (``RidgeCV`` over ``alphas``, one alpha shared by all neurons).
        rank: rank of the RRR coefficient matrix.
        l2: ridge penalty of the RRR fit.
        alphas: ridge grid for ``method="ridge"``.
        smooth_sigma: Gaussian smoothing (in bins, along time) of the target counts; None or
            0 for raw counts.
        include_time: add a one-hot of the bin index to the design.
        min_rate: predictions are clipped below at this rate.
    """
    behaviours, counts = _check_encoder_inputs(continuous_behaviours, spike_counts, method, rank)
    num_neurons = counts.shape[-1]
    labels = _labels_2d(trial_labels, counts.shape[0])
    encoder = _unfitted_encoder(
        LinearEncoder,
        behaviours,
        counts,
        labels,
        include_time=include_time,
        min_rate=min_rate,
        method=method,
        rank=rank if method == "rrr" else None,
        alpha=float(l2),
    )
    design = encoder.design_matrix(behaviours, labels)  # (trials * T, P)
    targets = counts
    if smooth_sigma:
        targets = gaussian_filter1d(counts, sigma=smooth_sigma, axis=1)  # (trials, T, N)
    targets = targets.reshape(-1, num_neurons)  # (trials * T, N)

    if method == "rrr":
        encoder.coefficients, encoder.intercept = _reduced_rank_ridge(design, targets, rank, l2)
    else:
        ridge = RidgeCV(alphas=np.asarray(alphas, dtype=np.float64)).fit(design, targets)
        encoder.coefficients = ridge.coef_.T.copy()  # (P, N)
        encoder.intercept = np.asarray(ridge.intercept_, dtype=np.float64)
        encoder.alpha = float(ridge.alpha_)
    return encoder


@dataclass
class PoissonGlmEncoder(LinearEncoder):
    """A fitted Poisson GLM encoder: rates ``exp(design @ coefficients + intercept)``.

    Built by :func:`fit_poisson_glm_encoder`; same design matrix as :class:`LinearEncoder`
    (standardised behaviours, one-hot trial labels, one-hot time bin), log link. ``alpha`` is
    the selected L2 penalty.
    """

    def predict_rates(
        self, continuous_behaviours: Any, trial_labels: Any | None = None
    ) -> np.ndarray:
        """Predicted spike rates ``(trials, T, N)``, clipped below at ``min_rate``."""
        design = self.design_matrix(continuous_behaviours, trial_labels)  # (trials * T, P)
        log_rates = np.clip(design @ self.coefficients + self.intercept, None, 20.0)
        rates = np.clip(np.exp(log_rates), self.min_rate, None)  # (trials * T, N)
        return rates.reshape(-1, self.num_bins, self.intercept.shape[0])


#: L2 grid of the Poisson GLM (penalty on the mean per-entry negative log-likelihood).
GLM_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


def _fit_poisson_weights(
    design: np.ndarray,
    counts: np.ndarray,
    l2: float,
    start: np.ndarray | None,
    max_iter: int,
) -> np.ndarray:
    """L-BFGS fit of all neurons' weights at once: ``(P + 1, N)``, the intercept last.

    Minimises ``mean(exp(eta) - y * eta) + l2 / 2 * |W|^2`` (intercept unpenalised), with
    ``eta = design @ W + b``; `design` (S, P), `counts` (S, N).
    """
    from scipy.optimize import minimize

    num_samples, num_features = design.shape
    num_neurons = counts.shape[1]
    augmented = np.concatenate([design, np.ones((num_samples, 1))], axis=1)  # (S, P + 1)
    if start is None:
        start = np.zeros((num_features + 1, num_neurons))
        start[-1] = np.log(np.maximum(counts.mean(axis=0), 1e-3))

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights = flat.reshape(num_features + 1, num_neurons)
        eta = np.clip(augmented @ weights, None, 20.0)  # (S, N)
        rates = np.exp(eta)
        penalty = weights[:-1]
        value = (rates - counts * eta).sum() / num_samples + 0.5 * l2 * (penalty**2).sum()
        gradient = augmented.T @ (rates - counts) / num_samples  # (P + 1, N)
        gradient[:-1] += l2 * penalty
        return float(value), gradient.ravel()

    result = minimize(
        objective, start.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter}
    )
    return result.x.reshape(num_features + 1, num_neurons)


def fit_poisson_glm_encoder(
    continuous_behaviours: Any,
    spike_counts: Any,
    *,
    trial_labels: Any | None = None,
    l2_grid: Sequence[float] = GLM_L2_GRID,
    validation_fraction: float = 0.2,
    include_time: bool = True,
    min_rate: float = 1e-3,
    max_iter: int = 300,
) -> PoissonGlmEncoder:
    """Fit a Poisson GLM (log link) from behaviours to raw spike counts, all neurons at once.

    The encoding baseline a neuroscientist fits first: same inputs as
    :func:`fit_linear_encoder` (standardised continuous behaviours, one-hot trial labels, a
    one-hot of the time bin), but a Poisson likelihood on unsmoothed counts. The L2 penalty is
    chosen from `l2_grid` by the Poisson log-likelihood of the last `validation_fraction` of
    the trials, then the model is refitted on every trial.

    Args:
        continuous_behaviours: ``(trials, T)`` or ``(trials, T, B)`` per-bin behaviours.
        spike_counts: ``(trials, T, N)`` spike counts.
        trial_labels: optional ``(trials,)`` or ``(trials, L)`` categorical labels.
        l2_grid: candidate penalties (on the mean per-entry negative log-likelihood).
        validation_fraction: share of trials (the last ones) that scores each penalty.
        include_time: add a one-hot of the bin index to the design.
        min_rate: predictions are clipped below at this rate.
        max_iter: L-BFGS iterations per fit.
    """
    behaviours, counts = _check_encoder_inputs(continuous_behaviours, spike_counts, "ridge", 1)
    if not l2_grid or min(l2_grid) < 0:
        raise ValueError(f"l2_grid must be non-empty and >= 0, got {list(l2_grid)}")
    num_trials, num_bins, num_neurons = counts.shape
    labels = _labels_2d(trial_labels, num_trials)
    encoder = _unfitted_encoder(
        PoissonGlmEncoder,
        behaviours,
        counts,
        labels,
        include_time=include_time,
        min_rate=min_rate,
        method="poisson_glm",
        rank=None,
        alpha=float(l2_grid[0]),
    )
    design = encoder.design_matrix(behaviours, labels)  # (trials * T, P)
    weights, encoder.alpha = fit_poisson_regression(
        design,
        counts.reshape(-1, num_neurons),
        num_bins,
        l2_grid=l2_grid,
        validation_fraction=validation_fraction,
        max_iter=max_iter,
    )
    encoder.coefficients, encoder.intercept = weights[:-1], weights[-1]
    return encoder


def fit_poisson_regression(
    design: np.ndarray,
    counts: np.ndarray,
    num_bins: int,
    *,
    l2_grid: Sequence[float] = GLM_L2_GRID,
    validation_fraction: float = 0.2,
    max_iter: int = 300,
) -> tuple[np.ndarray, float]:
    """Poisson regression (log link) of every neuron's counts on one design, L2 chosen on
    held-out trials: returns the weights ``(P + 1, N)`` (intercept last) and the penalty.

    `design` ``(trials * T, P)`` and `counts` ``(trials * T, N)`` hold whole trials of
    `num_bins` rows each, in trial order. Each penalty of `l2_grid` (on the mean per-entry
    negative log-likelihood; the intercept is not penalised) is fitted on all but the last
    `validation_fraction` of the trials and scored by the Poisson likelihood of the rest;
    the best one is refitted on every trial. A single-entry grid skips the choice.
    """
    design = np.asarray(design, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if design.ndim != 2 or counts.ndim != 2 or design.shape[0] != counts.shape[0]:
        raise ValueError(
            f"design (S, P) and counts (S, N) must share their rows, got {design.shape} and "
            f"{counts.shape}"
        )
    if num_bins < 1 or design.shape[0] % num_bins:
        raise ValueError(f"{design.shape[0]} rows are not whole trials of {num_bins} bins")
    if not l2_grid or min(l2_grid) < 0:
        raise ValueError(f"l2_grid must be non-empty and >= 0, got {list(l2_grid)}")
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    num_trials = design.shape[0] // num_bins
    num_validation = round(num_trials * validation_fraction)
    if len(l2_grid) > 1 and not 1 <= num_validation < num_trials:
        raise ValueError(
            f"{num_trials} trials cannot be split {validation_fraction} for the L2 choice"
        )
    alpha = float(l2_grid[0])
    if len(l2_grid) > 1:
        cut = (num_trials - num_validation) * num_bins
        augmented = np.concatenate([design[cut:], np.ones((design.shape[0] - cut, 1))], axis=1)
        losses, start = [], None
        for l2 in sorted(l2_grid, reverse=True):  # strongest first: warm starts loosen
            start = _fit_poisson_weights(design[:cut], counts[:cut], l2, start, max_iter)
            eta = np.clip(augmented @ start, None, 20.0)  # (validation rows, N)
            losses.append((float((np.exp(eta) - counts[cut:] * eta).mean()), float(l2)))
        alpha = min(losses)[1]
    return _fit_poisson_weights(design, counts, alpha, None, max_iter), alpha


def neuron_features(spike_counts: Any, encoder: PoissonGlmEncoder) -> np.ndarray:
    """Simple per-neuron features ``(N, 1 + P)``: log mean count and the GLM's weights.

    The baseline of the region probe: what a probe can read from a neuron without any
    learned embedding (its firing rate, its tuning to the behaviours and its mean time course).
    """
    counts = _float_array(spike_counts, "spike_counts", (3,))  # (trials, T, N)
    if counts.shape[-1] != encoder.intercept.shape[0]:
        raise ValueError(
            f"spike_counts has {counts.shape[-1]} neurons, the encoder {encoder.intercept.shape[0]}"
        )
    log_rate = np.log(counts.mean(axis=(0, 1)) + 1e-3)  # (N,)
    return np.concatenate([log_rate[:, None], encoder.coefficients.T], axis=1)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _context_features(spike_counts: np.ndarray, context_bins: int) -> np.ndarray:
    """Counts of bins ``t - c .. t + c`` stacked per bin: ``(trials, T, (2c + 1) * N)``."""
    if context_bins == 0:
        return spike_counts
    num_bins = spike_counts.shape[1]
    padded = np.pad(spike_counts, ((0, 0), (context_bins, context_bins), (0, 0)), mode="edge")
    shifted = [padded[:, offset : offset + num_bins] for offset in range(2 * context_bins + 1)]
    return np.concatenate(shifted, axis=-1)


@dataclass
class RidgeDecoder:
    """Ridge decoders of a continuous behaviour, one per time bin.

    Built by :func:`fit_ridge_decoder`.
    """

    models: list[Pipeline]  # one per time bin
    context_bins: int
    num_neurons: int

    @property
    def alphas(self) -> np.ndarray:
        """Selected ridge alpha of each bin ``(T,)``."""
        return np.array([model[-1].alpha_ for model in self.models])

    def predict(self, spike_counts: Any) -> np.ndarray:
        """Decoded behaviour ``(trials, T)`` from spike counts ``(trials, T, N)``."""
        counts = _float_array(spike_counts, "spike_counts", (3,))
        if counts.shape[1:] != (len(self.models), self.num_neurons):
            raise ValueError(
                f"decoder expects spike_counts (trials, {len(self.models)}, {self.num_neurons}), "
                f"got {counts.shape}"
            )
        features = _context_features(counts, self.context_bins)  # (trials, T, F)
        return np.stack(
            [model.predict(features[:, bin_index]) for bin_index, model in enumerate(self.models)],
            axis=1,
        )


def fit_ridge_decoder(
    spike_counts: Any,
    behaviour: Any,
    *,
    alphas: Any = DEFAULT_ALPHAS,
    context_bins: int = 0,
) -> RidgeDecoder:
    """Fit one standardised ``RidgeCV`` per time bin from spike counts to a behaviour.

    Args:
        spike_counts: ``(trials, T, N)`` counts.
        behaviour: ``(trials, T)`` continuous behaviour (e.g. wheel speed).
        alphas: ridge grid (leave-one-out selection per bin).
        context_bins: also use the counts of this many neighbouring bins on each side.
    """
    counts = _float_array(spike_counts, "spike_counts", (3,))  # (trials, T, N)
    targets = _float_array(behaviour, "behaviour", (2,))  # (trials, T)
    if targets.shape != counts.shape[:2]:
        raise ValueError(
            f"behaviour shape {targets.shape} does not match spike_counts {counts.shape[:2]}"
        )
    if context_bins < 0:
        raise ValueError(f"context_bins must be >= 0, got {context_bins}")
    features = _context_features(counts, context_bins)  # (trials, T, F)
    grid = np.asarray(alphas, dtype=np.float64)
    models = [
        make_pipeline(StandardScaler(), RidgeCV(alphas=grid)).fit(
            features[:, bin_index], targets[:, bin_index]
        )
        for bin_index in range(counts.shape[1])
    ]
    return RidgeDecoder(models=models, context_bins=context_bins, num_neurons=counts.shape[2])


@dataclass
class LogisticDecoder:
    """Logistic decoder of a trial label from flattened trial activity.

    Built by :func:`fit_logistic_decoder`.
    """

    model: Pipeline
    num_bins: int
    num_neurons: int

    @property
    def classes(self) -> np.ndarray:
        """Class labels in the column order of :meth:`predict_proba`."""
        return self.model[-1].classes_

    def _features(self, spike_counts: Any) -> np.ndarray:
        counts = _float_array(spike_counts, "spike_counts", (3,))
        if counts.shape[1:] != (self.num_bins, self.num_neurons):
            raise ValueError(
                f"decoder expects spike_counts (trials, {self.num_bins}, {self.num_neurons}), "
                f"got {counts.shape}"
            )
        return counts.reshape(counts.shape[0], -1)  # (trials, T * N)

    def predict(self, spike_counts: Any) -> np.ndarray:
        """Predicted label per trial ``(trials,)``."""
        return self.model.predict(self._features(spike_counts))

    def predict_proba(self, spike_counts: Any) -> np.ndarray:
        """Class probabilities ``(trials, C)`` in the order of :attr:`classes`."""
        return self.model.predict_proba(self._features(spike_counts))


def _logistic_cv_version_kwargs() -> dict[str, Any]:
    """Arguments that pin today's behaviour on scikit-learn versions that change defaults.

    From scikit-learn 1.8 ``LogisticRegressionCV`` warns that the defaults of ``l1_ratios``
    and ``use_legacy_attributes`` will change; an L2 penalty (``l1_ratios=(0.0,)``) is what
    this decoder uses on every version.
    """
    parameters = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" not in parameters:
        return {}
    return {"l1_ratios": (0.0,), "use_legacy_attributes": False}


def fit_logistic_decoder(
    spike_counts: Any,
    labels: Any,
    *,
    Cs: Any = DEFAULT_ALPHAS,
    cv: int = 5,
    seed: int = 0,
    max_iter: int = 2000,
) -> LogisticDecoder:
    """Fit a standardised ``LogisticRegressionCV`` on flattened trial activity ``(trials, T * N)``.

    Args:
        spike_counts: ``(trials, T, N)`` counts.
        labels: ``(trials,)`` categorical labels (e.g. choice, block).
        Cs: inverse-regularisation grid.
        cv: number of stratified folds (shuffled with ``seed``) used to choose C. When the
            rarest class has fewer trials, the number of folds is lowered to its count and a
            warning is logged.
        seed: fold shuffling seed.
        max_iter: solver iterations.
    """
    counts = _float_array(spike_counts, "spike_counts", (3,))  # (trials, T, N)
    targets = np.asarray(labels).reshape(-1)
    if targets.shape[0] != counts.shape[0]:
        raise ValueError(f"{targets.shape[0]} labels for {counts.shape[0]} trials")
    classes, class_counts = np.unique(targets, return_counts=True)
    if classes.size < 2:
        raise ValueError(f"labels must contain at least 2 classes, got {classes.tolist()}")
    folds = min(cv, int(class_counts.min()))
    if folds < 2:
        raise ValueError(
            f"every class needs at least 2 trials for cross-validation; counts: "
            f"{dict(zip(classes.tolist(), class_counts.tolist()))}"
        )
    if folds < cv:
        logger.warning(
            "fit_logistic_decoder: rarest class has %d trials, using %d folds instead of %d",
            class_counts.min(),
            folds,
            cv,
        )
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.asarray(Cs, dtype=np.float64),
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed),
            scoring="accuracy",  # C chosen by accuracy, as in the NEDS baseline
            max_iter=max_iter,
            **_logistic_cv_version_kwargs(),
        ),
    )
    model.fit(counts.reshape(counts.shape[0], -1), targets)
    return LogisticDecoder(model=model, num_bins=counts.shape[1], num_neurons=counts.shape[2])


# ---------------------------------------------------------------------------------------------
# One session's baselines (the demo's table rows)
# ---------------------------------------------------------------------------------------------


def trials_to_arrays(
    trials: Sequence[Mapping[str, Any]], modalities: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """Stack the trial dicts of ONE session into trial-major arrays.

    Returns ``spikes`` (trials, T, N) counts, ``trial_id`` (trials,) and one array per
    behaviour modality of `modalities` (a model config's ``behavior_modalities``): continuous
    ones ``(trials, T)`` in physical units, trial-level categorical ones ``(trials,)``.
    """
    if not trials:
        raise ValueError("no trials to stack")
    arrays = {
        "spikes": np.stack([np.asarray(t["spikes"]).T for t in trials]).astype(np.float64),
        "trial_id": np.array([int(t["trial_id"]) for t in trials]),
    }
    for spec in modalities:
        name = spec["name"]
        if spec["kind"] == "continuous":
            arrays[name] = np.stack([np.asarray(t[name], dtype=np.float64) for t in trials])
        else:
            arrays[name] = np.stack([np.asarray(t[name]).astype(np.int64) for t in trials])
    return arrays


def oracle_expected_counts(
    ground_truth: Mapping[str, Any],
    neurons: Any,
    trial_ids: np.ndarray,
    array: str = "expected_counts",
) -> np.ndarray:
    """True expected spike counts ``(trials, T, N)`` of a session's dataset neurons.

    The oracle row of a table on synthetic data. Dataset neurons are matched to ground-truth
    clusters by ``(probe, cluster_id)`` (the neurons table's columns vs the ground truth's
    ``cluster_probe`` / ``cluster_id``) and trials by ``trial_id`` (a row of the ALF trials
    table = a row of the ground truth). ``array`` names the ground-truth counts:
    ``"expected_counts"`` (the true rates, latents and stimulus included) or
    ``"expected_counts_observed"`` (given what a model of the dataset observes: the fair
    ceiling of an encoder from behaviour).
    """
    if array not in ground_truth:
        raise ValueError(
            f"session {ground_truth['eid']}: the ground truth has no {array!r} array "
            "(written by an older generator? regenerate the corpus)"
        )
    columns = _ground_truth_columns(ground_truth, neurons)
    expected = ground_truth[array]  # (n_trials_alf, C, T)
    if trial_ids.max() >= expected.shape[0]:
        raise ValueError(
            f"session {ground_truth['eid']}: trial_id {trial_ids.max()} beyond the "
            f"{expected.shape[0]} ground-truth trials"
        )
    return expected[trial_ids][:, columns, :].transpose(0, 2, 1)  # (trials, T, N)


def true_neuron_parameters(ground_truth: Mapping[str, Any], neurons: Any) -> np.ndarray:
    """The generator's parameters of a session's dataset neurons, ``(N, 1 + C + K)``: log
    baseline rate (Hz), weights on the C covariates and loadings on the K shared latents.

    What a region probe can read from the true generative model of each neuron: the reference
    row next to the probes on learned embeddings and on fitted features (synthetic data only).
    Neurons are matched to clusters as in :func:`oracle_expected_counts`.
    """
    missing = [
        name
        for name in ("cluster_base_rate_hz", "cluster_covariate_weights", "cluster_latent_loadings")
        if name not in ground_truth
    ]
    if missing:
        raise ValueError(
            f"session {ground_truth['eid']}: the ground truth has no {missing} "
            "(written by an older generator? regenerate the corpus)"
        )
    columns = _ground_truth_columns(ground_truth, neurons)
    log_rate = np.log(np.asarray(ground_truth["cluster_base_rate_hz"])[columns])  # (N,)
    weights = np.asarray(ground_truth["cluster_covariate_weights"])[columns]  # (N, C)
    loadings = np.asarray(ground_truth["cluster_latent_loadings"])[columns]  # (N, K)
    return np.concatenate([log_rate[:, None], weights, loadings], axis=1)


def _ground_truth_columns(ground_truth: Mapping[str, Any], neurons: Any) -> list[int]:
    """Ground-truth cluster index of each dataset neuron, matched by ``(probe, cluster_id)``
    (the neurons table's columns vs the ground truth's ``cluster_probe`` / ``cluster_id``)."""
    cluster_column = {
        (str(probe), int(cluster)): column
        for column, (probe, cluster) in enumerate(
            zip(ground_truth["cluster_probe"], ground_truth["cluster_id"])
        )
    }
    keys = [(str(p), int(c)) for p, c in zip(neurons["probe"], neurons["cluster_id"])]
    missing = [key for key in keys if key not in cluster_column]
    if missing:
        raise ValueError(
            f"session {ground_truth['eid']}: dataset neurons {missing[:5]} have no "
            "ground-truth cluster"
        )
    return [cluster_column[key] for key in keys]


@dataclass
class LinearBaselinePredictions:
    """Test-trial predictions of one session's linear baselines.

    ``encoder_rates`` ``(trials, T, N)`` expected counts of the reduced-rank encoder, and
    ``glm_rates`` those of the Poisson GLM (with the fitted ``glm``) when it was fitted;
    ``decoded`` maps a behaviour to its
    prediction (continuous ``(trials, T)`` in physical units, categorical ``(trials,)``
    labels), without the behaviours a decoder could not be fitted for; ``notes`` say why.
    """

    encoder_rates: np.ndarray
    decoded: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    glm_rates: np.ndarray | None = None
    glm: PoissonGlmEncoder | None = None


def _fill_missing(
    spec: Mapping[str, Any], train: np.ndarray, test: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A continuous behaviour ``(trials, T)`` of the train and test trials with its missing
    entries (NaN where it may be missing) set to its train mean over present entries (0 when
    none is present), so that the encoder can use it; what was filled is noted."""
    train_missing, test_missing = invalid_entries(spec, train), invalid_entries(spec, test)
    if not (train_missing.any() or test_missing.any()):
        return train, test
    fill = float(train[~train_missing].mean()) if (~train_missing).any() else 0.0
    notes.append(
        f"linear encoder: {spec['name']} missing in {int(train_missing.sum())} of "
        f"{train.size} train and {int(test_missing.sum())} of {test.size} test entries, "
        "filled with its train mean"
    )
    return np.where(train_missing, fill, train), np.where(test_missing, fill, test)


def _present_rows(
    spec: Mapping[str, Any], values: np.ndarray, what: str, notes: list[str]
) -> np.ndarray:
    """Train trials ``(trials,)`` whose behaviour `spec` is entirely present (a decoder is fitted
    on them only); the trials left out are noted."""
    missing = invalid_entries(spec, values)
    present = ~missing.reshape(missing.shape[0], -1).any(axis=1)  # (trials,)
    if not present.all():
        notes.append(
            f"{what} {spec['name']} decoder fitted on the {int(present.sum())} of "
            f"{present.size} train trials where it is present"
        )
    return present


def fit_linear_baselines(
    train: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    modalities: Sequence[Mapping[str, Any]],
    seed: int,
    poisson_glm: bool = False,
) -> LinearBaselinePredictions:
    """Fit the reduced-rank encoder and the ridge / logistic decoders on one session's train
    trials (arrays of :func:`trials_to_arrays`) and predict its test trials.

    The encoder maps the continuous behaviours (and the trial-level labels, unless the test
    trials hold a label value the training trials lack) to counts; each continuous behaviour
    gets a ridge decoder, each trial-level label a logistic decoder. With `poisson_glm`, a
    Poisson GLM encoder (:func:`fit_poisson_glm_encoder`) on the same inputs too. A decoder
    that cannot be fitted (e.g. one class in the training trials) is reported in the notes
    and left out. Missing entries of a behaviour with ``allow_missing`` are filled with its
    train mean for the encoders and left out of its decoder's training trials (both noted);
    scoring skips them.
    """
    specs = {s["name"]: s for s in modalities}
    continuous = [s["name"] for s in modalities if s["kind"] == "continuous"]
    labels = [s["name"] for s in modalities if s["kind"] == "categorical" and s["trial_level"]]
    notes: list[str] = []
    labels_train = np.stack([train[n] for n in labels], axis=-1) if labels else None  # (n, L)
    labels_test = np.stack([test[n] for n in labels], axis=-1) if labels else None
    unseen = [
        name
        for column, name in enumerate(labels)
        if np.setdiff1d(labels_test[:, column], labels_train[:, column]).size
    ]
    if unseen:
        notes.append(
            f"linear encoder fitted without trial labels: test trials have {unseen} "
            "values absent from the training trials"
        )
        labels_train = labels_test = None
    filled = [_fill_missing(specs[n], train[n], test[n], notes) for n in continuous]
    behaviours_train = np.stack([pair[0] for pair in filled], axis=-1)  # (n, T, B)
    behaviours_test = np.stack([pair[1] for pair in filled], axis=-1)  # (n', T, B)
    encoder = fit_linear_encoder(
        behaviours_train, train["spikes"], trial_labels=labels_train, method="rrr"
    )
    result = LinearBaselinePredictions(
        encoder_rates=encoder.predict_rates(behaviours_test, labels_test),  # (n, T, N)
        notes=notes,
    )
    if poisson_glm:
        result.glm = fit_poisson_glm_encoder(
            behaviours_train, train["spikes"], trial_labels=labels_train
        )
        result.glm_rates = result.glm.predict_rates(behaviours_test, labels_test)  # (n, T, N)
    for name in continuous:
        rows = _present_rows(specs[name], train[name], "ridge", notes)
        if rows.sum() < 2:
            notes.append(f"ridge {name} decoder not fitted: fewer than 2 train trials have it")
            continue
        decoder = fit_ridge_decoder(train["spikes"][rows], train[name][rows])
        result.decoded[name] = decoder.predict(test["spikes"])  # (n, T), physical units
    for name in labels:
        rows = _present_rows(specs[name], train[name], "logistic", notes)
        try:
            classifier = fit_logistic_decoder(train["spikes"][rows], train[name][rows], seed=seed)
        except ValueError as error:
            notes.append(f"logistic {name} decoder not fitted: {error}")
            continue
        result.decoded[name] = classifier.predict(test["spikes"])  # (n,)
    return result
