"""Parses of unchanged Dockerfiles, kept between runs: a rebuild skips the parser and Lark.

A parse is a pure function of the Dockerfile's bytes, its name and the parser's
code. The key is the XXH3-128 of the bytes and the name plus the identity
(size, mtime) of the parser's modules and grammar, so an edited pybuild never
reads what its older self wrote. Entries are pickles in the user's own cache
directory (:func:`~builder.frontend.parser.user_cache_dir`, never one another
user can write); a damaged entry is parsed again, and a Dockerfile that fails
to parse is never kept. At most ``MAX_ENTRIES`` are kept, the least recently
used go first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import xxhash

import grammar
from builder import __version__
from builder.frontend.ast import ParsedDockerfile

MAX_ENTRIES = 64
_SOURCES = (Path(__file__).with_name("parser.py"), Path(__file__).with_name("ast.py"),
            Path(__file__).with_name("dump.py"), Path(grammar.__file__).with_name("dockerfile.lark"))


def parse_cached(source: bytes, file: str = "Dockerfile") -> ParsedDockerfile:
    """:func:`~builder.frontend.parser.parse`, read from the cache when this text was parsed before."""
    from builder.frontend.parser import parse, user_cache_dir

    directory = user_cache_dir()
    if directory is None:
        return parse(source, file)
    entry = directory / "parse" / f"{_key(source, file)}.pickle"
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError):
        with open(entry, "rb") as f:
            parsed = pickle.load(f)
        if isinstance(parsed, ParsedDockerfile):
            with contextlib.suppress(OSError):
                os.utime(entry)  # recently used
            return parsed
    parsed = parse(source, file)
    with contextlib.suppress(OSError):
        _store(entry, parsed)
    return parsed


def _key(source: bytes, file: str) -> str:
    h = xxhash.xxh3_128(__version__.encode())
    for path in _SOURCES:
        st = path.stat()
        h.update(f"\0{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(b"\0" + file.encode("utf-8", "surrogateescape") + b"\0")
    h.update(source)
    return h.hexdigest()


def _store(entry: Path, parsed: ParsedDockerfile) -> None:
    """Write atomically (no fsync: a torn entry after a crash only costs a parse)."""
    entry.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, entry)
    finally:
        tmp.unlink(missing_ok=True)
    entries = list(entry.parent.glob("*.pickle"))
    if len(entries) > MAX_ENTRIES:
        for old in sorted(entries, key=_last_use)[: len(entries) - MAX_ENTRIES]:
            old.unlink(missing_ok=True)


def _last_use(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by another pybuild
        return 0.0
