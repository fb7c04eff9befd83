"""Benchmark: how the data path scales with the number of sessions.

For each size (default 8, 32 and 128 tiny synthetic sessions) a synthetic ONE cache is
generated and built into a dataset with the local engine (and, for ``--ray-sizes``, with the
Ray engine: the wall time includes starting a local Ray instance). Then, each in a fresh
process so that peak memory is its own, the training input path reads one epoch of the train
split in batches of ``--batch-size`` trials:

* in-memory: :class:`neds_hf.data.training_data.NedsTrialDataset` (``datasets`` loads every
  session into its Arrow cache) with :class:`SessionBatchSampler`;
* streaming: :class:`neds_hf.data.streaming.NedsStreamingTrials` (shuffle buffer of
  ``--shuffle-buffer`` rows) and its fixed number of batches.

Reported: peak resident memory of that process (which includes the Python, torch and
``datasets`` imports, whose transient peak can hide the reading; ``VmHWM`` of
``/proc/self/status`` on Linux, since a child's ``ru_maxrss`` also counts its parent's memory
at the fork), the largest
growth of resident memory while the dataset is opened and read over the memory after the
imports (sampled after every batch), and trials read per second. No model runs: the numbers
are the data path's. A shuffled multi-file stream pays a fixed pause at the end of each pass
(``datasets.config.SLEEP_TIME_ON_THREADS_SHUTDOWN``, 5 s in datasets 5.2), which dominates
the streaming trials/s of small corpora.

    PYTHONPATH=src python benchmarks/bench_scale.py [--sizes 8 32 128] [--ray-sizes 8]

``--work-dir DIR`` keeps the caches and datasets there and reuses those already built (build
time then shows ``reused``), e.g. to compare two versions of the reading code on the same
datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _read_epoch(mode: str, dataset: str, batch_size: int, shuffle_buffer: int) -> dict:
    """One epoch of the train split (run in a child process); trials and seconds from the
    dataset's construction (loading included) to the last batch, imports excluded."""
    import psutil

    from neds_hf.data.streaming import NedsStreamingTrials
    from neds_hf.data.training_data import NedsTrialDataset, SessionBatchSampler

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    start = time.perf_counter()
    n_trials = 0
    if mode == "in-memory":
        data = NedsTrialDataset(dataset, "train")
        sampler = SessionBatchSampler(data, batch_size, mode="mixed", seed=0)
        batches = ([data[i] for i in batch] for batch in sampler)
    else:
        data = NedsStreamingTrials(dataset, "train", shuffle_buffer_size=shuffle_buffer, seed=0)
        batches = data.batches(batch_size, data.steps_per_epoch(batch_size))
    for batch in batches:
        n_trials += len(batch)
        peak = max(peak, process.memory_info().rss)
    result = {
        "trials": n_trials,
        "seconds": time.perf_counter() - start,
        "read_rss_mib": (peak - baseline) / 2**20,
    }
    status = Path("/proc/self/status")
    if status.exists():  # this process's own high-water mark (since its exec)
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                result["peak_rss_mib"] = int(line.split()[1]) / 1024  # kB
    return result


def _measure(mode: str, dataset: Path, args: argparse.Namespace, hf_cache: Path) -> dict:
    """Run :func:`_read_epoch` in a fresh process; add its peak RSS in MiB."""
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        str(dataset),
        "--batch-size",
        str(args.batch_size),
        "--shuffle-buffer",
        str(args.shuffle_buffer),
    ]
    env = {**os.environ, "HF_DATASETS_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{mode} reader on {dataset} failed with code {process.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    if "peak_rss_mib" not in result:  # no /proc: ru_maxrss, which includes the parent's RSS
        result["peak_rss_mib"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def _build(cache: Path, eids: list[str], output: Path, engine: str, num_proc: int) -> float:
    from neds_hf.data import build_dataset

    start = time.perf_counter()
    report = build_dataset(cache, eids, output, engine=engine, num_proc=num_proc, progress=False)
    if report.skipped:
        raise RuntimeError(f"sessions skipped: {report.skipped}")
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--ray-sizes", type=int, nargs="*", default=[8])
    parser.add_argument("--num-proc", type=int, default=2, help="workers of both engines")
    parser.add_argument("--n-trials", type=int, default=24, help="trials per session")
    parser.add_argument("--neurons", type=int, default=6, help="neurons per probe")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shuffle-buffer", type=int, default=256)
    parser.add_argument(
        "--work-dir", type=Path, help="keep caches and datasets here; reuse those already built"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, dataset = args.child
        print(json.dumps(_read_epoch(mode, dataset, args.batch_size, args.shuffle_buffer)))
        return

    from neds_hf.data.synthetic import make_synthetic_cache

    header = (
        f"{'sessions':>8} | {'reader':<9} | {'peak RSS MiB':>12} | {'read +RSS MiB':>13} | "
        f"{'trials/s':>9} | "
        f"{'trials':>6} | {'build local s':>13} | {'build ray s':>11}"
    )
    print(header, flush=True)
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            root = args.work_dir
            root.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            dataset = root / f"dataset-{size}"
            local_text = ray_text = "reused"
            if not dataset.exists():
                cache = root / f"cache-{size}"
                eids = make_synthetic_cache(
                    cache,
                    size,
                    seed=size,
                    n_trials=args.n_trials,
                    n_neurons_per_probe=args.neurons,
                )
                local_text = f"{_build(cache, eids, dataset, 'local', args.num_proc):.1f}"
                ray_text = "-"
                if size in args.ray_sizes:
                    ray_text = (
                        f"{_build(cache, eids, root / f'ray-{size}', 'ray', args.num_proc):.1f}"
                    )
            for mode in ("in-memory", "streaming"):
                with tempfile.TemporaryDirectory() as hf_cache:  # a cold datasets cache each time
                    result = _measure(mode, dataset, args, Path(hf_cache))
                print(  # each row as soon as it is measured: a long run can be cut short
                    f"{size:>8} | {mode:<9} | {result['peak_rss_mib']:>12.0f} | "
                    f"{result['read_rss_mib']:>13.1f} | "
                    f"{result['trials'] / result['seconds']:>9.0f} | {result['trials']:>6} | "
                    f"{local_text:>13} | {ray_text:>11}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
