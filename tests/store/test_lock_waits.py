"""Commands that must wait for each other on one store say so: a prune waits for the builds
and loads using the store, and they wait for a prune; neither hangs without a word."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cache import Store
from tests.helpers.tools import REPO
from tests.store.imagegen import make_image, write_archive


def _start(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "builder", *args], cwd=REPO,
                            env={**os.environ, "PYBUILD_ROOT": str(root)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _first_line(proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
    """The first line ``proc`` writes to stderr, however long its start takes on a loaded machine."""
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stderr.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    assert line, f"nothing on stderr within {timeout} s"
    return line[0]


@pytest.mark.parametrize(("held", "args", "said"), [
    (fcntl.LOCK_EX, ("load", "-i", "ARCHIVE"), "waiting for a prune or repair of the store {root} to finish"),
    (fcntl.LOCK_SH, ("prune", "-f"), "waiting for the builds and other pybuild commands using the store {root} "
                                     "to finish"),
])
def test_a_wait_for_the_store_lock_is_said(tmp_path: Path, held: int, args: tuple[str, ...], said: str) -> None:
    root = tmp_path / "root"
    Store(root).close()
    archive = write_archive(tmp_path / "app.tar", make_image("lock-wait"), ("app:1",))
    fd = os.open(root / "locks" / "gc.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, held)  # as a prune (exclusive) or a running build (shared) holds it
        proc = _start(root, *(str(archive) if a == "ARCHIVE" else a for a in args))
        first = _first_line(proc)  # the command says it waits, and does
        assert proc.poll() is None, proc.communicate()
    finally:
        os.close(fd)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert first.decode() == said.format(root=root) + "\n", first.decode() + err.decode()
    if args[0] == "load":
        assert b"Loaded image: app:1" in out
