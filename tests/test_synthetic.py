"""Tests of the synthetic IBL-like session generator, its ALF writer and its ONE cache."""

from __future__ import annotations

import argparse
import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neds_hf.data import synthetic as syn

SMALL = dict(n_trials=120, n_neurons_per_probe=24, first_block_trials=40)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two small one-probe sessions written with seed 7, and the same sessions in memory."""
    root = tmp_path_factory.mktemp("synthetic_corpus")
    eids = syn.make_synthetic_cache(root, 2, seed=7, **SMALL)
    sessions = [
        syn.generate_session(syn.SyntheticSessionSpec(seed=7, index=i, **SMALL)) for i in (0, 1)
    ]
    return root, eids, sessions


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("sessions.pqt", "datasets.pqt")
    }


def test_same_seed_gives_identical_eids_and_files(tmp_path, corpus):
    root, eids, _ = corpus
    again = syn.make_synthetic_cache(tmp_path / "again", 2, seed=7, **SMALL)
    assert again == eids
    assert _files(tmp_path / "again") == _files(root)
    for table in ("sessions.pqt", "datasets.pqt"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "again" / table), pd.read_parquet(root / table)
        )
    other = syn.make_synthetic_cache(tmp_path / "other", 2, seed=8, **SMALL)
    assert set(other).isdisjoint(eids)


def test_eids_are_uuid5_of_the_session_path(corpus):
    _, eids, sessions = corpus
    for index, (eid, session) in enumerate(zip(eids, sessions)):
        assert uuid.UUID(eid).version == 5
        identity = syn.synthetic_session_identity(7, index)
        assert identity["eid"] == eid == session.eid
        assert session.session_rel_path == identity["rel_path"]
        assert syn.session_eid(identity["rel_path"]) == eid


def test_one_local_round_trip_without_warnings(corpus, caplog, strict_warnings):
    from one.api import One

    root, eids, sessions = corpus
    caplog.set_level(logging.WARNING)
    with strict_warnings():
        one = One(cache_dir=str(root), mode="local")
        assert sorted(str(e) for e in one.search()) == sorted(eids)
        assert [str(e) for e in one.search(subject=sessions[0].subject)] == [eids[0]]
        eid, session = eids[0], sessions[0]
        datasets = set(one.list_datasets(eid))
        for name in (
            "alf/_ibl_trials.table.pqt",
            "alf/_ibl_wheel.position.npy",
            "alf/_ibl_wheel.timestamps.npy",
            "alf/leftCamera.ROIMotionEnergy.npy",
            "alf/_ibl_leftCamera.times.npy",
            "alf/rightCamera.ROIMotionEnergy.npy",
            "alf/_ibl_rightCamera.times.npy",
            "alf/probe00/channels.brainLocationIds_ccf_2017.npy",
            "alf/probe00/channels.mlapdv.npy",
            "alf/probe00/channels.localCoordinates.npy",
            "alf/probe00/pykilosort/spikes.times.npy",
            "alf/probe00/pykilosort/spikes.clusters.npy",
            "alf/probe00/pykilosort/spikes.amps.npy",
            "alf/probe00/pykilosort/spikes.depths.npy",
            "alf/probe00/pykilosort/clusters.channels.npy",
            "alf/probe00/pykilosort/clusters.depths.npy",
            "alf/probe00/pykilosort/clusters.metrics.pqt",
            "alf/probe00/pykilosort/clusters.uuids.csv",
        ):
            assert name in datasets, name
        assert set(one.list_collections(eid)) == {"alf", "alf/probe00", "alf/probe00/pykilosort"}

        spikes = one.load_object(eid, "spikes", collection="alf/probe00/pykilosort")
        assert spikes["times"].dtype == np.float64
        assert spikes["clusters"].dtype == np.uint16
        np.testing.assert_array_equal(spikes["times"], session.probes[0].spike_times)
        clusters = one.load_object(eid, "clusters", collection="alf/probe00/pykilosort")
        metrics = clusters["metrics"]
        assert isinstance(metrics, pd.DataFrame) and len(metrics) == 24
        assert {"cluster_id", "firing_rate", "label", "ks2_label", "bitwise_fail"} <= set(
            metrics.columns
        )
        assert set(np.round(metrics["label"] * 3).astype(int)) <= {0, 1, 2, 3}
        assert list(clusters["uuids"]) == session.probes[0].cluster_uuids
        channels = one.load_object(eid, "channels", collection="alf/probe00")
        assert channels["brainLocationIds_ccf_2017"].shape == (384,)
        assert channels["mlapdv"].shape == (384, 3)
        assert channels["localCoordinates"].shape == (384, 2)
        trials = one.load_object(eid, "trials", collection="alf").to_df()
        assert set(syn.TRIALS_TABLE_COLUMNS) <= set(trials.columns)
        assert len(trials) == 120
        motion_energy = one.load_dataset(eid, "leftCamera.ROIMotionEnergy.npy", collection="alf")
        np.testing.assert_array_equal(motion_energy, session.camera_motion_energy["left"])
        details = one.get_details(eid)
        assert (details["subject"], details["lab"]) == (session.subject, session.lab)
    noisy = [r for r in caplog.records if r.name.startswith("one") and r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_ground_truth_file_format(corpus):
    root, eids, sessions = corpus
    truth = syn.load_ground_truth(root, eids[1])
    assert set(truth) == set(syn.GROUND_TRUTH_ARRAYS) | {"info"}
    n_trials, n_clusters, n_bins = 120, 24, 100
    assert truth["expected_counts"].shape == (n_trials, n_clusters, n_bins)
    assert truth["latents"].shape == (n_trials, 3, n_bins)
    assert truth["covariates"].shape == (n_trials, len(syn.COVARIATE_NAMES), n_bins)
    assert truth["wheel_speed"].shape == (n_trials, n_bins)
    assert truth["cluster_region_beryl"].shape == (n_clusters,)
    assert truth["cluster_covariate_weights"].shape == (n_clusters, 6)
    assert np.all(truth["expected_counts"] >= 0)
    assert str(truth["eid"]) == eids[1]
    assert list(truth["exclusion_reasons"]) == list(syn.EXCLUSION_REASONS)
    assert truth["info"]["exclusion_first_reason_counts"] == sessions[1].spec.planted_counts
    # The stored ground truth equals the in-memory one.
    for key, value in sessions[1].ground_truth.items():
        np.testing.assert_array_equal(truth[key], value, err_msg=key)


def test_expected_counts_generate_the_written_spikes(tmp_path):
    """Spikes counted in every trial bin match the expected counts (Poisson tolerance)."""
    spec = syn.SyntheticSessionSpec(seed=3, n_trials=80, n_neurons_per_probe=20, n_probes=2)
    session = syn.generate_session(spec)
    truth = session.ground_truth
    stim_on = truth["stim_on_times"]
    offsets = syn.STANDARD_WINDOW_S[0] + syn.STANDARD_BIN_SIZE_S * np.arange(101)
    observed = []
    for probe in session.probes:
        counts = np.zeros((len(stim_on), probe.n_clusters, 100))
        for trial, t0 in enumerate(stim_on):
            edges = t0 + offsets
            inside = (probe.spike_times >= edges[0]) & (probe.spike_times < edges[-1])
            for cluster in range(probe.n_clusters):
                times = probe.spike_times[inside & (probe.spike_clusters == cluster)]
                counts[trial, cluster] = np.histogram(times, edges)[0]
        observed.append(counts)
    observed = np.concatenate(observed, axis=1)  # (n, C, T)
    expected = truth["expected_counts"]
    # Per cluster, summed over trials and bins: Poisson with known mean.
    total_obs, total_exp = observed.sum(axis=(0, 2)), expected.sum(axis=(0, 2))
    assert np.all(np.abs(total_obs - total_exp) <= 5 * np.sqrt(total_exp) + 2)
    # Time course: PSTH over trials tracks the expected PSTH (pooled over clusters).
    psth_obs, psth_exp = observed.sum(axis=(0, 1)), expected.sum(axis=(0, 1))
    assert np.all(np.abs(psth_obs - psth_exp) <= 5 * np.sqrt(psth_exp) + 2)
    # And the model is not flat: rates vary across trials and bins.
    assert expected.std(axis=(0, 2)).min() > 0
    # True mean rates span the 2 Hz threshold.
    mean_rate = truth["cluster_mean_rate_hz"]
    assert (mean_rate < 2.0).sum() >= 3 and (mean_rate > 2.0).sum() >= 10
    # clusters.metrics firing_rate = spike count / recording duration.
    duration = session.info["duration_s"]
    for probe in session.probes:
        spikes_per_cluster = np.bincount(probe.spike_clusters, minlength=probe.n_clusters)
        np.testing.assert_allclose(
            probe.cluster_metrics["firing_rate"], spikes_per_cluster / duration
        )


def test_block_design():
    spec = syn.SyntheticSessionSpec(seed=11, n_trials=400, first_block_trials=90)
    p_left = syn.generate_session(spec).trials["probabilityLeft"].to_numpy()
    nan_rows = np.isnan(p_left)
    assert nan_rows.sum() <= spec.n_nan_trials
    p_left = pd.Series(p_left).ffill().bfill().to_numpy()
    assert np.all(p_left[:90] == 0.5)
    assert set(np.unique(p_left[90:])) == {0.2, 0.8}
    change = np.flatnonzero(np.diff(p_left[90:]) != 0) + 91
    starts = np.concatenate([[90], change])
    lengths = np.diff(np.concatenate([starts, [400]]))
    assert np.all(lengths[:-1] >= 20) and np.all(lengths[:-1] <= 100)
    assert np.all(p_left[starts[1:]] != p_left[starts[:-1]])  # alternating


def _independent_first_reasons(trials: pd.DataFrame) -> list[str]:
    reasons = []
    for row in trials.itertuples():
        fields = [
            row.stimOn_times,
            row.choice,
            row.feedback_times,
            row.probabilityLeft,
            row.firstMovement_times,
            row.feedbackType,
        ]
        rt = row.firstMovement_times - row.stimOn_times
        if any(np.isnan(f) for f in fields):
            reasons.append("nan_field")
        elif row.choice == 0:
            reasons.append("no_choice")
        elif rt < 0:
            reasons.append("rt_negative")
        elif rt > 10:
            reasons.append("rt_too_long")
        elif row.feedback_times - row.goCue_times > 10:
            reasons.append("trial_too_long")
        else:
            reasons.append("")
    return reasons


def test_planted_bad_trials_match_the_trials_table(corpus):
    _, _, sessions = corpus
    for session in sessions:
        trials, truth = session.trials, session.ground_truth
        reasons = _independent_first_reasons(trials)
        assert reasons == list(truth["trial_first_reason"])
        counts = {r: reasons.count(r) for r in syn.EXCLUSION_REASONS}
        assert counts == session.spec.planted_counts
        np.testing.assert_array_equal(
            truth["exclusion_first_reason_counts"], [counts[r] for r in syn.EXCLUSION_REASONS]
        )
        # Per-reason counts (overlaps included): no-go trials time out after 60 s and RT > 10 s
        # trials end late, so both also satisfy "trial_too_long".
        duration = trials["feedback_times"] - trials["goCue_times"]
        rt = trials["firstMovement_times"] - trials["stimOn_times"]
        assert truth["exclusion_reason_counts"][4] == int((duration > 10).sum())
        assert truth["exclusion_reason_counts"][3] == int((rt > 10).sum()) == 2
        assert truth["exclusion_reason_counts"][4] >= 2 + 2 + 2
        good = np.array(reasons) == ""
        assert set(trials.loc[good, "choice"]) == {-1.0, 1.0}
        assert set(trials.loc[good, "feedbackType"]) == {-1.0, 1.0}
        contrasts = pd.concat([trials["contrastLeft"], trials["contrastRight"]]).dropna()
        assert set(contrasts) <= set(syn.CONTRAST_LEVELS)
        assert np.all(trials["contrastLeft"].isna() ^ trials["contrastRight"].isna())
        assert 0.08 < rt[good].median() < 1.0


def test_wheel_motion_energy_and_inter_trial_spikes(corpus):
    _, _, sessions = corpus
    session = sessions[0]
    trials = session.trials
    timestamps, position = session.wheel_timestamps, session.wheel_position
    assert np.all(np.diff(timestamps) > 0)
    assert np.std(np.diff(timestamps)) > 1e-3  # irregular, encoder-tick timing
    np.testing.assert_allclose(
        position / syn.WHEEL_RESOLUTION_RAD,
        np.round(position / syn.WHEEL_RESOLUTION_RAD),
        atol=1e-9,
    )
    good = session.ground_truth["trial_first_reason"] == ""
    before = np.interp(trials["stimOn_times"], timestamps, position)
    after = np.interp(trials["response_times"] + 0.05, timestamps, position)
    turn = (after - before)[good]
    choice = trials["choice"].to_numpy()[good]
    assert np.all(np.sign(turn) == -choice)  # right choice (-1) turns CCW (+)
    assert np.all(np.abs(turn) > 0.1)

    left_times = session.camera_times["left"]
    left_me = session.camera_motion_energy["left"]
    assert len(left_times) == len(left_me) + session.spec.n_extra_left_timestamps
    assert np.median(np.diff(left_times)) == pytest.approx(1 / 60, rel=0.02)
    right_times = session.camera_times["right"]
    assert len(right_times) == len(session.camera_motion_energy["right"])
    assert np.median(np.diff(right_times)) == pytest.approx(1 / 150, rel=0.02)
    frame_times = left_times[-len(left_me) :]
    speed = np.abs(np.gradient(np.interp(frame_times, timestamps, position), frame_times))
    assert np.corrcoef(speed, left_me)[0, 1] > 0.1  # whisking co-occurs with movement

    spike_times = session.probes[0].spike_times
    assert np.any(spike_times < trials["intervals_0"].iloc[0])
    gap_start, gap_stop = (
        trials["intervals_1"].iloc[:-1].to_numpy(),
        trials["intervals_0"].iloc[1:].to_numpy(),
    )
    in_gaps = np.searchsorted(spike_times, gap_stop) - np.searchsorted(spike_times, gap_start)
    assert in_gaps.sum() > 0


def test_regions_are_known_to_iblatlas(corpus):
    from iblatlas.regions import BrainRegions

    _, _, sessions = corpus
    regions = BrainRegions()
    truth = sessions[1].ground_truth
    ids = truth["cluster_region_allen_id"]
    assert np.all(np.isin(ids, regions.id))
    np.testing.assert_array_equal(regions.id2acronym(ids), truth["cluster_region_allen"])
    np.testing.assert_array_equal(
        regions.id2acronym(ids, mapping="Beryl"), truth["cluster_region_beryl"]
    )
    np.testing.assert_array_equal(
        regions.id2acronym(ids, mapping="Cosmos"), truth["cluster_region_cosmos"]
    )
    assert set(truth["cluster_region_beryl"]) == {"PO", "LP", "DG", "CA1", "VISa"}
    assert np.all(np.isin(sessions[1].probes[0].channel_allen_ids, regions.id))


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("no_motion_energy", lambda alf: not list(alf.glob("*ROIMotionEnergy*"))),
        ("no_spike_sorting", lambda alf: not list(alf.rglob("spikes.*"))),
        ("empty_trials", lambda alf: len(pd.read_parquet(alf / "_ibl_trials.table.pqt")) == 0),
        (
            "mismatched_spike_lengths",
            lambda alf: (
                len(np.load(alf / "probe00/pykilosort/spikes.clusters.npy"))
                == len(np.load(alf / "probe00/pykilosort/spikes.times.npy")) - 7
            ),
        ),
        (
            "clusters_out_of_range",
            lambda alf: (
                np.load(alf / "probe00/pykilosort/spikes.clusters.npy").max()
                >= len(np.load(alf / "probe00/pykilosort/clusters.channels.npy"))
            ),
        ),
    ],
)
def test_faults_are_planted_in_the_files(tmp_path, fault, check):
    spec = syn.SyntheticSessionSpec(seed=5, n_trials=60, n_neurons_per_probe=10, fault=fault)
    session = syn.generate_session(spec)
    path = syn.write_alf_session(session, tmp_path)
    assert check(path / "alf")
    assert syn.load_ground_truth(tmp_path, session.eid)["info"]["fault"] == fault


def test_truncated_spike_times_fault_cannot_be_decoded(tmp_path):
    spec = syn.SyntheticSessionSpec(
        seed=5, n_trials=60, n_neurons_per_probe=10, fault="corrupted_spike_times"
    )
    path = syn.write_alf_session(syn.generate_session(spec), tmp_path)
    with pytest.raises(ValueError):
        np.load(path / "alf/probe00/pykilosort/spikes.times.npy")


def test_spec_validation_and_duration(tmp_path):
    with pytest.raises(ValueError, match="unknown fault"):
        syn.SyntheticSessionSpec(fault="bogus")
    with pytest.raises(ValueError, match="more than half"):
        syn.SyntheticSessionSpec(n_trials=10)
    with pytest.raises(ValueError, match="shorter"):
        syn.generate_session(syn.SyntheticSessionSpec(n_trials=60, duration_s=10.0))
    stretched = syn.generate_session(
        syn.SyntheticSessionSpec(n_trials=60, n_neurons_per_probe=5, duration_s=600.0)
    )
    assert stretched.info["duration_s"] == pytest.approx(600.0, abs=syn.SIMULATION_DT_S)
    assert stretched.probes[0].spike_times[-1] > 590.0


def test_revision_and_collection_options_in_the_cache(tmp_path):
    spec = syn.SyntheticSessionSpec(
        seed=2,
        n_trials=60,
        n_neurons_per_probe=8,
        n_probes=2,
        sorters=("pykilosort", "iblsorter"),
        sorting_revision="2024-05-06",
    )
    session = syn.generate_session(spec)
    syn.write_alf_session(session, tmp_path)
    syn.write_one_cache(tmp_path)
    datasets = pd.read_parquet(tmp_path / "datasets.pqt")
    rel_paths = set(datasets["rel_path"])
    assert "alf/probe00/pykilosort/#2024-05-06#/spikes.times.npy" in rel_paths
    assert "alf/probe01/iblsorter/#2024-05-06#/clusters.uuids.csv" in rel_paths
    assert "alf/probe01/channels.mlapdv.npy" in rel_paths
    assert datasets["default_revision"].all()
    assert str(datasets["qc"].dtype) == "category"


def test_cli_functions(tmp_path, capsys):
    parser = syn.add_make_synthetic_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--output",
            str(tmp_path),
            "--sessions",
            "2",
            "--seed",
            "4",
            "--trials",
            "60",
            "--neurons-per-probe",
            "6",
            "--fault",
            "1=empty_trials",
        ]
    )
    assert syn.run_make_synthetic(args) == 0
    printed = capsys.readouterr().out.split()
    eids = [syn.synthetic_session_identity(4, i)["eid"] for i in range(2)]
    assert printed[-2:] == eids
    assert (tmp_path / "eids.txt").read_text().split() == eids
    assert (tmp_path / "sessions.pqt").is_file()
    assert syn.load_ground_truth(tmp_path, eids[1])["info"]["fault"] == "empty_trials"
    with pytest.raises(SystemExit):
        parser.parse_args(["--output", str(tmp_path), "--fault", "0=nonsense"])


def test_easy_preset_output_is_unchanged():
    # spike clusters and wheel ticks of one easy session, pinned before the presets existed
    import hashlib

    spec = syn.SyntheticSessionSpec(seed=3, index=1, n_trials=60, n_neurons_per_probe=12)
    assert spec.preset == "easy"
    session = syn.generate_session(spec)
    digest = hashlib.sha256()
    for probe in session.probes:
        digest.update(np.ascontiguousarray(probe.spike_clusters.astype(np.int64)).tobytes())
    ticks = np.round(session.wheel_position / syn.WHEEL_RESOLUTION_RAD).astype(np.int64)
    digest.update(ticks.tobytes())
    assert sum(len(p.spike_times) for p in session.probes) == 111696
    assert digest.hexdigest() == (
        "3ae5d8f8928afff23dcc2288a236f86fac4ac14886eadb8406d1e1f55dda3177"
    )
    assert str(session.ground_truth["preset"]) == "easy"


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match=r"unknown preset 'hard'.*realistic"):
        syn.SyntheticSessionSpec(preset="hard")


def test_realistic_preset_is_recorded_weakly_decodable_and_has_an_observed_oracle(tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    from neds_hf.baselines import fit_logistic_decoder
    from neds_hf.metrics import bits_per_spike

    spec = syn.SyntheticSessionSpec(
        seed=11, n_trials=240, n_neurons_per_probe=40, first_block_trials=60, preset="realistic"
    )
    session = syn.generate_session(spec)
    truth = session.ground_truth
    assert str(truth["preset"]) == "realistic" and session.info["preset"] == "realistic"
    syn.write_ground_truth(session, tmp_path)
    assert syn.load_ground_truth(tmp_path, session.eid)["info"]["spec"]["preset"] == "realistic"

    good = truth["trial_first_reason"] == ""
    expected = truth["expected_counts"][good]  # (n, C, T)
    observed = truth["expected_counts_observed"][good]
    counts = np.random.default_rng(0).poisson(expected)
    # a logistic decoder of choice from counts summed after stimulus onset: far from
    # perfect (the easy preset reaches ~0.98 on this session), well above chance
    features = counts[:, :, 25:].sum(axis=2)[:, None, :].astype(float)  # (n, 1, C)
    choice = session.trials["choice"].to_numpy()[good]
    train = np.arange(len(choice)) % 4 != 0
    decoder = fit_logistic_decoder(features[train], choice[train], seed=0)
    accuracy = balanced_accuracy_score(choice[~train], decoder.predict(features[~train]))
    assert 0.6 < accuracy < 0.9

    # the oracle given the observed behaviour keeps the mean rate, and it is a ceiling below
    # the true rates (the stimulus and latent noise it marginalises explain spikes)
    assert observed.shape == expected.shape
    assert observed.mean() == pytest.approx(expected.mean(), rel=0.03)
    true_bps = bits_per_spike(
        expected.transpose(0, 2, 1), counts.transpose(0, 2, 1), log_input=False
    )
    oracle_bps = bits_per_spike(
        observed.transpose(0, 2, 1), counts.transpose(0, 2, 1), log_input=False
    )
    assert 0.0 < oracle_bps < 0.5 * true_bps


def test_make_synthetic_cli_preset_option(tmp_path, capsys):
    parser = syn.add_make_synthetic_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--output", str(tmp_path), "--sessions", "1", "--trials", "60", "--preset", "realistic"]
    )
    assert syn.run_make_synthetic(args) == 0
    eid = (tmp_path / "eids.txt").read_text().split()[0]
    assert str(syn.load_ground_truth(tmp_path, eid)["preset"]) == "realistic"
    with pytest.raises(SystemExit):
        parser.parse_args(["--output", str(tmp_path), "--preset", "hard"])
