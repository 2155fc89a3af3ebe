"""``--build-context NAME=VALUE``: named contexts replace stages and images of the same name (BuildKit)."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import uuid
from pathlib import Path

from tests.engine.conftest import Builder
from tests.helpers.tools import run_pybuild


def _other_context(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "a.txt").write_text("from the named context\n")
    (other / "sub" / "b").write_text("b\n")
    (other / "skip.log").write_text("ignored\n")
    (other / ".dockerignore").write_text("*.log\n")
    return other


def test_directory_context_replaces_a_stage_for_from_copy_and_mounts(builder: Builder, tmp_path: Path) -> None:
    other = _other_context(tmp_path)
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": f"FROM busybox:local AS src\nRUN echo {marker} > /stage-ran\n"
                           "FROM busybox:local\n"
                           "COPY --from=src / /src/\n"
                           "RUN --mount=from=src,target=/m cat /m/a.txt > /mounted && ls -A /src > /src-list\n"},
                          "named-dir")
    p = builder.build(ctx, "-t", "named-dir:1", "--build-context", f"src={other}")
    assert marker.encode() not in p.stderr  # the stage it replaces never ran
    shown = builder.run("named-dir:1", "sh", "-c", "cat /mounted /src-list; stat -c '%u:%g %a' /src/sub/b")
    assert shown.stdout.decode().splitlines() == [
        "from the named context", ".dockerignore", "a.txt", "sub", "0:0 644"]  # its .dockerignore applies

    again = builder.build(ctx, "-t", "named-dir:1", "--build-context", f"src={other}")
    assert again.stderr.count(b"CACHED") == 2
    (other / "sub" / "b").write_text("changed\n")
    changed = builder.build(ctx, "-t", "named-dir:2", "--build-context", f"src={other}")
    assert changed.stderr.count(b"CACHED") == 0
    assert builder.run("named-dir:2", "cat", "/src/sub/b").stdout == b"changed\n"


def test_from_a_directory_context(builder: Builder, tmp_path: Path) -> None:
    other = _other_context(tmp_path)
    ctx = builder.context({"Dockerfile": "FROM app-files\nCOPY Dockerfile /Dockerfile\n"}, "named-from")
    builder.build(ctx, "-t", "named-from:1", "--build-context", f"app-files={other}",
                  env={"SOURCE_DATE_EPOCH": "1700000000"})
    saved = tmp_path / "out.tar"
    run_pybuild("save", "-o", str(saved), "named-from:1", root=builder.root, check=True)
    with tarfile.open(saved) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(tf.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        with tarfile.open(fileobj=tf.extractfile(manifest["Layers"][0]), mode="r:*") as layer:
            names = sorted(layer.getnames())
    assert names == [".dockerignore", "a.txt", "sub", "sub/b"]
    assert config["history"][0]["created_by"] == "build context app-files"
    assert len(manifest["Layers"]) == 2


def test_image_contexts_pin_a_base_by_any_spelling_of_its_name(builder: Builder, tmp_path: Path) -> None:
    """``FROM docker.io/library/busybox:latest`` is replaced by ``--build-context busybox=docker-image://...``."""
    ctx = builder.context({"Dockerfile": "FROM docker.io/library/busybox:latest\nRUN echo pinned > /p\n"
                           "FROM scratch AS empty\n"
                           "FROM busybox\nCOPY --from=empty / /\nCOPY --from=0 /p /p\n"}, "named-image")
    builder.build(ctx, "-t", "named-image:1", "--build-context", "busybox=docker-image://busybox:local")
    assert builder.run("named-image:1", "cat", "/p").stdout == b"pinned\n"

    layout = tmp_path / "layout"
    archive = tmp_path / "bb.oci.tar"
    run_pybuild("save", "--format", "oci", "-o", str(archive), "busybox:local", root=builder.root, check=True)
    with tarfile.open(archive) as tf:
        tf.extractall(layout, filter="data")
    from_layout = builder.context({"Dockerfile": "FROM base\nRUN echo layout > /l\n"}, "named-layout")
    builder.build(from_layout, "-t", "named-layout:1", "--build-context", f"base=oci-layout://{layout}")
    assert builder.run("named-layout:1", "cat", "/l").stdout == b"layout\n"


def test_git_and_archive_url_contexts(builder: Builder, git_daemon: str, tmp_path: Path) -> None:
    """A git repository (ref and subdirectory as ADD takes them) and a tar.gz over http, on loopback."""
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "files.tar.gz", "w:gz") as tf:
        data = b"from the archive\n"
        info = tarfile.TarInfo("pkg/data.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY --from=repo / /repo/\n"
                               "COPY --from=sub / /sub/\nCOPY --from=archive /pkg/data.txt /data.txt\n"
                               "RUN ls -A /repo /sub > /listing\n"}, "named-urls")
        builder.build(ctx, "-t", "named-urls:1", "--build-context", f"repo={git_daemon}#v1",
                      "--build-context", f"sub={git_daemon}#main:src",
                      "--build-context", f"archive=http://127.0.0.1:{server.server_address[1]}/files.tar.gz")
    finally:
        server.shutdown()
    shown = builder.run("named-urls:1", "sh", "-c", "cat /repo/README /data.txt /listing").stdout.decode()
    assert shown.splitlines() == ["v1", "from the archive", "/repo:", "README", "src", "", "/sub:", "main.c"]
    assert list((builder.root / "run" / "tmp").glob("*-context-*")) == []


def test_bad_build_contexts_are_refused_clearly(builder: Builder, tmp_path: Path, git_daemon: str) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY --from=x / /x/\n"}, "named-errors")
    for value, message in [("x", b"expected NAME=VALUE"), (f"x={tmp_path / 'missing'}", b"is not a directory"),
                           ("x=docker-image://UPPER:case", b"is not an image reference"),
                           ("x=ftp://127.0.0.1/a.tar", b"unknown scheme"),
                           ("x=oci-layout://", b"oci-layout:// needs a directory")]:
        p = builder.build(ctx, "--build-context", value, check=False)
        assert p.returncode == 125 and message in p.stderr and b"Traceback" not in p.stderr, (value, p.stderr)
    p = builder.build(ctx, "--build-context", f"x={git_daemon}#no-such-ref", check=False)
    assert p.returncode != 0 and b"--build-context x: cloning" in p.stderr and b"Traceback" not in p.stderr


def test_remote_build_contexts_as_docker_build(builder: Builder, git_daemon: str, git_repo: Path,
                                               tmp_path: Path) -> None:
    """``pybuild build URL``: a git repository (with #ref:subdir), a tar.gz over http, and a plain
    Dockerfile over http (empty context), as docker build takes them."""
    import subprocess

    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(git_repo), str(work)], check=True)
    (work / "Dockerfile").write_text("FROM busybox:local\nCOPY . /ctx/\nRUN ls -A /ctx > /list\n")
    env_args = ["-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", *env_args, "add", "Dockerfile"], cwd=work, check=True)
    subprocess.run(["git", *env_args, "commit", "-qm", "dockerfile"], cwd=work, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD:refs/heads/with-dockerfile"], cwd=work, check=True,
                   capture_output=True)
    def build_url(url: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return run_pybuild("build", *args, url, root=builder.root, check=check)

    build_url(f"{git_daemon}#with-dockerfile", "-t", "remote-git:1")
    assert builder.run("remote-git:1", "cat", "/list").stdout.decode().split() == ["Dockerfile", "README", "src"]

    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "ctx.tar.gz", "w:gz") as tf:
        for name, data in {"Dockerfile": b"FROM busybox:local\nCOPY hello /hello\n", "hello": b"over http\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (served / "Dockerfile.plain").write_text("FROM busybox:local\nRUN echo plain > /plain\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        build_url(f"{base}/ctx.tar.gz", "-t", "remote-tar:1")
        build_url(f"{base}/Dockerfile.plain", "-t", "remote-plain:1")
        missing = build_url(f"{base}/nothing.tar", check=False)
    finally:
        server.shutdown()
    assert builder.run("remote-tar:1", "cat", "/hello").stdout == b"over http\n"
    assert builder.run("remote-plain:1", "cat", "/plain").stdout == b"plain\n"
    assert missing.returncode != 0 and b"HTTP 404" in missing.stderr and b"Traceback" not in missing.stderr
    assert list((builder.root / "run" / "tmp").glob("*-context-*")) == []


def test_a_url_context_that_names_no_file_is_the_dockerfile(builder: Builder) -> None:
    """``pybuild build http://host/`` (no file name in the URL, none from the server): docker
    downloads it as the context and takes the text as the Dockerfile; pybuild once asked for
    'a destination path that does not end in /'."""
    from tests.helpers.fileserver import serve_files

    with serve_files({"/": b"FROM busybox:local\nRUN echo root > /root-url\n"}) as base:
        run_pybuild("build", "-q", "-t", "remote-root:1", f"{base}/", root=builder.root, check=True)
    assert builder.run("remote-root:1", "cat", "/root-url").stdout == b"root\n"
