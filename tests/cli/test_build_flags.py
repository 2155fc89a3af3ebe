"""``pybuild build``'s flags as docker's CLI takes them, defaults from the environment included:
a flag that changes the result is honoured or refused, never silently dropped."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from builder.image.platform import Platform
from tests.helpers.tools import run_pybuild


def test_buildkit_progress_is_the_default_progress(ctx: Path, tmp_path: Path) -> None:
    """BUILDKIT_PROGRESS sets --progress's default, as docker's and buildx's CLIs read it; the flag
    wins over it, and a mode pybuild does not have is an error naming the variable."""
    root = tmp_path / "root"
    quiet = run_pybuild("build", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "quiet"}, check=True)
    assert quiet.stderr == b"" and quiet.stdout.startswith(b"sha256:")
    plain = run_pybuild("build", "--progress", "plain", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "quiet"},
                        check=True)
    assert b"#1 [1/1] COPY made /made" in plain.stderr
    tty = run_pybuild("build", str(ctx), root=root, env={"BUILDKIT_PROGRESS": "tty"})  # stderr is a pipe here
    assert tty.returncode == 125 and b"BUILDKIT_PROGRESS=tty (in the environment) needs a terminal" in tty.stderr
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


def test_no_cache_filter_takes_a_comma_list(tmp_path: Path) -> None:
    """`--no-cache-filter a,b` is stages a and b (buildx joins the flags with commas and BuildKit
    splits them), not one stage named "a,b" that matches nothing and leaves both cached."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "made").write_text(uuid.uuid4().hex)
    (ctx / "Dockerfile").write_text("".join(f"FROM scratch AS {s}\nCOPY made /{s}\n" for s in "abc")
                                    + "FROM scratch\nCOPY --from=a /a /\nCOPY --from=b /b /\nCOPY --from=c /c /\n")
    root = tmp_path / "root"
    run_pybuild("build", "-q", str(ctx), root=root, check=True)
    for flags in (("--no-cache-filter", "a,b"), ("--no-cache-filter", "a", "--no-cache-filter", "b")):
        log = run_pybuild("build", "--progress", "plain", *flags, str(ctx), root=root, check=True).stderr.decode()
        steps = {line.split()[0]: line for line in log.splitlines() if " COPY made " in line}
        cached = {steps[n].split()[1].strip("[") for n in steps if f"{n} CACHED" in log}
        assert cached == {"c"}, (flags, log)


@pytest.mark.parametrize("flags", [
    ("--provenance=false",), ("--sbom=false",), ("--provenance", "0"), ("--provenance=mode=max,disabled=true",),
    ("--attest", "type=provenance,disabled=true", "--attest", "type=sbom,disabled=true"), ("--isolation", "default"),
])
def test_buildx_flags_that_turn_off_what_pybuild_never_makes_are_taken(ctx: Path, tmp_path: Path,
                                                                       flags: tuple[str, ...]) -> None:
    """CI scripts give buildx --provenance=false / --sbom=false (and docker's Linux --isolation
    default): these build as without them (tests/engine/test_attestations.py pins the rest)."""
    p = run_pybuild("build", "-q", *flags, str(ctx), root=tmp_path / "root")
    assert p.returncode == 0 and p.stdout.startswith(b"sha256:"), p.stderr


