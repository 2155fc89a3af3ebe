"""Trees the COPY/ADD tests share: a base image root, a build context, a loopback web server."""

from __future__ import annotations

import bz2
import functools
import gzip
import http.server
import lzma
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from builder.execute.context import BuildContext
from builder.execute.rootfs import RootfsView
from tests.helpers.tools import make_busybox_rootfs

IGNORE_FILE = "# comment\n*.log\nsecret/\n!secret/keep\n"


def make_base(target: Path) -> Path:
    """A busybox root with the traps COPY must handle: symlinked dirs, owned dirs, /proc tricks."""
    make_busybox_rootfs(target)
    (target / "usr/local").mkdir(parents=True)
    (target / "usr/local/bin").symlink_to("/usr/bin")
    (target / "existing").mkdir()
    os.chown(target / "existing", 1000, 1000)
    (target / "ex2").mkdir(mode=0o700)
    (target / "ex2").chmod(0o700)
    (target / "evil").symlink_to("/proc/self/root/..")
    (target / "fdlink").symlink_to("/proc/self/fd/3")
    (target / "up").symlink_to("../../../..")
    (target / "linkd").mkdir()
    (target / "linkd/sub").symlink_to("/usr")
    (target / "linkd/file").mkdir()
    (target / "linkd/file/old").write_text("old\n")
    (target / "sbox").write_text("#!/bin/sh\n")
    os.chown(target / "sbox", 1000, 1000)
    (target / "sbox").chmod(0o6755)
    (target / "sgdir").mkdir()
    (target / "sgdir").chmod(0o2755)
    (target / "sgdir/inner").mkdir()
    (target / "sgdir/inner").chmod(0o2775)
    os.chown(target / "sgdir/inner", 1000, 50)
    return target


def make_context(ctx: Path, outside: Path) -> Path:
    """A context with files, dirs, hardlinks, symlinks in and out, archives and ignored files."""
    (ctx / "dir/sub").mkdir(parents=True)
    (ctx / "d2").mkdir()
    (ctx / "f1").write_text("hello\n")
    (ctx / "dir/a").write_text("world\n")
    (ctx / "dir/sub/b").write_text("x\n")
    (ctx / "dir/lnk").symlink_to("a")
    os.link(ctx / "dir/a", ctx / "dir/hard")
    (ctx / "abslink").symlink_to("/etc/passwd")
    (ctx / "rellink").symlink_to("../../outside")
    (ctx / "dirlink").symlink_to("dir")
    (ctx / "f1link").symlink_to("f1")
    (ctx / "dir/sub").chmod(0o750)
    (ctx / "f1").chmod(0o600)
    (ctx / "d2/c").write_text("y\n")
    (ctx / "d2").chmod(0o711)
    (ctx / "x.log").write_text("l\n")
    (ctx / "secret").mkdir()
    (ctx / "secret/k").write_text("s\n")
    (ctx / "secret/keep").write_text("kept\n")
    (ctx / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (ctx / "run.sh").chmod(0o755)
    (ctx / ".dockerignore").write_text(IGNORE_FILE)
    (ctx / "tree/etc").mkdir(parents=True)
    (ctx / "tree/etc/newfile").write_text("new\n")
    (ctx / "tree/etc").chmod(0o700)
    (ctx / "empty").mkdir()
    (ctx / "suid").write_text("#!/bin/sh\n")
    (ctx / "suid").chmod(0o4755)
    for mode in (0o4755, 0o2755, 0o2745, 0o6755, 0o4644, 0o1777):
        (ctx / f"m{mode:o}").write_text("x\n")
        (ctx / f"m{mode:o}").chmod(mode)
    (ctx / "ovr/sub").mkdir(parents=True)
    (ctx / "ovr/sub/f").write_text("f\n")
    (ctx / "ovr/file").write_text("now a file\n")
    (ctx / "sgd/in").mkdir(parents=True)
    (ctx / "sgd/in").chmod(0o2755)
    (ctx / "sp ace").mkdir()
    (ctx / "sp ace/\u00fc.txt").write_text("unicode\n")
    os.chown(ctx / "dir/a", 1234, 1234)
    os.chown(ctx / "f1", 1234, 1234)
    outside.write_text("outside\n")
    # Archives, detected by content.
    arc = ctx.parent / "arc-src"
    (arc / "t/sub").mkdir(parents=True)
    (arc / "t/a").write_text("a\n")
    (arc / "t/sub/b").write_text("b\n")
    (arc / "t/l").symlink_to("a")
    os.link(arc / "t/a", arc / "t/h")
    for p in (arc / "t", arc / "t/a", arc / "t/sub", arc / "t/sub/b"):
        os.chown(p, 1234, 5678)
    os.lchown(arc / "t/l", 1234, 5678)
    (arc / "t/sub").chmod(0o700)
    with tarfile.open(ctx / "a.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(arc / "t", "t")
    raw = (ctx / "a.tar").read_bytes()
    (arc / "t").chmod(0o750)
    with tarfile.open(ctx / "dot.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(arc / "t", ".")  # a "./" entry: the archive's own root
    (arc / "t").chmod(0o755)
    (ctx / "a.tgz").write_bytes(gzip.compress(raw, mtime=0))
    (ctx / "a.txz").write_bytes(lzma.compress(raw))
    (ctx / "a.tbz").write_bytes(bz2.compress(raw))
    (ctx / "a.tzst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (ctx / "fake.tar.gz").write_text("notatar\n")
    return ctx


@pytest.fixture(scope="session")
def copy_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base(tmp_path_factory.mktemp("copybase") / "rootfs")


@pytest.fixture(scope="session")
def copy_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    top = tmp_path_factory.mktemp("copyctx")
    return make_context(top / "ctx", top / "outside")


@pytest.fixture
def fresh_base(copy_base: Path, tmp_path: Path) -> Path:
    """A private copy of the base root that a test may extract layers onto."""
    target = tmp_path / "root"
    subprocess.run(["cp", "-a", str(copy_base), str(target)], check=True)
    return target


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static web server on loopback: yields (base URL, served dir)."""
    root = tmp_path_factory.mktemp("www")
    (root / "file.txt").write_text("content\n")
    os.utime(root / "file.txt", (1577934245, 1577934245))
    (root / "dir").mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ctx(copy_context: Path) -> BuildContext:
    """The shared test context, as COPY and ADD read it."""
    return BuildContext.from_dir(copy_context)


@pytest.fixture
def base(copy_base: Path) -> RootfsView:
    """The shared base image's file system, as a COPY destination."""
    return RootfsView([copy_base])
