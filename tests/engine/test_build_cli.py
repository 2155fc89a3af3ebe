"""``pybuild build`` behaves as ``docker build`` on the command line: inputs, outputs, flags.

One lean test per behaviour, each against the shared session store (busybox:local).
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import docker_tag, require_tool, run_pybuild, small_fs


def _out(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode().strip()


def _inspect(builder: Builder, image: str) -> dict:
    return json.loads(run_pybuild("inspect", image, root=builder.root, check=True).stdout)[0]


def test_failing_run_names_step_line_code_and_output(builder: Builder) -> None:
    """As docker build (BuildKit) ends a failed build: the step's last output lines, the
    Dockerfile around the step with >>> on its line, then "ERROR: failed to solve: ..." as
    the last line, which CI log parsers look for; the step's own line says the same."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nENV X=1\n"
                           "RUN echo first line; echo last words >&2; exit 7\n"})
    p = builder.build(ctx, "--no-cache", check=False)
    err = p.stderr.decode()
    assert p.returncode == 1
    assert "Traceback" not in err
    block = err[err.index("------\n"):].splitlines()
    assert block[:2] == ["------", " > [2/2] RUN echo first line; echo last words >&2; exit 7:"], err
    assert [re.sub(r"^\d+\.\d+ ", "", line) for line in block[2:4]] == ["first line", "last words"], err
    assert block[4:] == [
        "------",
        "Dockerfile:3",
        "--------------------",
        "   1 |     FROM busybox:local",
        "   2 |     ENV X=1",
        "   3 | >>> RUN echo first line; echo last words >&2; exit 7",
        "   4 |     ",
        "--------------------",
        'ERROR: failed to solve: process "/bin/sh -c echo first line; echo last words >&2; exit 7" '
        "did not complete successfully: exit code: 7",
    ], err
    step = 'ERROR: process "/bin/sh -c echo first line; echo last words >&2; exit 7" did not complete'
    assert re.search(rf"^#2 {re.escape(step)} successfully: exit code: 7$", err, re.M), err


def test_dockerfile_on_stdin(builder: Builder) -> None:
    ctx = builder.context({"a.txt": "from the context\n"})
    p = builder.build(ctx, "-f", "-", "-t", "cli-stdin-df:1",
                      input=b"FROM busybox:local\nCOPY a.txt /a.txt\n")
    assert p.returncode == 0
    out = builder.run("cli-stdin-df:1", "cat", "/a.txt")
    assert out.stdout == b"from the context\n"


def test_context_tar_on_stdin(builder: Builder) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tf:
        for name, data in (("Dockerfile", b"FROM busybox:local\nCOPY f /f\n"), ("f", b"in the tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    p = run_pybuild("build", "-q", "-t", "cli-stdin-tar:1", "-", root=builder.root, input=raw.getvalue())
    assert p.returncode == 0, p.stderr.decode()
    assert builder.run("cli-stdin-tar:1", "cat", "/f").stdout == b"in the tar\n"


def test_plain_dockerfile_on_stdin_is_an_empty_context(builder: Builder) -> None:
    p = run_pybuild("build", "-q", "-t", "cli-stdin-plain:1", "-", root=builder.root,
                    input=b"FROM busybox:local\nRUN echo plain > /p\n")
    assert p.returncode == 0, p.stderr.decode()
    assert builder.run("cli-stdin-plain:1", "cat", "/p").stdout == b"plain\n"
    p = run_pybuild("build", "-", root=builder.root, input=b"FROM busybox:local\nCOPY x /x\n")
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert b"x" in p.stderr and b"not found" in p.stderr.lower()


def test_quiet_prints_only_the_id_and_files_agree(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nLABEL from=dockerfile\n"})
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    p = run_pybuild("build", "-q", "-t", "cli-quiet:1", "--label", "extra=yes", "--iidfile", str(iid),
                    "--metadata-file", str(meta), str(ctx), root=builder.root)
    assert p.returncode == 0, p.stderr.decode()
    image_id = _out(p)
    assert image_id.startswith("sha256:") and len(image_id) == 71 and "\n" not in image_id
    assert p.stderr == b""
    assert iid.read_text() == image_id
    data = json.loads(meta.read_text())
    assert data["containerimage.config.digest"] == image_id
    assert data["containerimage.digest"].startswith("sha256:")
    info = _inspect(builder, "cli-quiet:1")
    assert info["Id"] == image_id
    assert info["Config"]["Labels"] == {"from": "dockerfile", "extra": "yes"}


def test_target_builds_only_what_it_needs(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local AS broken\nRUN exit 1\n"
                           "FROM busybox:local AS wanted\nRUN echo wanted > /w\n"
                           "FROM wanted\nRUN exit 2\n"})
    p = builder.build(ctx, "--target", "wanted", "-t", "cli-target:1")
    assert b"broken" not in p.stderr
    assert builder.run("cli-target:1", "cat", "/w").stdout == b"wanted\n"
    p = builder.build(ctx, "--target", "nosuch", check=False)
    assert p.returncode == 1 and b"nosuch" in p.stderr and b"Traceback" not in p.stderr


def test_outputs_local_tar_oci_docker(builder: Builder, docker: str, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY hello /srv/hello\nCMD [\"cat\", \"/srv/hello\"]\n",
                           "hello": "hello output\n"})
    local, flat, oci, dock = tmp_path / "local", tmp_path / "flat.tar", tmp_path / "oci.tar", tmp_path / "docker.tar"
    tag = docker_tag("cli-out")  # loaded into docker below
    builder.build(ctx, "-t", tag, "-o", f"type=local,dest={local}", "-o", f"type=tar,dest={flat}",
                  "-o", f"type=oci,dest={oci}", "-o", f"type=docker,dest={dock}")
    assert (local / "srv" / "hello").read_text() == "hello output\n"
    assert (local / "bin" / "busybox").is_file()
    with tarfile.open(flat) as tf:
        member = tf.extractfile("srv/hello")
        assert member is not None and member.read() == b"hello output\n"
    info = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{oci}"], check=True,
                                     capture_output=True).stdout)
    assert info["config"]["Cmd"] == ["cat", "/srv/hello"]
    loaded = subprocess.run([docker, "load", "-i", str(dock)], check=True, capture_output=True, text=True)
    assert tag in loaded.stdout
    try:
        run = subprocess.run([docker, "run", "--rm", "--network", "none", tag], check=True,
                             capture_output=True)
        assert run.stdout == b"hello output\n"
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


@pytest.fixture
def loopback_server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that answers every GET with 'reachable'."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"reachable\n")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_network_none_cannot_reach_the_host(builder: Builder, loopback_server: int) -> None:
    # busybox-static's wget crashes (exit 139) in docker too; nc speaks HTTP well enough.
    fetch = (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 127.0.0.1 {loopback_server} > /got"
             " && grep -q reachable /got")
    dockerfile = f"FROM busybox:local\nRUN {fetch} # {uuid.uuid4()}\n"
    ctx = builder.context({"Dockerfile": dockerfile})
    builder.build(ctx, "-t", "cli-net-host:1")  # the default (host) reaches the server
    assert builder.run("cli-net-host:1", "tail", "-n1", "/got").stdout == b"reachable\n"
    p = builder.build(ctx, "--network", "none", "--no-cache", check=False)
    assert p.returncode == 1 and b"Traceback" not in p.stderr
    assert b"did not complete successfully: exit code: " in p.stderr
    ctx2 = builder.context({"Dockerfile": f"FROM busybox:local\nRUN --network=none {fetch}\n"}, "ctx2")
    assert builder.build(ctx2, "--no-cache", check=False).returncode == 1


def _all_bytes(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Every member of an image tarball, layers decompressed (and their members too)."""
    with tarfile.open(archive) as tf:
        for m in tf:
            f = tf.extractfile(m) if m.isfile() else None
            if f is None:
                continue
            data = f.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            yield m.name, data


def test_secret_readable_in_run_and_nowhere_in_the_image(builder: Builder, tmp_path: Path) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"
    secret.write_text(value)
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           "RUN --mount=type=secret,id=x cat /run/secrets/x | wc -c > /len && "
                           "test \"$(cat /run/secrets/x)\" = \"$(cat /run/secrets/x)\" && ls -d /run/secrets/x\n"
                           # BuildKit mounts no file for an env= secret without target=, nor for
                           # an optional secret not given: /run/secrets is not even there
                           "RUN --mount=type=secret,id=x,env=TOKEN test -n \"$TOKEN\" && test ! -e /run/secrets "
                           "&& echo ok > /env\n"
                           "RUN --mount=type=secret,id=fromenv,required=true "
                           "test \"$(cat /run/secrets/fromenv)\" = \"$(cat /run/secrets/fromenv)\" && "
                           "wc -c < /run/secrets/fromenv > /len2\n"
                           "RUN --mount=type=secret,id=absent test ! -e /run/secrets && touch /absent-ok\n"
                           # a secret over a cache mount: the exported mount holds no value
                           f"RUN --mount=type=cache,id=sec-{uuid.uuid4().hex},target=/c --mount=type=secret,id=x,target=/c/s "
                           "cat /c/s > /dev/null\n"})
    cache_dir, metadata = tmp_path / "cache-export", tmp_path / "metadata.json"
    p = builder.build(ctx, "--no-cache", "-t", "cli-secret:1", "--secret", f"id=x,src={secret}",
                      "--secret", "id=fromenv,env=PYBUILD_TEST_SECRET",
                      "--cache-to", f"type=local,dest={cache_dir},mode=max,cache-mounts=true",
                      "--metadata-file", str(metadata), env={"PYBUILD_TEST_SECRET": value + "e"})
    assert value.encode() not in p.stdout + p.stderr
    # Nor in what leaves the build beside the image: the cache export and the metadata file.
    for path in [metadata, *(f for f in cache_dir.rglob("*") if f.is_file())]:
        data = path.read_bytes()
        assert value.encode() not in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data), path
    assert builder.run("cli-secret:1", "cat", "/len2").stdout.strip() == str(len(value) + 1).encode()
    assert builder.run("cli-secret:1", "ls", "/absent-ok").returncode == 0
    assert builder.run("cli-secret:1", "cat", "/len").stdout.strip() == str(len(value)).encode()
    assert builder.run("cli-secret:1", "cat", "/env").stdout == b"ok\n"
    saved = tmp_path / "saved.tar"
    run_pybuild("save", "-o", str(saved), "cli-secret:1", root=builder.root, check=True)
    for name, data in _all_bytes(saved):
        assert value.encode() not in data, f"the secret leaked into {name}"
    history = run_pybuild("history", "--no-trunc", "cli-secret:1", root=builder.root, check=True)
    assert value.encode() not in history.stdout
    assert builder.run("cli-secret:1", "test", "-e", "/run/secrets/x", check=False).returncode == 1
    required = builder.context({"Dockerfile": "FROM busybox:local\n"
                                "RUN --mount=type=secret,id=needed,required=true true\n"}, "required")
    failed = builder.build(required, "--no-cache", check=False)
    assert failed.returncode == 1 and b"needed" in failed.stderr and b"Traceback" not in failed.stderr


def test_cache_mount_reused_across_builds(builder: Builder) -> None:
    cache_id = f"cli-cache-{uuid.uuid4().hex[:8]}"
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\n"
                           f"RUN --mount=type=cache,id={cache_id},target=/cache "
                           "echo run >> /cache/log && wc -l < /cache/log > /count\n"})
    builder.build(ctx, "--no-cache", "-t", "cli-cache:1")
    assert builder.run("cli-cache:1", "cat", "/count").stdout.strip() == b"1"
    builder.build(ctx, "--no-cache", "-t", "cli-cache:2")
    assert builder.run("cli-cache:2", "cat", "/count").stdout.strip() == b"2"
    assert b"cache" not in builder.run("cli-cache:2", "ls", "/").stdout.split()


def test_unused_build_arg_warns(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nARG USED\nRUN echo $USED > /u\n"})
    p = builder.build(ctx, "--build-arg", "USED=1", "--build-arg", "NOTUSED=2")
    err = p.stderr.decode()
    assert "NOTUSED" in err and "not consumed" in err
    assert "USED was not" not in err.replace("NOTUSED", "")


def test_missing_source_names_the_dockerignore_rule(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY a.txt /a\n",
                           ".dockerignore": "# comment\n*.txt\n", "a.txt": "a"})
    p = builder.build(ctx, check=False)
    err = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in err
    assert "Dockerfile:2" in err and "'a.txt' (excluded by .dockerignore line 2: `*.txt`)" in err


def test_several_tags_and_plain_progress(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /m\nENV A=1\n"})
    first = builder.build(ctx, "-t", "cli-tags:a", "-t", "cli-tags:b")
    lines = first.stderr.decode().splitlines()
    # BuildKit's names: no stage name in a Dockerfile of one stage, ENV is no step
    assert any(line.startswith("#2 [2/2] RUN echo") for line in lines), lines
    assert not any(" ENV A=1" in line for line in lines), lines
    assert any(line.startswith("#2 DONE ") and line.endswith("s") for line in lines)
    # BuildKit's export step, names in full: a CI log's grep for "naming to" finds them
    export = next(line.split()[0] for line in lines if line.endswith(" exporting to image"))
    assert f"{export} naming to docker.io/library/cli-tags:a done" in lines
    assert f"{export} naming to docker.io/library/cli-tags:b done" in lines
    assert any(re.fullmatch(rf"{export} writing image sha256:[0-9a-f]{{64}} done", line) for line in lines)
    ids = {_inspect(builder, t)["Id"] for t in ("cli-tags:a", "cli-tags:b")}
    assert ids == {_out(first)}
    again = builder.build(ctx, "-t", "cli-tags:c").stderr.decode()
    assert "CACHED" in again or "cache hit" in again.lower(), again


def test_other_platform_refused(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"})
    p = builder.build(ctx, "--platform", "linux/s390x", check=False)
    assert p.returncode != 0 and b"Traceback" not in p.stderr and b"s390x" in p.stderr
    ctx2 = builder.context({"Dockerfile": "FROM --platform=linux/s390x busybox:local\n"}, "ctx2")
    p = builder.build(ctx2, check=False)
    assert p.returncode != 0 and b"Dockerfile:1" in p.stderr and b"Traceback" not in p.stderr


def test_pybuild_run_flags(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nENV FROM_IMAGE=yes\nWORKDIR /srv\n"
                           "ENTRYPOINT [\"echo\", \"entry\"]\nCMD [\"default\"]\n"})
    builder.build(ctx, "-t", "cli-run:1")
    run = lambda *a: run_pybuild("run", "--rm", *a, root=builder.root)  # noqa: E731
    assert run("cli-run:1").stdout == b"entry default\n"
    assert run("cli-run:1", "other").stdout == b"entry other\n"
    out = run("-e", "X=1", "-w", "/tmp", "-u", "1234:5678", "--entrypoint", "sh", "cli-run:1", "-c",
              "echo $X $FROM_IMAGE; pwd; id -u; id -g")
    assert out.stdout == b"1 yes\n/tmp\n1234\n5678\n", out.stderr
    missing = run("cli-run:nosuch")
    assert missing.returncode != 0 and b"Traceback" not in missing.stderr and b"nosuch" in missing.stderr
    failing = run("--entrypoint", "sh", "cli-run:1", "-c", "exit 5")
    assert failing.returncode == 5


def test_run_mounts_bind_from_tmpfs(builder: Builder) -> None:
    """BuildKit's RUN --mount types besides cache and secret: what they show, and that nothing stays."""
    ctx = builder.context({
        "Dockerfile": f"FROM busybox:local AS stage\nRUN echo from-stage > /made # {uuid.uuid4().hex}\n"
        "FROM busybox:local\n"
        "RUN --mount=type=bind,target=/ctx cat /ctx/in.txt > /from-ctx && "
        "(echo x > /ctx/written 2>/dev/null || true)\n"
        "RUN --mount=type=bind,source=sub,target=/sub,rw echo scratch > /sub/new && ls /sub > /sub-list\n"
        "RUN --mount=from=stage,source=/made,target=/m cat /m > /from-stage\n"
        "RUN --mount=type=tmpfs,target=/t echo tmp > /t/f && grep -q ' /t tmpfs' /proc/mounts && "
        "touch /tmpfs-ok\n",
        "in.txt": "context file\n", "sub/a": "a"})
    builder.build(ctx, "-t", "cli-mounts:1")
    show = builder.run("cli-mounts:1", "sh", "-c",
                       "cat /from-ctx /sub-list /from-stage; ls /tmpfs-ok; ls /ctx /sub /m /t 2>&1 | wc -l")
    assert show.stdout.decode().splitlines()[:5] == ["context file", "a", "new", "from-stage", "/tmpfs-ok"]
    assert not (ctx / "written").exists() and not (ctx / "sub" / "new").exists()
    for path in ("/ctx/in.txt", "/sub/a", "/m", "/t/f"):
        assert builder.run("cli-mounts:1", "test", "-e", path, check=False).returncode == 1, path




def test_relative_mount_targets_are_under_the_workdir(builder: Builder) -> None:
    """BuildKit joins a relative target= of a cache, bind or tmpfs mount to the WORKDIR (a secret's
    stays under /); a target that is / itself is refused at its line."""
    ctx = builder.context({
        "Dockerfile": f"FROM busybox:local\nWORKDIR /app\n"
        f"RUN --mount=type=cache,target=cachedir,id=rel-{uuid.uuid4().hex} touch cachedir/x && "
        "ls /app/cachedir > /cache-list\n"
        "RUN --mount=type=tmpfs,target=sub/tmp grep -q ' /app/sub/tmp tmpfs' /proc/mounts && touch /tmpfs-ok\n"
        "RUN --mount=type=bind,source=in.txt,target=bound cat /app/bound > /bound-out\n",
        "in.txt": "bound file\n"}, "relative-targets")
    builder.build(ctx, "--no-cache", "-t", "cli-relative-targets:1")
    out = builder.run("cli-relative-targets:1", "sh", "-c", "cat /cache-list /bound-out; ls /tmpfs-ok; ls -A /app")
    assert out.stdout.decode().splitlines() == ["x", "bound file", "/tmpfs-ok"], out.stdout
    bad = builder.context({"Dockerfile": "FROM busybox:local\nWORKDIR /\nRUN --mount=type=cache,target=. true\n"},
                          "root-target")
    p = builder.build(bad, "--no-cache", check=False)
    assert p.returncode == 1 and b'Dockerfile:3: invalid mount target "."' in p.stderr, p.stderr


def test_tmpfs_mount_mode_as_runc_gives_it(builder: Builder) -> None:
    """A tmpfs on a new target is 1777 (runc makes the mount point itself under BuildKit); on a
    directory of the image it takes that directory's mode, as runc does. runc and chroot agree."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN mkdir -m 750 /d # {uuid.uuid4().hex}\n"
                           "RUN --mount=type=tmpfs,target=/new --mount=type=tmpfs,target=/d "
                           "stat -c '%n %a' /new /d > /modes\n"}, "tmpfs-mode")
    for isolation in ("runc", "chroot"):
        builder.build(ctx, "--no-cache", "--isolation", isolation, "-t", f"cli-tmpfs-mode:{isolation}")
        out = builder.run(f"cli-tmpfs-mode:{isolation}", "cat", "/modes").stdout.decode().splitlines()
        assert out == ["/new 1777", "/d 750"], (isolation, out)

def test_writable_bind_is_a_scratch_layer_over_its_source(builder: Builder) -> None:
    """RUN --mount=type=bind,rw: the step changes and deletes what it likes, nothing is kept, and
    the source is not copied first (an overlay, as BuildKit's snapshot: a big context costs no
    copy); the mount's root keeps the source's owner and mode, as a read-only bind shows them."""
    ctx = builder.context({
        "Dockerfile": f"FROM busybox:local AS st\nRUN mkdir -p /d/e && echo one > /d/f && chown 123:456 /d "
        f"&& chmod 750 /d # {uuid.uuid4().hex}\n"
        "FROM busybox:local\n"
        "RUN --mount=type=bind,from=st,source=/d,target=/m,rw stat -c '%u:%g %a' /m > /root-rw && "
        "echo two > /m/f && rm -r /m/e && cat /m/f > /wrote && grep ' /m ' /proc/mounts | cut -d' ' -f3 > /fs\n"
        "RUN --mount=type=bind,from=st,source=/d,target=/m stat -c '%u:%g %a' /m > /root-ro && "
        "cat /m/f > /after && ls /m > /list\n"
        "RUN --mount=type=bind,source=sub,target=/s,rw rm /s/a && echo b > /s/b && ls /s > /ctx-list\n",
        "sub/a": "a"}, "bind-rw")
    for isolation in ("runc", "chroot"):
        builder.build(ctx, "--no-cache", "--isolation", isolation, "-t", f"cli-bind-rw:{isolation}")
        out = builder.run(f"cli-bind-rw:{isolation}", "cat", "/root-rw", "/root-ro", "/wrote", "/fs",
                          "/after", "/list", "/ctx-list").stdout.decode().splitlines()
        assert out == ["123:456 750", "123:456 750", "two", "overlay", "one", "e", "f", "b"], (isolation, out)
        assert (ctx / "sub" / "a").read_text() == "a" and not (ctx / "sub" / "b").exists()

def test_isolations_build_the_same_tree(builder: Builder, tmp_path: Path) -> None:
    """runc, crun and the chroot fallback make the same file system from the same RUN steps."""
    from tests.engine.flatten import tree_from_tar

    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /m && "
                           "mkdir -p /d/e && echo 1 > /d/e/f && rm /etc/group && ln -s /d /l\n"
                           "USER app\nRUN touch /tmp/by-app && id > /tmp/id && hostname > /tmp/host\n"
                           "USER root\nRUN rm -rf /d && mkdir /d && echo 2 > /d/g\n"})
    trees = {}
    for isolation in ("runc", "crun", "chroot"):
        out = tmp_path / f"{isolation}.tar"
        builder.build(ctx, "--no-cache", "--isolation", isolation, "-o", f"type=tar,dest={out}")
        trees[isolation] = tree_from_tar(out)
    assert trees["runc"] == trees["crun"] == trees["chroot"]
    assert trees["runc"]["tmp/by-app"][2:4] == (1000, 1000)
    assert "etc/group" not in trees["runc"] and "d/e" not in trees["runc"]


def test_run_on_top_of_120_layers(builder: Builder) -> None:
    """Issue 4: overlay lower dirs work for images with 100+ layers (short link names)."""
    files = {f"f{i}": f"{i}\n" for i in range(1, 121)}
    lines = ["FROM busybox:local", *(f"COPY f{i} /layers/" for i in range(1, 121)),
             f"RUN ls /layers | wc -l > /count && cat /layers/f1 /layers/f120 >> /count # {uuid.uuid4().hex}"]
    ctx = builder.context({**files, "Dockerfile": "\n".join(lines) + "\n"})
    builder.build(ctx, "-t", "cli-many-layers:1")
    assert builder.run("cli-many-layers:1", "cat", "/count").stdout == b"120\n1\n120\n"
    assert len(_inspect(builder, "cli-many-layers:1")["RootFS"]["Layers"]) == 122


def test_source_date_epoch_makes_builds_reproducible(builder: Builder) -> None:
    """Two uncached builds with SOURCE_DATE_EPOCH: the same image ID (layers, config, history)."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN echo hi > /x && mkdir /d && touch /d/f\n"
                           "COPY Dockerfile /df\nENV A=1\nWORKDIR /w\n"})
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    first = builder.build(ctx, "--no-cache", "-q", env=env)
    time.sleep(1.1)  # a wall-clock second passes between the two
    second = builder.build(ctx, "--no-cache", "-q", env=env)
    assert _out(first) == _out(second)
    info = json.loads(run_pybuild("inspect", _out(first), root=builder.root, check=True).stdout)[0]
    assert info["Created"].startswith("2023-11-14T22:13:20")


CONTAINER_FLAGS = ("--add-host", "reg.local:127.0.0.9", "--add-host", "v6.local=::1", "--shm-size", "128m",
                   "--ulimit", "nofile=1024:2048", "--ulimit", "core=-1", "--ulimit", "nproc=500")
CONTAINER_PROBE = ("(grep -v -e localhost -e ip6 /etc/hosts; grep /dev/shm /proc/mounts | cut -d' ' -f2-4; "
                   "ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc; ulimit -u; ulimit -s) > /out")


def test_add_host_shm_size_and_ulimit_as_docker_build_gives_them(builder: Builder, docker: str) -> None:
    """--add-host, --shm-size, --ulimit: what a RUN step sees is what it sees under docker build."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN {CONTAINER_PROBE} # {uuid.uuid4().hex}\n"},
                          "container-flags")
    tag = f"pybuild-test-limits:{uuid.uuid4().hex[:8]}"
    subprocess.run([docker, "build", "-q", "--force-rm", *CONTAINER_FLAGS, "-t", tag, str(ctx)], check=True,
                   capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        expected = subprocess.run([docker, "run", "--rm", tag, "cat", "/out"], check=True,
                                  capture_output=True).stdout
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    assert expected.startswith(b"127.0.0.9\treg.local\n::1\tv6.local\n") and b"size=131072k" in expected
    for isolation in ("runc", "crun", "chroot"):
        builder.build(ctx, "--no-cache", "--isolation", isolation, *CONTAINER_FLAGS, "-t", f"cli-limits:{isolation}")
        assert builder.run(f"cli-limits:{isolation}", "cat", "/out").stdout == expected, isolation
    shown = run_pybuild("run", "--rm", "--add-host", "db:127.0.0.7", "--shm-size", "32m", "--ulimit", "nofile=99",
                        "busybox:local", "sh", "-c", "grep -E '\\sdb$' /etc/hosts; df -k /dev/shm | tail -1; ulimit -n",
                        root=builder.root, check=True).stdout.decode().split()
    assert shown[:2] == ["127.0.0.7", "db"] and "32768" in shown and shown[-1] == "99"


def test_proxies_of_docker_s_config_reach_run_steps_as_docker_build_passes_them(builder: Builder, docker: str,
                                                                                 tmp_path: Path) -> None:
    """config.json's proxies.default are build args to docker build (HTTP_PROXY and http_proxy,
    ...), under any name a --build-arg does not set; never in the image (proxy args stay out)."""
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"proxies": {"default": {
        "httpProxy": "http://127.0.0.1:3128", "noProxy": "localhost,127.0.0.2"}}}))
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN env | grep -i _proxy= | sort > /out "
                                         f"# {uuid.uuid4().hex}\n"}, "proxies")
    args = ("--build-arg", "http_proxy=http://127.0.0.5:1")
    env = {"DOCKER_CONFIG": str(config)}
    tag = f"pybuild-test-proxies:{uuid.uuid4().hex[:8]}"
    subprocess.run([docker, "build", "-q", *args, "-t", tag, str(ctx)], check=True, capture_output=True,
                   env={**env, "DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        expected = subprocess.run([docker, "run", "--rm", tag, "cat", "/out"], check=True,
                                  capture_output=True).stdout
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    assert expected == (b"HTTP_PROXY=http://127.0.0.1:3128\nNO_PROXY=localhost,127.0.0.2\n"
                        b"http_proxy=http://127.0.0.5:1\nno_proxy=localhost,127.0.0.2\n")
    builder.build(ctx, *args, "-t", "cli-proxies:1", env=env)
    assert builder.run("cli-proxies:1", "cat", "/out").stdout == expected
    assert not [e for e in _inspect(builder, "cli-proxies:1")["Config"]["Env"] if "proxy" in e.lower()]
    history = run_pybuild("history", "--no-trunc", "cli-proxies:1", root=builder.root, check=True).stdout
    assert b"127.0.0.1:3128" not in history and b"127.0.0.5" not in history
    (config / "config.json").write_text("{broken")
    warned = builder.build(ctx, "-t", "cli-proxies:2", env=env)
    assert b"WARNING: Error loading config file" in warned.stderr


def test_buildx_comma_lists_of_add_host_and_allow(builder: Builder) -> None:
    """buildx's --add-host and --allow are string-slice flags: `a:IP,b:IP` is two hosts and
    `network.host,security.insecure` two entitlements; an unknown one is a clear error."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN grep comma /etc/hosts > /h # {uuid.uuid4().hex}\n"},
                          "comma-lists")
    builder.build(ctx, "--add-host", "a.comma:127.0.0.3,b.comma:127.0.0.4", "--allow",
                  "network.host,security.insecure", "-t", "cli-comma:1")
    assert builder.run("cli-comma:1", "cat", "/h").stdout == b"127.0.0.3\ta.comma\n127.0.0.4\tb.comma\n"
    bad = builder.build(ctx, "--allow", "network.host,everything", check=False)
    assert bad.returncode == 125 and b"invalid entitlement 'everything' for --allow" in bad.stderr


def test_container_flags_count_in_the_cache_key(builder: Builder) -> None:
    """As in BuildKit's exec op: a RUN built with other hosts, shm size or limits is not reused."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN cat /etc/hosts > /h # {uuid.uuid4().hex}\n"},
                          "container-key")
    builder.build(ctx)
    assert b"CACHED" in builder.build(ctx).stderr
    changed = builder.build(ctx, "--add-host", "a.local:127.0.0.3")
    assert b"CACHED" not in changed.stderr and b"add-host changed" in changed.stderr
    assert b"CACHED" in builder.build(ctx, "--add-host", "a.local:127.0.0.3").stderr
    assert b"CACHED" not in builder.build(ctx, "--ulimit", "nofile=512").stderr


@pytest.mark.parametrize("flags, message", [
    (("--add-host", "x:not-an-ip"), b"invalid IP address in add-host"),
    (("--add-host", "no-address"), b"expected NAME:IP"),
    (("--shm-size", "lots"), b"--shm-size"),
    (("--ulimit", "bogus=1"), b"invalid ulimit type: bogus"),
    (("--ulimit", "nofile=10:5"), b"soft limit must be less than or equal to hard limit: 10 > 5"),
    (("--ulimit", "nofile"), b"NAME=SOFT[:HARD]"),
    (("--ssh", "default="), b"invalid --ssh"),
])
def test_container_flag_errors(builder: Builder, flags: tuple[str, ...], message: bytes) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN true\n"}, "container-errors")
    p = builder.build(ctx, *flags, check=False)
    assert p.returncode == 125 and message in p.stderr and b"Traceback" not in p.stderr, p.stderr


def test_run_security_insecure_needs_allow_and_then_runs_privileged(builder: Builder) -> None:
    """BuildKit's entitlement: refused without --allow security.insecure; with it, every capability
    pybuild has (docker's --privileged asks for all the kernel knows, and fails where a sandbox
    lacks one), no seccomp filter, /sys writable; the next step is confined again."""
    probe = ("(grep -E '^(CapEff|Seccomp):' /proc/self/status; mkdir -p /mnt/t && mount -t tmpfs none /mnt/t "
             "&& echo mounted; umount /mnt/t; grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1)")
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN --security=insecure {probe} > /out 2>&1 "
                           f"# {uuid.uuid4().hex}\nRUN {probe} > /out2 2>&1 || true\n"}, "insecure")
    refused = builder.build(ctx, check=False)
    assert refused.returncode == 1 and b"Dockerfile:2" in refused.stderr and b"--allow security.insecure" in refused.stderr
    own = next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("CapBnd:"))
    for isolation in ("runc", "crun", "chroot"):
        builder.build(ctx, "--no-cache", "--allow", "security.insecure", "--isolation", isolation,
                      "-t", f"cli-insecure:{isolation}")
        out = builder.run(f"cli-insecure:{isolation}", "cat", "/out", "/out2").stdout.decode().splitlines()
        assert out[:4] == [f"CapEff:\t{own}", "Seccomp:\t0", "mounted", "rw"], (isolation, out)
        assert out[5] == "Seccomp:\t2" and "mounted" not in out[4:] and out[-1] == "ro", (isolation, out)



def test_run_security_insecure_has_buildkits_devices(builder: Builder) -> None:
    """BuildKit gives a privileged step FUSE, CUSE, KVM, TUN, kmsg, loop-control and the loop
    devices up to seven past the first free one, so that losetup finds a device; a plain step has none."""
    nodes = "/dev/fuse /dev/cuse /dev/kvm /dev/net/tun /dev/kmsg /dev/loop-control /dev/loop0 /dev/loop7"
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN --security=insecure ls {nodes} > /out "
                           f"&& losetup -f > /free # {uuid.uuid4().hex}\nRUN ls /dev > /plain\n"}, "insecure-dev")
    for isolation in ("runc", "crun", "chroot"):
        builder.build(ctx, "--no-cache", "--allow", "security.insecure", "--isolation", isolation,
                      "-t", f"cli-insecure-dev:{isolation}")
        out = builder.run(f"cli-insecure-dev:{isolation}", "cat", "/out", "/free", "/plain").stdout.decode()
        lines = out.splitlines()
        assert lines[:8] == sorted(nodes.split()), (isolation, out)
        assert lines[8].startswith("/dev/loop"), (isolation, out)
        assert not {"fuse", "kvm", "loop-control", "loop0", "net"} & set(lines[9:]), (isolation, out)

def test_check_runs_the_build_checks_only(builder: Builder) -> None:
    """docker build --check: the checks as `pybuild lint` prints them, and nothing built or run; a
    warning makes the exit status 1, as BuildKit's lint answers it to buildx (`--call=check` too)."""
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {marker} | rev\nCMD echo hi\n"}, "check-only")
    p = builder.build(ctx, "--check", "--load", "-t", "check-only:1", check=False)
    assert p.returncode == 1, p.stderr
    # buildx's layout of BuildKit's lint results: the count, then each warning over an excerpt
    assert p.stdout.decode().splitlines() == [
        "Check complete, 1 warning has been found!",
        "",
        "WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
        "Dockerfile:3",
        "--------------------",
        "   1 |     FROM busybox:local",
        f"   2 |     RUN echo {marker} | rev",
        "   3 | >>> CMD echo hi",
        "   4 |     ",
        "--------------------",
    ]
    assert marker[::-1].encode() not in p.stdout + p.stderr  # nothing ran
    assert run_pybuild("inspect", "check-only:1", root=builder.root).returncode != 0
    as_json = builder.build(ctx, "--call=check,format=json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["warnings"][0]["ruleName"] == "JSONArgsRecommended"
    assert run_pybuild("lint", str(ctx), root=builder.root).returncode == 0  # pybuild's own lint reports only
    (ctx / "Dockerfile").write_text(f"FROM busybox:local\nRUN echo {marker}\n")
    clean = builder.build(ctx, "--check")
    assert b"Check complete, no warnings found." in clean.stdout


def test_annotations_reach_the_manifest_the_registry_and_an_oci_index(builder: Builder, registry: str,
                                                                        tmp_path: Path) -> None:
    """``--annotation`` as buildx: manifest (default), index and manifest-descriptor of an OCI output."""
    import requests

    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /x\n"}, "annotated")
    ref = f"{registry}/annotated/app:1"
    out = tmp_path / "oci.tar"
    builder.build(ctx, "-t", ref, "--push", "-o", f"type=oci,dest={out}",
                  "--annotation", "org.opencontainers.image.description=described",
                  "--annotation", "index,manifest-descriptor:org.opencontainers.image.title=titled",
                  "--annotation", "manifest[linux/s390x]:only.elsewhere=1")
    pushed = requests.get(f"http://{registry}/v2/annotated/app/manifests/1", timeout=30, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert pushed["annotations"] == {"org.opencontainers.image.description": "described"}
    with tarfile.open(out) as tf:
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
        entry = index["manifests"][0]
        manifest = json.load(tf.extractfile("blobs/" + entry["digest"].replace(":", "/")))  # type: ignore[arg-type]
    assert index["annotations"] == {"org.opencontainers.image.title": "titled"}
    assert entry["annotations"]["org.opencontainers.image.title"] == "titled"
    assert manifest["annotations"] == {"org.opencontainers.image.description": "described"}
    bad = builder.build(ctx, "--annotation", "index-descriptor:a=b", check=False)
    assert bad.returncode == 125 and b"multi-platform" in bad.stderr


def test_classic_builder_flags_that_mean_nothing_here_are_taken(builder: Builder) -> None:
    """--rm, --force-rm, --compress, --disable-content-trust: accepted as buildx accepts them (no build
    container outlives its step, the context is never sent); --security-opt refused as docker's
    builder refuses it, pointing at RUN --security=insecure."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN true\n"}, "legacy-flags")
    builder.build(ctx, "--rm", "--force-rm", "--compress", "--disable-content-trust")
    refused = builder.build(ctx, "--security-opt", "seccomp=unconfined", check=False)
    assert refused.returncode == 125 and b"--allow security.insecure" in refused.stderr
    assert b"Traceback" not in refused.stderr


def test_a_child_image_drops_the_base_images_own_making(builder: Builder) -> None:
    """comment, container, container_config, docker_version described how the base was made;
    docker's builder and BuildKit leave them out of a child (docker import sets a comment)."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nLABEL a=1\n"})
    builder.build(ctx, "-t", "child-of-import:1")
    base = json.loads(run_pybuild("inspect", "busybox:local", root=builder.root, check=True).stdout)[0]
    child = json.loads(run_pybuild("inspect", "child-of-import:1", root=builder.root, check=True).stdout)[0]
    assert base["Comment"] == "Imported from -"
    assert child["Comment"] == "" and child["Config"]["Labels"] == {"a": "1"}


def test_history_times_as_docker_prints_them(builder: Builder) -> None:
    """docker history: CreatedAt is RFC 3339 to the second; -H=false shows it in a CREATED AT column."""
    import re

    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN true\n"})
    builder.build(ctx, "-t", "history-times:1")
    out = run_pybuild("history", "--format", "{{.CreatedAt}}", "history-times:1", root=builder.root,
                      check=True).stdout.decode().split()
    assert out and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", t) for t in out), out
    table = run_pybuild("history", "-H=false", "history-times:1", root=builder.root, check=True).stdout.decode()
    assert table.splitlines()[0].split()[:3] == ["IMAGE", "CREATED", "AT"]
    assert out[0] in table.splitlines()[1]


def test_a_layer_that_fills_the_disk_is_a_clear_error(base_archive: Path, tmp_path: Path) -> None:
    """A store on a full disk: the write of the layer is reported as such (not as an unreadable
    file), no temp file stays, and with space freed the same build works and the store is clean."""
    ctx = Builder(tmp_path, tmp_path).context({"Dockerfile": "FROM busybox:local\n"
                                               "RUN dd if=/dev/zero of=/big bs=1M count=6\n"})
    with small_fs(tmp_path / "small", "64m") as small:
        root = small / "root"
        run_pybuild("load", "-i", str(base_archive), root=root, check=True)
        fs = os.statvfs(small)  # room for the 6 MB file in the container, not for its layer too
        used_kb = (fs.f_blocks - fs.f_bfree) * fs.f_frsize // 1024
        subprocess.run(["mount", "-o", f"remount,size={used_kb + 9 * 1024}k", str(small)], check=True)
        p = run_pybuild("build", "--progress", "plain", str(ctx), root=root)
        err = p.stderr.decode()
        assert p.returncode == 1 and "Traceback" not in err, err
        assert "ERROR: Dockerfile:2: [2/2] RUN: cannot write the layer to " in err, err
        assert "No space left on device" in err, err
        assert not list((root / "tmp").iterdir())
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        run_pybuild("build", "-q", str(ctx), root=root, check=True)
        done = run_pybuild("store", "check", root=root, check=True)
        check = (done.stdout + done.stderr).decode()
        assert "clean" in check and "temp file" not in check, check
