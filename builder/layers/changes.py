"""What each layer of an image adds, modifies and deletes, and what later layers throw away.

``docker history`` shows a layer's size; it cannot tell that half of those
bytes are overwritten or deleted by a later layer and only cost download time.
:func:`layer_changes` replays the layers' tar headers (base first, content
skipped, nothing extracted) over an in-memory model of the merged file system
and answers both. It feeds ``pybuild history IMAGE --files``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, BinaryIO

from builder.errors import UnsafeLayerError
from builder.image.mediatypes import Compression
from builder.layers import whiteout
from builder.layers.extract import TarReader, open_layer_stream
from builder.layers.tarwriter import EntryType

if TYPE_CHECKING:
    from builder.image.image import Image

LayerOpener = Callable[[], BinaryIO]


class ChangeKind(StrEnum):
    """The letters ``docker diff`` uses."""

    ADDED = "A"
    MODIFIED = "M"
    DELETED = "D"


@dataclass(frozen=True, slots=True)
class FileChange:
    """One path a layer touches; ``size`` is its content bytes (0 for deletions and non-files)."""

    kind: ChangeKind
    path: str
    type: EntryType | None
    size: int = 0


@dataclass(frozen=True)
class LayerChanges:
    """One layer's changes, and the bytes of its files that later layers overwrite or delete."""

    index: int
    changes: tuple[FileChange, ...]
    size: int
    overwritten_bytes: int
    deleted_bytes: int

    @property
    def added(self) -> list[str]:
        return [c.path for c in self.changes if c.kind is ChangeKind.ADDED]

    @property
    def modified(self) -> list[str]:
        return [c.path for c in self.changes if c.kind is ChangeKind.MODIFIED]

    @property
    def deleted(self) -> list[str]:
        return [c.path for c in self.changes if c.kind is ChangeKind.DELETED]

    @property
    def wasted_bytes(self) -> int:
        """Bytes shipped in this layer that no container of the final image can see."""
        return self.overwritten_bytes + self.deleted_bytes


@dataclass(slots=True)
class _Content:
    """A regular file's bytes, shared by its hard links: wasted only when the last name goes."""

    layer: int
    size: int
    links: int = 1


@dataclass(slots=True)
class _Node:
    layer: int
    is_dir: bool
    content: _Content | None = None


@dataclass
class _Tally:
    changes: list[FileChange] = field(default_factory=list)
    size: int = 0
    overwritten: int = 0
    deleted: int = 0


class _Model:
    """The merged file system: which layer last wrote each path, and with how many bytes."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {"": _Node(-1, True)}
        self.children: dict[str, set[str]] = {"": set()}
        self.tallies: list[_Tally] = []

    def _link(self, path: str, node: _Node) -> None:
        parent = path.rpartition("/")[0]
        if parent not in self.nodes:
            self._link(parent, _Node(node.layer, True))
        elif not self.nodes[parent].is_dir:
            self.remove(parent, node.layer, overwritten=True)
            self._link(parent, _Node(node.layer, True))
        self.nodes[path] = node
        self.children[parent].add(path)
        if node.is_dir:
            self.children.setdefault(path, set())

    def remove(self, path: str, layer: int, *, overwritten: bool) -> None:
        """Drop ``path`` and everything below it, charging their bytes to the layers that wrote them."""
        node = self.nodes.pop(path, None)
        if node is None:
            return
        self.children[path.rpartition("/")[0]].discard(path)
        stack = [(path, node)]
        while stack:
            p, n = stack.pop()
            content = n.content
            if content is not None:
                content.links -= 1
                if content.links == 0 and 0 <= content.layer != layer:
                    tally = self.tallies[content.layer]
                    if overwritten:
                        tally.overwritten += content.size
                    else:
                        tally.deleted += content.size
            for child in self.children.pop(p, ()) if n.is_dir else ():
                stack.append((child, self.nodes.pop(child)))

    def empty_lower(self, path: str, layer: int) -> list[str]:
        """Opaque directory: drop what lower layers put below ``path``; returns the dropped paths."""
        dropped = []
        for child in sorted(self.children.get(path, ())):
            node = self.nodes[child]
            if node.layer != layer:
                self.remove(child, layer, overwritten=False)
                dropped.append(child)
            elif node.is_dir:
                dropped.extend(self.empty_lower(child, layer))
        return dropped

    def add(self, path: str, layer: int, kind: EntryType, size: int, link: str = "") -> ChangeKind:
        """Record an entry; a hard link (``link`` the path it names) shares that file's bytes."""
        old = self.nodes.get(path)
        is_dir = kind is EntryType.DIR
        content = None
        if kind is EntryType.HARDLINK:
            target = self.nodes.get(link)
            content = target.content if target is not None else None
            if content is not None:
                content.links += 1
        elif kind is EntryType.FILE:
            content = _Content(layer, size)
        if old is not None and not (old.is_dir and is_dir):
            self.remove(path, layer, overwritten=True)
        if old is not None and old.is_dir and is_dir:
            old.layer = layer
        else:
            self._link(path, _Node(layer, is_dir, content))
        return ChangeKind.ADDED if old is None else ChangeKind.MODIFIED


def _parts(name: str) -> list[str]:
    parts = [c for c in name.split("/") if c and c != "."]
    if ".." in parts:
        raise UnsafeLayerError(f"layer entry '{name}' has a '..' in its name")
    return parts


def layer_changes(
    layers: Iterable[LayerOpener | BinaryIO], compression: Compression | None = None
) -> list[LayerChanges]:
    """The changes of each layer, base first. Each item opens (or is) a layer blob or tar stream.

    Blobs may be compressed (detected unless ``compression`` is given); each
    stream is read to its end, so verifying readers check their digests.
    """
    model = _Model()
    for index, item in enumerate(layers):
        tally = _Tally()
        model.tallies.append(tally)
        stream = item() if callable(item) else item
        try:
            raw = open_layer_stream(stream, compression)
            reader = TarReader(raw)
            for entry in reader:
                parts = _parts(entry.name)
                if not parts:
                    continue
                base = parts[-1]
                parent = "/".join(parts[:-1])
                if base == whiteout.OPAQUE_MARKER:
                    if parent in model.nodes:
                        model.add(parent, index, EntryType.DIR, 0)
                    for gone in model.empty_lower(parent, index):
                        tally.changes.append(FileChange(ChangeKind.DELETED, gone, None))
                    continue
                if base.startswith(whiteout.WHITEOUT_PREFIX):
                    victim = whiteout.whiteout_target(base)
                    if victim is None or victim in ("", ".", ".."):
                        continue
                    path = f"{parent}/{victim}" if parent else victim
                    node = model.nodes.get(path)
                    if node is not None and node.layer != index:
                        model.remove(path, index, overwritten=False)
                        tally.changes.append(FileChange(ChangeKind.DELETED, path, None))
                    continue
                path = "/".join(parts)
                link = "/".join(_parts(entry.linkname)) if entry.type is EntryType.HARDLINK else ""
                kind = model.add(path, index, entry.type, entry.size, link)
                # the layer's size as docker (and `history`) counts it: a symlink's target too
                tally.size += (len(entry.linkname.encode("utf-8", "surrogateescape"))
                               if entry.type is EntryType.SYMLINK else entry.size)
                tally.changes.append(FileChange(kind, path, entry.type, entry.size))
            reader.drain()
        finally:
            stream.close()
    return [
        LayerChanges(i, tuple(t.changes), t.size, t.overwritten, t.deleted)
        for i, t in enumerate(model.tallies)
    ]


def image_changes(image: Image) -> list[LayerChanges]:
    """:func:`layer_changes` of an image's layers, blobs verified against their digests."""
    return layer_changes([layer.compressed for layer in image.layers()])
