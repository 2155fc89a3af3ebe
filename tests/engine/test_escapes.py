"""Nothing in a Dockerfile, its context or an archive reads or writes outside where it belongs.

Every case builds next to a sentinel directory outside the context holding a
secret file. A case either fails with a clear error or builds harmlessly; in
both, the secret appears nowhere (output, image layers, config) and nothing
new appears outside the context.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import run_pybuild
from tests.layers.malicious import Member, build_tar
from tests.registry.images import make_tar


@dataclass
class Sentinel:
    dir: Path
    value: bytes

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.dir)): (p.read_bytes() if p.is_file() else b"<dir>")
                for p in sorted(self.dir.rglob("*"))}


@pytest.fixture
def sentinel(tmp_path: Path) -> Sentinel:
    value = f"SENTINEL-{uuid.uuid4().hex}".encode()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(value)
    return Sentinel(outside, value)


def _image_bytes(builder: Builder, image: str, work: Path) -> Iterator[bytes]:
    saved = work / "escape-saved.tar"
    run_pybuild("save", "-o", str(saved), image, root=builder.root, check=True)
    with tarfile.open(saved) as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            if f is not None:
                data = f.read()
                yield gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _check(builder: Builder, sentinel: Sentinel, tmp_path: Path, files: dict[str, str | bytes],
           *, must_fail: bool, expect: str = "", symlinks: dict[str, str] | None = None,
           image_check: dict[str, bytes] | None = None) -> None:
    before = sentinel.snapshot()
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    ctx = builder.context(files)
    for name, target in (symlinks or {}).items():
        (ctx / name).symlink_to(target)
    tag = f"escape-{uuid.uuid4().hex[:8]}:1"
    p = builder.build(ctx, "--no-cache", "-t", tag, check=False)
    err = p.stderr.decode()
    assert "Traceback" not in err and "internal error" not in err, err
    assert sentinel.value not in p.stdout + p.stderr
    if must_fail:
        assert p.returncode == 1, err
        assert expect in err, err
    else:
        assert p.returncode == 0, err
        for data in _image_bytes(builder, tag, tmp_path):
            assert sentinel.value not in data
        for path, content in (image_check or {}).items():
            assert builder.run(tag, "cat", path).stdout == content
    assert sentinel.snapshot() == before
    after = {p.name for p in tmp_path.iterdir()} - {"escape-saved.tar", "ctx"}
    assert after == set(outside_before) - {"ctx"}


def test_copy_parent_path_refused(builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    _check(builder, sentinel, tmp_path, {"Dockerfile": "FROM busybox:local\nCOPY ../outside/secret /s\n"},
           must_fail=True, expect="outside the build context")


def test_context_symlink_to_outside_is_copied_as_a_link(builder: Builder, sentinel: Sentinel,
                                                        tmp_path: Path) -> None:
    """Inside a copied directory a symlink stays a symlink (its target never read)."""
    target = str(sentinel.dir / "secret")
    _check(builder, sentinel, tmp_path,
           {"Dockerfile": "FROM busybox:local\nCOPY . /all/\n"
            "RUN test -L /all/link && readlink /all/link > /where && readlink /all/rel >> /where\n"},
           symlinks={"link": target, "rel": "../outside/secret"}, must_fail=False,
           image_check={"/where": (target + "\n../outside/secret\n").encode()})


def test_symlink_source_to_outside_refused(builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    """Named as a source, a symlink is followed (as docker does), and outside the context that is an error."""
    _check(builder, sentinel, tmp_path, {"Dockerfile": "FROM busybox:local\nCOPY link /link\n"},
           symlinks={"link": str(sentinel.dir / "secret")}, must_fail=True,
           expect="which is not in the build context (an absolute link is resolved inside the context")


def test_source_through_symlinked_dir_is_not_followed_outside(builder: Builder, sentinel: Sentinel,
                                                              tmp_path: Path) -> None:
    for i, link_target in enumerate((str(sentinel.dir), "../outside")):
        files = {"Dockerfile": "FROM busybox:local\nCOPY dirlink/secret /s\n"}
        p_ctx = tmp_path / "ctx"
        if p_ctx.exists():
            import shutil

            shutil.rmtree(p_ctx)
        _check(builder, sentinel, tmp_path, files, symlinks={"dirlink": link_target}, must_fail=True,
               expect="'dirlink/secret' is a symlink to" if i == 0 else
               "'dirlink/secret' is a symlink that points outside the build context")
        assert i in (0, 1)


def test_symlinked_dir_source_refused_after_wildcards(builder: Builder, sentinel: Sentinel,
                                                       tmp_path: Path) -> None:
    _check(builder, sentinel, tmp_path,
           {"Dockerfile": "FROM busybox:local\nCOPY dir*/* /w/\nCOPY dirlink /d\n", "dir1/a": "a"},
           symlinks={"dirlink": str(sentinel.dir)}, must_fail=True, expect="which is not in the build context")


def test_proc_self_tricks_stay_in_the_image(builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    escape_dir = sentinel.dir / "written"
    _check(builder, sentinel, tmp_path,
           {"Dockerfile": f"FROM busybox:local\nWORKDIR /proc/self/root{sentinel.dir}/written\n"
            f"COPY x .\nCOPY x /proc/self/root{sentinel.dir}/x2\nCOPY x /proc/self/fd/3/x3\n"
            "WORKDIR /\n", "x": "x"},
           must_fail=False)
    assert not escape_dir.exists()


def test_image_symlink_to_host_path_writes_into_the_image(builder: Builder, sentinel: Sentinel,
                                                          tmp_path: Path) -> None:
    _check(builder, sentinel, tmp_path,
           {"Dockerfile": f"FROM busybox:local\nRUN ln -s {sentinel.dir} /hostdir && ln -s / /up\n"
            "COPY x /hostdir/secret\nCOPY x /up/../../..//hostdir/new\nWORKDIR /hostdir/wd\n", "x": "from ctx"},
           must_fail=False, image_check={f"{sentinel.dir}/secret": b"from ctx", f"{sentinel.dir}/new": b"from ctx"})


def test_bind_mount_source_outside_context(builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    files = {"Dockerfile": "FROM busybox:local\nRUN --mount=type=bind,source=../..,target=/m "
             f"cat /m{sentinel.dir}/secret /m/outside/secret /m/../outside/secret > /leak; ls -R /m > /list; true\n"}
    p_ctx_files = dict(files)
    before = sentinel.snapshot()
    ctx = builder.context(p_ctx_files)
    tag = f"escape-{uuid.uuid4().hex[:8]}:1"
    p = builder.build(ctx, "--no-cache", "-t", tag, check=False)
    assert b"Traceback" not in p.stderr
    assert sentinel.value not in p.stdout + p.stderr
    if p.returncode == 0:
        for data in _image_bytes(builder, tag, tmp_path):
            assert sentinel.value not in data
    else:
        assert b"outside" in p.stderr or b"context" in p.stderr, p.stderr.decode()
    assert sentinel.snapshot() == before


def _evil_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        def add(name: str, data: bytes = b"evil", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("../../../escape-dotdot")
        add("/escape-abs")
        add("ok.txt", b"ok")
        add("uplink", kind=tarfile.SYMTYPE, link="../../../../..")
        add("uplink/escape-via-link")
        add("hard", kind=tarfile.LNKTYPE, link="../../../../../etc/passwd")
    return raw.getvalue()


def test_add_archive_with_escaping_entries(builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    before_root = {p.name for p in Path("/").iterdir()}
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nADD evil.tar /x/y/\n", "evil.tar": _evil_tar()})
    p = builder.build(ctx, "--no-cache", "-t", "escape-tar:1", check=False)
    assert b"Traceback" not in p.stderr, p.stderr.decode()
    assert {p.name for p in Path("/").iterdir()} == before_root
    assert not (tmp_path / "escape-dotdot").exists() and not (ctx / "escape-via-link").exists()
    if p.returncode == 0:
        assert builder.run("escape-tar:1", "cat", "/x/y/ok.txt").stdout == b"ok"
        passwd = builder.run("escape-tar:1", "cat", "/etc/passwd").stdout
        assert b"evil" not in passwd


def _docker_archive(tag: str, layers: list[bytes]) -> bytes:
    """A docker-archive of an image made of the given layer tars (no base)."""
    import hashlib
    import json

    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in layers]}}).encode()
    files = {f"{hashlib.sha256(config).hexdigest()}.json": config}
    files.update({f"{hashlib.sha256(t).hexdigest()}/layer.tar": t for t in layers})
    files["manifest.json"] = json.dumps([{"Config": next(iter(files)), "RepoTags": [tag],
                                          "Layers": [n for n in files if n.endswith("/layer.tar")]}]).encode()
    return make_tar(files)


def _layer(*members: tuple[str, bytes, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return raw.getvalue()


def test_local_output_merges_into_the_directory_and_never_deletes_what_was_there(
        builder: Builder, sentinel: Sentinel, tmp_path: Path) -> None:
    """``-o type=local,dest=.`` (BuildKit's exporter receives with fsutil's Merge): an image's
    whiteouts and opaque directories hide its own lower layers, not the user's files in the
    output directory; a symlink there is replaced, never written through."""
    tag = f"escape-whiteouts-{uuid.uuid4().hex[:8]}:1"
    lower = _layer(("app", tarfile.DIRTYPE, b""), ("app/old", tarfile.REGTYPE, b"lower"),
                   ("gone", tarfile.REGTYPE, b"lower"), ("linked", tarfile.DIRTYPE, b""))
    upper = _layer((".wh..wh..opq", tarfile.REGTYPE, b""), (".wh.keep", tarfile.REGTYPE, b""),
                   (".wh.gone", tarfile.REGTYPE, b""), ("app", tarfile.DIRTYPE, b""),
                   ("app/.wh..wh..opq", tarfile.REGTYPE, b""), ("app/new", tarfile.REGTYPE, b"image"),
                   ("linked", tarfile.DIRTYPE, b""), ("linked/secret", tarfile.REGTYPE, b"image"))
    archive = tmp_path / "whiteouts.tar"
    archive.write_bytes(_docker_archive(tag, [lower, upper]))
    run_pybuild("load", "-i", str(archive), root=builder.root, check=True)
    out = tmp_path / "out"
    (out / "app").mkdir(parents=True)
    (out / "keep").write_text("mine")
    (out / "app" / "mine").write_text("mine")
    (out / "linked").symlink_to(sentinel.dir)
    before = sentinel.snapshot()
    ctx = builder.context({"Dockerfile": f"FROM {tag}\n"})
    builder.build(ctx, "-o", f"type=local,dest={out}")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "app", "app/mine", "app/new", "keep", "linked", "linked/secret"]
    assert (out / "keep").read_text() == "mine" and (out / "app" / "mine").read_text() == "mine"
    assert not (out / "linked").is_symlink() and (out / "linked" / "secret").read_text() == "image"
    assert sentinel.snapshot() == before


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_mount_point_under_an_earlier_mount_never_follows_its_links_to_the_host(
        builder: Builder, sentinel: Sentinel, tmp_path: Path, isolation: str) -> None:
    """A later mount's target is resolved inside the container after the earlier mounts are in
    place (runc's securejoin): the context's ``a/b -> <host dir>`` bound at /a leads
    ``/a/b/new`` to the image's own path, never to the host directory."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           "RUN --mount=type=bind,source=a,target=/a --mount=type=tmpfs,target=/a/b/new "
                           "--mount=type=bind,source=f,target=/a/b/file "
                           "test -d /a/b/new && cat /a/b/file > /seen\n"
                           # /proc is mounted before the build's mounts: its magic links are
                           # followed inside the root too, never to the host's
                           f"RUN --mount=type=tmpfs,target=/proc/1/root{sentinel.dir}/made "
                           f"--mount=type=bind,source=f,target=/proc/self/root{sentinel.dir}/file true\n",
                           "f": "from context", "a/x": ""},
                          f"mount-{isolation}")
    (ctx / "a" / "b").symlink_to(sentinel.dir)
    before = sentinel.snapshot()
    tag = f"escape-mounts-{isolation}:1"
    p = builder.build(ctx, "--no-cache", "--isolation", isolation, "-t", tag, check=False)
    assert p.returncode == 0 and b"Traceback" not in p.stderr, p.stderr.decode()
    assert sentinel.snapshot() == before
    assert builder.run(tag, "cat", "/seen").stdout == b"from context"


@pytest.mark.parametrize("output", ["local", "tar"])
def test_exporting_an_image_whose_layers_climb_out_is_one_clear_error(
        builder: Builder, sentinel: Sentinel, tmp_path: Path, output: str) -> None:
    """``-o type=local|tar`` apply the image's layers in one directory: a symlink to the host in
    one layer and a file through it in the next, or a ``..`` entry, is refused there, naming
    the layer; nothing is written outside, and no archive is left."""
    def layer(*members: tuple[str, str | None]) -> bytes:
        return build_tar([Member(name, data=b"pwn") if link is None else Member(name, tarfile.SYMTYPE, linkname=link)
                          for name, link in members])

    climbing = [
        [layer(("abs", str(sentinel.dir)), ("rel", "../../../../../../../../" + str(sentinel.dir).lstrip("/"))),
         layer(("abs/through-abs", None))],
        [layer(("rel", "../../../../../../../../" + str(sentinel.dir).lstrip("/"))), layer(("rel/through-rel", None))],
        [layer(("ok", None)), layer(("../../../../../../../../" + str(sentinel.dir).lstrip("/") + "/dotdot", None))],
    ]
    before = sentinel.snapshot()
    for i, layers in enumerate(climbing):
        tag = f"escape-export-{uuid.uuid4().hex[:8]}:{i}"
        (tmp_path / "climbing.tar").write_bytes(_docker_archive(tag, layers))
        run_pybuild("load", "-i", str(tmp_path / "climbing.tar"), root=builder.root, check=True)
        dest = tmp_path / f"out-{i}{'.tar' if output == 'tar' else ''}"
        built = builder.build(builder.context({"Dockerfile": f"FROM {tag}\n"}, name=f"ctx{i}"),
                              "-o", f"type={output},dest={dest}", check=False)
        err = built.stderr.decode()
        assert built.returncode == 1 and "Traceback" not in err, err
        assert err.count("\nERROR: ") + err.startswith("ERROR: ") == 1, err
        assert "cannot export the image: its layer sha256:" in err and "refusing the layer" in err, err
        assert sentinel.snapshot() == before
        assert not dest.exists() if output == "tar" else list(dest.iterdir()) == []
