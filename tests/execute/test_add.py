"""ADD: local archives unpacked (by content), URLs downloaded, git repositories cloned."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.errors import CopyError, SourceLocation
from builder.execute.add import clone
from builder.execute.context import BuildContext
from builder.execute.copy import CopySpec, copy_layer
from builder.execute.rootfs import RootfsView
from builder.execute.urls import is_git_source, is_url
from tests.helpers.tools import closed_port, require_tool

LOC = SourceLocation("Dockerfile", 3)


def add(*sources: str, dest: str, **kw: object) -> CopySpec:
    return CopySpec(sources=tuple(sources), dest=dest, is_add=True, location=LOC, **kw)  # type: ignore[arg-type]


def layer(s: CopySpec, source: BuildContext | None, dest: RootfsView, tmp: Path) -> dict[str, SimpleNamespace]:
    buf = io.BytesIO()
    copy_layer(s, source=source, dest_view=dest, out=buf, workdir=tmp)
    buf.seek(0)
    out = {}
    with tarfile.open(fileobj=buf) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            out[m.name] = SimpleNamespace(
                mode=m.mode, uid=m.uid, gid=m.gid, mtime=m.mtime, linkname=m.linkname, data=data,
                isdir=m.isdir, isfile=m.isfile, issym=m.issym, islnk=m.islnk,
            )
    assert list(tmp.iterdir()) == []  # downloads, clones and unpacked archives are removed
    return out


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "scratch"
    path.mkdir()
    return path


# -- archives -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.tar", "a.tgz", "a.tbz", "a.txz", "a.tzst"])
def test_archives_are_unpacked_keeping_their_owners(
    ctx: BuildContext, base: RootfsView, scratch: Path, name: str
) -> None:
    out = layer(add(name, dest="/t/"), ctx, base, scratch)
    assert (out["t"].uid, out["t"].mode) == (0, 0o755)
    assert (out["t/t/a"].uid, out["t/t/a"].gid) == (1234, 5678)  # the tar's owners
    assert out["t/t/sub"].mode == 0o700
    assert out["t/t/l"].issym() and out["t/t/l"].linkname == "a"
    assert out["t/t/h"].islnk() and out["t/t/h"].linkname == "t/t/a"
    assert out["t/t/sub/b"].data == b"b\n"


def test_chown_owns_what_an_archive_unpacks(ctx: BuildContext, base: RootfsView, scratch: Path) -> None:
    """BuildKit: with --chown every entry of the archive, and the dest it makes, are the user's
    (docker's classic builder kept the tar's owners); modes stay as written, setuid included."""
    out = layer(add("a.tar", dest="/t/", chown="app"), ctx, base, scratch)
    assert {n: (e.uid, e.gid) for n, e in out.items()} == {n: (1000, 1000) for n in out}
    assert out["t/t/sub"].mode == 0o700


def test_chmod_leaves_an_unpacked_archive_as_written(ctx: BuildContext, base: RootfsView, scratch: Path) -> None:
    """BuildKit unpacks an ADD archive without --chmod (docker's builder has no --chmod): a
    0600 applied to its directories left them untraversable."""
    out = layer(add("a.tar", "fake.tar.gz", dest="/t/", chmod="0600"), ctx, base, scratch)
    assert out["t/t"].mode == 0o755 and out["t/t/sub"].mode == 0o700 and out["t/t/a"].mode == 0o644
    assert out["t/fake.tar.gz"].mode == 0o600  # a file that is no archive is copied, and chmodded


def test_an_archive_path_linux_cannot_hold_is_refused(base: RootfsView, scratch: Path, tmp_path: Path) -> None:
    """A 5000-byte path in an archive: an error naming it, never a layer without the file."""
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    with tarfile.open(ctx_dir / "deep.tar", "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("/".join(["y" * 200] * 25))
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(CopyError, match=r"ADD failed: a path is longer than Linux allows \(255 bytes a name, "
                                        r"4095 a path\): '\.\.\.y+'"):
        layer(add("deep.tar", dest="/u/"), BuildContext.from_dir(ctx_dir), base, scratch)


def test_not_an_archive_by_content_is_copied(ctx: BuildContext, base: RootfsView, scratch: Path) -> None:
    out = layer(add("fake.tar.gz", dest="/t/"), ctx, base, scratch)
    assert out["t/fake.tar.gz"].data == b"notatar\n"


def test_unpack_false_copies_the_archive(ctx: BuildContext, base: RootfsView, scratch: Path) -> None:
    out = layer(add("a.tgz", dest="/t/", unpack=False), ctx, base, scratch)
    assert out["t/a.tgz"].isfile() and "t/t" not in out


def test_copy_never_unpacks(ctx: BuildContext, base: RootfsView, scratch: Path) -> None:
    s = CopySpec(sources=("a.tar",), dest="/t/", location=LOC)
    out = layer(s, ctx, base, scratch)
    assert out["t/a.tar"].isfile()


def _archive(path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for info in entries:
            body = data.get(info.name)
            if body is not None:
                info.size = len(body)
            tar.addfile(info, io.BytesIO(body) if body is not None else None)


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


@pytest.mark.parametrize("entries, data", [
    ([_info("../evil")], {"../evil": b"x"}),
    ([_info("h", tarfile.LNKTYPE, "/etc/passwd")], {}),
])
def test_archive_escapes_are_refused(
    tmp_path: Path, base: RootfsView, scratch: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes]
) -> None:
    root = tmp_path / "c"
    root.mkdir()
    _archive(root / "evil.tar", entries, data)
    with pytest.raises(CopyError, match=r"Dockerfile:3: ADD failed: unpacking 'evil.tar'"):
        layer(add("evil.tar", dest="/x/"), BuildContext.from_dir(root), base, scratch)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("entries, data, written", [
    ([_info("l", tarfile.SYMTYPE, "/etc"), _info("l/passwd")], {"l/passwd": b"x"}, "x/etc/passwd"),
    ([_info("l", tarfile.SYMTYPE, "../../.."), _info("l/evil")], {"l/evil": b"x"}, "x/evil"),
    ([_info("data", tarfile.DIRTYPE), _info("l", tarfile.SYMTYPE, "/data"), _info("l/f")], {"l/f": b"x"},
     "x/data/f"),
])
def test_archive_links_resolve_inside_the_destination(
    tmp_path: Path, base: RootfsView, scratch: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes],
    written: str,
) -> None:
    """As docker, which unpacks an ADD archive in a chroot of the destination: a link the
    archive writes through resolves there (a rootfs tarball's absolute links), never outside."""
    root = tmp_path / "c"
    root.mkdir()
    _archive(root / "evil.tar", entries, data)
    out = layer(add("evil.tar", dest="/x/"), BuildContext.from_dir(root), base, scratch)
    assert out[written].data == b"x"
    assert out["x/l"].issym()
    assert not (tmp_path / "evil").exists()


# -- URLs -------------------------------------------------------------------------------------


def test_url_download(base: RootfsView, scratch: Path, web: tuple[str, Path]) -> None:
    url, _ = web
    out = layer(add(f"{url}/file.txt", dest="/u/"), None, base, scratch)
    f = out["u/file.txt"]
    assert (f.mode, f.uid, f.data, f.mtime) == (0o600, 0, b"content\n", 1577934245)
    out = layer(add(f"{url}/file.txt", dest="/u/named", chown="app"), None, base, scratch)
    assert (out["u/named"].uid, out["u"].uid) == (1000, 1000)
    out = layer(add(f"{url}/file.txt", dest="/existing"), None, base, scratch)
    assert "existing/file.txt" in out


def test_a_loopback_url_is_not_sent_to_the_environment_s_proxy(
    base: RootfsView, scratch: Path, web: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy set for the outside world (a CI runner's HTTP_PROXY) is not asked for
    http://127.0.0.1 or localhost, as docker and BuildKit (Go's ProxyFromEnvironment) never
    proxy loopback: the download failed with the proxy's refusal."""
    url, _ = web
    with closed_port() as port:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
        for where in (url, url.replace("127.0.0.1", "localhost")):
            out = layer(add(f"{where}/file.txt", dest="/u/"), None, base, scratch)
            assert out["u/file.txt"].data == b"content\n"


def test_url_archives_are_not_unpacked(
    base: RootfsView, scratch: Path, web: tuple[str, Path], copy_context: Path
) -> None:
    url, served = web
    shutil.copy(copy_context / "a.tgz", served / "b.tgz")
    out = layer(add(f"{url}/b.tgz", dest="/u/"), None, base, scratch)
    assert out["u/b.tgz"].isfile() and out["u/b.tgz"].mode == 0o600


def test_url_unpack_on_request(
    base: RootfsView, scratch: Path, web: tuple[str, Path], copy_context: Path
) -> None:
    url, served = web
    shutil.copy(copy_context / "a.txz", served / "c.txz")
    out = layer(add(f"{url}/c.txz", dest="/u/", unpack=True), None, base, scratch)
    assert out["u/t/a"].data == b"a\n" and "u/c.txz" not in out


def test_url_checksum(base: RootfsView, scratch: Path, web: tuple[str, Path]) -> None:
    url, _ = web
    good = "sha256:" + hashlib.sha256(b"content\n").hexdigest()
    out = layer(add(f"{url}/file.txt", dest="/c", checksum=good), None, base, scratch)
    assert out["c"].data == b"content\n"
    bad = "sha256:" + "0" * 64
    with pytest.raises(CopyError, match=r"ADD failed: checksum of .*/file.txt does not match: expected sha256:0+, got " + good):
        layer(add(f"{url}/file.txt", dest="/c", checksum=bad), None, base, scratch)
    with pytest.raises(CopyError, match="invalid --checksum=md5:abc"):
        layer(add(f"{url}/file.txt", dest="/c", checksum="md5:abc"), None, base, scratch)
    # A hex of the wrong length is no digest (BuildKit's digest.Parse): refused, not downloaded
    # and then reported as a mismatch.
    for short in ("sha256:abc", "sha512:" + "0" * 64):
        with pytest.raises(CopyError, match=f"invalid --checksum={short}: expected sha256:<hex>"):
            layer(add(f"{url}/missing", dest="/c", checksum=short), None, base, scratch)


def test_url_errors(base: RootfsView, scratch: Path, web: tuple[str, Path], ctx: BuildContext) -> None:
    url, _ = web
    with pytest.raises(CopyError, match=r"Dockerfile:3: ADD failed: downloading .*/missing: HTTP 404"):
        layer(add(f"{url}/missing", dest="/m"), None, base, scratch)
    with closed_port() as port, pytest.raises(CopyError, match=rf"downloading http://127\.0\.0\.1:{port}/x"):
        layer(add(f"http://127.0.0.1:{port}/x", dest="/m"), None, base, scratch)
    with pytest.raises(CopyError, match="checksum requires HTTP\\(S\\) or Git sources"):
        layer(add("f1", dest="/m", checksum="sha256:" + "0" * 64), ctx, base, scratch)
    with pytest.raises(CopyError, match="checksum can't be specified for multiple sources"):
        layer(add(f"{url}/file.txt", f"{url}/file.txt", dest="/m/", checksum="sha256:" + "0" * 64),
              ctx, base, scratch)


def test_a_download_is_named_from_the_url_path_only(base: RootfsView, scratch: Path) -> None:
    """As BuildKit names it: the URL path's last element (``/dir/`` names ``dir``), else
    ``__unnamed__``; the server's Content-Disposition never counts. docker's classic builder read
    that header and failed without one, where ``docker build`` (BuildKit) builds."""
    from tests.helpers.fileserver import serve_files

    # (the HTTP client may send /%2e%2e as /.. and /x/. as /x/: the server answers all of them)
    served = dict.fromkeys(("/", "/dir/", "/a/b.txt", "/%2e%2e", "/%2E%2E", "/..", "/x/.", "/x/",
                            "/q?name=z.txt"), b"payload\n")
    for evil in ("..", ".", "../../etc/passwd", "a/b", "ok.txt"):
        headers = {"Content-Disposition": f'attachment; filename="{evil}"'}
        with serve_files(served, headers) as url:
            for path, named in (("/", "__unnamed__"), ("/dir/", "dir"), ("/a/b.txt", "b.txt"),
                                ("/%2e%2e", "__unnamed__"), ("/x/.", "__unnamed__"), ("/q?name=z.txt", "q")):
                out = layer(add(f"{url}{path}", dest="/u/"), None, base, scratch)
                assert sorted(out) == ["u", f"u/{named}"] and out[f"u/{named}"].data == b"payload\n"
            out = layer(add(f"{url}/", dest="/u/file"), None, base, scratch)
            assert out["u/file"].data == b"payload\n"


# -- git ----------------------------------------------------------------------------------------


def test_git_clone(base: RootfsView, scratch: Path, git_daemon: str) -> None:
    url = git_daemon
    out = layer(add(url, dest="/src/"), None, base, scratch)
    assert out["src/README"].data == b"v2\n"
    assert not any(name.startswith("src/.git") for name in out)
    out = layer(add(url + "#v1", dest="/src/", keep_git_dir=True), None, base, scratch)
    assert out["src/README"].data == b"v1\n"
    assert "src/.git/HEAD" in out
    out = layer(add(url + "#v1:src", dest="/s/", chown="app"), None, base, scratch)
    assert sorted(n for n in out if n.startswith("s")) == ["s", "s/main.c"]
    assert out["s/main.c"].uid == 1000


def test_git_exclude(base: RootfsView, scratch: Path, git_daemon: str) -> None:
    """BuildKit copies a git source with the --exclude patterns (relative to the repository)."""
    out = layer(add(git_daemon + "#v1", dest="/x/", excludes=("src",)), None, base, scratch)
    assert sorted(out) == ["x", "x/README"]
    out = layer(add(git_daemon + "#v1", dest="/x/", excludes=("**/*.c",)), None, base, scratch)
    assert sorted(out) == ["x", "x/README", "x/src"]
    out = layer(add(git_daemon + "#v1:src", dest="/x/", excludes=("*.c",)), None, base, scratch)
    assert sorted(out) == ["x"]


def test_git_checksum_pins_the_commit(base: RootfsView, scratch: Path, git_repo: Path,
                                      git_daemon: str) -> None:
    git = require_tool("git")
    head = subprocess.run(
        [git, "rev-parse", "v1"], cwd=git_repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    out = layer(add(f"{git_daemon}#v1", dest="/g/", checksum=head), None, base, scratch)
    assert out["g/README"].data == b"v1\n"
    with pytest.raises(CopyError, match=f"expected commit {head[:12]}, got "):
        layer(add(git_daemon, dest="/g/", checksum=head[:12]), None, base, scratch)
    with pytest.raises(CopyError, match="expected a commit hash"):
        layer(add(git_daemon, dest="/g/", checksum="sha256:00"), None, base, scratch)


def test_git_over_the_network(base: RootfsView, scratch: Path, git_daemon: str) -> None:
    out = layer(add(git_daemon + "#v1", dest="/n/"), None, base, scratch)
    assert out["n/README"].data == b"v1\n"


def test_git_transports_that_run_commands_are_refused(base: RootfsView, scratch: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Not a git source for ADD at all (it is a missing local file)...
    with pytest.raises(CopyError):
        layer(add(f"ext::sh -c touch% {marker}", dest="/g/"), None, base, scratch)
    # ...and git itself is not allowed the ext:: transport (e.g. from a submodule).
    with pytest.raises(CopyError, match="git fetch failed"):
        clone(f"ext::sh -c touch% {marker}", add("x", dest="/g/"), scratch)
    assert not marker.exists()


def test_git_query_form(base: RootfsView, scratch: Path, git_daemon: str) -> None:
    out = layer(add(f"{git_daemon}?ref=v1&subdir=src", dest="/q/"), None, base, scratch)
    assert sorted(n for n in out if n.startswith("q")) == ["q", "q/main.c"]
    out = layer(add(f"{git_daemon}?tag=v1&keep-git-dir=true", dest="/q/"), None, base, scratch)
    assert out["q/README"].data == b"v1\n" and "q/.git/HEAD" in out
    with pytest.raises(CopyError, match="unexpected query 'bogus'"):
        layer(add(f"{git_daemon}?bogus=1", dest="/q/"), None, base, scratch)


def test_git_errors(base: RootfsView, scratch: Path, git_daemon: str, tmp_path: Path) -> None:
    missing = git_daemon.rsplit("/", 1)[0] + "/nothing.git"
    with pytest.raises(CopyError, match=r"cloning git://.*/nothing.git: git fetch failed \(a git source needs"):
        layer(add(missing, dest="/g/"), None, base, scratch)
    with pytest.raises(CopyError, match="no directory 'nope'"):
        layer(add(f"{git_daemon}#main:nope", dest="/g/"), None, base, scratch)
    with pytest.raises(CopyError, match="leaves the repository"):
        layer(add(f"{git_daemon}#main:../..", dest="/g/"), None, base, scratch)
    # A ref git would take for an option (`git fetch origin --upload-pack=CMD` went on from HEAD).
    witness = tmp_path / "ran"
    for source in (f"{git_daemon}#--upload-pack=touch {witness}", f"{git_daemon}?ref=-q"):
        with pytest.raises(CopyError, match="a ref cannot start with '-'"):
            layer(add(source, dest="/g/"), None, base, scratch)
    assert not witness.exists()


def test_git_file_urls_are_refused(base: RootfsView, scratch: Path, git_repo: Path) -> None:
    """A file:// repository is on the build host, outside the context: never read."""
    with pytest.raises(CopyError, match="outside the build context"):
        layer(add(f"file://{git_repo}", dest="/g/"), None, base, scratch)


@pytest.mark.parametrize("source, git, url", [
    ("git@github.com:moby/moby.git", True, False),
    ("git://example.com/repo", True, False),
    ("https://example.com/repo.git", True, True),
    ("https://example.com/repo.git#v1:sub", True, True),
    ("https://example.com/repo.git?ref=v1&subdir=sub", True, True),
    ("https://example.com/file.tar.gz", False, True),
    ("http://example.com/x", False, True),
    ("file.txt", False, False),
])
def test_source_kinds(source: str, git: bool, url: bool) -> None:
    assert is_git_source(source) is git
    assert is_url(source) is url
