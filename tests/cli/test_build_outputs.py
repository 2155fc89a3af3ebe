"""What ``pybuild build`` writes where, as buildx does: stdout carries one archive and nothing
else, never a terminal; a directory output is never stdout; --metadata-file names the image."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers.tools import REPO, closed_port, run_pybuild


def test_an_archive_on_stdout_is_all_of_stdout(ctx: Path, tmp_path: Path) -> None:
    """`-q -o -` and `-o type=oci,dest=-`: the image ID goes to stderr, not after the archive."""
    root = tmp_path / "root"
    for args in (("-q", "-o", "-"), ("-o", "type=tar,dest=-"), ("-q", "-o", "type=oci,dest=-"),
                 ("-o", "type=tar")):  # buildx's default dest of an archive is stdout
        p = run_pybuild("build", *args, str(ctx), root=root, check=True)
        assert b"sha256:" not in p.stdout[-1024:], args
        assert b"sha256:" in p.stderr, args  # the ID is still shown
        with tarfile.open(fileobj=io.BytesIO(p.stdout)) as tf:
            names = tf.getnames()
        assert ("made" in names) if "oci" not in args[-1] else ("index.json" in names), (args, names)
        assert len(p.stdout) % 512 == 0, args  # tar blocks, nothing appended
    plain = run_pybuild("build", "-q", str(ctx), root=root, check=True)
    assert plain.stdout.startswith(b"sha256:") and plain.stderr == b""  # without an archive: as before


@pytest.mark.parametrize("outputs, message", [
    (("-o", "-", "-o", "type=oci,dest=-"), b"multiple outputs configured to write to stdout"),
    (("-o", "type=oci", "-o", "type=tar"), b"multiple outputs configured to write to stdout"),
    (("-o", "type=docker",), b"type=docker needs dest=FILE"),
    (("-o", "dest=out.tar",), b"type is required for output"),
    (("-o", "type=local,dest=-"), b"dest cannot be stdout for the local exporter"),
    (("--push",), b"push needs an image name"),
    # the ID written into the archive's stream (truncating a redirected file) made both unreadable
    (("-o", "-", "--iidfile", "/dev/stdout"), b"--iidfile /dev/stdout is stdout, where the tar archive goes"),
    (("-o", "type=oci,dest=-", "--metadata-file", "/dev/stdout"), b"--metadata-file /dev/stdout is stdout"),
])
def test_stdout_output_errors_come_before_the_build(ctx: Path, tmp_path: Path, outputs: tuple[str, ...],
                                                    message: bytes) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = run_pybuild("build", *outputs, str(ctx), root=tmp_path / "root", cwd=cwd,
                    env={"PYTHONPATH": str(REPO)})  # this checkout's pybuild, from another directory
    assert p.returncode == 125 and message in p.stderr and b"Traceback" not in p.stderr, p.stderr
    assert p.stdout == b"" and not list(cwd.iterdir())  # no directory named "-"


def test_an_archive_is_never_written_to_a_terminal(ctx: Path, tmp_path: Path) -> None:
    """buildx refuses a tar on a console; an output file is fine there."""
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}

    def on_terminal(*args: str) -> tuple[int, bytes, bytes]:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([sys.executable, "-m", "builder", "build", *args, str(ctx)], stdout=follower,
                                  stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=300)
            os.close(follower)
            shown = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other end is closed and drained
                    break
                if not chunk:
                    break
                shown += chunk
            return proc.returncode, shown, proc.stderr
        finally:
            os.close(leader)

    code, shown, err = on_terminal("-o", "type=tar,dest=-")
    assert code == 125 and b"refusing to write to console" in err and shown == b"", err
    code, shown, err = on_terminal("-q", "-o", f"type=tar,dest={tmp_path / 'out.tar'}")
    assert code == 0 and shown.strip().startswith(b"sha256:"), err
    assert (tmp_path / "out.tar").stat().st_size > 0


def test_metadata_file_names_the_output_s_names(ctx: Path, tmp_path: Path) -> None:
    """image.name is every name the image got (-t and -o type=image,name=...), as buildx's
    metadata has the exporter's name; an image given no name has no image.name."""
    root, meta = tmp_path / "root", tmp_path / "meta.json"
    run_pybuild("build", "-q", "-t", "meta-a:1", "-o", 'type=image,"name=meta-a:1,meta-b:1"',
                "--metadata-file", str(meta), str(ctx), root=root, check=True)
    assert json.loads(meta.read_text())["image.name"] == "meta-a:1,meta-b:1"
    run_pybuild("build", "-q", "-o", "type=image,name=meta-c:1", "--metadata-file", str(meta), str(ctx),
                root=root, check=True)
    assert json.loads(meta.read_text())["image.name"] == "meta-c:1"
    run_pybuild("build", "-q", "--metadata-file", str(meta), str(ctx), root=root, check=True)
    data = json.loads(meta.read_text())
    assert "image.name" not in data and data["containerimage.config.digest"].startswith("sha256:")


def test_a_failed_build_leaves_no_earlier_id_file(ctx: Path, tmp_path: Path) -> None:
    """docker removes --iidfile before it builds: a failed build must not leave the last build's
    ID for `docker push $(cat id)`; --metadata-file likewise. A symlinked ID file keeps its link."""
    root, iid, meta = tmp_path / "root", tmp_path / "iid", tmp_path / "meta.json"
    run_pybuild("build", "-q", "--iidfile", str(iid), "--metadata-file", str(meta), str(ctx), root=root, check=True)
    assert iid.read_text().startswith("sha256:") and meta.is_file()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY missing /missing\n")
    failed = run_pybuild("build", "-q", "--iidfile", str(iid), "--metadata-file", str(meta), str(ctx), root=root)
    assert failed.returncode == 1 and b"missing" in failed.stderr
    assert not iid.exists() and not meta.exists()
    target, link = tmp_path / "real-iid", tmp_path / "link-iid"
    target.write_text("stale")
    link.symlink_to(target)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made /made\n")
    built = run_pybuild("build", "-q", "--iidfile", str(link), str(ctx), root=root, check=True)
    assert link.is_symlink() and target.read_text() == built.stdout.decode().strip()


def test_dev_stdout_redirected_to_a_file_is_written_in_place(ctx: Path, tmp_path: Path) -> None:
    """`--iidfile /dev/stdout > out` and `-o type=tar,dest=/dev/stdout > out.tar`: /dev/stdout is
    then the file the shell opened; it is written in place (never removed or renamed over, which
    left a "out (deleted)" file and lost the rest of stdout), and an archive there is all of it."""
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}
    work = tmp_path / "work"
    work.mkdir()

    def build(*args: str, out: Path) -> subprocess.CompletedProcess[bytes]:
        with out.open("wb") as f:
            return subprocess.run([sys.executable, "-m", "builder", "build", "-q", *args, str(ctx)], stdout=f,
                                  stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=300, check=True)

    build("--iidfile", "/dev/stdout", out=work / "out")
    text = (work / "out").read_text()
    assert text.startswith("sha256:") and text.endswith("\n") and text.count("sha256:") == 1, text
    done = build("-o", "type=tar,dest=/dev/stdout", out=work / "out.tar")
    with tarfile.open(work / "out.tar") as tf:
        assert "made" in tf.getnames()
    assert (work / "out.tar").stat().st_size % 512 == 0 and b"sha256:" in done.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out", "out.tar"]


def test_source_date_epoch_is_every_exported_file_s_time(ctx: Path, tmp_path: Path) -> None:
    """With SOURCE_DATE_EPOCH, type=tar and type=local give every file that time, the base
    image's too and older ones too, as BuildKit's exporters of the file system set it (the
    base's files kept their own times)."""
    root, epoch = tmp_path / "root", 1_600_000_000
    os.utime(ctx / "made", (epoch - 10**6, epoch - 10**6))  # older than the epoch: set, not clamped
    (ctx / "newer").write_text("newer")  # made now: later than the epoch
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made newer /base/\n")
    run_pybuild("build", "-q", "-t", "epoch-base:1", str(ctx), root=root, check=True)  # no epoch here
    (ctx / "Dockerfile").write_text("FROM epoch-base:1\nCOPY made /child/made\n")
    env = {"SOURCE_DATE_EPOCH": str(epoch)}
    tar = tmp_path / "fs.tar"
    run_pybuild("build", "-q", "-o", f"type=tar,dest={tar}", "-o", str(tmp_path / "fs"), str(ctx), root=root,
                env=env, check=True)
    with tarfile.open(tar) as tf:
        times = {m.name: m.mtime for m in tf.getmembers()}
    assert set(times) == {"base", "base/made", "base/newer", "child", "child/made"}, times
    assert set(times.values()) == {epoch}, times
    local = {str(p.relative_to(tmp_path / "fs")): p.lstat().st_mtime for p in (tmp_path / "fs").rglob("*")}
    assert local.keys() == times.keys() and set(local.values()) == {epoch}, local


def test_an_image_output_s_annotations_are_on_the_image_it_names(ctx: Path, tmp_path: Path) -> None:
    """-o type=image,name=N,annotation.K=V: the image N names carries the annotation (as --annotation's
    does), so a later `pybuild push N` or save has it; it was only on a push of that output, and
    the image ID stays the same."""
    root = tmp_path / "root"
    built = run_pybuild("build", "-q", "-t", "annot:plain", "-o",
                        "type=image,name=annot:1,annotation.org.example.k=v1", str(ctx), root=root, check=True)
    image_id = built.stdout.decode().strip()
    run_pybuild("build", "-q", "-t", "annot:2", "-o", "type=image,annotation.org.example.k=v2", str(ctx),
                root=root, check=True)  # no name=: the -t names are the output's
    saved = run_pybuild("save", "--format", "oci", "annot:1", "annot:2", "annot:plain", root=root,
                        check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        def read(name: str) -> dict:
            f = tf.extractfile(name)
            assert f is not None
            return json.loads(f.read())

        manifests = {}
        for entry in read("index.json")["manifests"]:
            manifest = read("blobs/sha256/" + entry["digest"].removeprefix("sha256:"))
            manifests[entry["annotations"]["org.opencontainers.image.ref.name"]] = manifest
    assert manifests["1"]["annotations"]["org.example.k"] == "v1"
    assert manifests["2"]["annotations"]["org.example.k"] == "v2"
    assert {m["config"]["digest"] for m in manifests.values()} == {image_id}


def test_an_empty_output_is_no_output(ctx: Path, tmp_path: Path) -> None:
    """`-o "$OUT"` with OUT unset: buildx skips an empty --output; it exported into the current
    directory (a bare path "" read as ".")."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = run_pybuild("build", "-q", "-o", "", str(ctx), root=tmp_path / "root", cwd=cwd,
                    env={"PYTHONPATH": str(REPO)})
    assert p.returncode == 0 and p.stdout.startswith(b"sha256:"), p.stderr
    assert not list(cwd.iterdir())


@pytest.mark.parametrize("output", ["type=oci,dest=-", "type=docker,dest=-", "type=tar,dest=-"])
def test_an_archive_whose_reader_left_is_an_error(ctx: Path, tmp_path: Path, output: str) -> None:
    """`pybuild build -o - . | ssh host 'cat > x.tar'` where the reader dies: the archive it got is
    cut short, so the build fails (docker and buildx die of SIGPIPE); it exited 0 for oci and docker."""
    (ctx / "made").write_bytes(os.urandom(1 << 20))  # more than a pipe holds
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", "-o", output, str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 1, err
    assert err.endswith(b"to <stdout>: Broken pipe\n") and err.startswith(b"ERROR: cannot write the "), err


@pytest.mark.parametrize("output, code, message", [
    ("type=image,name=BAD", 125, b"invalid reference format: repository name (library/BAD) must be lowercase"),
    ("type=image,name=ok@sha256:" + "0" * 64, 1, b"cannot use a digest reference as a tag"),
    ("type=oci,dest={tmp}/out.tar,name=BAD", 125, b"invalid reference format"),
    # a docker archive naming it so was written, and docker load refused it: invalid tag
    ("type=docker,dest={tmp}/out.tar,name=ok@sha256:" + "0" * 64, 1, b"cannot use a digest reference as a tag"),
    ("type=oci,dest={tmp}/out.tar,name=ok@sha256:" + "0" * 64, 1, b"cannot use a digest reference as a tag"),
])
def test_output_names_are_checked_before_the_build(ctx: Path, tmp_path: Path, output: str, code: int,
                                                   message: bytes) -> None:
    """As -t's names: a bad -o name=... fails before any step runs, not after the whole build."""
    p = run_pybuild("build", "--progress", "plain", "-o", output.format(tmp=tmp_path), str(ctx),
                    root=tmp_path / "root")
    assert p.returncode == code and message in p.stderr and b"Traceback" not in p.stderr, p.stderr
    assert b"COPY made" not in p.stderr and not (tmp_path / "out.tar").exists()


def test_registry_output_with_push_false_does_not_push(ctx: Path, tmp_path: Path) -> None:
    """type=registry is type=image with push=true by default, as buildx reads it: an explicit
    push=false is honoured (nothing listens on the port: a push would fail), the default pushes."""
    root = tmp_path / "root"
    with closed_port() as port:
        name = f"127.0.0.1:{port}/outputs/nopush:1"
        # unpack=false: BuildKit's default, which buildx now sends with every push (pybuild unpacks anyway)
        kept = run_pybuild("build", "-q", "-o", f"type=registry,name={name},push=false,unpack=false", str(ctx),
                           root=root)
        assert kept.returncode == 0, kept.stderr
        assert json.loads(run_pybuild("inspect", name, root=root, check=True).stdout)[0]["Id"] == \
            kept.stdout.decode().strip()
        pushed = run_pybuild("build", "-q", "-o", f"type=registry,name={name}", str(ctx), root=root)
    assert pushed.returncode != 0 and b"127.0.0.1" in pushed.stderr and b"Traceback" not in pushed.stderr


def test_a_closed_stdout(ctx: Path, tmp_path: Path) -> None:
    """`pybuild build . >&-` builds (the ID has nowhere to go); an archive for stdout is refused."""
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}

    def build(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "builder", "build", "-q", *args, str(ctx)], stdout=None,
                              stderr=subprocess.PIPE, env=env, cwd=REPO, timeout=300, close_fds=True,
                              preexec_fn=lambda: os.close(1))

    done = build()
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    refused = build("-o", "type=tar,dest=-")
    assert refused.returncode == 125 and b"goes to stdout, which is closed" in refused.stderr, refused.stderr


def test_a_closed_stderr(ctx: Path, tmp_path: Path) -> None:
    """`pybuild build . 2>&-` builds as docker does: the progress has nowhere to go, the ID does."""
    env = {**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")}
    for args in ((), ("--progress", "plain"), ("--progress", "tty")):
        done = subprocess.run([sys.executable, "-m", "builder", "build", *args, str(ctx)], stdout=subprocess.PIPE,
                              env=env, cwd=REPO, timeout=300, preexec_fn=lambda: os.close(2))
        assert done.returncode == 0 and done.stdout.startswith(b"sha256:"), (args, done.returncode)
