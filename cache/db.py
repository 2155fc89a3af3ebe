"""The store's metadata in SQLite: schema, migrations, and transactions.

WAL mode lets readers run while one process writes; ``busy_timeout`` makes a
second writer wait instead of failing. Every change happens inside
:meth:`Database.transaction` (``BEGIN IMMEDIATE``), so a process killed at any
point leaves either the old or the new state. Later issues add tables by
appending to :data:`MIGRATIONS`; a store written by newer code is refused.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder.errors import StoreError

BUSY_TIMEOUT_MS = 60_000
# SQLite reports a file system too full to grow its shared-memory file as an I/O error;
# with less than this left, such an error is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20

# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE blobs (
        digest     TEXT PRIMARY KEY,
        size       INTEGER NOT NULL,
        media_type TEXT NOT NULL DEFAULT '',
        last_used  REAL NOT NULL
    );
    CREATE TABLE manifests (
        digest        TEXT PRIMARY KEY,
        media_type    TEXT NOT NULL,
        config_digest TEXT NOT NULL,
        size          INTEGER NOT NULL,
        image_size    INTEGER NOT NULL DEFAULT 0,
        created       TEXT,
        added         REAL NOT NULL,
        last_used     REAL NOT NULL
    );
    CREATE INDEX manifests_config ON manifests(config_digest);
    CREATE TABLE manifest_blobs (
        manifest_digest TEXT NOT NULL REFERENCES manifests(digest) ON DELETE CASCADE,
        blob_digest     TEXT NOT NULL,
        PRIMARY KEY (manifest_digest, blob_digest)
    );
    CREATE INDEX manifest_blobs_blob ON manifest_blobs(blob_digest);
    CREATE TABLE images (
        name            TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        created         REAL NOT NULL
    );
    CREATE INDEX images_manifest ON images(manifest_digest);
    CREATE TABLE layers (
        diff_id     TEXT NOT NULL,
        compression TEXT NOT NULL,
        blob_digest TEXT NOT NULL,
        PRIMARY KEY (diff_id, compression)
    );
    CREATE INDEX layers_blob ON layers(blob_digest);
    CREATE TABLE diffs (
        diff_id TEXT PRIMARY KEY,
        size    INTEGER NOT NULL
    );
    CREATE TABLE snapshots (
        chain_id  TEXT PRIMARY KEY,
        diff_id   TEXT NOT NULL,
        parent    TEXT,
        size      INTEGER NOT NULL,
        last_used REAL NOT NULL
    );
    """,
    # 2: the build cache (cache/records.py) and the stat cache of context files (cache/statcache.py).
    """
    CREATE TABLE cache_records (
        key       TEXT PRIMARY KEY,
        parent    TEXT NOT NULL,
        lineage   TEXT NOT NULL,
        diff_id   TEXT,
        result    BLOB NOT NULL,
        inputs    BLOB NOT NULL,
        created   REAL NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE INDEX cache_records_lineage ON cache_records(lineage, created);
    CREATE INDEX cache_records_diff ON cache_records(diff_id);
    CREATE TABLE stat_cache (
        dev      INTEGER NOT NULL,
        ino      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        hash     TEXT NOT NULL,
        PRIMARY KEY (dev, ino)
    );
    """,
    # 3: what a layer's files occupy (regular files + symlink targets), the size docker shows;
    # where a layer has no row here, only its tar size (diffs.size) is known.
    """
    CREATE TABLE diff_content (
        diff_id TEXT PRIMARY KEY,
        size    INTEGER NOT NULL
    );
    """,
    # 4: a pull pairs each layer blob with the diff_id its config claims without decompressing
    # it (verified = 0); the first read of the layer checks the claim (Store.verify_layer).
    # An image whose size waits on such a check has image_size -1.
    """
    ALTER TABLE layers ADD COLUMN verified INTEGER NOT NULL DEFAULT 1;
    """,
    # 5: a miss explanation looks for other builds on the same parent (CacheRecords.sibling);
    # without this index every miss scanned the whole table.
    """
    CREATE INDEX cache_records_parent ON cache_records(parent, created);
    """,
    # 6: which registry repositories hold a blob (cache/blobsources.py): a pull or push records
    # them, and a push to another repository of the same registry mounts instead of uploading.
    """
    CREATE TABLE blob_sources (
        digest     TEXT NOT NULL,
        registry   TEXT NOT NULL,
        repository TEXT NOT NULL,
        seen       REAL NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    );
    """,
)


def damaged_message(path: Path, err: Exception) -> str:
    """What to tell a user whose meta.db SQLite finds damaged (a disk or a copy broke it)."""
    return (f"the store database {path} is damaged: {err}; `sqlite3 {path} .recover` may save "
            "what is left, or move it aside to start an empty index (the blobs stay, and "
            "`pybuild store check --repair` records the whole images again, untagged)")


class Database:
    """One connection to ``meta.db``; open one per process (connections are not shared)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Parallel build stages share this connection from several threads: one at a time.
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.OperationalError as err:
            raise self._full(err) or StoreError(f"cannot open the store database {path}: {err}") from None
        except sqlite3.DatabaseError as err:  # malformed, not a database: the user's data problem
            raise StoreError(damaged_message(path, err)) from None
        self._migrate()

    def _full(self, err: BaseException) -> StoreError | None:
        """A full file system under meta.db as the user's one-line error; None for other errors."""
        if not isinstance(err, sqlite3.OperationalError):
            return None
        code = getattr(err, "sqlite_errorcode", None)
        if code != sqlite3.SQLITE_FULL:
            if code is None or code & 0xFF != sqlite3.SQLITE_IOERR:
                return None
            try:
                fs = os.statvfs(self.path.parent)
            except OSError:
                return None
            if fs.f_bavail * fs.f_frsize >= NEARLY_FULL_BYTES:
                return None
        return StoreError(f"cannot write the store database {self.path}: {os.strerror(errno.ENOSPC)}")

    @property
    def version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the store at {self.path.parent} has schema version {current}, but this pybuild "
                f"only knows up to {len(MIGRATIONS)}: upgrade pybuild or use another --root"
            )
        if current == len(MIGRATIONS):
            return
        with self.transaction() as conn:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for number in range(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the lock up front (no upgrade deadlocks)."""
        with self._lock:
            try:
                # BEGIN inside the try: a SIGTERM raised just after it leaves no transaction open
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as err:
                    raise self._full(err) or StoreError(
                        f"the store database is busy or broken ({self.path}): {err}") from None
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as err:
                # A failed COMMIT (a full disk) may leave the transaction open, or SQLite may
                # have rolled it back already: either way this connection ends outside it.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                full = self._full(err)
                if full is not None:
                    raise full from None
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view across several queries."""
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                yield self._conn
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | list = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def aggregate(self, sql: str, params: tuple | list = ()) -> sqlite3.Row:
        """The row of an aggregate query (COUNT, SUM), which always has one."""
        row = self.query_one(sql, params)
        assert row is not None
        return row

    def close(self) -> None:
        self._conn.close()


def now() -> float:
    return time.time()
