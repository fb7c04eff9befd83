"""The neds-hf command line: every subcommand explains itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from neds_hf.cli import COMMANDS, TRAINING_COMMANDS, main

ALL_COMMANDS = [*TRAINING_COMMANDS, *COMMANDS]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    printed = capsys.readouterr().out
    for command in ALL_COMMANDS:
        assert f"  {command} " in printed


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_subcommand_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "neds_hf.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")
    assert len(result.stdout.splitlines()) > 5  # options are documented
    expected = {
        "train": "--learning_rate",
        "finetune": "--model_name_or_path",
        "make-synthetic": "--sessions",
        "prepare-data": "--cache-dir",
        "evaluate": "--dataset",
        "push": "--repo-id",
        "demo": "--output",
        "export-bwb": "--replicate-seeds",
        "export-bwb-gt": "--dataset",
        "score-bwb": "--pred",
    }
    assert expected[command] in result.stdout


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["fly"])
    assert raised.value.code == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_training_arguments_errors_name_the_field(capsys):
    with pytest.raises(ValueError, match="output_dir is required; dataset is required"):
        main(["train", "--max_steps", "1"])
