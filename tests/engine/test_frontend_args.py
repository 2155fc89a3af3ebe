"""Build args BuildKit's frontend reads itself: SOURCE_DATE_EPOCH, BUILDKIT_SANDBOX_HOSTNAME,
BUILDKIT_CACHE_MOUNT_NS and BUILDKIT_CONTEXT_KEEP_GIT_DIR."""

from __future__ import annotations

import json
import os
import uuid

from tests.engine.conftest import Builder
from tests.helpers.tools import run_pybuild


def _out(proc) -> str:  # type: ignore[no-untyped-def]
    return proc.stdout.decode().strip()


def test_source_date_epoch_as_a_build_arg(builder: Builder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /x\n"}, "sde")
    args = ("--no-cache", "-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    first, second = (_out(builder.build(ctx, *args, env={k: v for k, v in os.environ.items()})) for _ in range(2))
    assert first == second
    info = json.loads(run_pybuild("inspect", first, root=builder.root, check=True).stdout)[0]
    assert info["Created"].startswith("2023-11-14T22:13:20")
    warned = builder.build(ctx, "--build-arg", "SOURCE_DATE_EPOCH=1700000000")
    assert b"not consumed" not in warned.stderr


def test_sandbox_hostname(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN (hostname; grep -c builder-7 /etc/hosts; true) > /h "
                                         f"# {uuid.uuid4().hex}\n"}, "hostname")
    builder.build(ctx, "-t", "frontend-args:default")
    assert builder.run("frontend-args:default", "cat", "/h").stdout == b"buildkitsandbox\n0\n"
    named = builder.build(ctx, "-t", "frontend-args:named", "--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=builder-7")
    assert b"CACHED" not in named.stderr.split(b"RUN", 1)[1]  # another hostname: another step
    assert builder.run("frontend-args:named", "cat", "/h").stdout == b"builder-7\n1\n"


def test_cache_mount_namespace(builder: Builder) -> None:
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           f"RUN --mount=type=cache,target=/c (cat /c/{marker} || echo none) > /seen && "
                           f"echo here > /c/{marker}\n"}, "cache-ns")

    def seen(*args: str) -> bytes:
        builder.build(ctx, "--no-cache", "-t", "frontend-args:ns", *args)
        return builder.run("frontend-args:ns", "cat", "/seen").stdout

    assert seen() == b"none\n"
    assert seen() == b"here\n"
    assert seen("--build-arg", "BUILDKIT_CACHE_MOUNT_NS=team-a") == b"none\n"  # a namespace of its own
    assert seen("--build-arg", "BUILDKIT_CACHE_MOUNT_NS=team-a") == b"here\n"


def test_context_keep_git_dir(builder: Builder, git_daemon: str) -> None:
    dockerfile = b"FROM busybox:local\nCOPY . /ctx\nRUN test -d /ctx/.git && echo kept > /r || echo dropped > /r\n"
    for args, expected in (((), b"dropped\n"), (("--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1"), b"kept\n")):
        image = _out(run_pybuild("build", "-q", "-f", "-", *args, f"{git_daemon}#main", root=builder.root,
                                 input=dockerfile, check=True))
        assert builder.run(image, "cat", "/r").stdout == expected
