"""Training and evaluation throughput of neds_hf at the paper's model sizes, on GPU or CPU.

For each depth (default 5, 16 and 22 layers at hidden 256, the paper's single-session, medium
and large NEDS) it prints tokens/s, trials/s, model FLOPs utilisation (MFU: analytic matmul
FLOPs per second over the device's peak) and peak memory, for training steps (forward +
backward + fused AdamW; bf16 autocast on CUDA by default; optional ``torch.compile`` and
gradient checkpointing) and for the evaluation forward (encoding protocol, dropout off,
inference mode). Every size runs in its own subprocess, so its peak memory is its own.

The device peak comes from a table of dense bf16 / fp32 tensor-core rates for known GPUs, and
from a matmul measured in the same run on CPU or on an unknown GPU. The same command runs on a
laptop CPU (``--small``: tiny sizes, seconds) and on a GPU::

    python benchmarks/bench_gpu.py --small                    # CPU smoke run
    python benchmarks/bench_gpu.py                            # GPU: 5/16/22 layers, batch 64
    python benchmarks/bench_gpu.py --compile --gradient-checkpointing --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench_vs_reference import forward_matmul_flops, matmul_rate, ours_config_kwargs, ours_trials

__all__ = ["PEAK_TFLOPS", "device_peak_tflops"]

RESULT_PREFIX = "BENCH_GPU_RESULT "

#: Dense (no sparsity) peak TFLOP/s per GPU model: (bf16 tensor cores, fp32 incl. TF32 off).
#: Matched by substring of `torch.cuda.get_device_name()`, first match wins.
PEAK_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H200", 989.0, 67.0),
    ("H100 PCIe", 756.0, 51.0),
    ("H100", 989.0, 67.0),
    ("GH200", 989.0, 67.0),
    ("B200", 2250.0, 80.0),
    ("A100", 312.0, 19.5),
    ("A800", 312.0, 19.5),
    ("L40S", 362.0, 91.6),
    ("L40", 181.0, 90.5),
    ("A40", 150.0, 37.4),
    ("A10G", 70.0, 31.2),
    ("A10", 125.0, 31.2),
    ("L4", 121.0, 30.3),
    ("RTX 6000 Ada", 364.0, 91.1),
    ("RTX A6000", 155.0, 38.7),
    ("RTX 4090", 165.0, 82.6),
    ("RTX 3090", 71.0, 35.6),
)

SIZES_PAPER = (5, 16, 22)  # layers of the paper's three NEDS sizes (hidden 256, 8 heads, MLP 512)


def device_peak_tflops(device: str, bf16: bool) -> tuple[float, str]:
    """Peak TFLOP/s of `device` for the run's dtype, and where the number comes from.

    Known GPUs come from `PEAK_TFLOPS`; CPU and unknown GPUs from a 2048² matmul measured now
    (on CPU on a CPU-time basis, i.e. as if the process had its threads to itself).
    """
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name()
        for pattern, bf16_peak, fp32_peak in PEAK_TFLOPS:
            if pattern in name:
                return (bf16_peak if bf16 else fp32_peak), f"table ({name})"
    dtype = torch.bfloat16 if bf16 else torch.float32
    rate = matmul_rate(4096 if device == "cuda" else 2048, dtype=dtype, device=device)
    key = "flops_best" if device == "cuda" else "flops_cpu_basis"
    return rate[key] / 1e12, f"measured {'bf16' if bf16 else 'fp32'} matmul on {device}"


def peak_memory_gb(device: str) -> float:
    """Peak memory of this process: allocated CUDA memory on GPU, resident memory on CPU."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1024**3
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def build_model(args: argparse.Namespace, layers: int):
    """The model and its config for one size."""
    from neds_hf import NedsConfig, NedsForMaskedModeling

    sessions = {f"session-{i:02d}": max(1, args.neurons - 25 * i) for i in range(args.sessions)}
    config = NedsConfig(
        hidden_size=args.hidden,
        num_hidden_layers=layers,
        num_attention_heads=args.heads,
        intermediate_size=2 * args.hidden,
        sessions=sessions,
        spike_stitcher_size=2 * args.neurons,
        **ours_config_kwargs(NedsConfig, attention_dropout_mode=args.attention_dropout_mode),
    )
    if args.attn_implementation:
        model = NedsForMaskedModeling._from_config(
            config, attn_implementation=args.attn_implementation
        )
    else:
        model = NedsForMaskedModeling(config)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model, model.config


def make_batches(config: Any, batch_size: int, count: int, device: str, eval_protocol=None):
    """`count` collated batches (cycling over sessions), on `device`."""
    import torch

    from neds_hf import DataCollatorForNedsMasking

    collator = DataCollatorForNedsMasking(
        config, normalization_method="none", eval_protocol=eval_protocol, seed=0
    )
    per_session = ours_trials(config, batch_size)
    batches = []
    for i in range(count):
        batch = collator(per_session[i % len(per_session)])
        if device == "cuda":
            batch = {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
        batches.append(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    return batches


def timed(fn, batches: Sequence[dict], count: int, device: str) -> tuple[list, list]:
    """Wall and process-CPU seconds of `fn(batch)` per call, synchronising the GPU."""
    import torch

    walls, cpus = [], []
    for i in range(count):
        if device == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn(batches[i % len(batches)])
        if device == "cuda":
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def effective_seconds(walls: list[float], cpus: list[float], device: str, threads: int) -> float:
    """Median seconds per call that MFU is computed from.

    GPU: wall time. CPU: process CPU time / threads, the time the call would take with its
    threads to itself, comparable with the CPU-time-basis matmul peak on a shared machine.
    """
    if device == "cuda":
        return statistics.median(walls)
    return statistics.median(cpus) / threads


def size_worker(args: argparse.Namespace, layers: int) -> dict[str, Any]:
    """Measure training and evaluation of one model size in this process."""
    import torch

    from neds_hf.training.setup import fused_adamw_supported

    device = args.device
    if device == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, config = build_model(args, layers)
    model.to(device)
    optimizer = torch.optim.AdamW(  # as `neds-hf train` builds it: fused where torch has it
        model.parameters(), lr=2e-4, fused=fused_adamw_supported(torch.device(device))
    )
    forward = torch.compile(model) if args.compile else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.bf16)
    train_batches = make_batches(config, args.batch_size, 4, device)
    eval_batches = make_batches(config, args.batch_size, 2, device, "encoding")

    def train_step(batch: dict) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()

    def eval_forward(batch: dict) -> None:
        with torch.inference_mode(), autocast:
            forward(**batch)

    model.train()
    train_wall, train_cpu = timed(train_step, train_batches, args.warmup + args.steps, device)
    model.eval()
    eval_wall, eval_cpu = timed(eval_forward, eval_batches, args.warmup + args.steps, device)
    skip = args.warmup
    flops = forward_matmul_flops(
        layers,
        config.num_tokens,
        args.batch_size,
        args.neurons,
        config.spike_stitcher_size,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        time_bins=config.num_time_bins,
    )
    return {
        "layers": layers,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_trial": config.num_tokens,
        "train_s": statistics.median(train_wall[skip:]),
        "eval_s": statistics.median(eval_wall[skip:]),
        "train_mfu_s": effective_seconds(train_wall[skip:], train_cpu[skip:], device, args.threads),
        "eval_mfu_s": effective_seconds(eval_wall[skip:], eval_cpu[skip:], device, args.threads),
        "forward_flops": flops,
        "peak_memory_gb": peak_memory_gb(device),
    }


def summarize(result: dict[str, Any], batch_size: int, peak_tflops: float) -> dict[str, float]:
    """Throughput and MFU from one size's timings."""
    tokens = batch_size * result["tokens_per_trial"]
    return {
        "train_tokens_per_s": tokens / result["train_s"],
        "train_trials_per_s": batch_size / result["train_s"],
        "train_mfu": 3 * result["forward_flops"] / result["train_mfu_s"] / (peak_tflops * 1e12),
        "eval_tokens_per_s": tokens / result["eval_s"],
        "eval_trials_per_s": batch_size / result["eval_s"],
        "eval_mfu": result["forward_flops"] / result["eval_mfu_s"] / (peak_tflops * 1e12),
    }


def print_table(results: list[dict], args: argparse.Namespace, peak: float, source: str) -> None:
    """One Markdown row per model size."""
    memory = "peak CUDA allocated GB" if args.device == "cuda" else "peak RSS GB"
    print(
        f"\ndevice {args.device_name}; {'bf16 autocast' if args.bf16 else 'fp32'}; "
        f"compile {args.compile}; gradient checkpointing {args.gradient_checkpointing}; "
        f"batch {args.batch_size}; peak {peak:.3g} TFLOP/s ({source})"
        + ("; CPU: MFU on a CPU-time basis (CPU s / threads)" if args.device == "cpu" else "")
        + "\n"
    )
    print(
        f"| layers | params | tokens/trial | train s/step | train tokens/s | train trials/s | "
        f"train MFU | eval s/batch | eval tokens/s | eval trials/s | eval MFU | {memory} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['layers']} | {r['params']:,} | {r['tokens_per_trial']} | {r['train_s']:.4f} | "
            f"{r['train_tokens_per_s']:,.0f} | {r['train_trials_per_s']:,.1f} | "
            f"{100 * r['train_mfu']:.1f} % | {r['eval_s']:.4f} | {r['eval_tokens_per_s']:,.0f} | "
            f"{r['eval_trials_per_s']:,.1f} | {100 * r['eval_mfu']:.1f} % | "
            f"{r['peak_memory_gb']:.2f} |"
        )


def build_parser() -> argparse.ArgumentParser:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--layers", default=None, help="comma list (default 5,16,22)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--neurons", type=int, default=668, help="neurons of the largest session")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 GPU, 16 CPU")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on GPU, fp32 on CPU"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attention-dropout-mode", default=None, help="keys|probabilities")
    parser.add_argument("--attn-implementation", default=None, help="sdpa|eager|flash_attention_2")
    parser.add_argument(
        "--small",
        action="store_true",
        help="tiny sizes for a CPU smoke run: 1,2 layers, hidden 64, 64 neurons, batch 4",
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--worker-layers", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the device-dependent defaults and the --small sizes."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.small:
        args.layers = args.layers or "1,2"
        args.hidden, args.heads, args.neurons = 64, 4, 64
        args.batch_size = args.batch_size or 4
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
    args.layers = args.layers or ",".join(map(str, SIZES_PAPER))
    args.batch_size = args.batch_size or (64 if args.device == "cuda" else 16)
    args.bf16 = (args.dtype or ("bf16" if args.device == "cuda" else "fp32")) == "bf16"
    args.device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run every size in its own subprocess and print the table."""
    raw = sys.argv[1:] if argv is None else list(argv)
    args = resolve(build_parser().parse_args(raw))
    if args.worker_layers is not None:
        print(RESULT_PREFIX + json.dumps(size_worker(args, args.worker_layers)), flush=True)
        return
    peak, source = device_peak_tflops(args.device, args.bf16)
    results = []
    for layers in (int(x) for x in args.layers.split(",")):
        command = [sys.executable, os.path.abspath(__file__), *raw, "--worker-layers", str(layers)]
        proc = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            print(f"{layers} layers failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        result = json.loads(lines[-1][len(RESULT_PREFIX) :])
        result.update(summarize(result, args.batch_size, peak))
        results.append(result)
        print(f"{layers} layers: train {result['train_s']:.4f} s/step", flush=True)
    print_table(results, args, peak, source)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"settings": vars(args), "peak_tflops": peak, "results": results}, out)


if __name__ == "__main__":
    main()
