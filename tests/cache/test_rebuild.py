"""Issue 5 on one machine: what a change reruns, and why a step missed, as the user reads it."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.cache.conftest import Machine, ran, steps, write_context
from tests.helpers.tools import require_tool

DOCKERFILE = """\
FROM busybox:local
ARG FLAVOUR=plain
RUN echo "base setup" > /setup.txt
COPY deps/ /deps/
RUN cat /deps/* > /deps.txt
COPY src/ /src/
RUN cat /src/* > /app.txt && echo "$FLAVOUR" >> /app.txt
LABEL done=yes
"""

FILES = {
    "Dockerfile": DOCKERFILE,
    "deps/a.txt": "dep a\n",
    "deps/b.txt": "dep b\n",
    "src/main.txt": "main\n",
    "src/util.txt": "util\n",
}


def _titles(output: bytes) -> list[str]:
    return [t.split("] ", 1)[1] for t in ran(output)]


def test_one_file_change_reruns_exactly_from_its_copy(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    first = m.build(ctx, "-t", "app:1")
    assert steps(first.stdout + first.stderr)["cached"] == 0
    (ctx / "src" / "util.txt").write_text("util, edited\n")
    second = m.build(ctx, "-t", "app:1")
    log = second.stdout + second.stderr
    # RUN, COPY deps, RUN deps hit; COPY src and everything after it rerun (ARG and LABEL are
    # no steps of their own, as in BuildKit's progress).
    assert steps(log) == {"cached": 3, "done": 2 + 1}, log.decode()  # +1: the FROM line
    assert _titles(log) == ["COPY src/ /src/", "RUN cat /src/* > /app.txt && echo \"$FLAVOUR\" >> /app.txt"]
    # An edit of a file the first COPY reads reruns from there.
    (ctx / "deps" / "a.txt").write_text("dep a, edited\n")
    third = m.build(ctx, "-t", "app:1")
    assert steps(third.stdout + third.stderr) == {"cached": 1, "done": 4 + 1}


def test_touching_every_file_reruns_nothing(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    first = m.build(ctx, "--iidfile", str(tmp_path / "id1"))
    for path in ctx.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    subprocess.run([require_tool("touch"), *map(str, ctx.rglob("*"))], check=True)
    second = m.build(ctx, "--iidfile", str(tmp_path / "id2"))
    assert steps(second.stdout + second.stderr) == {"cached": 5, "done": 0 + 1}
    assert (tmp_path / "id1").read_text() == (tmp_path / "id2").read_text()
    assert steps(first.stdout + first.stderr)["cached"] == 0


# What a fully cached rebuild has no use for: the registry client (requests), layer compression,
# RUN's container code and mount syscalls (ctypes).
NOT_NEEDED = ("requests", "urllib3", "isal", "zstandard", "ctypes", "builder.registry.client",
              "builder.layers.compression", "builder.execute.run", "builder.runtime.overlay")


def test_a_cached_rebuild_loads_only_what_it_needs(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    m.build(ctx, "-t", "app:1")
    code = ("import sys; from builder.cli import main; code = main(sys.argv[1:]); "
            f"print(code, sorted(m for m in {NOT_NEEDED!r} if m in sys.modules), file=sys.stderr)")
    again = subprocess.run([sys.executable, "-c", code, "build", "--progress", "plain", "-t", "app:1", str(ctx)],
                           capture_output=True, env={**os.environ, "PYBUILD_ROOT": str(m.root)}, check=True)
    assert steps(again.stderr)["done"] == 1, again.stderr.decode()  # the FROM line only
    assert again.stderr.decode().splitlines()[-1] == "0 []"


def test_a_cached_rebuild_marks_its_records_used(machines, tmp_path: Path) -> None:
    """The hits' last uses (what `pybuild cache prune` keeps by) are saved, in one commit."""
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    m.build(ctx)

    def last_used() -> dict[str, float]:
        with sqlite3.connect(m.root / "meta.db") as db:
            return dict(db.execute("SELECT key, last_used FROM cache_records").fetchall())

    before = last_used()
    assert len(before) == 7
    m.build(ctx)
    after = last_used()
    assert after.keys() == before.keys()
    assert all(after[k] > before[k] for k in before)
    assert len(set(after.values())) == len(after)  # each hit's own time, not the flush's


def _explain(m: Machine, ctx: Path, *args: str) -> str:
    result = m.run("build", "--explain", *args, str(ctx), check=True)
    return result.stdout.decode()


def test_explained_misses_name_what_changed(machines, tmp_path: Path, docker: str) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    m.build(ctx)
    assert _explain(m, ctx).strip() == "every step is cached"

    (ctx / "src" / "main.txt").write_text("main, edited\n")
    text = _explain(m, ctx)
    assert "COPY src/ /src/: cache miss: file changed (content): src/main.txt" in text, text
    assert text.count("cache miss") == 1, text  # later steps miss because this one did: not repeated
    m.build(ctx)

    (ctx / "deps" / "c.txt").write_text("dep c\n")
    text = _explain(m, ctx)
    assert "COPY deps/ /deps/: cache miss: file added: deps/c.txt" in text, text
    m.build(ctx)

    text = _explain(m, ctx, "--build-arg", "FLAVOUR=spicy")
    assert "build arg FLAVOUR changed: 'plain' -> 'spicy'" in text, text

    (ctx / "Dockerfile").write_text(DOCKERFILE.replace('echo "base setup"', 'echo "base setup v2"'))
    text = _explain(m, ctx)
    assert ("instruction changed: `RUN echo \"base setup\" > /setup.txt` -> "
            "`RUN echo \"base setup v2\" > /setup.txt`") in text, text
    (ctx / "Dockerfile").write_text(DOCKERFILE)

    # The base image changes: busybox:local retagged to another image.
    other = write_context(tmp_path / "other", {"Dockerfile": "FROM busybox:local\nRUN echo other > /other\n"})
    m.build(other, "-t", "busybox:local")
    text = _explain(m, ctx)
    assert "cache miss: base image changed: busybox:local@sha256:" in text, text

    # The plain progress of a real build says the same.
    built = m.build(ctx, "--build-arg", "FLAVOUR=spicy")
    assert b"cache miss: base image changed" in built.stdout + built.stderr


STAGES = """\
FROM busybox:local AS base
ARG V=1
RUN echo "base $V" > /base
FROM base AS second
COPY dir/ /dir/
RUN ls /dir > /listing
FROM busybox:local
COPY --from=second /listing /listing
"""


def test_explained_misses_of_stages_and_no_cache(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": STAGES, "dir/a": "a\n", "dir/b": "b\n"})
    m.build(ctx)
    # A stage built on a changed stage, or copying from one, names that stage, not its key.
    text = _explain(m, ctx, "--build-arg", "V=2")
    assert "RUN echo \"base $V\" > /base: cache miss: build arg V changed: '1' -> '2'" in text, text
    assert "COPY dir/ /dir/: cache miss: stage base changed (FROM)" in text, text
    assert "COPY --from=second /listing /listing: cache miss: stage second changed (--from)" in text, text
    assert "sha256:" not in text, text
    m.build(ctx, "--build-arg", "V=2")
    # Back on V=1 with a file now ignored: the step is compared with its build on the same
    # parent (V=1), so the ignored file is named, not the V=2 build's other base.
    (ctx / ".dockerignore").write_text("dir/b\n")
    text = _explain(m, ctx)
    assert "COPY dir/ /dir/: cache miss: file removed: dir/b" in text, text
    # --no-cache and --no-cache-filter: the flag is the reason, not "not built before".
    (ctx / ".dockerignore").unlink()
    text = _explain(m, ctx, "--no-cache")
    assert "[base 2/3] ARG V=1: cache miss: --no-cache" in text, text
    assert "not built before" not in text and "changed" not in text, text
    text = _explain(m, ctx, "--no-cache-filter", "second")
    assert text.splitlines() == ["[second 2/3] COPY dir/ /dir/: cache miss: --no-cache-filter second",
                                 "[second 3/3] RUN ls /dir > /listing: cache miss: --no-cache-filter second"], text
    built = m.build(ctx, "--no-cache-filter", "second")
    assert b"cache miss: --no-cache-filter second" in built.stdout + built.stderr
    # The same Dockerfile in another checkout directory: compared with the build from the first.
    other = tmp_path / "other-checkout"
    shutil.copytree(ctx, other)
    (other / "dir" / "a").write_text("a, edited\n")
    text = _explain(m, other)
    assert text.splitlines() == ["[second 2/3] COPY dir/ /dir/: cache miss: file changed (content): dir/a",
                                 "[stage-2 2/2] COPY --from=second /listing /listing: cache miss: "
                                 "stage second changed (--from)"], text


def test_explained_file_changes_of_a_bind_mount(machines, tmp_path: Path) -> None:
    """A bind mount's key holds owners too: each change is named for what it is."""
    m: Machine = machines()
    dockerfile = "FROM busybox:local\nRUN --mount=type=bind,target=/src cat /src/f /src/l > /out\n"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "f": "1\n", "g": "g\n"})
    (ctx / "f").chmod(0o644)
    (ctx / "l").symlink_to("f")
    step = "[stage-0 2/2] RUN --mount=type=bind,target=/src cat /src/f /src/l > /out: cache miss: "

    def change(edit, expected: str) -> None:  # type: ignore[no-untyped-def]
        m.build(ctx)
        edit()
        assert _explain(m, ctx).splitlines() == [step + expected]

    change(lambda: (ctx / "f").write_text("2\n"), "file changed (content): mount:/src:f")
    change(lambda: os.chown(ctx / "f", 7, 8), "file changed (owner, 0:0 -> 7:8): mount:/src:f")
    change(lambda: (ctx / "f").chmod(0o600), "file changed (mode, 644 -> 600): mount:/src:f")

    def retarget() -> None:
        (ctx / "l").unlink()
        (ctx / "l").symlink_to("g")
    change(retarget, "file changed (link target): mount:/src:l")


def test_explained_added_and_removed_steps(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", FILES)
    m.build(ctx)
    setup = 'RUN echo "base setup" > /setup.txt'
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace(setup, f"RUN echo inserted\n{setup}"))
    assert _explain(m, ctx).splitlines() == [
        f"[stage-0 3/9] RUN echo inserted: cache miss: new step before `{setup}`"]
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace(f"{setup}\n", ""))
    assert _explain(m, ctx).splitlines() == [
        f"[stage-0 3/7] COPY deps/ /deps/: cache miss: step `{setup}` removed"]
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("base setup", "base setup v2"))
    assert _explain(m, ctx).splitlines() == [
        f"[stage-0 3/8] RUN echo \"base setup v2\" > /setup.txt: cache miss: instruction changed: `{setup}` -> "
        "`RUN echo \"base setup v2\" > /setup.txt`"]


def test_explained_switch_of_the_stage_a_stage_builds_on(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    dockerfile = ("FROM busybox:local AS a\nRUN echo a > /a\nFROM busybox:local AS b\nRUN echo b > /b\n"
                  "FROM busybox:local\nRUN echo final > /f\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile})
    m.build(ctx)
    (ctx / "Dockerfile").write_text(dockerfile.replace("FROM busybox:local\n", "FROM a\n"))
    text = _explain(m, ctx)
    assert "[stage-2 2/2] RUN echo final > /f: cache miss: FROM changed: busybox:local@sha256:" in text, text
    assert text.rstrip().endswith(" -> stage a"), text
    m.build(ctx)
    (ctx / "Dockerfile").write_text(dockerfile.replace("FROM busybox:local\n", "FROM b\n"))
    text = _explain(m, ctx)
    assert "[stage-2 2/2] RUN echo final > /f: cache miss: FROM changed: stage a -> stage b" in text, text


def test_a_miss_never_shows_the_values_of_a_secret_build_arg(machines, tmp_path: Path) -> None:
    """The miss of a step whose secret-named build arg changed (a rotated token) says so, but
    shows neither token: the log of a CI job is read by many more than its image's history."""
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nARG GITHUB_TOKEN\nARG VERSION\n"
                                                         "RUN echo \"$VERSION\" > /v\n"})
    m.build(ctx, "--build-arg", "GITHUB_TOKEN=ghp_OLDTOKEN1", "--build-arg", "VERSION=1")
    for args in (("GITHUB_TOKEN=ghp_NEWTOKEN2", "VERSION=2"), ("VERSION=2",)):
        flags = [f for arg in args for f in ("--build-arg", arg)]
        for output in (_explain(m, ctx, *flags), (lambda p: (p.stdout + p.stderr).decode())(m.build(ctx, *flags))):
            assert "build arg GITHUB_TOKEN changed (values not shown" in output, output
            assert len(args) == 1 or "build arg VERSION changed: '1' -> '2'" in output, output  # not a secret
            assert "OLDTOKEN" not in output and "NEWTOKEN" not in output, output
