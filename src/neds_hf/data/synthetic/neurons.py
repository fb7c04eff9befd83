"""The neurons of a synthetic session: probe geometry, units, rates, spikes and expected counts."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .pose import ACTION_TUNING_STREAM
from .signals import COVARIATE_NAMES
from .spec import SyntheticSessionSpec

__all__ = [
    "ALLEN_IDS",
    "COSMOS_OF_BERYL",
    "N_CHANNELS",
    "PROBE_LAYOUT",
    "REGION_TUNING",
    "SyntheticProbe",
    "action_weights",
    "expected_counts",
    "simulate_probe",
]

#: Number of channels of a Neuropixels 1.0 probe.
N_CHANNELS = 384

#: Channel ranges of the simulated insertion, from the tip (channel 0) upwards:
#: ``(first_channel, stop_channel, Allen acronym, Beryl region of the units placed there or
#: None where no unit is placed)``. The Allen ids of these acronyms are in :data:`ALLEN_IDS`.
PROBE_LAYOUT = (
    (0, 60, "PO", "PO"),
    (60, 120, "LP", "LP"),
    (120, 130, "dhc", None),
    (130, 140, "DG-po", "DG"),
    (140, 150, "DG-sg", "DG"),
    (150, 170, "DG-mo", "DG"),
    (170, 180, "CA1slm", "CA1"),
    (180, 190, "CA1sr", "CA1"),
    (190, 200, "CA1sp", "CA1"),
    (200, 210, "CA1so", "CA1"),
    (210, 220, "alv", None),
    (220, 230, "VISa6b", "VISa"),
    (230, 250, "VISa6a", "VISa"),
    (250, 280, "VISa5", "VISa"),
    (280, 300, "VISa4", "VISa"),
    (300, 340, "VISa2/3", "VISa"),
    (340, 360, "VISa1", "VISa"),
    (360, 384, "void", None),
)

#: Allen CCF ids of the acronyms in :data:`PROBE_LAYOUT` (``iblatlas.regions.BrainRegions``).
ALLEN_IDS = {
    "PO": 1020,
    "LP": 218,
    "dhc": 443,
    "DG-po": 10704,
    "DG-sg": 632,
    "DG-mo": 10703,
    "CA1slm": 391,
    "CA1sr": 415,
    "CA1sp": 407,
    "CA1so": 399,
    "alv": 466,
    "VISa6b": 312782570,
    "VISa6a": 312782566,
    "VISa5": 312782562,
    "VISa4": 312782558,
    "VISa2/3": 312782554,
    "VISa1": 312782550,
    "void": 0,
}

#: Beryl region -> Cosmos region of the unit-bearing regions.
COSMOS_OF_BERYL = {"PO": "TH", "LP": "TH", "DG": "HPF", "CA1": "HPF", "VISa": "Isocortex"}

#: Region tuning magnitudes to :data:`COVARIATE_NAMES` (log-rate per unit of covariate).
REGION_TUNING = {
    "VISa": (0.15, 0.15, 0.20, 0.15, 0.60, 0.80),
    "CA1": (0.45, 0.20, 0.30, 0.25, 0.10, 0.20),
    "DG": (0.30, 0.20, 0.20, 0.35, 0.10, 0.15),
    "LP": (0.45, 0.50, 0.20, 0.10, 0.30, 0.45),
    "PO": (0.35, 0.70, 0.25, 0.10, 0.10, 0.25),
}

#: Labs the synthetic sessions are attributed to (cycled by session index).


@dataclass
class SyntheticProbe:
    """Spike sorting and channels of one probe, as written to ALF (row ``i`` = cluster ``i``)."""

    name: str
    sorter: str
    spike_times: np.ndarray  # (n_spikes,) float64, s, sorted
    spike_clusters: np.ndarray  # (n_spikes,) uint16
    spike_amps: np.ndarray  # (n_spikes,) float32, V
    spike_depths: np.ndarray  # (n_spikes,) float32, µm from the tip
    cluster_channels: np.ndarray  # (n_clusters,) int64
    cluster_depths: np.ndarray  # (n_clusters,) float64, µm
    cluster_metrics: pd.DataFrame  # n_clusters rows
    cluster_uuids: list[str]
    channel_allen_ids: np.ndarray  # (384,) int64
    channel_mlapdv: np.ndarray  # (384, 3) float64, µm from bregma
    channel_local_coordinates: np.ndarray  # (384, 2) float64, [lateral, axial] µm
    has_spike_sorting: bool = True

    @property
    def n_clusters(self) -> int:
        """Number of clusters (rows of the clusters tables)."""
        return len(self.cluster_channels)

    def collection(self) -> str:
        """ALF collection of the spike sorting, e.g. ``alf/probe00/pykilosort``."""
        return f"alf/{self.name}/{self.sorter}" if self.sorter else f"alf/{self.name}"


def _probe_geometry(rng: np.random.Generator, probe_index: int) -> dict[str, np.ndarray]:
    """Channel Allen ids, local coordinates and mlapdv of a repeated-site-like insertion."""
    channels = np.arange(N_CHANNELS)
    allen_ids = np.zeros(N_CHANNELS, dtype=np.int64)
    for first, stop, acronym, _ in PROBE_LAYOUT:
        allen_ids[first:stop] = ALLEN_IDS[acronym]
    lateral = np.array([43.0, 11.0, 59.0, 27.0])[channels % 4]
    axial = 20.0 * (channels // 2) + 20.0
    local = np.stack([lateral, axial], axis=1)  # (384, 2)
    # Insertion near the repeated site (ML -2243, AP -2000 µm), 15 degrees from vertical; the
    # brain surface lies at the first "void" channel.
    theta = math.radians(15.0)
    surface_axial = axial[PROBE_LAYOUT[-1][0]]
    entry_ml = -2243.0 + 400.0 * probe_index + rng.normal(0.0, 20.0)
    entry_ap = -2000.0 - 300.0 * probe_index + rng.normal(0.0, 20.0)
    distance = surface_axial - axial  # µm below the surface along the shank
    mlapdv = np.stack(
        [
            entry_ml + distance * math.sin(theta) + (lateral - 35.0),
            np.full(N_CHANNELS, entry_ap),
            -distance * math.cos(theta),
        ],
        axis=1,
    )  # (384, 3)
    return {"allen_ids": allen_ids, "local": local, "mlapdv": mlapdv}


def _place_units(rng: np.random.Generator, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak channel and Beryl region of each unit, spread over the unit-bearing regions."""
    regions = list(REGION_TUNING)
    region_of_unit = np.array([regions[k % len(regions)] for k in range(n_units)])
    rng.shuffle(region_of_unit)
    channels = np.empty(n_units, dtype=np.int64)
    for region in regions:
        candidates = np.concatenate(
            [np.arange(a, b) for a, b, _, beryl in PROBE_LAYOUT if beryl == region]
        )
        mask = region_of_unit == region
        channels[mask] = rng.choice(candidates, size=int(mask.sum()))
    return channels, region_of_unit


def _cluster_metrics(
    rng: np.random.Generator,
    spike_counts: np.ndarray,
    amplitudes_v: np.ndarray,
    duration: float,
) -> pd.DataFrame:
    """An IBL ``clusters.metrics`` table (label = fraction of the 3 QC tests passed)."""
    n = len(spike_counts)
    failed = rng.random((n, 3)) < np.array([0.15, 0.2, 0.1])  # (n, 3): amp, RP, noise cutoff
    bitwise = (failed * np.array([1, 2, 4])).sum(axis=1).astype(np.uint8)
    label = (3 - failed.sum(axis=1)) / 3.0
    amp_db = 20.0 * np.log10(amplitudes_v / 1e-6)
    return pd.DataFrame(
        {
            "cluster_id": np.arange(n, dtype=np.int64),
            "amp_max": amplitudes_v * 1.6,
            "amp_min": amplitudes_v * 0.5,
            "amp_median": amplitudes_v,
            "amp_std_dB": rng.uniform(1.0, 4.0, n),
            "contamination": rng.uniform(0.0, 0.3, n),
            "contamination_alt": rng.uniform(0.0, 0.3, n),
            "drift": rng.uniform(0.0, 30.0, n),
            "missed_spikes_est": rng.uniform(0.0, 0.2, n),
            "noise_cutoff": np.where(failed[:, 2], rng.uniform(5, 20, n), rng.uniform(0, 4, n)),
            "presence_ratio": rng.uniform(0.7, 1.0, n),
            "presence_ratio_std": rng.uniform(0.0, 0.5, n),
            "slidingRP_viol": failed[:, 1].astype(np.float64),
            "spike_count": spike_counts.astype(np.float64),
            "firing_rate": spike_counts / duration,
            "label": label,
            "bitwise_fail": bitwise,
            "ks2_label": np.where(amp_db > 42.0, "good", "mua"),
        }
    )


def _unit_tuning(
    rng: np.random.Generator,
    spec: SyntheticSessionSpec,
    beryl: np.ndarray,
    region_loadings: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Baseline rate ``(N,)`` Hz, covariate weights ``(N, 6)`` and latent loadings ``(N, K)``
    of the units; a ``low_rate_fraction`` of them fire below 1 Hz at baseline."""
    n_units = len(beryl)
    n_covariates = len(COVARIATE_NAMES)
    n_low = round(spec.low_rate_fraction * n_units)
    base_rate = np.exp(rng.uniform(np.log(3.0), np.log(40.0), n_units))
    base_rate[rng.permutation(n_units)[:n_low]] = rng.uniform(0.2, 1.0, n_low)
    tuning = np.stack([REGION_TUNING[r] for r in beryl]) * np.asarray(
        spec.preset_parameters.covariate_gain
    )  # (N, 6)
    signs = np.where(rng.random((n_units, n_covariates)) < 0.5, -1.0, 1.0)
    signs[:, [0, 1, 5]] = np.where(rng.random((n_units, 3)) < 0.85, 1.0, -1.0)
    weights = tuning * signs * rng.uniform(0.5, 1.5, (n_units, n_covariates))
    loadings = np.stack([region_loadings[r] for r in beryl]) + rng.normal(
        0.0, 0.15, (n_units, spec.n_latents)
    )  # (N, K)
    return base_rate, weights, loadings


def _poisson_spikes(
    rng: np.random.Generator, rates: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inhomogeneous Poisson spikes of piecewise-constant ``rates`` ``(N, G)``:
    sorted spike times ``(S,)`` and the unit of each spike ``(S,)``."""
    counts = rng.poisson(rates * dt)  # (N, G)
    unit_index, grid_index = np.nonzero(counts)
    repeats = counts[unit_index, grid_index]
    unit_of_spike = np.repeat(unit_index, repeats)
    spike_times = (np.repeat(grid_index, repeats) + rng.random(repeats.sum())) * dt
    order = np.argsort(spike_times, kind="stable")
    return spike_times[order], unit_of_spike[order]


def expected_counts(
    rates: np.ndarray, edges: np.ndarray, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """Expected spike counts ``(n, N, T)`` on the trial bins ``edges`` ``(n, T+1)`` (exact
    integral of the piecewise-constant ``rates`` ``(N, G)``) and mean rates ``(N,)`` Hz."""
    n_units, n_grid = rates.shape
    cumulative = np.concatenate(
        [np.zeros((n_units, 1)), np.cumsum(rates * dt, axis=1)], axis=1
    )  # (N, G+1)
    flat_edges = edges.ravel()
    cell = np.clip(np.floor(flat_edges / dt).astype(np.int64), 0, n_grid - 1)
    fraction = flat_edges / dt - cell
    integral_at_edges = cumulative[:, cell] + fraction * rates[:, cell] * dt  # (N, n*(T+1))
    integral_at_edges = integral_at_edges.reshape(n_units, *edges.shape)
    expected = np.diff(integral_at_edges, axis=2).transpose(1, 0, 2)  # (n, N, T)
    return expected, cumulative[:, -1] / (n_grid * dt)


def simulate_probe(
    rng: np.random.Generator,
    spec: SyntheticSessionSpec,
    probe_index: int,
    eid: str,
    signals: dict[str, Any],
    region_loadings: dict[str, np.ndarray],
) -> tuple[SyntheticProbe, dict[str, np.ndarray]]:
    """One probe's units, spikes and spike sorting, and its per-cluster ground truth.

    ``signals`` holds the ``covariates`` ``(6, G)``, ``latents`` ``(K, G)``, the trial bin
    ``edges`` ``(n, T+1)`` and the grid step ``dt``, and, with ``spec.action_tuning``, the
    one-hot pose ``actions`` ``(A, G)`` (weights from their own generator, :func:`action_weights`).
    """
    probe_name = spec.probe_names()[probe_index]
    dt = signals["dt"]
    geometry = _probe_geometry(rng, probe_index)
    n_units = spec.n_neurons_per_probe
    channels, beryl = _place_units(rng, n_units)
    base_rate, weights, loadings = _unit_tuning(rng, spec, beryl, region_loadings)
    drive = weights @ signals["covariates"] + loadings @ signals["latents"]  # (N, G)
    tuned_to_actions = "actions" in signals
    if tuned_to_actions:
        unit_action_weights = action_weights(spec, probe_index, len(signals["actions"]))
        drive += unit_action_weights @ signals["actions"]  # (N, A) @ (A, G)
    drive_centre = drive.mean(axis=1)  # (N,)
    drive -= drive_centre[:, None]
    rates = base_rate[:, None] * np.exp(np.clip(drive, -4.0, 3.0))  # (N, G) Hz
    del drive
    spike_times, unit_of_spike = _poisson_spikes(rng, rates, dt)
    expected, mean_rate = expected_counts(rates, signals["edges"], dt)
    n_grid = rates.shape[1]
    del rates
    cluster_depths = geometry["local"][channels, 1] + rng.normal(0.0, 8.0, n_units)
    amplitudes = np.exp(rng.uniform(np.log(4e-5), np.log(3e-4), n_units))  # V
    spike_amps = (
        amplitudes[unit_of_spike] * np.exp(rng.normal(0.0, 0.15, len(spike_times)))
    ).astype(np.float32)
    spike_depths = (cluster_depths[unit_of_spike] + rng.normal(0.0, 6.0, len(spike_times))).astype(
        np.float32
    )
    uuids = [str(uuid.uuid5(uuid.UUID(eid), f"{probe_name}/cluster/{k}")) for k in range(n_units)]
    spikes_per_unit = np.bincount(unit_of_spike, minlength=n_units)
    probe = SyntheticProbe(
        name=probe_name,
        sorter=spec.sorter_of(probe_index),
        spike_times=spike_times.astype(np.float64),
        spike_clusters=unit_of_spike.astype(np.uint16),
        spike_amps=spike_amps,
        spike_depths=spike_depths,
        cluster_channels=channels,
        cluster_depths=cluster_depths,
        cluster_metrics=_cluster_metrics(rng, spikes_per_unit, amplitudes, n_grid * dt),
        cluster_uuids=uuids,
        channel_allen_ids=geometry["allen_ids"],
        channel_mlapdv=geometry["mlapdv"],
        channel_local_coordinates=geometry["local"],
    )
    allen_id = geometry["allen_ids"][channels]
    acronym_of_id = {value: key for key, value in ALLEN_IDS.items()}
    truth = {
        "probe": np.full(n_units, probe_name),
        "id": np.arange(n_units, dtype=np.int64),
        "uuid": np.array(uuids),
        "channel": channels,
        "depth": cluster_depths,
        "allen_id": allen_id,
        "allen": np.array([acronym_of_id[a] for a in allen_id]),
        "beryl": beryl,
        "cosmos": np.array([COSMOS_OF_BERYL[b] for b in beryl]),
        "base": base_rate,
        "mean": mean_rate,
        "weights": weights,
        "loadings": loadings,
        "expected": expected,
        "drive_centre": drive_centre,
    }
    if tuned_to_actions:
        truth["action_weights"] = unit_action_weights
    return probe, truth


def action_weights(spec: SyntheticSessionSpec, probe_index: int, n_actions: int) -> np.ndarray:
    """Log-rate weights ``(N, A)`` of a probe's units on the one-hot pose actions: half of the
    units (chosen at random) get normal weights of standard deviation ``spec.action_tuning``,
    the others none. Drawn from their own generator so the rest of the session is unchanged."""
    rng = np.random.default_rng([spec.seed, spec.index, ACTION_TUNING_STREAM, probe_index])
    n_units = spec.n_neurons_per_probe
    tuned = rng.permutation(n_units) < (n_units + 1) // 2
    weights = rng.normal(0.0, spec.action_tuning, (n_units, n_actions))
    return weights * tuned[:, None]
