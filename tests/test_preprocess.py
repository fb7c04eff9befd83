"""Tests of neds_hf.data.preprocess on hand-made RawSession objects (no files, no ONE)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neds_hf.data.preprocess import (
    EXCLUSION_REASONS,
    EmptySessionError,
    PreprocessingConfig,
    bin_spikes,
    preprocess_session,
    split_assignment,
    wheel_velocity,
)
from neds_hf.data.raw import RawSession

TRIAL_SPACING = 3.0  # s between consecutive stimOn times
FIRST_STIM_ON = 2.0  # s
WHEEL_AMPLITUDE = 0.8  # rad
WHEEL_FREQUENCY = 1.5  # Hz, far below the 20 Hz corner
ME_SLOPE, ME_OFFSET = 3.0, 1.0  # motion energy = slope * t + offset (linear: interpolation exact)


def make_trials(n_trials: int, rng: np.random.Generator) -> pd.DataFrame:
    """A clean ALF-like trials table: every trial passes the IBL exclusion query."""
    stim_on = FIRST_STIM_ON + TRIAL_SPACING * np.arange(n_trials)
    return pd.DataFrame(
        {
            "stimOn_times": stim_on,
            "goCue_times": stim_on + 0.01,
            "firstMovement_times": stim_on + rng.uniform(0.1, 0.5, n_trials),
            "feedback_times": stim_on + rng.uniform(0.6, 0.9, n_trials),
            "choice": rng.choice([-1.0, 1.0], n_trials),
            "feedbackType": rng.choice([-1.0, 1.0], n_trials),
            "probabilityLeft": rng.choice([0.2, 0.5, 0.8], n_trials),
            "contrastLeft": np.where(np.arange(n_trials) % 2 == 0, 0.25, np.nan),
            "contrastRight": np.where(np.arange(n_trials) % 2 == 0, np.nan, 0.125),
            "rewardVolume": 1.5,
        }
    )


def make_clusters(n_clusters: int, qc_label: np.ndarray | None = None) -> pd.DataFrame:
    """Clusters table with distinct, recognisable values per row."""
    return pd.DataFrame(
        {
            "probe": ["probe00" if i % 2 == 0 else "probe01" for i in range(n_clusters)],
            "cluster_id": np.arange(n_clusters) // 2,
            "cluster_uuid": [f"uuid-{i:04d}" for i in range(n_clusters)],
            "region_allen": ["CA1"] * n_clusters,
            "region_beryl": [["CA1", "PO", "LP"][i % 3] for i in range(n_clusters)],
            "region_cosmos": ["HPF"] * n_clusters,
            "depth_um": 20.0 * np.arange(n_clusters),
            "x_um": 1.0 * np.arange(n_clusters),
            "y_um": 2.0 * np.arange(n_clusters),
            "z_um": 3.0 * np.arange(n_clusters),
            "qc_label": np.ones(n_clusters) if qc_label is None else qc_label,
        }
    )


def make_raw_session(
    session_id: str = "session-a",
    n_trials: int = 20,
    n_clusters: int = 6,
    rate_hz: float = 30.0,
    seed: int = 0,
    trials: pd.DataFrame | None = None,
    spike_times: np.ndarray | None = None,
    spike_clusters: np.ndarray | None = None,
    clusters: pd.DataFrame | None = None,
) -> RawSession:
    """A small session: Poisson spikes, sinusoidal wheel, linear motion energy."""
    rng = np.random.default_rng(seed)
    trials = make_trials(n_trials, rng) if trials is None else trials
    duration = FIRST_STIM_ON + TRIAL_SPACING * len(trials) + 2.0
    if spike_times is None:
        n_spikes = rng.poisson(rate_hz * duration * n_clusters)
        spike_times = np.sort(rng.uniform(0.0, duration, n_spikes))
        spike_clusters = rng.integers(0, n_clusters, n_spikes)
    # irregular wheel timestamps: a 1.2 kHz grid with +-40 % jitter
    n_wheel = int(duration * 1200)
    jitter = rng.uniform(-0.4, 0.4, n_wheel + 1) / 1200
    wheel_timestamps = np.clip(np.arange(n_wheel + 1) / 1200 + jitter, 0.0, duration)
    wheel_position = WHEEL_AMPLITUDE * np.sin(2 * np.pi * WHEEL_FREQUENCY * wheel_timestamps)
    motion_energy_times = np.arange(0.0, duration, 1 / 60)
    return RawSession(
        session_id=session_id,
        subject="SWC_001",
        lab="swclab",
        date="2022-03-01",
        probes=["probe00", "probe01"],
        spike_times=spike_times,
        spike_clusters=spike_clusters,
        clusters=make_clusters(n_clusters) if clusters is None else clusters,
        trials=trials,
        wheel_timestamps=wheel_timestamps,
        wheel_position=wheel_position,
        motion_energy_times=motion_energy_times,
        motion_energy=ME_SLOPE * motion_energy_times + ME_OFFSET,
        metadata={"probes": {"probe00": {"revision": "2024-05-06"}}},
    )


def brute_force_counts(times, clusters, starts, n_clusters, n_bins, bin_size):
    """Loop over spikes and bins: bin k of a trial is [t0 + k*dt, t0 + (k+1)*dt)."""
    counts = np.zeros((len(starts), n_clusters, n_bins), dtype=np.int64)
    for trial, t0 in enumerate(starts):
        for time, cluster in zip(times, clusters):
            for k in range(n_bins):
                if t0 + k * bin_size <= time < t0 + (k + 1) * bin_size:
                    counts[trial, cluster, k] += 1
    return counts


# ------------------------------------------------------------------------------------------
# Binning
# ------------------------------------------------------------------------------------------


def test_bin_spikes_matches_brute_force_including_edges():
    rng = np.random.default_rng(1)
    n_clusters, n_bins, bin_size = 4, 15, 0.02
    starts = np.array([0.3, 0.55, 1.0 / 3.0, 2.1])  # overlapping windows, non-round starts
    random_times = rng.uniform(0.0, 2.6, 400)
    # spikes exactly on bin edges (as float64 evaluates them), the window start and end
    edge_times = np.array([t0 + k * bin_size for t0 in starts for k in range(n_bins + 1)])
    times = np.sort(np.concatenate([random_times, edge_times, edge_times]))
    clusters = rng.integers(0, n_clusters, len(times)).astype(np.uint16)
    counts = bin_spikes(times, clusters, starts, n_clusters, n_bins, bin_size)
    expected = brute_force_counts(times, clusters, starts, n_clusters, n_bins, bin_size)
    assert counts.dtype == np.uint16 and counts.shape == (4, n_clusters, n_bins)
    np.testing.assert_array_equal(counts, expected)
    # every edge spike inside a window was counted (the end edge belongs to the next window)
    assert counts.sum() == expected.sum() > len(random_times) // 2


def test_n_bins_rounds_instead_of_ceil():
    assert PreprocessingConfig().n_bins == 100
    assert (0.2 - -0.1) / 0.1 > 3  # float division lands above 3: ceil would give 4
    assert PreprocessingConfig(window=(-0.1, 0.2), bin_size=0.1).n_bins == 3
    with pytest.raises(ValueError, match="whole number of bins"):
        PreprocessingConfig(window=(0.0, 1.05), bin_size=0.1)


def test_preprocessed_spikes_equal_brute_force_for_kept_neurons():
    rng = np.random.default_rng(3)
    duration = FIRST_STIM_ON + TRIAL_SPACING * 10 + 2.0
    cluster_rates = [0.3, 0.8, 3.0, 6.0, 10.0]  # Hz
    per_cluster = [
        np.sort(rng.uniform(0, duration, rng.poisson(r * duration))) for r in cluster_rates
    ]
    times = np.concatenate(per_cluster)
    clusters = np.concatenate([np.full(len(t), c) for c, t in enumerate(per_cluster)])
    order = np.argsort(times, kind="stable")
    raw = make_raw_session(
        n_trials=10, n_clusters=5, spike_times=times[order], spike_clusters=clusters[order], seed=3
    )
    config = PreprocessingConfig(window=(-0.2, 0.3), bin_size=0.05, min_firing_rate=1.0)
    session = preprocess_session(raw, config)
    starts = raw.trials["stimOn_times"].to_numpy() - 0.2
    expected = brute_force_counts(raw.spike_times, raw.spike_clusters, starts, 5, 10, 0.05)
    rates = expected.sum(axis=(0, 2)) / (10 * 0.5)  # Hz over the 10 windows of 0.5 s
    kept_rows = np.flatnonzero(rates > 1.0)
    assert 0 < len(kept_rows) < 5  # the filter keeps some clusters and drops others
    assert session.spikes.shape == (10, len(kept_rows), 10)  # (trials, N, T) neuron-major
    np.testing.assert_array_equal(session.spikes, expected[:, kept_rows, :])
    np.testing.assert_allclose(session.neurons["firing_rate_hz"], rates[kept_rows])
    expected_uuids = [f"uuid-{i:04d}" for i in kept_rows]
    assert session.neurons["cluster_uuid"].tolist() == expected_uuids


# ------------------------------------------------------------------------------------------
# Behaviour
# ------------------------------------------------------------------------------------------


def test_wheel_speed_matches_analytic_speed():
    raw = make_raw_session(n_trials=10, seed=4)
    session = preprocess_session(raw, PreprocessingConfig())
    sample_times = session.stim_on_time[:, None] - 0.5 + (np.arange(100) + 0.5) * 0.02
    omega = 2 * np.pi * WHEEL_FREQUENCY
    analytic = np.abs(WHEEL_AMPLITUDE * omega * np.cos(omega * sample_times))  # (K, T)
    # Windows lie >= 1.5 s from the recording ends, so filter edge effects are gone. What is
    # left comes from linear interpolation of the jittered samples and float32 storage
    # (measured ~2e-4 rad/s); the tolerance, 1e-3 rad/s, is 0.013 % of the 7.5 rad/s peak.
    np.testing.assert_allclose(session.wheel_speed, analytic, atol=1e-3)
    assert session.wheel_speed.dtype == np.float32
    assert session.wheel_speed.max() > 7.0  # the test covers the full speed range


def test_wheel_velocity_lowpass_removes_high_frequency():
    times = np.linspace(0.0, 20.0, 20_001)
    slow, fast = np.sin(2 * np.pi * 1.0 * times), 0.01 * np.sin(2 * np.pi * 150.0 * times)
    grid, velocity = wheel_velocity(times, slow + fast, fs=1000, order=8, corner_hz=20.0)
    middle = (grid > 2) & (grid < 18)
    analytic = 2 * np.pi * np.cos(2 * np.pi * grid[middle])
    # 150 Hz component (velocity amplitude 9.4 rad/s) is attenuated by > 1e6 by the filter
    np.testing.assert_allclose(velocity[middle], analytic, atol=5e-4)


@pytest.mark.parametrize("sampling, offset", [("center", 0.5), ("right_edge", 1.0)])
def test_motion_energy_sampled_at_bin_centres_or_right_edges(sampling, offset):
    raw = make_raw_session(n_trials=5, seed=5)
    session = preprocess_session(raw, PreprocessingConfig(behavior_sampling=sampling))
    sample_times = session.stim_on_time[:, None] - 0.5 + (np.arange(100) + offset) * 0.02
    expected = ME_SLOPE * sample_times + ME_OFFSET  # linear, so interpolation is exact
    np.testing.assert_allclose(session.whisker_motion_energy, expected, rtol=1e-6)
    other = 1.5 - offset  # the other convention is half a bin away: 0.03 units
    wrong = ME_SLOPE * (session.stim_on_time[:, None] - 0.5 + (np.arange(100) + other) * 0.02)
    assert np.all(np.abs(session.whisker_motion_energy - (wrong + ME_OFFSET)) > 0.025)


# ------------------------------------------------------------------------------------------
# Trial exclusion
# ------------------------------------------------------------------------------------------


def test_trial_exclusion_counts_match_planted_trials():
    rng = np.random.default_rng(6)
    trials = make_trials(30, rng)
    trials.loc[1, "stimOn_times"] = np.nan  # nan_field (also makes RT NaN)
    trials.loc[2, "feedbackType"] = np.nan  # nan_field
    trials.loc[3, "choice"] = np.nan  # nan_field
    trials.loc[4, "choice"] = 0.0  # no_choice
    trials.loc[5, ["choice", "firstMovement_times"]] = [0.0, trials.loc[5, "stimOn_times"] - 0.1]
    trials.loc[6, "firstMovement_times"] = trials.loc[6, "stimOn_times"] - 0.05  # rt_negative
    trials.loc[7, "firstMovement_times"] = trials.loc[7, "stimOn_times"] + 10.5  # rt_too_long
    trials.loc[8, "feedback_times"] = trials.loc[8, "goCue_times"] + 12.0  # trial_too_long
    trials.loc[9, "firstMovement_times"] = trials.loc[9, "stimOn_times"] + 11.0  # rt + duration
    trials.loc[9, "feedback_times"] = trials.loc[9, "goCue_times"] + 11.5
    trials.loc[10, "probabilityLeft"] = np.nan  # nan_field
    trials.loc[10, "choice"] = 0.0  # ... and no_choice: counted once, as nan_field
    trials.loc[29, "stimOn_times"] = 200.0  # window beyond the recording (ends at 94 s)
    trials.loc[29, ["goCue_times", "firstMovement_times", "feedback_times"]] = [
        200.01,
        200.2,
        200.7,
    ]
    raw = make_raw_session(trials=trials, seed=6)
    session = preprocess_session(raw, PreprocessingConfig())
    report = session.report
    assert report.excluded == {
        "nan_field": 4,
        "no_choice": 2,
        "rt_negative": 1,
        "rt_too_long": 2,
        "trial_too_long": 1,
        "behavior_out_of_range": 1,
        "behavior_nan": 0,
    }
    assert report.matching == {
        "nan_field": 4,
        "no_choice": 3,
        "rt_negative": 2,
        "rt_too_long": 2,
        "trial_too_long": 2,
        "behavior_out_of_range": 1,
        "behavior_nan": 0,
    }
    assert report.excluded_trial_ids["no_choice"] == [4, 5]
    assert report.excluded_trial_ids["rt_too_long"] == [7, 9]
    assert report.excluded_trial_ids["behavior_out_of_range"] == [29]
    expected_kept = [i for i in range(30) if i not in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 29)]
    assert session.trial_ids.tolist() == expected_kept
    assert report.n_trials_total == 30 and report.n_trials_kept == len(expected_kept)
    assert list(report.excluded) == list(EXCLUSION_REASONS)


def test_behavior_nan_trials_are_excluded():
    raw = make_raw_session(n_trials=12, seed=7)
    raw.motion_energy[(raw.motion_energy_times > 10.5) & (raw.motion_energy_times < 10.6)] = np.nan
    session = preprocess_session(raw, PreprocessingConfig())
    # trial 3 (stimOn 11 s) has its window [10.5, 12.5) over the NaN frames
    assert session.report.excluded["behavior_nan"] == 1
    assert session.report.excluded_trial_ids["behavior_nan"] == [3]
    assert np.all(np.isfinite(session.whisker_motion_energy))


# ------------------------------------------------------------------------------------------
# Neurons
# ------------------------------------------------------------------------------------------


def test_neuron_filter_is_strict_and_uses_kept_trials_only():
    rng = np.random.default_rng(8)
    trials = make_trials(10, rng)
    trials.loc[0, "choice"] = 0.0  # excluded: its spikes must not count
    kept_windows = [(s - 0.5, s + 1.5) for s in trials["stimOn_times"].to_numpy()[1:]]
    # 9 kept trials x 2 s = 18 s; 2 Hz <=> 36 spikes in kept windows
    n_spikes_per_cluster = {0: 36, 1: 37, 2: 100, 3: 100}
    times, clusters = [], []
    for cluster, n in n_spikes_per_cluster.items():
        windows = rng.integers(0, 9, n)
        for w in windows:
            start, end = kept_windows[w]
            times.append(rng.uniform(start, end))
            clusters.append(cluster)
    stim0 = trials.loc[0, "stimOn_times"]
    times += list(rng.uniform(stim0 - 0.5, stim0 + 1.5, 50))  # 50 spikes in the excluded trial
    clusters += [0] * 50
    order = np.argsort(times)
    qc = np.array([1.0, 1.0, 1.0, 2 / 3])
    raw = make_raw_session(
        trials=trials,
        spike_times=np.asarray(times)[order],
        spike_clusters=np.asarray(clusters)[order],
        clusters=make_clusters(4, qc),
        seed=8,
    )
    session = preprocess_session(raw, PreprocessingConfig())
    assert session.neurons["cluster_uuid"].tolist() == ["uuid-0001", "uuid-0002", "uuid-0003"]
    np.testing.assert_allclose(session.neurons["firing_rate_hz"], [37 / 18, 100 / 18, 100 / 18])
    assert session.neurons["neuron_index"].tolist() == [0, 1, 2]
    assert session.report.n_clusters_below_rate == 1
    qc_session = preprocess_session(raw, PreprocessingConfig(qc_only=True))
    assert qc_session.neurons["cluster_uuid"].tolist() == ["uuid-0001", "uuid-0002"]
    assert qc_session.report.n_clusters_failed_qc == 1
    with pytest.raises(EmptySessionError, match="no neuron") as error:
        preprocess_session(raw, PreprocessingConfig(min_firing_rate=10.0))
    assert error.value.reason == "no_neurons"


# ------------------------------------------------------------------------------------------
# Labels, splits, normalisation
# ------------------------------------------------------------------------------------------


def test_categorical_and_extra_columns():
    raw = make_raw_session(n_trials=20, seed=9)
    session = preprocess_session(raw, PreprocessingConfig())
    trials = raw.trials.loc[session.trial_ids]
    np.testing.assert_array_equal(session.choice, (trials["choice"] == 1).astype(int))
    assert set(session.choice.tolist()) == {0, 1}
    expected_block = trials["probabilityLeft"].map({0.2: 0, 0.5: 1, 0.8: 2}).to_numpy()
    np.testing.assert_array_equal(session.block, expected_block)
    np.testing.assert_array_equal(session.reward, (trials["feedbackType"] == 1).astype(int))
    # even trials: stimulus left 0.25 -> -0.25; odd trials: right 0.125 -> +0.125
    np.testing.assert_allclose(session.contrast, np.where(session.trial_ids % 2 == 0, -0.25, 0.125))
    assert session.stim_on_time.dtype == np.float64
    np.testing.assert_array_equal(session.stim_on_time, trials["stimOn_times"].to_numpy())


def test_unknown_probability_left_names_session_and_trial():
    trials = make_trials(10, np.random.default_rng(10))
    trials.loc[4, "probabilityLeft"] = 0.3
    raw = make_raw_session(session_id="session-bad-block", trials=trials)
    with pytest.raises(ValueError, match=r"session-bad-block.*trial 4.*probabilityLeft"):
        preprocess_session(raw, PreprocessingConfig())


def test_missing_trials_column_is_a_clear_error():
    raw = make_raw_session(session_id="session-no-gocue", n_trials=5)
    raw.trials = raw.trials.drop(columns="goCue_times")
    with pytest.raises(ValueError, match=r"session-no-gocue.*goCue_times"):
        preprocess_session(raw, PreprocessingConfig())


def test_split_fractions_and_independence_from_other_sessions():
    labels = split_assignment(100, "session-a", 42, (0.7, 0.1, 0.2))
    assert [int((labels == s).sum()) for s in ("train", "validation", "test")] == [70, 10, 20]
    labels = split_assignment(37, "session-a", 42, (0.7, 0.1, 0.2))
    assert [int((labels == s).sum()) for s in ("train", "validation", "test")] == [25, 4, 8]
    # the same session alone or after others (and whatever global numpy state) -> same split
    alone = preprocess_session(make_raw_session("session-a", seed=11), PreprocessingConfig())
    np.random.seed(123)  # noqa: NPY002 (the legacy global state must not matter)
    preprocess_session(make_raw_session("session-b", seed=12), PreprocessingConfig())
    preprocess_session(make_raw_session("session-c", seed=13), PreprocessingConfig())
    among = preprocess_session(make_raw_session("session-a", seed=11), PreprocessingConfig())
    np.testing.assert_array_equal(alone.split, among.split)
    # different session ids or seeds give different permutations
    ids = split_assignment(200, "session-a", 42, (0.7, 0.1, 0.2))
    assert not np.array_equal(ids, split_assignment(200, "session-b", 42, (0.7, 0.1, 0.2)))
    assert not np.array_equal(ids, split_assignment(200, "session-a", 43, (0.7, 0.1, 0.2)))


def test_normalization_uses_train_split_only():
    raw = make_raw_session(n_trials=30, seed=14)
    session = preprocess_session(raw, PreprocessingConfig())
    train = session.split == "train"
    for name in ("wheel_speed", "whisker_motion_energy"):
        values = getattr(session, name)[train].astype(np.float64)
        stats = session.normalization[name]
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert stats["std"] == pytest.approx(values.std(), rel=1e-12)
        assert stats["min"] == values.min() and stats["max"] == values.max()
    # motion energy grows with time, so train-only and all-trial statistics differ visibly
    all_max = float(session.whisker_motion_energy.max())
    test_is_last = session.split[np.argmax(session.stim_on_time)] != "train"
    assert (session.normalization["whisker_motion_energy"]["max"] < all_max) == test_is_last
    assert session.normalization["whisker_motion_energy"]["mean"] != pytest.approx(
        float(session.whisker_motion_energy.astype(np.float64).mean()), rel=1e-6
    )
    row = session.session
    assert row["n_trials_train"] + row["n_trials_validation"] + row["n_trials_test"] == 30
    assert row["normalization"][0]["modality"] == "wheel_speed"
    assert row["preprocessing"]["window"] == [-0.5, 1.5]
    assert row["one_revision"] == "2024-05-06"


def test_too_few_trials_and_zero_trials_are_empty_session_errors():
    trials = make_trials(4, np.random.default_rng(15))
    trials["choice"] = 0.0
    with pytest.raises(EmptySessionError) as error:
        preprocess_session(make_raw_session(trials=trials), PreprocessingConfig())
    assert error.value.reason == "no_trials"
    assert error.value.report.excluded["no_choice"] == 4
    with pytest.raises(EmptySessionError) as error:
        preprocess_session(make_raw_session(n_trials=2), PreprocessingConfig())
    assert error.value.reason == "too_few_trials"


def test_config_round_trip_and_validation():
    config = PreprocessingConfig(window=(-0.2, 0.8), bin_size=0.05, qc_only=True)
    assert PreprocessingConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="behavior_sampling"):
        PreprocessingConfig(behavior_sampling="left")
    with pytest.raises(ValueError, match="sum to 1"):
        PreprocessingConfig(split_fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        PreprocessingConfig.from_dict({"bin_width": 0.01})
