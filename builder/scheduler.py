"""Runs the stages of a build as a DAG: every stage whose dependencies are done starts at once.

At most ``jobs`` stages run at the same time. The first failure cancels the
stages not yet started and is re-raised once the running ones have stopped,
so no step keeps writing after the build has failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from builder.errors import BuildError

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Cancelled(BuildError):
    """Raised inside a stage that noticed the build was cancelled."""


def run_dag(
    deps: Mapping[K, Sequence[K]],
    work: Callable[[K, Mapping[K, R], threading.Event], R],
    *,
    jobs: int,
) -> dict[K, R]:
    """Run ``work(node, finished_results, cancel)`` for every node after its ``deps``.

    ``deps`` must be acyclic and closed (every dependency is itself a key);
    the planner guarantees both.
    """
    remaining = {node: set(d) for node, d in deps.items()}
    results: dict[K, R] = {}
    cancel = threading.Event()
    first_error: BaseException | None = None
    running: dict[Future[R], K] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage") as pool:
        try:
            while remaining or running:
                if first_error is None:
                    ready = [n for n, d in remaining.items() if not d]
                    for node in ready:
                        del remaining[node]
                        running[pool.submit(work, node, dict(results), cancel)] = node
                if not running:
                    if remaining and first_error is None:
                        raise BuildError("internal error: the stage graph has a cycle")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    try:
                        results[node] = future.result()
                    except BaseException as err:  # first failure wins; the rest are consequences
                        if first_error is None:
                            first_error = err
                            cancel.set()
                        continue
                    for d in remaining.values():
                        d.discard(node)
        except BaseException:
            cancel.set()
            raise
    if first_error is not None:
        raise first_error
    return results
