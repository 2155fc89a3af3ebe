"""Mistakes users make, and what they see: one clear message, the right exit code, no traceback,
nothing replaced or left behind (found by trying bad inputs against the CLI, 2026-12-04)."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pty
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import run_pybuild

SIMPLE = {"Dockerfile": "FROM busybox:local\nRUN echo hi > /hi\n"}


def _error(proc: subprocess.CompletedProcess[bytes], code: int = 1) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def _tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_output_paths_are_checked_before_the_build(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN echo ran-the-step\n"})
    cases = [
        (("-o", "type=docker,dest=/dev/full"), 'invalid output path: "/dev/full" must be a directory or a '
                                               "regular file: got a device"),
        (("-o", f"type=tar,dest={tmp_path}"), f'invalid output path: "{tmp_path}" is a directory'),
        (("-o", "type=local,dest=/etc/passwd"), 'invalid output path: "/etc/passwd" exists and is not a directory'),
        (("--iidfile", "/nonexistent/dir/id"), 'invalid output path: directory "/nonexistent/dir" does not exist'),
        (("--metadata-file", str(tmp_path)), f'invalid output path: "{tmp_path}" is a directory'),
        (("-t", "Bad:x"), "invalid reference format: repository name (library/Bad) must be lowercase"),
    ]
    for args, message in cases:
        proc = builder.build(ctx, "--no-cache", *args, check=False)
        err = _error(proc, 125 if args[0] == "-t" else 1)
        assert message in err, err
        assert b"ran-the-step" not in proc.stderr  # refused before any step ran
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    assert not Path("/nonexistent").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_small_outputs_write_through_to_stdout(builder: Builder) -> None:
    """``--iidfile /dev/stdout`` is a common CI idiom: written in place, not renamed over."""
    ctx = builder.context(SIMPLE)
    proc = builder.build(ctx, "-q", "--iidfile", "/dev/stdout")
    out = proc.stdout.decode()  # the ID from --iidfile (no newline, as docker writes it), then -q's line
    image_id = out.strip().split("sha256:")[-1]
    assert out == f"sha256:{image_id}sha256:{image_id}\n"


def test_a_context_that_is_a_file_or_a_dockerfile_that_is_a_directory(builder: Builder, docker: str) -> None:
    """docker's "unable to prepare context" errors exit 1, as docker's do: 125 is for flags that
    do not parse, and these parsed (a script tells the two apart by the status)."""
    ctx = builder.context(SIMPLE)
    err = _error(builder.build(ctx / "Dockerfile", check=False), 1)
    assert "unable to prepare context: context must be a directory:" in err
    odd = builder.context({"Dockerfile/x": "x"}, name="odd")
    assert "failed to read dockerfile:" in _error(builder.build(odd, check=False), 1)
    assert "is a directory" in _error(builder.build(ctx, "-f", str(ctx), check=False), 1)
    missing = ctx.parent / "no-such-context"
    for args in ((str(missing),), ("-f", str(ctx / "nope"), str(ctx)), ("-f", "-", "-")):
        ours = run_pybuild("build", "-q", *args, root=builder.root, input=b"FROM busybox:local\n")
        theirs = subprocess.run([docker, "build", "-q", *args], input=b"FROM busybox:local\n", capture_output=True,
                                env={**os.environ, "DOCKER_BUILDKIT": "0"})
        assert ours.returncode == theirs.returncode == 1, (args, ours.stderr, theirs.stderr)
        said = theirs.stderr.decode().strip().splitlines()[-1]
        assert said in _error(ours), (args, said)


@pytest.mark.parametrize("data, message", [
    (gzip.compress(_tar({"Dockerfile": b"FROM busybox:local\n" * 200}))[:60], "Compressed file ended"),
    (b"\x28\xb5\x2f\xfd" + b"garbage", "corrupt zstd"),
    (b"BZh91AY&SY" + b"\0" * 20, "cannot read the build context from the tar stream"),
])
def test_corrupt_compressed_context_on_stdin(builder: Builder, data: bytes, message: str) -> None:
    proc = run_pybuild("build", "-", root=builder.root, input=data)
    assert message in _error(proc)


def test_corrupt_archives_to_load_name_the_file_and_leave_nothing(builder: Builder, tmp_path: Path) -> None:
    root = tmp_path / "root"
    cases = {
        "trunc.tar.gz": (gzip.compress(_tar({"manifest.json": b"[]" * 5000}))[:100], "trunc.tar.gz: corrupt gzip data"),
        "bad.zst": (b"\x28\xb5\x2f\xfdgarbage", "bad.zst: corrupt zstd data"),
        "hi.gz": (gzip.compress(b"hello\n"), "hi.gz is not a tar archive"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert message in _error(run_pybuild("load", "-i", str(path), root=root))
    assert "stdin: corrupt zstd data" in _error(run_pybuild("load", root=root, input=b"\x28\xb5\x2f\xfdgarbage"))
    leftovers = [p for p in (root / "tmp").iterdir()] if (root / "tmp").exists() else []
    assert leftovers == []


def test_load_platform_must_match(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(SIMPLE)
    builder.build(ctx, "-t", "plat:1")
    archive = tmp_path / "plat.tar"
    run_pybuild("save", "-o", str(archive), "plat:1", root=builder.root, check=True)
    err = _error(run_pybuild("load", "-i", str(archive), "--platform", "linux/s390x", root=tmp_path / "r"))
    assert "has no image for platform linux/s390x" in err
    run_pybuild("load", "-i", str(archive), "--platform", "linux/amd64" if os.uname().machine == "x86_64"
                else "linux/arm64", root=tmp_path / "r", check=True)


@pytest.mark.parametrize("dockerfile, message", [
    ("FROM busybox:local\nCOPY --from=nonexistent-image-xyz /x /y\n",
     "Dockerfile:2: nonexistent-image-xyz is not a stage of this Dockerfile nor an image in the local store"),
    ("FROM busybox:local\nRUN --mount=type=bind,from=nostage-xyz,target=/m true\n",
     "Dockerfile:2: nostage-xyz is not a stage of this Dockerfile"),
    ("FROM busybox:local\nRUN --mount=type=bind,source=nope,target=/x true\n",
     "Dockerfile:2: RUN --mount=type=bind failed: file not found in build context"),
    ('FROM busybox:local\nRUN ["/nonexistent"]\n', 'Dockerfile:2: [2/2] RUN: '),
    ("FROM busybox:local\nUSER nosuchuser\nRUN true\n", "Dockerfile:3: [2/2] RUN: unable to find user"),
    ("ARG V\nFROM busybox$V:\n", "Dockerfile:2: base image 'busybox:': invalid reference format"),
    ("FROM --platform=bogus busybox:local\n", "Dockerfile:1: FROM --platform: invalid platform 'bogus'"),
])
def test_dockerfile_errors_name_the_line(builder: Builder, dockerfile: str, message: str) -> None:
    ctx = builder.context({"Dockerfile": dockerfile})
    err = _error(builder.build(ctx, env={"PYBUILD_REGISTRY_ATTEMPTS": "1"}, check=False))
    assert message in err, err



@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_mount_targets_the_image_cannot_take_name_the_line(builder: Builder, isolation: str) -> None:
    """A RUN --mount target under a file, a directory mounted over a file, a target through a
    symlink loop: the step's own error, at its line, as runc's mount errors are (and no host path
    of the chroot isolation's rootfs)."""
    cases = [
        ("RUN --mount=type=tmpfs,target=/etc/passwd/x true",
         "Dockerfile:2: [2/2] RUN: cannot mount on /etc/passwd/x in the image: /etc/passwd is not a directory"),
        ("RUN --mount=type=cache,target=/etc/passwd,id=over-a-file true",
         'to rootfs at "/etc/passwd"'),
        ("RUN ln -s /b /a && ln -s /a /b\nRUN --mount=type=tmpfs,target=/a/x true",
         "Dockerfile:3: [3/3] RUN: too many levels of symbolic links resolving /a/x in the image"),
    ]
    for run, message in cases:
        ctx = builder.context({"Dockerfile": f"FROM busybox:local\n{run}\n"}, f"mount-target-{isolation}")
        err = _error(builder.build(ctx, "--no-cache", "--isolation", isolation, check=False))
        assert message in err and "] RUN: " in err, err
        assert "/rootfs/" not in err, err

def test_missing_secret_file_fails_before_the_build(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN echo ran-the-step\n"})
    proc = builder.build(ctx, "--no-cache", "--secret", "id=s,src=/nonexistent/secret", check=False)
    assert "--secret id=s: cannot read /nonexistent/secret: no such file" in _error(proc, 125)
    assert b"ran-the-step" not in proc.stderr


def test_run_exit_codes_and_arguments(builder: Builder) -> None:
    ctx = builder.context(SIMPLE)
    builder.build(ctx, "-t", "errs:1")
    assert builder.run("errs:1", "/nonexistent-cmd", check=False).returncode == 127
    assert builder.run("errs:1", "/etc/passwd", check=False).returncode == 126
    assert builder.run("errs:1", "sh", "-c", "exit 3", check=False).returncode == 3
    err = _error(run_pybuild("run", "-w", "rel", "errs:1", "pwd", root=builder.root), 125)
    assert "the working directory 'rel' is invalid, it needs to be an absolute path" in err
    err = _error(run_pybuild("run", "-e", "=x", "errs:1", "true", root=builder.root), 125)
    assert 'invalid argument "=x" for "-e, --env" flag' in err


def test_cli_wording(builder: Builder) -> None:
    root = builder.root
    assert '"pybuild tag" requires exactly 2 arguments' in _error(run_pybuild("tag", "x", root=root), 125)
    assert '"pybuild run" requires at least 1 argument (IMAGE)' in _error(run_pybuild("run", root=root), 125)
    assert "did you mean `pybuild images`?" in _error(run_pybuild("imags", root=root), 125)
    for args in (("inspect", "-f", "{{.Nope"), ("images", "--format", "table {{.Bad")):
        err = _error(run_pybuild(*args, *(["busybox:local"] if args[0] == "inspect" else []), root=root), 125)
        assert "template parsing error" in err and "unclosed action" in err


def test_interrupted_steps_say_canceled_not_failed(builder: Builder) -> None:
    """Ctrl-C (or another stage's failure) stops a step: BuildKit shows it CANCELED, not a failure."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local AS a\nRUN sleep 20\nFROM busybox:local AS b\n"
                                          "RUN sleep 1; exit 3\nFROM busybox:local\nCOPY --from=a /etc/passwd /a\n"
                                          "COPY --from=b /etc/passwd /b\n"})
    err = _error(builder.build(ctx, "--no-cache", check=False))
    assert "CANCELED" in err and '"/bin/sh -c sleep 20" did not' not in err
    assert 'ERROR: failed to solve: process "/bin/sh -c sleep 1; exit 3" did not complete successfully: exit code: 3' in err


@pytest.mark.parametrize("data, message", [
    ("FROM busybox:local\nRUN true\n".encode("utf-16"), "the Dockerfile is UTF-16 encoded"),
    (b"\x7fELF\x02\x01\x01\0\0\0", "the Dockerfile is not UTF-8 text (is it a binary file?)"),
])
def test_dockerfiles_that_are_not_text(builder: Builder, data: bytes, message: str) -> None:
    ctx = builder.context({"Dockerfile": data})
    assert message in _error(builder.build(ctx, check=False))


def test_a_relative_store_root_works(builder: Builder, tmp_path: Path) -> None:
    """--root ./st (or PYBUILD_ROOT=st): runtimes and overlay options need it absolute."""
    archive = tmp_path / "base.tar"
    run_pybuild("save", "-o", str(archive), "busybox:local", root=builder.root, check=True)
    run_pybuild("--root", "st", "load", "-i", str(archive), cwd=tmp_path, check=True)
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN echo ok > /ok\n"})
    run_pybuild("build", "-q", str(ctx), env={"PYBUILD_ROOT": "st"}, cwd=tmp_path, check=True)


def test_a_foreign_syntax_directive_is_named_not_silently_ignored(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "# syntax=example.com/frontend:1\nFROM busybox:local\n"})
    err = builder.build(ctx).stderr.decode()
    assert "Dockerfile:1: the syntax directive names the frontend example.com/frontend:1" in err
    ctx = builder.context({"Dockerfile": "# syntax=docker/dockerfile:1.7\nFROM busybox:local\n"}, name="ok")
    assert "syntax directive" not in builder.build(ctx).stderr.decode()


def test_progress_tty_needs_a_terminal(builder: Builder) -> None:
    """As buildx: --progress=tty into a pipe is refused rather than filling a CI log with redraws."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN echo ran-the-step > /x\n"})
    proc = builder.build(ctx, "--progress", "tty", check=False)
    err = _error(proc, 125)
    assert "--progress=tty needs a terminal on stderr" in err and "ran-the-step" not in err
    leader, follower = pty.openpty()
    env = {**os.environ, "PYBUILD_ROOT": str(builder.root)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "tty", "--no-cache",
                             str(ctx)], stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the build closes the terminal
        while chunk := os.read(leader, 65536):
            drawn += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, drawn
    assert b"\r" in drawn and b"writing image sha256:" in drawn


def test_paths_linux_cannot_create_are_refused_with_the_line(builder: Builder) -> None:
    """A name over 255 bytes or a path over 4095 in COPY's dest (or below it) and WORKDIR: docker
    fails on them with the store's own path in an lstat error; pybuild names the line and the
    limit, and never writes a layer that no one could unpack (a deep path came through)."""
    long_name, deep = "a" * 300, "/".join(["b" * 250] * 20)
    cases = [
        (f"COPY f /{long_name}/\n", "Dockerfile:2: COPY failed: '/aaaaaaaa", "a file name can be at most 255 bytes"),
        (f"COPY f /new/{long_name}\n", "Dockerfile:2: COPY failed: '/new/aaaa", "a file name can be at most 255"),
        (f"COPY f /{deep}/\n", "Dockerfile:2: COPY failed: '/bbbb", "a path can be at most 4095 bytes"),
        (f"WORKDIR /w/{long_name}\n", "Dockerfile:2: WORKDIR /w/aaaa", "a file name can be at most 255 bytes"),
    ]
    for line, where, why in cases:
        ctx = builder.context({"Dockerfile": "FROM busybox:local\n" + line, "f": "f\n"})
        err = _error(builder.build(ctx, "--no-cache", check=False))
        assert where in err and why in err, err
        assert "snapshots" not in err, err  # no store path in the message


@pytest.mark.parametrize("planted", ["Dockerfile", ".dockerignore", "huge Dockerfile"])
def test_a_context_whose_dockerfile_or_ignore_file_is_a_device_is_one_clear_error(
        builder: Builder, tmp_path: Path, planted: str) -> None:
    """A cloned repository may hold ``Dockerfile -> /dev/zero`` (git keeps symlinks): read whole,
    it ate memory until an internal error (or the OOM killer). A device, or a file too large to
    be a Dockerfile, is refused by what it is; a pipe (``-f <(...)``) still reads."""
    import resource

    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"}, name=f"ctx-{planted.replace(' ', '-')}")
    if planted == "huge Dockerfile":
        with open(ctx / "Dockerfile", "wb") as f:
            f.truncate(40 << 20)
    else:
        (ctx / planted).unlink(missing_ok=True)
        (ctx / planted).symlink_to("/dev/zero")
        if planted == ".dockerignore":
            (ctx / "Dockerfile").write_text("FROM busybox:local\n")

    def limit_memory() -> None:  # a regression must fail here, not starve the machine
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    proc = subprocess.run([sys.executable, "-m", "builder", "build", "-q", str(ctx)], capture_output=True,
                          env={**os.environ, "PYBUILD_ROOT": str(builder.root)}, timeout=120,
                          preexec_fn=limit_memory)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "internal error" not in err, err
    said = "larger than 32 MiB" if planted == "huge Dockerfile" else "it is a device, not a file"
    assert err.startswith("ERROR: ") and said in err and err.count("ERROR") == 1, err
    if planted == "Dockerfile":  # a pipe is no device: -f /dev/stdin (or <(...)) builds
        piped = subprocess.run([sys.executable, "-m", "builder", "build", "-q", "-f", "/dev/stdin", str(ctx)],
                               input=b"FROM busybox:local\n", capture_output=True, timeout=120,
                               env={**os.environ, "PYBUILD_ROOT": str(builder.root)}, preexec_fn=limit_memory)
        assert piped.returncode == 0, piped.stderr.decode()
