"""Differential tests: docker's classic builder and pybuild build the same Dockerfile to the same image.

For each case both build the context; the flattened file trees (type, mode,
owner, size, content hash, link target) and the container configs must be
equal, ignoring only what a case names in ``ignore`` with its reason. A
Dockerfile that fails in docker must fail in pybuild.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.engine.flatten import docker_config, docker_tree, pybuild_config, pybuild_tree
from tests.helpers.tools import run_pybuild


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
]


def _write_context(case: Case, ctx: Path) -> None:
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(case.dockerfile)
    for rel, content in case.files.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    for rel, target in case.symlinks.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for rel, mode in case.modes.items():
        (ctx / rel).chmod(mode)
    if case.name == "add-local-tar":
        import tarfile

        src = ctx.parent / "tarsrc"
        (src / "inner").mkdir(parents=True)
        (src / "inner" / "f.txt").write_text("inside\n")
        with tarfile.open(ctx / "archive.tar", "w") as tf:
            tf.add(src / "inner", arcname="inner")


def _docker_build(docker: str, ctx: Path, tag: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    cmd = [docker, "build", "-q", "--network", "host", "-t", tag]
    for a in args:
        cmd += ["--build-arg", a]
    return subprocess.run([*cmd, str(ctx)], capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})


@pytest.mark.docker
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_image_as_docker(case: Case, docker: str, store_root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    _write_context(case, ctx)
    tag = f"pybuild-diff/{case.name}:1"
    d = _docker_build(docker, ctx, tag, case.build_args)
    args = [a for arg in case.build_args for a in ("--build-arg", arg)]
    p = run_pybuild("build", "--progress", "plain", "-t", tag, *args, str(ctx), root=store_root)
    if case.fails:
        assert d.returncode != 0, f"docker was expected to fail: {d.stdout!r}"
        assert p.returncode != 0, "docker fails this Dockerfile, pybuild must too"
        assert b"Traceback" not in p.stderr
        return
    assert d.returncode == 0, d.stderr.decode()
    assert p.returncode == 0, p.stderr.decode()[-3000:]
    try:
        dtree = docker_tree(docker, tag, tmp_path)
        ptree = pybuild_tree(store_root, tag, tmp_path)
        for path in case.ignore_paths:
            dtree.pop(path, None)
            ptree.pop(path, None)
        only_docker = {k: v for k, v in dtree.items() if ptree.get(k) != v}
        only_pybuild = {k: v for k, v in ptree.items() if dtree.get(k) != v}
        assert only_docker == only_pybuild == {}, (
            f"trees differ\n docker: {only_docker}\n pybuild: {only_pybuild}")
        assert pybuild_config(store_root, tag) == docker_config(docker, tag)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
