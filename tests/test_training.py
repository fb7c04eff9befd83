"""Accelerate training: configs, optimisation, checkpoints, exact resume, fine-tuning, errors,
and two CPU processes on gloo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from training_helpers import tiny_args, train_losses

from neds_hf import NedsConfig, NedsForMaskedModeling
from neds_hf.training import (
    NedsTrainingArguments,
    parameter_groups,
    parse_training_args,
    push_trained_model,
    train,
)


@pytest.fixture(scope="module")
def pretrained(synthetic_corpus, tmp_path_factory):
    """A short pretraining run shared by several tests."""
    output_dir = tmp_path_factory.mktemp("pretrain")
    args = tiny_args(
        synthetic_corpus,
        output_dir,
        max_steps=30,
        learning_rate=3e-3,
        eval_steps=15,
        save_steps=10,
        save_total_limit=2,
        report_to="tensorboard",
    )
    return args, train(args)


# ------------------------------------------------------------------------------------------------


def test_yaml_config_with_command_line_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "learning_rate": 1e-3,
                "max_steps": 3,
                "sessions": ["a", "b"],
                "masking_schemes": ["neural=1", "cross_modal=3"],
            }
        )
    )
    args = parse_training_args(
        ["--config", str(config), "--max_steps", "7", "--dataset", "d", "--output_dir", "o"]
    )
    assert (args.learning_rate, args.max_steps, args.sessions) == (1e-3, 7, ["a", "b"])
    assert args.scheme_probabilities() == {"neural": 1.0, "cross_modal": 3.0}
    args.validate()
    config.write_text(yaml.safe_dump({"learning_rte": 1e-3}))
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rte'\]"):
        parse_training_args(["--config", str(config)])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_training_args(["--config", str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modalities": ["spikes", "pupil"]}, r"unknown modalities \['pupil'\]"),
        ({"mode": "finetune"}, r"mode=finetune needs model_name_or_path"),
        ({"batch_sampling": "random"}, r"batch_sampling must be one of"),
        ({"masking_schemes": ["neural=abc"]}, r"not name=probability"),
        ({"freeze_encoder": "all"}, r"freeze_encoder needs a pretrained encoder"),
        ({"loss_weights": ["choice=x"]}, r"loss_weights entry 'choice=x' is not name=weight"),
        ({"best_model_metric": "bps"}, r"best_model_metric must be one of"),
        ({"trial_level_readout": "pooled"}, r"trial_level_readout must be one of"),
    ],
)
def test_invalid_arguments_are_reported_together(overrides, message):
    args = NedsTrainingArguments(output_dir="o", dataset="d", **overrides)
    with pytest.raises(ValueError, match=message):
        args.validate()


def small_model(num_hidden_layers: int) -> NedsForMaskedModeling:
    """A randomly initialised model with one session of 4 neurons and hidden size 32."""
    return NedsForMaskedModeling(
        NedsConfig(
            hidden_size=32,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=4,
            intermediate_size=32,
            num_time_bins=10,
            sessions={"s": 4},
        )
    )


def test_parameter_groups_decay_only_weight_matrices():
    model = small_model(num_hidden_layers=2)
    groups = parameter_groups(model, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    not_decayed = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed | not_decayed == set(names.values()) and not decayed & not_decayed
    assert all(n.endswith(".weight") and "norm" not in n and "embedding" not in n for n in decayed)
    assert "neds.layers.0.attention.qkv_proj.weight" in decayed
    for expected in (
        "neds.mask_token",
        "neds.layers.0.attention.qkv_proj.bias",
        "neds.final_norm.weight",
        "neds.time_embedding.weight",
        "neds.spike_stitcher.session_neurons.neuron_weight",
        "spike_readout.session_neurons.neuron_weight",
    ):
        assert expected in not_decayed
    encoder = {names[id(p)] for g in groups if g["encoder"] for p in g["params"]}
    assert encoder == {
        n for n in names.values() if n.startswith(("neds.layers.", "neds.final_norm."))
    }
    session = {names[id(p)] for g in groups if g["session"] for p in g["params"]}
    assert session == {n for n in names.values() if "session_" in n}
    assert "spike_readout.session_neurons.neuron_weight" in session


def test_session_learning_rate_scale_follows_the_schedule():
    """Per-session parameters run at a fixed multiple of the others' rate at every step."""
    from neds_hf.training.setup import build_optimizer, build_scheduler

    model = small_model(num_hidden_layers=1)
    args = NedsTrainingArguments(
        dataset="d", output_dir="o", learning_rate=1e-3, session_learning_rate_scale=4.0
    )
    optimizer, _ = build_optimizer(model, args, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, args, total_steps=20)
    session_ids = {id(p) for n, p in model.named_parameters() if "session_" in n}
    peaks = {"session": 0.0, "shared": 0.0}
    for _ in range(20):
        rates = {
            "session" if id(g["params"][0]) in session_ids else "shared": g["lr"]
            for g in optimizer.param_groups
        }
        assert rates["session"] == pytest.approx(4.0 * rates["shared"])
        peaks = {k: max(v, rates[k]) for k, v in peaks.items()}
        optimizer.step()
        scheduler.step()
    assert peaks["shared"] == pytest.approx(1e-3) and peaks["session"] == pytest.approx(4e-3)
    # at scale 1 the groups are those of earlier checkpoints (no session-only group), so that
    # their optimizer state still loads
    default = NedsTrainingArguments(dataset="d", output_dir="o", learning_rate=1e-3)
    optimizer, _ = build_optimizer(model, default, torch.device("cpu"))
    earlier = parameter_groups(model, default.weight_decay, session_groups=False)
    assert len(optimizer.param_groups) == len(earlier) < len(parameter_groups(model, 0.01))
    with pytest.raises(ValueError, match="session_learning_rate_scale must be > 0"):
        NedsTrainingArguments(
            dataset="d", output_dir="o", session_learning_rate_scale=0.0
        ).validate()


def test_cpu_optimizer_is_fused_adamw_with_the_default_update():
    """On CPU the optimizer runs torch's fused AdamW kernel, and its updates are the default
    implementation's (same groups, rates and decay) to float rounding over several steps; a
    state saved by the default implementation (earlier checkpoints) loads into it."""
    from neds_hf.training.setup import build_optimizer

    args = NedsTrainingArguments(dataset="d", output_dir="o", learning_rate=3e-3)
    fused_model, plain_model = small_model(num_hidden_layers=1), small_model(num_hidden_layers=1)
    plain_model.load_state_dict(fused_model.state_dict())
    fused, _ = build_optimizer(fused_model, args, torch.device("cpu"))
    assert all(group["fused"] for group in fused.param_groups)
    plain_parameters = dict(zip(fused_model.parameters(), plain_model.parameters()))
    plain = torch.optim.AdamW(
        [
            {
                "params": [plain_parameters[p] for p in group["params"]],
                "weight_decay": group["weight_decay"],
            }
            for group in fused.param_groups
        ],
        lr=args.learning_rate,
        eps=args.adam_epsilon,
    )
    assert not any(group["fused"] for group in plain.param_groups)
    initial = {name: p.detach().clone() for name, p in fused_model.named_parameters()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for fused_parameter, plain_parameter in plain_parameters.items():
            fused_parameter.grad = torch.randn(fused_parameter.shape, generator=generator)
            plain_parameter.grad = fused_parameter.grad.clone()
        fused.step()
        plain.step()
    for (name, fused_parameter), plain_parameter in zip(
        fused_model.named_parameters(), plain_model.parameters()
    ):
        assert not torch.equal(fused_parameter, initial[name]), name  # every parameter moved
        torch.testing.assert_close(fused_parameter, plain_parameter, rtol=1e-5, atol=1e-7)
    fused.load_state_dict(plain.state_dict())
    fused.step()
    assert all(torch.isfinite(p).all() for p in fused_model.parameters())


def test_pretraining_run(pretrained, synthetic_corpus):
    args, result = pretrained
    output_dir = Path(args.output_dir)
    assert result.global_step == 30 and result.num_processes == 1
    from neds_hf.data.training_data import NedsTrialDataset

    n_train = len(NedsTrialDataset(args.dataset, "train", sessions=args.sessions))
    batches_per_epoch = -(-n_train // 8)  # mixed batches, the last one of an epoch is smaller
    full_epochs, extra_steps = divmod(30, batches_per_epoch)
    assert result.global_batch_size == 8
    assert result.samples_seen == full_epochs * n_train + extra_steps * 8
    assert result.epochs_completed == full_epochs
    # checkpoints every 10 steps, only the last two kept, written atomically (no leftovers)
    assert sorted(p.name for p in output_dir.glob("checkpoint-*")) == [
        "checkpoint-20",
        "checkpoint-30",
    ]
    assert not list(output_dir.glob(".*tmp"))
    state = json.loads((output_dir / "checkpoint-30" / "trainer_state.json").read_text())
    assert (
        state["global_step"] == 30
        and state["fingerprint"]["sessions"] == synthetic_corpus["pretrain_eids"]
    )
    # best model by validation score, final model with card and model-index
    assert result.best_step in (15, 30) and (output_dir / "best" / "model.safetensors").exists()
    card = (output_dir / "model" / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    metrics = {m["type"] for r in metadata["model-index"][0]["results"] for m in r["metrics"]}
    assert {"bps", "wheel_speed_r2", "choice_balanced_accuracy", "avg"} <= metrics
    loaded = NedsForMaskedModeling.from_pretrained(output_dir / "model")
    assert loaded.config.session_ids == synthetic_corpus["pretrain_eids"]
    assert loaded.config.behavior_normalization == "zscore"
    assert list(output_dir.glob("neds/**/events.out.tfevents.*")), "no tensorboard events"
    # one-cycle schedule: warm-up over 15 % of the steps, then cosine decay
    rates = {
        e["step"]: e["train/learning_rate"] for e in result.history if "train/learning_rate" in e
    }
    peak_step = max(rates, key=rates.get)
    assert (
        peak_step in (4, 5) and rates[1] < rates[peak_step] and rates[30] < 0.01 * rates[peak_step]
    )
    losses = train_losses(result.history)
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(26, 31)) / 5
    assert last < 0.9 * first, (first, last)


@pytest.mark.parametrize("batch_sampling", ["mixed", "single_session"])
def test_interrupted_and_resumed_equals_uninterrupted(synthetic_corpus, tmp_path, batch_sampling):
    common = dict(
        max_steps=8,
        save_steps=4,
        eval_steps=6,
        learning_rate=2e-3,
        batch_sampling=batch_sampling,
        hidden_dropout=0.2,
        attention_dropout=0.3,
        embedding_dropout=0.1,
        gradient_accumulation_steps=2,
        max_grad_norm=1.0,
    )
    full = train(tiny_args(synthetic_corpus, tmp_path / "full", save_total_limit=0, **common))
    # the state a crash after step 4 leaves behind: only the first checkpoint
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
    assert resumed.global_step == 8
    full_losses, resumed_losses = train_losses(full.history), train_losses(resumed.history)
    assert sorted(resumed_losses) == list(range(1, 9))  # history carried over from the checkpoint
    for step in range(5, 9):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-6, abs=1e-7), step
    for (name, a), (_, b) in zip(
        full.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert resumed.best_score == pytest.approx(full.best_score, rel=1e-6)


def test_finetuning_adds_sessions_and_freezes_the_encoder(pretrained, synthetic_corpus, tmp_path):
    _, pretrain_result = pretrained
    base = NedsForMaskedModeling.from_pretrained(pretrain_result.model_dir)
    encoder = {
        n: p.clone()
        for n, p in base.state_dict().items()
        if n.startswith(("neds.layers.", "neds.final_norm."))
    }
    heldout = synthetic_corpus["heldout_eids"]

    frozen = train(
        tiny_args(
            synthetic_corpus,
            tmp_path / "frozen",
            mode="finetune",
            sessions=heldout,
            model_name_or_path=pretrain_result.model_dir,
            freeze_encoder="all",
            max_steps=4,
            learning_rate=1e-2,
        )
    )
    assert frozen.model.config.session_ids == heldout
    state = frozen.model.state_dict()
    for name, value in encoder.items():
        assert torch.equal(state[name], value), name
    assert not torch.equal(
        state["neds.modality_embedding.weight"], base.state_dict()["neds.modality_embedding.weight"]
    )

    warm = train(
        tiny_args(
            synthetic_corpus,
            tmp_path / "warm",
            mode="finetune",
            sessions=heldout,
            model_name_or_path=pretrain_result.model_dir,
            freeze_encoder="warmup",
            freeze_warmup_steps=2,
            max_steps=4,
            save_steps=2,
            save_total_limit=0,
            learning_rate=1e-2,
            keep_pretrained_sessions=True,
        )
    )
    assert warm.model.config.session_ids == [*synthetic_corpus["pretrain_eids"], *heldout]
    from safetensors.torch import load_file

    after_warmup = load_file(tmp_path / "warm" / "checkpoint-2" / "model.safetensors")
    for name, value in encoder.items():
        assert torch.equal(after_warmup[name], value), f"{name} moved during the frozen warm-up"
    assert any(not torch.equal(warm.model.state_dict()[n], v) for n, v in encoder.items())


def _rewrite_trials(dataset_dir: Path, rename: dict[str, str]) -> None:
    for path in dataset_dir.glob("data/trials/*/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.rename_columns([rename.get(c, c) for c in table.column_names]), path)


def test_bad_inputs_fail_before_training(pretrained, synthetic_corpus, tmp_path):
    pretrain_args, _ = pretrained
    with pytest.raises(KeyError, match=r"sessions not in the dataset.*no-such-session"):
        train(
            tiny_args(synthetic_corpus, tmp_path / "a", sessions=["no-such-session"], max_steps=2)
        )
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_corpus["dataset_dir"], broken)
    _rewrite_trials(broken, {"whisker_motion_energy": "whisker"})
    with pytest.raises(
        ValueError,
        match=r"does not match the neds_hf trials schema: "
        r"missing columns \['whisker_motion_energy'\]",
    ):
        train(tiny_args(synthetic_corpus, tmp_path / "b", dataset=str(broken), max_steps=2))
    checkpoint = str(Path(pretrain_args.output_dir) / "checkpoint-30")
    with pytest.raises(ValueError, match="another configuration"):
        train(
            tiny_args(
                synthetic_corpus,
                tmp_path / "c",
                hidden_size=64,
                max_steps=30,
                resume_from_checkpoint=checkpoint,
            )
        )
    with pytest.raises(
        ValueError, match=r"belongs to another run: learning_rate: checkpoint 0.003 vs now 0.001"
    ):
        train(
            tiny_args(
                synthetic_corpus,
                tmp_path / "d",
                max_steps=30,
                learning_rate=1e-3,
                eval_steps=15,
                save_steps=10,
                resume_from_checkpoint=checkpoint,
            )
        )
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        train(tiny_args(synthetic_corpus, Path(pretrain_args.output_dir), max_steps=2))
    for name in "abcd":
        assert not list((tmp_path / name).glob("checkpoint-*")), f"run {name} started training"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(
    script_args: list[str], env_extra: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(Path(__file__).with_name("distributed_train_check.py")),
        *script_args,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_cpu_processes_on_gloo(synthetic_corpus, tmp_path):
    output_dir = tmp_path / "ddp"
    script_args = [
        "--dataset",
        str(synthetic_corpus["dataset_dir"]),
        "--output_dir",
        str(output_dir),
        "--sessions",
        *synthetic_corpus["pretrain_eids"],
        "--max_steps",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--hidden_size",
        "32",
        "--num_hidden_layers",
        "1",
        "--num_attention_heads",
        "4",
        "--intermediate_size",
        "32",
        "--spike_stitcher_size",
        "16",
        "--report_to",
        "none",
        "--disable_progress_bar",
        "True",
        "--eval_steps",
        "4",
        "--gradient_accumulation_steps",
        "2",
    ]
    result = _launch(script_args, {"ACCELERATE_USE_CPU": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = [json.loads((output_dir / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [s["num_processes"] for s in summaries] == [2, 2]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    for summary in summaries:
        assert summary["global_step"] == 4
        assert summary["global_batch_size"] == 4 * 2 * 2
        assert summary["samples_seen"] == 4 * 2 * 4  # steps x accumulation x per-device batch
    assert (output_dir / "model" / "model.safetensors").exists()


def test_process_count_mismatch_is_refused(synthetic_corpus, tmp_path, monkeypatch):
    # a launcher that announces 2 processes to a script whose Accelerate state already holds
    # one process (initialised here first, so the test does not depend on the tests before it:
    # a fresh state would try to join a 2-process CPU group)
    from accelerate import PartialState

    PartialState(cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(
        RuntimeError, match="the launcher started 2 processes but Accelerate sees 1"
    ):
        train(tiny_args(synthetic_corpus, tmp_path / "run", max_steps=2))
    assert not (tmp_path / "run").exists()


def test_early_stopping_and_push_to_hub(synthetic_corpus, tmp_path, monkeypatch):
    from unittest import mock

    from huggingface_hub import HfApi

    uploads = []

    def record_upload(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        uploads.append({**kwargs, "files": sorted(p.name for p in folder.iterdir())})
        return mock.MagicMock(oid="0" * 40)

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: mock.MagicMock(repo_id=a[0]))
    monkeypatch.setattr(HfApi, "upload_folder", record_upload)
    # a zero learning rate never improves the validation score: patience 2 stops at step 3
    args = tiny_args(
        synthetic_corpus,
        tmp_path / "run",
        max_steps=50,
        eval_steps=1,
        save_steps=100,
        learning_rate=0.0,
        early_stopping_patience=2,
        push_to_hub=True,
        hub_model_id="me/neds-tiny",
        hub_token="hf_fake",
    )
    result = train(args)
    assert result.stopped_early and result.global_step == 3 and result.best_step == 1
    assert result.model_step == 1  # the best step's weights are the model
    assert (tmp_path / "run" / "checkpoint-3").is_dir()  # the stop is checkpointed
    assert uploads == []  # training never uploads: the entry point pushes after it
    push_trained_model(args, result)
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "me/neds-tiny"
    assert {"config.json", "model.safetensors", "modeling_neds.py", "README.md"} <= set(
        uploads[0]["files"]
    )


def test_bf16_mixed_precision_run(synthetic_corpus, tmp_path):
    """A bf16 run from the command line (its own process: Accelerate's state is per process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    flags = {
        "dataset": synthetic_corpus["dataset_dir"],
        "output_dir": tmp_path / "bf16",
        "mixed_precision": "bf16",
        "max_steps": 3,
        "logging_steps": 1,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 32,
        "spike_stitcher_size": 16,
        "report_to": "none",
        "per_device_train_batch_size": 8,
        "disable_progress_bar": True,
    }
    command = [sys.executable, "-m", "neds_hf.train"]
    for name, value in flags.items():
        command += [f"--{name}", str(value)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "bf16" / "checkpoint-3" / "trainer_state.json").read_text())
    losses = [entry["train/loss"] for entry in state["history"] if "train/loss" in entry]
    assert len(losses) == 3 and all(np.isfinite(losses))
    model = NedsForMaskedModeling.from_pretrained(tmp_path / "bf16" / "model")
    assert model.dtype == torch.float32  # parameters stay fp32 under autocast
