"""The training loop: one code path for 1 CPU process, several CPU processes (gloo) and GPUs.

:func:`train` validates everything, takes the output lock and runs a :class:`NedsTrainer`;
the trainer's methods each do one part of a step (forward/backward of a micro-batch, the
optimizer step, logging, evaluation and best-model selection, checkpointing). A run resumed
from any checkpoint draws exactly the batches, masks and dropout the uninterrupted run draws.

What is written here by hand although Accelerate offers it, and why (measured or read in
accelerate 1.15's source):

* gradient accumulation: ``accelerator.accumulate`` decides when to synchronise from its own
  step counter, or from the end of a dataloader only when the dataloader went through
  ``accelerator.prepare``; and ``accelerator.backward`` always divides the loss by the fixed
  ``gradient_accumulation_steps``. Our epochs end with a partial group (batches per epoch is
  rarely a multiple of the accumulation) and the loader is not prepared (the batch sampler
  shards), so with ``accumulate`` the last group of an epoch would be scaled by
  ``group_size / steps`` and the synchronisation points would drift across epochs. Here each
  group synchronises on its last micro-batch and divides by its real size.
* checkpoints: ``save_state``/``load_state`` read registered objects back with
  ``weights_only=False`` (code execution from a replaced file), and ``ProjectConfiguration``'s
  ``total_limit`` only works with automatic naming by save count (``checkpoints/checkpoint_<i>``,
  not the optimizer step a resume needs) and deletes old checkpoints *before* the new one is
  written; see :mod:`.checkpointing`.
* resume: ``accelerator.skip_first_batches`` is used (it skips at the batch-sampler level, so
  skipped batches are never loaded).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..collator import DataCollatorForNedsMasking
from ..locking import OutputLock, OutputLockedError
from ..modeling_neds import NedsForMaskedModeling
from .arguments import NedsTrainingArguments, redacted_arguments
from .checkpointing import (
    check_resume_compatible,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    run_fingerprint,
    save_checkpoint,
)
from .setup import (
    build_optimizer,
    build_scheduler,
    check_dataset_source,
    configure_threads,
    load_streaming_data,
    load_training_data,
    prepare_model,
)

__all__ = ["NedsTrainer", "TrainingResult", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What a finished run reports (per process).

    `model_dir` is the final model folder (main process only); `model_step` is the optimizer
    step whose weights it holds: the best validation step when one was selected, else the last.
    """

    output_dir: str
    model_dir: str | None
    global_step: int
    epochs_completed: int
    best_score: float | None
    best_step: int | None
    samples_seen: int
    global_batch_size: int
    num_processes: int
    stopped_early: bool
    history: list[dict[str, float]]
    model: NedsForMaskedModeling | None = field(default=None, repr=False)  # this process's copy
    model_step: int | None = None
    best_model_metric: str = "score"  # "loss": best_score is minus the validation loss


def new_trainer_state() -> dict[str, Any]:
    """The state of a run that has not started (saved as ``trainer_state.json``)."""
    return {
        "global_step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "best_score": None,
        "best_step": None,
        "evaluations_without_improvement": 0,
        "history": [],
        "samples_seen": 0,
    }


class _SeededMasking:
    """Collate function whose masks are a pure function of (seed, epoch, rank, the batch's trials
    or continuous windows).

    Deterministic whatever the worker layout, and a resumed run draws exactly the masks the
    uninterrupted run would have drawn.
    """

    def __init__(self, collator: DataCollatorForNedsMasking, seed: int, rank: int):
        self.collator, self.seed, self.rank, self.epoch = collator, seed, rank, 0

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        key = ",".join(
            f"{e['session_id']}:{e.get('trial_id', '')}"
            + (f"@{e['window_id']}" if "window_id" in e else "")  # continuous windows
            for e in examples
        )
        digest = hashlib.blake2b(
            f"{self.seed}|{self.epoch}|{self.rank}|{key}".encode(), digest_size=8
        )
        self.collator.generator.manual_seed(int.from_bytes(digest.digest(), "little") & (2**63 - 1))
        return self.collator(examples)


# =============================================================================================
# Entry: validation, accelerator, lock
# =============================================================================================


def _make_accelerator(args: NedsTrainingArguments) -> Any:
    """The Accelerator of the run; refuses a launcher/Accelerate process-count mismatch."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(args.output_dir),
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes but Accelerate sees "
            f"{accelerator.num_processes}: on CPU launch with `ACCELERATE_USE_CPU=1 accelerate "
            "launch --multi_gpu --num_processes N` (a bare --cpu --num_processes N runs one "
            "process)"
        )
    return accelerator


@contextlib.contextmanager
def _run_lock(accelerator: Any, output_dir: Path) -> Iterator[None]:
    """Hold the output lock for the run: taken by the main process only (one lock per run,
    whatever the process count); if it is held elsewhere every process raises the holder."""
    from accelerate.utils import broadcast_object_list

    lock = OutputLock(output_dir, "training")
    refusal = [None]
    if accelerator.is_main_process:
        try:
            lock.acquire()
        except OutputLockedError as error:
            refusal = [str(error)]
    broadcast_object_list(refusal, from_process=0)
    if refusal[0] is not None:
        raise OutputLockedError(refusal[0])
    try:
        yield
    finally:
        lock.release()


def train(args: NedsTrainingArguments) -> TrainingResult:
    """Run pretraining or fine-tuning as configured; returns what happened on this process.

    Every argument is validated and the dataset folder checked before anything is read; the
    output folder is locked for the whole run. Pushing the model to the Hub is the caller's
    step (see :func:`neds_hf.training.entry_point.main`).
    """
    from accelerate.utils import set_seed

    args.validate()
    check_dataset_source(str(args.dataset))
    accelerator = _make_accelerator(args)
    configure_threads(args.num_threads)
    with _run_lock(accelerator, Path(args.output_dir)):
        set_seed(args.seed)
        trainer = NedsTrainer(args, accelerator)
        return trainer.run()


# =============================================================================================
# The trainer
# =============================================================================================


class NedsTrainer:
    """One training run: built from the arguments and an Accelerator, run with :meth:`run`."""

    def __init__(self, args: NedsTrainingArguments, accelerator: Any) -> None:
        self.args, self.accelerator = args, accelerator
        self.output_dir = Path(args.output_dir)
        self.is_main = accelerator.is_main_process
        # ---- data and model (errors here come before any training)
        if args.streaming:
            self.train_data, self.eval_data, features = load_streaming_data(
                args, accelerator.num_processes, accelerator.process_index
            )
        else:
            self.train_data, self.eval_data, features = load_training_data(args)
        model = prepare_model(args, self.train_data, features)
        self.config = model.config
        self.fingerprint = run_fingerprint(args, self.config, accelerator.num_processes)
        checkpoint = self._checkpoint_to_resume()
        self.state = (
            check_resume_compatible(checkpoint, self.fingerprint)
            if checkpoint is not None
            else new_trainer_state()
        )
        self._build_sampler()
        # ---- optimisation
        model.to(accelerator.device)
        optimizer, self.encoder_groups = build_optimizer(model, args, accelerator.device)
        self.scheduler = build_scheduler(optimizer, args, self.total_steps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.forward_model = torch.compile(self.model) if args.torch_compile else self.model
        if checkpoint is not None:
            load_checkpoint(accelerator, self.model, self.optimizer, self.scheduler, checkpoint)
            logger.info("resumed from %s at step %d", checkpoint, self.state["global_step"])
        self._build_collator()
        self.stopped_early = False
        self.running: dict[str, float] = {}
        self.running_batches = 0

    def _checkpoint_to_resume(self) -> Path | None:
        """The checkpoint to resume, refusing to write over another run's checkpoints."""
        checkpoint = resolve_checkpoint(self.args)
        if (
            checkpoint is None
            and list_checkpoints(self.output_dir)
            and not self.args.overwrite_output_dir
        ):
            raise FileExistsError(
                f"{self.output_dir} already holds checkpoints of a run; pass "
                "resume_from_checkpoint=latest to continue it or overwrite_output_dir=true to "
                "start over"
            )
        return checkpoint

    def _build_sampler(self) -> None:
        """The session-aware batch sampler (sharded over ranks) and the step counts; a
        streamed dataset shards itself and has a fixed number of batches per epoch and rank."""
        from ..data.training_data import SessionBatchSampler

        args = self.args
        if args.streaming:
            self.sampler = None
            self.batches_per_epoch = self.train_data.steps_per_epoch(
                args.per_device_train_batch_size
            )
        else:
            self.sampler = SessionBatchSampler(
                self.train_data,
                args.per_device_train_batch_size,
                mode=args.batch_sampling,
                seed=args.seed,
                num_replicas=self.accelerator.num_processes,
                rank=self.accelerator.process_index,
            )
            self.batches_per_epoch = len(self.sampler)
        if self.batches_per_epoch == 0:
            raise ValueError(f"dataset {args.dataset}: the train split has no batches")
        accumulation = args.gradient_accumulation_steps
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / accumulation)
        self.total_steps = (
            args.max_steps if args.max_steps > 0 else self.steps_per_epoch * args.num_train_epochs
        )
        self.global_batch = (
            args.per_device_train_batch_size * self.accelerator.num_processes * accumulation
        )

    def _build_collator(self) -> None:
        """The seeded masking collator and the validation trials (main process)."""
        args = self.args
        collator = DataCollatorForNedsMasking(
            self.config,
            schemes=args.scheme_probabilities(),
            mask_ratio=args.mask_ratio,
            normalization=self.train_data.normalization,
            neuron_regions=self.train_data.neuron_regions,
        )
        self.collate = _SeededMasking(collator, args.seed, self.accelerator.process_index)
        if not self.is_main:
            self.eval_trials = []
        elif self.args.streaming:
            self.eval_trials = list(self.eval_data.iter_all())
        else:
            self.eval_trials = [self.eval_data[i] for i in range(len(self.eval_data))]

    # ---------------------------------------------------------------------------------------
    def _epoch_loader(self, epoch: int) -> Any:
        """This epoch's DataLoader, skipping the batches a resumed run has already trained on."""
        args = self.args
        self.collate.epoch = epoch
        if args.streaming:
            return self._streaming_epoch(epoch)
        self.sampler.set_epoch(epoch)
        workers = args.dataloader_num_workers
        pin_memory = args.dataloader_pin_memory
        if pin_memory is None:
            pin_memory = self.accelerator.device.type == "cuda"
        # a private generator: creating the loader must not draw from the global RNG (dropout),
        # or a resumed run would diverge from the uninterrupted one
        loader = DataLoader(
            self.train_data,
            batch_sampler=self.sampler,
            collate_fn=self.collate,
            num_workers=workers,
            pin_memory=pin_memory,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            generator=torch.Generator().manual_seed(args.seed + epoch),
        )
        skip = self.state["batch_in_epoch"]
        return self.accelerator.skip_first_batches(loader, skip) if skip else loader

    def _streaming_epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """This epoch's batches from the streamed trials, without Accelerate (which would
        re-dispatch an iterable from rank 0): the rank's own shard, a fixed number of batches.

        A resumed run reads and drops the batches already trained on; the stream's order is a
        pure function of (seed, epoch, world size), so it continues with the same batches.
        """
        skip = self.state["batch_in_epoch"]
        self.train_data.set_epoch(epoch)
        batches = self.train_data.batches(
            self.args.per_device_train_batch_size, self.batches_per_epoch, self.args.batch_sampling
        )
        for index, examples in enumerate(batches):
            if index >= skip:
                yield self.collate(examples)

    def _micro_step(self, batch: Mapping[str, torch.Tensor]) -> bool:
        """Forward and backward of one micro-batch; True when it closes an accumulation group.

        The loss is divided by the real size of its group (the last group of an epoch may be
        smaller), and gradients are synchronised across processes only on the group's last
        micro-batch.
        """
        accumulation = self.args.gradient_accumulation_steps
        micro = self.state["batch_in_epoch"]  # index of this batch in the epoch
        group_start = (micro // accumulation) * accumulation
        group_size = min(accumulation, self.batches_per_epoch - group_start)
        sync = micro + 1 == group_start + group_size
        no_sync = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
        with no_sync:
            outputs = self.forward_model(**batch)
            self.accelerator.backward(outputs.loss / group_size)
        self.state["batch_in_epoch"] += 1
        self.state["samples_seen"] += len(batch["session_index"])
        self.running_batches += 1
        for name, value in {
            "loss": outputs.loss,
            **{f"loss/{k}": v for k, v in outputs.modality_losses.items()},
        }.items():
            self.running[name] = self.running.get(name, 0.0) + float(value.detach())
        return sync

    def _optimizer_step(self) -> None:
        """Clip, step, schedule; encoder gradients are dropped during a frozen warm-up."""
        args = self.args
        if args.freeze_encoder == "warmup" and self.state["global_step"] < args.freeze_warmup_steps:
            for index in self.encoder_groups:
                for parameter in self.optimizer.param_groups[index]["params"]:
                    parameter.grad = None
        if args.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.state["global_step"] += 1

    def _log_training(self, step: int, progress: Any) -> None:
        """Average the losses since the last log over all processes and report them."""
        names = sorted(self.running)
        sums = torch.tensor(
            [self.running[n] for n in names] + [self.running_batches],
            device=self.accelerator.device,
        )
        sums = self.accelerator.reduce(sums, "sum")
        record = {f"train/{n}": float(sums[i] / sums[-1]) for i, n in enumerate(names)}
        record["train/learning_rate"] = self.scheduler.get_last_lr()[0]
        self.running, self.running_batches = {}, 0
        self.accelerator.log(record, step=step)
        self.state["history"].append({**record, "step": step})
        progress.set_postfix(loss=f"{record['train/loss']:.4f}")
        if self.is_main and progress.disable:
            logger.info(
                "step %d/%d: loss %.4f, learning rate %.3g",
                step,
                self.total_steps,
                record["train/loss"],
                record["train/learning_rate"],
            )

    def _evaluate(self) -> float | None:
        """Validation score of the current model (main process), shared with every process."""
        from accelerate.utils import broadcast_object_list

        from ..evaluation import evaluate_trials, validation_loss

        score = None
        if self.is_main:
            model = self.accelerator.unwrap_model(self.model)
            common = dict(
                normalization=self.eval_data.normalization,
                batch_size=self.args.per_device_eval_batch_size,
            )
            report = evaluate_trials(model, self.eval_trials, split="validation", **common)
            score = report.average["avg"]
            record = {f"eval/{k}": v for k, v in report.average.items()}
            if self.args.best_model_metric == "loss":
                record["eval/loss"] = validation_loss(model, self.eval_trials, **common)
                score = -record["eval/loss"]  # selection keeps the highest score
            self.accelerator.log(record, step=self.state["global_step"])
            self.state["history"].append({**record, "step": self.state["global_step"]})
        shared = [score]
        broadcast_object_list(shared, from_process=0)
        return shared[0]

    def _evaluate_and_select(self) -> None:
        """Evaluate; keep the best model in ``best/``; count evaluations without improvement."""
        from ..atomic import atomic_directory

        state = self.state
        score = self._evaluate()
        improved = (
            score is not None
            and np.isfinite(score)
            and (state["best_score"] is None or score > state["best_score"])
        )
        if improved:
            state["best_score"], state["best_step"] = float(score), state["global_step"]
            state["evaluations_without_improvement"] = 0
            if self.is_main:
                with atomic_directory(self.output_dir / "best") as staging:
                    self.accelerator.unwrap_model(self.model).save_pretrained(staging)
        else:
            state["evaluations_without_improvement"] += 1
        if 0 < self.args.early_stopping_patience <= state["evaluations_without_improvement"]:
            self.stopped_early = True

    def _after_optimizer_step(self, progress: Any) -> bool:
        """Log, evaluate, checkpoint as scheduled; True when the run is over."""
        args, step = self.args, self.state["global_step"]
        last = step == self.total_steps
        progress.update(1)
        if step % args.logging_steps == 0 or last:
            self._log_training(step, progress)
        if step % (args.eval_steps or self.steps_per_epoch) == 0 or last:
            self._evaluate_and_select()
        if step % (args.save_steps or self.steps_per_epoch) == 0 or last or self.stopped_early:
            fields = {**self.state, "fingerprint": self.fingerprint}
            save_checkpoint(
                self.accelerator,
                self.model,
                self.optimizer,
                self.scheduler,
                self.output_dir,
                fields,
                args.save_total_limit,
            )
        return step >= self.total_steps or self.stopped_early

    def _start(self) -> None:
        """Trackers (with the arguments, secrets redacted) and the opening log line."""
        if self.args.report_to != "none":
            self.accelerator.init_trackers(
                "neds",
                config={
                    k: (v if isinstance(v, int | float | str | bool) else str(v))
                    for k, v in redacted_arguments(self.args).items()
                },
            )
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            logger.info(
                "training %s: %d sessions, %d train / %d validation trials, %d steps of %d trials",
                self.args.mode,
                len(self.train_data.session_ids),
                len(self.train_data),
                len(self.eval_data),
                self.total_steps,
                self.global_batch,
            )

    def run(self) -> TrainingResult:
        """Train to the last step (or early stop), write the final model, report."""
        self._start()
        progress = tqdm(
            total=self.total_steps,
            initial=self.state["global_step"],
            desc=self.args.mode,
            disable=not self.is_main or self.args.disable_progress_bar,
            dynamic_ncols=True,
        )
        self.model.train()
        start_time = time.perf_counter()
        finished = self.state["global_step"] >= self.total_steps
        while not finished:
            for batch in self._epoch_loader(self.state["epoch"]):
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                if self._micro_step(batch):
                    self._optimizer_step()
                    finished = self._after_optimizer_step(progress)
                    if finished:
                        break
            else:
                self.state["epoch"] += 1
                self.state["batch_in_epoch"] = 0
        progress.close()
        return self._finish(time.perf_counter() - start_time)

    def _finish(self, seconds: float) -> TrainingResult:
        """Write the final model folder (main process) and build the result."""
        from .export import write_final_model

        self.accelerator.wait_for_everyone()
        trained = self.accelerator.unwrap_model(self.model)
        state = self.state
        model_step = state["best_step"] if state["best_step"] is not None else state["global_step"]
        model_dir = None
        if self.is_main:
            model_dir = write_final_model(
                trained,
                self.args,
                state,
                model_step=model_step,
                seconds=seconds,
                eval_trials=self.eval_trials,
                normalization=self.eval_data.normalization,
            )
        self.accelerator.end_training()
        return TrainingResult(
            output_dir=str(self.output_dir),
            model_dir=model_dir,
            global_step=state["global_step"],
            epochs_completed=state["epoch"],
            best_score=state["best_score"],
            best_step=state["best_step"],
            samples_seen=state["samples_seen"],
            global_batch_size=self.global_batch,
            num_processes=self.accelerator.num_processes,
            stopped_early=self.stopped_early,
            history=state["history"],
            model=trained,
            model_step=model_step,
            best_model_metric=self.args.best_model_metric,
        )
