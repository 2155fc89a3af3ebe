"""The parse cache: an unchanged Dockerfile is read back, not parsed again (no Lark import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ParseError
from builder.frontend import parsecache
from builder.frontend.parser import parse

DOCKERFILE = b"# syntax=docker/dockerfile:1\nFROM busybox AS base\nRUN <<EOF\necho hi\nEOF\nCOPY a \\\n  b /c/\n"


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "pybuild" / "parse"


def test_a_cached_parse_equals_a_fresh_one(cache_home: Path) -> None:
    first = parsecache.parse_cached(DOCKERFILE, "Dockerfile")
    assert first == parse(DOCKERFILE, "Dockerfile")
    assert len(list(cache_home.glob("*.pickle"))) == 1
    assert parsecache.parse_cached(DOCKERFILE, "Dockerfile") == first
    other = parsecache.parse_cached(DOCKERFILE, "other.Dockerfile")  # the name is in the parse
    assert other.file == "other.Dockerfile" and len(list(cache_home.glob("*.pickle"))) == 2


def test_the_second_run_does_not_load_the_parser(cache_home: Path, tmp_path: Path) -> None:
    code = ("import sys; from builder.frontend.parsecache import parse_cached; "
            f"parse_cached({DOCKERFILE!r}); print('lark' in sys.modules)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True).stdout
            for _ in range(2)]
    assert runs == [b"True\n", b"False\n"]


def test_damaged_entries_are_parsed_again_and_errors_never_kept(cache_home: Path) -> None:
    parsed = parsecache.parse_cached(DOCKERFILE)
    (entry,) = cache_home.glob("*.pickle")
    entry.write_bytes(b"\x80\x05not a pickle")
    assert parsecache.parse_cached(DOCKERFILE) == parsed
    with pytest.raises(ParseError):
        parsecache.parse_cached(b"# only a comment\n")
    assert len(list(cache_home.glob("*.pickle"))) == 1


def test_the_cache_keeps_the_most_recent_entries(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsecache, "MAX_ENTRIES", 3)
    texts = [f"FROM scratch\nENV N={i}\n".encode() for i in range(5)]
    for i, text in enumerate(texts):
        parsecache.parse_cached(text)
        for j, older in enumerate(texts[:i]):  # strictly older, whatever the clock's resolution
            entry = cache_home / f"{parsecache._key(older, 'Dockerfile')}.pickle"
            if entry.exists():
                os.utime(entry, (1000 + j, 1000 + j))
    kept = {p.name for p in cache_home.glob("*.pickle")}
    assert kept == {f"{parsecache._key(t, 'Dockerfile')}.pickle" for t in texts[2:]}


def test_a_directory_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "pybuild").mkdir(mode=0o777)
    (tmp_path / "pybuild").chmod(0o777)
    assert parsecache.parse_cached(DOCKERFILE) == parse(DOCKERFILE)
    assert not (tmp_path / "pybuild" / "parse").exists()
