"""What the build cache holds and costs (``pybuild cache ls``/``du``), and a cache-only prune.

A record costs its metadata row and, when no image needs the layer, the
layer's blobs (every compressed form) and snapshot; a RUN cache mount and a
git checkout cost their directories. "Reclaimable" is what a ``pybuild cache
prune`` would free: layers no image references, cache mounts, git checkouts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cache.gitsources import GitCheckout, list_checkouts, remove_checkout
from cache.mounts import CacheMount, list_mounts, remove_mount
from cache.store import Store


@dataclass(frozen=True)
class CacheEntry:
    """One cache record, as ``pybuild cache ls`` shows it."""

    key: str
    parent: str
    stage: str
    instruction: str
    diff_id: str | None
    size: int | None  # the layer's uncompressed size; None: no layer, or not held any more
    held: bool  # its layer (if any) is in the store
    in_image: bool  # an image in the store uses the layer
    created: float
    last_used: float
    type: str = "step"  # or "cache mount": a RUN --mount=type=cache directory (buildx du's exec.cachemount)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "key": self.key, "parent": self.parent, "stage": self.stage,
                "instruction": self.instruction, "diff_id": self.diff_id, "size": self.size,
                "held": self.held, "in_image": self.in_image, "created": self.created,
                "last_used": self.last_used}


@dataclass
class CacheUsage:
    records: int = 0
    metadata: int = 0  # bytes of the records' rows (packed)
    layers: int = 0  # distinct layers the records name and the store holds
    layer_bytes: int = 0  # their blobs, every compressed form
    shared_bytes: int = 0  # of which images also use
    mounts: list[CacheMount] = field(default_factory=list)
    checkouts: list[GitCheckout] = field(default_factory=list)

    @property
    def mount_bytes(self) -> int:
        return sum(m.size for m in self.mounts)

    @property
    def checkout_bytes(self) -> int:
        return sum(c.size for c in self.checkouts)

    @property
    def reclaimable(self) -> int:
        return self.layer_bytes - self.shared_bytes + self.mount_bytes + self.checkout_bytes + self.metadata

    @property
    def total(self) -> int:
        return self.layer_bytes + self.mount_bytes + self.checkout_bytes + self.metadata


def _image_diff_ids(store: Store) -> set[str]:
    """Diff IDs of the layers of every image held (their blobs are referenced by a manifest)."""
    rows = store.db.query(
        "SELECT DISTINCT l.diff_id FROM layers l JOIN manifest_blobs mb ON mb.blob_digest = l.blob_digest")
    return {r[0] for r in rows}


def entries(store: Store) -> list[CacheEntry]:
    """Every cache record and cache mount, most recently used first: the mounts are often the
    biggest part of a build cache, and what ``cache prune`` removes with the records."""
    from cache.records import _unpack

    in_images = _image_diff_ids(store)
    held = {r[0]: r[1] for r in store.db.query(
        "SELECT l.diff_id, d.size FROM layers l LEFT JOIN diffs d ON d.diff_id = l.diff_id")}
    out = []
    for row in store.db.query(
            "SELECT key, parent, diff_id, inputs, created, last_used FROM cache_records "
            "ORDER BY last_used DESC, key"):
        inputs = _unpack(row["inputs"])
        diff_id = row["diff_id"]
        is_held = diff_id is None or diff_id in held
        out.append(CacheEntry(
            key=row["key"], parent=row["parent"], stage=str(inputs.get("stage", "")),
            instruction=str(inputs.get("display", "")),
            diff_id=diff_id, size=held.get(diff_id) if diff_id else None, held=is_held,
            in_image=diff_id in in_images, created=row["created"], last_used=row["last_used"]))
    out += [CacheEntry(key=m.key, parent="", stage="", instruction=f"cache mount id={m.id}" if m.id else
                       "cache mount", diff_id=None, size=m.size, held=True, in_image=False,
                       created=m.last_used, last_used=m.last_used, type="cache mount")
            for m in list_mounts(store.root)]
    return sorted(out, key=lambda e: -e.last_used)  # stable: records keep their order among equals


def usage(store: Store) -> CacheUsage:
    result = CacheUsage()
    row = store.db.aggregate(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(result) + LENGTH(inputs) + LENGTH(key) * 2 + 64), 0) "
        "FROM cache_records")
    result.records, result.metadata = int(row[0]), int(row[1])
    in_images = _image_diff_ids(store)
    forms = store.db.query(
        "SELECT l.diff_id, b.size FROM layers l JOIN blobs b ON b.digest = l.blob_digest "
        "WHERE l.diff_id IN (SELECT diff_id FROM cache_records WHERE diff_id IS NOT NULL)")
    seen: set[str] = set()
    for diff_id, size in forms:
        seen.add(diff_id)
        result.layer_bytes += size
        if diff_id in in_images:
            result.shared_bytes += size
    result.layers = len(seen)
    result.mounts = list_mounts(store.root)
    result.checkouts = list_checkouts(store.root)
    return result


@dataclass
class CachePruneReport:
    records: int = 0
    mounts: int = 0
    checkouts: int = 0
    blobs: int = 0
    reclaimed: int = 0


def prune_cache(store: Store, keep_storage: int | None = None) -> CachePruneReport:
    """Remove build cache, never images: all of it, or with ``keep_storage`` least recently
    used first (records, cache mounts, git checkouts) until the store and they use at most that."""
    from cache.gc import _usage

    report = CachePruneReport()
    before = _usage(store)
    while True:
        if keep_storage is not None and _usage(store) <= keep_storage:
            break
        records = store.db.query("SELECT key, last_used FROM cache_records ORDER BY last_used, key")
        victims = sorted([(r["last_used"], "record", r["key"]) for r in records]
                         + [(m.last_used, "mount", m.key) for m in list_mounts(store.root)]
                         + [(c.last_used, "git", c.key) for c in list_checkouts(store.root)])
        if not victims:
            break
        if keep_storage is not None:
            victims = victims[:max(1, len(victims) // 4)]  # a quarter per round, oldest first
        with store.gc_lock.exclusive():
            keys = [v[2] for v in victims if v[1] == "record"]
            with store.db.transaction() as conn:
                conn.executemany("DELETE FROM cache_records WHERE key=?", [(k,) for k in keys])
            for _, kind, key in victims:
                if kind == "mount":
                    remove_mount(store.root, key)
                    report.mounts += 1
                elif kind == "git":
                    remove_checkout(store.root, key)
                    report.checkouts += 1
            report.records += len(keys)
        # The layers only those records kept alive are now plain garbage: collect it.
        report.blobs += len(store.prune().blobs)
        if keep_storage is None:
            break
    report.reclaimed = max(0, before - _usage(store))
    return report
