"""Benchmark: preprocessing time of a 1e7-spike session, by stage, against a naive baseline.

A synthetic session is generated in memory (no files, so no loading time): 1e7 spikes over
4000 s from 500 clusters, 400 trials, an irregularly sampled wheel and 60 Hz motion energy.
Each stage of :func:`neds_hf.data.preprocess.preprocess_session` is timed on its own (best of
``--repeats``), then the whole function; binning throughput is given in spikes of the session
per second, and the binning kernel is compared with a per-trial ``np.histogram2d`` baseline run
in the same process.

    PYTHONPATH=src python benchmarks/bench_preprocess.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from neds_hf.data.preprocess import (
    PreprocessingConfig,
    bin_sample_times,
    bin_spikes,
    preprocess_session,
    wheel_velocity,
)
from neds_hf.data.raw import RawSession


def make_session(
    n_spikes: int = 10_000_000,
    duration_s: float = 4000.0,
    n_clusters: int = 500,
    n_trials: int = 400,
    seed: int = 0,
) -> RawSession:
    """A large in-memory session with IBL-like array types (uint16 spike clusters)."""
    rng = np.random.default_rng(seed)
    spike_times = np.sort(rng.uniform(0.0, duration_s, n_spikes))
    spike_clusters = rng.integers(0, n_clusters, n_spikes).astype(np.uint16)
    stim_on = np.sort(rng.uniform(5.0, duration_s - 5.0, n_trials))
    trials = pd.DataFrame(
        {
            "stimOn_times": stim_on,
            "goCue_times": stim_on + 0.01,
            "firstMovement_times": stim_on + rng.uniform(0.1, 0.6, n_trials),
            "feedback_times": stim_on + rng.uniform(0.7, 1.2, n_trials),
            "choice": rng.choice([-1.0, 1.0], n_trials),
            "feedbackType": rng.choice([-1.0, 1.0], n_trials),
            "probabilityLeft": rng.choice([0.2, 0.5, 0.8], n_trials),
            "contrastLeft": np.nan,
            "contrastRight": 0.25,
            "rewardVolume": 1.5,
        }
    )
    clusters = pd.DataFrame(
        {
            "probe": "probe00",
            "cluster_id": np.arange(n_clusters),
            "cluster_uuid": [f"uuid-{i}" for i in range(n_clusters)],
            "region_allen": "CA1",
            "region_beryl": "CA1",
            "region_cosmos": "HPF",
            "depth_um": np.linspace(0, 3800, n_clusters),
            "x_um": 0.0,
            "y_um": 0.0,
            "z_um": 0.0,
            "qc_label": 1.0,
        }
    )
    wheel_timestamps = np.sort(rng.uniform(0.0, duration_s, 400_000))  # encoder ticks
    wheel_position = np.cumsum(rng.choice([-1.0, 1.0], wheel_timestamps.size)) * 2 * np.pi / 4096
    motion_energy_times = np.arange(0.0, duration_s, 1 / 60)
    return RawSession(
        session_id="benchmark-session",
        subject="bench",
        lab="bench",
        date="2024-01-01",
        probes=["probe00"],
        spike_times=spike_times,
        spike_clusters=spike_clusters,
        clusters=clusters,
        trials=trials,
        wheel_timestamps=wheel_timestamps,
        wheel_position=wheel_position,
        motion_energy_times=motion_energy_times,
        motion_energy=rng.gamma(2.0, 1.0, motion_energy_times.size),
    )


def histogram2d_binning(
    spike_times: np.ndarray,
    spike_clusters: np.ndarray,
    window_starts: np.ndarray,
    n_clusters: int,
    n_bins: int,
    bin_size: float,
) -> np.ndarray:
    """Baseline: the window's spikes (searchsorted slice) binned by ``np.histogram2d``."""
    counts = np.zeros((len(window_starts), n_clusters, n_bins), dtype=np.int64)
    cluster_edges = np.arange(n_clusters + 1) - 0.5
    first = np.searchsorted(spike_times, window_starts)
    end = np.searchsorted(spike_times, window_starts + n_bins * bin_size)
    for trial, (t0, i0, i1) in enumerate(zip(window_starts, first, end)):
        time_edges = t0 + np.arange(n_bins + 1) * bin_size
        counts[trial], _, _ = np.histogram2d(
            spike_clusters[i0:i1], spike_times[i0:i1], bins=(cluster_edges, time_edges)
        )
    return counts


def best_time(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best wall time over ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = PreprocessingConfig()
    raw = make_session()
    n_spikes = len(raw.spike_times)
    starts = raw.trials["stimOn_times"].to_numpy() + config.window[0]
    n_bins, bin_size = config.n_bins, config.bin_size

    binning, counts = best_time(
        lambda: bin_spikes(
            raw.spike_times, raw.spike_clusters, starts, raw.n_clusters, n_bins, bin_size
        ),
        args.repeats,
    )
    wheel, (grid, velocity) = best_time(
        lambda: wheel_velocity(
            raw.wheel_timestamps,
            raw.wheel_position,
            config.wheel_fs,
            config.wheel_filter_order,
            config.wheel_corner_hz,
        ),
        args.repeats,
    )
    sample_times = bin_sample_times(starts, n_bins, bin_size, config.behavior_sampling)
    sampling, _ = best_time(
        lambda: (
            np.abs(np.interp(sample_times, grid, velocity)),
            np.interp(sample_times, raw.motion_energy_times, raw.motion_energy),
        ),
        args.repeats,
    )
    total, session = best_time(lambda: preprocess_session(raw, config), args.repeats)
    baseline, baseline_counts = best_time(
        lambda: histogram2d_binning(
            raw.spike_times, raw.spike_clusters, starts, raw.n_clusters, n_bins, bin_size
        ),
        args.repeats,
    )
    in_windows = int(counts.sum())
    assert in_windows == int(baseline_counts.sum()), "baseline and kernel disagree"

    print(
        f"session: {n_spikes:.2e} spikes, {raw.n_clusters} clusters, {len(starts)} trials, "
        f"T={n_bins}, {in_windows:.2e} spikes in windows; kept {session.n_trials} trials x "
        f"{session.n_neurons} neurons; best of {args.repeats}"
    )
    rows = [
        ("binning (searchsorted + bincount, uint16)", binning, n_spikes / binning),
        ("wheel (1 kHz interp + Butterworth + gradient)", wheel, None),
        ("behaviour sampling (wheel + motion energy)", sampling, None),
        ("total preprocess_session", total, n_spikes / total),
        ("baseline binning (np.histogram2d per trial)", baseline, n_spikes / baseline),
    ]
    print(f"| {'stage':<46} | {'time (ms)':>10} | {'spikes/s':>10} |")
    print(f"|{'-' * 48}|{'-' * 12}|{'-' * 12}|")
    for name, seconds, rate in rows:
        rate_text = f"{rate:.2e}" if rate is not None else ""
        print(f"| {name:<46} | {seconds * 1e3:>10.1f} | {rate_text:>10} |")
    print(f"binning speed-up over the histogram2d baseline: {baseline / binning:.1f}x")


if __name__ == "__main__":
    main()
