"""Where in which registry each blob is known to live, so a push can mount instead of upload.

Docker's distribution metadata (``v2metadata``) in the store's SQLite: a pull
from registry R repository X, and a push to it, record (blob digest, R, X). A
later push to another repository of R asks the registry to mount the blob from
X (``POST …/blobs/uploads/?mount=D&from=X``): the registry links the blob it
already holds, nothing is uploaded. A record is a hint, never trusted: the
registry answers whether the mount happened, and a push uploads when it did
not. Records only ever name repositories of the same registry host as the
push, so no credentials of one registry go to another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cache.db import Database, now

# As docker (maxMountAttempts): a blob no recorded repository still holds costs at most
# this many extra requests before it is uploaded.
MOUNT_CANDIDATES = 3
# As docker (maxMetadata): a blob pushed to ever new repositories keeps only the newest records.
KEPT_PER_BLOB = 50


class BlobSources:
    """The store's records of blobs seen in registry repositories."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        """Remember that ``registry``/``repository`` holds these blobs (now: most recent first),
        keeping the newest :data:`KEPT_PER_BLOB` records of each."""
        t = now()
        rows = [(str(d), registry, repository, t) for d in dict.fromkeys(digests)]
        if not rows:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO blob_sources(digest, registry, repository, seen) VALUES (?,?,?,?) "
                "ON CONFLICT(digest, registry, repository) DO UPDATE SET seen=excluded.seen", rows)
            conn.executemany(
                "DELETE FROM blob_sources WHERE digest=? AND rowid NOT IN (SELECT rowid FROM "
                "blob_sources WHERE digest=? ORDER BY seen DESC LIMIT ?)",
                [(row[0], row[0], KEPT_PER_BLOB) for row in rows])

    def candidates(self, registry: str, digests: Sequence[str], exclude: str = "",
                   limit: int = MOUNT_CANDIDATES) -> dict[str, list[str]]:
        """Per blob, the repositories of ``registry`` to mount it from (not ``exclude``, the
        push's own), most recently seen first, at most ``limit`` each."""
        out: dict[str, list[str]] = {}
        with self.db.read() as conn:
            for digest in dict.fromkeys(digests):
                rows = conn.execute(
                    "SELECT repository FROM blob_sources WHERE digest=? AND registry=? AND "
                    "repository<>? ORDER BY seen DESC, repository LIMIT ?",
                    (str(digest), registry, exclude, limit)).fetchall()
                if rows:
                    out[str(digest)] = [row[0] for row in rows]
        return out

    def forget(self, registry: str, repository: str, digest: str) -> None:
        """The registry said ``repository`` does not hold the blob (a refused mount): as docker,
        stop offering it as a source."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM blob_sources WHERE digest=? AND registry=? AND repository=?",
                         (str(digest), registry, repository))
