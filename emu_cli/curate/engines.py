"""Where curation tasks run: worker processes on this machine, or a Ray cluster.

An engine maps a module-level function over tasks and yields ``(task number, result)`` as
tasks finish, in any order; the pipeline writes each result as it arrives, so a killed run
loses at most the tasks in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

ENGINES = ("local", "ray")


def _quiet_threads() -> None:
    # One process per core: each must not start a thread per core of its own.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"


def _run_local(
    function: Callable[[Any], Any], tasks: dict[int, Any], workers: int
) -> Iterator[tuple[int, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        for number, task in tasks.items():
            yield number, function(task)
        return
    # spawn, not fork: the driver may hold threads (torch, tqdm) that a fork would copy broken.
    with ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=get_context("spawn"), initializer=_quiet_threads
    ) as pool:
        futures = {pool.submit(function, task): number for number, task in tasks.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _run_ray(function: Callable[[Any], Any], tasks: dict[int, Any]) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError as error:
        raise ValueError(
            "--engine ray needs Ray: pip install 'emu-cli[ray]' (or pip install ray)"
        ) from error
    if not ray.is_initialized():
        # RAY_ADDRESS joins an existing cluster; without it Ray starts a local instance.
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or None,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}},
        )
    remote = ray.remote(num_cpus=1)(function)
    pending = {remote.remote(task): number for number, task in tasks.items()}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for reference in done:
            yield pending.pop(reference), ray.get(reference)


def run_tasks(
    function: Callable[[Any], Any], tasks: dict[int, Any], *, engine: str, workers: int
) -> Iterator[tuple[int, Any]]:
    """Run ``function`` on each task; yield (task number, result) as each finishes."""
    if engine == "local":
        return _run_local(function, tasks, workers)
    if engine == "ray":
        return _run_ray(function, tasks)
    raise ValueError(f"unknown engine '{engine}' (choose from {', '.join(ENGINES)})")
