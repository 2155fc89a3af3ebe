"""A race made to happen on purpose: a swap done at the moment pybuild makes a system call.

Python's audit hooks (PEP 578) run just before the call they announce (``open``,
``os.listdir``, ``os.rename``...): a hook that swaps a directory for a symlink there puts
the swap exactly between pybuild's check and its write, every time, without replacing any
of pybuild's code. A hook cannot be removed, so this module installs one per process, and
it does nothing outside :func:`swap_at`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_ARMED: list[Callable[[str, tuple[Any, ...]], None]] = []


def _dispatch(event: str, args: tuple[Any, ...]) -> None:
    for hook in list(_ARMED):
        hook(event, args)


sys.addaudithook(_dispatch)


def named(arg: Any) -> str:
    """The path an audit event's argument names: a path, or a descriptor (its /proc link)."""
    if isinstance(arg, int):
        try:
            return os.readlink(f"/proc/self/fd/{arg}")
        except OSError:
            return ""
    try:
        return os.fsdecode(arg)
    except TypeError:
        return ""


@contextlib.contextmanager
def swap_at(events: tuple[str, ...], when: Callable[[str], bool], swap: Callable[[], None]) -> Iterator[list[str]]:
    """Run ``swap`` once, at the first of ``events`` whose first argument names a path ``when``
    accepts; the list yielded holds that path once it happened."""
    fired: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if fired or event not in events or not args:
            return
        path = named(args[0])
        if when(path):
            fired.append(path)
            swap()

    _ARMED.append(hook)
    try:
        yield fired
    finally:
        _ARMED.remove(hook)


def swap_for_link(directory: Path, target: Path) -> Path:
    """What someone who can write into ``directory``'s parent does: rename it away and leave a
    symlink to ``target`` in its place. Returns where the directory went."""
    held = directory.with_name(directory.name + "-held")
    directory.rename(held)
    directory.symlink_to(target)
    return held
