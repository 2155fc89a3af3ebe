"""Issue 5's GC: prune --keep-storage evicts old cache and cache mounts; cache ls/du/prune."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cache.conftest import Machine, steps, write_context

TAGGED = """\
FROM busybox:local
RUN --mount=type=cache,id=big,target=/cache head -c 3000000 /dev/urandom > /cache/blob && echo kept > /kept
COPY kept.txt /kept.txt
"""

UNTAGGED = """\
FROM busybox:local
RUN head -c 2000000 /dev/urandom > /big && echo scratch > /scratch
COPY other.txt /other.txt
"""


def _du(m: Machine) -> dict:
    return json.loads(m.run("cache", "du", "--format", "json", check=True).stdout)


def _ls(m: Machine) -> list[dict]:
    return json.loads(m.run("cache", "ls", "--format", "json", check=True).stdout)


def _clean(m: Machine) -> None:
    out = m.run("store", "check", check=True).stdout.decode()
    assert "clean" in out, out


def _setup(machines, tmp_path: Path):  # type: ignore[no-untyped-def]
    m: Machine = machines()
    kept = write_context(tmp_path / "kept", {"Dockerfile": TAGGED, "kept.txt": "k\n"})
    other = write_context(tmp_path / "other", {"Dockerfile": UNTAGGED, "other.txt": "o\n"})
    m.build(other)  # older, untagged
    m.build(kept, "-t", "app:1")
    return m, kept, other


def test_keep_storage_evicts_old_cache_and_mounts_never_tagged_images(machines, tmp_path: Path) -> None:
    m, kept, other = _setup(machines, tmp_path)
    before = _du(m)
    assert before["records"] == 4 and before["cache_mounts"] == 1
    assert before["cache_mount_bytes"] >= 3_000_000
    assert before["reclaimable"] >= before["cache_mount_bytes"] + before["metadata"]
    image_before = json.loads(m.run("inspect", "app:1", check=True).stdout)
    m.run("prune", "--keep-storage", "1MB", "-f", check=True)
    _clean(m)
    after = _du(m)
    assert after["cache_mounts"] == 0  # 3 MB of mount: over the budget
    assert after["layer_bytes"] < 1_000_000 + after["shared_with_images"]
    assert json.loads(m.run("inspect", "app:1", check=True).stdout) == image_before
    # The tagged image's steps still hit (their layers are the image's); the other build's
    # records lost their layers: they miss and rerun, no error.
    again = m.build(kept, "-t", "app:1")
    assert steps(again.stdout + again.stderr) == {"cached": 2, "done": 1}
    rebuilt = m.build(other)
    assert steps(rebuilt.stdout + rebuilt.stderr)["cached"] == 0, rebuilt.stdout.decode()
    m.run("save", "-o", str(tmp_path / "app.tar"), "app:1", check=True)


def test_plain_prune_keeps_the_cache(machines, tmp_path: Path) -> None:
    m, kept, other = _setup(machines, tmp_path)
    m.run("prune", "-f", check=True)
    _clean(m)
    assert _du(m)["cache_mounts"] == 1
    for ctx in (kept, other):
        again = m.build(ctx)
        assert steps(again.stdout + again.stderr) == {"cached": 2, "done": 1}


def test_cache_ls_du_and_cache_prune(machines, tmp_path: Path) -> None:
    m, kept, _other = _setup(machines, tmp_path)
    entries = _ls(m)
    assert [e["instruction"][:40] for e in entries][:2] == ["COPY kept.txt /kept.txt", TAGGED.splitlines()[1][:40]]
    big = next(e for e in entries if e["instruction"].startswith("RUN head -c 2000000"))
    assert big["size"] >= 2_000_000 and big["held"] and big["in_image"]  # the untagged image's
    table = m.run("cache", "ls", check=True).stdout.decode().splitlines()
    assert table[0].split() == ["KEY", "SIZE", "LAST", "USED", "INSTRUCTION"]
    assert len(table) == 6  # four steps and the cache mount of one
    mount = next(e for e in entries if e["type"] == "cache mount")  # often the biggest entry
    assert mount["instruction"] == "cache mount id=big" and mount["size"] >= 3_000_000
    assert any(row.endswith("   cache mount id=big") and " 3MB " in row for row in table), table
    assert {e["stage"] for e in entries if e["type"] == "step"} == {"stage-0"}
    assert table[1].endswith("[stage-0] COPY kept.txt /kept.txt"), table
    du = m.run("cache", "du", check=True).stdout.decode()
    assert "Cache records:" in du and "Cache mounts:" in du and "Reclaimable:" in du
    # cache prune --keep-storage: least recently used first (the untagged build's records go).
    m.run("cache", "prune", "-f", "--keep-storage", "4MB", check=True)
    left = {e["instruction"] for e in _ls(m)}
    assert not any(i.startswith("RUN head -c 2000000") for i in left), left
    _clean(m)
    # cache prune: no cache left; images stay.
    out = m.run("cache", "prune", "-f", check=True).stdout.decode()
    assert "Total reclaimed space" in out
    assert _ls(m) == [] and _du(m)["cache_mounts"] == 0
    m.run("inspect", "app:1", check=True)
    _clean(m)
    again = m.build(kept, "-t", "app:1")
    assert steps(again.stdout + again.stderr)["cached"] == 0


def test_prune_all_removes_cache_mounts_and_unheld_records(machines, tmp_path: Path) -> None:
    m, kept, other = _setup(machines, tmp_path)
    m.run("prune", "--all", "-f", check=True)
    _clean(m)
    du = _du(m)
    assert du["cache_mounts"] == 0
    left = _ls(m)
    assert left and all(e["held"] for e in left)  # only records of the tagged image's layers stay
    again = m.build(kept, "-t", "app:1")
    assert steps(again.stdout + again.stderr) == {"cached": 2, "done": 1}
    rebuilt = m.build(other)
    assert steps(rebuilt.stdout + rebuilt.stderr)["cached"] == 0
