"""Model quality on the realistic synthetic preset: NEDS against the oracle and linear baselines.

Builds one synthetic corpus (``--preset``, realistic by default) as a ONE cache, then runs the
demo's pipeline on it (``neds_hf.demo.run_demo`` with ``cache_dir``: dataset through ONE,
pretraining on the other sessions, fine-tuning and from-scratch training on the held-out one,
linear baselines, evaluation) for each held-out session of the rotation and each training seed.
Prints one table, method x metric, mean ± sd over the runs (each run's average over its
held-out sessions) and, for the encoding metrics, the fraction of the oracle's score (expected
counts given the observed behaviour); then the region probe's Cosmos accuracy on NEDS's
per-neuron embeddings next to the probe on simple per-neuron features (log rate, Poisson GLM
weights); then the wall time.

Run: ``python benchmarks/bench_quality.py [--quick] [--rotations 2] [--seeds 3]
[--pretrain-steps 1500] [--finetune-steps 400] [--jobs 1] [--output DIR]``; on a 2-core
machine ``--jobs 2 --num-threads 1`` runs two rotation x seed runs at a time. ``--quick`` is a
smoke size (seconds per run, numbers meaningless). Every run's ``results.json`` stays under
``--output``; ``--reuse`` reads the runs already there (same settings, sessions and corpus)
instead of training them again, so more seeds can be added to a finished benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neds_hf.data.load import file_sha256
from neds_hf.data.synthetic import make_synthetic_cache
from neds_hf.demo import DEMO_DEFAULTS, METHODS, run_demo
from neds_hf.metrics import ENCODING_METRICS
from neds_hf.report import fmt

QUICK = dict(
    sessions=3,
    trials=60,
    neurons=20,
    rotations=1,
    seeds=1,
    hidden_size=32,
    pretrain_steps=8,
    finetune_steps=4,
)


def parse_arguments() -> argparse.Namespace:
    """Command-line options (the demo's sizes and budget by default)."""
    demo = DEMO_DEFAULTS
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", default=demo["preset"], help="synthetic preset")
    parser.add_argument("--sessions", type=int, default=demo["n_sessions"], help="corpus sessions")
    parser.add_argument("--trials", type=int, default=demo["n_trials"], help="trials per session")
    parser.add_argument("--neurons", type=int, default=demo["n_neurons"], help="units per probe")
    parser.add_argument("--rotations", type=int, default=2, help="held-out sessions in turn")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per rotation")
    parser.add_argument("--hidden-size", type=int, default=demo["hidden_size"], help="hidden size")
    parser.add_argument("--layers", type=int, default=demo["num_layers"], help="layers")
    parser.add_argument(
        "--pretrain-steps", type=int, default=demo["pretrain_steps"], help="pretraining steps"
    )
    parser.add_argument(
        "--finetune-steps",
        type=int,
        default=demo["finetune_steps"],
        help="fine-tuning (and from-scratch) steps",
    )
    parser.add_argument("--num-threads", type=int, default=0, help="torch threads (0: idle cores)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--corpus-seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--output", type=Path, default=None, help="work folder (None: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read the runs already under --output (same settings, sessions and corpus) "
        "instead of training them again",
    )
    args = parser.parse_args()
    if args.reuse and args.output is None:
        parser.error("--reuse reads the runs of an earlier --output folder: pass --output")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if not 1 <= args.rotations <= args.sessions - 1:
        parser.error(f"--rotations must lie in 1..{args.sessions - 1}, got {args.rotations}")
    return args


def summary_table(runs: list[dict[str, Any]]) -> str:
    """Markdown table of the runs' ``results`` blocks: mean ± sd per method and metric, and
    the fraction of the oracle's mean for the encoding metrics."""
    metrics = runs[0]["results"]["metrics"]
    methods = [m for m in METHODS if m in runs[0]["results"]["methods"]]

    def values(method: str, metric: str) -> np.ndarray:
        scores = [run["results"]["average"]["scores"][method][metric] for run in runs]
        return np.array([np.nan if v is None else v for v in scores], dtype=np.float64)

    lines = [
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for method in methods:
        cells = []
        for metric in metrics:
            sample = values(method, metric)
            if np.all(np.isnan(sample)):
                cells.append("n/a")
                continue
            cell = f"{fmt(float(np.nanmean(sample)))} ± {fmt(float(np.nanstd(sample)))}"
            if metric in ENCODING_METRICS and "oracle" in methods:
                oracle = float(np.nanmean(values("oracle", metric)))
                cell += f" ({float(np.nanmean(sample)) / oracle:.0%})"
            cells.append(cell)
        lines.append(f"| {METHODS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def region_probe_summary(runs: list[dict[str, Any]], level: str = "region_cosmos") -> list[str]:
    """One line per region probe of the runs (NEDS embeddings, and the per-neuron-feature
    baseline): mean ± sd of the cross-validated accuracy at `level`, and chance."""
    lines = []
    for name in runs[0]["region_probe"]:
        probes = [run["region_probe"].get(name, {}).get(level) for run in runs]
        probes = [probe for probe in probes if probe]
        if not probes:
            continue
        accuracy = np.array([probe["accuracy"] for probe in probes])
        chance = np.mean([probe["chance_accuracy"] for probe in probes])
        lines.append(
            f"- {name}: {level} accuracy {fmt(float(accuracy.mean()))} ± "
            f"{fmt(float(accuracy.std()))} (chance {fmt(float(chance))}, {len(probes)} runs)"
        )
    return lines


def run_demo_job(job: dict[str, Any]) -> dict[str, Any]:
    """One rotation x seed run in a worker process (warnings-level logging, as in the parent)."""
    logging.basicConfig(level=logging.WARNING)
    return run_demo(**job)


def corpus_files(cache: Path) -> dict[str, str]:
    """SHA-256 of each data file of the corpus, by path relative to `cache`; the cache's
    top-level index tables (``*.pqt``) are left out, as ONE rewrites them on loading."""
    return {
        str(path.relative_to(cache)): file_sha256(path)
        for path in sorted(p for p in cache.rglob("*") if p.is_file())
        if not (path.parent == cache and path.suffix == ".pqt")
    }


#: Settings of ``results.json`` a reused run must share with the job it stands for.
REUSE_SETTINGS = ("hidden_size", "num_layers", "pretrain_steps", "finetune_steps", "seed")


def reusable_run(job: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run of `job` under its output folder, or None when there is none.

    A run is reused only if its settings (:data:`REUSE_SETTINGS`, the ONE cache) and its
    held-out and pretraining sessions are the job's; a run that differs is an error naming the
    field, so that a table never mixes budgets.
    """
    results_path = Path(job["output_dir"]) / "report" / "results.json"
    if not results_path.is_file():
        return None
    run = json.loads(results_path.read_text())
    wanted = {key: job[key] for key in REUSE_SETTINGS}
    wanted["cache_dir"] = str(job["cache_dir"])
    settings = run.get("settings", {})
    for key, value in wanted.items():
        if settings.get(key) != value:
            raise SystemExit(
                f"--reuse: {results_path} has {key}={settings.get(key)!r}, this benchmark "
                f"{value!r}; use another --output or drop --reuse"
            )
    heldout = list(job["heldout_eids"])
    pretrain = [eid for eid in job["eids"] if eid not in heldout]
    sessions = run.get("sessions", {})
    if sessions.get("heldout") != heldout or sessions.get("pretrain") != pretrain:
        raise SystemExit(
            f"--reuse: {results_path} was trained on other sessions (held out "
            f"{sessions.get('heldout')}, expected {heldout})"
        )
    return run


def build_corpus(args: argparse.Namespace, cache: Path) -> list[str]:
    """Write the synthetic ONE cache and return its session ids.

    With ``--reuse`` and an existing cache (the one the reused runs were trained on), the
    corpus is built beside it and must come out byte-identical; the existing cache is kept
    either way, and a difference is an error.
    """
    corpus = dict(
        n_trials=args.trials,
        n_neurons_per_probe=args.neurons,
        first_block_trials=min(90, args.trials // 3),
        preset=args.preset,
    )
    if not (args.reuse and cache.is_dir()):
        return make_synthetic_cache(cache, args.sessions, args.corpus_seed, **corpus)
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
        rebuilt = Path(scratch) / cache.name
        eids = make_synthetic_cache(rebuilt, args.sessions, args.corpus_seed, **corpus)
        built, existing = corpus_files(rebuilt), corpus_files(cache)
        differing = sorted(
            name for name in built.keys() | existing.keys() if built.get(name) != existing.get(name)
        )
        if differing:
            raise SystemExit(
                f"--reuse: the corpus under {cache} differs from the one these options build "
                "(preset, sessions, trials, neurons, corpus seed, generator version) in "
                f"{len(differing)} file(s), first {differing[0]}: its runs cannot be reused"
            )
    return eids


def run_jobs(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each job's results (reused ones read, the others run, ``--jobs`` at a time), in order."""
    runs: list[dict[str, Any] | None] = [reusable_run(job) if args.reuse else None for job in jobs]
    todo = [job for job, run in zip(jobs, runs, strict=True) if run is None]
    if args.reuse:
        print(f"reusing {len(jobs) - len(todo)} run(s), running {len(todo)}", flush=True)
    if args.jobs == 1:
        fresh = [run_demo(**job) for job in todo]
    else:  # independent runs in parallel processes; results in the jobs' order
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            fresh = list(pool.map(run_demo_job, todo))
    fresh_runs = iter(fresh)
    return [run if run is not None else next(fresh_runs) for run in runs]


def main() -> None:
    """Build the corpus, run the rotation x seeds, print the table and the wall time."""
    args = parse_arguments()
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    work = args.output or Path(tempfile.mkdtemp(prefix="neds_bench_quality_"))
    cache = work / "one_cache"
    eids = build_corpus(args, cache)
    jobs = [
        dict(
            output_dir=work / f"heldout{rotation}_seed{seed}",
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            pretrain_steps=args.pretrain_steps,
            finetune_steps=args.finetune_steps,
            seed=seed,
            num_threads=args.num_threads,
            cache_dir=cache,
            eids=eids,
            heldout_eids=[eids[len(eids) - 1 - rotation]],
            overwrite=True,
            progress=False,
        )
        for rotation in range(args.rotations)
        for seed in range(args.seeds)
    ]
    runs = run_jobs(args, jobs)
    print(
        f"{args.preset} preset, {args.sessions} sessions x {args.trials} trials x "
        f"{args.neurons} units; {args.rotations} held-out rotation(s) x {args.seeds} seed(s); "
        f"hidden {args.hidden_size}, {args.layers} layer(s), {args.pretrain_steps} pretraining "
        f"/ {args.finetune_steps} fine-tuning steps; test trials per run "
        f"{[run['results']['average']['split_sizes']['test'] for run in runs]}"
    )
    print()
    print(summary_table(runs))
    print()
    print("Region probe (linear, 5-fold CV):")
    print("\n".join(region_probe_summary(runs)))
    print()
    print(f"wall time {time.perf_counter() - start:.0f} s; runs under {work}")


if __name__ == "__main__":
    main()
