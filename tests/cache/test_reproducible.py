"""Issue 5: with SOURCE_DATE_EPOCH, two machines building the same inputs get the same image digest."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.cache.conftest import Machine, write_context
from tests.cache.test_farm import manifest_of, push_digest

DOCKERFILE = """\
FROM busybox:local AS build
WORKDIR /work
COPY . /work/
RUN mkdir -p out && cat /work/*.txt > out/all.txt && touch out/now && ln -s all.txt out/link
FROM busybox:local
COPY --from=build /work/out /app
RUN echo built > /app/stamp
ENV MODE=release
"""


def test_two_machines_same_digest_with_source_date_epoch(machines, tmp_path: Path, registry: str) -> None:
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    digests, ids = [], []
    for n in range(2):
        m: Machine = machines()
        # Each machine has its own checkout: another path, other mtimes.
        ctx = write_context(tmp_path / f"checkout{n}", {"Dockerfile": DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"})
        for path in ctx.iterdir():
            os.utime(path, (time.time() - 1000 * n, time.time() - 1000 * n))
        m.build(ctx, "-t", "app:1", "--iidfile", str(tmp_path / f"id{n}"), env=env)
        ids.append((tmp_path / f"id{n}").read_text())
        digests.append(push_digest(m, "app:1", f"{registry}/repro/app{n}:1"))
        if n == 0:
            time.sleep(1.1)  # a later wall clock must not show in the image
    assert ids[0] == ids[1]
    assert digests[0] == digests[1]
    manifest = manifest_of(registry, "repro/app0", digests[0])
    config = json.loads(_blob(registry, "repro/app0", manifest["config"]["digest"]))
    assert config["created"] == "2023-11-14T22:13:20Z"
    added = config["history"][1:]
    assert added and all(h["created"] == "2023-11-14T22:13:20Z" for h in added)


def test_a_warm_cache_without_the_epoch_does_not_leak_into_an_epoch_build(machines, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"})
    warm, fresh = machines(), machines()
    warm.build(ctx)  # wall-clock times in the cache
    built = warm.build(ctx, "--iidfile", str(tmp_path / "warm"), env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert b"SOURCE_DATE_EPOCH changed: (not set) -> 1700000000" in built.stdout + built.stderr
    fresh.build(ctx, "--iidfile", str(tmp_path / "fresh"), env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert (tmp_path / "warm").read_text() == (tmp_path / "fresh").read_text()


def test_without_source_date_epoch_times_differ(machines, tmp_path: Path) -> None:
    ids = []
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "a\n", "b.txt": "b\n"})
    for n in range(2):
        m: Machine = machines()
        m.build(ctx, "--iidfile", str(tmp_path / f"id{n}"))
        ids.append((tmp_path / f"id{n}").read_text())
    assert ids[0] != ids[1]  # the history's times are the build's: the control for the test above


def _blob(registry: str, repo: str, digest: str) -> bytes:
    import requests

    r = requests.get(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=30)
    r.raise_for_status()
    return r.content
