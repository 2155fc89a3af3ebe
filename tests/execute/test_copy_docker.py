"""COPY/ADD against docker's classic builder: the same Dockerfile, the same resulting tree.

Docker builds each Dockerfile (DOCKER_BUILDKIT=0, --network host) on a base
imported from the busybox root; its container is exported. Our side writes
each COPY/ADD as a layer with copy_layer and extracts it (builder.layers.extract)
over a copy of the same root. The trees are compared on type, mode, uid, gid,
size, sha256 and link target; mtimes are ignored, as are the files docker adds
to every container (/.dockerenv, /etc/hosts, /etc/hostname, /etc/resolv.conf,
/etc/mtab, /dev/*). A Dockerfile that docker refuses must fail for us too.

Not compared here, because docker's classic builder lacks them: --chmod,
--parents, --exclude, --link, heredocs, zstd archives (docker 20.10 copies a
.tar.zst as a file; we unpack it like BuildKit). Those are pinned by the unit
tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.errors import PybuildError, SourceLocation
from builder.execute.context import BuildContext
from builder.execute.copy import CopySpec, copy_layer
from builder.execute.rootfs import RootfsView
from builder.layers.extract import extract_layer
from tests.helpers.tools import docker_tag

IGNORED = {".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab"}
IGNORED_PREFIXES = ("dev/",)

Tree = dict[str, tuple[str, int, int, int, int, str, str]]


@dataclass(frozen=True)
class Case:
    name: str
    lines: tuple[str, ...]  # after "FROM base"; {url} is the loopback web server
    fails: bool = False


CASES = [
    Case("symlinked-sources-followed", ("COPY f1 f1link dirlink /out/",)),
    Case("dir-contents-new-dest", ("COPY dir /out2", "COPY dir/ /out3/")),
    Case("chown-by-name-created-dirs", ("COPY --chown=app:app dir /newdir/nested/",)),
    Case("existing-dest-dir-kept", ("COPY --chown=app dir /ex2/", "COPY d2 /existing/")),
    Case("dest-through-image-symlink", ("COPY f1 /usr/local/bin/", "COPY run.sh /usr/local/bin/tool")),
    Case("numeric-chown-deep-paths", ("COPY --chown=1:2 f1 /c3/q/r", "COPY --chown=1:2 d2 /c2/q/")),
    Case("wildcards", ("COPY d* /w/", "COPY f* /w2/", "COPY dir/*/b /w3/")),
    Case("hardlinks-only-within-a-source", ("COPY dir/a dir/hard /h/",)),
    Case("workdir-relative", ("WORKDIR /wd", "COPY f1 .", "COPY f1 sub/", "COPY f1 rel")),
    Case("dest-proc-self-tricks", ("COPY f1 /evil/x", "COPY f1 /up/y", "COPY d2 /evil/")),
    Case("file-into-existing-dir", ("COPY f1 /existing", "COPY d2 /existing", "COPY f1 /etc/group")),
    Case("add-archives", (
        "ADD a.tar /t1/", "ADD a.tgz /t2", "ADD a.txz a.tbz /t3/", "ADD fake.tar.gz /t5/",
    )),  # ADD --chown of an archive follows BuildKit, not docker's classic builder: test_add.py
    Case("add-archive-with-root-entry", ("ADD dot.tar /t7/", "ADD dot.tar /existing/")),
    Case("add-urls", (
        "ADD {url}/file.txt /u1/", "ADD {url}/file.txt /u2/named", "ADD {url}/a.tgz /u3/",
        "ADD --chown=app {url}/file.txt /u4/deep/",
    )),
    Case("whole-context-with-dockerignore", ("COPY . /all/", "COPY secret /s/")),
    Case("copy-from-stage", ("COPY --from=s /existing /e2", "COPY --from=s /etc/group /usr/local/bin/ /e3/")),
    Case("dir-over-existing-dirs-takes-source-metadata", ("COPY tree /",)),
    Case("special-files", ("COPY empty /e/", "COPY suid /sp/", 'COPY ["sp ace", "/u/"]')),
    Case("paths-cleaned", ("COPY dir/sub/../a /c1", "COPY /dir/sub /c2/", "COPY ./dir/./lnk /c3")),
    Case("wildcard-matches-are-separate-copies", ("COPY dir/*a* /wh/",)),
    Case("setuid-and-setgid", ("COPY m* sgd /m/", "COPY --chown=1:2 m4755 /m2/")),
    Case("copy-from-keeps-owners-and-modes", (
        "COPY --from=s /sbox /sgdir /fs/", "COPY --from=s --chown=5:5 /sbox /fs2/",
    )),
    Case("copy-from-follows-top-level-symlinks", (
        "COPY --from=s /bin/sh /fs3/", "COPY --from=s /linkd/sub/local /evil/../fs4", "COPY --from=s /linkd /fs5/",
    )),
    Case("tree-replaces-image-symlinks-and-dirs-below-dest", ("COPY ovr /linkd/",)),
    Case("dot-and-dotdot-dests", ("COPY f1 /newd/.", "COPY f1 /newd2/..", "COPY d2 /nd3/.")),
    Case("source-slashes-and-json-form", (
        "COPY f1/ /x", "COPY dir/. /x2/", "COPY f1link/ /y", 'COPY ["f1", "/spc dir/"]',
    )),
    Case("dest-symlink-to-a-file-is-written-through", ("COPY f1 /bin/sh",)),
    Case("multiple-sources-need-slash", ("COPY f1 d2 /m",), fails=True),
    Case("parent-path-refused", ("COPY ../f1 /x/",), fails=True),
    Case("wildcard-without-match", ("COPY nomatch* /x/",), fails=True),
    Case("ignored-source", ("COPY x.log /",), fails=True),
    Case("symlink-out-of-context", ("COPY abslink /x",), fails=True),
    Case("relative-symlink-out-of-context", ("COPY rellink /x",), fails=True),
    Case("unknown-chown-user", ("COPY --chown=nobody2 f1 /x",), fails=True),
    Case("dest-parent-is-a-file", ("COPY f1 /etc/passwd/x",), fails=True),
    Case("dir-onto-a-file", ("COPY d2 /etc/group",), fails=True),
    Case("archive-onto-a-file", ("ADD a.tar /etc/group",), fails=True),
    Case("dest-dir-through-symlink-to-file", ("COPY f1 /bin/sh/",), fails=True),
]


def _tree_from_dir(root: Path) -> Tree:
    out: Tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            kind, size, digest, link = _describe(st, path)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, size, digest, link)
    return out


def _describe(st: os.stat_result, path: Path) -> tuple[str, int, str, str]:
    if stat.S_ISREG(st.st_mode):
        return "file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest(), ""
    if stat.S_ISDIR(st.st_mode):
        return "dir", 0, "", ""
    if stat.S_ISLNK(st.st_mode):
        return "symlink", 0, "", os.readlink(path)
    return "other", 0, "", ""


def _tree_from_export(data: bytes) -> Tree:
    out: Tree = {}
    contents: dict[str, tuple[int, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or name == ".":
                continue
            if m.isreg():
                body = tar.extractfile(m).read()  # type: ignore[union-attr]
                contents[name] = (len(body), hashlib.sha256(body).hexdigest())
                out[name] = ("file", m.mode & 0o7777, m.uid, m.gid, *contents[name], "")
            elif m.islnk():
                target = m.linkname.removeprefix("./").rstrip("/")
                size, digest = contents[target]
                out[name] = ("file", m.mode & 0o7777, m.uid, m.gid, size, digest, "")
            elif m.isdir():
                out[name] = ("dir", m.mode & 0o7777, m.uid, m.gid, 0, "", "")
            elif m.issym():
                out[name] = ("symlink", m.mode & 0o7777, m.uid, m.gid, 0, "", m.linkname)
            else:
                out[name] = ("other", m.mode & 0o7777, m.uid, m.gid, 0, "", "")
    return out


def _comparable(tree: Tree) -> Tree:
    result = {}
    for path, value in tree.items():
        if path in IGNORED or path.startswith(IGNORED_PREFIXES):
            continue
        kind, mode, uid, gid, size, digest, link = value
        if kind == "symlink":
            mode = 0o777  # symlink modes mean nothing on Linux
        result[path] = (kind, mode, uid, gid, size, digest, link)
    return result


def _docker_tree(docker: str, base_image: str, context: Path, dockerfile: str) -> Tree | str:
    """docker's result tree, or its error output when the build fails."""
    # Inside the context: a Dockerfile from elsewhere makes the docker CLI add it to the
    # context under a random name and append that name to .dockerignore.
    (context / "Dockerfile").write_text(dockerfile)
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    build = subprocess.run(
        [docker, "build", "--network", "host", "-q", "--rm", "--force-rm", str(context)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    if build.returncode != 0:
        return build.stderr + build.stdout
    image = build.stdout.strip().splitlines()[-1]
    container = subprocess.run(
        [docker, "create", image, "/bin/true"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        exported = subprocess.run([docker, "export", container], capture_output=True, check=True).stdout
    finally:
        subprocess.run([docker, "rm", "-f", "-v", container], capture_output=True)
        subprocess.run([docker, "rmi", "-f", image], capture_output=True)
    return _tree_from_export(exported)


def _spec_of(line: str, workdir: str, number: int) -> CopySpec:
    keyword, _, rest = line.partition(" ")
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
    args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return CopySpec(
        sources=tuple(args[:-1]), dest=args[-1], workdir=workdir, chown=flags.get("chown"),
        is_add=keyword.upper() == "ADD", from_=flags.get("from"),
        location=SourceLocation("Dockerfile", number),
    )


def _our_tree(root: Path, context: BuildContext, lines: list[str], tmp: Path) -> Tree:
    stage_s = RootfsView([Path(root.parent / "stage-s")])
    workdir = "/"
    for number, line in enumerate(lines, start=2):
        if line.startswith("WORKDIR"):
            workdir = line.split()[1]
            (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            continue
        spec = _spec_of(line, workdir, number)
        layer = tmp / f"layer-{number}.tar"
        with open(layer, "wb") as out:
            copy_layer(spec, source=stage_s if spec.from_ else context,
                       dest_view=RootfsView([root]), out=out, workdir=tmp)
        with open(layer, "rb") as stream:
            extract_layer(stream, root)
    return _tree_from_dir(root)


@pytest.fixture(scope="module")
def base_image(docker: str, copy_base: Path) -> str:
    tag = docker_tag("pybuild-copytest-base")
    tar = subprocess.run(
        ["tar", "--numeric-owner", "-C", str(copy_base), "-c", "."], capture_output=True, check=True
    ).stdout
    subprocess.run([docker, "import", "-", tag], input=tar, capture_output=True, check=True)
    yield tag
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_copy_matches_docker(
    case: Case, docker: str, base_image: str, copy_context: Path, copy_base: Path,
    fresh_base: Path, web: tuple[str, Path], tmp_path: Path,
) -> None:
    url, served = web
    if not (served / "a.tgz").exists():
        (served / "a.tgz").write_bytes((copy_context / "a.tgz").read_bytes())
    lines = [line.format(url=url) for line in case.lines]
    header = f"FROM {base_image} AS s\nFROM {base_image}\n" if "--from" in "".join(lines) else f"FROM {base_image}\n"
    dockerfile = header + "\n".join(lines) + "\n"
    expected = _docker_tree(docker, base_image, copy_context, dockerfile)

    os.symlink(copy_base, fresh_base.parent / "stage-s")
    context = BuildContext.from_dir(copy_context)
    if case.fails:
        assert isinstance(expected, str), f"docker built {case.name}, expected it to fail"
        with pytest.raises(PybuildError) as info:
            _our_tree(fresh_base, context, lines, tmp_path)
        assert "Dockerfile:2" in str(info.value)
        return
    assert not isinstance(expected, str), f"docker failed: {expected}"
    ours = _comparable(_our_tree(fresh_base, context, lines, tmp_path))
    theirs = _comparable(expected)
    only_docker = sorted(set(theirs) - set(ours))
    only_ours = sorted(set(ours) - set(theirs))
    differ = {p: (theirs[p], ours[p]) for p in theirs.keys() & ours.keys() if theirs[p] != ours[p]}
    assert not only_docker and not only_ours and not differ, (
        f"only in docker: {only_docker}\nonly in pybuild: {only_ours}\n"
        f"different (docker, pybuild): {differ}"
    )
