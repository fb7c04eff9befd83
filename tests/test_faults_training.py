"""Fault injection for training: each row is one bad input and the error it must give.

Bad arguments and datasets fail before any data is read; a checkpoint file replaced by a
hostile pickle fails on resume with an error naming the file and never runs the pickle's code;
a second training into a locked output folder names the holder; the Hub token is written
nowhere.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest
from training_helpers import TINY, tiny_args

from neds_hf.data import DatasetFolderError
from neds_hf.locking import OutputLock, OutputLockedError
from neds_hf.training import (
    CheckpointLoadError,
    NedsTrainingArguments,
    main,
    parse_training_args,
    train,
)


@pytest.fixture
def no_data_loading(monkeypatch):
    """Make any attempt to read a dataset fail the test: errors must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the dataset was read before the arguments were checked")

    import neds_hf.data.load

    monkeypatch.setattr(neds_hf.data.load, "load_neds_dataset", refuse)
    monkeypatch.setattr(neds_hf.data.load, "load_sessions", refuse)


# =============================================================================================
# Arguments: one row per bad command line, all caught before any data is read
# =============================================================================================

ARGUMENT_CASES = [
    (["--learning_rat", "0.1"], ValueError, r"unrecognised arguments: \['--learning_rat'"),
    (["--hidden_siz", "32"], ValueError, r"unrecognised arguments: \['--hidden_siz'"),
    (["--learning_rate", "-0.1"], ValueError, "learning_rate must be >= 0, got -0.1"),
    (["--weight_decay", "-1"], ValueError, "weight_decay must be >= 0"),
    (["--adam_epsilon", "0"], ValueError, "adam_epsilon must be > 0"),
    (["--per_device_train_batch_size", "0"], ValueError, "per_device_train_batch_size must be"),
    (["--save_total_limit", "-2"], ValueError, "save_total_limit must be >= 0"),
    (["--num_threads", "-1"], ValueError, "num_threads must be >= 0"),
    (["--dataloader_num_workers", "-1"], ValueError, "dataloader_num_workers must be >= 0"),
    (
        ["--dataloader_prefetch_factor", "2"],
        ValueError,
        "dataloader_prefetch_factor needs dataloader_num_workers > 0",
    ),
    (["--warmup_ratio", "1.5"], ValueError, r"warmup_ratio must be in \(0, 1\)"),
    (
        ["--hidden_size", "30", "--num_attention_heads", "4"],
        ValueError,
        r"hidden_size \(30\) must be divisible by num_attention_heads \(4\)",
    ),
    (["--hidden_dropout", "1.5"], ValueError, r"hidden_dropout must be in \[0, 1\)"),
    (["--mask_ratio", "0"], ValueError, r"mask_ratio must be in \(0, 1\]"),
    (["--masking_schemes", "bogus=1"], ValueError, r"unknown schemes \['bogus'\]"),
    (["--push_to_hub", "true"], ValueError, "push_to_hub needs hub_model_id"),
]


@pytest.mark.parametrize(
    ("flags", "error", "message"), ARGUMENT_CASES, ids=[" ".join(c[0]) for c in ARGUMENT_CASES]
)
def test_bad_argument_fails_before_data_is_read(
    flags, error, message, synthetic_corpus, tmp_path, no_data_loading
):
    argv = ["--dataset", str(synthetic_corpus["dataset_dir"]), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(error, match=message):
        train(parse_training_args([*argv, *flags]))
    assert not (tmp_path / "o").exists()


def test_command_line_rejects_a_bad_argument_before_data_is_read(tmp_path, no_data_loading):
    argv = ["--dataset", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--learning_rate"]
    with pytest.raises(
        ValueError, match=r"^Invalid training arguments: learning_rate must be >= 0"
    ):
        main([*argv, "-1"])


# =============================================================================================
# Datasets: a missing path or a folder that is not a neds_hf dataset
# =============================================================================================


def _one_cache(root: Path) -> Path:
    (root / "one_cache").mkdir()
    (root / "one_cache" / "sessions.pqt").write_bytes(b"PAR1")
    (root / "one_cache" / "datasets.pqt").write_bytes(b"PAR1")
    return root / "one_cache"


def _file(root: Path) -> Path:
    (root / "trials.parquet").write_bytes(b"PAR1")
    return root / "trials.parquet"


def _only_card(root: Path) -> Path:
    (root / "half").mkdir()
    (root / "half" / "README.md").write_text("# a dataset card\n")
    return root / "half"


DATASET_CASES = [
    (
        "missing",
        lambda root: root / "no" / "such" / "dataset",
        DatasetFolderError,
        "does not exist",
    ),
    ("one_cache", _one_cache, DatasetFolderError, "is a ONE cache"),
    ("file", _file, DatasetFolderError, "is a file, not a folder"),
    ("card_only", _only_card, DatasetFolderError, r"is not a neds_hf dataset: .*data/trials"),
]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [c[1:] for c in DATASET_CASES],
    ids=[c[0] for c in DATASET_CASES],
)
def test_bad_dataset_is_described(make, error, message, tmp_path, no_data_loading):
    dataset = make(tmp_path)
    args = NedsTrainingArguments(output_dir=str(tmp_path / "o"), dataset=str(dataset), **TINY)
    with pytest.raises(error, match=message) as caught:
        train(args)
    # the message says what a dataset folder looks like
    assert "data/trials/<session_id>" in str(caught.value)
    assert str(dataset) in str(caught.value)


def test_unreachable_hub_dataset_is_described(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    # offline, read where the libraries read it (their import-time constants)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    args = NedsTrainingArguments(output_dir="o", dataset="no-such-org/no-such-dataset", **TINY)
    with pytest.raises(FileNotFoundError, match="not a local folder and could not be loaded") as e:
        train(args)
    assert "data/trials/<session_id>" in str(e.value)


# =============================================================================================
# Resume: a checkpoint file replaced by a hostile pickle
# =============================================================================================


class _WritesMarker:
    """Unpickling this object creates a file: proof that code from the checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.fixture(scope="module")
def checkpoint_run(synthetic_corpus, tmp_path_factory) -> Path:
    """A finished 2-step run with a checkpoint after each step."""
    output_dir = tmp_path_factory.mktemp("faults") / "run"
    train(tiny_args(synthetic_corpus, output_dir, max_steps=2, save_steps=1, save_total_limit=0))
    return output_dir


CHECKPOINT_FILES = [
    "optimizer.pt",
    "model.safetensors",
    "scheduler.json",
    "rng_state_0.json",
    "trainer_state.json",
]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_hostile_checkpoint_file_is_refused_without_running_it(
    name, checkpoint_run, synthetic_corpus, tmp_path
):
    payload_check = tmp_path / "control"
    pickle.loads(pickle.dumps(_WritesMarker(payload_check)))
    assert payload_check.exists(), "the payload does not run code when unpickled"

    marker = tmp_path / "marker"
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    shutil.copytree(checkpoint_run / "checkpoint-1", output_dir / "checkpoint-1")
    target = output_dir / "checkpoint-1" / name
    target.write_bytes(pickle.dumps(_WritesMarker(marker)))
    args = tiny_args(
        synthetic_corpus,
        output_dir,
        max_steps=2,
        save_steps=1,
        save_total_limit=0,
        resume_from_checkpoint="latest",
    )
    with pytest.raises(ValueError, match="checkpoint file") as caught:
        train(args)
    assert str(target) in str(caught.value)
    assert not marker.exists(), f"code in {name} ran on resume"
    assert not (output_dir / "checkpoint-2").exists()
    if name != "trainer_state.json":
        assert isinstance(caught.value, CheckpointLoadError)


def test_missing_checkpoint_file_is_named(checkpoint_run, synthetic_corpus, tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    shutil.copytree(checkpoint_run / "checkpoint-1", output_dir / "checkpoint-1")
    (output_dir / "checkpoint-1" / "optimizer.pt").unlink()
    args = tiny_args(
        synthetic_corpus, output_dir, max_steps=2, save_steps=1, resume_from_checkpoint="latest"
    )
    with pytest.raises(CheckpointLoadError, match=r"checkpoint file .*optimizer\.pt is missing"):
        train(args)


# =============================================================================================
# Two trainings into one output folder
# =============================================================================================


def test_second_training_into_a_locked_output_names_the_holder(synthetic_corpus, tmp_path):
    output_dir = tmp_path / "run"
    with OutputLock(output_dir, "training"):
        with pytest.raises(OutputLockedError, match=r"is in use by another training: pid \d+"):
            train(tiny_args(synthetic_corpus, output_dir, max_steps=1))
    assert not list(output_dir.glob("checkpoint-*")) if output_dir.exists() else True
    # once released, the same run goes ahead and gives the lock back
    result = train(tiny_args(synthetic_corpus, output_dir, max_steps=1))
    assert result.global_step == 1
    assert not (tmp_path / ".run.lock").exists()


# =============================================================================================
# The Hub token is written nowhere
# =============================================================================================


def test_hub_token_is_never_written(synthetic_corpus, tmp_path, monkeypatch, capsys, caplog):
    from unittest import mock

    from huggingface_hub import HfApi

    token = "hf_SECRETtoken1234567890"
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: mock.MagicMock(repo_id=a[0]))
    monkeypatch.setattr(
        HfApi, "upload_folder", lambda self, **k: mock.MagicMock(commit_url="https://hub/commit")
    )
    output_dir = tmp_path / "run"
    flags = {
        **{k: str(v) for k, v in TINY.items()},
        "report_to": "tensorboard",
        "dataset": str(synthetic_corpus["dataset_dir"]),
        "output_dir": str(output_dir),
        "max_steps": "2",
        "push_to_hub": "true",
        "hub_model_id": "me/neds-tiny",
        "hub_token": token,
    }
    argv = [item for name, value in flags.items() for item in (f"--{name}", value)]
    argv += ["--sessions", *synthetic_corpus["pretrain_eids"]]
    with caplog.at_level(logging.DEBUG):
        assert main(argv) == 0
    captured = capsys.readouterr()
    assert "pushed" in captured.out
    files = [p for p in output_dir.rglob("*") if p.is_file()]
    hparams = [p for p in files if p.name == "hparams.yml"]
    assert hparams and "<redacted>" in hparams[0].read_text()  # the tracker got the arguments
    assert (output_dir / "model" / "training_config.yaml").is_file()
    leaks = [str(p) for p in files if token.encode() in p.read_bytes()]
    assert leaks == []
    assert token not in captured.out + captured.err + caplog.text


# =============================================================================================
# A run that fails while writing its final model keeps the previous model
# =============================================================================================


def test_failed_final_write_keeps_the_previous_model(
    checkpoint_run, synthetic_corpus, tmp_path, monkeypatch
):
    import neds_hf.hub

    output_dir = tmp_path / "run"
    shutil.copytree(checkpoint_run, output_dir)
    before = {p.name: p.read_bytes() for p in (output_dir / "model").iterdir()}
    real_save = neds_hf.hub.save_model_with_card

    def save_then_fail(model, folder, **kwargs):
        real_save(model, folder, **kwargs)  # a half-finished write: files there, then an error
        raise OSError("disk full")

    monkeypatch.setattr(neds_hf.hub, "save_model_with_card", save_then_fail)
    args = tiny_args(synthetic_corpus, output_dir, max_steps=1, overwrite_output_dir=True)
    with pytest.raises(OSError, match="disk full"):
        train(args)
    after = {p.name: p.read_bytes() for p in (output_dir / "model").iterdir()}
    assert after == before
    assert not [p.name for p in output_dir.iterdir() if p.name.startswith(".")]
