"""Leases: what a running container uses, kept from prune without holding the store's lock.

A build holds the store's gc lock (shared) from start to end, and a prune waits for it;
``pybuild run`` may run for days, so it holds the lock only while its snapshots are made,
and a lease after that: ``leases/<id>.json`` naming the image and its layer chains, locked
(flock) by the run for as long as it lives. Prune keeps what live leases name; a lease whose
lock nobody holds (its run was killed) is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.errors import StoreError


@dataclass(frozen=True)
class Lease:
    """Image manifests and snapshot chain IDs in use."""

    manifests: tuple[str, ...] = ()
    chains: tuple[str, ...] = ()


def _directory(root: Path) -> Path:
    return root / "leases"


@contextlib.contextmanager
def hold(root: Path, lease: Lease) -> Iterator[None]:
    """Keep ``lease`` in force for the block. Take it while holding the gc lock (shared): a
    prune that starts after the lock is free then sees it."""
    directory = _directory(root)
    path = directory / f"{uuid.uuid4().hex}.json"
    temp = directory / f".{path.name}"
    try:
        directory.mkdir(exist_ok=True)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as err:
        raise StoreError(f"cannot write a lease in {directory}: {err.strerror or err}") from None
    try:
        # Locked before it has its name: no prune can take a lease being written for stale.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"manifests": list(lease.manifests), "chains": list(lease.chains)}).encode())
        os.fsync(fd)
        os.rename(temp, path)
    except BaseException as err:  # a full disk, or a SIGTERM meanwhile: no half-written lease left
        os.close(fd)
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise StoreError(f"cannot write a lease in {directory}: {err.strerror or err}") from None
        raise
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def live(root: Path) -> list[Lease]:
    """The leases of running processes; the files of dead ones (and their half-written
    temp files) are removed on the way."""
    directory = _directory(root)
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for path in entries:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its run just ended
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if path.name.startswith("."):
                    continue  # being written: its run still holds the gc lock
                data = json.loads(os.read(fd, 1 << 24) or b"{}")
                found.append(Lease(tuple(data.get("manifests", ())), tuple(data.get("chains", ()))))
            else:
                path.unlink(missing_ok=True)  # nobody holds it: the run was killed
        except (ValueError, OSError):
            continue  # unreadable: kept, and it protects nothing
        finally:
            os.close(fd)
    return found


def in_use(root: Path) -> tuple[set[str], set[str]]:
    """Manifests and chains that live leases name."""
    manifests: set[str] = set()
    chains: set[str] = set()
    for lease in live(root):
        manifests.update(lease.manifests)
        chains.update(lease.chains)
    return manifests, chains
