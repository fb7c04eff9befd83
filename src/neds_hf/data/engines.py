"""Engines that run the per-session tasks of a dataset build: a local process pool or Ray.

A build is a list of independent sessions; :func:`neds_hf.data.build.build_dataset` hands an
engine one picklable task (a callable taking a session id and returning that session's
build-report entry) and the ids, and gets back ``{session_id: entry}``. Both engines run the
same task, so they write the same files; only where the task runs differs:

* :class:`LocalEngine`: in this process (``num_proc <= 1``) or a ``spawn`` process pool;
* :class:`RayEngine`: one Ray task per session, on the cluster named by ``address`` or
  ``RAY_ADDRESS`` (``ray.init(address=...)``), else on a local Ray instance started with
  ``num_cpus`` CPUs. A worker that dies mid-session is retried up to ``max_retries`` times
  (the task writes its files atomically, so a retry never finds or leaves half a file).
  Needs the optional ``scale`` extra (``pip install neds_hf[scale]``).

The first task that raises stops the build: the engine cancels the tasks not yet finished
and re-raises the task's own exception (not a wrapper), so both engines fail alike.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = [
    "ENGINE_NAMES",
    "LocalEngine",
    "RayEngine",
    "SessionEngine",
    "SessionTask",
    "make_engine",
]

#: ``--engine`` choices of ``neds-hf prepare-data``.
ENGINE_NAMES = ("local", "ray")

#: A per-session task: session id -> build-report entry (picklable for worker processes).
SessionTask = Callable[[str], dict[str, Any]]

#: Errors a Ray task retries (a ONE download that timed out); corrupted or missing data is
#: deterministic and is never retried.
TRANSIENT_ERRORS = (ConnectionError, TimeoutError)


class SessionEngine(Protocol):
    """Runs one task per session id and returns ``{session_id: the task's result}``."""

    #: Whether tasks run in the calling process (they may then share its ONE instance).
    runs_in_process: bool

    def run(
        self, task: SessionTask, session_ids: Sequence[str], progress: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Run ``task`` on every id; re-raise the first task error after cancelling the rest."""
        ...


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sessions", unit="session", disable=not enabled)


class LocalEngine:
    """Sessions in this process (``num_proc <= 1``) or in ``num_proc`` spawned processes.

    A process pool rather than ``datasets.Dataset.map(num_proc=...)``: each task is a whole
    session whose results (files on disk, a neurons DataFrame, a nested sessions row) are not
    dataset rows, and ``map`` caches its output keyed by the function (a rebuild could reuse an
    old load).
    """

    def __init__(self, num_proc: int = 1) -> None:
        if num_proc < 1:
            raise ValueError(f"num_proc must be at least 1, got {num_proc}")
        self.num_proc = num_proc
        self.runs_in_process = num_proc <= 1

    def run(
        self, task: SessionTask, session_ids: Sequence[str], progress: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Run ``task`` on every id (see the class docstring)."""
        results: dict[str, dict[str, Any]] = {}
        bar = _progress_bar(len(session_ids), progress)
        try:
            if self.runs_in_process:
                for session_id in session_ids:
                    results[session_id] = task(session_id)
                    bar.update()
                return results
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(self.num_proc, mp_context=context) as pool:
                futures = {pool.submit(task, eid): eid for eid in session_ids}
                try:
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future]] = future.result()
                        bar.update()
                except BaseException:
                    for pending in futures:
                        pending.cancel()
                    raise
            return results
        finally:
            bar.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(
            "--engine ray needs Ray: install the scale extra (pip install 'neds_hf[scale]')"
        ) from error
    return ray


def _run_session_task(task: SessionTask, session_id: str) -> dict[str, Any]:
    """The Ray task body: one session (module-level so Ray pickles it by reference)."""
    return task(session_id)


class RayEngine:
    """One Ray task per session, retried when its worker dies (see the module docstring).

    ``address`` (default: the ``RAY_ADDRESS`` environment variable) joins an existing cluster;
    without one a local Ray instance with ``num_cpus`` CPUs is started and shut down after
    the build. An already initialised Ray (e.g. in a notebook) is used as it is.
    """

    runs_in_process = False

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if num_cpus is not None and num_cpus < 1:
            raise ValueError(f"num_cpus must be at least 1, got {num_cpus}")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries

    def _init(self, ray: Any) -> bool:
        """Connect to or start Ray; returns whether this engine started it (and shuts it down)."""
        if ray.is_initialized():
            return False
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # "local" always starts a new instance instead of attaching to one found on the host
            ray.init(
                address="local",
                num_cpus=self.num_cpus or 1,
                include_dashboard=False,
                log_to_driver=False,
            )
        return True

    def run(
        self, task: SessionTask, session_ids: Sequence[str], progress: bool = True
    ) -> dict[str, dict[str, Any]]:
        """Run ``task`` on every id as Ray tasks (see the class docstring)."""
        ray = _import_ray()
        started = self._init(ray)
        remote = ray.remote(
            num_cpus=1, max_retries=self.max_retries, retry_exceptions=list(TRANSIENT_ERRORS)
        )(_run_session_task)
        task_ref = ray.put(task)
        refs = {remote.remote(task_ref, eid): eid for eid in session_ids}
        results: dict[str, dict[str, Any]] = {}
        bar = _progress_bar(len(session_ids), progress)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    results[refs[ref]] = self._result(ray, ref, refs[ref])
                    bar.update()
            return results
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            bar.close()
            if started:
                ray.shutdown()

    def _result(self, ray: Any, ref: Any, session_id: str) -> dict[str, Any]:
        """A finished task's entry; its own exception (not Ray's wrapper) when it failed."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except ray.exceptions.WorkerCrashedError as error:
            raise RuntimeError(
                f"session {session_id}: its Ray worker died {self.max_retries + 1} time(s) "
                f"(max_retries={self.max_retries}); no file of it was kept: {error}"
            ) from error


def make_engine(
    name: str,
    num_proc: int = 1,
    ray_address: str | None = None,
    max_retries: int = 3,
) -> SessionEngine:
    """The engine ``--engine name`` selects; ``num_proc`` is the local pool size, or the CPUs
    of a local Ray instance (a cluster brings its own)."""
    if name == "local":
        return LocalEngine(num_proc)
    if name == "ray":
        return RayEngine(address=ray_address, num_cpus=num_proc, max_retries=max_retries)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINE_NAMES}")
