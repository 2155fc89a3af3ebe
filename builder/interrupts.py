"""Stopping a command on a signal the way Ctrl-C stops it: clean-up runs, one line, 128+N.

Ctrl-C (SIGINT), a process manager's or CI runner's SIGTERM (``timeout``, systemd, a
cancelled job) and a closed terminal's SIGHUP all end a command the same way: an
:class:`Interrupted` (a KeyboardInterrupt, so every ``finally`` and ``except
BaseException`` clean-up runs) raised in the main thread, and exit status 128+N as a
shell reports a process killed by signal N (130, 143, 129). A signal the parent set to
be ignored (``nohup`` ignores SIGHUP, a background job of a script SIGINT) stays ignored.

Where raising at any point would do harm, the signal is noted instead: waits on a thread
pool's locks (:func:`interrupts_noted`, polled by the waiter) and clean-up that must run to
its end (:func:`interrupts_deferred`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REDELIVER_SECONDS = 0.001  # a stop swallowed by a finalizer is sent again this much later


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by signal ``signum``."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signum)
        self.signum = signum


def signal_of(err: BaseException) -> int:
    """The signal a KeyboardInterrupt stands for (Python's own Ctrl-C: SIGINT)."""
    return getattr(err, "signum", signal.SIGINT)


def exit_status(err: BaseException) -> int:
    """The exit status of a command stopped by ``err``: 128+N, as a shell shows it."""
    return 128 + signal_of(err)


def message(err: BaseException) -> str:
    """The one line a stopped command prints."""
    signum = signal_of(err)
    if signum == signal.SIGINT:
        return "ERROR: interrupted"
    return f"ERROR: interrupted by {signal.Signals(signum).name}"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """In the main thread, turn SIGTERM and SIGHUP into :class:`Interrupted`, so that clean-up
    runs as for Ctrl-C; a signal that already has a handler (an outer block's) or is ignored
    keeps it."""
    if not _in_main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise)
    if not previous:
        yield
        return
    previous_hook = sys.unraisablehook

    def _swallowed(unraisable: Any) -> None:
        # Raised where Python only prints "Exception ignored in" and goes on (a weakref
        # callback of an import, a __del__: found by tests/store/chaos.py), the stop would be
        # lost: the signal is sent again a moment later, from another thread (sent from here,
        # it would be raised in this hook, and swallowed again), to stop the command there.
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            again = threading.Timer(REDELIVER_SECONDS, os.kill, (os.getpid(), signal_of(unraisable.exc_value)))
            again.daemon = True
            again.start()
            return
        previous_hook(unraisable)

    sys.unraisablehook = _swallowed
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is _raise:  # not one set meanwhile (ignore_stop_signals)
                signal.signal(sig, handler)
        if sys.unraisablehook is _swallowed:
            sys.unraisablehook = previous_hook


def ignore_stop_signals() -> None:
    """The command's work is done and the process exits: a stop signal now would only turn
    its exit status into a death by signal (or a traceback from the interpreter's shutdown)."""
    if _in_main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def interrupts_noted() -> Iterator[list[int]]:
    """In the main thread: Ctrl-C, SIGTERM and SIGHUP are appended to the yielded list instead
    of raising wherever the thread happens to be. Raised inside the locks of a thread pool's
    wait, a KeyboardInterrupt (and a second one on its heels) breaks them ("release unlocked
    lock") and cuts the stopping of the running work short; the caller polls the list and
    stops in order instead (:func:`raise_noted`). The handler takes no lock: a second signal
    may run it inside the first. Ignored signals stay ignored."""
    noted: list[int] = []
    if not _in_main_thread():
        yield noted
        return

    def _note(signum: int, frame: object) -> None:
        noted.append(signum)

    previous = {sig: signal.signal(sig, _note) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield noted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_noted(noted: list[int]) -> None:
    """Raise :class:`Interrupted` for the first signal noted, if any."""
    if noted:
        raise Interrupted(noted[0])


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Clean-up that must run to its end (removing what a command set aside, a temp file):
    a stop signal that comes meanwhile is raised when the block is done."""
    with interrupts_noted() as noted:
        yield
    raise_noted(noted)


def run_to_end(work: Callable[[], object]) -> None:
    """``work`` under :func:`interrupts_deferred`, also when a stop signal lands as the deferral
    begins, before its handlers are in place (the ``with`` then raises and its body never runs):
    the command is stopping, so the work runs with the stop signals ignored and the signal is
    raised after it."""
    started = False
    try:
        with interrupts_deferred():
            started = True
            work()
    except KeyboardInterrupt:
        if started:  # raised after the work (noted meanwhile), or by the work itself
            raise
        ignore_stop_signals()
        work()
        raise
