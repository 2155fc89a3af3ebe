"""Runs the stages of a build as a DAG: every stage whose dependencies are done starts at once.

At most ``jobs`` stages run at the same time. The first failure (or Ctrl-C)
cancels the stages not yet started, calls ``on_cancel`` to stop the running
ones (a RUN step's container would otherwise run to its end), and is
re-raised once they have stopped, so no step keeps writing after the build
has failed. Ctrl-C, SIGTERM and SIGHUP are noted by a handler and acted on by the loop
(KeyboardInterrupt), never raised inside the pool's locks, so a second one
cannot break the stopping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from builder.errors import BuildError
from builder.interrupts import interrupts_noted, raise_noted

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")
CANCEL_POLL_SECONDS = 0.3
INTERRUPT_POLL_SECONDS = 0.1  # how soon a noted Ctrl-C is acted on


class Cancelled(BuildError):
    """Raised inside a stage that noticed the build was cancelled."""


def run_dag(
    deps: Mapping[K, Sequence[K]],
    work: Callable[[K, Mapping[K, R], threading.Event], R],
    *,
    jobs: int,
    on_cancel: Callable[[], None] | None = None,
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

    def stop_running() -> None:
        """Cancel, then stop the running stages again and again until all have returned
        (a container may start just after a first stop)."""
        cancel.set()
        pending = {f for f in running if not f.done()}
        while pending:
            if on_cancel is not None:
                on_cancel()
            _, pending = wait(pending, timeout=CANCEL_POLL_SECONDS)

    # Ctrl-C or SIGTERM: noted by the handler, acted on here
    with interrupts_noted() as interrupted, \
            ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="stage") as pool:
        try:
            while remaining or running:
                raise_noted(interrupted)
                if first_error is None:
                    # Started only when a job is free, so that a failure decides before the next
                    # one starts (a pool's queue would start it as soon as the failed one ends).
                    ready = [n for n, d in remaining.items() if not d][:max(1, jobs) - len(running)]
                    for node in ready:
                        del remaining[node]
                        running[pool.submit(_unless_cancelled, work, node, dict(results), cancel)] = node
                if not running:
                    if remaining and first_error is None:
                        raise BuildError("internal error: the stage graph has a cycle")
                    break
                done, _ = wait(running, timeout=INTERRUPT_POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    node = running.pop(future)
                    try:
                        results[node] = future.result()
                    except BaseException as err:  # first failure wins; the rest are consequences
                        if first_error is None:
                            first_error = err
                            stop_running()
                        continue
                    for d in remaining.values():
                        d.discard(node)
        except BaseException:
            stop_running()
            raise
    if first_error is not None:
        raise first_error
    raise_noted(interrupted)  # after the last stage ended: still the user's stop
    return results


def _unless_cancelled(work: Callable[[K, Mapping[K, R], threading.Event], R], node: K,
                      results: Mapping[K, R], cancel: threading.Event) -> R:
    """``work``, unless the build was cancelled while the stage waited for a free job."""
    if cancel.is_set():
        raise Cancelled("build cancelled")
    return work(node, results, cancel)
