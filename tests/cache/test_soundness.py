"""A cached rebuild must give what a --no-cache build of the same inputs gives.

Each case builds, edits one input, then builds again; the edit must rerun the step
that reads it (found by property-testing cached against fresh builds, 2026-12-04).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cache.db import Database
from cache.statcache import StatCache
from tests.cache.conftest import Machine, ran, steps, write_context
from tests.helpers.fileserver import serve_files


def _ran_titles(m: Machine, ctx: Path, *args: str) -> list[str]:
    out = m.build(ctx, *args)
    return [t.split("] ", 1)[1] for t in ran(out.stdout + out.stderr)]


def _cat(m: Machine, image: str, *cmd: str) -> str:
    return m.run("run", "--rm", image, *cmd, check=True).stdout.decode()


def test_hardlinks_xattrs_and_device_numbers_count(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nCOPY d /d\n",
                                           "d/a": "same\n", "d/b": "same\n"})
    os.mknod(ctx / "d" / "n", 0o644 | 0o020000, os.makedev(1, 3))
    m.build(ctx, "-t", "sound:1")
    (ctx / "d" / "b").unlink()
    os.link(ctx / "d" / "a", ctx / "d" / "b")
    assert _ran_titles(m, ctx, "-t", "sound:1") == ["COPY d /d"]
    assert _cat(m, "sound:1", "stat", "-c", "%h", "/d/a", "/d/b").split() == ["2", "2"]

    os.setxattr(ctx / "d" / "a", "user.note", b"v1")
    assert _ran_titles(m, ctx, "-t", "sound:1") == ["COPY d /d"]
    assert _ran_titles(m, ctx, "-t", "sound:1") == []  # and then it is cached

    (ctx / "d" / "n").unlink()
    os.mknod(ctx / "d" / "n", 0o644 | 0o020000, os.makedev(1, 5))
    assert _ran_titles(m, ctx, "-t", "sound:1") == ["COPY d /d"]
    (ctx / "d" / "n").unlink()
    os.mkfifo(ctx / "d" / "n", 0o644)
    assert _ran_titles(m, ctx, "-t", "sound:1") == ["COPY d /d"]
    assert _cat(m, "sound:1", "stat", "-c", "%F", "/d/n").strip() == "fifo"


def test_a_context_bind_mount_shows_what_its_key_counts(machines, tmp_path: Path) -> None:
    """.dockerignore hides files from RUN --mount=type=bind too; owners it shows are keyed."""
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {
        ".dockerignore": "conf.local\n", "conf.local": "secret-v1\n", "a": "a\n",
        "Dockerfile": "FROM busybox:local\nRUN --mount=type=bind,target=/src "
                      "(ls -a /src; stat -c %u /src/a) > /out\n"})
    m.build(ctx, "-t", "bind:1")
    out = _cat(m, "bind:1", "cat", "/out")
    assert "conf.local" not in out and "Dockerfile" in out and out.split()[-1] == "0"
    (ctx / "conf.local").write_text("secret-v2\n")
    assert _ran_titles(m, ctx, "-t", "bind:1") == []
    os.chown(ctx / "a", 1234, 1234)
    assert len(_ran_titles(m, ctx, "-t", "bind:1")) == 1
    assert _cat(m, "bind:1", "cat", "/out").split()[-1] == "1234"
    assert (ctx / "a").stat().st_nlink == 1  # the context itself untouched


def test_an_url_without_etag_is_keyed_on_its_content(machines, tmp_path: Path) -> None:
    """A server that sends neither ETag nor Last-Modified, as some do."""
    files = {"/f": b"A1\n"}
    m: Machine = machines()
    with serve_files(files) as url:
        ctx = write_context(tmp_path / "ctx", {"Dockerfile": f"FROM busybox:local\nADD {url}/f /f\n"})
        m.build(ctx, "-t", "url:1")
        assert _ran_titles(m, ctx, "-t", "url:1") == []
        files["/f"] = b"B2\n"
        assert _ran_titles(m, ctx, "-t", "url:1") == [f"ADD {url}/f /f"]
    assert _cat(m, "url:1", "cat", "/f") == "B2\n"


class _NewBodyEachTime(dict):
    """A server file that changes at every request, the worst case for keying by content."""

    def get(self, path: str, default: bytes | None = None) -> bytes | None:
        self["n"] = self.get_count() + 1
        return f"body-{self['n']}\n".encode() if path == "/f" else default

    def get_count(self) -> int:
        return int(dict.get(self, "n", 0))


def test_an_url_keyed_on_its_content_is_downloaded_once_per_build(machines, tmp_path: Path) -> None:
    """Keying downloaded the body; the step that misses copies those bytes, not a second fetch
    (which costs the transfer again, and could differ from what the key says)."""
    m: Machine = machines()
    log: list[str] = []
    with serve_files(_NewBodyEachTime(), log=log) as url:
        ctx = write_context(tmp_path / "ctx", {
            "Dockerfile": f"FROM busybox:local AS a\nADD {url}/f /f\nFROM busybox:local\nADD {url}/f /g\n"
                          "COPY --from=a /f /f\n"})
        m.build(ctx, "-t", "once:1")
        assert log.count("GET /f") == 1, log
        body = _cat(m, "once:1", "cat", "/f")
        assert body == _cat(m, "once:1", "cat", "/g") and body.startswith("body-"), body
        log.clear()
        assert _ran_titles(m, ctx, "-t", "once:1") == [f"ADD {url}/f /f", f"ADD {url}/f /g", "COPY --from=a /f /f"]
        assert log.count("GET /f") == 1, log
    assert list((m.root / "tmp").iterdir()) == []


def test_a_build_arg_reruns_only_the_steps_that_read_it(machines, tmp_path: Path) -> None:
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:local\nARG U=1\nCOPY a /a\nRUN echo $U > /u\nENV X=fixed\nARG X\n"
                      "RUN echo $X > /x\n", "a": "a\n"})
    first = m.build(ctx, "--build-arg", "U=1")
    assert steps(first.stdout + first.stderr)["cached"] == 0
    # ENV and ARG rerun too but show no step, as in BuildKit's progress
    assert _ran_titles(m, ctx, "--build-arg", "U=2") == ["RUN echo $U > /u", "RUN echo $X > /x"]
    assert _ran_titles(m, ctx, "--build-arg", "U=2") == []


def test_the_stat_cache_does_not_remember_racy_hashes(tmp_path: Path) -> None:
    """git's racy rule: a file changed within a timestamp tick of its hashing could change again
    unseen on a coarse file system; its hash serves one build and is not remembered."""
    db = Database(tmp_path / "meta.db")
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    old.write_text("old\n")
    time.sleep(2.2)
    fresh.write_text("fresh\n")
    cache = StatCache(db)
    for path in (fresh, old):
        cache.file_digest(path, path.stat())
        cache.file_digest(path, path.stat())  # the same build: not read twice
    assert cache.hashed == 2
    cache.flush()
    again = StatCache(db)
    for path in (fresh, old):
        again.file_digest(path, path.stat())
    assert again.hashed == 1  # only the racy one is read again


def test_a_file_edited_while_its_step_runs_is_not_cached_with_the_old_key(machines, tmp_path: Path) -> None:
    """The key hashes the context before the step reads it: a save during a long RUN over a
    bind mount (or between hashing and copying) must not file the new result under the old key,
    else reverting the file later gives the image the edited content."""
    import threading

    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {
        "Dockerfile": "FROM busybox:local\nRUN --mount=type=bind,target=/src "
                      "for i in $(seq 60); do [ -e /src/go ] && break; sleep 0.1; done; cat /src/a > /out\n"
                      "RUN cat /out\n",
        "a": "v1\n"})
    containers = m.root / "run" / "containers"

    def edit() -> None:  # once the step's container runs: its keying is done by then
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (containers.is_dir() and any(containers.iterdir())):
            time.sleep(0.05)
        (ctx / "a").write_text("v2\n")
        (ctx / "go").write_text("")

    editor = threading.Thread(target=edit)
    editor.start()
    out = m.build(ctx, "-t", "edited:1")
    editor.join()
    log = (out.stdout + out.stderr).decode()
    assert "WARN: a changed while [2/3] RUN --mount=type=bind" in log, log
    assert "its result is not cached" in log
    assert _cat(m, "edited:1", "cat", "/out") == "v2\n"  # what the step read
    (ctx / "a").write_text("v1\n")  # reverted: the context of the first key again,
    (ctx / "go").unlink()  # which has no record of v2
    assert len(_ran_titles(m, ctx, "-t", "edited:1")) == 2
    assert _cat(m, "edited:1", "cat", "/out") == "v1\n"
    assert _ran_titles(m, ctx, "-t", "edited:1") == []  # an undisturbed build is cached as usual


def test_a_filtered_bind_mount_leaves_the_context_untouched_and_its_hashes_remembered(
        machines, tmp_path: Path) -> None:
    """With a .dockerignore, a context bind mount shows only the files its key counts without
    linking them (a hard link changes a file's ctime: the stat cache then read every context
    file again on every build)."""
    m: Machine = machines()
    ctx = write_context(tmp_path / "ctx", {
        ".dockerignore": "ign\nsub/*.log\n!sub/keep.log\n", "a": "a\n", "ign/f": "i\n",
        "sub/x.log": "x\n", "sub/keep.log": "k\n", "sub/deep/f": "d\n",
        "Dockerfile": "FROM busybox:local\nRUN --mount=type=bind,target=/src cd /src && (find . | sort; stat -c %a sub) > /out\n"})
    (ctx / "sub").chmod(0o750)
    time.sleep(2.2)  # older than the stat cache's racy window
    files = [p for p in ctx.rglob("*") if p.is_file()]
    before = {p: p.stat().st_ctime_ns for p in files}
    m.build(ctx, "-t", "view:1")
    assert _cat(m, "view:1", "cat", "/out").split() == [
        ".", "./.dockerignore", "./Dockerfile", "./a", "./sub", "./sub/deep", "./sub/deep/f", "./sub/keep.log",
        "750"]  # a directory shows its own mode
    assert {p: p.stat().st_ctime_ns for p in files} == before
    db = Database(m.root / "meta.db")
    remembered = {(r[0], r[1]): r[2] for r in db.query("SELECT dev, ino, ctime_ns FROM stat_cache")}
    for p in (ctx / "a", ctx / "sub" / "keep.log", ctx / "Dockerfile"):
        st = p.stat()
        assert remembered.get((st.st_dev, st.st_ino)) == st.st_ctime_ns, p
