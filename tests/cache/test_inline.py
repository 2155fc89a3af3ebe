"""``--cache-to type=inline``: the cache rides in the image's config; ``--cache-from IMAGE`` reads it.

The CI idiom of docker builds (``--cache-from app:latest`` with BUILDKIT_INLINE_CACHE=1): machine B,
empty, builds from the image machine A pushed, runs no step, and makes the same image.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cache.conftest import Machine, ran, steps, write_context

DOCKERFILE = """\
FROM busybox:local
WORKDIR /app
COPY a.txt .
RUN cat a.txt > out.txt && date +%s%N >> out.txt
RUN echo second > second.txt
ENV MODE=inline
CMD ["cat", "/app/out.txt"]
"""


def _config(machine: Machine, image: str) -> dict:
    saved = machine.root / "config-probe.tar"
    machine.run("save", "-o", str(saved), image, check=True)
    import tarfile

    with tarfile.open(saved) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        return json.load(tf.extractfile(manifest["Config"]))  # type: ignore[arg-type]


def test_inline_cache_through_a_registry(machines, tmp_path: Path, registry: str) -> None:  # type: ignore[no-untyped-def]
    a, b, c = machines(), machines(), machines()
    ref = f"{registry}/inline/app:1"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(ctx, "-t", ref, "--cache-to", "type=inline", "--push")
    records = _config(a, ref)["pybuild.cache.v1"]["records"]
    assert len(records) == 6 and sum("layer" in r for r in records) == 4  # WORKDIR COPY RUN RUN make layers

    built = b.build(ctx, "-t", ref, "--cache-from", ref, "--cache-to", "type=inline")
    log = built.stdout + built.stderr
    assert ran(log) == [] and steps(log)["cached"] == 4, log.decode()  # ENV and CMD show no step
    ia = json.loads(a.run("inspect", ref, check=True).stdout)[0]
    ib = json.loads(b.run("inspect", ref, check=True).stdout)[0]
    assert ia["Id"] == ib["Id"] and ia["RootFS"]["Layers"] == ib["RootFS"]["Layers"]
    assert b.run("run", "--rm", ref, check=True).stdout.startswith(b"one\n")

    # BuildKit's build-arg spelling; and an image FROM the cached one does not inherit its cache.
    child = write_context(tmp_path / "child", {"Dockerfile": f"FROM {ref}\nRUN echo child > /c\n"})
    c.build(child, "-t", "child:1", "--build-arg", "BUILDKIT_INLINE_CACHE=1")
    child_cache = _config(c, "child:1")["pybuild.cache.v1"]["records"]
    assert len(child_cache) == 1 and child_cache[0]["inputs"]["display"].startswith("RUN echo child")
    c.build(child, "-t", "child:2")
    assert "pybuild.cache.v1" not in _config(c, "child:2")


def test_an_image_without_inline_cache_only_warns(machines, tmp_path: Path, registry: str) -> None:  # type: ignore[no-untyped-def]
    a, b = machines(), machines()
    ref = f"{registry}/inline/plain:1"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "two\n"})
    a.build(ctx, "-t", ref, "--push")
    built = b.build(ctx, "--cache-from", ref)
    assert b"carries no build cache" in built.stderr and steps(built.stdout + built.stderr)["cached"] == 0
    bad = b.build(ctx, "--cache-from", "type=inline", check=False)
    assert bad.returncode == 125 and b"--cache-from REF" in bad.stderr
