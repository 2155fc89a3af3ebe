"""The content-addressed store (blobs, snapshots, SQLite metadata) and its maintenance."""

from cache.store import (
    CheckReport,
    ImageRecord,
    Problem,
    PruneReport,
    RemoveEvent,
    Store,
    StoreImage,
    default_root,
)

__all__ = [
    "CheckReport", "ImageRecord", "Problem", "PruneReport", "RemoveEvent", "Store", "StoreImage",
    "default_root",
]
