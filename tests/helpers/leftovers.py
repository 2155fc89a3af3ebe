"""What a build or a container may leave on the machine, found the way a user would look."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from builder.runtime.overlay import mounts_under
from tests.helpers.tools import require_tool

ISOLATIONS = ("runc", "crun", "chroot")


def marker(seconds: int = 30) -> str:
    """A sleep argument (``seconds`` and a random fraction) that names exactly this test's
    container process among all the machine's, other test runs' included."""
    return f"{seconds}.{random.randrange(10**8):08d}"


def processes_with(text: str) -> list[int]:
    """The pids whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def runtime_containers(work_root: Path, runtimes: Sequence[str] = ("runc", "crun")) -> list[str]:
    """The ids of the OCI runtimes' containers whose bundle is under ``work_root``."""
    ids = []
    for runtime in runtimes:
        out = subprocess.run([require_tool(runtime), "list", "--format", "json"], capture_output=True,
                             check=True).stdout
        for entry in json.loads(out or b"null") or []:
            if str(entry.get("bundle", "")).startswith(str(work_root)):
                ids.append(entry["id"])
    return ids


def assert_nothing_left(work_root: Path, text: str) -> None:
    """No mount, runtime container, container or state dir under ``work_root``, and (within 10 s)
    no process whose command line holds ``text``."""
    assert mounts_under(work_root) == []
    assert runtime_containers(work_root) == []
    for sub in ("containers", "state"):
        assert not (work_root / sub).exists() or list((work_root / sub).iterdir()) == []
    deadline = time.monotonic() + 10
    while processes_with(text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(text) == []
