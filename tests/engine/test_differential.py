"""Differential tests: docker's classic builder and pybuild build the same Dockerfile to the same image.

For each case both build the context; the flattened file trees (type, mode,
owner, size, content hash, link target) and the container configs must be
equal, ignoring only what a case names in ``ignore`` with its reason. A
Dockerfile that fails in docker must fail in pybuild.
"""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import stat
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.engine.flatten import (
    docker_config,
    docker_history,
    docker_tree,
    pybuild_config,
    pybuild_history,
    pybuild_tree,
)
from tests.helpers.fileserver import serve_files
from tests.helpers.tools import docker_tag, run_pybuild


@dataclass(frozen=True)
class Case:
    name: str
    dockerfile: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    build_args: tuple[str, ...] = ()
    fails: bool = False  # docker refuses it, so pybuild must too
    ignore_paths: tuple[str, ...] = ()  # with the reason in `why`
    why: str = ""
    symlinks: dict[str, str] = field(default_factory=dict)  # context symlinks: path -> target
    modes: dict[str, int] = field(default_factory=dict)
    # Built first by both builders as pybuild-diff/<name>-base:1 (ONBUILD triggers and the like).
    base: str | None = None
    base_by_docker: bool = False  # pybuild loads docker's build of ``base`` (docker save) instead of its own
    # BuildKit-only syntax docker's classic builder rejects (heredocs, --link, --parents,
    # --exclude, --chmod): docker builds this equivalent classic Dockerfile instead, and the
    # trees and configs must still be equal, so pybuild follows BuildKit's semantics.
    docker_dockerfile: str | None = None
    docker_files: dict[str, str | bytes] = field(default_factory=dict)
    # docker refuses the Dockerfile but BuildKit accepts it with this warning: pybuild does that.
    buildkit_warns: str | None = None
    # Files served over HTTP on loopback during the case; ``{url}`` in the Dockerfile is its base.
    serve: dict[str, bytes] = field(default_factory=dict)
    last_modified: bool = True  # the server sends a Last-Modified header (2015-10-21 07:28:00 GMT)
    same_history: bool = True  # created_by of every history entry, as `docker history` shows it
    hardlinks: dict[str, str] = field(default_factory=dict)  # context hardlinks: path -> existing file
    # context fifos, sockets and sparse files (4 MiB, one byte written at 1 MiB): path -> "fifo"/"socket"/"sparse"
    specials: dict[str, str] = field(default_factory=dict)
    xattrs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # context xattrs: path -> name -> value
    mtimes: dict[str, int] = field(default_factory=dict)  # context mtimes (seconds): path -> mtime
    # Image paths whose mtimes must be equal too (elsewhere they depend on when each builder ran).
    compare_mtimes: tuple[str, ...] = ()


def _archive(compression: str = "") -> bytes:
    """A small tar (a dir, a file, a symlink) as ADD auto-extracts it."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind in (("inner", b"", tarfile.DIRTYPE), ("inner/f.txt", b"inside\n", tarfile.REGTYPE),
                                 ("inner/link", b"", tarfile.SYMTYPE), ("top.txt", b"top\n", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o640
            info.uid, info.gid, info.mtime = 42, 43, 1_600_000_000
            if kind == tarfile.SYMTYPE:
                info.linkname = "f.txt"
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if compression == "gz":
        import gzip

        return gzip.compress(data, mtime=0)
    if compression == "xz":
        return lzma.compress(data)
    if compression == "bz2":
        import bz2

        return bz2.compress(data)
    return data


def _tar(*entries: tuple) -> bytes:
    """A tar of (name, kind, data or link target, mode, uid, gid) entries, in that order."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_600_000_000
            body = b""
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data
            elif kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = data
            elif kind == tarfile.REGTYPE:
                body = data
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def _gnu_tar() -> bytes:
    """A GNU-format tar: long names and link targets as ././@LongLink entries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("g" * 130 + "/" + "h" * 110)
        data = b"gnu"
        info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("gl")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "w" * 170, 1_600_000_000
        tf.addfile(link)
    return raw.getvalue()


_CAP_NET_BIND = b"\x01\x00\x00\x02\x00\x04\x00\x00" + b"\x00" * 12  # vfs_cap_data v2: cap_net_bind_service+ep


def _xattr_tar() -> bytes:
    """A tar whose files carry xattrs as SCHILY.xattr.* records: a file capability, user and trusted ones."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, attrs in (("cap", {"security.capability": _CAP_NET_BIND, "user.u": b"1"}),
                            ("d/plain", {"user.only": b"x", "trusted.t": b"t"})):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = 1, 0o755, 1_600_000_000
            info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("latin-1") for k, v in attrs.items()}
            tf.addfile(info, io.BytesIO(b"x"))
    return raw.getvalue()


def _latin1_tar() -> bytes:
    """A ustar archive whose names are latin-1 bytes, not UTF-8 (as old tars made on such systems)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tf:
        for name, kind in (("d\u00e9", tarfile.DIRTYPE), ("d\u00e9/caf\u00e9", tarfile.REGTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, 0o755, 1_600_000_000
            info.size = 1 if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(b"x") if kind == tarfile.REGTYPE else None)
    return raw.getvalue()


def _pax_sparse_tar() -> bytes:
    """GNU tar's PAX sparse files (``tar --sparse --format=posix``): 0.1 (the map in a record) and
    1.0 (the map ahead of the data); the stored bytes are the data segments only."""
    raw = io.BytesIO()
    segments = ((1 << 20, b"middle"), ((2 << 20) - 3, b"end"))
    data = b"".join(d for _, d in segments)
    numbers = [str(n) for off, d in segments for n in (off, len(d))]
    one = f"{len(segments)}\n{chr(10).join(numbers)}\n".encode().ljust(512, b"\0") + data
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, pax, body in (
            ("s01", {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.size": str(2 << 20),
                     "GNU.sparse.numblocks": str(len(segments)), "GNU.sparse.map": ",".join(numbers)}, data),
            ("s10", {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(2 << 20)}, one),
        ):
            info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
            info.size, info.mode, info.mtime = len(body), 0o644, 1_600_000_000
            info.pax_headers = {"GNU.sparse.name": f"d/{name}", **pax}
            tf.addfile(info, io.BytesIO(body))
    return raw.getvalue()


def _git_archive_like_tar() -> bytes:
    """What `git archive` writes: a PAX global header (the commit id) first, then the files."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "0123456789abcdef0123456789abcdef01234567"}) as tf:
        for name, kind, mode in (("proj", tarfile.DIRTYPE, 0o775), ("proj/README", tarfile.REGTYPE, 0o664)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 1_600_000_000
            info.uname = info.gname = "root"
            data = b"readme\n" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


F, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

CASES = [
    Case("copy-file", "FROM busybox:local\nCOPY a.txt /a.txt\n", {"a.txt": "A\n"}),
    Case("copy-into-existing-dir", "FROM busybox:local\nCOPY a.txt /etc\n", {"a.txt": "A\n"}),
    Case("copy-dir-contents", "FROM busybox:local\nCOPY src /dst\n",
         {"src/one.txt": "1", "src/sub/two.txt": "2"}),
    Case("copy-trailing-slash", "FROM busybox:local\nCOPY a.txt b.txt /out/\n", {"a.txt": "a", "b.txt": "b"}),
    Case("copy-multi-needs-dir", "FROM busybox:local\nCOPY a.txt b.txt /out\n",
         {"a.txt": "a", "b.txt": "b"}, fails=True),
    Case("copy-wildcard", "FROM busybox:local\nCOPY *.txt /w/\n", {"a.txt": "a", "b.txt": "b", "c.md": "c"}),
    Case("copy-chown-name", "FROM busybox:local\nCOPY --chown=app:app a.txt /home/app/a.txt\n", {"a.txt": "a"}),
    Case("copy-chown-number", "FROM busybox:local\nCOPY --chown=1234:5678 a.txt /a\n", {"a.txt": "a"}),
    Case("copy-workdir-relative", "FROM busybox:local\nWORKDIR /app\nCOPY a.txt .\nCOPY a.txt sub/\n",
         {"a.txt": "a"}),
    Case("copy-missing-source", "FROM busybox:local\nCOPY nope /x\n", fails=True),
    Case("copy-symlink", "FROM busybox:local\nCOPY link /link\nCOPY dir /dir\n",
         {"target.txt": "t", "dir/f": "f"}, symlinks={"link": "target.txt", "dir/l": "f"}),
    Case("copy-modes", "FROM busybox:local\nCOPY run.sh /run.sh\n", {"run.sh": "#!/bin/sh\n"},
         modes={"run.sh": 0o750}),
    Case("env-expansion", "FROM busybox:local\nENV A=1 B=\"two words\"\nENV C=${A}-$B\nWORKDIR /$A\n"
         "LABEL x=$C\n"),
    Case("arg-scoping", "ARG V=global\nFROM busybox:local\nARG V\nRUN echo $V > /v\n"
         "ARG W=w\nENV X=$W\n", build_args=("V=cli",)),
    Case("arg-env-precedence", "FROM busybox:local\nARG A=arg\nENV A=env\nRUN echo $A > /a\n",
         build_args=("A=cli",)),
    Case("run-whiteout", "FROM busybox:local\nRUN mkdir -p /d && echo 1 > /d/a && echo 2 > /d/b\n"
         "RUN rm /d/a && rm -rf /etc/group\n"),
    Case("run-opaque-dir", "FROM busybox:local\nRUN mkdir -p /o && touch /o/1 /o/2\n"
         "RUN rm -rf /o && mkdir /o && touch /o/3\n"),
    Case("user-workdir-shell", "FROM busybox:local\nWORKDIR /w\nUSER app\nRUN id > /tmp/id && pwd > /tmp/pwd\n"
         "USER root\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $0 > /shell\n"),
    Case("entrypoint-resets-cmd", "FROM busybox:local AS base\nCMD [\"base\"]\nFROM base\nENTRYPOINT [\"sh\"]\n"),
    Case("entrypoint-cmd", "FROM busybox:local\nENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"echo hi\"]\n"),
    Case("shell-form-cmd", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-xc\"]\nCMD echo $HOME\nENTRYPOINT exec sh\n"),
    Case("metadata", "FROM busybox:local\nEXPOSE 80 53/udp 8080/TCP\nVOLUME /data [\"/logs\"]\n"
         "STOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=3 CMD true\nLABEL a=b \"c d\"=e\n"),
    Case("onbuild", "FROM busybox:local\nONBUILD RUN echo trig > /trig\nONBUILD ENV T=1\n"),
    Case("multistage-copy-from", "FROM busybox:local AS build\nRUN echo built > /out\n"
         "FROM busybox:local\nCOPY --from=build /out /from-build\nCOPY --from=0 /out /from-index\n"),
    Case("failing-run", "FROM busybox:local\nRUN exit 3\n", fails=True),
    Case("dockerignore", "FROM busybox:local\nCOPY . /ctx\n",
         {".dockerignore": "*.log\n!keep.log\nsecret/\n", "a.txt": "a", "x.log": "x", "keep.log": "k",
          "secret/s": "s"}),
    Case("add-local-tar", "FROM busybox:local\nADD archive.tar /x/\n", {}),
    # -- COPY/ADD rules
    Case("copy-wildcard-question", "FROM busybox:local\nCOPY file?.txt /q/\n",
         {"file1.txt": "1", "file2.txt": "2", "file10.txt": "10"}),
    Case("copy-wildcard-class", "FROM busybox:local\nCOPY [ab]*.txt /c/\n",
         {"a1.txt": "a", "b1.txt": "b", "c1.txt": "c"}),
    Case("copy-wildcard-dirs", "FROM busybox:local\nCOPY dir* /dd/\n",
         {"dir1/x": "x", "dir2/sub/y": "y", "dirfile": "f"}),
    Case("copy-file-and-dir", "FROM busybox:local\nCOPY a.txt src /multi/\n",
         {"a.txt": "a", "src/one": "1", "src/deep/two": "2"}),
    Case("copy-creates-parents", "FROM busybox:local\nCOPY a.txt /x/y/z/\nCOPY src /p/q\n",
         {"a.txt": "a", "src/f": "f"}),
    Case("copy-chown-uid-only", "FROM busybox:local\nCOPY --chown=1234 src /o/\nCOPY --chown=app a.txt /b\n",
         {"src/f": "f", "src/d/g": "g", "a.txt": "a"}),
    Case("copy-dot-new-workdir", "FROM busybox:local\nWORKDIR /new/app\nCOPY . .\n",
         {"a.txt": "a", "sub/b.txt": "b"}),
    Case("copy-overwrite-base-file", "FROM busybox:local\nCOPY passwd /etc/passwd\n",
         {"passwd": "root:x:0:0::/root:/bin/sh\n"}),
    Case("add-tar-gz", "FROM busybox:local\nADD a.tar.gz /gz\n", {"a.tar.gz": _archive("gz")}),
    Case("add-tar-xz", "FROM busybox:local\nADD a.tar.xz /xz/\n", {"a.tar.xz": _archive("xz")}),
    Case("add-non-archive", "FROM busybox:local\nADD plain.txt fake.tar /p/\n",
         {"plain.txt": "plain", "fake.tar": "not a tar at all"}),
    Case("add-chown-tar", "FROM busybox:local\nADD --chown=1:1 a.tar /t/\n", {"a.tar": _archive()},
         docker_dockerfile="FROM busybox:local\nADD a.tar /t/\nRUN chown -Rh 1:1 /t\n",
         why="BuildKit gives every unpacked entry, and the dest it makes, the --chown owner; docker's "
         "classic builder kept the archive's owners"),
    Case("copy-chmod", "FROM busybox:local\nCOPY --chmod=0751 run.sh /bin/run.sh\n",
         {"run.sh": "#!/bin/sh\n"},
         docker_dockerfile="FROM busybox:local\nCOPY run.sh /bin/run.sh\nRUN chmod 0751 /bin/run.sh\n"),
    Case("copy-link", "FROM busybox:local\nCOPY --link src /l/\nCOPY --link a.txt /etc/\n",
         {"src/f": "f", "a.txt": "a"},
         docker_dockerfile="FROM busybox:local\nCOPY src /l/\nCOPY a.txt /etc/\n"),
    Case("copy-parents", "FROM busybox:local\nCOPY --parents x/a/f.txt y/b/g.txt /p/\n",
         {"x/a/f.txt": "f", "y/b/g.txt": "g", "x/other": "o"},
         docker_dockerfile="FROM busybox:local\nCOPY x/a/f.txt /p/x/a/\nCOPY y/b/g.txt /p/y/b/\n"),
    Case("copy-exclude", "FROM busybox:local\nCOPY --exclude=*.log --exclude=tmp src /e/\n",
         {"src/a.txt": "a", "src/b.log": "b", "src/tmp/t": "t", "src/sub/c.log": "c", "src/sub/d": "d"},
         docker_dockerfile="FROM busybox:local\nCOPY src/a.txt /e/\nCOPY src/sub /e/sub/\n",
         why="BuildKit's --exclude patterns match like .dockerignore rules, relative to each source: "
         "*.log is only the top level, so sub/c.log stays"),
    Case("copy-heredoc", "FROM busybox:local\nENV W=world\nCOPY <<EOF /h/greeting\nhello $W $HOME\nEOF\n"
         "COPY <<-\"EOT\" <<X /h/\n\tquoted $HOME\n\tEOT\nx\nX\n",
         docker_dockerfile="FROM busybox:local\nENV W=world\nCOPY greeting /h/greeting\nCOPY EOT X /h/\n",
         docker_files={"greeting": "hello world \n", "EOT": "quoted $HOME\n", "X": "x\n"},
         why="COPY heredocs: a file named for the heredoc word, expanded with the build's variables (HOME is "
         "the shell's, so empty) unless the word is quoted; "
         "BuildKit creates them 0644 root"),
    Case("run-heredoc", "FROM busybox:local\nRUN <<EOF\nset -e\nmkdir /hd\necho one > /hd/1\n"
         "echo two > /hd/2\nEOF\nRUN cat > /hd/3 <<X\nthree $HOME\nX\n",
         docker_dockerfile="FROM busybox:local\nRUN set -e; mkdir /hd; echo one > /hd/1; echo two > /hd/2\n"
         "RUN echo three /root > /hd/3\n",
         why="RUN heredocs run as a script by the shell, as BuildKit does"),
    # -- ENV/ARG expansion and scoping
    Case("meta-arg-in-from", "ARG TAG=local\nARG UNUSED=x\nFROM busybox:$TAG\nARG TAG\nRUN echo $TAG $UNUSED > /t\n"),
    Case("arg-redeclared", "FROM busybox:local\nARG A=1\nRUN echo $A > /a1\nARG A=2\nRUN echo $A > /a2\n"
         "ARG A\nRUN echo $A > /a3\n", ignore_paths=("a3",),
         why="a3: a redeclared ARG without a default keeps the earlier value in BuildKit (pybuild's "
         "reference for scoping); docker's classic builder resets it to empty"),
    Case("arg-not-across-stages", "FROM busybox:local AS one\nARG S=one\nENV E=$S\n"
         "FROM one\nRUN echo \"[$S][$E]\" > /s\nFROM busybox:local\nRUN echo \"[$S]\" > /fresh\n"
         "COPY --from=1 /s /s\n", ignore_paths=("s",),
         why="s: a stage FROM another stage inherits its ARGs in BuildKit (pybuild's reference), not in "
         "docker's classic builder; /fresh shows a stage FROM an image never sees them"),
    Case("default-path", "FROM busybox:local\nRUN echo $PATH > /path\nENV PATH=$PATH:/extra\n"
         "RUN echo $PATH > /path2\n"),
    Case("env-quoting", "FROM busybox:local\nENV A='single $x' B=\"dq \\$y ${A}\" C=a\\ b\nENV D ${C:-no} ${Z:-dflt} ${C:+set}\n"
         "RUN echo \"$A|$B|$C|$D\" > /e\n"),
    Case("build-arg-overrides-default", "FROM busybox:local\nARG A=dflt\nARG B\nRUN echo \"$A-$B\" > /ab\n",
         build_args=("A=cli", "B=bee")),
    Case("expose-range-volume-var", "FROM busybox:local\nENV V=/vol\nEXPOSE 8000-8002/udp 9000\n"
         "VOLUME $V /other\nLABEL \"multi word\"=\"v 1\" other=$V\n"),
    # -- multi-stage
    Case("stage-of-stage", "FROM busybox:local AS a\nRUN echo a > /a\nFROM a AS b\nRUN echo b > /b\n"
         "FROM b AS c\nRUN echo c > /c\nFROM busybox:local\nCOPY --from=c /a /b /c /all/\n"),
    Case("copy-from-image", "FROM scratch\nCOPY --from=busybox:local /bin/busybox /bin/sh\nCOPY --from=busybox:local /etc /etc\n"),
    Case("copy-from-dir", "FROM busybox:local AS src\nRUN mkdir -p /out/d && echo 1 > /out/d/f && ln -s d /out/l\n"
         "FROM busybox:local\nCOPY --from=src /out /in\nCOPY --from=src /out/ /in2/\n"),
    # -- whiteouts and opaque dirs
    Case("rm-base-dir", "FROM busybox:local\nRUN rm -rf /var /etc/passwd\n"),
    Case("recreate-base-dir", "FROM busybox:local\nRUN rm -rf /usr && mkdir -p /usr/bin && echo new > /usr/bin/new\n"
         "RUN rm -rf /root && mkdir /root\n"),
    Case("rm-then-copy", "FROM busybox:local\nCOPY a.txt /d/a\nRUN rm -rf /d\nCOPY a.txt /d/b\n", {"a.txt": "a"}),
    Case("rm-in-later-stage-copy", "FROM busybox:local AS x\nRUN mkdir /k && touch /k/1 /k/2 && rm /k/1\n"
         "FROM busybox:local\nCOPY --from=x /k /k\n"),
    # -- USER/WORKDIR/SHELL
    Case("workdir-relative-chain", "FROM busybox:local\nWORKDIR a\nWORKDIR b/c\nWORKDIR ../d\nRUN pwd > /pwd\n"),
    Case("workdir-env", "FROM busybox:local\nENV D=/dd\nWORKDIR $D/sub\nWORKDIR /etc\n"),
    Case("user-uid-gid", "FROM busybox:local\nUSER 1234:5678\nRUN touch /tmp/f && id -u > /tmp/u && id -g > /tmp/g\n"),
    Case("shell-changes-run", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-c\", \"echo shell: > /shellout; eval \\\"$1\\\"\", \"x\"]\n"
         "RUN echo ran >> /shellout\n"),
    # -- ENTRYPOINT/CMD
    Case("cmd-then-entrypoint", "FROM busybox:local\nCMD [\"kept\"]\nENTRYPOINT [\"/bin/echo\"]\n"),
    Case("entrypoint-shell-cmd-json", "FROM busybox:local\nENTRYPOINT echo $HOME\nCMD [\"a\", \"b\"]\n"),
    Case("cmd-empty-json", "FROM busybox:local\nCMD []\n"),
    # -- ONBUILD
    Case("onbuild-triggers", "FROM pybuild-diff/onbuild-triggers-base:1\nRUN echo after > /after\n",
         {"trig.txt": "from the child context"},
         base="FROM busybox:local\nONBUILD COPY trig.txt /trig/\nONBUILD RUN echo ran > /trig/ran\n"
         "ONBUILD ENV T=1\nONBUILD WORKDIR /trig\n"),
    # -- .dockerignore
    Case("dockerignore-dir-exception", "FROM busybox:local\nCOPY . /ctx\n",
         {".dockerignore": "dir\n!dir/keep\n**/*.tmp\n", "dir/keep": "k", "dir/drop": "d",
          "a/b/c.tmp": "t", "a/b/c.txt": "c"}),
    Case("dockerignore-dockerfile-itself", "FROM busybox:local\nCOPY . /ctx\n",
         {".dockerignore": "Dockerfile\n.dockerignore\n", "a": "a"}),
    # -- deeper file-system cases
    Case("special-files-and-bits", "FROM busybox:local\nRUN mknod /cdev c 1 3 && mkfifo /fifo && "
         "echo x > /suid && chmod 4755 /suid && mkdir /shared && chmod 1777 /shared && "
         "echo h > /h1 && ln /h1 /h2 && mkdir /empty\n"),
    Case("run-as-user-owns-files", "FROM busybox:local\nUSER app\nRUN touch /tmp/mine && mkdir /tmp/d\n"),
    Case("workdir-through-symlink", "FROM busybox:local\nRUN mkdir /real && ln -s /real /lnk\n"
         "WORKDIR /lnk/sub\nRUN pwd > /real/pwd\n"),
    Case("copy-through-image-symlink", "FROM busybox:local\nRUN mkdir /opt && ln -s /opt /o && ln -s opt /rel\n"
         "COPY a.txt /o/a\nCOPY a.txt /rel/b\nCOPY src /o/src/\n", {"a.txt": "a", "src/f": "f"}),
    Case("workdir-over-file", "FROM busybox:local\nWORKDIR /etc/passwd/sub\n", fails=True),
    Case("copy-dir-over-file", "FROM busybox:local\nCOPY src /etc/passwd/\n", {"src/f": "f"}, fails=True),
    Case("long-and-unicode-names", "FROM busybox:local\nCOPY . /n/\n",
         {("d" * 60 + "/") * 3 + "f" * 120: "long", "ünïcødé-名前.txt": "u", "sp ace": "s"}),
    Case("copy-empty-dir", "FROM busybox:local\nCOPY empty /e\nCOPY empty /f/\n", {"empty/.keep": ""},
         ),
    Case("arg-default-from-arg", "FROM busybox:local\nARG A=1\nARG B=${A}-2 C=$UNDEFINED.x\n"
         "ENV D=${B:-none}/$C\nRUN echo $A $B $C $D > /abc\n"),
    Case("unknown-user-fails", "FROM busybox:local\nUSER nosuchuser\nRUN true\n", fails=True),
    Case("env-inherited-through-stages", "FROM busybox:local AS a\nENV P=1 Q=two\nFROM a\nENV Q=three\n"
         "RUN echo $P $Q > /pq\n"),
    Case("label-continuation", "FROM busybox:local\nLABEL one=1 \\\n      two=\"2 2\" \\\n      three=3\n"
         "LABEL one=override\n"),
    Case("add-url", "FROM busybox:local\nADD {url}/file.txt /u/\nADD {url}/dir/named /u/renamed\n"
         "ADD {url}/a.tar.gz /u/tgz/\n",
         serve={"/file.txt": b"served\n", "/dir/named": b"named\n", "/a.tar.gz": _archive("gz")},
         why="a downloaded archive is not extracted; downloads are 0600 in docker"),
    Case("volume-then-run", "FROM busybox:local\nRUN mkdir /data && echo before > /data/b\nVOLUME /data\n"
         "RUN echo after > /data/a && echo outside > /o\n", ignore_paths=("data/a",),
         why="data/a: docker's classic builder discards what a RUN writes into a declared VOLUME; "
         "BuildKit (and pybuild) keep it"),
    Case("workdir-as-user", "FROM busybox:local\nUSER app\nWORKDIR /made/by/app\nUSER 1234\nWORKDIR rel\n"),
    Case("copy-from-keeps-owner", "FROM busybox:local AS src\nRUN mkdir -p /out/d && echo f > /out/d/f && "
         "chown -R 1234:5 /out && chmod 0700 /out/d\n"
         "FROM busybox:local\nCOPY --from=src /out /kept\nCOPY --from=src --chown=7:8 /out /chowned\n"),
    Case("add-tar-bz2", "FROM busybox:local\nADD a.tar.bz2 /bz/\n", {"a.tar.bz2": _archive("bz2")}),
    Case("copy-ignores-user", "FROM busybox:local\nUSER app\nCOPY a.txt src /as-app/\n",
         {"a.txt": "a", "src/f": "f"}),
    Case("context-modes", "FROM busybox:local\nCOPY . /m/\n",
         {"private": "p", "exec": "x", "ro/f": "r", "open/g": "g"},
         modes={"private": 0o600, "exec": 0o755, "ro/f": 0o444, "ro": 0o500, "open": 0o777}),
    Case("entrypoint-empty-stopsignal-number", "FROM busybox:local AS base\nENTRYPOINT [\"sh\"]\nCMD [\"x\"]\n"
         "FROM base\nENTRYPOINT []\nSTOPSIGNAL 9\n"),
    # -- COPY/ADD and file-system semantics (second round)
    Case("copy-context-hardlinks", "FROM busybox:local\nCOPY . /h/\nCOPY second /only-second\n",
         {"first": "same inode\n", "dir/x": "x"}, hardlinks={"second": "first", "dir/y": "dir/x"}),
    Case("copy-dir-with-dir-symlinks", "FROM busybox:local\nCOPY src /s/\n",
         {"src/real/f": "f"}, symlinks={"src/ln": "real", "src/abs": "/etc", "src/loop1": "loop2",
                                         "src/loop2": "loop1", "src/real/up": ".."}),
    Case("copy-context-symlink-to-dir", "FROM busybox:local\nCOPY ln /t\nCOPY ln/ /t2/\nCOPY ln/f /t3\n",
         {"real/f": "f"}, symlinks={"ln": "real"}),
    Case("copy-from-last-symlink", "FROM busybox:local AS src\nRUN mkdir /real && echo f > /real/f && "
         "ln -s /real /abs && ln -s real/f /relf\n"
         "FROM busybox:local\nCOPY --from=src /abs /a1\nCOPY --from=src /relf /a2\n"),
    Case("copy-from-through-symlink", "FROM busybox:local AS src\nRUN mkdir -p /real/sub && echo f > /real/sub/f && "
         "ln -s /real /abs && ln -s real /rel && ln -s ../../../real /esc\n"
         "FROM busybox:local\nCOPY --from=src /abs/sub/f /t1\nCOPY --from=src /rel/sub /t2\n"
         "COPY --from=src /esc/sub/f /t3\n"),
    Case("copy-from-wildcard", "FROM busybox:local AS src\nRUN mkdir -p /o/d1 /o/d2 && echo 1 > /o/a.txt && "
         "echo 2 > /o/b.txt && echo 3 > /o/c.md && echo 4 > /o/d1/x && ln -s a.txt /o/l.txt\n"
         "FROM busybox:local\nCOPY --from=src /o/*.txt /w/\nCOPY --from=src /o/d? /dirs/\n"),
    Case("copy-dest-dot-suffix", "FROM busybox:local\nWORKDIR /app\nCOPY a.txt sub/.\nCOPY a.txt /d/.\n"
         "COPY a.txt /etc/.\nCOPY src ./\nCOPY a.txt .\n", {"a.txt": "a", "src/f": "f"}),
    Case("copy-dest-dangling-symlink", "FROM busybox:local\nRUN ln -s /nowhere/file /dangle && ln -s missing /etc/rel\n"
         "COPY a.txt /dangle\nCOPY a.txt /etc/rel\n", {"a.txt": "a"}),
    Case("copy-dest-symlink-to-file", "FROM busybox:local\nRUN echo old > /old && ln -s /old /pw\nCOPY a.txt /pw\n",
         {"a.txt": "new"}),
    Case("copy-dest-symlink-dir-no-slash", "FROM busybox:local\nRUN mkdir /real && ln -s real /ld && ln -s ../../.. /up\n"
         "COPY a.txt /ld\nCOPY src /ld\nCOPY a.txt /up/escaped\n", {"a.txt": "a", "src/f": "f"}),
    Case("copy-chown-group-only", "FROM busybox:local\nCOPY --chown=:app a.txt /g\n", {"a.txt": "a"}, fails=True),
    Case("copy-chown-name-numeric-mix", "FROM busybox:local\nCOPY --chown=app:5678 a.txt /x\n"
         "COPY --chown=1234:app a.txt /y\nCOPY --chown=1234:nogroup a.txt /z\n", {"a.txt": "a"}),
    Case("copy-chown-new-parents", "FROM busybox:local\nRUN mkdir -p /p/q && chown 5:6 /p && chmod 700 /p/q\n"
         "COPY --chown=7:8 a.txt /p/q/r/s/a\nCOPY --chown=7:8 src /p/new/deeper/\n", {"a.txt": "a", "src/f": "f"}),
    Case("copy-chown-into-existing-dir", "FROM busybox:local\nRUN mkdir /exist && chown 5:6 /exist && chmod 750 /exist\n"
         "COPY --chown=7:8 src /exist\nCOPY --chown=app src/ /etc/\n", {"src/f": "f", "src/d/g": "g"}),
    Case("copy-chown-unknown-group", "FROM busybox:local\nCOPY --chown=app:nosuchgroup a.txt /x\n", {"a.txt": "a"},
         fails=True),
    Case("copy-chown-symlinks", "FROM busybox:local\nCOPY --chown=7:8 src /c/\nCOPY --chown=9 ln /ln\n",
         {"src/f": "f", "t": "t"}, symlinks={"src/l": "f", "src/dangling": "nope", "ln": "t"}),
    Case("copy-special-mode-bits", "FROM busybox:local\nCOPY . /m/\n",
         {"suid": "s", "sgid": "g", "none": "n", "sticky/f": "f", "sgiddir/f": "f", "zero/f": "z"},
         modes={"suid": 0o4755, "sgid": 0o2711, "none": 0, "sticky": 0o1777, "sgiddir": 0o2775,
                "zero/f": 0, "zero": 0o311}),
    Case("copy-empty-files", "FROM busybox:local\nCOPY empty /e\nCOPY dir /d/\nCOPY empty dir/zero /both/\n",
         {"empty": "", "dir/zero": "", "dir/sub/.keep": ""}),
    Case("copy-odd-names", "FROM busybox:local\nCOPY . /n/\n",
         {"a b.txt": "s", "new\nline": "n", "back\\slash": "b", "caf\udce9": "latin1", "-dash": "d",
          "#hash": "h", "$dollar": "d", "it's": "q", "tab\there": "t", "dir with space/x y": "xy"}),
    Case("copy-json-form-spaces", "FROM busybox:local\nCOPY [\"a b.txt\", \"/x/\"]\nCOPY [\"a b.txt\", \"/y z\"]\n"
         "ADD [\"dir with space\", \"/w s/\"]\nCOPY [\"a b.txt\", \"c*.txt\", \"/multi/\"]\n",
         {"a b.txt": "s", "dir with space/f g": "f", "c 1.txt": "c"}),
    Case("copy-deep-nesting", "FROM busybox:local\nCOPY deep /deep\nCOPY deep/" + "/".join(["n"] * 80) + "/leaf /leaf\n",
         {"deep/" + "/".join(["n"] * 80) + "/leaf": "deep", "deep/" + "/".join(["m"] * 30) + "/e": ""}),
    Case("copy-wildcard-dotfiles", "FROM busybox:local\nCOPY * /all/\nCOPY .[a-z]* /dots/\n",
         {".hidden": "h", ".config/x": "x", "plain": "p"}),
    Case("copy-wildcard-dir-component", "FROM busybox:local\nCOPY */*.txt /w/\nCOPY */same /s/\n",
         {"a/f.txt": "a", "b/g.txt": "b", "c/h.md": "c", "a/same": "from a", "b/same": "from b"}),
    Case("copy-wildcard-no-match", "FROM busybox:local\nCOPY *.nomatch /x/\n", {"a.txt": "a"}, fails=True),
    Case("copy-env-dest", "FROM busybox:local\nENV D=/envdest F=name\nCOPY a.txt $D/\nCOPY a.txt ${D}2/$F\n"
         "ARG SUB=argsub\nCOPY a.txt /$SUB/\n", {"a.txt": "a"}),
    Case("copy-src-dotted-paths", "FROM busybox:local\nCOPY ./src/../a.txt /x\nCOPY ./ /all/\nCOPY src/. /s/\n",
         {"a.txt": "a", "src/f": "f"}),
    Case("copy-file-onto-existing-dir-name", "FROM busybox:local\nRUN mkdir -p /x/a.txt\nCOPY a.txt /x/\n",
         {"a.txt": "a"}),
    Case("copy-dir-over-base-dir-symlink", "FROM busybox:local\nRUN mkdir -p /real /d && ln -s /real /d/sub\n"
         "COPY src /d/\n", {"src/sub/f": "f"}),
    Case("copy-file-over-base-symlink", "FROM busybox:local\nRUN mkdir /d && ln -s /etc/passwd /d/l\nCOPY src /d/\n",
         {"src/l": "regular now"}),
    Case("copy-from-chown-names", "FROM busybox:local AS src\nRUN mkdir -p /o/d && echo f > /o/d/f && ln -s d /o/l\n"
         "FROM busybox:local\nCOPY --from=src --chown=app:app /o /o\nCOPY --from=src --chown=app /o/d/f /f\n"),
    Case("copy-from-special-files", "FROM busybox:local AS src\nRUN mkdir /o && mkfifo /o/fifo && "
         "echo x > /o/suid && chmod 4711 /o/suid && mkdir /o/sticky && chmod 1777 /o/sticky && "
         "echo h > /o/h1 && ln /o/h1 /o/h2\n"
         "FROM busybox:local\nCOPY --from=src /o /o\n"),
    Case("add-archive-detected-by-content", "FROM busybox:local\nADD data.bin /x/\nADD blob.gz.txt /y/\n",
         {"data.bin": _archive(), "blob.gz.txt": _archive("gz")}),
    Case("add-tar-absolute-names", "FROM busybox:local\nADD abs.tar /t/\n",
         {"abs.tar": _tar(("/abs/f", F, b"abs", 0o644, 0, 0), ("./dot/g", F, b"g", 0o600, 1, 2),
                          ("/abs", D, b"", 0o711, 3, 4))}),
    Case("add-tar-whiteout-names", "FROM busybox:local\nRUN mkdir -p /w/sub && touch /w/keep /w/sub/s\nADD wh.tar /w/\n",
         {"wh.tar": _tar((".wh.keep", F, b"", 0o644, 0, 0), ("sub/.wh..wh..opq", F, b"", 0o644, 0, 0),
                         ("n", F, b"n", 0o644, 0, 0))}),
    Case("add-tar-merge-existing", "FROM busybox:local\nRUN mkdir -p /m/keep && echo k > /m/keep/k && echo old > /m/over && "
         "chown 5:5 /m/keep && chmod 700 /m/keep\nADD m.tar /m/\n",
         {"m.tar": _tar(("keep", D, b"", 0o750, 42, 43), ("keep/new", F, b"new", 0o640, 42, 43),
                        ("over", F, b"replaced", 0o600, 1, 1), ("fresh/f", F, b"f", 0o644, 0, 0))}),
    Case("add-tar-dir-entry-over-base-dir", "FROM busybox:local\nADD d.tar /\n",
         {"d.tar": _tar(("tmp", D, b"", 0o700, 42, 43), ("tmp/x", F, b"x", 0o644, 0, 0),
                        ("etc/", D, b"", 0o750, 0, 0))}),
    Case("add-tar-links", "FROM busybox:local\nADD l.tar /l/\n",
         {"l.tar": _tar(("a", F, b"content", 0o644, 0, 0), ("b", H, "a", 0o644, 0, 0),
                        ("sub/deep/h", H, "a", 0o644, 0, 0), ("c", S, "a", 0o777, 0, 0),
                        ("abs", S, "/etc/passwd", 0o777, 5, 5))}),
    Case("add-tar-no-dir-entries-no-slash", "FROM busybox:local\nADD a.tar /newdir\n",
         {"a.tar": _tar(("a/b/c/f", F, b"f", 0o600, 7, 7))}),
    Case("add-empty-tars", "FROM busybox:local\nADD empty.tar zero.tar /z/\n",
         {"empty.tar": b"\0" * 1024, "zero.tar": b""}),
    Case("add-tar-special-entries", "FROM busybox:local\nADD s.tar /s/\n",
         {"s.tar": _tar(("fifo", tarfile.FIFOTYPE, b"", 0o644, 0, 0), ("null", tarfile.CHRTYPE, (1, 3), 0o666, 0, 0),
                        ("suid", F, b"s", 0o4755, 0, 0), ("sticky", D, b"", 0o1777, 0, 0))}),
    Case("add-tar-over-symlinked-dest", "FROM busybox:local\nRUN mkdir /real && ln -s /real /e\nADD a.tar /e/\n",
         {"a.tar": _archive()}),
    Case("add-url-dest-forms", "FROM busybox:local\nADD {url}/f.txt /etc\nADD {url}/f.txt /newname\n"
         "ADD --chown=app {url}/f.txt /owned/\nADD {url}/path/name.txt?x=1 /q/\n",
         serve={"/f.txt": b"f\n", "/path/name.txt?x=1": b"q\n"}),
    # A URL path naming no file: BuildKit names the download __unnamed__ (a trailing '/' is dropped
    # first, so /sub/ names "sub"); docker's classic builder fails unless Content-Disposition names
    # one, so docker builds the same files from URLs that name them.
    Case("add-url-no-filename", "FROM busybox:local\nADD {url}/ /d/\nADD {url}/sub/ /e/\n",
         serve={"/": b"index\n", "/__unnamed__": b"index\n", "/sub/": b"s\n", "/sub": b"s\n"},
         docker_dockerfile="FROM busybox:local\nADD {url}/__unnamed__ /d/\nADD {url}/sub /e/\n"),
    Case("run-sparse-files", "FROM busybox:local\nRUN dd if=/dev/zero of=/sparse bs=1 count=0 seek=4194304 && "
         "printf x | dd of=/sparse2 bs=1 seek=1048576 conv=notrunc\n"),
    Case("run-metadata-only-change", "FROM busybox:local\nRUN chmod 600 /etc/passwd && chown 5:6 /etc/group && "
         "chmod 700 /root && chown 1:1 /var && chown -h 9:9 /bin/sh\n"),
    Case("run-hardlink-to-base-file", "FROM busybox:local\nRUN ln /etc/passwd /pw && ln /etc/group /etc/group2\n"
         "RUN echo more >> /pw\n"),
    Case("run-dir-to-file-and-back", "FROM busybox:local\nRUN mkdir -p /a/b && touch /a/b/c && echo f > /f\n"
         "RUN rm -rf /a && echo now-file > /a && rm /f && mkdir /f && touch /f/in\n"),
    Case("run-rm-through-symlink-parent", "FROM busybox:local\nRUN mkdir /real && touch /real/a /real/b && ln -s real /lnk\n"
         "RUN rm /lnk/a && echo new > /lnk/c\n"),
    Case("run-symlink-dir-swap", "FROM busybox:local\nRUN ln -s /etc /x && mkdir /y && touch /y/f\n"
         "RUN rm /x && mkdir /x && touch /x/f && rm -r /y && ln -s /tmp /y\n"),
    Case("run-special-files-across-layers", "FROM busybox:local\nRUN mkfifo /p1 && mknod /blk b 7 0\n"
         "RUN rm /p1 && echo > /p1 && chmod 600 /blk && mknod /tmp/c c 1 5\n"),
    Case("workdir-existing-perms", "FROM busybox:local\nRUN mkdir /w && chmod 700 /w && chown 5:6 /w\nWORKDIR /w\n"
         "WORKDIR /tmp/new\nWORKDIR /w/sub\n"),
    Case("workdir-dangling-symlink", "FROM busybox:local\nRUN ln -s /nowhere/deep /dw\nWORKDIR /dw\nRUN pwd > /pwd\n"),
    Case("copy-wildcard-go-semantics", "FROM busybox:local\nCOPY *.txt /w/\nCOPY **/*.md /m/\nCOPY [!a]*.c /n/\n",
         {"a.txt": "a", "dir/b.txt": "b", "dir.txt/c": "c", "x/f.md": "f", "x/y/g.md": "g", "h.md": "h",
          "!x.c": "bang", "a.c": "a", "b.c": "b"}),
    Case("copy-wildcard-symlink-match", "FROM busybox:local AS src\nRUN mkdir -p /o/real && echo r > /o/real/f && "
         "ln -s real /o/lreal && echo t > /o/t && ln -s t /o/lt\n"
         "FROM busybox:local\nCOPY --from=src /o/l* /w/\n"),
    Case("copy-context-wildcard-symlinks", "FROM busybox:local\nCOPY l* /w/\n",
         {"real/f": "f", "t": "t"}, symlinks={"lreal": "real", "lt": "t"}),
    Case("copy-symlink-src-dest-dir", "FROM busybox:local AS src\nRUN echo t > /target && ln -s target /named\n"
         "FROM busybox:local\nCOPY --from=src /named /d/\nCOPY --from=busybox:local /bin/sh /e/\nCOPY ln /f/\n",
         {"t": "t"}, symlinks={"ln": "t"}),
    Case("copy-dir-mode-into-existing-dir", "FROM busybox:local\nCOPY priv /tmp/\nCOPY priv /etc\nCOPY priv /new/\n",
         {"priv/f": "f"}, modes={"priv": 0o700}),
    Case("copy-dir-to-existing-file-no-slash", "FROM busybox:local\nCOPY src /etc/passwd\n", {"src/f": "f"},
         fails=True),
    Case("copy-file-to-existing-file-slash", "FROM busybox:local\nCOPY a.txt /etc/passwd/\n", {"a.txt": "a"},
         fails=True),
    Case("copy-dest-parent-is-file", "FROM busybox:local\nCOPY a.txt /etc/passwd/x\n", {"a.txt": "a"}, fails=True),
    Case("copy-dest-odd-forms", "FROM busybox:local\nWORKDIR /a/b\nCOPY a.txt ../x\nCOPY a.txt ~/t\n"
         "COPY a.txt //double//slash\nCOPY a.txt ./c/../d/\n", {"a.txt": "a"}),
    Case("copy-chown-user-added-in-run", "FROM busybox:local\nRUN echo grp:x:3001: >> /etc/group && "
         "echo bob:x:2001:3001::/home/bob:/bin/sh >> /etc/passwd\n"
         "COPY --chown=bob:grp a.txt /b1\nCOPY --chown=bob:app a.txt /b2\nCOPY --chown=2001:grp a.txt /b3\n", {"a.txt": "a"}),
    Case("copy-from-deleted-path", "FROM busybox:local AS src\nRUN mkdir /o && touch /o/f\nRUN rm -rf /o\n"
         "FROM busybox:local\nCOPY --from=src /o /o\n", fails=True),
    Case("copy-from-opaque-dir", "FROM busybox:local AS src\nRUN mkdir /o && touch /o/old\nRUN rm -rf /o && mkdir /o && touch /o/new\n"
         "FROM busybox:local\nCOPY --from=src /o /o\n"),
    Case("copy-long-symlink-target", "FROM busybox:local\nCOPY . /c/\nRUN ln -s /" + "t" * 150 + "/" + "u" * 100 + " /run-long\n",
         {"f": "f"}, symlinks={"ctx-long": "x" * 200}),
    Case("copy-context-hardlinks-then-modify", "FROM busybox:local\nCOPY . /h/\nRUN echo more >> /h/a\n",
         {"a": "shared\n"}, hardlinks={"b": "a"}),
    Case("add-tar-order-quirks", "FROM busybox:local\nADD q.tar /q/\n",
         {"q.tar": _tar(("d/f", F, b"f", 0o644, 0, 0), ("d", D, b"", 0o500, 5, 5),
                        ("dup", F, b"first", 0o644, 0, 0), ("dup", F, b"second", 0o600, 1, 1),
                        ("x", F, b"file", 0o644, 0, 0), ("x", D, b"", 0o755, 0, 0), ("x/y", F, b"y", 0o644, 0, 0),
                        ("z", D, b"", 0o755, 0, 0), ("z/in", F, b"in", 0o644, 0, 0), ("z", F, b"now file", 0o644, 0, 0))}),
    Case("add-tar-symlink-then-through", "FROM busybox:local\nADD s.tar /s/\n",
         {"s.tar": _tar(("sub", D, b"", 0o755, 0, 0), ("l", S, "sub", 0o777, 0, 0), ("l/f", F, b"via link", 0o644, 0, 0))}),
    Case("add-tar-root-entry", "FROM busybox:local\nADD r.tar /t/\nADD r.tar /tmp/\n",
         {"r.tar": _tar(("./", D, b"", 0o700, 42, 43), ("./f", F, b"f", 0o644, 0, 0))}),
    Case("add-tar-long-names", "FROM busybox:local\nADD g.tar p.tar /long/\n",
         {"g.tar": _gnu_tar(), "p.tar": _tar(("p" * 150 + "/" + "q" * 120, F, b"pax", 0o644, 0, 0),
                                              ("ls", S, "z" * 180, 0o777, 0, 0))}),
    Case("add-gzip-not-tar", "FROM busybox:local\nADD text.gz /g/\nADD trunc.tar.gz /g/\n",
         {"text.gz": _gzip(b"just text, not a tar\n"), "trunc.tar.gz": _archive("gz")[:40]}),
    Case("add-tar-to-existing-file", "FROM busybox:local\nADD a.tar /etc/passwd\n", {"a.tar": _archive()},
         fails=True),
    Case("add-tar-chown-into-existing", "FROM busybox:local\nRUN mkdir /x && chown 5:5 /x\nADD --chown=app a.tar plain /x/\n",
         {"a.tar": _archive(), "plain": "p"},
         docker_dockerfile="FROM busybox:local\nRUN mkdir /x && chown 5:5 /x\nADD --chown=app a.tar plain /x/\n"
         "RUN chown -Rh app:app /x/inner /x/top.txt\n",
         why="an existing dest keeps its owner; the archive's entries take --chown's (BuildKit)"),
    Case("add-url-workdir-and-overwrite", "FROM busybox:local\nWORKDIR /w\nADD {url}/f.txt rel\nADD {url}/f.txt .\n"
         "ADD {url}/f.txt /etc/passwd\n", serve={"/f.txt": b"f\n"}),
    Case("add-url-404", "FROM busybox:local\nADD {url}/missing /m\n", serve={"/f": b"f"}, fails=True),
    Case("run-setgid-inheritance", "FROM busybox:local\nRUN mkdir /sg && chown :app /sg && chmod 2775 /sg && "
         "touch /sg/f && mkdir /sg/d && chmod 755 /tmp\n"),
    Case("run-replace-base-symlinks", "FROM busybox:local\nRUN rm /bin/wc && ln -s /nonexistent /bin/wc && "
         "rm /bin/seq && echo file > /bin/seq && rm -r /var && ln -s /tmp /var\n"),
    Case("run-rename-dirs", "FROM busybox:local\nRUN mkdir -p /r/a/b && touch /r/a/b/f /r/a/g\n"
         "RUN mv /r/a /r/z && mv /usr /usr2 && mkdir /r/a && touch /r/a/new\n"),
    Case("run-hardlink-across-layers", "FROM busybox:local\nRUN echo one > /a\nRUN ln /a /b\nRUN rm /a\n"
         "RUN echo two >> /b && ln /b /c\n"),
    Case("run-non-utf8-names", "FROM busybox:local\nRUN touch \"/$(printf 'caf\\351')\" \"/a\\\\b\" \"/new$(printf '\\nl')\" && "
         "mkdir \"/$(printf 'd\\377')\" && touch \"/$(printf 'd\\377')/in\"\n"),
    Case("run-chown-recursive-base", "FROM busybox:local\nRUN chown -R 1:1 /etc /usr && chmod -R go-rwx /etc\n"),
    Case("workdir-symlink-to-file", "FROM busybox:local\nRUN ln -s /etc/passwd /wf\nWORKDIR /wf\n", fails=True),
    Case("add-tar-replaces-file-and-dir", "FROM busybox:local\nRUN mkdir -p /t/d/sub && touch /t/d/in /t/d/sub/x && "
         "echo f > /t/f && ln -s d /t/l\nADD r.tar /t/\n",
         {"r.tar": _tar(("d", F, b"now a file", 0o644, 0, 0), ("f", D, b"", 0o755, 0, 0), ("f/in", F, b"i", 0o644, 0, 0),
                        ("l", F, b"no longer a link", 0o644, 0, 0))}),
    Case("copy-file-replaces-nonempty-dir", "FROM busybox:local\nRUN mkdir -p /d/x/sub && touch /d/x/in /d/x/sub/y\n"
         "COPY src /d/\n", {"src/x": "file now"}),
    Case("copy-symlink-replaces-dir", "FROM busybox:local\nRUN mkdir -p /d/x && touch /d/x/in\nCOPY src /d/\n",
         {"src/t": "t"}, symlinks={"src/x": "t"}),
    Case("copy-dir-replaces-file", "FROM busybox:local\nRUN mkdir /d && echo f > /d/x\nCOPY src /d/\n",
         {"src/x/in": "in"}),
    Case("copy-from-dir-replaces-symlink-file", "FROM busybox:local AS s\nRUN mkdir -p /o/x && touch /o/x/in && echo l > /o/l\n"
         "FROM busybox:local\nRUN mkdir /d && ln -s /etc /d/x && mkdir /d/l\nCOPY --from=s /o /d\n"),
    # -- failing builds
    Case("failing-run-later-stage", "FROM busybox:local AS a\nRUN true\nFROM a\nRUN echo out && false\n", fails=True),
    Case("unknown-instruction", "FROM busybox:local\nFOO bar\n", fails=True),
    Case("env-without-value", "FROM busybox:local\nENV A\n", fails=True),
    Case("duplicate-stage-name", "FROM busybox:local AS x\nFROM busybox:local AS x\n", fails=True,
         buildkit_warns="Duplicate stage name \"x\"",
         why="docker's classic builder refuses a reused stage name; BuildKit (pybuild's reference for "
         "stages) builds it and warns (DuplicateStageName); pybuild must at least warn"),
    Case("no-from", "RUN true\n", fails=True),
    Case("copy-outside-context", "FROM busybox:local\nCOPY ../x /x\n", fails=True),
    Case("copy-from-missing-stage", "FROM busybox:local\nCOPY --from=nosuchstage /x /x\n", fails=True),
    Case("stopsignal-invalid", "FROM busybox:local\nSTOPSIGNAL SIGFOO\n", fails=True),
    Case("expose-invalid", "FROM busybox:local\nEXPOSE 80 99999\n", fails=True),
    Case("copy-from-itself", "FROM busybox:local\nCOPY --from=0 /etc/passwd /x\n", fails=True),
    Case("invalid-stage-name", "FROM busybox:local AS 1bad\n", fails=True),
    Case("healthcheck-interval-too-short", "FROM busybox:local\nHEALTHCHECK --interval=0.1ms CMD true\n",
         fails=True),
    # An absolute link in the context means the context's root, as docker's builder resolves it.
    Case("copy-absolute-symlink-in-context", "FROM busybox:local\nCOPY abslink /a\nCOPY absfile /b\n",
         {"real/f": "hi\n"}, symlinks={"abslink": "/real", "absfile": "/real/f"}),
    Case("copy-dockerignored-source", "FROM busybox:local\nCOPY a.txt /a\n",
         {".dockerignore": "a.txt\n", "a.txt": "a"}, fails=True),
    # -- explore-b: instruction semantics and the image config
    Case("xb-env-same-line-ref", "FROM busybox:local\nENV A=0\nENV A=1 B=$A C=${A}x\nRUN echo \"$A $B $C\" > /abc\n"),
    Case("xb-env-escaped-dollar", "FROM busybox:local\nENV H=home\nENV A=\\$H B='$H' C=\"\\$H\" D=\"'$H'\" E='\"$H\"'\n"
         "RUN echo \"$A|$B|$C|$D|$E\" > /e\n"),
    Case("xb-default-forms", "FROM busybox:local\nENV A=a E=\nWORKDIR /${A:-x}/${B:-y}/${A:+z}/${B:+w}end\n"
         "LABEL l=${B:+nope}end m=${A:-q} n=${E:-empty} p=${A:+${A}${A}}\n"
         "ENV F=${B:-$A} G=${A:+\"q d\"}\n"),
    Case("xb-env-path-prepend", "FROM busybox:local\nENV PATH=/custom/bin:$PATH\nRUN echo $PATH > /p\n"
         "ENV PATH /second:${PATH}\n"),
    Case("xb-arg-run-env-only", "FROM busybox:local\nARG X=1\nARG Y=two\nRUN echo \"$X $Y\" > /x\n"
         "RUN env | grep -E '^(X|Y)=' | sort > /env\nENV Z=3\nRUN true\n", build_args=("Y=cli",)),
    Case("xb-arg-no-value-unset", "FROM busybox:local\nARG A\nRUN echo \"[$A][${A-unset}]\" > /a\n"),
    Case("xb-build-arg-undeclared", "FROM busybox:local\nARG USED=1\nRUN echo \"[$NOPE][$USED]\" > /n\n",
         build_args=("NOPE=1",)),
    Case("xb-proxy-build-arg", "FROM busybox:local\nRUN echo \"[$HTTP_PROXY][$no_proxy][$FTP_PROXY]\" > /p\n",
         build_args=("HTTP_PROXY=http://proxy.invalid:3128", "no_proxy=localhost"), same_history=False,
         why="history: docker's classic builder writes an empty build-arg prefix ('|0 /bin/sh -c ...') when only "
         "undeclared proxy args are passed; BuildKit (and pybuild) name only declared ARGs, so no prefix"),
    Case("xb-proxy-arg-declared", "FROM busybox:local\nARG HTTP_PROXY\nRUN echo \"[$HTTP_PROXY]\" > /p\n",
         build_args=("HTTP_PROXY=http://proxy.invalid:3128",)),
    Case("xb-arg-after-env", "FROM busybox:local\nENV A=env\nARG A=arg\nRUN echo $A > /a\nARG B=argb\nENV B=${B}-env\n"
         "RUN echo $B > /b\n", build_args=("A=cli", "B=clib"), ignore_paths=("a",),
         why="a: an ARG declared after an ENV of the same name overrides it in RUN's environment in BuildKit "
         "(dispatchArg adds it to the state's env; pybuild follows); docker's classic builder keeps the ENV "
         "value. The config's Env keeps A=env in both"),
    Case("xb-user-uid-not-in-passwd", "FROM busybox:local\nUSER 4242\nRUN id -u > /tmp/u && id -g > /tmp/g && touch /tmp/f\n"),
    Case("xb-user-name-group", "FROM busybox:local\nUSER app:root\nRUN touch /tmp/ar && id -g > /tmp/g1\n"
         "USER root:app\nRUN touch /tmp/ra && id -g > /tmp/g2\n"),
    Case("xb-user-numeric-workdir", "FROM busybox:local\nUSER 4242:4343\nWORKDIR /x/y\nUSER app\nWORKDIR /x/y/z\n"),
    Case("xb-shell-healthcheck-cmd", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-ec\"]\n"
         "HEALTHCHECK CMD echo $HOME | cat\nCMD echo a\nENTRYPOINT [\"x\"]\n"),
    Case("xb-healthcheck-all-options", "FROM busybox:local\nHEALTHCHECK --interval=1m30s --timeout=5s "
         "--start-period=2s --retries=4 CMD [\"CMD-SHELL\", \"true || false\"]\n"),
    # docker's classic builder merges a new HEALTHCHECK's zero options with the parent image's (its
    # commit merges configs); BuildKit and pybuild replace the whole healthcheck, so these cases
    # set the same options on both levels.
    Case("xb-healthcheck-none-over-base", "FROM pybuild-diff/xb-healthcheck-none-over-base-base:1\n"
         "HEALTHCHECK NONE\n",
         base="FROM busybox:local\nHEALTHCHECK CMD true\n"),
    Case("xb-healthcheck-inherited", "FROM busybox:local AS a\nHEALTHCHECK --retries=2 CMD true\n"
         "FROM a\nRUN true\nFROM a\nHEALTHCHECK --retries=5 --interval=9s CMD false\n"),
    Case("xb-stopsignal-forms", "FROM busybox:local\nENV S=SIGUSR1\nSTOPSIGNAL $S\nFROM busybox:local\n"
         "STOPSIGNAL sigterm\nFROM busybox:local\nSTOPSIGNAL SIGRTMIN+3\n"),
    Case("xb-expose-env-protocols", "FROM busybox:local\nENV P=8080\nARG Q=9090\n"
         "EXPOSE $P/tcp 53/UDP 132/sctp 7000-7001 ${Q}\nEXPOSE 80 80/tcp\n", same_history=False,
         why="history: BuildKit sorts EXPOSE's words before expanding variables (pybuild follows), docker's "
         "classic builder after"),
    Case("xb-volume-json-multi", "FROM busybox:local\nVOLUME [\"/a\", \"/b c\"]\nVOLUME /d /e\nVOLUME [\"/a\"]\n"),
    Case("xb-label-quotes-multiline", "FROM busybox:local\nLABEL desc=\"line1 \\\n line2\" q='single \"dq\"' "
         "esc=\"a\\\"b\" empty= \"\"=x\n"),
    Case("xb-label-override-base", "FROM pybuild-diff/xb-label-override-base-base:1\nLABEL b=3 c=4\n",
         base="FROM busybox:local\nLABEL a=1 b=2\n"),
    Case("xb-maintainer", "FROM busybox:local\nMAINTAINER John Doe <j@example.com>\nLABEL after=1\n"),
    Case("xb-onbuild-copy-arg", "FROM pybuild-diff/xb-onbuild-copy-arg-base:1\nRUN cat /o/f.txt /v > /all\n",
         {"f.txt": "child\n"}, build_args=("V=cli",),
         base="FROM busybox:local\nENV E=base\nONBUILD ARG V=dflt\nONBUILD RUN echo \"$V $E\" > /v\n"
         "ONBUILD COPY f.txt /o/\nONBUILD LABEL v=$V\n"),
    Case("xb-onbuild-raw-config", "FROM busybox:local\nENV X=1\nONBUILD ENV Y=$X\nONBUILD  RUN   echo  hi\n"
         "onbuild run true\n"),
    Case("xb-onbuild-grandchild", "FROM pybuild-diff/xb-onbuild-grandchild-base:1 AS child\n"
         "FROM child\nRUN ls / > /ls\n",
         base="FROM busybox:local\nONBUILD RUN echo once >> /once\n"),
    Case("xb-onbuild-onbuild", "FROM busybox:local\nONBUILD ONBUILD RUN true\n", fails=True),
    Case("xb-from-stage-via-arg", "ARG S=first\nFROM busybox:local AS first\nRUN echo 1 > /1\n"
         "FROM ${S}\nRUN echo 2 > /2\n"),
    Case("xb-from-arg-default", "ARG IMAGE=busybox:local\nARG IMG\nFROM ${IMAGE} AS a\nRUN echo a > /a\n"
         "FROM ${IMG:-busybox:local}\nCOPY --from=a /a /a\n"),
    Case("xb-stage-name-case", "FROM busybox:local AS Build\nRUN echo b > /b\nFROM BUILD\nRUN echo c > /c\n"
         "FROM busybox:local\nCOPY --from=bUiLd /b /b\n"),
    Case("xb-cmd-json-unicode", "FROM busybox:local\nCMD [\"echo\", \"\\u00e9t\\u00e9\", \"tab\\there\", \"ünï\", "
         "\"q\\\"uote\", \"back\\\\slash\", \"\\/\"]\n"),
    Case("xb-exec-form-invalid-json", "FROM busybox:local\nCMD [\"echo\", 'x']\nENTRYPOINT [not json\n"),
    Case("xb-instruction-case", "from busybox:local\nrun echo x > /x\nEnv A=1\ncOpY a.txt /a\nworkdir /w\n"
         "Label l=1\nexpose 80\n", {"a.txt": "a"}),
    Case("xb-continuation-comments", "FROM busybox:local\nRUN echo a \\\n# a comment\n    && echo b \\\n"
         "  # indented comment\n  > /cb\n"),
    Case("xb-escape-backtick", "# escape=`\nFROM busybox:local\nRUN echo a `\n  b > /bt\nENV P=C:\\path\\x\n"
         "COPY a.txt /dir\\\n", {"a.txt": "a"}),
    Case("xb-empty-continuation-lines", "FROM busybox:local\nRUN echo a \\\n\n  b \\\n   \n  c > /e\n"),
    Case("xb-directive-after-comment", "# a comment\n# escape=`\nFROM busybox:local\nRUN echo a \\\n  b > /d\n"),
    Case("xb-healthcheck-no-command", "FROM busybox:local\nHEALTHCHECK CMD\n", fails=True),
    Case("xb-healthcheck-bad-type", "FROM busybox:local\nHEALTHCHECK FOO true\n", fails=True),
    Case("xb-user-env-var", "FROM busybox:local\nENV U=app G=root\nUSER $U:${G}\nRUN id > /tmp/id\n"),
    Case("xb-env-empty-values", "FROM busybox:local\nENV A= B=\"\" C=c\nENV C=\nENV D=1 D=2\n"),
    Case("xb-env-replace-order", "FROM busybox:local\nENV A=1 B=2 C=3\nENV B=two\nENV A=one\n"),
    Case("xb-run-exec-form", "FROM busybox:local\nARG A=argval\nENV E=envval\n"
         "RUN [\"sh\", \"-c\", \"echo $A $E $HOME > /x\"]\n"),
    Case("xb-copy-chown-arg", "FROM busybox:local\nARG U=app\nENV D=/dest\nCOPY --chown=$U:${U} a.txt $D/\n",
         {"a.txt": "a"}),
    Case("xb-meta-arg-build-arg", "ARG T=nope\nFROM busybox:$T\nRUN echo \"[$T]\" > /t\n", build_args=("T=local",)),
    Case("xb-onbuild-forbidden", "FROM busybox:local\nONBUILD FROM busybox:local\n", fails=True),
    Case("xb-shell-invalid-json", "FROM busybox:local\nSHELL /bin/sh -c\n", fails=True),
    Case("xb-nested-default", "FROM busybox:local\nENV B=bee\nENV A=${X:-${B}} C=${B:+${X:-dflt}}\n"
         "RUN echo \"$A $C\" > /ac\n"),
    Case("xb-default-forms-nocolon", "FROM busybox:local\nENV E=\nLABEL o=${E-unset} p=${F-unset} q=${E+set} "
         "r=${F+set}\n",
         docker_dockerfile="FROM busybox:local\nENV E=\nLABEL o= p=unset q=set r=\n",
         why="${VAR-word} and ${VAR+word} (no colon: only unset counts) are BuildKit's; docker's classic "
         "builder refuses them"),
    Case("xb-workdir-relative-normalise", "FROM busybox:local\nWORKDIR /a/b\nWORKDIR ../c/./d//\n"
         "WORKDIR e/..//f\nRUN pwd > /pwd\n"),
    Case("xb-healthcheck-durations", "FROM busybox:local\nHEALTHCHECK --interval=2h --timeout=90s "
         "--start-period=1m CMD true\n"),
    Case("xb-env-key-expansion", "FROM busybox:local\nENV K=name\nENV $K=v ${K}2=w\nLABEL $K=l\n"),
    Case("xb-env-odd-values", "FROM busybox:local\nENV A=b=c my.var=1 _x=2 Q=\"a\"b'c'd\nENV L  b   c  \n"),
    Case("xb-arg-empty-default", "FROM busybox:local\nARG A=\nRUN echo \"[${A-unset}]\" > /a\n"),
    Case("xb-arg-case-sensitive", "FROM busybox:local\nARG a=lower\nARG A=upper\nRUN echo $a $A > /aA\n"),
    Case("xb-label-quoted-key", "FROM busybox:local\nLABEL 'single'=\"s\" \"dq\"='v' d=\"\"\n"),
    Case("xb-label-key-quoted-eq", "FROM busybox:local\nLABEL \"a=b\"=c\n", fails=True),
    Case("xb-label-no-value", "FROM busybox:local\nLABEL foo\n", fails=True),
    Case("xb-shell-nop-history", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-ec\"]\nENV A=1\nLABEL b=2\n"
         "WORKDIR /w\nCOPY a.txt .\nCMD [\"x\"]\n", {"a.txt": "a"}),
    Case("xb-comment-not-at-start", "FROM busybox:local\n   RUN echo a # not a comment > /c\n"
         "\t# indented comment\nENV X=1\n"),
    Case("xb-env-trailing-comment", "FROM busybox:local\nENV X=1 # trailing\n", fails=True),
    Case("xb-crlf-dockerfile", "FROM busybox:local\r\nRUN echo a \\\r\n  b > /crlf\r\nENV A=1\r\nLABEL l=\"x y\"\r\n"),
    Case("xb-bom-dockerfile", "\ufeffFROM busybox:local\nRUN echo bom > /bom\n"),
    Case("xb-continuation-at-eof", "FROM busybox:local\nRUN echo eof > /eof \\"),
    Case("xb-directive-forms", "#ESCAPE=`\n# syntax=docker/dockerfile:1\nFROM busybox:local\n"
         "RUN echo a `\n  b > /d\n"),
    Case("xb-onbuild-in-stage", "FROM busybox:local AS a\nONBUILD RUN echo trig > /t\nRUN echo a > /a\n"
         "FROM a\nRUN ls / > /ls\n"),
    Case("xb-onbuild-stage-copy-from", "FROM busybox:local AS a\nONBUILD RUN echo trig > /t\nRUN echo a > /a\n"
         "FROM busybox:local\nCOPY --from=a /a /a\n"),
    Case("xb-scratch-env-path", "FROM scratch\nENV A=1\nCOPY --from=busybox:local /bin/busybox /bin/sh\n"
         "WORKDIR /w\nCMD [\"x\"]\n", ignore_paths=("etc",),
         why="etc: docker's container export adds /etc (its init layer) to an image that has none"),
    Case("xb-scratch-label-only", "FROM scratch\nLABEL only=label\n", ignore_paths=("etc",),
         why="etc: docker's container export adds /etc (its init layer) to an image that has none"),
    Case("xb-stopsignal-names", "FROM busybox:local\nSTOPSIGNAL KILL\nFROM busybox:local\nSTOPSIGNAL 31\n"),
    Case("xb-stopsignal-zero", "FROM busybox:local\nSTOPSIGNAL 0\n", fails=True),
    Case("xb-healthcheck-retries-negative", "FROM busybox:local\nHEALTHCHECK --retries=-1 CMD true\n", fails=True),
    Case("xb-volume-empty", "FROM busybox:local\nVOLUME [\"\"]\n", fails=True),
    Case("xb-cmd-trailing-comma", "FROM busybox:local\nCMD [\"a\", \"b\",]\nENTRYPOINT [ ]\n"),
    Case("xb-run-exec-single", "FROM busybox:local\nRUN [\"touch\", \"/single\"]\nRUN [ \"sh\", \"-c\", "
         "\"echo  spaced  > /sp\" ]\n"),
    Case("xb-cmd-shell-whitespace", "FROM busybox:local\nCMD    echo   hi   \nENTRYPOINT\techo\tx\n"),
    Case("xb-env-path-lowercase", "FROM busybox:local\nENV path=/lower\nRUN echo $PATH-$path > /p\n"),
    Case("xb-expose-ip-mapping", "FROM busybox:local\nEXPOSE 127.0.0.1:80:80 8080:81/udp\n"),
    Case("xb-user-env-trailing", "FROM busybox:local\nARG U=app\nUSER ${U}\nRUN id -un > /tmp/u\nUSER 0:0\n"),
    Case("xb-env-backslashes", "FROM busybox:local\nENV A=\"a\\\"b\" B='c\\d' C=e\\\\f D=\"g\\\\h\" E=\"i\\j\"\n"
         "RUN echo \"$A|$B|$C|$D|$E\" > /bs\n"),
    Case("xb-expose-var-words", "FROM busybox:local\nENV PORTS=\"81 443/udp\"\nEXPOSE $PORTS\n", same_history=False,
         why="history: BuildKit sorts EXPOSE's words before expanding variables (pybuild follows), docker's "
         "classic builder after"),
    Case("xb-volume-var-words", "FROM busybox:local\nENV V=\"/va /vb\"\nVOLUME $V\n"),
    Case("xb-label-env-no-split", "FROM busybox:local\nENV V=\"a  b\"\nLABEL l=$V m=\"$V\" n=${V}x\nENV W=$V\n"),
    Case("xb-workdir-empty-var", "FROM busybox:local\nENV E=\nWORKDIR $E\nRUN pwd > /pwd\n",
         docker_dockerfile="FROM busybox:local\nENV E=\nWORKDIR /\nRUN pwd > /pwd\n",
         why="a WORKDIR that expands to nothing keeps the current directory in BuildKit (NormalizePath of "
         "''); docker's classic builder refuses it"),
    Case("xb-no-expansion-exec-forms", "FROM busybox:local\nENV X=val\nENTRYPOINT [\"$X\", \"${X}\"]\n"
         "HEALTHCHECK CMD echo $X\nRUN [\"sh\", \"-c\", \"echo '$X' > /lit\"]\nRUN [\"echo\", \"$X\"]\n"),
    Case("xb-copy-json-spaces", "FROM busybox:local\nCOPY [\"a b.txt\", \"c.txt\", \"/dst dir/\"]\n"
         "ADD [\"a b.txt\", \"/added file\"]\n", {"a b.txt": "ab", "c.txt": "c"}),
    Case("xb-stopsignal-arg", "FROM busybox:local\nARG SIG=SIGHUP\nSTOPSIGNAL $SIG\n"),
    Case("xb-user-colon-forms", "FROM busybox:local\nUSER app:\nRUN id > /tmp/id\n"),
    Case("xb-arg-multi-line", "FROM busybox:local\nARG A=1 \\\n    B=\"two words\" \\\n    C\n"
         "RUN echo \"$A|$B|${C-unset}\" > /abc\n", build_args=("C=cee",)),
    Case("xb-onbuild-env-expansion-child", "FROM pybuild-diff/xb-onbuild-env-expansion-child-base:1\n"
         "ENV NOT_SEEN=1\n",
         base="FROM busybox:local\nENV X=base\nONBUILD ENV Y=$X\nONBUILD LABEL y=${Y}\n"),
    # An absolute WORKDIR stays as written in the config (docker's normalizeWorkdir); steps run in it cleaned.
    Case("xb-workdir-trailing-slash", "FROM busybox:local\nWORKDIR /app/\nWORKDIR //srv//x/..\n"
         "RUN pwd > /pwd\nWORKDIR sub/\nRUN pwd > /pwd2\n"),
    # HEALTHCHECK history in Go's words: Duration.String() and %q of the retries rune.
    Case("xb-healthcheck-history-format", "FROM busybox:local\nHEALTHCHECK --interval=90500ms --timeout=100ms "
         "--retries=10 CMD true\n"),
    Case("xb-cmd-go-quoting", "FROM busybox:local\nCMD [\"\\u0001\", \"\\u200b\", \"\\u00a0\", \"\\u007f\"]\n"),
    # The parents an archive only implies are made where missing and otherwise left alone:
    # followed through symlinks (merged /usr), existing modes and owners kept (docker's Unpack).
    Case("add-tar-through-dest-symlink", "FROM busybox:local\nRUN mkdir -p /d/real /e/real && ln -s real /d/sub && "
         "ln -s real /e/sub\nADD nodir.tar /d/\nADD withdir.tar /e/\n",
         {"nodir.tar": _tar(("sub/f", F, b"f", 0o644, 0, 0)),
          "withdir.tar": _tar(("sub", D, b"", 0o755, 0, 0), ("sub/f", F, b"f", 0o644, 0, 0))}),
    Case("add-tar-implicit-parents-existing", "FROM busybox:local\nRUN mkdir -p /t/x && chown 5:5 /t/x && "
         "chmod 700 /t/x\nADD i.tar /t/\nADD i.tar /tmp/\nADD i.tar /new/deep/\n",
         {"i.tar": _tar(("x/f", F, b"f", 0o600, 9, 9), ("x/y/g", F, b"g", 0o644, 0, 0))}),
    Case("add-tar-merged-usr-symlink", "FROM busybox:local\nRUN mkdir -p /usr/lib && ln -s usr/lib /lib\n"
         "ADD l.tar /\n", {"l.tar": _tar(("lib/libx.so", F, b"elf", 0o755, 0, 0))}),
    # A hardlink in the archive to a file the destination has: docker links it there.
    Case("add-tar-hardlink-to-existing", "FROM busybox:local\nADD h.tar /etc/\n",
         {"h.tar": _tar(("pw2", H, "passwd", 0o644, 0, 0))}),
    # -- explore-c
    Case("xc-run-etc-hosts-bind", "FROM busybox:local\nRUN echo 10.0.0.1 foo >> /etc/hosts && echo h > /etc/hostname"
         " && echo nameserver 127.0.0.1 > /etc/resolv.conf && mkdir -p /tmp/t && echo t > /tmp/t/x\n"),
    Case("xc-dockerignore-forms", "FROM busybox:local\nCOPY . /ctx\n",
         {".dockerignore": "# comment\n/abs.txt\n./dot.txt\n  spaced.txt  \nsub/**\n!sub/**/keep\n"
                           "a/../b.txt\n*/nested.md\n",
          "abs.txt": "1", "dot.txt": "2", "spaced.txt": "3", "sub/keep": "k2",
          "b.txt": "b", "c/nested.md": "n", "c/d/nested.md": "n2", "nested.md": "n3"}),
    Case("xc-env-same-key-one-line", "FROM busybox:local\nENV A=1 A=2 B=$A\nENV C=$B D=$C\n"),
    Case("xc-expose-duplicates", "FROM busybox:local\nEXPOSE 80 80/tcp 80/udp\nEXPOSE 80\n"),
    Case("xc-healthcheck-cmd-shell-json", "FROM busybox:local\nHEALTHCHECK CMD [\"CMD-SHELL\", \"true\"]\n"),
    Case("xc-user-group-numeric-run", "FROM busybox:local\nUSER 4321:8765\nRUN id > /tmp/id; touch /tmp/f\n"
         "USER nobody:app\nRUN id > /tmp/id2\nUSER 0\nWORKDIR /w\n"),
    Case("xc-onbuild-base-pybuilt", "FROM pybuild-diff/xc-onbuild-base-pybuilt-base:1\nRUN ls /ob > /tmp/list\n",
         {"a.txt": "a", "d/b": "b"},
         base="FROM busybox:local\nONBUILD ARG X=dflt\nONBUILD COPY --chown=app . /ob/\n"
              "ONBUILD RUN echo $X > /ob/x\nONBUILD WORKDIR /ob/w\nONBUILD USER app\n"),
    Case("xc-cmd-entrypoint-across-stages", "FROM busybox:local AS a\nENTRYPOINT [\"/bin/sh\"]\nCMD [\"-c\", \"x\"]\n"
         "FROM a AS b\nCMD [\"-c\", \"y\"]\nFROM b\nENTRYPOINT []\n"),
    # A wildcard matching nothing beside a source that matches: docker copies what there is.
    Case("xc-copy-nomatch-plus-source", "FROM busybox:local AS s\nRUN echo s > /s\nFROM busybox:local\n"
         "COPY nomatch* a.txt /d/\nCOPY --from=s /nomatch* /s /f/\n", {"a.txt": "a"}),
    Case("xc-copy-nomatch-all-sources", "FROM busybox:local\nCOPY nomatch* *.none /d/\n", {"a.txt": "a"},
         fails=True),
    Case("xc-label-multiline", "FROM busybox:local\nLABEL desc=\"line1\\\n  line2\" k=\"a\\nb\" \\\n  e='s q'\n"),
    Case("xc-shell-then-run", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-c\", \"echo \\\"$0\\\" > /zero; exec sh -c \\\"$0\\\"\"]\n"
         "RUN echo hi > /hi\n"),
    Case("xc-stopsignal-names", "FROM busybox:local\nSTOPSIGNAL sigrtmin+3\n"),
    Case("xc-maintainer-then-label", "FROM busybox:local\nMAINTAINER A B <a@b>\nLABEL maintainer=x\nMAINTAINER C\n"),
    Case("xc-workdir-env-after-user", "FROM busybox:local\nENV D=/srv/app\nUSER app\nWORKDIR $D/sub\n"
         "WORKDIR ${D}/other\nUSER 1234\nWORKDIR /num\n"),
    Case("xc-run-delete-then-copy", "FROM busybox:local\nRUN rm -rf /etc/passwd /home\nCOPY a /etc/passwd\n"
         "COPY a /home/app/x\n", {"a": "root:x:0:0::/root:/bin/sh\n"}),
    Case("xc-copy-from-index-and-image", "FROM busybox:local\nRUN echo 0 > /z\nFROM busybox:local AS named\n"
         "RUN echo 1 > /o\nFROM busybox:local\nCOPY --from=0 /z /z\nCOPY --from=1 /o /o\n"
         "COPY --from=busybox:local /bin/busybox /bb\n"),
    Case("xc-run-process-env", "FROM busybox:local\nRUN env | grep -v '^HOSTNAME=' | sort > /env; umask > /umask;"
         " id > /id; ulimit -n > /nofile; ls /dev | sort > /devs; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status > /caps;"
         " test -t 0; echo $? > /tty; ls -d /proc/1 > /p1 2>&1; cat /proc/1/cmdline | tr '\\0' ' ' > /pid1 || true\n"
         "USER 4242\nRUN env | grep -v '^HOSTNAME=' | sort > /tmp/env2; id > /tmp/id2\n"),
    Case("xc-run-supplementary-groups", "FROM busybox:local\nRUN echo extra:x:777:app,nobody >> /etc/group && "
         "echo other:x:778:root,app >> /etc/group && echo odd:x:779:x,app, >> /etc/group\nUSER app\nRUN id > /tmp/id\nUSER app:other\n"
         "RUN id > /tmp/id2\nUSER 1000\nRUN id > /tmp/id3\n"),
    Case("xc-env-label-escapes", "FROM busybox:local\nENV A=\"a \\\"q\\\" b\" B=a\\ b C='x\"y' D=\\$HOME E='$HOME'\n"
         "LABEL l1=\\$HOME l2='$A' l3=\"$A\" l4=${A}\nRUN echo \"$A|$B|$C|$D|$E\" > /out\n"),
    Case("xc-arg-default-from-env", "FROM busybox:local\nENV E=fromenv\nARG A=$E-x\nARG B\nRUN echo $A $B > /o\n"
         "ENV F=$A\n", build_args=("B=$E",)),
    Case("xc-nobody-home-workdir", "FROM busybox:local\nCOPY --chown=nobody:app a /a\nUSER nobody\n"
         "WORKDIR /home/nobody/w\nRUN id > /tmp/id && echo $HOME > /tmp/home\n", {"a": "a"}),
    Case("xc-workdir-deleted-then-run", "FROM busybox:local\nWORKDIR /w/x\nRUN rm -rf /w\nRUN pwd > /p\n"
         "RUN rm -rf /w\nCOPY a rel/\n", {"a": "a"}),
    Case("xc-workdir-deleted-then-user-run", "FROM busybox:local\nWORKDIR /w\nRUN rm -rf /w\nUSER app\n"
         "RUN pwd > /tmp/p\n"),
    Case("xc-onbuild-chown-arg", "FROM pybuild-diff/xc-onbuild-chown-arg-base:1\n", {"a": "a"},
         base="FROM busybox:local\nONBUILD ARG U=app\nONBUILD COPY --chown=$U:$U a /home/$U/\n"
              "ONBUILD ENV H=/home/$U\nONBUILD WORKDIR $H/w\n"),
    Case("xc-env-unicode-label", "FROM busybox:local\nENV GREET=h\u00e9llo\u2603 \u00e9=x\nLABEL \u00fc=\"$GREET\"\n"
         "RUN echo \"$GREET\" > /g\n"),
    # Both refuse it: docker takes '$S' as an image name, BuildKit says expansion is not supported.
    Case("xc-copy-from-arg", "FROM busybox:local AS build\nRUN echo b > /b\nFROM busybox:local\nARG S=build\n"
         "COPY --from=$S /b /b\n", fails=True),
    Case("xc-env-required-var", "FROM busybox:local\nENV A=${UNSET:?must be set}\n", fails=True),
    Case("xc-env-alt-forms", "FROM busybox:local\nENV S=set E=\nENV A=${S:+alt} B=${E:+alt} G=${E:-dflt} "
         "H=${U:-${S:+n$S}}\n"),
    Case("xc-shell-form-cmd-after-shell", "FROM busybox:local AS a\nCMD echo a\nSHELL [\"/bin/ash\", \"-c\"]\n"
         "FROM a\nCMD echo b\nENTRYPOINT echo e\nHEALTHCHECK CMD echo h\n"),
    Case("xc-copy-dir-symlink-loop-ctx", "FROM busybox:local\nCOPY d /d\n", {"d/f": "f"},
         symlinks={"d/self": ".", "d/up": "..", "d/abs": "/etc"}),
    Case("xc-copy-hardlink-pair-dirs", "FROM busybox:local\nCOPY a /x/\nCOPY b /y/\nCOPY . /all/\n",
         {"a/f": "same"}, hardlinks={"b/g": "a/f", "a/h": "a/f"}),
    Case("xc-run-replace-dir-with-file-deep", "FROM busybox:local\nRUN mkdir -p /a/b/c && echo 1 > /a/b/c/f && "
         "ln -s /a/b /ab\nRUN rm -rf /a/b && echo file > /a/b\nRUN rm /a/b && mkdir -p /a/b/c && echo 2 > /a/b/c/g\n"),
    Case("xc-copy-readd-deleted-dir-content", "FROM busybox:local\nRUN mkdir -p /d/s && echo o > /d/s/old && "
         "echo k > /d/keep\nRUN rm -rf /d\nCOPY d /d\n", {"d/s/new": "n"}),
    Case("xc-run-chmod-sticky-setgid-dir", "FROM busybox:local\nRUN mkdir /s && chmod 3777 /s && mkdir /g && chmod 2755 /g "
         "&& chown 5:6 /g\nRUN mkdir /g/sub && touch /g/f /s/f && umask 077 && touch /u && mkdir /ud\n"),
    Case("xc-copy-from-stage-user-owned", "FROM busybox:local AS b\nUSER app\nWORKDIR /tmp/out\nUSER root\n"
         "RUN chown app /tmp/out\nUSER app\nRUN echo x > f && mkdir d && chmod 700 d\nFROM busybox:local\nCOPY --from=b /tmp/out /o\n"
         "COPY --from=b --chown=app /tmp/out/ /p/\n"),
    # A user without a group of the same name: docker's classic builder looks the group up by the
    # user's name (and fails); BuildKit takes the user's primary group from /etc/passwd.
    Case("xc-copy-chown-user-without-same-group", "FROM busybox:local\nCOPY --chown=nobody a /a\n", {"a": "a"},
         fails=True),
    # -- explore2-d
    Case("xd-onbuild-full-chain", "FROM pybuild-diff/xd-onbuild-full-chain-base:1 AS mid\n"
         "RUN pwd > /tmp/pwd; id > /tmp/id; echo \"$WHO\" > /tmp/who\nONBUILD RUN echo second > /tmp/second\n"
         "FROM mid\nRUN ls /ob > /tmp/ls\n",
         {"src/f": "f", "src/d/g": "g", "a.tar": _archive()}, build_args=("WHO=cli",), ignore_paths=("obvol",),
         why="obvol: docker's classic builder mounts a declared VOLUME in each later RUN and so commits its "
         "mount point (root 0755) into that layer; BuildKit (and pybuild) do not mount volumes in RUN. "
         "history: the last stage inherits the trigger's ARG from its parent stage in BuildKit (pybuild's "
         "reference for scoping), so its RUNs name WHO; not in docker's classic builder",
         same_history=False,
         base="FROM busybox:local\nONBUILD ARG WHO=dflt\nONBUILD COPY --chown=app:app src /ob/src/\n"
              "ONBUILD ADD a.tar /ob/tar/\nONBUILD RUN echo \"$WHO\" > /ob/who && id > /ob/id\n"
              "ONBUILD USER app\nONBUILD WORKDIR ob-rel\nONBUILD EXPOSE 81/udp 82\nONBUILD VOLUME /obvol\n"
              "ONBUILD HEALTHCHECK --interval=7s --timeout=3s --start-period=1s --retries=2 CMD true\n"
              "ONBUILD STOPSIGNAL SIGQUIT\nONBUILD ENTRYPOINT [\"sh\"]\nONBUILD CMD [\"-c\", \"x\"]\n"
              "ONBUILD SHELL [\"/bin/sh\", \"-xc\"]\nONBUILD LABEL who=$WHO\n"),
    Case("xd-onbuild-maintainer", "FROM busybox:local\nONBUILD MAINTAINER me\n", fails=True),
    Case("xd-onbuild-trigger-fails", "FROM pybuild-diff/xd-onbuild-trigger-fails-base:1\nRUN true\n",
         base="FROM busybox:local\nONBUILD RUN exit 4\n", fails=True),
    Case("xd-onbuild-copy-missing", "FROM pybuild-diff/xd-onbuild-copy-missing-base:1\n",
         base="FROM busybox:local\nONBUILD COPY nothere /x\n", fails=True),
    Case("xd-onbuild-copy-from-stage", "FROM busybox:local AS builder\nRUN echo b > /b\n"
         "FROM pybuild-diff/xd-onbuild-copy-from-stage-base:1\nRUN true\n",
         base="FROM busybox:local\nONBUILD COPY --from=builder /b /b\n"),
    Case("xd-passwd-oddities", "FROM busybox:local\nRUN printf '# comment\\n\\nshort:x:1\\n"
         "dup:x:2001:2001::/home/dup:/bin/sh\\ndup:x:2002:2002::/:/bin/sh\\n' >> /etc/passwd && "
         "printf 'dupg:x:3001:dup\\ndupg:x:3002:\\n#c\\n\\nsup:x:3003:root,dup\\n' >> /etc/group\n"
         "COPY --chown=dup:dupg a /a\nCOPY --chown=dup:sup a /b\nUSER dup\nRUN id > /tmp/id\nUSER dup:dupg\n"
         "RUN id > /tmp/id2\n", {"a": "a"}),
    Case("xd-chown-names-per-stage", "FROM busybox:local AS src\nRUN echo onlysrc:x:2500:2500::/:/bin/sh >> /etc/passwd"
         " && echo f > /f\nFROM busybox:local\nRUN echo onlydst:x:2600:2600::/:/bin/sh >> /etc/passwd && "
         "echo onlydst:x:2601: >> /etc/group\nCOPY --from=src --chown=onlydst /f /f\n"
         "COPY --from=src --chown=onlydst:onlydst /f /g\n"),
    Case("xd-chown-name-only-in-source", "FROM busybox:local AS src\nRUN echo onlysrc:x:2500:2500::/:/bin/sh >> "
         "/etc/passwd && echo onlysrc:x:2500: >> /etc/group && echo f > /f\nFROM busybox:local\n"
         "COPY --from=src --chown=onlysrc /f /f\n", fails=True),
    Case("xd-passwd-symlinked", "FROM busybox:local\nRUN mv /etc/passwd /etc/passwd.real && ln -s passwd.real /etc/passwd"
         " && mv /etc/group /etc/group.real && ln -s /etc/group.real /etc/group\n"
         "COPY --chown=app:app a /a\nUSER app\nRUN id > /tmp/id\n", {"a": "a"}),
    Case("xd-user-mixed-forms", "FROM busybox:local\nUSER 1234:app\nRUN id > /tmp/i1; touch /tmp/f1\n"
         "USER app:0\nRUN id > /tmp/i2; touch /tmp/f2\nUSER nobody\nRUN id > /tmp/i3\nUSER root:nogroup\n"
         "RUN id > /tmp/i4\n"),
    Case("xd-context-special-files", "FROM busybox:local\nCOPY . /ctx/\nCOPY d /d/\n", {"f": "f", "d/g": "g"},
         specials={"pipe": "fifo", "sock": "socket", "d/pipe": "fifo", "d/sock": "socket"}),
    # File capabilities: a COPY from the context drops them (docker chowns every copied file), an
    # archive's are kept. No other xattr reaches a layer (docker's archive records no other).
    Case("xd-context-xattrs", "FROM busybox:local\nCOPY . /x/\nCOPY --chown=app cap /capchown\n",
         {"cap": "c", "user": "u", "d/f": "f"},
         xattrs={"cap": {"security.capability": _CAP_NET_BIND, "user.note": b"hi"},
                 "user": {"user.a": b"1", "trusted.t": b"2"}, "d": {"user.dir": b"d"}}),
    Case("xd-context-hardlink-first-ignored", "FROM busybox:local\nCOPY . /h/\n", {"x": "shared", ".dockerignore": "x\n"},
         hardlinks={"dir/y": "x", "z": "x"}),
    Case("xd-copy-from-non-utf8", "FROM busybox:local AS src\nRUN mkdir -p \"/o/$(printf 'd\\377')\" && "
         "touch \"/o/$(printf 'caf\\351')\" \"/o/$(printf 'd\\377')/in\"\nFROM busybox:local\nCOPY --from=src /o /o\n"),
    Case("xd-arg-per-stage", "ARG BASE=busybox:local\nARG V=global\nFROM $BASE AS one\nARG V\nRUN echo \"one:$V\" > /one\n"
         "FROM $BASE AS two\nRUN echo \"two:[$V]\" > /two\nARG V=stage\nRUN echo \"two2:$V\" > /two2\n"
         "FROM $BASE\nARG BASE\nCOPY --from=one /one /one\nCOPY --from=two /two /two2 /\n"
         "RUN echo \"final:[$V][$BASE]\" > /final\nLABEL base=$BASE\n"),
    Case("xd-arg-per-stage-cli", "ARG BASE=busybox:local\nARG V=global\nFROM $BASE AS one\nARG V\nRUN echo \"one:$V\" > /one\n"
         "FROM $BASE AS two\nRUN echo \"two:[$V]\" > /two\nARG V=stage\nRUN echo \"two2:$V\" > /two2\n"
         "FROM $BASE\nCOPY --from=one /one /one\nCOPY --from=two /two /two2 /\nARG V\nRUN echo \"final:[$V]\" > /final\n",
         build_args=("V=cli",)),
    Case("xd-volume-then-copy", "FROM busybox:local\nVOLUME /v\nCOPY a /v/a\nADD t.tar /v/t/\nWORKDIR /v/w\n"
         "COPY --chown=app a /v/owned\n", {"a": "a", "t.tar": _archive()}),
    Case("xd-base-config-inherited", "FROM pybuild-diff/xd-base-config-inherited-base:1\nRUN echo $0 > /tmp/zero; "
         "pwd > /tmp/pwd; id > /tmp/id; echo $E > /tmp/e\nWORKDIR $E\nCMD echo child\n",
         base="FROM busybox:local\nENV E=/srv/env\nSHELL [\"/bin/sh\", \"-xc\"]\nUSER app:nogroup\nWORKDIR rel/w\n"
              "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"base\"]\nSTOPSIGNAL SIGUSR2\nEXPOSE 99/udp\nVOLUME /bv\n"
              "HEALTHCHECK --interval=3s --retries=7 CMD [\"true\"]\nLABEL from=base\n",
         ignore_paths=("bv",), why="bv: the mount point docker's classic builder commits in a RUN after VOLUME"),
    Case("xd-onbuild-two-stages", "FROM pybuild-diff/xd-onbuild-two-stages-base:1 AS one\nRUN echo one >> /count\n"
         "FROM pybuild-diff/xd-onbuild-two-stages-base:1\nCOPY --from=one /count /one-count\n", {"f": "f"},
         base="FROM busybox:local\nONBUILD RUN echo trig >> /count\nONBUILD COPY f /f\n"),
    Case("xd-onbuild-meta-arg", "ARG V=meta\nFROM pybuild-diff/xd-onbuild-meta-arg-base:1\n",
         base="FROM busybox:local\nONBUILD ARG V\nONBUILD RUN echo \"[$V]\" > /v\nONBUILD ENV W=$V\n"),
    Case("xd-passwd-malformed", "FROM busybox:local\nRUN printf 'weird:x:notnum:alsonot::/:/bin/sh\\n"
         "sp:x:2100:2100::/:/bin/sh\\n' >> /etc/passwd && printf 'sp:x:2100:\\ng2:x:2200: sp , app\\n"
         "g3:x:2300:sp\\n' >> /etc/group\nCOPY --chown=sp a /sp\nUSER sp\nRUN id > /tmp/id\n", {"a": "a"}),
    Case("xd-chown-big-ids", "FROM busybox:local\nCOPY --chown=4000000000:4000000001 a /big\n"
         "COPY --chown=2147483647:65534 a /max\nUSER 4000000000\n", {"a": "a"}),
    Case("xd-run-user-out-of-range", "FROM busybox:local\nUSER 4000000000\nRUN id -u > /tmp/u\n", fails=True),
    Case("xd-user-supplementary-copy-run", "FROM busybox:local\nRUN echo extra:x:777:app >> /etc/group && "
         "mkdir /g && chown 0:777 /g && chmod 770 /g\nUSER app\nRUN touch /g/made-by-app && id > /g/id\n"
         "USER app:app\nRUN id > /tmp/id2\n"),
    Case("xd-copy-from-image-by-name-built", "FROM busybox:local\n"
         "COPY --from=pybuild-diff/xd-copy-from-image-by-name-built-base:1 /made /made\n"
         "COPY --from=pybuild-diff/xd-copy-from-image-by-name-built-base:1 --chown=app /made/f /f\n",
         base="FROM busybox:local\nRUN mkdir -p /made/d && echo f > /made/f && chown 5:6 /made/f && "
              "ln -s f /made/l\n"),
    Case("xd-env-multi-refs", "FROM busybox:local\nENV A=a B=${A}b C=\"$B c\" D='$C' E=\\$A F=${A:+x}${B:-y}\n"
         "ENV A=A2 G=$A H=${G}-${A}\nWORKDIR /$H\nLABEL l=\"$H $D\"\nRUN echo \"$A|$B|$C|$D|$E|$F|$G|$H\" > /o\n"),
    Case("xd-cmd-entrypoint-matrix", "FROM busybox:local AS a\nENTRYPOINT echo a\nFROM a AS b\nCMD [\"b\"]\n"
         "FROM b AS c\nENTRYPOINT [\"c\"]\nFROM c AS d\nCMD d shell\nFROM d\nSHELL [\"/bin/ash\", \"-c\"]\n"
         "ENTRYPOINT e\n"),
    Case("xd-healthcheck-none-then-new", "FROM busybox:local AS a\nHEALTHCHECK NONE\nFROM a\n"
         "HEALTHCHECK --interval=5s --timeout=2s --start-period=9s --retries=1 CMD echo \"a b\" | cat\n"),
    Case("xd-scratch-chown", "FROM scratch\nCOPY --chown=1:2 a /a\nCOPY --chown=3 d /d/\n", {"a": "a", "d/f": "f"},
         ignore_paths=("etc",), why="etc: docker's container export adds /etc (its init layer) to an image that has none"),
    Case("xd-scratch-chown-name", "FROM scratch\nCOPY --chown=app a /a\n", {"a": "a"}, fails=True),
    Case("xd-user-unknown-group-run", "FROM busybox:local\nUSER app:nosuchgroup\nRUN true\n", fails=True),
    Case("xd-onbuild-escape-directive", "FROM pybuild-diff/xd-onbuild-escape-directive-base:1\n",
         base="# escape=`\nFROM busybox:local\nONBUILD ENV P=C:\\path\\x Q=\"a`\n  b\"\nONBUILD RUN echo \"$P\" `\n  > /p\n"
              "ONBUILD LABEL l=\"x\\y\"\n"),
    Case("xd-add-tar-latin1-names", "FROM busybox:local\nADD l.tar /l/\n", {"l.tar": _latin1_tar()}),
    Case("xd-context-sparse", "FROM busybox:local\nCOPY . /s/\n", {"small": "s"}, specials={"big": "sparse"}),
    # The same children on a base docker built (and pybuild loaded from `docker save`).
    Case("xd-docker-base-onbuild", "FROM pybuild-diff/xd-docker-base-onbuild-base:1 AS mid\n"
         "RUN pwd > /tmp/pwd; id > /tmp/id\nFROM busybox:local AS builder\nRUN echo b > /b\n"
         "FROM mid\nRUN ls /ob > /tmp/ls\n",
         {"src/f": "f", "src/d/g": "g", "a.tar": _archive()}, build_args=("WHO=cli",), base_by_docker=True,
         same_history=False, why="history: as in xd-onbuild-full-chain",
         base="FROM busybox:local\nONBUILD ARG WHO=dflt\nONBUILD COPY --chown=app:app src /ob/src/\n"
              "ONBUILD ADD a.tar /ob/tar/\nONBUILD RUN echo \"$WHO\" > /ob/who && id > /ob/id\n"
              "ONBUILD USER app\nONBUILD WORKDIR ob-rel\nONBUILD EXPOSE 81/udp 82\n"
              "ONBUILD HEALTHCHECK --interval=7s --timeout=3s --start-period=1s --retries=2 CMD true\n"
              "ONBUILD STOPSIGNAL SIGQUIT\nONBUILD ENTRYPOINT [\"sh\"]\nONBUILD CMD [\"-c\", \"x\"]\n"
              "ONBUILD SHELL [\"/bin/sh\", \"-xc\"]\nONBUILD LABEL who=$WHO\n"),
    Case("xd-docker-base-config", "FROM pybuild-diff/xd-docker-base-config-base:1\nRUN echo $0 > /tmp/zero; "
         "pwd > /tmp/pwd; id > /tmp/id; echo $E > /tmp/e\nWORKDIR $E\nCMD echo child\n", base_by_docker=True,
         base="FROM busybox:local\nRUN mkfifo /p && mkdir /o && rm -rf /etc/shadow && echo x > /o/x && "
              "chmod 4755 /o/x && echo y > /o/y\nRUN rm -rf /o && mkdir /o && ln /bin/busybox /o/bb\n"
              "ENV E=/srv/env\nSHELL [\"/bin/sh\", \"-xc\"]\nUSER app:nogroup\nWORKDIR rel/w\n"
              "ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"base\"]\nSTOPSIGNAL SIGUSR2\nEXPOSE 99/udp\n"
              "HEALTHCHECK --interval=3s --retries=7 CMD [\"true\"]\nLABEL from=base\n"),
    Case("xd-meta-arg-chain", "ARG A=x\nARG B=${A}-y C\nARG TAG=loc\nFROM busybox:${TAG}al AS s\nARG B\nARG C=c\n"
         "RUN echo \"[$A][$B][$C]\" > /abc\nFROM s\nARG A\nARG TAG\nRUN echo \"[$A][$TAG]\" > /a2\n",
         build_args=("A=cli",), ignore_paths=("a2",), same_history=False,
         why="a2 and its history: a stage FROM another stage inherits its ARGs in BuildKit (pybuild's "
         "reference), not in docker's classic builder"),
    Case("xd-meta-arg-unused-in-stage", "ARG V=meta\nFROM busybox:local\nRUN echo \"[$V]\" > /v\nENV E=${V:-unset}\n"),
    Case("xd-user-group-workdir-copy", "FROM busybox:local\nRUN echo grp:x:4100:app >> /etc/group\n"
         "USER app:grp\nWORKDIR /wd\nCOPY a .\nRUN touch mine 2>/dev/null; id > /tmp/id; ls -ln /wd > /tmp/ls\n",
         {"a": "a"}),
    Case("xd-healthcheck-fractions", "FROM busybox:local\nHEALTHCHECK --interval=1.5s "
         "--timeout=1m0.5s --start-period=1ms --retries=3 CMD [\"true\", \"x y\"]\n"),
    Case("xd-healthcheck-zero-options", "FROM busybox:local\nHEALTHCHECK --interval=0s --timeout=0s "
         "--start-period=0s --retries=0 CMD true\n",
         docker_dockerfile="FROM busybox:local\nHEALTHCHECK CMD true\n",
         why="a zero duration or retry count means the default in BuildKit (pybuild follows); docker's classic "
         "builder refuses them"),
    Case("xd-healthcheck-bad-duration", "FROM busybox:local\nHEALTHCHECK --interval=5 CMD true\n", fails=True),
    Case("xd-healthcheck-unknown-flag", "FROM busybox:local\nHEALTHCHECK --nope=1 CMD true\n", fails=True),
    Case("xd-onbuild-copy-dockerignore", "FROM pybuild-diff/xd-onbuild-copy-dockerignore-base:1\n",
         {".dockerignore": "*.log\nsecret\n", "a.txt": "a", "b.log": "b", "secret/s": "s", "sub/c.log": "c"},
         base="FROM busybox:local\nONBUILD COPY . /ctx/\nONBUILD ADD *.txt /txt/\n"),
    Case("xd-copy-glob-escapes", "FROM busybox:local\nCOPY \\[a\\].txt /x/\nCOPY [[]a].txt /y/\nCOPY \\*star /z/\n"
         "COPY q\\?.txt /q/\n", {"[a].txt": "brackets", "a.txt": "a", "*star": "star", "xstar": "x", "q?.txt": "q",
                                  "qq.txt": "qq"}),
    Case("xd-copy-literal-glob-name", "FROM busybox:local\nCOPY [a].txt /w/\n", {"[a].txt": "brackets", "a.txt": "a"}),
    Case("xd-add-tar-pax-sparse", "FROM busybox:local\nADD s.tar /s/\n", {"s.tar": _pax_sparse_tar()}),
    Case("xd-add-tar-global-header", "FROM busybox:local\nADD g.tar /g/\n", {"g.tar": _git_archive_like_tar()}),
    # Any number but 0 is a stop signal to docker (signal.ParseSignal), as written.
    Case("xd-stopsignal-any-number", "FROM busybox:local\nSTOPSIGNAL 65\nSTOPSIGNAL -3\nSTOPSIGNAL +7\n"),
    Case("xd-stopsignal-number-overflow", "FROM busybox:local\nSTOPSIGNAL 99999999999999999999\n", fails=True),
    # docker (and BuildKit) decode one JSON value: text after the array is ignored, not shell form.
    Case("xd-json-trailing-text", "FROM busybox:local\nSHELL [\"/bin/sh\", \"-c\"] ignored\n"
         "RUN [\"sh\", \"-c\", \"echo hi > /o\"] && false\nCOPY [\"a\", \"/b/\"] junk\nVOLUME [\"/v\"] /w\n"
         "ENTRYPOINT [\"/bin/echo\"]x\nCMD [\"a\"] [\"b\"]\nHEALTHCHECK CMD [\"true\"] tail\n", {"a": "a"}),
    Case("xd-env-name-expands-to-nothing", "FROM busybox:local\nENV A=1 $UNDEF=x\n", fails=True),
    Case("xd-label-name-expands-to-nothing", "FROM busybox:local\nLABEL $UNDEF=x\n"),
    # An empty dest (an unset variable) is the WORKDIR.
    Case("xd-copy-empty-dest", "FROM busybox:local\nWORKDIR /w\nCOPY a \"\"\nARG D\nCOPY [\"b\", \"\"]\n"
         "ADD t.tar $D\nWORKDIR /\nCOPY c $D\n", {"a": "a", "b": "b", "c": "c", "t.tar": _archive()}),
    Case("xd-copy-empty-dest-multi", "FROM busybox:local\nARG D\nCOPY a b $D\n", {"a": "a", "b": "b"}, fails=True),
    Case("xd-expose-extra-slashes", "FROM busybox:local\nEXPOSE 80/tcp/udp 81/UDP/x 82// 127.0.0.1:83:84/udp/\n"),
    Case("xd-user-number-forms", "FROM busybox:local\nUSER 01000\nRUN id > /tmp/i1\nUSER 1000:\nRUN id > /tmp/i2\n"
         "USER 0:01000\nRUN id > /tmp/i3\nUSER root\nCOPY --chown=05:06 a /x\nRUN echo ~ $HOME $USER > /h\n",
         {"a": "a"}),
    Case("xd-onbuild-copy-from-index-and-image", "FROM busybox:local\nRUN echo zero > /z\n"
         "FROM busybox:local AS named\nRUN echo n > /n\nFROM pybuild-diff/xd-onbuild-copy-from-index-and-image-base:1 AS c\n"
         "FROM c\n",
         base="FROM busybox:local\nONBUILD COPY --from=0 /z /z\nONBUILD COPY --from=named /n /n\n"
              "ONBUILD COPY --from=busybox:local /bin/busybox /bb\n"),
    Case("xd-copy-from-capability", "FROM busybox:local AS s\nADD x.tar /x/\nFROM busybox:local\n"
         "COPY --from=s /x /kept\nCOPY --from=s --chown=app /x /chowned\nCOPY --from=s /x/cap /x/d/plain /files/\n",
         {"x.tar": _xattr_tar()}, ignore_paths=("files/cap",),
         why="files/cap: docker's classic builder copies a single file with a tar header of its own that "
         "carries no xattrs (CopyFileWithTar), so it loses its capability where a directory copy keeps it; "
         "BuildKit (and pybuild) keep it"),
    Case("xd-add-tar-zstd", "FROM busybox:local\nADD a.tar.zst /z/\n", {"a.tar.zst": _zstd(_archive())},
         docker_dockerfile="FROM busybox:local\nADD a.tar /z/\n", docker_files={"a.tar": _archive()},
         why="a zstd archive is unpacked as BuildKit (and docker since 23.0) do; docker 20.10's classic "
         "builder copies it as a file"),
    Case("xd-add-tar-xattrs", "FROM busybox:local\nADD x.tar /x/\nADD --chown=app x.tar /y/\n",
         {"x.tar": _xattr_tar()},
         docker_dockerfile="FROM busybox:local\nADD x.tar /x/\nADD x.tar /y/\n"
         "RUN chown -h app:app /y /y/cap /y/d/plain\n",
         why="--chown on an archive as BuildKit: the entries and the dest it makes, not the parents the "
         "archive only implies (/y/d); chown(2) drops the file capability, as it did in docker"),
    # -- explore3-d: ownership, permissions, links, whiteouts and config inheritance
    Case("x3d-copy-setgid-parent", "FROM busybox:local\nRUN mkdir /sg && chown 0:1000 /sg && chmod 2775 /sg\n"
         "COPY a /sg/new/deep/a\nCOPY src /sg/dir/\nCOPY --chown=7:8 a /sg/own/a\nCOPY src /sg\n",
         {"a": "a", "src/f": "f", "src/d/g": "g"}),
    Case("x3d-workdir-setgid-parent", "FROM busybox:local\nRUN mkdir /sg && chown 0:1000 /sg && chmod 2775 /sg\n"
         "WORKDIR /sg/w/x\nUSER app\nWORKDIR /sg/u\n"),
    Case("x3d-add-setgid-parent", "FROM busybox:local\nRUN mkdir /sg && chown 0:1000 /sg && chmod 2775 /sg\n"
         "ADD t.tar /sg/t/\nADD i.tar /sg/\nADD {url}/f.txt /sg/u/\nADD --chown=7:8 {url}/f.txt /sg/v/w/\n",
         {"t.tar": _archive(), "i.tar": _tar(("imp/lied/f", F, b"f", 0o644, 5, 5))}, serve={"/f.txt": b"f\n"},
         same_history=False, why="history: docker writes a URL's content hash right after --chown's value, "
         "no space between (pybuild too), so the hash placeholder cannot tell them apart"),
    Case("x3d-copy-from-setgid-parent", "FROM busybox:local AS s\nRUN mkdir /o && echo f > /o/f\n"
         "FROM busybox:local\nRUN mkdir /sg && chown 0:1000 /sg && chmod 2775 /sg\nCOPY --from=s /o /sg/a/b/\n"
         "COPY --from=s /o/f /sg/c/d/f\n"),
    # Without Last-Modified docker dates a download at the epoch (its Chtimes of a zero time).
    Case("x3d-add-url-no-last-modified", "FROM busybox:local\nADD {url}/f.txt /u/\nADD --chown=app {url}/f.txt /v\n",
         serve={"/f.txt": b"f\n"}, last_modified=False, compare_mtimes=("u/f.txt", "v")),
    Case("x3d-build-arg-from-environment", "FROM busybox:local\nARG HOME\nARG X3D_NOT_SET=dflt\nARG PATH\n"
         "RUN echo \"[$HOME][$X3D_NOT_SET]\" > /a\n", build_args=("HOME", "X3D_NOT_SET")),
    # overlayfs refuses to make its whiteout device (char 0:0), so no RUN can delete that way.
    Case("x3d-run-mknod-whiteout-device", "FROM busybox:local\nRUN rm /etc/group && mknod /etc/group c 0 0\n",
         fails=True),
    Case("x3d-add-tar-hardlink-forward", "FROM busybox:local\nADD h.tar /h/\n",
         {"h.tar": _tar(("link", H, "later", 0o644, 0, 0), ("later", F, b"x", 0o644, 0, 0))}, fails=True),
    Case("x3d-add-tar-hardlink-to-dir", "FROM busybox:local\nADD h.tar /h/\n",
         {"h.tar": _tar(("d", D, b"", 0o755, 0, 0), ("link", H, "d", 0o644, 0, 0))}, fails=True),
    Case("x3d-add-tar-hardlink-to-symlink", "FROM busybox:local\nADD h.tar /h/\n",
         {"h.tar": _tar(("t", F, b"t", 0o644, 0, 0), ("s", S, "t", 0o777, 0, 0), ("hs", H, "s", 0o644, 0, 0))}),
    Case("x3d-add-tar-existing-dir-mtime", "FROM busybox:local\nRUN mkdir -p /m/old && touch /m/old/x\nADD m.tar /\n"
         "ADD r.tar /r/\n",
         {"m.tar": _tar(("m", D, b"", 0o750, 0, 0), ("m/old", D, b"", 0o700, 3, 3), ("m/new", F, b"n", 0o644, 0, 0),
                        ("tmp", D, b"", 0o1777, 0, 0)),
          "r.tar": _tar(("./", D, b"", 0o750, 4, 4), ("./f", F, b"f", 0o644, 0, 0))},
         compare_mtimes=("m", "m/old", "m/new", "tmp", "r/f")),
    Case("x3d-add-tar-big-ids-modes", "FROM busybox:local\nADD b.tar /b/\n",
         {"b.tar": _tar(("big", F, b"b", 0o644, 3_000_000_000, 3_000_000_001), ("all", F, b"a", 0o7777, 1, 1),
                        ("dir", D, b"", 0o3777, 2, 2))}),
    Case("x3d-copy-from-devices", "FROM busybox:local AS s\nRUN mkdir /o && mknod /o/null c 1 3 && mknod /o/blk b 7 1 "
         "&& mkfifo /o/p && chmod 600 /o/null\nFROM busybox:local\nCOPY --from=s /o /o\nCOPY --from=s --chown=3:4 /o /c\n"
         "COPY --from=s /o/null /single\n"),
    Case("x3d-copy-context-hardlinks-chown", "FROM busybox:local\nCOPY --chown=5:6 . /h/\nCOPY a b /two/\n",
         {"a": "linked", "d/c": "other"}, hardlinks={"b": "a", "d/e": "a"}),
    Case("x3d-copy-from-hardlinks-partial", "FROM busybox:local AS s\nRUN mkdir -p /o/x /o/y && echo h > /o/x/f && "
         "ln /o/x/f /o/y/g && ln /o/x/f /outside\nFROM busybox:local\nCOPY --from=s /o /o\nCOPY --from=s /o/y /y\n"
         "COPY --from=s /o/x/f /o/y/g /pair/\n"),
    # Quotes are removed from the words of instructions that expand them, ARG names included.
    Case("x3d-quoted-words", "FROM busybox:local\nWORKDIR \"/a b\"\nWORKDIR '/c d'/e\nUSER \"app\"\n"
         "RUN pwd > /tmp/pwd; id -un > /tmp/u\nUSER root\nEXPOSE \"80\" '81/udp'\nSTOPSIGNAL \"SIGINT\"\n"
         "LABEL \"k\"=\"v\" 'x'='y z'\nENV \"Q\"=\"r s\" 'T'=u\nARG \"AQ\"=\"aq\"\nRUN echo \"$AQ\" > /aq\n"
         "COPY \"a\"* '/q1/'\nVOLUME \"/vq\" /w\n", {"a b.txt": "a"}),
    Case("x3d-arg-name-expansion", "ARG \"M\"=meta\nARG K=name\nFROM busybox:local\nARG M\nARG K\n"
         "ARG ${K}=v \"q r\"=s 'P'\nRUN echo \"[$M][$name][$K][$P]\" > /o\nENV E=$name\n", build_args=("P=cli",)),
    Case("x3d-quoted-copy-source-unterminated", "FROM busybox:local\nCOPY \"a b.txt\" /q/\n", {"a b.txt": "a"},
         fails=True),
    # A RUN that only changes times copies the entry up with them (local time is UTC in both).
    Case("x3d-run-touch-mtimes", "FROM busybox:local\nRUN touch -d '2001-01-01 00:00:00' /etc/passwd /usr /bin/busybox && "
         "touch -h -d '2002-02-02 12:00:00' /bin/sh && mkdir -p /n/d && touch -d '2003-03-03 00:00:00' /n/d /n\n"
         "RUN touch -d '2004-04-04 00:00:00' /n/d && date +%Z > /tmp/tz\n",
         compare_mtimes=("etc/passwd", "usr", "bin/busybox", "bin/sh", "n", "n/d")),
    Case("x3d-copy-into-root", "FROM busybox:local\nUSER nosuch:nogrp\nWORKDIR /x/y\nCOPY src /\nCOPY --chown=5:5 src/ /\n"
         "USER 77:nosuchgrp\nCMD [\"a\"]\n", {"src/sub/f": "f", "src/etc/extra": "e"}, modes={"src": 0o700}),
    Case("x3d-build-arg-newline-unicode", "FROM busybox:local\nARG A\nARG B\nARG C=c\nRUN printf '[%s]' \"$A\" \"$B\" \"$C\" > /o\n"
         "LABEL a=\"$A\"\nENV B=$B\n", build_args=("A=line1\nline2", "B=\u00e9\u00e8 \\$x `y`", "C=")),
    Case("x3d-whiteout-churn", "FROM busybox:local\nRUN mkdir -p /c/a/b && touch /c/a/b/1 /c/a/2\n"
         "RUN rm -rf /c/a && mkdir -p /c/a/b && touch /c/a/b/3\nRUN rm -rf /c/a/b && touch /c/a/b\n"
         "RUN rm /c/a/b && ln -s /etc /c/a/b && mv /c/a /c/z && mkdir /c/a\nCOPY f /c/a/b/\n"
         "RUN rm -rf /c/z/b && mkdir /c/z/b && ln /c/a/b/f /c/z/b/f\nCOPY f /c/z/b/g\n", {"f": "f"}),
    # A later step sees the directories above a new WORKDIR as they were (docker's layer copies them up).
    Case("x3d-workdir-parent-seen-by-run", "FROM busybox:local\nRUN mkdir -p /p/q && chown 5:6 /p /p/q && "
         "chmod 2750 /p && chmod 700 /p/q\nWORKDIR /p/q/r/s\nRUN stat -c '%n %a %u %g' /p /p/q /p/q/r > /tmp/st\n"
         "USER app\nWORKDIR /tmp/x\nRUN stat -c '%n %a %u %g' /tmp > /tmp/st2\n"),
    Case("x3d-workdir-partly-exists-user", "FROM busybox:local\nUSER app\nWORKDIR /tmp/a/b\nWORKDIR /etc\n"
         "USER 4242:4343\nWORKDIR /tmp/a/b/c\n"),
    Case("x3d-copy-over-foreign-file", "FROM busybox:local\nRUN echo old > /x && chown 5:6 /x && chmod 4600 /x && "
         "mkdir -p /e/sub && chown -R 5:6 /e && chmod 700 /e/sub\nCOPY a /x\nCOPY src /e\n",
         {"a": "new", "src/sub/f": "f", "src/g": "g"}, modes={"src/sub": 0o750}),
    Case("x3d-copy-chown-special-bits", "FROM busybox:local\nCOPY --chown=7:8 . /m/\nCOPY --chown=app suid /s2\n",
         {"suid": "s", "sgid": "g", "sticky/f": "f", "none": "n"},
         modes={"suid": 0o4755, "sgid": 0o2711, "sticky": 0o1777, "none": 0}),
    Case("x3d-copy-from-chown-parents", "FROM busybox:local AS s\nRUN mkdir -p /o/d && echo f > /o/d/f && chmod 4755 /o/d/f\n"
         "FROM busybox:local\nCOPY --from=s --chown=7:8 /o/d/f /p/q/r\nCOPY --from=s --chown=9:9 /o /n/m/\n"),
    Case("x3d-mode-000-dirs", "FROM busybox:local\nCOPY . /z/\nRUN ls -la /z > /ls\n",
         {"locked/f": "f", "wo/g": "g"}, modes={"locked/f": 0, "locked": 0, "wo": 0o222}),
    Case("x3d-run-umask-dirs", "FROM busybox:local\nRUN umask 0 && mkdir -p /u0/a && touch /u0/f && umask 027 && "
         "mkdir /u27 && touch /u27/f && umask 0777 && mkdir /u777 && touch /u777/f\n"),
    Case("x3d-run-dir-to-symlink-to-file", "FROM busybox:local\nRUN mkdir -p /a/b && touch /a/b/f && echo x > /s\n"
         "RUN rm -rf /a/b && ln -s /s /a/b && rm /s && ln -s /etc/passwd /s\nRUN rm /a/b && mkdir /a/b\n"),
    Case("x3d-run-hardlink-then-modify-other", "FROM busybox:local\nRUN echo one > /a && ln /a /b && ln /a /tmp/c\n"
         "RUN echo two >> /b\nRUN rm /tmp/c && chmod 600 /a\n"),
    Case("x3d-run-hardlink-new-dir", "FROM busybox:local\nRUN mkdir -p /h/x /h/y && echo d > /h/x/f && ln /h/x/f /h/y/f\n"
         "RUN rm -rf /h/x && mkdir /h/x && ln /h/y/f /h/x/g\n"),
    Case("x3d-run-rm-under-symlinked-dir", "FROM busybox:local\nRUN mkdir -p /real/sub && touch /real/sub/a /real/sub/b && "
         "ln -s /real /abs && ln -s real/sub /rel\nRUN rm /abs/sub/a && rm -r /rel/../sub/b && rm /abs && mkdir /abs\n"),
    Case("x3d-run-rename-over-existing", "FROM busybox:local\nRUN mkdir -p /m/a /m/b && touch /m/a/1 /m/b/2\n"
         "RUN rm -rf /m/b && mv /m/a /m/b && mv /etc/group /etc/group.bak && mv /etc/passwd /etc/group\n"),
    Case("x3d-copy-mtimes", "FROM busybox:local\nCOPY old /o\nCOPY tree /t/\nCOPY --chown=1:1 old /c\nADD old /a\n",
         {"old": "o", "tree/f": "f", "tree/d/g": "g"}, mtimes={"old": 1_000_000_000, "tree/f": 1_100_000_000,
                                                             "tree/d/g": 1_200_000_000, "tree/d": 1_300_000_000},
         compare_mtimes=("o", "t/f", "t/d", "t/d/g", "c", "a")),
    Case("x3d-add-mtimes", "FROM busybox:local AS s\nRUN mkdir -p /o/d && touch -d '2002-02-02 00:00:00' /o/d/f /o/d && "
         "ln -s d /o/l && touch -h -d '2003-03-03 00:00:00' /o/l\nFROM busybox:local\nADD {url}/f.txt /u/\n"
         "ADD {url}/f.txt /u2\nADD a.tar /t/\nCOPY --from=s /o /o\nCOPY --from=s --chown=5:5 /o /oc\n"
         "RUN touch -d '2004-04-04 00:00:00' /run4\n",
         {"a.tar": _archive()}, serve={"/f.txt": b"f\n"},
         compare_mtimes=("u/f.txt", "u2", "t/inner", "t/inner/f.txt", "t/inner/link", "t/top.txt", "o/d", "o/d/f",
                         "o/l", "oc/d", "oc/d/f", "oc/l", "run4")),
    Case("x3d-shell-then-exec-run", "FROM busybox:local\nSHELL [\"/bin/false\"]\nRUN [\"sh\", \"-c\", \"echo $0 > /x\"]\n"
         "CMD [\"a\"]\nENTRYPOINT [\"b\"]\nHEALTHCHECK CMD [\"true\"]\nRUN [\"touch\", \"/y\"]\n"),
    Case("x3d-build-arg-special", "FROM busybox:local\nARG A=dflt\nARG B\nARG C=c\nARG D\nARG E\n"
         "RUN printf '%s|' \"$A\" \"$B\" \"$C\" \"$D\" \"$E\" > /args\nENV A=$A B=\"$B\"\nLABEL c=$C d=\"$D\"\n",
         build_args=("A=a b  c", "B=x=y $HOME 'q' \"dq\"", "C=", "D=tab\there\\n", "E=ünï😀")),
    Case("x3d-healthcheck-base-cmd-only", "FROM pybuild-diff/x3d-healthcheck-base-cmd-only-base:1\nCMD [\"child\"]\n",
         base="FROM busybox:local\nHEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD true\nENTRYPOINT [\"sh\"]\n"
              "CMD [\"base\"]\n"),
    Case("x3d-entrypoint-inherit-combos", "FROM pybuild-diff/x3d-entrypoint-inherit-combos-base:1 AS a\nCMD []\n"
         "FROM pybuild-diff/x3d-entrypoint-inherit-combos-base:1 AS b\nENTRYPOINT [\"/bin/sh\", \"-c\"]\n"
         "FROM pybuild-diff/x3d-entrypoint-inherit-combos-base:1 AS c\nENTRYPOINT []\nCMD [\"c\"]\n"
         "FROM pybuild-diff/x3d-entrypoint-inherit-combos-base:1\nENTRYPOINT echo\n",
         base="FROM busybox:local\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo base\"]\n"),
    Case("x3d-env-special-values", "FROM busybox:local\nENV A=\"a=b=c\" B==lead C=\"tab\tin\" D=\"new\\nline\" "
         "E=\"$$\" F=\\\\ G=\"#notcomment\" H=trail\\  I=x\nENV J \"spaced  value\" x=y\n"
         "RUN env | grep -E '^[A-J]=' | sort > /env\n"),
    Case("x3d-label-multiline-values", "FROM busybox:local\nLABEL a=\"first\\\nsecond\" b=\"x\\ny\" \\\n"
         "  c='single\\\nquote' d=\"tab\there\"\nLABEL e=\"\\\"nested\\\"\" f=\"$HOME\"\n"),
    Case("x3d-user-uid-gid-not-in-passwd", "FROM busybox:local\nUSER 5555:6666\nWORKDIR /w5\nRUN id > /tmp/id && "
         "touch /tmp/f && echo $HOME > /tmp/home && mkdir /tmp/d\nCOPY a /w5/\n", {"a": "a"}),
    # explore4-e: COPY onto paths of another type, and BuildKit's --parents/--exclude as their classic equals.
    Case("x4e-copy-file-onto-symlink-to-file", "FROM busybox:local\nRUN echo t > /t && ln -s /t /x && mkdir /d && "
         "ln -s ../t /d/l\nCOPY a /x\nCOPY src /d/\n", {"a": "a", "src/l": "l"}),
    Case("x4e-copy-dir-source-types-replaced", "FROM busybox:local\nRUN mkdir -p /e/dir/deep /e/lnk && "
         "echo f > /e/file && touch /e/dir/deep/x && ln -s /etc /e/sl\nCOPY src /e/\n",
         {"src/file/in": "now a dir", "src/dir": "now a file", "src/sl/f": "through?"}),
    Case("x4e-copy-onto-dangling-symlinks", "FROM busybox:local\nRUN ln -s /nowhere /d && ln -s /gone /e && "
         "ln -s missing/deeper /f\nCOPY a /d\nCOPY a /e/\nCOPY src /f\n", {"a": "a", "src/s": "s"}),
    Case("x4e-copy-onto-symlink-loop", "FROM busybox:local\nRUN ln -s /loop /loop\nCOPY a /loop\n", {"a": "a"},
         fails=True),
    Case("x4e-copy-parents-wildcard-pivot", "FROM busybox:local\nCOPY --parents t/a/b*/./c/**/e /out/\n"
         "COPY --parents --exclude=**/*.log t/./**/keep* /k/\n",
         {"t/a/b/c/d/e/bay": "1", "t/a/b2/c/d/e/bar": "2", "t/a/b/c/d/foo": "3", "t/x/keep.txt": "k",
          "t/x/keep.log": "l", "t/y/z/keepme": "m"},
         modes={"t/a/b/c/d": 0o700, "t/a/b2/c/d": 0o700},
         docker_dockerfile="FROM busybox:local\nCOPY t/a/b/c/d/e/bay /out/c/d/e/\nCOPY t/a/b2/c/d/e/bar /out/c/d/e/\n"
         "COPY t/x/keep.txt /k/x/\nCOPY t/y/z/keepme /k/y/z/\n"
         "RUN chmod 700 /out/c/d\n",
         same_history=False),
    # explore5-a: BuildKit's --chmod follows Linux's chmod for X (a directory, or a file with an x bit)
    # with every operator since moby/buildkit#5835, and takes every mode its library parses (go=u-w).
    # docker's classic builder has no --chmod: it copies, then busybox's chmod changes what was copied
    # (not the destination directories COPY made, which BuildKit leaves 0755).
    Case("x5a-copy-chmod-symbolic-x", "FROM busybox:local\nCOPY --chmod=u=rwX,go=rX tree /t/\n"
         "COPY --chmod=a-X,u+w tree /u/\nCOPY --chmod=go=u-w tree/sub /v\n",
         {"tree/f": "f", "tree/sub/g": "g", "tree/sub/deep/h": "h"},
         modes={"tree/f": 0o600, "tree/sub/g": 0o640, "tree/sub/deep/h": 0o400, "tree/sub/deep": 0o500,
                "tree/sub": 0o700, "tree": 0o750},
         docker_dockerfile="FROM busybox:local\nCOPY tree /t/\nCOPY tree /u/\nCOPY tree/sub /v\n"
         "RUN chmod -R u=rwX,go=rX /t/* && chmod -R a-X,u+w /u/* && chmod -R go=u-w /v/*\n"),
]


def _write_context(case: Case, ctx: Path, dockerfile: str, extra: dict[str, str | bytes]) -> None:
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    for rel, content in {**case.files, **extra}.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    for rel, target in case.symlinks.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for rel, existing in case.hardlinks.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(ctx / existing, path)
    for rel, kind in case.specials.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "sparse":
            with open(path, "wb") as f:
                f.truncate(4 << 20)
                f.seek(1 << 20)
                f.write(b"x")
            continue
        os.mknod(path, 0o644 | (stat.S_IFIFO if kind == "fifo" else stat.S_IFSOCK))
    for rel, mode in case.modes.items():
        (ctx / rel).chmod(mode)
    for rel, attrs in case.xattrs.items():
        for key, value in attrs.items():
            os.setxattr(ctx / rel, key, value, follow_symlinks=False)
    for rel, mtime in case.mtimes.items():
        os.utime(ctx / rel, (mtime, mtime), follow_symlinks=False)
    if case.name == "add-local-tar":
        src = ctx.parent / f"tarsrc-{ctx.name}"
        (src / "inner").mkdir(parents=True)
        (src / "inner" / "f.txt").write_text("inside\n")
        with tarfile.open(ctx / "archive.tar", "w") as tf:
            tf.add(src / "inner", arcname="inner")


def _docker_build(docker: str, ctx: Path, tag: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    cmd = [docker, "build", "-q", "--force-rm", "--network", "host", "-t", tag]
    for a in args:
        cmd += ["--build-arg", a]
    return subprocess.run([*cmd, str(ctx)], capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})


def _build_base(case: Case, docker: str, store_root: Path, tmp_path: Path) -> str:
    """The case's base image, built by both builders under the same tag (this test's own in
    docker's image store, which other test runs on the machine share)."""
    tag = docker_tag(f"pybuild-diff/{case.name}-base")
    ctx = tmp_path / "base-ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(case.base or "")
    d = _docker_build(docker, ctx, tag, ())
    assert d.returncode == 0, d.stderr.decode()
    if case.base_by_docker:
        archive = tmp_path / "base.tar"
        subprocess.run([docker, "save", "-o", str(archive), tag], check=True, capture_output=True)
        run_pybuild("load", "-i", str(archive), root=store_root, check=True)
    else:
        run_pybuild("build", "--progress", "plain", "-t", tag, str(ctx), root=store_root, check=True)
    return tag


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_image_as_docker(case: Case, docker: str, store_root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    _write_context(case, ctx, case.dockerfile, {})
    docker_ctx = ctx
    if case.docker_dockerfile is not None:
        docker_ctx = tmp_path / "docker-ctx"
        _write_context(case, docker_ctx, case.docker_dockerfile, case.docker_files)
    tag = docker_tag(f"pybuild-diff/{case.name}")
    tags = [tag]
    with contextlib.ExitStack() as stack:
        if case.serve:
            headers = {"Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT"} if case.last_modified else {}
            url = stack.enter_context(serve_files(case.serve, headers))
            for c in (ctx, docker_ctx):
                (c / "Dockerfile").write_text((c / "Dockerfile").read_text().replace("{url}", url))
        _compare(case, docker, store_root, tmp_path, ctx, docker_ctx, tag, tags)


def _compare(case: Case, docker: str, store_root: Path, tmp_path: Path, ctx: Path, docker_ctx: Path,
             tag: str, tags: list[str]) -> None:
    try:
        if case.base is not None:
            base = _build_base(case, docker, store_root, tmp_path)
            tags.append(base)
            for c in {ctx, docker_ctx}:  # the cases name their base pybuild-diff/<name>-base:1
                dockerfile = (c / "Dockerfile").read_text()
                (c / "Dockerfile").write_text(dockerfile.replace(f"pybuild-diff/{case.name}-base:1", base))
        # Both builders at once: the case takes the time of the slower one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            docker_done = pool.submit(_docker_build, docker, docker_ctx, tag, case.build_args)
            args = [a for arg in case.build_args for a in ("--build-arg", arg)]
            p = run_pybuild("build", "--progress", "plain", "-t", tag, *args, str(ctx), root=store_root)
            d = docker_done.result()
        if case.buildkit_warns is not None:
            assert d.returncode != 0, f"docker was expected to fail: {d.stdout!r}"
            assert p.returncode == 0, p.stderr.decode()
            assert case.buildkit_warns in p.stderr.decode()
            return
        if case.fails:
            assert d.returncode != 0, f"docker was expected to fail: {d.stdout!r}"
            assert p.returncode != 0, "docker fails this Dockerfile, pybuild must too"
            err = p.stderr.decode()
            assert "Traceback" not in err and "internal error" not in err, err
            assert "ERROR" in err or "error" in err, err
            return
        assert d.returncode == 0, d.stderr.decode()
        assert p.returncode == 0, p.stderr.decode()[-3000:]
        dtree = docker_tree(docker, tag, tmp_path, case.compare_mtimes)
        ptree = pybuild_tree(store_root, tag, tmp_path, case.compare_mtimes)
        assert not set(case.compare_mtimes) - set(dtree), "compare_mtimes names a path docker's image lacks"
        for path in case.ignore_paths:
            dtree.pop(path, None)
            ptree.pop(path, None)
        only_docker = {k: v for k, v in dtree.items() if ptree.get(k) != v}
        only_pybuild = {k: v for k, v in ptree.items() if dtree.get(k) != v}
        assert only_docker == only_pybuild == {}, (
            f"trees differ\n docker: {only_docker}\n pybuild: {only_pybuild}")
        assert pybuild_config(store_root, tag) == docker_config(docker, tag)
        if case.docker_dockerfile is None and case.same_history:
            assert pybuild_history(store_root, tag) == docker_history(docker, tag)
    finally:
        for t in tags:
            subprocess.run([docker, "rmi", "-f", t], capture_output=True)


def test_enough_cases() -> None:
    """Issue 4 asks for at least 40 differential cases; keep the count visible."""
    assert len(CASES) >= 45
    assert len({c.name for c in CASES}) == len(CASES)
