"""Tests of examples/: the quickstart runs end to end on the synthetic corpus, every training
config parses, validates and builds the intended model, the accelerate files load with
accelerate's own loaders (and the 2-process CPU file really starts 2 gloo processes), and the
shell and push scripts are well formed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neds_hf.training import ARCHITECTURE_FIELDS

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CONFIG_DIR = EXAMPLES / "configs"
ACCELERATE_DIR = EXAMPLES / "accelerate"
# segment_*.yaml are action segmentation configs (tests/test_segmentation_training.py)
CONFIG_FILES = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("segment_"))

#: Transformer-block parameters per layer of the reference NEDS (hidden 256, MLP 512; neds.md
#: §2.5) and of the MtM NDT1 (hidden 512, MLP 1024; mtm.md §2.1).
NEDS_LAYER_PARAMETERS = 527_104
MTM_LAYER_PARAMETERS = 2_102_784
#: Size keys that are read only when a new model is built (not when fine-tuning).
ARCHITECTURE_KEYS = set(ARCHITECTURE_FIELDS)
FLOAT = r"(-?\d+\.\d+|n/a)"


def subprocess_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a child process: the source tree importable, offline, a private cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_CACHE"] = str(tmp_path / "hf_datasets_cache")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def load_example_module(name: str):
    """Import examples/<name>.py as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# =============================================================================================
# (a) the quickstart on the synthetic corpus
# =============================================================================================


@pytest.fixture(scope="module")
def tiny_model_dir(synthetic_corpus, tmp_path_factory) -> Path:
    """A tiny NEDS trained for 5 steps on the pretraining sessions of the shared corpus."""
    from training_helpers import tiny_args

    from neds_hf.training import train

    output_dir = tmp_path_factory.mktemp("tiny_run")
    result = train(tiny_args(synthetic_corpus, output_dir, max_steps=5))
    assert result.global_step == 5
    return Path(result.model_dir)


def parse_quickstart_output(stdout: str) -> dict[str, dict[str, str]]:
    """``{session_id: {metric line label: value text}}`` from the quickstart's session blocks."""
    sessions: dict[str, dict[str, str]] = {}
    current = None
    for line in stdout.splitlines():
        header = re.match(r"^session (\S+) \((\d+) trials, (\d+) neurons\)$", line)
        if header:
            current = sessions.setdefault(header.group(1), {})
            continue
        metric = re.match(rf"^  ([^:]+): {FLOAT}", line)
        if current is not None and metric:
            current[metric.group(1)] = metric.group(2)
        elif not line.startswith("  "):
            current = None
    return sessions


def test_quickstart_runs_encoding_and_decoding(synthetic_corpus, tiny_model_dir, tmp_path):
    from neds_hf import NedsForMaskedModeling
    from neds_hf.data.training_data import NedsTrialDataset
    from neds_hf.evaluation import evaluate_trials

    dataset_dir = synthetic_corpus["dataset_dir"]
    output_dir = tmp_path / "evaluation"
    completed = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "quickstart.py"),
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(dataset_dir),
            "--output",
            str(output_dir),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=240,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    stdout = completed.stdout
    pretrain, heldout = synthetic_corpus["pretrain_eids"], synthetic_corpus["heldout_eids"]

    # the held-out session is reported as skipped, never scored
    skipped = next(line for line in stdout.splitlines() if line.startswith("skipping"))
    assert all(eid in skipped for eid in heldout)
    printed = parse_quickstart_output(stdout)
    assert sorted(printed) == sorted(pretrain)
    for session_id, metrics in printed.items():
        for label in ("bits per spike", "wheel_speed R²", "whisker_motion_energy R²"):
            assert math.isfinite(float(metrics[label])), (session_id, label, metrics)
        for label in ("choice balanced accuracy", "block balanced accuracy"):
            assert 0.0 <= float(metrics[label]) <= 1.0, (session_id, label, metrics)

    # the printed scores are the library's evaluation of the test split, with the training's
    # normalisation, and the saved JSON holds the same numbers
    model = NedsForMaskedModeling.from_pretrained(tiny_model_dir)
    trials = NedsTrialDataset(dataset_dir, "test", sessions=pretrain)
    expected = evaluate_trials(
        model,
        [trials[i] for i in range(len(trials))],
        normalization=trials.normalization,
        split="test",
    )
    saved = json.loads((output_dir / "evaluation.json").read_text())
    assert (output_dir / "evaluation.md").is_file()
    assert saved["split"] == "test" and sorted(saved["per_session"]) == sorted(pretrain)
    for session_id in pretrain:
        for key, label in (
            ("bps", "bits per spike"),
            ("wheel_speed_r2", "wheel_speed R²"),
            ("choice_balanced_accuracy", "choice balanced accuracy"),
        ):
            value = expected.per_session[session_id][key]
            assert float(printed[session_id][label]) == pytest.approx(value, abs=6e-5)
            assert saved["per_session"][session_id][key] == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_quickstart_rejects_sessions_missing_from_dataset(synthetic_corpus, tiny_model_dir, capsys):
    quickstart = load_example_module("quickstart")
    code = quickstart.main(
        [
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(synthetic_corpus["dataset_dir"]),
            "--sessions",
            "no-such-session",
        ]
    )
    assert code == 2
    assert "no-such-session" in capsys.readouterr().err


# =============================================================================================
# (b) training configs
# =============================================================================================


def test_every_expected_config_is_present():
    assert {p.name for p in CONFIG_FILES} == {
        "pretrain_ibl.yaml",
        "finetune_ibl.yaml",
        "single_session.yaml",
        "mtm_spike_only.yaml",
        "synthetic_small.yaml",
    }


@pytest.mark.parametrize("config_path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_parses_and_validates(config_path, tmp_path):
    from neds_hf.training import parse_training_args

    args = parse_training_args(
        [
            "--config",
            str(config_path),
            "--output_dir",
            str(tmp_path / "run"),
            "--dataset",
            str(tmp_path / "data"),
        ]
    )
    args.validate()
    # command-line flags override what the YAML says
    assert args.output_dir == str(tmp_path / "run") and args.dataset == str(tmp_path / "data")
    # and the YAML's own values are taken when no flag is given
    raw = yaml.safe_load(config_path.read_text())
    bare = parse_training_args(["--config", str(config_path)])
    for key, value in raw.items():
        assert getattr(bare, key) == value, key


def _config(name: str, tmp_path: Path):
    from neds_hf.training import parse_training_args

    return parse_training_args(
        [
            "--config",
            str(CONFIG_DIR / f"{name}.yaml"),
            "--output_dir",
            str(tmp_path),
            "--dataset",
            str(tmp_path),
        ]
    )


def _layer_parameters(args) -> tuple[int, object]:
    """Parameters in the transformer blocks of the model a config builds, and its config."""
    from neds_hf import NedsForMaskedModeling
    from neds_hf.training import build_config

    config = build_config(args, {"session-a": 40})
    model = NedsForMaskedModeling(config)
    count = sum(p.numel() for name, p in model.named_parameters() if ".layers." in f".{name}")
    return count, config


def test_pretrain_ibl_is_the_reference_large_recipe(tmp_path):
    args = _config("pretrain_ibl", tmp_path)
    assert (
        args.mode,
        args.num_hidden_layers,
        args.hidden_size,
        args.num_attention_heads,
        args.intermediate_size,
    ) == ("pretrain", 22, 256, 8, 512)
    assert (args.hidden_dropout, args.attention_dropout, args.embedding_dropout) == (0.4, 0.4, 0.2)
    assert (args.mask_ratio, args.learning_rate, args.weight_decay, args.warmup_ratio) == (
        0.3,
        3e-3,
        0.01,
        0.15,
    )
    assert args.per_device_train_batch_size * 16 == 1024  # 16 GPUs x 64 in the reference
    assert args.masking_schemes is None  # uniform over the five NEDS schemes
    count, config = _layer_parameters(args)
    assert count == 22 * NEDS_LAYER_PARAMETERS  # 11.60 M, as the reference's mm_large_size.yaml
    assert [m["name"] for m in config.modalities] == [
        "spikes",
        "wheel_speed",
        "whisker_motion_energy",
        "choice",
        "block",
    ]


def test_single_session_is_the_reference_small_recipe(tmp_path):
    from neds_hf.data.cli_prepare import packaged_eids

    args = _config("single_session", tmp_path)
    assert (args.num_hidden_layers, args.per_device_train_batch_size, args.learning_rate) == (
        5,
        16,
        2e-4,
    )
    assert len(args.sessions) == 1 and args.sessions[0] in packaged_eids("neds_heldout")
    count, _ = _layer_parameters(args)
    assert count == 5 * NEDS_LAYER_PARAMETERS


def test_finetune_ibl_follows_the_reference_finetuning(tmp_path):
    from neds_hf.training import FREEZE_MODES

    args = _config("finetune_ibl", tmp_path)
    assert args.mode == "finetune" and args.model_name_or_path
    assert (args.per_device_train_batch_size, args.learning_rate, args.mask_ratio) == (
        16,
        2e-4,
        0.1,
    )
    assert args.freeze_encoder in FREEZE_MODES
    # sizes come from the pretrained model: a size key here would be silently unused
    raw = yaml.safe_load((CONFIG_DIR / "finetune_ibl.yaml").read_text())
    assert not ARCHITECTURE_KEYS & set(raw)
    # the documented freeze options are accepted as overrides
    from neds_hf.training import parse_training_args

    for extra in (
        ["--freeze_encoder", "all"],
        ["--freeze_encoder", "warmup", "--freeze_warmup_steps", "100"],
    ):
        parse_training_args(["--config", str(CONFIG_DIR / "finetune_ibl.yaml"), *extra]).validate()


def test_mtm_spike_only_builds_the_mtm_model(tmp_path):
    from neds_hf import MTM_SCHEMES

    args = _config("mtm_spike_only", tmp_path)
    assert args.spike_only
    count, config = _layer_parameters(args)
    assert count == 5 * MTM_LAYER_PARAMETERS
    assert [m["name"] for m in config.modalities] == ["spikes"]
    assert config.use_prompt and set(config.default_masking_schemes) == set(MTM_SCHEMES)
    assert (config.spike_stitcher_size, args.learning_rate) == (668, 1e-4)


def test_synthetic_small_trains_on_the_synthetic_corpus(synthetic_corpus, tmp_path):
    from neds_hf import NedsForMaskedModeling
    from neds_hf.training import parse_training_args, train

    args = parse_training_args(
        [
            "--config",
            str(CONFIG_DIR / "synthetic_small.yaml"),
            "--dataset",
            str(synthetic_corpus["dataset_dir"]),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_steps",
            "3",
            "--eval_steps",
            "3",
            "--save_steps",
            "3",
            "--disable_progress_bar",
            "true",
            "--logging_steps",
            "1",
        ]
    )
    result = train(args)
    assert result.global_step == 3
    losses = [record["train/loss"] for record in result.history if "train/loss" in record]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert any("eval/avg" in record for record in result.history)
    model = NedsForMaskedModeling.from_pretrained(result.model_dir)
    yaml_values = yaml.safe_load((CONFIG_DIR / "synthetic_small.yaml").read_text())
    assert model.config.hidden_size == yaml_values["hidden_size"]
    assert model.config.num_hidden_layers == yaml_values["num_hidden_layers"]
    assert sorted(model.config.session_ids) == sorted(synthetic_corpus["eids"])


# =============================================================================================
# (c) accelerate config files
# =============================================================================================

#: file -> (distributed_type, num_processes, mixed_precision, num_machines)
ACCELERATE_EXPECTED = {
    "cpu_single.yaml": ("NO", 1, "no", 1),
    "cpu_2proc.yaml": ("MULTI_GPU", 2, "no", 1),
    "multi_gpu.yaml": ("MULTI_GPU", 8, "bf16", 1),
    "multi_node.yaml": ("MULTI_GPU", 16, "bf16", 2),
}


def test_accelerate_files_load_with_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    assert {p.name for p in ACCELERATE_DIR.glob("*.yaml")} == set(ACCELERATE_EXPECTED)
    for name, (kind, processes, precision, machines) in ACCELERATE_EXPECTED.items():
        config = load_config_from_file(str(ACCELERATE_DIR / name))
        assert config.distributed_type.value == kind, name
        assert (config.num_processes, config.mixed_precision, config.num_machines) == (
            processes,
            precision,
            machines,
        ), name
    assert load_config_from_file(str(ACCELERATE_DIR / "cpu_single.yaml")).use_cpu is True


def test_cpu_2proc_file_starts_two_gloo_processes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "from accelerate import Accelerator\n"
        "state = Accelerator().state  # no cpu=True here: only the environment selects the CPU\n"
        "sys.stdout.write(f'rank={state.process_index} world={state.num_processes} '\n"
        "                 f'type={state.distributed_type.value} backend={state.backend}\\n')\n"
    )
    env = subprocess_env(tmp_path)
    env["ACCELERATE_USE_CPU"] = "1"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.accelerate_cli",
            "launch",
            "--config_file",
            str(ACCELERATE_DIR / "cpu_2proc.yaml"),
            "--main_process_port",
            str(free_port()),
            str(probe),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # the two processes share stdout: find the reports wherever they landed
    lines = sorted(re.findall(r"rank=\d+ world=\d+ type=\w+ backend=\w+", completed.stdout))
    assert lines == [
        "rank=0 world=2 type=MULTI_CPU backend=gloo",
        "rank=1 world=2 type=MULTI_CPU backend=gloo",
    ]


# =============================================================================================
# (d) scripts and README
# =============================================================================================


def test_shell_script_is_valid_bash_and_uses_existing_files():
    script = EXAMPLES / "pretrain_and_finetune.sh"
    completed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    referenced = set(
        re.findall(r"(?:examples|src/neds_hf)/[\w/.-]+\.(?:yaml|py|txt)", script.read_text())
    )
    assert referenced, "the script names no config"
    assert all((REPO / path).is_file() for path in referenced), referenced


def test_push_to_hub_help(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "push_to_hub.py"), "--help"],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    for option in ("--repo-id", "--private", "--token", "HF_TOKEN"):
        assert option in completed.stdout


def test_push_to_hub_uploads_the_model_folder(tiny_model_dir, monkeypatch, capsys):
    import neds_hf.hub

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs.get("private")))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload_folder", repo_id, Path(folder_path)))

            class Commit:
                commit_url = f"https://hub.invalid/{repo_id}/commit/0"

            return Commit()

    monkeypatch.setattr(neds_hf.hub, "HfApi", RecordingApi)
    push = load_example_module("push_to_hub")
    code = push.main(
        [str(tiny_model_dir), "--repo-id", "org/neds-tiny", "--private", "--token", "hf_test"]
    )
    assert code == 0
    assert calls == [
        ("init", "hf_test"),
        ("create_repo", "org/neds-tiny", True),
        ("upload_folder", "org/neds-tiny", tiny_model_dir),
    ]
    assert "https://hub.invalid/org/neds-tiny/commit/0" in capsys.readouterr().out
    assert push.main(["/no/such/model", "--repo-id", "org/x"]) == 2


def test_readme_describes_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    files = [
        p.relative_to(EXAMPLES).as_posix()
        for p in EXAMPLES.rglob("*")
        if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts
    ]
    assert files
    missing = [name for name in files if name not in readme]
    assert not missing, missing
