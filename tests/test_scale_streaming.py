"""Tests of streaming training: per-rank shards, a fixed number of batches per rank, the loss
curve against the in-memory path, resume, and two processes on gloo."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_training import _launch
from training_helpers import tiny_args, train_losses

from neds_hf.data.streaming import NedsStreamingTrials
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.training import NedsTrainingArguments, train


def _keys(items) -> list[tuple[str, int]]:
    return [(item["session_id"], item["trial_id"]) for item in items]


@pytest.mark.parametrize("n_sessions", [2, 3])  # whole files per rank / every 2nd row
def test_rank_shards_are_disjoint_complete_and_yield_equal_batch_counts(
    synthetic_corpus, n_sessions
):
    dataset, sessions = synthetic_corpus["dataset_dir"], synthetic_corpus["eids"][:n_sessions]
    ranks = [
        NedsStreamingTrials(
            dataset, sessions=sessions, shuffle_buffer_size=32, seed=1, num_replicas=2, rank=r
        )
        for r in (0, 1)
    ]
    shares = [_keys(rank) for rank in ranks]
    assert not set(shares[0]) & set(shares[1])
    in_memory = NedsTrialDataset(dataset, "train", sessions=sessions)
    assert sorted(shares[0] + shares[1]) == sorted(
        _keys(in_memory[i] for i in range(len(in_memory)))
    )
    assert ranks[0].n_rows == len(in_memory)
    steps = ranks[0].steps_per_epoch(8)
    for rank in ranks:
        for mode in ("mixed", "single_session"):
            batches = list(rank.batches(8, steps, mode))
            assert len(batches) == steps
            if mode == "single_session":
                assert all(len({item["session_id"] for item in b}) == 1 for b in batches)
    # more batches than a rank holds: its stream is read again, never a short epoch
    assert len(list(ranks[1].batches(8, 3 * steps))) == 3 * steps


def test_shuffle_order_follows_seed_and_epoch(synthetic_corpus):
    stream = NedsStreamingTrials(synthetic_corpus["dataset_dir"], shuffle_buffer_size=64, seed=3)
    first = _keys(stream)
    assert _keys(stream) == first  # deterministic
    stream.set_epoch(1)
    second = _keys(stream)
    assert second != first and sorted(second) == sorted(first)
    stream.set_epoch(0)
    assert _keys(stream) == first


def test_items_and_baseline_rates_match_the_in_memory_dataset(synthetic_corpus):
    dataset, sessions = synthetic_corpus["dataset_dir"], synthetic_corpus["pretrain_eids"]
    stream = NedsStreamingTrials(dataset, sessions=sessions, shuffle_buffer_size=0)
    in_memory = NedsTrialDataset(dataset, "train", sessions=sessions)
    streamed = {key: item for key, item in zip(_keys(stream.iter_all()), stream.iter_all())}
    for index in (0, len(in_memory) // 2, len(in_memory) - 1):
        expected = in_memory[index]
        item = streamed[(expected["session_id"], expected["trial_id"])]
        assert item.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(item[name], value, err_msg=name)
            assert np.asarray(item[name]).dtype == np.asarray(value).dtype, name
    from neds_hf.training.setup import mean_counts_per_bin

    means, expected_means = (mean_counts_per_bin(data, sessions) for data in (stream, in_memory))
    for session_id in sessions:
        np.testing.assert_allclose(means[session_id], expected_means[session_id], rtol=1e-12)


def test_streaming_loss_curve_has_the_in_memory_shape(synthetic_corpus, tmp_path):
    common = dict(max_steps=30, learning_rate=3e-3, eval_steps=30, save_steps=30)
    runs = {
        streaming: train_losses(
            train(
                tiny_args(
                    synthetic_corpus,
                    tmp_path / str(streaming),
                    streaming=streaming,
                    shuffle_buffer_size=64,
                    **common,
                )
            ).history
        )
        for streaming in (False, True)
    }
    decrease, final = {}, {}
    for streaming, losses in runs.items():
        first = np.mean([losses[s] for s in range(1, 6)])
        final[streaming] = np.mean([losses[s] for s in range(26, 31)])
        assert final[streaming] < 0.9 * first, (streaming, first, final[streaming])
        decrease[streaming] = 1 - final[streaming] / first
    # same data, model and schedule; only the trial order differs, so single steps' losses
    # differ by their batches (up to 2x between neighbouring steps) and only means over steps
    # are compared
    assert decrease[True] == pytest.approx(decrease[False], abs=0.1), decrease
    assert final[True] == pytest.approx(final[False], rel=0.15), final


def test_streaming_resume_continues_with_the_same_batches(synthetic_corpus, tmp_path):
    common = dict(
        streaming=True,
        shuffle_buffer_size=32,
        max_steps=8,
        save_steps=4,
        eval_steps=8,
        learning_rate=2e-3,
        hidden_dropout=0.2,
        gradient_accumulation_steps=2,
    )
    full = train(tiny_args(synthetic_corpus, tmp_path / "full", save_total_limit=0, **common))
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-4", interrupted / "checkpoint-4")
    resumed = train(
        tiny_args(
            synthetic_corpus,
            interrupted,
            resume_from_checkpoint="latest",
            save_total_limit=0,
            **common,
        )
    )
    full_losses, resumed_losses = train_losses(full.history), train_losses(resumed.history)
    for step in range(5, 9):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-6, abs=1e-7), step


def test_streaming_needs_in_process_loading(synthetic_corpus, tmp_path):
    args = tiny_args(synthetic_corpus, tmp_path, streaming=True, dataloader_num_workers=2)
    with pytest.raises(ValueError, match=r"streaming .* dataloader_num_workers=0"):
        args.validate()
    with pytest.raises(ValueError, match="shuffle_buffer_size must be >= 0"):
        NedsTrainingArguments(
            **{**vars(args), "dataloader_num_workers": 0, "shuffle_buffer_size": -1}
        ).validate()


def test_two_cpu_processes_stream_their_own_shards(synthetic_corpus, tmp_path):
    output_dir = tmp_path / "ddp"
    script_args = [
        *("--dataset", str(synthetic_corpus["dataset_dir"]), "--output_dir", str(output_dir)),
        *("--sessions", *synthetic_corpus["pretrain_eids"]),
        *("--streaming", "true", "--shuffle_buffer_size", "16", "--max_steps", "4"),
        *("--per_device_train_batch_size", "4", "--hidden_size", "32"),
        *("--num_hidden_layers", "1", "--num_attention_heads", "4"),
        *("--intermediate_size", "32", "--spike_stitcher_size", "16"),
        *("--report_to", "none", "--disable_progress_bar", "True", "--eval_steps", "4"),
    ]
    result = _launch(script_args, {"ACCELERATE_USE_CPU": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = [json.loads((output_dir / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    for summary in summaries:
        assert summary["num_processes"] == 2
        assert summary["global_step"] == 4
        assert summary["samples_seen"] == 4 * 4


def test_streaming_start_up_hashes_no_file_unless_asked(synthetic_corpus, tmp_path, monkeypatch):
    from neds_hf.data import load as load_module

    dataset = tmp_path / "dataset"  # a fresh copy: not verified yet in this process
    shutil.copytree(synthetic_corpus["dataset_dir"], dataset)
    hashed = []
    sha256 = load_module.file_sha256
    monkeypatch.setattr(
        load_module, "file_sha256", lambda path: hashed.append(path) or sha256(path)
    )
    streamed = NedsStreamingTrials(dataset, shuffle_buffer_size=0)
    assert not hashed
    assert len(_keys(streamed)) == streamed.n_rows
    NedsStreamingTrials(dataset, shuffle_buffer_size=0, hash_contents=True)
    assert hashed  # every file recorded at build time
    in_memory_copy = tmp_path / "in-memory"
    shutil.copytree(synthetic_corpus["dataset_dir"], in_memory_copy)
    hashed.clear()
    NedsTrialDataset(in_memory_copy, "train")
    assert hashed  # the in-memory path keeps the full check
