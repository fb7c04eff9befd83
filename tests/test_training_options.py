"""Training options: thread count, loss logging without a progress bar, the closing line,
torch.compile, gradient checkpointing and DataLoader workers (each must leave the losses as
they are)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from training_helpers import losses
from training_helpers import tiny_args as tiny_run

from neds_hf.training import NedsTrainingArguments, TrainingResult, configure_threads, train
from neds_hf.training.entry_point import final_message

#: Dropout on, so that the options are compared with their random draws.
DROPOUT = dict(learning_rate=3e-3, hidden_dropout=0.2, attention_dropout=0.2, embedding_dropout=0.1)


def tiny_args(corpus: dict, output_dir: Path, **overrides) -> NedsTrainingArguments:
    return tiny_run(corpus, output_dir, **{**DROPOUT, **overrides})


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("cores", "load", "local_processes", "expected"),
    [
        (4, 0.0, 1, 4),  # a quiet machine: every core
        (4, 0.0, 2, 2),  # two processes on the node share the cores
        (2, 2.7, 1, 1),  # a busy 2-core machine: one thread (0.31 s/step vs 0.92 s with 2)
        (8, 5.2, 1, 3),  # only the idle cores
        (2, 0.0, 4, 1),  # never below one
    ],
)
def test_auto_thread_count(
    cores, load, local_processes, expected, monkeypatch, caplog, restore_threads
):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (load, load, load))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_processes))
    torch.set_num_threads(8)  # torch's default on an 8-core machine
    with caplog.at_level(logging.INFO, logger="neds_hf.training.setup"):
        assert configure_threads(0) == expected
    assert torch.get_num_threads() == expected
    assert f"using {expected} torch thread(s) per process (auto:" in caplog.text


def test_explicit_thread_count(caplog, restore_threads):
    with caplog.at_level(logging.INFO, logger="neds_hf.training.setup"):
        assert configure_threads(3) == 3
    assert torch.get_num_threads() == 3
    assert "using 3 torch thread(s) per process (as configured" in caplog.text


def test_loss_is_logged_every_logging_steps_without_progress_bar(
    synthetic_corpus, tmp_path, caplog
):
    with caplog.at_level(logging.INFO, logger="neds_hf.training.loop"):
        train(tiny_args(synthetic_corpus, tmp_path / "run", max_steps=5, logging_steps=2))
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(":")[0] for line in logged] == ["step 2/5", "step 4/5", "step 5/5"]
    assert all(": loss " in line and "learning rate" in line for line in logged)


def _result(**fields) -> TrainingResult:
    values = dict(
        output_dir="out",
        model_dir="out/model",
        global_step=400,
        epochs_completed=3,
        best_score=0.5,
        best_step=240,
        samples_seen=0,
        global_batch_size=16,
        num_processes=1,
        stopped_early=False,
        history=[],
        model_step=240,
    )
    values.update(fields)
    return TrainingResult(**values)


def test_final_line_names_the_saved_step():
    assert final_message(_result()) == (
        "model written to out/model: weights of the best validation step 240 of 400 "
        "(validation score 0.5000)"
    )
    by_loss = final_message(_result(best_score=-1.25, best_model_metric="loss"))
    assert "(validation loss 1.2500)" in by_loss
    last = final_message(_result(best_step=None, best_score=None, model_step=400))
    assert "weights of the last step 400" in last


def test_gradient_checkpointing_keeps_the_losses(synthetic_corpus, tmp_path):
    plain = train(tiny_args(synthetic_corpus, tmp_path / "plain", max_steps=3))
    checkpointed = train(
        tiny_args(synthetic_corpus, tmp_path / "gc", max_steps=3, gradient_checkpointing=True)
    )
    assert checkpointed.model.neds.gradient_checkpointing
    assert losses(checkpointed) == pytest.approx(losses(plain), rel=1e-5)


def test_dataloader_workers_keep_the_losses(synthetic_corpus, tmp_path):
    plain = train(tiny_args(synthetic_corpus, tmp_path / "plain", max_steps=3))
    workers = train(
        tiny_args(
            synthetic_corpus,
            tmp_path / "workers",
            max_steps=3,
            dataloader_num_workers=2,
            dataloader_prefetch_factor=2,
            dataloader_pin_memory=False,
        )
    )
    assert losses(workers) == pytest.approx(losses(plain), rel=1e-6)


@pytest.mark.slow
def test_torch_compile_keeps_the_losses(synthetic_corpus, tmp_path):
    # without dropout: compiled dropout draws from inductor's own random stream
    no_dropout = dict(max_steps=3, hidden_dropout=0.0, attention_dropout=0.0, embedding_dropout=0.0)
    plain = train(tiny_args(synthetic_corpus, tmp_path / "plain", **no_dropout))
    compiled = train(
        tiny_args(synthetic_corpus, tmp_path / "compiled", torch_compile=True, **no_dropout)
    )
    assert len(losses(compiled)) == 3
    assert losses(compiled) == pytest.approx(losses(plain), rel=1e-4)


def test_loss_weights_reach_the_model_and_a_finetuned_model_can_change_them(
    synthetic_corpus, tmp_path
):
    weighted = train(
        tiny_args(synthetic_corpus, tmp_path / "weighted", max_steps=2, loss_weights=["choice=3"])
    )
    assert weighted.model.config.modality_loss_weights == {"choice": 3.0}
    plain = train(tiny_args(synthetic_corpus, tmp_path / "plain", max_steps=2))
    assert losses(weighted) != pytest.approx(losses(plain), rel=1e-6)
    finetuned = train(
        tiny_args(
            synthetic_corpus,
            tmp_path / "finetuned",
            max_steps=1,
            mode="finetune",
            sessions=synthetic_corpus["heldout_eids"],
            model_name_or_path=weighted.model_dir,
            loss_weights=["block=0.5"],
        )
    )
    assert finetuned.model.config.modality_loss_weights == {"block": 0.5}
    with pytest.raises(ValueError, match=r"modality_loss_weights: unknown modalities \['pupil'\]"):
        train(
            tiny_args(
                synthetic_corpus,
                tmp_path / "unknown",
                max_steps=1,
                mode="finetune",
                sessions=synthetic_corpus["heldout_eids"],
                model_name_or_path=weighted.model_dir,
                loss_weights=["pupil=2"],
            )
        )


def test_best_model_by_validation_loss(synthetic_corpus, tmp_path):
    from neds_hf.data.training_data import NedsTrialDataset
    from neds_hf.evaluation import validation_loss

    result = train(
        tiny_args(
            synthetic_corpus, tmp_path / "loss", max_steps=4, eval_steps=2, best_model_metric="loss"
        )
    )
    evaluations = [entry for entry in result.history if "eval/loss" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    best = min(evaluations, key=lambda entry: entry["eval/loss"])
    assert result.best_step == best["step"]
    assert result.best_score == pytest.approx(-best["eval/loss"])
    assert result.best_model_metric == "loss"
    # the selected model's validation loss is the one recorded for its step
    data = NedsTrialDataset(
        synthetic_corpus["dataset_dir"], "validation", sessions=synthetic_corpus["pretrain_eids"]
    )
    trials = [data[i] for i in range(len(data))]
    assert validation_loss(result.model, trials, data.normalization) == pytest.approx(
        best["eval/loss"], rel=1e-5
    )
