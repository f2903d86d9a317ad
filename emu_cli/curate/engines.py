"""Where curation tasks run: worker processes on this machine, or a Ray cluster.

An engine runs a module-level function over tasks and yields ``(task number, result)`` as
tasks finish, in any order; the pipeline writes each result as it arrives, so a killed run
loses at most the tasks in flight. One engine serves all phases of a run, so workers start
(and load their models) once.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from multiprocessing import get_context
from typing import Any

ENGINES = ("local", "ray")


def _quiet_threads() -> None:
    # One process per core: each must not start a thread per core of its own.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    # A spawned worker imports the driver's main module before this runs; where that module
    # imported torch (a user's script, a benchmark), torch has already sized its pool from the
    # cores and no longer reads the variables, and two such workers on two cores run the score
    # pass slower (docs/benchmarks.md, "`emu filter` at 256 px").
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class LocalEngine:
    """Worker processes on this machine, started once and reused by every phase of a run."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def run(
        self, function: Callable[[Any], Any], tasks: dict[int, Any]
    ) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1:
            for number, task in tasks.items():
                yield number, function(task)
            return
        if self.pool is None:
            # spawn, not fork: the driver may hold threads (torch, tqdm) a fork would copy broken.
            self.pool = ProcessPoolExecutor(
                self.workers, mp_context=get_context("spawn"), initializer=_quiet_threads
            )
        futures = {self.pool.submit(function, task): number for number, task in tasks.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class RayEngine:
    """Ray tasks, one CPU each, on the cluster RAY_ADDRESS names or on a local instance."""

    def __init__(self) -> None:
        try:
            import ray
        except ImportError as error:
            raise ValueError(
                "--engine ray needs Ray: pip install 'emu-cli[ray]' (or pip install ray)"
            ) from error
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            address = os.environ.get("RAY_ADDRESS") or None
            _check_reachable(address)
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
            )

    def run(
        self, function: Callable[[Any], Any], tasks: dict[int, Any]
    ) -> Iterator[tuple[int, Any]]:
        remote = self.ray.remote(num_cpus=1)(function)
        pending = {remote.remote(task): number for number, task in tasks.items()}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for reference in done:
                yield pending.pop(reference), self.ray.get(reference)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


@contextmanager
def open_engine(engine: str, workers: int) -> Iterator[LocalEngine | RayEngine]:
    """The engine a run's phases share; closed (workers stopped) when the run ends."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
    opened = LocalEngine(workers) if engine == "local" else RayEngine()
    try:
        yield opened
    finally:
        opened.close()


def _check_reachable(address: str | None) -> None:
    """Ray retries an address that does not answer for minutes before it gives up; a cluster's
    ``HOST:PORT`` is tried here first, for a few seconds. (``auto``, ``local`` and ``ray://``
    addresses are left to Ray.)"""
    if not address or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not (host and port.isdigit()):
        return
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise ValueError(
            f"no Ray cluster answers at RAY_ADDRESS={address} ({error}): start one there "
            "(`ray start --head`), or unset RAY_ADDRESS to run on a local instance"
        ) from error
