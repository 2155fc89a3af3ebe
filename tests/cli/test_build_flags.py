"""``pybuild build``'s flags as docker's CLI takes them, defaults from the environment included:
a flag that changes the result is honoured or refused, never silently dropped."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from builder.image.platform import Platform
from tests.helpers.tools import run_pybuild


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A context that needs no base image (FROM scratch, COPY only)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made /made\n")
    (ctx / "made").write_text(uuid.uuid4().hex)
    return ctx


def test_buildkit_progress_is_the_default_progress(ctx: Path, tmp_path: Path) -> None:
    """BUILDKIT_PROGRESS sets --progress's default, as docker's and buildx's CLIs read it; the flag
    wins over it, and a mode pybuild does not have is an error naming the variable."""
    root = tmp_path / "root"
    quiet = run_pybuild("build", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "quiet"}, check=True)
    assert quiet.stderr == b"" and quiet.stdout.startswith(b"sha256:")
    plain = run_pybuild("build", "--progress", "plain", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "quiet"},
                        check=True)
    assert b"#2 [stage-0 2/2] COPY made /made" in plain.stderr
    bad = run_pybuild("build", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "fancy"})
    assert bad.returncode == 125 and b"invalid BUILDKIT_PROGRESS 'fancy'" in bad.stderr
    assert b"Traceback" not in bad.stderr


def test_docker_default_platform_is_the_default_platform(ctx: Path, tmp_path: Path) -> None:
    """DOCKER_DEFAULT_PLATFORM is --platform's default in docker build: another platform than the
    host's is refused as --platform's is (never a host build that ignores it); --platform wins over
    it; buildx's `local` is the host's platform."""
    root, host = tmp_path / "root", Platform.host()
    other = "linux/arm64" if host.architecture != "arm64" else "linux/amd64"
    p = run_pybuild("build", "-q", str(ctx), root=root, env={"DOCKER_DEFAULT_PLATFORM": other})
    assert p.returncode == 125 and f"DOCKER_DEFAULT_PLATFORM={other}".encode() in p.stderr, p.stderr
    assert p.stdout == b"" and b"Traceback" not in p.stderr
    for args, env in (((), str(host)), (("--platform", str(host)), other), (("--platform", "local"), "")):
        done = run_pybuild("build", "-q", *args, str(ctx), root=root, env={"DOCKER_DEFAULT_PLATFORM": env})
        assert done.returncode == 0 and done.stdout.startswith(b"sha256:"), (args, env, done.stderr)
