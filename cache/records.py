"""The build cache: what each step produced, by cache key.

A record holds the step's layer (by diff_id, or none), the container config
after it, and its history entry with the original timestamp, so a build
made entirely of hits reproduces the same config and image ID, as docker's
builder does. Its ``inputs`` (what went into the key) let a later miss say
what changed since the closest earlier build of the same step (``lineage``:
the same Dockerfile position).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from builder.image.config import ContainerConfig, History
from builder.image.digest import Digest
from cache.db import Database, now

# The image config key under which an image carries records of its own steps, an inline
# cache (BuildKit's is moby.buildkit.cache.v0); see cache.remote.
INLINE_KEY = "pybuild.cache.v1"


@dataclass(frozen=True)
class StepResult:
    """What a step left behind; enough to replay it without running it."""

    diff_id: Digest | None
    config: ContainerConfig
    author: str | None
    history: History

    def to_json(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "config": self.config.to_dict(), "author": self.author,
                "history": self.history.to_dict()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepResult:
        return cls(
            diff_id=Digest(data["diff_id"]) if data.get("diff_id") else None,
            config=ContainerConfig.from_dict(data.get("config")),
            author=data.get("author"),
            history=History.from_dict(data.get("history") or {}),
        )


@dataclass(frozen=True)
class CacheRecord:
    """One step's cache entry: its key, what it made, and what went into the key (for --explain)."""

    key: str
    parent: str
    lineage: str
    result: StepResult
    inputs: dict[str, Any]
    created: float


def _pack(obj: Any) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 6)  # key order kept: it is in the image ID


def _unpack(data: bytes) -> Any:
    return json.loads(zlib.decompress(data))


SIBLINGS_READ = 200  # records a miss explanation unpacks at most


class CacheRecords:
    """The ``cache_records`` table of a store."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._used: dict[str, float] = {}  # touched, not saved yet
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheRecord | None:
        row = self.db.query_one(
            "SELECT key, parent, lineage, result, inputs, created FROM cache_records WHERE key=?", (key,))
        return self._record(row) if row else None

    def touch(self, key: str) -> None:
        """Note ``key`` used now; :meth:`flush` saves the notes (one commit, not one per hit)."""
        with self._lock:
            self._used[key] = now()

    def flush(self) -> None:
        """Save the last uses :meth:`touch` noted, in one transaction."""
        with self._lock:
            used, self._used = self._used, {}
        if used:
            with self.db.transaction() as conn:
                conn.executemany("UPDATE cache_records SET last_used=? WHERE key=?",
                                 [(t, key) for key, t in used.items()])

    def put(self, key: str, parent: str, lineage: str, result: StepResult, inputs: dict[str, Any]) -> None:
        t = now()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO cache_records VALUES (?,?,?,?,?,?,?,?)",
                (key, parent, lineage, result.diff_id, _pack(result.to_json()), _pack(inputs), t, t),
            )

    def closest(self, lineage: str, exclude: str, parent: str = "") -> CacheRecord | None:
        """The record of the same step position to explain a miss by: the most recent one built
        on the same parent (so the step's own change is named, not an earlier build's other
        branch, e.g. another build arg value), else the most recent one."""
        row = self.db.query_one(
            "SELECT key, parent, lineage, result, inputs, created FROM cache_records "
            "WHERE lineage=? AND key<>? ORDER BY parent=? DESC, created DESC LIMIT 1",
            (lineage, exclude, parent))
        return self._record(row) if row else None

    def sibling(self, parent: str, stage: str, exclude: str, display: str = "", *,
                same_display: bool = False) -> tuple[str, dict[str, Any]] | None:
        """Another build of the step that follows ``parent`` in ``stage`` (its key and inputs):
        what explains a miss when no build from this context directory and Dockerfile is
        recorded (another checkout directory, a record imported with ``--cache-from``)."""
        # The most recent few: a base image's key is the parent of every first step built on it.
        rows = self.db.query("SELECT key, inputs FROM cache_records WHERE parent=? AND key<>? "
                             "ORDER BY created DESC LIMIT ?", (parent, exclude, SIBLINGS_READ))
        found = pick_sibling(((r[0], _unpack(r[1])) for r in rows), stage, display)
        return None if same_display and found is not None and found[1].get("display") != display else found

    def all(self) -> list[CacheRecord]:
        rows = self.db.query("SELECT key, parent, lineage, result, inputs, created FROM cache_records")
        return [self._record(r) for r in rows]

    def delete(self, keys: list[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM cache_records WHERE key=?", [(k,) for k in keys])

    @staticmethod
    def _record(row: Any) -> CacheRecord:
        return CacheRecord(
            key=row[0], parent=row[1], lineage=row[2],
            result=StepResult.from_json(_unpack(row[3])), inputs=_unpack(row[4]), created=row[5],
        )


def pick_sibling(candidates: Iterable[tuple[str, dict[str, Any]]], stage: str, display: str,
                 ) -> tuple[str, dict[str, Any]] | None:
    """Of records (key, inputs) with one parent, most recent first, the one of the same stage,
    the same instruction preferred: a stage's first step shares its parent with other stages'."""
    same_stage = [c for c in candidates if c[1].get("stage") == stage]
    return next((c for c in same_stage if c[1].get("display") == display), same_stage[0] if same_stage else None)
