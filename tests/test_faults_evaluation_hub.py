"""Fault injection for evaluation, reports, the demo's output folder and the Hub push.

Each row of a table below is one bad input (or failure) and what the package must do about it:
a clear error naming what is wrong, or the previous outputs left exactly as they were. The
next bad input found is one more row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, constants
from test_evaluation import tiny_config

from neds_hf import NedsForMaskedModeling
from neds_hf.data.training_data import NedsTrialDataset
from neds_hf.demo import DEMO_SUBDIRS, prepare_output_dir, restore_output_dir, run_demo
from neds_hf.evaluation import (
    EvaluationReport,
    add_evaluate_arguments,
    evaluate_trials,
)
from neds_hf.hub import (
    HubUnreachableError,
    add_push_arguments,
    push_model_to_hub,
    run_push,
    save_model_with_card,
)

REPO_ID = "neds-org/faults"


# =============================================================================================
# Fixtures
# =============================================================================================


@pytest.fixture(scope="module")
def test_data(synthetic_corpus) -> NedsTrialDataset:
    return NedsTrialDataset(synthetic_corpus["dataset_dir"], "test")


@pytest.fixture(scope="module")
def model(test_data) -> NedsForMaskedModeling:
    torch.manual_seed(0)
    return NedsForMaskedModeling(tiny_config(test_data.n_neurons)).eval()


@pytest.fixture
def model_dir(model, tmp_path) -> Path:
    return save_model_with_card(model, tmp_path / "model", repo_id=REPO_ID)


def folder_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder` (hidden files included)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# =============================================================================================
# Non-finite values reaching evaluation
# =============================================================================================


def _spoil(field: str, value: float, where: Callable[[np.ndarray], None] | None = None):
    """A trial transform that puts `value` into one entry of `field`."""

    def spoil(trial: dict[str, Any]) -> dict[str, Any]:
        trial = dict(trial)
        array = np.array(trial[field], dtype=np.float32)
        array.reshape(-1)[3] = value
        trial[field] = array
        return trial

    return spoil


NON_FINITE_CASES = [
    ("nan-wheel-speed", _spoil("wheel_speed", np.nan), "field 'wheel_speed' holds 1 NaN/inf"),
    (
        "inf-whisker",
        _spoil("whisker_motion_energy", np.inf),
        "field 'whisker_motion_energy' holds 1 NaN/inf",
    ),
    ("nan-spikes", _spoil("spikes", np.nan), "field 'spikes' holds 1 NaN/inf"),
    ("inf-spikes", _spoil("spikes", np.inf), "field 'spikes' holds 1 NaN/inf"),
]


@pytest.mark.parametrize(
    ("spoil", "fragment"),
    [case[1:] for case in NON_FINITE_CASES],
    ids=[case[0] for case in NON_FINITE_CASES],
)
def test_non_finite_trial_values_are_named(model, test_data, spoil, fragment):
    trials = [test_data[i] for i in range(len(test_data))]
    bad = len(trials) // 2
    trials[bad] = spoil(trials[bad])
    session_id, trial_id = trials[bad]["session_id"], trials[bad]["trial_id"]
    with pytest.raises(ValueError, match=fragment) as error:
        evaluate_trials(model, trials, normalization=test_data.normalization)
    assert f"session {session_id}: trial {trial_id}" in str(error.value)


# =============================================================================================
# Outputs left as they were when a write fails
# =============================================================================================


def _failing_replace(*args: Any, **kwargs: Any) -> None:
    raise OSError("disk full (injected)")


def _evaluation_json_write_fails(tmp_path: Path, model: Any) -> tuple[Path, Callable[[], Any]]:
    report = EvaluationReport(
        per_session={"s": {"bps": 0.5}}, average={"bps": 0.5}, protocols=["encoding"], split="test"
    )
    report.save(tmp_path)  # the good previous result
    report.average["bps"] = 0.9

    def act() -> Any:
        with mock.patch("neds_hf.atomic.os.replace", _failing_replace):
            report.save(tmp_path)

    return tmp_path, act


def _model_save_fails(tmp_path: Path, model: Any) -> tuple[Path, Callable[[], Any]]:
    folder = save_model_with_card(model, tmp_path / "model", repo_id=REPO_ID)

    def act() -> Any:
        with mock.patch.object(
            NedsForMaskedModeling, "save_pretrained", side_effect=OSError("disk full (injected)")
        ):
            save_model_with_card(model, folder, repo_id="other/name", datasets=["org/d"])

    return folder, act


def _demo_overwrite_fails(tmp_path: Path, model: Any) -> tuple[Path, Callable[[], Any]]:
    output_dir = tmp_path / "demo"
    for name in DEMO_SUBDIRS:
        (output_dir / name).mkdir(parents=True)
        (output_dir / name / "previous.txt").write_text(f"previous {name}")
    (output_dir / "notes.txt").write_text("user file")

    def half_written_run(output_dir: Path, settings: Any, progress: bool) -> Any:
        (output_dir / "report").mkdir()
        (output_dir / "report" / "report.md").write_text("half written")
        raise KeyboardInterrupt

    def act() -> Any:
        with mock.patch("neds_hf.demo._run_stages", half_written_run):
            run_demo(output_dir, overwrite=True, pretrain_steps=1, finetune_steps=1)

    return output_dir, act


WRITE_FAILURE_CASES = [
    ("evaluation-json-replace-fails", _evaluation_json_write_fails, OSError, "disk full"),
    ("model-folder-save-fails", _model_save_fails, OSError, "disk full"),
    ("demo-overwrite-interrupted", _demo_overwrite_fails, KeyboardInterrupt, None),
]


@pytest.mark.parametrize(
    ("setup", "error", "fragment"),
    [case[1:] for case in WRITE_FAILURE_CASES],
    ids=[case[0] for case in WRITE_FAILURE_CASES],
)
def test_failed_writes_leave_previous_outputs(tmp_path, model, setup, error, fragment):
    folder, act = setup(tmp_path, model)
    before = folder_digest(folder)
    with pytest.raises(error, match=fragment):
        act()
    assert folder_digest(folder) == before  # same files, same bytes, no leftovers


def test_demo_overwrite_drops_previous_folders_after_success(tmp_path):
    output_dir = tmp_path / "demo"
    (output_dir / "report").mkdir(parents=True)
    (output_dir / "report" / "report.md").write_text("old")
    backup = prepare_output_dir(output_dir, overwrite=True)
    assert backup is not None and not (output_dir / "report").exists()
    (output_dir / "report").mkdir()
    (output_dir / "report" / "report.md").write_text("new")
    restore_output_dir(output_dir, backup, succeeded=True)
    assert (output_dir / "report" / "report.md").read_text() == "new"
    assert sorted(os.listdir(output_dir)) == ["report"]  # the backup is gone


# =============================================================================================
# Pushing without a Hub, and push inputs
# =============================================================================================


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there


UNREACHABLE_CASES = [
    ("offline-mode", _offline, "OfflineModeIsEnabled"),
    ("connection-refused", _connection_refused, "ConnectError"),
]


@pytest.mark.parametrize(
    ("make_unreachable", "cause"),
    [case[1:] for case in UNREACHABLE_CASES],
    ids=[case[0] for case in UNREACHABLE_CASES],
)
@pytest.mark.parametrize("eval_results", [None, "given"], ids=["card-kept", "card-rerendered"])
def test_push_without_hub_is_one_clear_error_and_writes_nothing(
    model_dir, monkeypatch, capsys, make_unreachable, cause, eval_results
):
    make_unreachable(monkeypatch)
    (model_dir / "README.md").unlink()  # a push would render a card
    before = folder_digest(model_dir)
    results = (
        [
            {
                "task_type": "t",
                "dataset_type": "d",
                "dataset_name": "d",
                "metric_type": "m",
                "metric_value": 1.0,
            }
        ]
        if eval_results
        else None
    )
    with pytest.raises(HubUnreachableError, match=f"cannot reach the Hugging Face Hub.*{cause}"):
        push_model_to_hub(model_dir, REPO_ID, token="hf_x", eval_results=results)
    assert folder_digest(model_dir) == before

    args = add_push_arguments(argparse.ArgumentParser()).parse_args(
        [str(model_dir), "--repo-id", REPO_ID, "--token", "hf_x"]
    )
    assert run_push(args) == 1
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face Hub" in err and "Traceback" not in err
    assert folder_digest(model_dir) == before


OPTIONAL_KEYS_CASES = [
    ("no-task-name", ("task_name",)),
    ("no-metric-name", ("metric_name",)),
    ("no-split-task-or-metric-name", ("task_name", "metric_name", "dataset_split")),
]


@pytest.mark.parametrize(
    "omitted", [case[1] for case in OPTIONAL_KEYS_CASES], ids=[c[0] for c in OPTIONAL_KEYS_CASES]
)
def test_cli_push_eval_results_without_optional_keys(model_dir, tmp_path, omitted):
    entry = {
        "task_type": "neural-encoding",
        "task_name": "Neural encoding",
        "dataset_type": "neds-synthetic",
        "dataset_name": "synthetic",
        "dataset_split": "test",
        "metric_type": "bps",
        "metric_name": "bits per spike",
        "metric_value": 0.25,
    }
    for key in omitted:
        del entry[key]
    results_path = tmp_path / "ev.json"
    results_path.write_text(json.dumps([entry]), encoding="utf-8")
    uploaded: dict[str, str] = {}

    def upload_folder(api: HfApi, **kwargs: Any) -> Any:
        uploaded["README.md"] = (Path(kwargs["folder_path"]) / "README.md").read_text()
        return mock.MagicMock(commit_url="https://hub.test/commit/0")

    args = add_push_arguments(argparse.ArgumentParser()).parse_args(
        [str(model_dir), "--repo-id", REPO_ID, "--eval-results", str(results_path)]
    )
    with (
        mock.patch.object(HfApi, "create_repo", autospec=True),
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=upload_folder),
    ):
        assert run_push(args) == 0
    readme = uploaded["README.md"]
    assert "0.25" in readme and "type: bps" in readme
    # the evaluation table falls back on the type where a name is missing
    row = next(line for line in readme.splitlines() if line.startswith("| ") and "0.25" in line)
    assert ("neural-encoding" in row) == ("task_name" in omitted)
    assert "| bps |" in row if "metric_name" in omitted else "| bits per spike |" in row


# =============================================================================================
# Command-line parsing
# =============================================================================================

EVALUATE_ARGV_CASES = [
    ("flag-before-model", ["--region-probe", "MODEL", "--dataset", "D"], True),
    ("flag-after-dataset", ["MODEL", "--dataset", "D", "--region-probe"], True),
    ("flag-between", ["MODEL", "--region-probe", "--dataset", "D"], True),
    ("no-flag", ["MODEL", "--dataset", "D"], False),
]


@pytest.mark.parametrize(
    ("argv", "probe"),
    [case[1:] for case in EVALUATE_ARGV_CASES],
    ids=[case[0] for case in EVALUATE_ARGV_CASES],
)
def test_evaluate_region_probe_flag_never_swallows_the_model(argv, probe):
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_evaluate_arguments(parser)
    args = parser.parse_args(argv)
    assert args.model == "MODEL" and args.dataset == "D" and args.region_probe is probe
    assert args.region_levels == ["region_beryl", "region_cosmos"]
