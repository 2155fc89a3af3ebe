"""What a layer tar holds: its entry kinds and headers.

Apart from the writer (:mod:`builder.layers.tarwriter`) and the extractor, so that
what only names an entry's kind (a COPY's cache key does) does not load either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# The one xattr docker's archive and containerd's diff writer (BuildKit's) put in a layer a build
# step makes: file capabilities. Others (user.*, trusted.*, security.selinux) are the build host's
# metadata, not image content, and must not leak into the image from the context or a RUN.
STEP_LAYER_XATTRS = frozenset({"security.capability"})


class EntryType(Enum):
    """The tar entry kinds a layer may hold; the value is the typeflag byte."""

    FILE = b"0"
    HARDLINK = b"1"
    SYMLINK = b"2"
    CHAR = b"3"
    BLOCK = b"4"
    DIR = b"5"
    FIFO = b"6"


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One tar header. ``name`` is relative (no leading '/', no trailing '/')."""

    name: str
    type: EntryType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
