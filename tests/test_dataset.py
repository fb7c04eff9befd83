"""Tests of the dataset build (synthetic ONE cache -> Parquet + card), loading and sampling."""

from __future__ import annotations

import argparse
import json
import os
import shutil

import datasets
import numpy as np
import pytest

from neds_hf.data import (
    NEURON_FEATURES,
    SESSION_FEATURES,
    TRIAL_FEATURES,
    build_dataset,
    load_neds_dataset,
    load_neurons,
    load_normalization,
    load_sessions,
    push_dataset_to_hub,
)
from neds_hf.data.cli_prepare import (
    add_prepare_data_arguments,
    packaged_eids,
    run_prepare_data,
)
from neds_hf.data.errors import CorruptedFileError, SessionNotFoundError
from neds_hf.data.ibl import load_session, make_one
from neds_hf.data.preprocess import EXCLUSION_REASONS, PreprocessingConfig, preprocess_session
from neds_hf.data.synthetic import load_ground_truth, make_synthetic_cache
from neds_hf.data.training_data import NedsTrialDataset, SessionBatchSampler

SPLIT_NAMES = ["train", "validation", "test"]
IBL_REASONS = EXCLUSION_REASONS[:5]


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """A private datasets cache so loads never touch the user's cache (`datasets` reads the
    variable once, at import, so its config is pointed there too: otherwise a dataset built
    at a reused temporary path is served from a stale cache entry)."""
    previous = os.environ.get("HF_DATASETS_CACHE")
    previous_config = datasets.config.HF_DATASETS_CACHE
    private = tmp_path_factory.mktemp("hf_cache")
    os.environ["HF_DATASETS_CACHE"] = str(private)
    datasets.config.HF_DATASETS_CACHE = private
    yield
    datasets.config.HF_DATASETS_CACHE = previous_config
    if previous is None:
        os.environ.pop("HF_DATASETS_CACHE", None)
    else:
        os.environ["HF_DATASETS_CACHE"] = previous


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Five tiny synthetic sessions: 0 and 3 are good, 1 lacks motion energy, 2 has spike
    arrays of different lengths, 4 has a truncated spikes.times.npy."""
    root = tmp_path_factory.mktemp("one_cache")
    eids = make_synthetic_cache(
        root,
        5,
        seed=3,
        faults={1: "no_motion_energy", 2: "mismatched_spike_lengths", 4: "corrupted_spike_times"},
        n_trials=60,
        n_neurons_per_probe=12,
        first_block_trials=20,
    )
    return root, eids


@pytest.fixture(scope="module")
def built(cache, hf_cache, tmp_path_factory):
    """The dataset built from sessions 0-3 (two of them faulty)."""
    root, eids = cache
    output = tmp_path_factory.mktemp("built") / "dataset"
    report = build_dataset(root, eids[:4], output, PreprocessingConfig(), progress=False)
    return output, report


def test_build_report_lists_every_session_and_skips_faults(cache, built):
    root, eids = cache
    output, report = built
    content = json.loads((output / "build_report.json").read_text())
    entries = {entry["session_id"]: entry for entry in content["sessions"]}
    assert [entry["session_id"] for entry in content["sessions"]] == eids[:4]
    assert entries[eids[0]]["status"] == entries[eids[3]]["status"] == "ok"
    assert entries[eids[1]]["status"] == "skipped"
    assert entries[eids[1]]["reason"] == "missing_data"
    assert "motion energy" in entries[eids[1]]["message"]
    assert entries[eids[2]]["reason"] == "invalid_data"
    assert "spikes" in entries[eids[2]]["message"]
    assert content["n_sessions_ok"] == 2 and content["n_sessions_skipped"] == 2
    assert content["preprocessing"] == PreprocessingConfig().to_dict()
    assert report.skipped == {eids[1]: "missing_data", eids[2]: "invalid_data"}
    for eid in (eids[0], eids[3]):
        truth = load_ground_truth(root, eid)
        exclusion = entries[eid]["exclusion"]
        first = dict(
            zip(truth["exclusion_reasons"].tolist(), truth["exclusion_first_reason_counts"])
        )
        every = dict(zip(truth["exclusion_reasons"].tolist(), truth["exclusion_reason_counts"]))
        assert {r: exclusion["excluded"][r] for r in IBL_REASONS} == first
        assert {r: exclusion["matching"][r] for r in IBL_REASONS} == every
        assert exclusion["excluded"]["behavior_out_of_range"] == 0
        counts = entries[eid]["counts"]
        assert counts["n_trials"] == 60 - sum(first.values())
        assert counts["train"] + counts["validation"] + counts["test"] == counts["n_trials"]
    card = (output / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "dataset_info" not in card
    assert "2504.08201" in card and "2407.14668" in card
    assert f"| {eids[1]} | missing_data |" in card and f"| {eids[2]} | invalid_data |" in card
    assert '"min_firing_rate": 2.0' in card


def test_configs_load_with_exact_schema_and_spikes_round_trip(cache, built):
    root, eids = cache
    output, _ = built
    everything = datasets.load_dataset(str(output))
    assert sorted(everything) == sorted(SPLIT_NAMES)
    for split in SPLIT_NAMES:
        assert everything[split].features == TRIAL_FEATURES
    assert set(everything["train"]["session_id"]) == {eids[0], eids[3]}
    assert datasets.get_dataset_config_names(str(output)) == [
        "all",
        eids[0],
        eids[3],
        "neurons",
        "sessions",
    ]

    one_session = datasets.load_dataset(str(output), eids[0])
    expected = preprocess_session(load_session(make_one(root), eids[0]), PreprocessingConfig())
    for split in SPLIT_NAMES:
        rows = one_session[split].with_format("numpy")
        assert rows.features == TRIAL_FEATURES
        positions = expected.split_indices(split)
        np.testing.assert_array_equal(rows["trial_id"], expected.trial_ids[positions])
        for position, row in zip(positions, rows):
            np.testing.assert_array_equal(row["spikes"], expected.spikes[position])  # (N, T)
            assert row["spikes"].shape == (expected.n_neurons, 100)
            np.testing.assert_array_equal(row["wheel_speed"], expected.wheel_speed[position])
        np.testing.assert_array_equal(rows["choice"], expected.choice[positions])
        np.testing.assert_array_equal(rows["block"], expected.block[positions])
        np.testing.assert_array_equal(rows["stim_on_time"], expected.stim_on_time[positions])

    neurons = datasets.load_dataset(str(output), "neurons")["train"]
    assert neurons.features == NEURON_FEATURES
    session_neurons = neurons.filter(lambda row: row["session_id"] == eids[0])
    assert session_neurons["neuron_index"] == list(range(expected.n_neurons))
    np.testing.assert_allclose(
        session_neurons["firing_rate_hz"], expected.neurons["firing_rate_hz"], rtol=1e-12
    )
    assert min(session_neurons["firing_rate_hz"]) > 2.0
    sessions = datasets.load_dataset(str(output), "sessions")["train"]
    assert sessions.features == SESSION_FEATURES
    assert sessions["session_id"] == [eids[0], eids[3]]
    row = sessions[0]
    assert row["n_neurons"] == expected.n_neurons
    assert row["n_trials_train"] == len(expected.split_indices("train"))
    assert row["preprocessing"]["bin_size"] == 0.02
    assert row["excluded_trials"] == expected.report.excluded


def test_splits_do_not_depend_on_other_sessions_or_workers(cache, built, tmp_path):
    root, eids = cache
    output, _ = built
    # a different session set, another order and two worker processes
    other = build_dataset(root, [eids[3], eids[0]], tmp_path / "other", num_proc=2, progress=False)
    assert other.built_session_ids == [eids[3], eids[0]]
    alone = build_dataset(root, [eids[3]], tmp_path / "alone", progress=False)
    assert alone.built_session_ids == [eids[3]]
    for eid in (eids[0], eids[3]):
        reference = datasets.load_dataset(str(output), eid)
        for folder in ("other", "alone") if eid == eids[3] else ("other",):
            again = datasets.load_dataset(str(tmp_path / folder), eid)
            for split in SPLIT_NAMES:
                assert again[split]["trial_id"] == reference[split]["trial_id"]
                assert again[split]["spikes"] == reference[split]["spikes"]


def test_unknown_session_id_is_an_error_before_any_work(cache, tmp_path):
    root, eids = cache
    unknown = "01234567-89ab-cdef-0123-456789abcdef"
    with pytest.raises(SessionNotFoundError, match=unknown):
        build_dataset(root, [eids[0], unknown], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_corrupted_file_aborts_the_build_naming_the_file(cache, tmp_path):
    root, eids = cache
    with pytest.raises(CorruptedFileError, match=r"spikes\.times\.npy"):
        build_dataset(root, [eids[0], eids[4]], tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "README.md").exists()


def test_existing_output_needs_overwrite(cache, built):
    root, eids = cache
    output, _ = built
    with pytest.raises(FileExistsError, match="overwrite"):
        build_dataset(root, [eids[0]], output, progress=False)


def test_loading_helpers(cache, built):
    _root, eids = cache
    output, _ = built
    subset = load_neds_dataset(output, sessions=[eids[3]])
    assert set(subset["test"]["session_id"]) == {eids[3]}
    assert len(subset["train"]) == len(datasets.load_dataset(str(output), eids[3])["train"])
    with pytest.raises(KeyError, match="not-a-session"):
        load_neds_dataset(output, sessions=["not-a-session"])
    sessions = load_sessions(output)
    normalization = load_normalization(sessions)
    assert set(normalization) == {eids[0], eids[3]}
    train = datasets.load_dataset(str(output), eids[0])["train"].with_format("numpy")
    wheel = np.stack(list(train["wheel_speed"])).astype(np.float64)
    stats = normalization[eids[0]]["wheel_speed"]
    assert stats["mean"] == pytest.approx(wheel.mean(), rel=1e-9)
    assert stats["max"] == pytest.approx(wheel.max(), rel=1e-9)
    assert load_normalization(sessions.to_pandas()) == normalization
    neurons = load_neurons(output, sessions=[eids[3], eids[0]])
    assert neurons["session_id"].iloc[0] == eids[3]
    assert (
        neurons.groupby("session_id").size()
        == sessions.to_pandas().set_index("session_id")["n_neurons"]
    ).all()


def test_trial_dataset_feeds_the_collator(built, cache):
    _, eids = cache
    output, _ = built
    dataset = NedsTrialDataset(output, split="train")
    assert dataset.session_ids == [eids[0], eids[3]]
    item = dataset[0]
    assert set(item) == {
        "session_id",
        "trial_id",
        "spikes",
        "wheel_speed",
        "whisker_motion_energy",
        "choice",
        "block",
    }
    assert item["spikes"].shape == (dataset.n_neurons[item["session_id"]], 100)
    assert len(dataset.neuron_regions[eids[0]]) == dataset.n_neurons[eids[0]]
    assert set(dataset.neuron_regions[eids[0]]) <= {"VISa", "CA1", "DG", "LP", "PO", "root", "void"}
    only_one = NedsTrialDataset(output, split="test", sessions=[eids[3]], extra_columns=["reward"])
    assert set(only_one.item_session_ids) == {eids[3]} and "reward" in only_one[0]

    from neds_hf import DataCollatorForNedsMasking, NedsConfig

    config = NedsConfig(sessions=dataset.n_neurons, num_time_bins=100)
    collator = DataCollatorForNedsMasking(
        config, normalization=dataset.normalization, neuron_regions=dataset.neuron_regions
    )
    sampler = SessionBatchSampler(dataset, batch_size=4, seed=0)
    batch = collator([dataset[i] for i in next(iter(sampler))])
    assert batch["session_index"].unique().numel() == 1


def test_prepare_data_cli(cache, tmp_path, capsys):
    root, eids = cache
    parser = add_prepare_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--cache-dir",
            str(root),
            "--eids",
            eids[0],
            "--output",
            str(tmp_path / "cli"),
            "--min-firing-rate",
            "1.0",
            "--window",
            "-0.2",
            "0.8",
            "--bin-size",
            "0.05",
            "--no-progress",
        ]
    )
    assert run_prepare_data(args) == 0
    sessions = load_sessions(tmp_path / "cli")
    assert sessions[0]["preprocessing"]["window"] == [-0.2, 0.8]
    assert sessions[0]["preprocessing"]["min_firing_rate"] == 1.0
    train = load_neds_dataset(tmp_path / "cli")["train"].with_format("numpy")
    assert train[0]["spikes"].shape[1] == 20
    args = parser.parse_args(
        [
            "--cache-dir",
            str(root),
            "--tag",
            "2022_Q2_IBL_et_al_RepeatedSite",
            "--output",
            str(tmp_path / "tag"),
        ]
    )
    assert run_prepare_data(args) == 1
    assert "--online" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache-dir", str(root), "--output", str(tmp_path / "x")])
    repeated_site = packaged_eids("repeated_site")
    assert len(repeated_site) == len(set(repeated_site)) == 83
    assert len(packaged_eids("neds_pretrain")) == 74 and len(packaged_eids("neds_heldout")) == 10


def test_named_session_lists(tmp_path, capsys):
    """`--session-list NAME` selects the shipped lists, the Brain-Wide Map release tag (online
    only, a clear error offline) and BrainWideBench's evaluation recordings."""
    from neds_hf.data.cli_prepare import BRAIN_WIDE_MAP_TAG, session_list_eids

    cache = str(tmp_path / "cache")
    assert session_list_eids("repeated_site", cache, online=False) == packaged_eids("repeated_site")
    with pytest.raises(ValueError, match=f"--tag {BRAIN_WIDE_MAP_TAG} needs the IBL server"):
        session_list_eids("brain_wide_map", cache, online=False)
    parser = add_prepare_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--cache-dir", cache, "--session-list", "brain_wide_map", "--output", str(tmp_path / "o")]
    )
    assert run_prepare_data(args) == 1
    assert "--online" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache-dir", cache, "--session-list", "bwm", "--output", "o"])
    with pytest.raises(SystemExit):  # one way of naming the sessions at a time
        parser.parse_args(
            [
                "--cache-dir",
                cache,
                "--session-list",
                "repeated_site",
                "--eids",
                "x",
                "--output",
                "o",
            ]
        )
    pytest.importorskip("ibl_bwb_eval")
    bwb_eval = session_list_eids("bwb_eval", cache, online=False)
    # the 29 BrainWideBench evaluation recordings; one of them is a repeated-site session
    assert len(bwb_eval) == len(set(bwb_eval)) == 29
    assert set(bwb_eval) & set(packaged_eids("repeated_site")) == {
        "0802ced5-33a3-405e-8336-b65ebc5cb07c"
    }


def test_push_dataset_to_hub_uploads_the_folder(built, monkeypatch):
    output, _ = built
    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "https://hub.example/commit/1"

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    url = push_dataset_to_hub(output, "org/neds-ibl", token="tok", private=True)
    assert url == "https://hub.example/commit/1"
    assert calls[1] == (
        "create_repo",
        "org/neds-ibl",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    assert calls[2][1]["repo_type"] == "dataset"
    assert calls[2][1]["folder_path"] == str(output)


# ------------------------------------------------------------------------------------------
# Sampler (no data needed)
# ------------------------------------------------------------------------------------------

ITEM_SESSIONS = np.array(["a"] * 10 + ["b"] * 7 + ["c"] * 5)


def test_single_session_batches_and_determinism():
    sampler = SessionBatchSampler(ITEM_SESSIONS, batch_size=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 2 + 2
    for batch in batches:
        assert len(set(ITEM_SESSIONS[batch])) == 1
    assert sorted(i for batch in batches for i in batch) == list(range(len(ITEM_SESSIONS)))
    assert list(SessionBatchSampler(ITEM_SESSIONS, batch_size=4, seed=1)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = list(SessionBatchSampler(ITEM_SESSIONS, 4, seed=1, drop_last=True))
    assert all(len(batch) == 4 for batch in dropped) and len(dropped) == 2 + 1 + 1


def test_mixed_batches_mix_sessions():
    batches = list(SessionBatchSampler(ITEM_SESSIONS, batch_size=11, mode="mixed", seed=0))
    assert [len(b) for b in batches] == [11, 11]
    assert any(len(set(ITEM_SESSIONS[b])) > 1 for b in batches)


@pytest.mark.parametrize("mode", ["single_session", "mixed"])
def test_distributed_shares_are_disjoint_equal_and_cover_everything(mode):
    world = 3
    full = SessionBatchSampler(ITEM_SESSIONS, 4, mode=mode, seed=5, num_replicas=1, rank=0)
    all_batches = full.all_batches()
    shares = [
        list(SessionBatchSampler(ITEM_SESSIONS, 4, mode=mode, seed=5, num_replicas=world, rank=r))
        for r in range(world)
    ]
    lengths = {len(share) for share in shares}
    assert len(lengths) == 1
    n_padded = lengths.pop() * world - len(all_batches)
    assert 0 <= n_padded < world
    flat = [tuple(batch) for share in shares for batch in share]
    # every batch appears; only the padding (batches repeated from the start) is duplicated
    assert sorted(set(flat)) == sorted(tuple(b) for b in all_batches)
    assert len(flat) - len(set(flat)) == n_padded
    # without padding the shares are disjoint
    even = ITEM_SESSIONS[:20]  # 'a' 10, 'b' 7, 'c' 3 -> 3 + 2 + 1 = 6 batches of <= 4
    if mode == "single_session":
        even_shares = [
            list(SessionBatchSampler(even, 4, seed=5, num_replicas=world, rank=r)) for r in range(3)
        ]
        items = [i for share in even_shares for batch in share for i in batch]
        assert sorted(items) == list(range(20))
    dropped = [
        list(
            SessionBatchSampler(
                ITEM_SESSIONS, 4, mode=mode, seed=5, drop_last=True, num_replicas=world, rank=r
            )
        )
        for r in range(world)
    ]
    dropped_flat = [tuple(b) for share in dropped for b in share]
    assert len(dropped_flat) == len(set(dropped_flat))  # no repeats with drop_last


def test_probe_without_spike_sorting_is_reported_in_report_and_card(tmp_path):
    import shutil

    from neds_hf.data.synthetic import (
        SyntheticSessionSpec,
        generate_session,
        write_alf_session,
        write_one_cache,
    )

    root = tmp_path / "cache"
    session = generate_session(
        SyntheticSessionSpec(
            seed=21, n_probes=2, n_trials=60, n_neurons_per_probe=10, first_block_trials=20
        )
    )
    session_path = write_alf_session(session, root)
    shutil.rmtree(session_path / "alf" / "probe01" / "pykilosort")
    write_one_cache(root)
    report = build_dataset(root, [session.eid], tmp_path / "dataset", progress=False)
    entry = json.loads((tmp_path / "dataset" / "build_report.json").read_text())["sessions"][0]
    assert report.skipped == {} and entry["status"] == "ok"
    assert entry["probes_without_spike_sorting"] == ["probe01"]
    card = (tmp_path / "dataset" / "README.md").read_text()
    assert "Probes left out (no spike sorting)" in card and f"{session.eid}: probe01" in card


def test_loads_never_mix_up_two_folders_with_the_same_name(cache, tmp_path):
    """datasets caches local folders by name: ours are keyed by content, so no stale data."""
    root, eids = cache
    loose = tmp_path / "a" / "dataset"
    strict = tmp_path / "b" / "dataset"
    build_dataset(root, eids[:1], loose, PreprocessingConfig(min_firing_rate=0.0), progress=False)
    build_dataset(root, eids[:1], strict, PreprocessingConfig(), progress=False)
    n_loose = len(load_neds_dataset(loose)["train"][0]["spikes"])
    n_strict = len(load_neds_dataset(strict)["train"][0]["spikes"])
    assert n_strict < n_loose
    # a rebuild in place is seen too
    build_dataset(root, eids[:1], loose, PreprocessingConfig(), progress=False, overwrite=True)
    assert len(load_neds_dataset(loose)["train"][0]["spikes"]) == n_strict


def test_trial_items_follow_the_declared_modalities(built, tmp_path):
    """Items carry the modalities the dataset declares, not a fixed IBL list."""
    output, _ = built
    copy = tmp_path / "declared"
    shutil.copytree(output, copy)
    report_path = copy / "build_report.json"
    report = json.loads(report_path.read_text())
    report["modalities"] = [m for m in report["modalities"] if m["name"] != "block"]
    report_path.write_text(json.dumps(report))
    item = NedsTrialDataset(copy, split="train")[0]
    assert set(item) == {
        "session_id",
        "trial_id",
        "spikes",
        "wheel_speed",
        "whisker_motion_energy",
        "choice",
    }
    assert item["wheel_speed"].dtype == np.float32 and isinstance(item["choice"], int)
