"""Training/evaluation speed and memory of neds_hf side by side with the reference NEDS code.

The reference (github.com/yzhang511/NEDS) is not part of this project: pass the ``src/`` folder
of a checkout with ``--reference-src`` (see ``benchmarks/README.md`` for how to get one). Every
(case, system) runs in its own fresh subprocess with 2 threads, so each process's peak RSS is
that system's own; rounds are interleaved (each round measures the machine's fp32 matmul rate
first and alternates which system goes first), and ratios are taken within a round, so a busy
machine distorts them less than the absolute times.

Cases (the reference's own settings: hidden 256, 8 heads, MLP 512, dropout 0.4, embedding
dropout 0.2, spike stitcher width 2·N_max):

* a: 5 layers, 1 session (N=668), batch 16;  b: the same at batch 64;
* c: 5 layers, 10 sessions (N=400..668), batch 16, one session per batch, cycling;
* d: 22 layers, 2 sessions (N=600, 668), batch 16.

Systems: ``ref`` (the reference ``MultiModal`` with AdamW + OneCycleLR and its trainer's
step), ``ours`` (neds_hf, default token layout), ``ours500`` (``spread_trial_tokens=True``,
500 tokens like the reference) and ``ours_probs`` (default layout with dropout on the attention
probabilities, where the installed config offers ``attention_dropout_mode``); neds_hf's step uses
the optimizer ``neds-hf train`` builds (fused AdamW on CPU), at the reference's rates. The ``ours``
worker also measures inference: batch-1 ``predict_neural_activity`` / ``predict_behavior``
latency and their throughput at batch 64.

Examples::

    python benchmarks/bench_vs_reference.py --reference-src /work/ref_neds/src --cases a,b,c,d
    python benchmarks/bench_vs_reference.py --systems ours,ours500 --quick      # no reference
    python benchmarks/bench_vs_reference.py --profile eval --case a             # top ops
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CASES",
    "Case",
    "forward_matmul_flops",
    "matmul_rate",
    "ours_config_kwargs",
]

THREADS = 2
TIME_BINS = 100
ATTENTION_TOKENS = (302, 500)  # tokens per trial: neds_hf's default layout, the reference's
HIDDEN, HEADS, INTERMEDIATE = 256, 8, 512
RESULT_PREFIX = "BENCH_RESULT "
SYSTEMS = ("ref", "ours", "ours500", "ours_probs")


@dataclass(frozen=True)
class Case:
    """One benchmark case: model depth, sessions' neuron counts and batch size."""

    layers: int
    neuron_counts: tuple[int, ...]
    batch_size: int
    reference_yaml: str  # the reference's model config selected for this many sessions


CASES: dict[str, Case] = {
    "a": Case(5, (668,), 16, "mm_single_session.yaml"),
    "b": Case(5, (668,), 64, "mm_single_session.yaml"),
    "c": Case(5, tuple(round(400 + i * (668 - 400) / 9) for i in range(10)), 16, "mm.yaml"),
    "d": Case(22, (600, 668), 16, "mm_large_size.yaml"),
}


# =============================================================================================
# Shared measurements
# =============================================================================================


def forward_matmul_flops(
    layers: int,
    tokens: int,
    batch_size: int,
    max_neurons: int,
    stitcher_width: int,
    hidden: int = HIDDEN,
    intermediate: int = INTERMEDIATE,
    time_bins: int = TIME_BINS,
) -> int:
    """Matmul FLOPs of one forward pass: transformer, spike stitcher and spike readout.

    Per layer: q/k/v/out projections (4·H²), the MLP (2·H·I) per token, and the two attention
    products (2·L²·H each). The stitcher maps each bin's population vector N -> D -> H, the
    readout H -> N. A training step is counted as 3x the forward pass.
    """
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * intermediate)
    per_layer += 4 * tokens * tokens * hidden
    stitcher = 2 * time_bins * (max_neurons * stitcher_width + stitcher_width * hidden)
    readout = 2 * time_bins * hidden * max_neurons
    return batch_size * (layers * per_layer + stitcher + readout)


def matmul_rate(
    size: int = 2048, repeats: int = 8, dtype: Any = None, device: str = "cpu"
) -> dict[str, float]:
    """FLOP/s of a square matmul on `device`: wall-clock median/best and CPU-time basis.

    The CPU-time basis divides by (process CPU seconds / threads), i.e. the rate the matmul
    would reach with the threads to itself: the fair yardstick on a shared machine.
    """
    import torch

    dtype = dtype or torch.float32
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    walls, cpus = [], []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    flops = 2 * size**3
    threads = torch.get_num_threads()
    return {
        "flops_median": flops / statistics.median(walls),
        "flops_best": flops / min(walls),
        "flops_cpu_basis": flops / (statistics.median(cpus) / threads),
    }


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def current_rss_gb() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


def time_calls(
    fn: Callable[[Any], Any], count: int, prepare: Callable[[int], Any] = lambda i: i
) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of `fn(prepare(i))` for i in range(count).

    `prepare` (e.g. collating the batch) runs outside the timed region.
    """
    walls, cpus = [], []
    for i in range(count):
        argument = prepare(i)
        wall, cpu = time.perf_counter(), time.process_time()
        fn(argument)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def median(values: Sequence[float]) -> float:
    """Median, NaN for an empty sequence."""
    return statistics.median(values) if values else float("nan")


# =============================================================================================
# The reference
# =============================================================================================


def reference_model(reference_src: str, case: Case) -> tuple[Any, Any, Any, list[str]]:
    """The reference ``MultiModal`` built as its ``train.py`` builds it, with its optimiser."""
    import torch

    sys.path.insert(0, reference_src)
    os.chdir(os.path.dirname(os.path.abspath(reference_src)))  # its configs are root-relative
    from multi_modal.encoder_embeddings import INCLUDE_EIDS, EncoderEmbedding
    from multi_modal.mm import MultiModal
    from utils.config_utils import config_from_kwargs, update_config

    config_dir = os.path.join(reference_src, "configs", "multi_modal")
    config = config_from_kwargs({"model": f"include:{config_dir}/{case.reference_yaml}"})
    config = update_config(os.path.join(config_dir, "trainer_mm.yaml"), config)
    if config.model.encoder.transformer.n_layers != case.layers:
        raise ValueError(
            f"{case.reference_yaml}: expected {case.layers} layers, got "
            f"{config.model.encoder.transformer.n_layers}"
        )
    eids = list(INCLUDE_EIDS[: len(case.neuron_counts)])
    eid_list = dict(zip(eids, case.neuron_counts, strict=True))
    modalities = ["spike", "choice", "block", "wheel", "whisker"]
    embeddings = {
        modality: EncoderEmbedding(
            hidden_size=HIDDEN,
            n_channel=HIDDEN,
            output_channel=HIDDEN,
            stitching=True,
            eid_list=eid_list,
            mod=modality,
            config=config.model.encoder,
            max_F=config.data.max_time_length,
        )
        for modality in modalities
    }
    model = MultiModal(
        embeddings,
        avail_mod=modalities,
        avail_beh=modalities[1:],
        model_mode="mm",
        config=config.model,
        **config.method.model_kwargs,
        eid_list=eid_list,
        eids=eids,
    )
    opt = config.optimizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.wd, eps=opt.eps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        total_steps=100_000,
        max_lr=opt.lr,
        pct_start=opt.warmup_pct,
        div_factor=opt.div_factor,
        anneal_strategy="cos",
    )
    return model, optimizer, scheduler, eids


def reference_batch(case: Case, session: int, eid: str) -> dict[str, Any]:
    """One batch as the reference loader yields it: spikes padded to N_max with -1."""
    import torch

    generator = torch.Generator().manual_seed(session)
    n_max, batch = max(case.neuron_counts), case.batch_size
    spikes = torch.poisson(torch.full((batch, TIME_BINS, n_max), 0.5), generator=generator)
    spikes[:, :, case.neuron_counts[session] :] = -1.0
    return {
        "spikes": spikes,  # (B, T, N_max)
        "time_attn_mask": torch.ones(batch, TIME_BINS, dtype=torch.int64),
        "timestamps": torch.arange(TIME_BINS).repeat(batch, 1),
        "eid": [eid] * batch,
        "choice": torch.randint(0, 2, (batch, 1), generator=generator).float(),
        "block": torch.randint(0, 3, (batch, 1), generator=generator).float(),
        "wheel": torch.rand(batch, TIME_BINS, generator=generator),
        "whisker": torch.rand(batch, TIME_BINS, generator=generator),
    }


def reference_inputs(model: Any, batch: dict[str, Any], mode: str) -> dict[str, dict[str, Any]]:
    """The reference trainer's per-modality input dict for one masking mode.

    `mode` is one of its five schemes; ``None`` as eval mask lets its masker draw the mask.
    """
    import torch

    ones = torch.ones_like(batch["spikes"], dtype=torch.int64)
    zeros = ones * 0.0
    behaviours = [m for m in model.mod_to_indx if m != "spike"]
    shown_by_mode = {
        "encoding": lambda m: ones if m == "spike" else zeros,
        "decoding": lambda m: ones if m in behaviours else zeros,
        "random_token": lambda m: None,
        "self-spike": lambda m: None if m == "spike" else zeros,
        "self-behavior": lambda m: None if m in behaviours else zeros,
    }[mode]
    inputs = {}
    for modality, index in model.mod_to_indx.items():
        data = batch["spikes" if modality == "spike" else modality]
        inputs[modality] = {
            "inputs_modality": torch.tensor(index),
            "targets_modality": torch.tensor(index),
            "inputs_attn_mask": batch["time_attn_mask"],
            "inputs_timestamp": batch["timestamps"],
            "targets_timestamp": batch["timestamps"],
            "eid": batch["eid"],
            "num_neuron": batch["spikes"].shape[-1],
            "training_mode": mode,
            "inputs": data.clone(),
            "targets": data.clone(),
            "eval_mask": shown_by_mode(modality),
        }
    return inputs


def reference_worker(reference_src: str, case_name: str, steps: int, warmup: int, evals: int):
    """Time the reference's training step and evaluation forward (encoding protocol)."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    case = CASES[case_name]
    model, optimizer, scheduler, eids = reference_model(reference_src, case)
    rss_imports = current_rss_gb()
    for seed in (torch.manual_seed, random.seed, np.random.seed):
        seed(42)
    batches = [reference_batch(case, s, eid) for s, eid in enumerate(eids)]
    schemes = ["encoding", "decoding", "self-spike", "self-behavior", "random_token"]

    def train_step(i: int) -> float:
        optimizer.zero_grad()
        mode = random.choice(schemes)
        loss = model(reference_inputs(model, batches[i % len(batches)], mode)).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    model.train()
    walls, cpus = time_calls(train_step, warmup + steps)
    train_rss = peak_rss_gb()
    model.eval()
    with torch.no_grad():
        eval_walls, eval_cpus = time_calls(
            lambda i: model(reference_inputs(model, batches[i % len(batches)], "encoding")),
            1 + evals,
        )
    tokens = 5 * TIME_BINS
    return {
        "tokens": tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_flops": forward_matmul_flops(
            case.layers,
            tokens,
            case.batch_size,
            max(case.neuron_counts),
            2 * max(case.neuron_counts),
        ),
        **_timing_summary(walls, cpus, eval_walls, eval_cpus, warmup, case.batch_size),
        "train_rss_gb": train_rss,
        "rss_after_setup_gb": rss_imports,
    }


def _timing_summary(walls, cpus, eval_walls, eval_cpus, warmup, batch_size) -> dict[str, Any]:
    step = median(walls[warmup:])
    return {
        "step_s": step,
        "step_cpu_s": median(cpus[warmup:]),
        "trials_per_s": batch_size / step,
        "steps": len(walls) - warmup,
        "eval_s": median(eval_walls[1:]),
        "eval_cpu_s": median(eval_cpus[1:]),
    }


# =============================================================================================
# neds_hf
# =============================================================================================


def ours_config_kwargs(config_class: Any, **wanted: Any) -> dict[str, Any]:
    """`wanted` keyword arguments that the installed `config_class` accepts; `None` is skipped.

    Keeps the benchmark working across config versions (e.g. before and after
    ``attention_dropout_mode`` exists) without guessing attributes.
    """
    accepted = inspect.signature(config_class).parameters
    return {k: v for k, v in wanted.items() if v is not None and k in accepted}


def ours_model(case: Case, spread: bool, dropout_mode: str | None, attn_implementation: str | None):
    """neds_hf at the reference's settings for `case`, and its config."""
    from neds_hf import NedsConfig, NedsForMaskedModeling

    optional = ours_config_kwargs(NedsConfig, attention_dropout_mode=dropout_mode)
    if dropout_mode is not None and "attention_dropout_mode" not in optional:
        raise SystemExit(
            f"--attention-dropout-mode {dropout_mode}: the installed NedsConfig has no "
            "attention_dropout_mode"
        )
    config = NedsConfig(
        hidden_size=HIDDEN,
        num_hidden_layers=case.layers,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        hidden_dropout=0.4,
        attention_dropout=0.4,
        embedding_dropout=0.2,
        sessions={f"session-{i:02d}": n for i, n in enumerate(case.neuron_counts)},
        spike_stitcher_size=2 * max(case.neuron_counts),
        behavior_stitcher_size=2,
        spread_trial_tokens=spread,
        **optional,
    )
    if attn_implementation is None:
        return NedsForMaskedModeling(config), config
    model = NedsForMaskedModeling._from_config(config, attn_implementation=attn_implementation)
    return model, model.config


def ours_trials(config: Any, batch_size: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    """`batch_size` synthetic trials per session, as dataset examples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        [
            {
                "session_id": session_id,
                "spikes": rng.poisson(0.5, (n, TIME_BINS)).astype(np.float32),
                "wheel_speed": rng.standard_normal(TIME_BINS).astype(np.float32),
                "whisker_motion_energy": rng.standard_normal(TIME_BINS).astype(np.float32),
                "choice": int(rng.integers(0, 2)),
                "block": int(rng.integers(0, 3)),
            }
            for _ in range(batch_size)
        ]
        for session_id, n in config.sessions.items()
    ]


def prediction_kwargs(model: Any) -> dict[str, Any]:
    """`return_loss=False` where the installed model's forward offers it (evaluation needs no
    loss), so older versions stay measurable."""
    if "return_loss" in inspect.signature(model.forward).parameters:
        return {"return_loss": False}
    return {}


def ours_optimizer(model: Any) -> Any:
    """AdamW at the reference's settings (lr 2e-4, decay 0.01 on every parameter, eps 1e-8), run
    as ``neds-hf train`` runs it: torch's fused kernel where the installed package uses it on
    CPU (``fused_adamw_supported``; older versions without it get the default implementation)."""
    import torch

    try:
        from neds_hf.training.setup import fused_adamw_supported
    except ImportError:
        fused = False
    else:
        fused = fused_adamw_supported(torch.device("cpu"))
    options = {"fused": True} if fused else {}
    return torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01, eps=1e-8, **options)


def ours_worker(system: str, case_name: str, steps: int, warmup: int, evals: int, options):
    """Time neds_hf's training step, evaluation forward and (``ours``) inference."""
    import torch

    from neds_hf import DataCollatorForNedsMasking

    rss_imports = current_rss_gb()
    torch.set_num_threads(THREADS)
    torch.manual_seed(42)
    case = CASES[case_name]
    dropout_mode = "probabilities" if system == "ours_probs" else options.attention_dropout_mode
    model, config = ours_model(case, system == "ours500", dropout_mode, options.attn_implementation)
    optimizer = ours_optimizer(model)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, total_steps=100_000, max_lr=2e-4, pct_start=0.15, div_factor=10
    )
    collator = DataCollatorForNedsMasking(config, normalization_method="none", seed=0)
    evaluator = DataCollatorForNedsMasking(
        config, normalization_method="none", eval_protocol="encoding"
    )
    trials = ours_trials(config, case.batch_size)
    _, collate_cpus = time_calls(lambda i: collator(trials[i % len(trials)]), 3)

    def train_step(batch: dict[str, Any]) -> float:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    model.train()
    walls, cpus = time_calls(
        train_step, warmup + steps, lambda i: collator(trials[i % len(trials)])
    )
    train_rss = peak_rss_gb()
    model.eval()
    with torch.inference_mode():
        eval_walls, eval_cpus = time_calls(
            lambda batch: model(**batch, **prediction_kwargs(model)),
            1 + evals,
            lambda i: evaluator(trials[i % len(trials)]),
        )
    result = {
        "tokens": config.num_tokens,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_flops": forward_matmul_flops(
            case.layers,
            config.num_tokens,
            case.batch_size,
            max(case.neuron_counts),
            config.spike_stitcher_size,
        ),
        **_timing_summary(walls, cpus, eval_walls, eval_cpus, warmup, case.batch_size),
        "collate_cpu_s": median(collate_cpus),
        "train_rss_gb": train_rss,
        "rss_after_imports_gb": rss_imports,
        "peak_rss_gb": peak_rss_gb(),  # before the inference measurements
    }
    if system == "ours":
        result["inference"] = inference_latency(model, evaluator, trials[0], options.latency_reps)
    return result


def inference_latency(model: Any, collator: Any, trials: list[dict], reps: int) -> dict[str, float]:
    """Batch-1 latency (ms) and batch-64 throughput (trials/s) of the prediction helpers."""
    one = collator(trials[:1])
    many = collator([trials[i % len(trials)] for i in range(64)])

    def encode(batch):
        return model.predict_neural_activity(
            batch["session_index"],
            behavior_values=batch["behavior_values"],
            behavior_labels=batch["behavior_labels"],
        )

    def decode(batch):
        return model.predict_behavior(batch["spikes"], batch["session_index"])

    import torch

    result = {}
    for name, fn in (("predict_neural_activity", encode), ("predict_behavior", decode)):
        walls, _ = time_calls(lambda _, fn=fn: fn(one), 2 + reps)
        result[f"{name}_b1_ms"] = 1000 * median(walls[2:])
        torch.set_num_threads(
            1
        )  # a single trial's small ops pay more for thread sync than they gain
        walls, _ = time_calls(lambda _, fn=fn: fn(one), 2 + reps)
        torch.set_num_threads(THREADS)
        result[f"{name}_b1_1thread_ms"] = 1000 * median(walls[2:])
        walls, _ = time_calls(lambda _, fn=fn: fn(many), 1 + max(1, reps // 3))
        result[f"{name}_b64_trials_per_s"] = 64 / median(walls[1:])
    return result


def profile_worker(case_name: str, phase: str, system: str, rows: int, options) -> None:
    """Print neds_hf's top operators by self CPU time for one training step or eval forward."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from neds_hf import DataCollatorForNedsMasking

    torch.set_num_threads(THREADS)
    torch.manual_seed(42)
    case = CASES[case_name]
    model, config = ours_model(
        case, system == "ours500", options.attention_dropout_mode, options.attn_implementation
    )
    protocol = "encoding" if phase == "eval" else None
    collator = DataCollatorForNedsMasking(
        config, normalization_method="none", eval_protocol=protocol, seed=0
    )
    trials = ours_trials(config, case.batch_size)[0]
    optimizer = ours_optimizer(model)

    def run_once() -> None:
        with record_function("collate"):
            batch = collator(trials)
        if phase == "eval":
            with torch.inference_mode(), record_function("forward"):
                model(**batch, **prediction_kwargs(model))
            return
        with record_function("forward"):
            loss = model(**batch).loss
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            optimizer.step()
            optimizer.zero_grad()

    model.train(phase == "train")
    for _ in range(2):
        run_once()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run_once()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def _attention_kernel(tokens: int, batch_size: int = 16) -> tuple[Callable[[], Any], int]:
    """`scaled_dot_product_attention` at the cases' shape (batch 16, HEADS heads of
    HIDDEN / HEADS dimensions, `tokens` queries and keys, no mask) and its FLOPs (2·L²·H per
    product): counted as matmul FLOPs by the shares, run by a fused kernel well below the
    square-matmul rate at this small head dimension."""
    import torch
    import torch.nn.functional as F

    shape = (batch_size, HEADS, tokens, HIDDEN // HEADS)
    query, key, value = (torch.randn(shape) for _ in range(3))
    flops = 4 * batch_size * tokens * tokens * HIDDEN
    return lambda: F.scaled_dot_product_attention(query, key, value), flops


def _projection_kernel(tokens: int, batch_size: int = 16) -> tuple[Callable[[], Any], int]:
    """One layer's four projections with bias on `batch_size x tokens` rows (q/k/v H -> 3H,
    output H -> H, MLP H -> I -> H) and their FLOPs: thin products (inner size 256 or 512)."""
    import torch
    import torch.nn.functional as F

    rows = batch_size * tokens
    inputs = {HIDDEN: torch.randn(rows, HIDDEN), INTERMEDIATE: torch.randn(rows, INTERMEDIATE)}
    shapes = [
        (HIDDEN, 3 * HIDDEN),
        (HIDDEN, HIDDEN),
        (HIDDEN, INTERMEDIATE),
        (INTERMEDIATE, HIDDEN),
    ]
    weights = [(torch.randn(out, inp), torch.randn(out)) for inp, out in shapes]

    def run() -> None:
        for (weight, bias), (inp, _) in zip(weights, shapes, strict=True):
            F.linear(inputs[inp], weight, bias)

    return run, 2 * rows * sum(inp * out for inp, out in shapes)


def kernel_rates(repeats: int = 12, size: int = 2048) -> dict[str, dict[str, float]]:
    """Rates of attention and of a layer's projections at both layouts' token counts, relative
    to a `size`² matmul timed in the same loop (calls interleaved, medians of CPU time), so a
    noisy machine moves all three together and the ratios hold."""
    import torch

    matrices = torch.randn(size, size), torch.randn(size, size)
    kernels = {"matmul": (lambda: matrices[0] @ matrices[1], 2 * size**3)}
    for tokens in ATTENTION_TOKENS:
        kernels[f"attention {tokens}"] = _attention_kernel(tokens)
        kernels[f"projections {tokens}"] = _projection_kernel(tokens)
    cpus: dict[str, list[float]] = {name: [] for name in kernels}
    with torch.inference_mode():
        for index in range(2 + repeats):
            for name, (run, _) in kernels.items():
                cpu = time.process_time()
                run()
                if index >= 2:
                    cpus[name].append(time.process_time() - cpu)
    rates = {name: flops / statistics.median(cpus[name]) for name, (_, flops) in kernels.items()}
    return {
        kind: {str(t): rates[f"{kind} {t}"] / rates["matmul"] for t in ATTENTION_TOKENS}
        for kind in ("attention", "projections")
    }


def matmul_worker() -> dict[str, Any]:
    """The machine's 2048² fp32 matmul rate with THREADS threads (GFLOP/s), and the relative
    rates of attention and a layer's projections (:func:`kernel_rates`)."""
    import torch

    torch.set_num_threads(THREADS)
    result: dict[str, Any] = {key: value / 1e9 for key, value in matmul_rate().items()}
    result["relative_rates"] = kernel_rates()
    return result


# =============================================================================================
# Driver
# =============================================================================================


def run_worker(arguments: list[str], timeout: float) -> dict[str, Any] | None:
    """Run one worker subprocess of this script; its result dict or None (error printed)."""
    command = [sys.executable, os.path.abspath(__file__), *arguments]
    start = time.time()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"worker {' '.join(arguments)} timed out after {timeout:.0f}s", file=sys.stderr)
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        print(
            f"worker {' '.join(arguments)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}",
            file=sys.stderr,
        )
        return None
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["process_s"] = time.time() - start
    result["load"] = os.getloadavg()[0]
    return result


def worker_arguments(system: str, case: str, args: argparse.Namespace) -> list[str]:
    """Command-line arguments of one (system, case) worker."""
    arguments = ["--worker", system, "--case", case, "--steps", str(args.steps)]
    arguments += ["--warmup", str(args.warmup), "--eval-batches", str(args.eval_batches)]
    arguments += ["--latency-reps", str(args.latency_reps)]
    for flag in ("reference_src", "attention_dropout_mode", "attn_implementation"):
        value = getattr(args, flag)
        if value is not None:
            arguments += ["--" + flag.replace("_", "-"), value]
    return arguments


def run_rounds(args: argparse.Namespace, cases: list[str], systems: list[str]) -> list[dict]:
    """All rounds: matmul rate, then every (case, system), alternating who goes first."""
    results: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        matmul = run_worker(["--worker", "matmul"], args.timeout)
        if matmul:
            results.append({"system": "matmul", "round": round_index, **matmul})
            print(
                f"[round {round_index}] matmul {matmul['flops_median']:.0f} GFLOP/s "
                f"(CPU-time basis {matmul['flops_cpu_basis']:.0f})",
                flush=True,
            )
        order = systems if round_index % 2 == 0 else systems[::-1]
        for case in cases:
            for system in order:
                result = run_worker(worker_arguments(system, case, args), args.timeout)
                if result is None:
                    continue
                result.update(system=system, case=case, round=round_index)
                results.append(result)
                print(
                    f"[round {round_index}] {case} {system:10s} step {result['step_s']:.3f}s "
                    f"(CPU {result['step_cpu_s']:.2f}s) eval {result['eval_s']:.3f}s "
                    f"peak RSS {result['peak_rss_gb']:.2f} GB load {result['load']:.1f}",
                    flush=True,
                )
                if args.json:
                    with open(args.json, "w") as out:
                        json.dump(results, out, indent=1)
    return results


def _ratios(results: list[dict], case: str, system: str, key: str, ref_over_ours: bool):
    """Per-round ratios of `key` between `system` and ``ref`` in one case (none for ref)."""
    if system == "ref":
        return []
    ref = {r["round"]: r[key] for r in results if r.get("case") == case and r["system"] == "ref"}
    ours = [
        (r[key], ref[r["round"]])
        for r in results
        if r.get("case") == case and r["system"] == system and r["round"] in ref
    ]
    return [b / a if ref_over_ours else a / b for a, b in ours]


def _fmt(values: Sequence[float], unit: str = "×") -> str:
    return "; ".join(f"{v:.2f}{unit}" for v in values) if values else "-"


def _share(row: dict, flops: float, cpu_s: float, peak_gflops: float) -> float:
    """Matmul FLOP/s of a phase as % of the matmul peak, on a CPU-time basis."""
    return 100 * flops / (cpu_s / THREADS) / 1e9 / peak_gflops


def _eval_ceiling(row: dict, case: str, matmuls: list[dict]) -> str:
    """The evaluation share a forward pass could reach if it ran nothing but its products:
    attention and the layers' projections at their rates relative to the 2048² matmul (median
    over rounds), the stitcher and readout at the matmul rate. What the measured share lacks
    from it is everything else (norms, activations, embeddings, copies, Python)."""
    tokens = str(row["tokens"])
    relative = {}
    for kind in ("attention", "projections"):
        measured = [r["relative_rates"][kind][tokens] for r in matmuls if "relative_rates" in r]
        if not measured:
            return "-"
        relative[kind] = median(measured)
    layers, batch = CASES[case].layers, CASES[case].batch_size
    attention = batch * layers * 4 * row["tokens"] ** 2 * HIDDEN  # FLOPs of the two products
    linear = batch * layers * 2 * row["tokens"] * (4 * HIDDEN**2 + 2 * HIDDEN * INTERMEDIATE)
    other = row["forward_flops"] - attention - linear  # stitcher and readout
    matmul_seconds = other + attention / relative["attention"] + linear / relative["projections"]
    return f"{100 * row['forward_flops'] / matmul_seconds:.0f} %"


def print_tables(results: list[dict], cases: list[str], systems: list[str]) -> None:
    """The summary table (speed-ups vs ref), the detail table and the inference table."""
    matmuls = [r for r in results if r["system"] == "matmul"]
    peak = max((r["flops_cpu_basis"] for r in matmuls), default=float("nan"))
    print(
        "\nfp32 matmul 2048², 2 threads (GFLOP/s): "
        + ", ".join(
            f"round {r['round']}: {r['flops_median']:.0f} wall, {r['flops_cpu_basis']:.0f} "
            "CPU-time basis"
            for r in matmuls
        )
    )
    for r in matmuls:
        if "relative_rates" in r:
            rates = "; ".join(
                f"{kind} " + ", ".join(f"{t} tokens {100 * v:.0f} %" for t, v in by_tokens.items())
                for kind, by_tokens in r["relative_rates"].items()
            )
            print(f"round {r['round']}, batch 16, share of the matmul rate: {rates}")
    print(
        "\n| case | system | train speed-up (wall / CPU time) | eval speed-up (wall / CPU time)"
        " | peak memory ours/ref | train share of matmul rate | eval share of matmul rate "
        "(kernel-bound ceiling) |"
    )
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for system in systems:
            rows = [r for r in results if r.get("case") == case and r["system"] == system]
            if not rows:
                continue
            speed_ups = [
                _fmt(_ratios(results, case, system, key, ref_over_ours=True))
                for key in ("step_s", "step_cpu_s", "eval_s", "eval_cpu_s")
            ]
            memory = _ratios(results, case, system, "peak_rss_gb", ref_over_ours=False)
            flops = rows[0]["forward_flops"]
            train_share = _share(rows[0], 3 * flops, median([r["step_cpu_s"] for r in rows]), peak)
            eval_share = _share(rows[0], flops, median([r["eval_cpu_s"] for r in rows]), peak)
            print(
                f"| {case} | {system} | {speed_ups[0]} / {speed_ups[1]} | "
                f"{speed_ups[2]} / {speed_ups[3]} | {_fmt(memory, '')} "
                f"({max(r['peak_rss_gb'] for r in rows):.2f} GB) | {train_share:.0f} % | "
                f"{eval_share:.0f} % ({_eval_ceiling(rows[0], case, matmuls)}) |"
            )
    print_detail(results, cases, systems)
    print_inference(results, cases)


def print_detail(results: list[dict], cases: list[str], systems: list[str]) -> None:
    """Absolute medians per (case, system), and how much of the peak RSS is set-up."""
    print(
        "\n| case | system | tokens | params | s/step wall (per round) | CPU s/step | trials/s "
        "| eval s/batch | eval CPU s | collate CPU s | peak RSS GB | RSS after imports GB "
        "(share of peak) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for system in systems:
            rows = [r for r in results if r.get("case") == case and r["system"] == system]
            if not rows:
                continue
            peak = max(r["peak_rss_gb"] for r in rows)
            setup = median(
                [r.get("rss_after_imports_gb", r.get("rss_after_setup_gb")) for r in rows]
            )
            collate = median([r["collate_cpu_s"] for r in rows if "collate_cpu_s" in r])
            per_round = "; ".join(f"{r['step_s']:.2f}" for r in rows)
            print(
                f"| {case} | {system} | {rows[0]['tokens']} | {rows[0]['params']:,} | "
                f"{median([r['step_s'] for r in rows]):.3f} ({per_round}) | "
                f"{median([r['step_cpu_s'] for r in rows]):.2f} | "
                f"{median([r['trials_per_s'] for r in rows]):.1f} | "
                f"{median([r['eval_s'] for r in rows]):.3f} | "
                f"{median([r['eval_cpu_s'] for r in rows]):.3f} | {collate:.3f} | {peak:.2f} | "
                f"{setup:.2f} ({100 * setup / peak:.0f} %) |"
            )
    print(
        "\nRSS after imports: ours right after importing torch + neds_hf; ref after building "
        "its model (its imports and parameters)."
    )


def print_inference(results: list[dict], cases: list[str]) -> None:
    """neds_hf inference: batch-1 latency and batch-64 throughput of the prediction helpers."""
    rows = [r for r in results if "inference" in r and r.get("case") in cases]
    if not rows:
        return
    print(
        f"\n| case | predict_neural_activity batch 1 (ms, {THREADS} threads / 1 thread) | "
        f"predict_behavior batch 1 (ms, {THREADS} threads / 1 thread) | "
        "predict_neural_activity batch 64 (trials/s) | predict_behavior batch 64 (trials/s) |"
    )
    print("|---|---|---|---|---|")
    for case in cases:
        latency = [r["inference"] for r in rows if r["case"] == case]
        if not latency:
            continue

        def cell(key: str, latency: list[dict] = latency) -> str:
            values = [x[key] for x in latency if key in x]
            return f"{median(values):.1f}" if values else "-"

        print(
            f"| {case} | "
            + " | ".join(
                f"{cell(f'{name}_b1_ms')} / {cell(f'{name}_b1_1thread_ms')}"
                for name in ("predict_neural_activity", "predict_behavior")
            )
            + f" | {cell('predict_neural_activity_b64_trials_per_s')} | "
            + f"{cell('predict_behavior_b64_trials_per_s')} |"
        )


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--reference-src",
        default=os.environ.get("NEDS_REFERENCE_SRC"),
        help="src/ of a yzhang511/NEDS checkout (or $NEDS_REFERENCE_SRC)",
    )
    parser.add_argument("--cases", default="a,b,c,d", help=f"comma list of {sorted(CASES)}")
    parser.add_argument("--systems", default="ref,ours,ours500", help=f"comma list of {SYSTEMS}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--eval-batches", type=int, default=3)
    parser.add_argument("--latency-reps", type=int, default=10)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 steps, 1 warm-up, 1 eval batch, 3 latency repeats",
    )
    parser.add_argument("--json", default=None, help="write every measurement here")
    parser.add_argument("--from-json", default=None, help="print the tables of a saved --json")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker")
    parser.add_argument(
        "--attention-dropout-mode",
        default=None,
        help="neds_hf config.attention_dropout_mode (keys|probabilities)",
    )
    parser.add_argument(
        "--attn-implementation",
        default=None,
        help="neds_hf attention implementation (sdpa|eager|flash_attention_2)",
    )
    parser.add_argument(
        "--profile",
        choices=("train", "eval"),
        default=None,
        help="print neds_hf's top operators for one phase and exit",
    )
    parser.add_argument("--profile-rows", type=int, default=25)
    parser.add_argument("--case", default="a", help="case of --profile / a worker")
    parser.add_argument(
        "--system", default="ours", choices=("ours", "ours500"), help="layout of --profile"
    )
    parser.add_argument(
        "--worker", default=None, choices=(*SYSTEMS, "matmul"), help=argparse.SUPPRESS
    )
    return parser


def run_single_worker(args: argparse.Namespace) -> None:
    """Worker-process entry: measure one thing and print it as one result line."""
    if args.worker == "matmul":
        result = matmul_worker()
    elif args.worker == "ref":
        result = reference_worker(
            args.reference_src, args.case, args.steps, args.warmup, args.eval_batches
        )
    else:
        result = ours_worker(
            args.worker, args.case, args.steps, args.warmup, args.eval_batches, args
        )
    result.setdefault("peak_rss_gb", peak_rss_gb())
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or one worker / the profiler) from the command line."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.eval_batches, args.latency_reps = 2, 1, 1, 3
    if args.worker:
        run_single_worker(args)
        return
    if args.profile:
        profile_worker(args.case, args.profile, args.system, args.profile_rows, args)
        return
    cases, systems = args.cases.split(","), args.systems.split(",")
    unknown = sorted(set(cases) - set(CASES)) + sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(
            f"unknown cases/systems {unknown}; cases: {sorted(CASES)}, systems: {SYSTEMS}"
        )
    if args.from_json:
        with open(args.from_json) as saved:
            print_tables(json.load(saved), cases, systems)
        return
    if "ref" in systems:
        if not args.reference_src or not os.path.isdir(
            os.path.join(args.reference_src, "multi_modal")
        ):
            raise SystemExit(
                f"--reference-src must be the src/ folder of a yzhang511/NEDS checkout "
                f"(with multi_modal/), got {args.reference_src!r}; or leave 'ref' out of --systems"
            )
        args.reference_src = os.path.abspath(args.reference_src)
    print_tables(run_rounds(args, cases, systems), cases, systems)


if __name__ == "__main__":
    main()
