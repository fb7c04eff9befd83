"""Tests of loading IBL sessions through ONE-api (offline, on synthetic ALF sessions)."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neds_hf.data import ibl
from neds_hf.data import synthetic as syn
from neds_hf.data.errors import CorruptedFileError, MissingDataError, SessionNotFoundError

SMALL = dict(n_trials=80, n_neurons_per_probe=20, first_block_trials=40)


def _write(root: Path, sessions: list[syn.SyntheticSession]) -> None:
    for session in sessions:
        syn.write_alf_session(session, root)
    syn.write_one_cache(root)


@pytest.fixture(scope="module")
def loading_cache(tmp_path_factory):
    """A cache with a two-probe session, a right-camera-only session and one per fault."""
    root = tmp_path_factory.mktemp("loading_cache")
    two_probe = syn.generate_session(
        syn.SyntheticSessionSpec(
            seed=21, index=0, n_probes=2, sorters=("pykilosort", "iblsorter"), **SMALL
        )
    )
    right_only = syn.generate_session(
        syn.SyntheticSessionSpec(seed=21, index=1, cameras=("right",), **SMALL)
    )
    faulty = {
        fault: syn.generate_session(
            syn.SyntheticSessionSpec(
                seed=21, index=2 + k, fault=fault, n_trials=60, n_neurons_per_probe=8
            )
        )
        for k, fault in enumerate(syn.FAULTS)
    }
    _write(root, [two_probe, right_only, *faulty.values()])
    return {"root": root, "two_probe": two_probe, "right_only": right_only, "faulty": faulty}


@pytest.fixture(scope="module")
def loaded_two_probe(loading_cache, strict_warnings):
    with strict_warnings():
        one = ibl.make_one(loading_cache["root"])
        return ibl.load_session(one, loading_cache["two_probe"].eid)


def test_probes_are_listed_from_collections(loading_cache):
    one = ibl.make_one(loading_cache["root"])
    assert ibl.list_probes(one, loading_cache["two_probe"].eid) == ["probe00", "probe01"]
    assert ibl.list_probes(one, loading_cache["right_only"].eid) == ["probe00"]


def test_two_probe_merge_maps_every_spike_back(loading_cache, loaded_two_probe, caplog):
    session, raw = loading_cache["two_probe"], loaded_two_probe
    assert raw.probes == ["probe00", "probe01"]
    assert raw.n_clusters == sum(p.n_clusters for p in session.probes) == 40
    assert raw.spike_clusters.dtype == np.int64
    assert raw.spike_times.dtype == np.float64
    assert np.all(np.diff(raw.spike_times) >= 0)
    assert len(raw.spike_times) == sum(len(p.spike_times) for p in session.probes)
    probe_of_spike = raw.clusters["probe"].to_numpy()[raw.spike_clusters]
    cluster_of_spike = raw.clusters["cluster_id"].to_numpy()[raw.spike_clusters]
    for probe in session.probes:
        assert probe.spike_clusters.dtype == np.uint16  # as written in ALF
        mine = probe_of_spike == probe.name
        np.testing.assert_array_equal(raw.spike_times[mine], probe.spike_times)
        np.testing.assert_array_equal(cluster_of_spike[mine], probe.spike_clusters.astype(np.int64))
    # Global rows are probe offset + cluster id.
    offsets = {"probe00": 0, "probe01": session.probes[0].n_clusters}
    expected_rows = raw.clusters["probe"].map(offsets) + raw.clusters["cluster_id"]
    np.testing.assert_array_equal(expected_rows, np.arange(raw.n_clusters))


def test_clusters_table_matches_the_generator(loading_cache, loaded_two_probe):
    session, raw = loading_cache["two_probe"], loaded_two_probe
    truth = session.ground_truth
    clusters = raw.clusters
    np.testing.assert_array_equal(clusters["probe"], truth["cluster_probe"])
    np.testing.assert_array_equal(clusters["cluster_id"], truth["cluster_id"])
    np.testing.assert_array_equal(clusters["cluster_uuid"], truth["cluster_uuid"])
    np.testing.assert_array_equal(clusters["region_allen"], truth["cluster_region_allen"])
    np.testing.assert_array_equal(clusters["region_beryl"], truth["cluster_region_beryl"])
    np.testing.assert_array_equal(clusters["region_cosmos"], truth["cluster_region_cosmos"])
    np.testing.assert_array_equal(clusters["region_allen_id"], truth["cluster_region_allen_id"])
    np.testing.assert_allclose(clusters["depth_um"], truth["cluster_depth_um"])
    assert set(clusters["region_cosmos"]) == {"TH", "HPF", "Isocortex"}
    for probe in session.probes:
        rows = clusters["probe"] == probe.name
        xyz = clusters.loc[rows, ["x_um", "y_um", "z_um"]].to_numpy()
        np.testing.assert_allclose(xyz, probe.channel_mlapdv[probe.cluster_channels])
        np.testing.assert_allclose(clusters.loc[rows, "qc_label"], probe.cluster_metrics["label"])
        np.testing.assert_allclose(
            clusters.loc[rows, "firing_rate_hz"], probe.cluster_metrics["firing_rate"]
        )


def test_session_metadata_trials_wheel(loading_cache, loaded_two_probe):
    session, raw = loading_cache["two_probe"], loaded_two_probe
    assert raw.session_id == session.eid
    assert (raw.subject, raw.lab, raw.date) == (session.subject, session.lab, session.date)
    assert raw.metadata["probes"]["probe00"]["collection"] == "alf/probe00/pykilosort"
    assert raw.metadata["probes"]["probe01"]["collection"] == "alf/probe01/iblsorter"
    assert raw.metadata["probes_without_spike_sorting"] == []
    pd.testing.assert_frame_equal(
        raw.trials[list(syn.TRIALS_TABLE_COLUMNS)], session.trials, check_dtype=False
    )
    assert list(raw.trials.index) == list(range(len(session.trials)))
    np.testing.assert_array_equal(
        raw.trials["quiescencePeriod"], session.trials_extra["quiescencePeriod"]
    )
    np.testing.assert_array_equal(raw.wheel_timestamps, session.wheel_timestamps)
    np.testing.assert_array_equal(raw.wheel_position, session.wheel_position)


def test_motion_energy_extra_timestamps_are_dropped_from_the_start(loading_cache, loaded_two_probe):
    session, raw = loading_cache["two_probe"], loaded_two_probe
    n_extra = session.spec.n_extra_left_timestamps
    assert n_extra > 0
    assert raw.motion_energy_camera == "left"
    assert raw.metadata["motion_energy_dropped_timestamps"] == n_extra
    written_times = session.camera_times["left"]
    np.testing.assert_array_equal(raw.motion_energy, session.camera_motion_energy["left"])
    # Frame i was recorded at written_times[n_extra + i] (the last len(ME) timestamps).
    np.testing.assert_array_equal(raw.motion_energy_times, written_times[n_extra:])
    assert np.median(np.diff(raw.motion_energy_times)) == pytest.approx(1 / 60, rel=0.02)


def test_right_camera_fallback(loading_cache, strict_warnings):
    session = loading_cache["right_only"]
    with strict_warnings():
        raw = ibl.load_session(ibl.make_one(loading_cache["root"]), session.eid)
    assert raw.motion_energy_camera == "right"
    assert raw.metadata["motion_energy_absent"] == ["alf/leftCamera.ROIMotionEnergy"]
    np.testing.assert_array_equal(raw.motion_energy_times, session.camera_times["right"])
    np.testing.assert_array_equal(raw.motion_energy, session.camera_motion_energy["right"])
    assert np.median(np.diff(raw.motion_energy_times)) == pytest.approx(1 / 150, rel=0.02)


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("no_motion_energy", MissingDataError, ["motion energy", "leftCamera", "rightCamera"]),
        ("no_spike_sorting", MissingDataError, ["no spike sorting", "probe00"]),
        ("empty_trials", MissingDataError, ["trials", "empty"]),
        ("mismatched_spike_lengths", ValueError, ["probe00", "spikes.times", "spikes.clusters"]),
        ("clusters_out_of_range", ValueError, ["probe00", "spikes.clusters", "clusters.*"]),
        ("corrupted_spike_times", CorruptedFileError, ["spikes.times.npy"]),
    ],
)
def test_planted_faults_raise_named_errors(loading_cache, fault, error, words, strict_warnings):
    session = loading_cache["faulty"][fault]
    one = ibl.make_one(loading_cache["root"])
    with strict_warnings(), pytest.raises(error) as raised:
        ibl.load_session(one, session.eid)
    message = str(raised.value)
    assert session.eid in message
    for word in words:
        assert word in message, (word, message)
    if error is ValueError:  # inconsistent data is not mistaken for missing or corrupted data
        assert not isinstance(raised.value, (MissingDataError, CorruptedFileError))
    if error is CorruptedFileError:
        path = raised.value.path
        assert path.is_file() and path.name == "spikes.times.npy"
        assert str(path) in message


def test_unknown_session_id(loading_cache):
    one = ibl.make_one(loading_cache["root"])
    unknown = str(uuid.uuid4())
    with pytest.raises(SessionNotFoundError, match=unknown):
        ibl.load_session(one, unknown)
    with pytest.raises(SessionNotFoundError, match="not-a-session"):
        ibl.load_session(one, "not-a-session")


def test_make_one_offline_requires_cache_tables(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sessions\.pqt"):
        ibl.make_one(tmp_path)
    with pytest.raises(ValueError, match="cache_dir"):
        ibl.make_one(None)


# --------------------------------------------------------------------------------------------
# Tests that modify a cache: each gets its own small copy
# --------------------------------------------------------------------------------------------


def _single_session_cache(root: Path, seed: int, **overrides) -> syn.SyntheticSession:
    spec = syn.SyntheticSessionSpec(seed=seed, n_trials=60, n_neurons_per_probe=10, **overrides)
    session = syn.generate_session(spec)
    _write(root, [session])
    return session


def _other_sorting(seed: int) -> syn.SyntheticProbe:
    """A probe sorting with different content (another seed) but the same sizes."""
    spec = syn.SyntheticSessionSpec(seed=seed, n_trials=60, n_neurons_per_probe=12)
    return syn.generate_session(spec).probes[0]


def test_collection_preference_iblsorter_over_pykilosort(tmp_path, strict_warnings):
    session = _single_session_cache(tmp_path, seed=31)
    other = _other_sorting(seed=32)
    session_path = tmp_path / session.session_rel_path
    syn.write_spike_sorting(other, session_path, sorter="iblsorter")
    syn.write_one_cache(tmp_path)
    with strict_warnings():
        one = ibl.make_one(tmp_path)
        raw = ibl.load_session(one, session.eid)
        assert raw.metadata["probes"]["probe00"]["collection"] == "alf/probe00/iblsorter"
        np.testing.assert_array_equal(raw.spike_times, other.spike_times)
        assert raw.n_clusters == 12
        preferring_pykilosort = ibl.load_session(
            one, session.eid, spike_sorter_preference=("pykilosort", "iblsorter")
        )
        np.testing.assert_array_equal(
            preferring_pykilosort.spike_times, session.probes[0].spike_times
        )
        assert preferring_pykilosort.n_clusters == 10
        # Neither preferred name present: the shortest alf/probe00* collection with spikes.
        fallback = ibl.select_spike_sorting_collection(one, session.eid, "probe00", ("ks2",))
        assert fallback in {"alf/probe00/iblsorter", "alf/probe00/pykilosort"}
        assert fallback == min(
            ["alf/probe00/iblsorter", "alf/probe00/pykilosort"], key=lambda c: (len(c), c)
        )


def test_revision_selection(tmp_path, caplog, strict_warnings):
    session = _single_session_cache(tmp_path, seed=41)  # unrevisioned pykilosort sorting
    revised = _other_sorting(seed=42)
    session_path = tmp_path / session.session_rel_path
    syn.write_spike_sorting(revised, session_path, revision="2024-05-06")
    syn.write_one_cache(tmp_path)
    caplog.set_level(logging.WARNING)
    with strict_warnings():
        one = ibl.make_one(tmp_path)
        newest = ibl.load_session(one, session.eid)
        np.testing.assert_array_equal(newest.spike_times, revised.spike_times)
        assert newest.metadata["probes"]["probe00"]["revision"] == "2024-05-06"
        exact = ibl.load_session(one, session.eid, revision="2024-05-06")
        np.testing.assert_array_equal(exact.spike_times, revised.spike_times)
        later = ibl.load_session(one, session.eid, revision="2025-01-01")
        np.testing.assert_array_equal(later.spike_times, revised.spike_times)
        older = ibl.load_session(one, session.eid, revision="2023-01-01")
        np.testing.assert_array_equal(older.spike_times, session.probes[0].spike_times)
        assert older.metadata["probes"]["probe00"]["revision"] == ""
        assert older.n_clusters == 10 and newest.n_clusters == 12
        # The clusters table follows the revision of the spikes.
        np.testing.assert_array_equal(newest.clusters["cluster_uuid"], revised.cluster_uuids)
    noisy = [r for r in caplog.records if r.name.startswith("one") and r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_corrupted_files_are_named(tmp_path):
    session = _single_session_cache(tmp_path, seed=51)
    alf = tmp_path / session.session_rel_path / "alf"
    wheel = alf / "_ibl_wheel.position.npy"
    with open(wheel, "r+b") as handle:  # keep the header, cut the data
        handle.truncate(wheel.stat().st_size // 2)
    one = ibl.make_one(tmp_path)
    with pytest.raises(CorruptedFileError) as raised:
        ibl.load_session(one, session.eid)
    assert raised.value.path == wheel
    assert str(wheel) in str(raised.value) and session.eid in str(raised.value)

    trials_table = alf / "_ibl_trials.table.pqt"
    trials_table.write_bytes(b"this is not a parquet file")
    with pytest.raises(CorruptedFileError, match=r"_ibl_trials\.table\.pqt"):
        ibl.load_session(one, session.eid)


def test_unknown_allen_id_is_refused(tmp_path):
    session = _single_session_cache(tmp_path, seed=61)
    path = (
        tmp_path / session.session_rel_path / "alf/probe00/channels.brainLocationIds_ccf_2017.npy"
    )
    allen_ids = np.load(path)
    allen_ids[session.probes[0].cluster_channels[0]] = 987654321
    np.save(path, allen_ids)
    syn.write_one_cache(tmp_path)
    with pytest.raises(ValueError, match="987654321") as raised:
        ibl.load_session(ibl.make_one(tmp_path), session.eid)
    assert session.eid in str(raised.value) and "probe00" in str(raised.value)


def test_fewer_timestamps_than_frames_is_an_error(tmp_path):
    session = _single_session_cache(tmp_path, seed=71)
    times = tmp_path / session.session_rel_path / "alf/_ibl_leftCamera.times.npy"
    frames = len(session.camera_motion_energy["left"])
    np.save(times, session.camera_times["left"][: frames - 5])
    syn.write_one_cache(tmp_path)
    with pytest.raises(ValueError, match="fewer timestamps than frames") as raised:
        ibl.load_session(ibl.make_one(tmp_path), session.eid)
    assert session.eid in str(raised.value)


def test_probe_without_sorting_is_reported_not_hidden(tmp_path):
    session = _single_session_cache(tmp_path, seed=81, n_probes=2)
    shutil.rmtree(tmp_path / session.session_rel_path / "alf/probe01/pykilosort")
    syn.write_one_cache(tmp_path)
    raw = ibl.load_session(ibl.make_one(tmp_path), session.eid)
    assert raw.probes == ["probe00"]
    assert raw.metadata["probes_without_spike_sorting"] == ["probe01"]
    np.testing.assert_array_equal(raw.spike_times, session.probes[0].spike_times)


def test_three_probes_use_cumulative_offsets(tmp_path, strict_warnings):
    session = _single_session_cache(
        tmp_path, seed=91, n_probes=3, sorters=("pykilosort", "iblsorter", "")
    )
    with strict_warnings():
        raw = ibl.load_session(ibl.make_one(tmp_path), session.eid)
    assert raw.probes == ["probe00", "probe01", "probe02"]
    assert [raw.metadata["probes"][p]["collection"] for p in raw.probes] == [
        "alf/probe00/pykilosort",
        "alf/probe01/iblsorter",
        "alf/probe02",
    ]
    assert raw.n_clusters == 30
    assert np.all(np.diff(raw.spike_times) >= 0)
    for index, probe in enumerate(session.probes):
        rows = np.flatnonzero(raw.clusters["probe"] == probe.name)
        np.testing.assert_array_equal(rows, 10 * index + np.arange(10))
        mine = (raw.spike_clusters >= rows[0]) & (raw.spike_clusters <= rows[-1])
        np.testing.assert_array_equal(raw.spike_times[mine], probe.spike_times)
        np.testing.assert_array_equal(raw.spike_clusters[mine] - rows[0], probe.spike_clusters)
