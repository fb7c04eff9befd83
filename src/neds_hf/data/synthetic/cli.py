"""A synthetic corpus on disk and the ``neds-hf make-synthetic`` command."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .alf import write_alf_session
from .one_cache import write_one_cache
from .session import generate_session
from .spec import FAULTS, PRESETS, SyntheticSessionSpec

__all__ = ["add_make_synthetic_arguments", "make_synthetic_cache", "run_make_synthetic"]


def make_synthetic_cache(
    output_dir: str | Path,
    n_sessions: int = 6,
    seed: int = 0,
    *,
    faults: Mapping[int, str] | None = None,
    **spec_overrides: Any,
) -> list[str]:
    """Write ``n_sessions`` synthetic sessions, their ground truth and the ONE cache tables.

    Session ``i`` is ``SyntheticSessionSpec(seed=seed, index=i, **spec_overrides)``, with the
    fault ``faults[i]`` when given. Returns the session ids in index order. Other sessions
    already under ``output_dir`` stay and are indexed too.
    """
    if n_sessions < 1:
        raise ValueError(f"n_sessions must be >= 1, got {n_sessions}")
    faults = dict(faults or {})
    out_of_range = [i for i in faults if not 0 <= i < n_sessions]
    if out_of_range:
        raise ValueError(f"fault indices {out_of_range} outside 0..{n_sessions - 1}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    eids = []
    for index in range(n_sessions):
        overrides = dict(spec_overrides)
        if index in faults:
            overrides["fault"] = faults[index]
        spec = SyntheticSessionSpec(seed=seed, index=index, **overrides)
        session = generate_session(spec)
        write_alf_session(session, output_dir)
        eids.append(session.eid)
    write_one_cache(output_dir)
    return eids


def _parse_fault(text: str) -> tuple[int, str]:
    index, separator, name = text.partition("=")
    if not separator or not index.strip().isdigit() or name not in FAULTS:
        raise argparse.ArgumentTypeError(
            f"--fault expects INDEX=NAME with NAME one of {sorted(FAULTS)}, got {text!r}"
        )
    return int(index), name


def add_make_synthetic_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``neds-hf make-synthetic`` options to ``parser``."""
    parser.add_argument("--output", required=True, type=Path, help="cache directory to write")
    parser.add_argument("--sessions", type=int, default=6, help="number of sessions (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--trials", type=int, default=None, help="trials per session")
    parser.add_argument("--neurons-per-probe", type=int, default=None, help="units per probe")
    parser.add_argument("--probes", type=int, default=None, help="probes per session")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="easy",
        help="realism preset: 'easy' (strong, easily decoded signals) or 'realistic' "
        "(weak, IBL-like choice and block signals, unexplained shared latents); default easy",
    )
    parser.add_argument(
        "--action-tuning",
        type=float,
        default=0.0,
        help="tune half of the neurons to the latent pose action (log-rate weights of this "
        "standard deviation, e.g. 1.0); default 0: no action tuning, files as before",
    )
    parser.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        metavar="INDEX=NAME",
        help=f"plant a fault in session INDEX; NAME in {sorted(FAULTS)}",
    )
    return parser


def run_make_synthetic(args: argparse.Namespace) -> int:
    """Run ``neds-hf make-synthetic`` with parsed ``args``; prints the session ids."""
    overrides: dict[str, Any] = {}
    if args.trials is not None:
        overrides["n_trials"] = args.trials
    if args.neurons_per_probe is not None:
        overrides["n_neurons_per_probe"] = args.neurons_per_probe
    if args.probes is not None:
        overrides["n_probes"] = args.probes
    if args.action_tuning:
        overrides["action_tuning"] = args.action_tuning
    eids = make_synthetic_cache(
        args.output,
        args.sessions,
        args.seed,
        faults=dict(args.fault),
        preset=args.preset,
        **overrides,
    )
    eids_file = Path(args.output) / "eids.txt"
    eids_file.write_text("".join(f"{eid}\n" for eid in eids))
    print(f"wrote {len(eids)} synthetic sessions and the ONE cache to {args.output}")
    print(f"session ids (also in {eids_file}, for prepare-data --eids-file):")
    for eid in eids:
        print(eid)
    return 0
