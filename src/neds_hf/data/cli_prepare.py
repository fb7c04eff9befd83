"""The ``neds-hf prepare-data`` command: build the NEDS dataset from ONE (online or a local cache).

The build is atomic and locked (see :mod:`neds_hf.data.build`): ``--overwrite`` replaces a
dataset only once the new one is complete, and a non-empty folder that is not a dataset is
never replaced without ``--force-overwrite-non-dataset``. ``--windows continuous`` adds
continuous windows of ``--window-length`` seconds every ``--window-stride`` seconds over each
recording (:mod:`neds_hf.data.windows`) to the trial rows; the default, ``trials``, builds the
trial rows only.

``add_prepare_data_arguments`` fills an ``argparse`` (sub)parser and ``run_prepare_data``
executes the parsed arguments; :mod:`neds_hf.cli` wires them into the ``neds-hf`` entry point.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..locking import OutputLockedError
from .build import build_dataset
from .engines import ENGINE_NAMES, make_engine
from .errors import CorruptedFileError, SessionNotFoundError
from .preprocess import PreprocessingConfig
from .schema import BUILD_REPORT_FILE
from .windows import WINDOW_MODES, WindowConfig

__all__ = [
    "BRAIN_WIDE_MAP_TAG",
    "EIDS_DIR",
    "PACKAGED_EID_LISTS",
    "SESSION_LISTS",
    "add_prepare_data_arguments",
    "eids_for_tag",
    "main",
    "packaged_eids",
    "packaged_eids_file",
    "read_eids_file",
    "run_prepare_data",
    "session_list_eids",
]

#: Public IBL session-id lists shipped with the package (``src/neds_hf/data/eids/<name>_eids.txt``).
PACKAGED_EID_LISTS = ("repeated_site", "neds_pretrain", "neds_heldout")
EIDS_DIR = Path(__file__).resolve().parent / "eids"


def packaged_eids_file(name: str) -> Path:
    """Path of a shipped eid list: ``repeated_site`` (83 ids), ``neds_pretrain`` (74) or
    ``neds_heldout`` (10)."""
    if name not in PACKAGED_EID_LISTS:
        raise ValueError(f"unknown eid list {name!r}; shipped lists: {PACKAGED_EID_LISTS}")
    return EIDS_DIR / f"{name}_eids.txt"


def packaged_eids(name: str) -> list[str]:
    """Session ids of a shipped eid list (see :func:`packaged_eids_file`)."""
    return read_eids_file(packaged_eids_file(name))


#: IBL release tag of the first public Brain-Wide Map data release (459 sessions, 699 probes).
#: Later BWM tags (re-sorts, patches) are selected with ``--tag``.
BRAIN_WIDE_MAP_TAG = "2022_Q4_IBL_et_al_BWM"

#: Session lists selectable by name (``prepare-data --session-list NAME``): the shipped lists,
#: the Brain-Wide Map (its release tag, looked up on the IBL server) and the BrainWideBench
#: evaluation recordings (the list shipped in ``ibl-bwb-eval``).
SESSION_LISTS = (*PACKAGED_EID_LISTS, "brain_wide_map", "bwb_eval")


def session_list_eids(name: str, cache_dir: str, online: bool) -> list[str]:
    """Session ids of a named list of :data:`SESSION_LISTS`. ``brain_wide_map`` needs the IBL
    server (``online``); ``bwb_eval`` needs ``ibl-bwb-eval`` installed."""
    if name in PACKAGED_EID_LISTS:
        return packaged_eids(name)
    if name == "brain_wide_map":
        return eids_for_tag(BRAIN_WIDE_MAP_TAG, cache_dir, online)
    if name == "bwb_eval":
        try:
            from ibl_bwb_eval import EVAL_RECORDING_IDS
        except ImportError as error:
            raise ValueError(
                "--session-list bwb_eval reads the list shipped in ibl-bwb-eval: "
                "pip install --no-deps ibl-bwb-eval==0.1.0"
            ) from error
        return read_eids_file(EVAL_RECORDING_IDS)
    raise ValueError(f"unknown session list {name!r}; expected one of {SESSION_LISTS}")


def add_prepare_data_arguments(
    parser: argparse.ArgumentParser, eids_required: bool = True
) -> argparse.ArgumentParser:
    """Add the ``prepare-data`` options to ``parser`` and return it.

    With ``eids_required=False`` none of ``--eids`` / ``--eids-file`` / ``--tag`` is needed
    (the caller supplies a default list).
    """
    parser.add_argument("--cache-dir", required=True, help="ONE cache directory")
    parser.add_argument(
        "--online",
        action="store_true",
        help="use the public IBL server (downloads into --cache-dir); default: offline cache",
    )
    selection = parser.add_mutually_exclusive_group(required=eids_required)
    selection.add_argument("--eids", nargs="+", metavar="ID", help="session ids")
    selection.add_argument("--eids-file", metavar="F", help="text file, one session id per line")
    selection.add_argument("--tag", metavar="TAG", help="IBL release tag (needs --online)")
    selection.add_argument(
        "--session-list",
        choices=SESSION_LISTS,
        help="a named session list: the shipped repeated_site / neds_pretrain / neds_heldout "
        f"lists, brain_wide_map (release tag {BRAIN_WIDE_MAP_TAG}, needs --online) or bwb_eval "
        "(BrainWideBench's evaluation recordings, from ibl-bwb-eval)",
    )
    parser.add_argument("--output", required=True, help="output dataset directory")
    _add_preprocessing_arguments(parser)
    _add_engine_arguments(parser)
    _add_output_arguments(parser)
    return parser


def _add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """The preprocessing options (defaults from :class:`PreprocessingConfig`)."""
    defaults = PreprocessingConfig()
    parser.add_argument(
        "--min-firing-rate",
        type=float,
        default=defaults.min_firing_rate,
        metavar="HZ",
        help=f"keep neurons firing above this rate (default {defaults.min_firing_rate})",
    )
    parser.add_argument(
        "--bin-size",
        type=float,
        default=defaults.bin_size,
        metavar="S",
        help=f"bin width in seconds (default {defaults.bin_size})",
    )
    parser.add_argument(
        "--window",
        type=float,
        nargs=2,
        default=list(defaults.window),
        metavar=("START", "END"),
        help=f"window around the alignment event in seconds (default {defaults.window})",
    )
    parser.add_argument("--revision", default=None, help="ONE dataset revision to load")
    parser.add_argument(
        "--qc-only", action="store_true", help="keep only clusters with qc_label == 1"
    )
    _add_window_arguments(parser)


def _add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """Continuous windows besides the trial rows (defaults from :class:`WindowConfig`)."""
    defaults = WindowConfig()
    parser.add_argument(
        "--windows",
        choices=WINDOW_MODES,
        default="trials",
        help="trials: trial-aligned rows only (default); continuous: also fixed-length windows "
        "over each whole recording (config 'windows'), trial-level values -1 where no trial "
        "overlaps",
    )
    parser.add_argument(
        "--window-length",
        type=float,
        default=defaults.length,
        metavar="S",
        help=f"continuous window length in seconds (default {defaults.length:g})",
    )
    parser.add_argument(
        "--window-stride",
        type=float,
        default=defaults.stride,
        metavar="S",
        help=f"seconds between continuous window starts (default {defaults.stride:g})",
    )


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how sessions run (local pool or Ray)."""
    parser.add_argument(
        "--num-proc",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (local engine) or CPUs of a local Ray instance (default 1)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default="local",
        help="where sessions run: local (process pool) or ray (one task per session; joins "
        "the cluster at --ray-address / RAY_ADDRESS, else starts a local Ray; needs "
        "pip install 'neds_hf[scale]')",
    )
    parser.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (default: the RAY_ADDRESS environment variable)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=3,
        metavar="N",
        help="times a Ray session task is retried when its worker dies (default 3)",
    )
    parser.add_argument(
        "--rebuild-sessions",
        action="store_true",
        help="with --overwrite, rebuild every session instead of reusing the ones of the "
        "existing dataset whose files still match its build report",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Replacing an existing output, and the progress bar."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a neds_hf dataset already in --output (the old one stays until the new "
        "one is complete)",
    )
    parser.add_argument(
        "--force-overwrite-non-dataset",
        action="store_true",
        help="replace --output even when it is a non-empty folder that is not a neds_hf "
        "dataset (its whole content is deleted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def read_eids_file(path: str | Path) -> list[str]:
    """Session ids from a text file: one per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"eids file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"eids file {path} is not a UTF-8 text file ({error.reason} at byte {error.start}); "
            "expected one session id per line"
        ) from error
    eids = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            eids.append(line)
    if not eids:
        raise ValueError(f"eids file {path} lists no session id")
    return eids


def eids_for_tag(tag: str, cache_dir: str, online: bool) -> list[str]:
    """Session ids of an IBL release tag; needs the public server (Alyx), i.e. ``online``."""
    if not online:
        raise ValueError(
            f"--tag {tag} needs the IBL server (Alyx) to look the tag up: add --online, or list "
            "the sessions with --eids / --eids-file for an offline cache"
        )
    from .ibl import make_one

    one = make_one(cache_dir, online=True)
    sessions = one.alyx.rest("sessions", "list", tag=tag)
    eids = [str(session["id"]) for session in sessions]
    if not eids:
        raise ValueError(f"no session carries the tag {tag!r}")
    return eids


def _window_config(args: argparse.Namespace) -> WindowConfig | None:
    """The continuous windows asked for; ``None`` for trial rows only. Window options given
    without ``--windows continuous`` are an error rather than silently ignored."""
    if args.windows == "continuous":
        return WindowConfig(args.window_length, args.window_stride)
    defaults = WindowConfig()
    if (args.window_length, args.window_stride) != (defaults.length, defaults.stride):
        raise ValueError("--window-length / --window-stride need --windows continuous")
    return None


def run_prepare_data(args: argparse.Namespace) -> int:
    """Run ``prepare-data``; returns the process exit code (0 = at least one session built)."""
    try:
        if args.eids:
            eids = list(args.eids)
        elif args.eids_file:
            eids = read_eids_file(args.eids_file)
        elif args.tag:
            eids = eids_for_tag(args.tag, args.cache_dir, args.online)
        elif args.session_list:
            eids = session_list_eids(args.session_list, args.cache_dir, args.online)
        else:
            raise ValueError("give the sessions with --eids, --eids-file, --tag or --session-list")
        config = PreprocessingConfig(
            window=tuple(args.window),
            bin_size=args.bin_size,
            min_firing_rate=args.min_firing_rate,
            qc_only=args.qc_only,
        )
        windows = _window_config(args)
        engine = make_engine(
            args.engine,
            num_proc=args.num_proc,
            ray_address=args.ray_address,
            max_retries=args.max_retries,
        )
        report = build_dataset(
            args.cache_dir,
            eids,
            args.output,
            config=config,
            num_proc=args.num_proc,
            online=args.online,
            revision=args.revision,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            force_overwrite_non_dataset=args.force_overwrite_non_dataset,
            engine=engine,
            rebuild_sessions=args.rebuild_sessions,
            windows=windows,
        )
    except (
        SessionNotFoundError,
        CorruptedFileError,
        FileNotFoundError,
        FileExistsError,
        OutputLockedError,
        ImportError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    skipped = report.skipped
    reused = sum(1 for entry in report.sessions if entry.get("reused"))
    print(
        f"built {len(report.built_session_ids)} session(s) into {args.output}"
        + (f" ({reused} reused from the previous build)" if reused else "")
        + (f"; skipped {len(skipped)}: {json.dumps(skipped)}" if skipped else "")
        + f"; see {Path(args.output) / BUILD_REPORT_FILE}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m neds_hf.data.cli_prepare``)."""
    parser = add_prepare_data_arguments(
        argparse.ArgumentParser(
            prog="neds-hf prepare-data", description=__doc__, allow_abbrev=False
        )
    )
    return run_prepare_data(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
