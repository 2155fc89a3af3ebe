"""Clean-up that must run to its end (builder.interrupts.run_to_end) runs once, whenever the stop
signal lands: before the deferral's handlers are in place, inside it, or in the work itself."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from builder import interrupts


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in interrupts.STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_inside_the_deferral_is_raised_after_the_work(restored_handlers: None) -> None:
    done: list[str] = []

    def work() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        done.append("work")

    with pytest.raises(KeyboardInterrupt):
        interrupts.run_to_end(work)
    assert done == ["work"]


def test_a_signal_before_the_handlers_are_in_place_still_runs_the_work(
        restored_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def stopped_on_entry() -> Iterator[None]:
        raise KeyboardInterrupt
        yield  # pragma: no cover

    monkeypatch.setattr(interrupts, "interrupts_deferred", stopped_on_entry)
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        interrupts.run_to_end(lambda: done.append("work"))
    assert done == ["work"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # nothing cuts the work short now


def test_work_that_raises_the_interrupt_itself_runs_once(restored_handlers: None) -> None:
    done: list[str] = []

    def work() -> None:
        done.append("work")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupts.run_to_end(work)
    assert done == ["work"]
