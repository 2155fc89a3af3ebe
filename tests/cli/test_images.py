"""The local image commands as a user runs them: load, save, images, inspect, history, tag,
rmi, prune and store check; their output and errors; a store that survives SIGKILL at any
point and several pybuild processes at once."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from builder.image.mediatypes import Compression
from tests.helpers.tools import REPO, run_pybuild, small_fs
from tests.store.imagegen import image_of, make_image, noise, write_archive


def ok(*args: str, root: Path, input: bytes | None = None) -> str:
    return run_pybuild(*args, root=root, input=input, check=True).stdout.decode()


def fails(*args: str, root: Path, code: int = 1) -> str:
    proc = run_pybuild(*args, root=root)
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    img = image_of([
        {"etc/app.conf": b"a=1\n", "bin/tool": noise("tool", 3000), "tmp/cache": noise("cache", 5000)},
        {"etc/app.conf": b"a=2\n", "tmp/cache": None, "data/new": b"new"},
    ], docker=True, created="2020-01-01T00:00:00Z")
    return write_archive(tmp_path / "app.tar", img, ("app:1",))


def test_load_images_and_inspect(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    assert ok("load", "-i", str(archive), root=root) == "Loaded image: app:1\n"
    lines = ok("images", root=root).splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    info = json.loads(ok("inspect", "app:1", root=root))
    assert len(info) == 1
    image_id = info[0]["Id"]
    assert re.match(r"^app\s+1\s+" + image_id[7:19] + r"\s+\d+ years ago\s+\d+(\.\d+)?kB$", lines[1]), lines[1]
    assert info[0]["RepoTags"] == ["app:1"]
    assert info[0]["RepoDigests"][0].startswith("app@sha256:")
    assert info[0]["Created"] == "2020-01-01T00:00:00Z"
    assert info[0]["Config"]["Env"] == ["A=1"] and info[0]["Config"]["Cmd"] == ["/bin/sh"]
    assert info[0]["Config"]["Hostname"] == "" and info[0]["Config"]["Volumes"] is None
    assert info[0]["RootFS"]["Type"] == "layers" and len(info[0]["RootFS"]["Layers"]) == 2
    assert info[0]["Parent"] == "" and info[0]["Size"] > 8000
    # Every way to name it.
    for ref in (image_id, image_id[7:19], "docker.io/library/app:1", "app@" + info[0]["RepoDigests"][0].split("@")[1]):
        assert json.loads(ok("inspect", ref, root=root))[0]["Id"] == image_id
    rows = [json.loads(line) for line in ok("images", "--format", "json", root=root).splitlines()]
    assert rows[0]["Repository"] == "app" and rows[0]["Tag"] == "1" and rows[0]["ID"] == image_id[7:19]
    assert ok("images", "-q", root=root) == image_id[7:19] + "\n"
    assert ok("images", "-q", "--no-trunc", root=root) == image_id + "\n"
    assert ok("images", "-q", "other", root=root) == ""
    assert ok("images", "-q", "app:1", root=root) == image_id[7:19] + "\n"


def test_history(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    lines = ok("history", "app:1", root=root).splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(image_id[7:19] + "   ")
    assert '/bin/sh -c #(nop)  CMD ["/bin/sh"]' in lines[1] and " 0B" in lines[1]
    assert all(line.startswith("<missing>") for line in lines[2:])
    assert len(lines) == 4
    rows = [json.loads(line) for line in ok("history", "--format", "json", "-H=false", "app:1", root=root).splitlines()]
    assert rows[-1]["CreatedBy"] == "/bin/sh -c #(nop) COPY layer 0"
    assert int(rows[-1]["Size"]) > 8000 and rows[0]["Size"] == "0"
    long = ok("history", "--no-trunc", "-q", "app:1", root=root).splitlines()
    assert long[0] == image_id
    # -H is a boolean that defaults to true, as docker's: alone it takes no value (`-H IMAGE`
    # once read the image as its value); a value goes after '=' and must be a Go boolean.
    assert ok("history", "-H", "app:1", root=root) == ok("history", "--human", "app:1", root=root)
    assert ok("history", "-H", "app:1", root=root).splitlines()[0] == lines[0]
    assert "CREATED AT" in ok("history", "-H=f", "app:1", root=root).splitlines()[0]
    assert 'invalid argument "maybe" for "-H" flag' in fails("history", "-H=maybe", "app:1", root=root, code=125)


def test_history_files_shows_what_later_layers_hide(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    out = ok("history", "--files", "-H=false", "app:1", root=root)
    assert "A /tmp/cache  5000" in out and "D /tmp/cache" in out and "M /etc/app.conf" in out
    assert "later layers overwrite 4 and delete 5000 of it" in out
    assert out.splitlines()[-1] == "TOTAL  8011 in 2 layer(s); 5004 (62.5%) overwritten or deleted by later layers"
    rows = [json.loads(line) for line in ok("history", "--files", "--format", "json", "app:1", root=root).splitlines()]
    assert rows[1]["Deleted"] == ["tmp/cache"] and rows[0]["DeletedBytes"] == 5000


def test_load_from_stdin_and_save_to_stdout(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    assert ok("load", root=root, input=archive.read_bytes()) == "Loaded image: app:1\n"
    out = run_pybuild("save", "app:1", root=root, check=True).stdout
    assert out == archive.read_bytes()
    assert list((root / "tmp").iterdir()) == []


def test_save_of_a_repository_without_a_tag_saves_every_tag_of_it(tmp_path: Path, archive: Path):
    """As docker: `save app` saves app:1 and app:2 (not app:latest alone, not an error when
    there is no app:latest); a name with a tag saves that tag; a bare ID prefix still works."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    ok("tag", "app:1", "app:2", root=root)
    ok("tag", "app:1", "other:1", root=root)

    def saved(*names: str) -> list:
        out = run_pybuild("save", *names, root=root, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            manifest = tar.extractfile("manifest.json")
            assert manifest is not None
            return [entry["RepoTags"] for entry in json.load(manifest)]

    assert saved("app") == [["app:1", "app:2"]]
    assert saved("app:2") == [["app:2"]]
    assert saved("app", "other") == [["app:1", "app:2", "other:1"]]
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    assert saved(image_id[7:11]) == [None]
    assert "No such image: nope" in fails("save", "-o", str(tmp_path / "x.tar"), "app", "nope", root=root)
    assert not (tmp_path / "x.tar").exists()


def test_tag_rmi_and_prune(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    ok("tag", "app:1", "localhost:5000/team/app:2", root=root)
    ok("tag", image_id[7:19], "app:3", root=root)
    assert json.loads(ok("inspect", "app:1", root=root))[0]["RepoTags"] == [
        "app:1", "app:3", "localhost:5000/team/app:2"]
    assert ok("images", "-q", "localhost:5000/team/app", root=root) == image_id[7:19] + "\n"
    assert ok("images", "-q", "localhost:5000/team/app:2", root=root) == image_id[7:19] + "\n"
    assert ok("images", "-q", "localhost:5000/team/app:3", root=root) == ""
    err = fails("rmi", image_id[7:19], root=root)
    assert "unable to delete" in err and "must be forced" in err
    assert ok("rmi", "app:3", root=root) == "Untagged: app:3\n"
    out = ok("rmi", "-f", image_id, root=root)
    assert out == f"Untagged: app:1\nUntagged: localhost:5000/team/app:2\nDeleted: {image_id}\n"
    assert ok("images", "-q", root=root) == ""
    out = ok("prune", "-f", root=root)
    assert "Deleted 4 blob(s)" in out and "Total reclaimed space:" in out
    assert list((root / "blobs" / "sha256").iterdir()) == []
    assert "clean" in ok("store", "check", root=root)


def test_prune_keep_storage_and_all(tmp_path: Path):
    root = tmp_path / "root"
    for i in range(3):
        write_archive(tmp_path / f"{i}.tar", make_image(f"p{i}", size=300_000), ())
        ok("load", "-i", str(tmp_path / f"{i}.tar"), root=root)
    assert len(ok("images", "-q", root=root).split()) == 3
    out = ok("prune", "-f", "--keep-storage", "1500kB", root=root)
    assert "Deleted Images:" in out and out.count("deleted: sha256:") == 1
    assert len(ok("images", "-q", root=root).split()) == 2
    ok("prune", "-a", "-f", root=root)
    assert ok("images", "-q", root=root) == ""
    assert "invalid size" in fails("prune", "-f", "--keep-storage", "lots", root=root, code=125)


def test_prune_asks_first(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    ok("rmi", "app:1", root=root)
    proc = run_pybuild("prune", root=root, input=b"n\n")
    assert proc.returncode == 0 and "Are you sure" in proc.stderr.decode()
    assert len(list((root / "blobs" / "sha256").iterdir())) == 4
    run_pybuild("prune", root=root, input=b"y\n", check=True)
    assert list((root / "blobs" / "sha256").iterdir()) == []


def test_store_check_finds_and_repairs_damage(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    assert ok("store", "check", root=root).endswith(": clean\n")
    blob = max((root / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    blob.write_bytes(b"damaged")
    proc = run_pybuild("store", "check", root=root)
    assert proc.returncode == 1
    assert f"corrupt-blob: sha256:{blob.name}" in proc.stdout.decode()
    assert "store check --repair" in proc.stderr.decode()
    out = ok("store", "check", "--repair", root=root)
    assert "repaired: removed broken blob" in out and "app:1" in out and out.endswith(": clean\n")
    fails("inspect", "app:1", root=root)
    # Loading again brings it back.
    ok("load", "-i", str(archive), root=root)
    assert ok("store", "check", root=root).endswith(": clean\n")


def test_a_name_an_older_pybuild_stored_stays_listed_and_removable(tmp_path: Path, archive: Path):
    """`MyOrg/app:1` was once taken for registry MyOrg and stored; it is refused now (as docker
    refuses it), but a store holding it still lists, inspects and removes it."""
    import sqlite3

    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    conn = sqlite3.connect(root / "meta.db")
    with conn:
        conn.execute("INSERT INTO images SELECT 'MyOrg/app:1', manifest_digest, created FROM images")
    conn.close()
    fmt = ("--format", "{{.Repository}}:{{.Tag}}")
    assert ok("images", *fmt, root=root).splitlines() == ["MyOrg/app:1", "app:1"]
    assert json.loads(ok("inspect", "MyOrg/app:1", root=root))[0]["RepoTags"] == ["MyOrg/app:1", "app:1"]
    assert ok("rmi", "MyOrg/app:1", root=root) == "Untagged: MyOrg/app:1\n"
    assert ok("images", *fmt, root=root) == "app:1\n"
    assert ok("inspect", "-f", "{{.Id}}", "app:1", root=root) == image_id + "\n"
    assert "invalid reference format" in fails("tag", "app:1", "MyOrg/app:1", root=root, code=125)


@pytest.mark.parametrize("args, code, message", [
    (("inspect", "nope:1"), 1, "No such image: nope:1"),
    (("history", "nope"), 1, "No such image: nope"),
    (("rmi", "nope"), 1, "No such image: nope"),
    (("tag", "nope", "x:1"), 1, "No such image: nope"),
    (("save", "-o", "/tmp/x.tar", "nope"), 1, "No such image: nope"),
    (("load", "-i", "/nonexistent.tar"), 125, "no such file"),
    (("tag", "a", "UPPER:1"), 125, "invalid reference format"),
    (("tag", "a", "MyOrg/app:1"), 125, "invalid reference format: repository name must be lowercase"),
    (("build", "-t", "MyOrg/app", "."), 125, "invalid reference format: repository name must be lowercase"),
    (("tag", "a", "sha256:abc"), 1, "refusing to create an ambiguous tag using digest algorithm as name"),
    (("build", "-t", "sha256:abc", "."), 1, "refusing to create an ambiguous tag using digest algorithm as name"),
    (("images", "--format", "{{.ID}} {{call .X}}"), 125, "unsupported template"),
])
def test_errors_are_one_clear_message(tmp_path: Path, args: tuple[str, ...], code: int, message: str):
    err = fails(*args, root=tmp_path / "root", code=code)
    assert message in err


def test_saving_where_it_cannot_be_written_is_a_clear_error(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    assert 'invalid output path: directory "/nonexistent/dir" does not exist' in fails(
        "save", "-o", "/nonexistent/dir/x.tar", "app:1", root=root)
    assert not Path("/nonexistent").exists()
    assert 'invalid output path: "/dev/full" must be a directory or a regular file: got a device' in fails(
        "save", "-o", "/dev/full", "app:1", root=root)
    assert Path("/dev/full").is_char_device()  # never replaced by a file
    assert f'invalid output path: "{tmp_path}" is a directory' in fails("save", "-o", str(tmp_path), "app:1",
                                                                         root=root)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith((".part", ".tmp"))]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "builder", "save", "app:1"], stdout=full,
                              stderr=subprocess.PIPE, env={**os.environ, "PYBUILD_ROOT": str(root)}, cwd=REPO)
    assert proc.returncode == 1 and b"No space left on device" in proc.stderr and b"internal" not in proc.stderr


def test_a_full_disk_is_a_clear_error_and_leaves_nothing_behind(tmp_path: Path):
    """save onto a full file system, load into a full store: one message, no half-written files,
    and the store is clean (closing the file used to re-raise ENOSPC as an internal error)."""
    big = write_archive(tmp_path / "big.tar", image_of([{"big": noise("big", 3 << 20)}], docker=True), ("big:1",))
    root = tmp_path / "root"
    ok("load", "-i", str(big), root=root)
    with small_fs(tmp_path / "small", "1m") as small:
        assert "cannot write " + str(small / "x.tar") + ": No space left on device" in fails(
            "save", "-o", str(small / "x.tar"), "big:1", root=root)
        assert list(small.iterdir()) == []
        full_root = small / "root"
        assert "No space left on device" in fails("load", "-i", str(big), root=full_root)
        assert not list((full_root / "tmp").iterdir())
        assert "clean" in ok("store", "check", root=full_root)


def test_save_sweeps_the_part_files_of_killed_saves(tmp_path: Path, archive: Path):
    """A SIGKILLed ``save -o x.tar`` leaves ``.x.tar.PID.part``; the next save there removes it
    (not one whose writer still runs)."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    stale, live = out / f".x.tar.{dead.pid}.part", out / f".x.tar.{os.getpid()}.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"busy")
    ok("save", "-o", str(out / "x.tar"), "app:1", root=root)
    assert sorted(p.name for p in out.iterdir()) == [live.name, "x.tar"]


def test_a_read_only_store_names_the_reason(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    view = tmp_path / "ro"
    view.mkdir()
    subprocess.run(["mount", "--bind", "-o", "ro", str(root), str(view)], check=True)
    try:
        for args in (("images",), ("inspect", "app:1"), ("load", "-i", str(archive))):
            err = fails(*args, root=view)
            assert f"cannot use {view} as the store root: Read-only file system" in err, err
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
    (tmp_path / "file").write_text("x")
    assert "as the store root: Not a directory" in fails("images", root=tmp_path / "file")


def test_loading_garbage_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    assert "not a tar archive" in fails("load", "-i", str(bad), root=tmp_path / "root")
    assert "stdin is empty" in fails("load", root=tmp_path / "root", code=125)


def test_newer_store_is_refused(tmp_path: Path):
    import sqlite3

    root = tmp_path / "root"
    ok("images", root=root)
    conn = sqlite3.connect(root / "meta.db")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    assert "upgrade pybuild" in fails("images", root=root)


def test_a_damaged_store_database_is_a_clear_error(tmp_path: Path, archive: Path):
    """meta.db with garbage over its pages: what SQLite says and what to do, not an internal error."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    with open(root / "meta.db", "r+b") as db:
        db.seek(4096)
        db.write(noise("garbage", 8 * 4096))
    for args in (("images",), ("inspect", "app:1"), ("store", "check", "--repair")):
        err = fails(*args, root=root)
        assert f"the store database {root / 'meta.db'} is damaged: database disk image is malformed" in err, err


def test_a_store_database_too_damaged_to_open_says_what_to_do(tmp_path: Path, archive: Path):
    """meta.db cut in half (a full disk during a copy): SQLite refuses it on open. The message
    says what to do, as for damage found mid-command; moving it aside and repairing brings
    the images back, untagged."""
    import sqlite3

    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    conn = sqlite3.connect(root / "meta.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.truncate(root / "meta.db", (root / "meta.db").stat().st_size // 2)
    for args in (("images",), ("store", "check", "--repair")):
        err = fails(*args, root=root)
        assert f"the store database {root / 'meta.db'} is damaged: database disk image is malformed" in err, err
        assert "`pybuild store check --repair` records the whole images again" in err
    (root / "meta.db").rename(tmp_path / "meta.db.damaged")
    assert "recorded again the image" in ok("store", "check", "--repair", root=root)
    assert ok("images", "-q", root=root) == image_id[7:19] + "\n"


def test_a_damaged_blob_says_to_repair_the_store(tmp_path: Path, archive: Path):
    """Flipped bytes in a stored layer: the read names the store as the culprit and the way out."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    blob = max((root / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    err = fails("save", "-o", str(tmp_path / "x.tar"), "app:1", root=root)
    assert f"digest mismatch for layer sha256:{blob.name}" in err, err
    assert "(the store's copy is damaged: run `pybuild store check --repair`)" in err, err
    assert "removed broken blob" in ok("store", "check", "--repair", root=root)
    assert "app" not in ok("images", root=root)



@pytest.mark.parametrize("how", ["prune", "repair"])
def test_images_whose_records_are_lost_are_recovered_not_pruned(tmp_path: Path, archive: Path, how: str):
    """An emptied meta.db (or one restored from an old backup) leaves whole images as unrecorded
    blobs: check says so, and neither prune nor repair deletes them; they come back untagged."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    for name in ("meta.db", "meta.db-wal", "meta.db-shm"):
        (root / name).unlink(missing_ok=True)
    (root / "meta.db").write_bytes(b"")
    assert "whole image(s) among the unrecorded blobs" in ok("store", "check", root=root)
    if how == "prune":
        assert "Recorded again 1 whole image(s)" in ok("prune", "-f", root=root)
    else:
        assert "recorded again the image of manifest" in ok("store", "check", "--repair", root=root)
    ok("tag", image_id, "app:again", root=root)
    assert json.loads(ok("inspect", "app:again", root=root))[0]["Id"] == image_id
    report = ok("store", "check", root=root)
    assert report.rstrip().endswith(": clean") and "unrecorded" not in report, report


# --- crash safety and concurrency --------------------------------------------------------------

def _spawn(*args: str, root: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    return subprocess.Popen([sys.executable, "-m", "builder", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_a_clean_store(tmp_path: Path):
    rng = random.Random(int(os.environ.get("PYBUILD_CRASH_SEED", "1234")))
    root = tmp_path / "root"
    archives = []
    for i in range(3):
        compression = (Compression.NONE, Compression.GZIP, Compression.ZSTD)[i]
        img = make_image(f"crash{i}", layers=3, size=2_500_000, compression=compression)
        archives.append(write_archive(tmp_path / f"c{i}.tar", img, (f"crash{i}:1",)))
    started = time.monotonic()
    ok("load", "-i", str(archives[0]), root=root)
    # Kill 0-300 ms into the command's work, after the interpreter has started.
    startup = min(time.monotonic() - started, 0.3)
    kinds: dict[str, int] = {}
    for n in range(50):
        kind = ("load", "save", "tag", "rmi", "prune")[n % 5]
        kinds[kind] = kinds.get(kind, 0) + 1
        out = tmp_path / f"out{n}.tar"
        args = {
            "load": ("load", "-i", str(archives[rng.randrange(3)])),
            "save": ("save", "-o", str(out), "crash0:1"),
            "tag": ("tag", "crash0:1", f"tagged{n}:x"),
            "rmi": ("rmi", "-f", rng.choice(("crash1:1", "crash2:1", f"tagged{n - 2}:x"))),
            "prune": ("prune", "-f", *rng.choice(((), ("-a",), ("--keep-storage", "2MB")))),
        }[kind]
        proc = _spawn(*args, root=root)
        time.sleep(startup * 0.8 + rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        check = run_pybuild("store", "check", root=root)
        assert check.returncode == 0 and check.stdout.decode().rstrip().endswith(": clean"), (
            n, args, check.stdout.decode(), check.stderr.decode())
        if out.exists():  # save is atomic: a file there is a whole archive
            with tarfile.open(out) as tar:
                assert "manifest.json" in tar.getnames()
        # The next command succeeds, and the image is whole.
        ok("load", "-i", str(archives[0]), root=root)
        if n % 5 == 4:
            ok("save", "-o", str(tmp_path / "check.tar"), "crash0:1", root=root)
    assert ok("store", "check", root=root).rstrip().endswith(": clean")
    assert kinds == {"load": 10, "save": 10, "tag": 10, "rmi": 10, "prune": 10}


@pytest.mark.slow
def test_eight_processes_at_once(tmp_path: Path):
    root = tmp_path / "root"
    write_archive(tmp_path / "shared.tar", make_image("shared", size=500_000), ("shared:1",))
    for i in range(8):
        write_archive(tmp_path / f"own{i}.tar", make_image(f"own{i}", size=200_000, layers=2), (f"own{i}:1",))
    py = f"{sys.executable} -m builder"
    scripts = []
    for i in range(8):
        steps = [
            f"load -i {tmp_path}/shared.tar", f"load -i {tmp_path}/own{i}.tar",
            f"tag own{i}:1 extra{i}:1", f"tag shared:1 s{i}:1", f"rmi extra{i}:1",
            f"rmi own{i}:1", f"save -o {tmp_path}/s{i}.tar s{i}:1", "images -q",
        ]
        if i % 4 == 3:
            steps.insert(3, "prune -f")
        if i % 4 == 1:  # a check in the middle of everything must not see half-done work
            steps.insert(2, "store check")
        scripts.append(" && ".join(f"{py} {step} >/dev/null" for step in steps))
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    procs = [subprocess.Popen(["sh", "-ec", s], cwd=REPO, env=env, stderr=subprocess.PIPE) for s in scripts]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    names = {json.loads(line)["Repository"] + ":" + json.loads(line)["Tag"]
             for line in ok("images", "--format", "json", root=root).splitlines()}
    assert names == {"shared:1", *(f"s{i}:1" for i in range(8))}
    assert ok("store", "check", root=root).rstrip().endswith(": clean")
    for i in range(8):
        with tarfile.open(tmp_path / f"s{i}.tar") as tar:
            assert "index.json" in tar.getnames()


def test_one_damaged_image_does_not_hide_the_others(tmp_path: Path, archive: Path):
    """An image whose config blob is gone: inspect shows the others and names the damage
    (exit 1, as for a missing one); images --filter label= lists the others."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    img = image_of([{"f": b"labelled"}])
    ok("load", "-i", str(write_archive(tmp_path / "other.tar", img, ("other:1",))), root=root)
    app_config = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    (root / "blobs" / "sha256" / app_config[7:]).unlink()
    proc = run_pybuild("inspect", "-f", "{{.Id}}", "other:1", "app:1", root=root)
    assert proc.returncode == 1 and proc.stdout.decode() == f"{img.config_digest()}\n"
    assert f"Error: blob {app_config} is missing from the store" in proc.stderr.decode()
    assert ok("images", "-q", "-f", "label=x", root=root) == ""
    assert ok("images", "--format", "{{.Repository}}", "-f", "reference=other", root=root) == "other\n"


def test_removing_a_base_image_keeps_what_an_image_built_on_it_needs(tmp_path: Path, ctx: Path):
    """rmi of the image a child was built FROM, then prune -a: the child's layers (the base's
    among them) stay, the store checks clean, and the child saves and loads whole."""
    root = tmp_path / "root"
    ok("build", "-q", "-t", "base:1", str(ctx), root=root)
    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text("FROM base:1\nCOPY extra /extra\n")
    (child / "extra").write_text("child")
    ok("build", "-q", "-t", "child:1", str(child), root=root)
    base_id = json.loads(ok("inspect", "base:1", root=root))[0]["Id"]
    assert ok("rmi", "base:1", root=root) == f"Untagged: base:1\nDeleted: {base_id}\n"
    ok("prune", "-a", "-f", root=root)
    assert ok("store", "check", root=root).endswith(": clean\n")
    files = ok("history", "--files", "child:1", root=root)
    assert "A /made" in files and "A /extra" in files
    archive = run_pybuild("save", "child:1", root=root, check=True).stdout
    assert ok("load", root=tmp_path / "fresh", input=archive) == "Loaded image: child:1\n"


def test_before_and_since_filters_compare_creation_times_as_docker_does(tmp_path: Path):
    """docker's before=/since= compare when the images were created (their config), not when
    they were loaded: an old image loaded last is still before a newer one."""
    root = tmp_path / "root"
    for name, created in (("new:1", "2024-06-01T00:00:00Z"), ("mid:1", "2022-06-01T00:00:00Z"),
                          ("old:1", "2020-06-01T00:00:00Z")):  # loaded newest first
        img = image_of([{"f": name.encode()}], created=created)
        ok("load", "-i", str(write_archive(tmp_path / f"{name}.tar", img, (name,))), root=root)
    fmt = ("--format", "{{.Repository}}")
    assert ok("images", *fmt, "-f", "since=old:1", root=root).splitlines() == ["new", "mid"]
    assert ok("images", *fmt, "-f", "before=new:1", root=root).splitlines() == ["mid", "old"]
    assert ok("images", *fmt, "-f", "since=old:1", "-f", "before=new:1", root=root) == "mid\n"
    assert ok("images", *fmt, "-f", "since=mid:1", "-f", "since=old:1", root=root) == "new\n"


def test_format_templates_filters_and_digests(tmp_path: Path, archive: Path):
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    info = json.loads(ok("inspect", "app:1", root=root))[0]
    image_id = info["Id"]
    out = ok("inspect", "-f", '{{.Id}} {{json .RepoTags}} {{.Config.Env}} {{index .Config.Labels "x"}}|{{.Os}}',
             "app:1", root=root)
    assert out == f'{image_id} ["app:1"] [A=1] |linux\n'
    assert ok("images", "--format", "{{.Repository}}:{{.Tag}}\\t{{.ID}}", root=root) == f"app:1\t{image_id[7:19]}\n"
    lines = ok("images", "--format", "table {{.Repository}}\\t{{.Size}}", root=root).splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["REPOSITORY", "SIZE"] and lines[1].startswith("app   ")
    digest_line = ok("images", "--digests", root=root).splitlines()
    assert re.split(r"\s{3,}", digest_line[0]) == ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
    assert info["RepoDigests"][0].split("@")[1] in digest_line[1]
    history = ok("history", "--format", "{{.ID}}|{{.CreatedBy}}", "app:1", root=root).splitlines()
    assert history[0] == f'{image_id[7:19]}|/bin/sh -c #(nop)  CMD ["/bin/sh"]'
    # Filters.
    ok("tag", "app:1", "other:2", root=root)
    assert ok("images", "-q", "-f", "reference=app*", "--format", "{{.Tag}}", root=root) == image_id[7:19] + "\n"
    assert ok("images", "--format", "{{.Repository}}", "-f", "reference=oth*", root=root) == "other\n"
    assert ok("images", "--format", "{{.Repository}}", "-f", "dangling=true", root=root) == ""
    assert ok("images", "--format", "{{.Repository}}", "-f", "label=nope", root=root) == ""
    assert "invalid filter" in fails("images", "-f", "colour=red", root=root, code=125)
    assert "unsupported template" in fails("images", "--format", '{{printf "%s" .ID}}', root=root, code=125)
    assert "can't evaluate field Nope" in fails("inspect", "-f", "{{.Nope}}", "app:1", root=root, code=125)


def test_history_of_an_image_without_history(tmp_path: Path):
    from dataclasses import replace

    from builder.image.mutate import DerivedImage

    img = make_image("nohist", layers=2)
    bare = DerivedImage(img.layers(), replace(img.config_file(), history=()))
    write_archive(tmp_path / "bare.tar", bare, ("bare:1",))
    root = tmp_path / "root"
    ok("load", "-i", str(tmp_path / "bare.tar"), root=root)
    rows = ok("history", "--format", "{{.ID}} {{.Size}}", "-H=false", "bare:1", root=root).splitlines()
    assert len(rows) == 2 and rows[0].startswith(bare.config_digest().hex[:12]) and rows[1].startswith("<missing>")


def test_full_disk_is_a_clear_error_and_leaves_a_clean_store(tmp_path: Path):
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        ok("images", root=root)
        write_archive(tmp_path / "big.tar", make_image("big", layers=2, size=1_500_000), ("big:1",))
        err = fails("load", "-i", str(tmp_path / "big.tar"), root=root)
        assert "No space left on device" in err
        assert ok("store", "check", root=root).rstrip().endswith(": clean")
        assert list((root / "tmp").iterdir()) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_load_platform_from_a_multi_platform_layout(tmp_path: Path):
    from builder.export import TaggedImage
    from builder.export.archive import save
    from builder.image.platform import Platform

    host = make_image("mp-host")
    s390x = make_image("mp-s390x", platform=Platform.parse("linux/s390x"))
    save([TaggedImage(host, ("multi:1",)), TaggedImage(s390x, ("multi:1",))], tmp_path / "multi.tar", "oci")
    root = tmp_path / "root"
    ok("load", "-i", str(tmp_path / "multi.tar"), root=root)
    assert json.loads(ok("inspect", "multi:1", root=root))[0]["Id"] == host.config_digest()
    ok("load", "--platform", "linux/s390x", "-i", str(tmp_path / "multi.tar"), root=root)
    info = json.loads(ok("inspect", "multi:1", root=root))[0]
    assert info["Id"] == s390x.config_digest() and info["Architecture"] == "s390x"
    assert "no image for linux/riscv64" in fails("load", "--platform", "linux/riscv64", "-i",
                                                 str(tmp_path / "multi.tar"), root=root)


def test_save_writes_through_symlinks_and_fifos(tmp_path: Path, archive: Path):
    """A symlinked output keeps its link (the target gets the archive); a FIFO is written, not replaced."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    target = tmp_path / "target.tar"
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    ok("save", "-o", str(link), "app:1", root=root)
    assert link.is_symlink() and tarfile.is_tarfile(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    ok("save", "-o", str(fifo), "app:1", root=root)
    data = reader.communicate(timeout=60)[0]
    assert data == target.read_bytes() and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def _docker_archive(oci_archive: Path, dest: Path) -> Path:
    """The archive as docker < 25 saves it: manifest.json and blobs, no index.json."""
    with tarfile.open(oci_archive) as src, tarfile.open(dest, "w") as out:
        for member in src.getmembers():
            if member.name not in ("index.json", "oci-layout"):
                out.addfile(member, src.extractfile(member) if member.isfile() else None)
    return dest


def test_an_untagged_image_held_as_two_manifests_is_one_none_row(tmp_path: Path):
    """The same untagged image loaded from an OCI archive and from a docker < 25 archive is held
    as two manifests of one ID; docker lists an image ID once, so `images` shows one <none> row
    (-a shows both manifests)."""
    img = image_of([{"etc/f": b"1"}], docker=True, created="2020-01-01T00:00:00Z")
    oci = write_archive(tmp_path / "untagged.tar", img, ())
    root = tmp_path / "root"
    image_id = str(img.config_digest())
    assert ok("load", "-i", str(oci), root=root) == f"Loaded image ID: {image_id}\n"
    assert ok("load", "-i", str(_docker_archive(oci, tmp_path / "docker.tar")), root=root) == (
        f"Loaded image ID: {image_id}\n")
    fmt = ("--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert ok("images", *fmt, root=root) == f"<none>:<none> {image_id[7:19]}\n"
    assert ok("images", "-f", "dangling=true", *fmt, root=root) == f"<none>:<none> {image_id[7:19]}\n"
    assert len(ok("images", "-a", *fmt, root=root).splitlines()) == 2
    assert ok("rmi", image_id[7:19], root=root) == f"Deleted: {image_id}\n"
    assert ok("images", "-a", "-q", root=root) == ""


def test_images_reference_argument_is_a_pattern_and_ids_take_sha256_prefix(tmp_path: Path, archive: Path):
    """`docker images 'team/*'` and `docker images 'app:*'` filter as --filter reference= does;
    `docker inspect sha256:0123abcd` finds an image by a short ID with its algorithm."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    ok("tag", "app:1", "team/app:2", root=root)
    ok("tag", "app:1", "team/tool:3", root=root)
    fmt = ("--format", "{{.Repository}}:{{.Tag}}")
    assert ok("images", *fmt, "team/*", root=root).splitlines() == ["team/app:2", "team/tool:3"]
    assert ok("images", *fmt, "*:1", root=root) == "app:1\n"
    assert ok("images", *fmt, "team/app:[0-9]", root=root) == "team/app:2\n"
    assert ok("images", *fmt, "nomatch*", root=root) == ""
    assert ok("images", *fmt, "team/app", root=root) == "team/app:2\n"
    # As Go's path.Match: `*` and `?` stop at a '/'; an untagged image matches no pattern.
    assert ok("images", *fmt, "-f", "reference=*", root=root) == "app:1\n"
    assert ok("images", *fmt, "-f", "reference=*:*", root=root) == "app:1\n"
    assert ok("images", *fmt, "-f", "reference=*/*", root=root).splitlines() == ["team/app:2", "team/tool:3"]
    assert ok("images", *fmt, "-f", "reference=team?app", root=root) == ""
    assert "syntax error in pattern" in fails("images", "-f", "reference=[", root=root)
    assert "syntax error in pattern" in fails("images", "-f", "reference=[", root=tmp_path / "empty")
    assert ok("inspect", "-f", "{{.Id}}", "sha256:" + image_id[7:15], root=root) == image_id + "\n"
    ok("tag", "sha256:" + image_id[7:19], "by-id:1", root=root)
    assert ok("images", "-q", "by-id", root=root) == image_id[7:19] + "\n"
    assert "No such image: sha256:fff" in fails("inspect", "sha256:fff", root=root)


def test_a_save_load_round_trip_leaves_no_dangling_image(tmp_path: Path, archive: Path):
    """A docker-archive's image is held with docker media types; saving writes it as OCI, so
    loading that back moves the tag to another manifest of the same ID. docker shows an image
    ID once: the old manifest is not a `<none>` image, and rmi of the tag removes both."""
    root = tmp_path / "root"
    ok("load", "-i", str(_docker_archive(archive, tmp_path / "docker.tar")), root=root)
    image_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    ok("load", root=root, input=run_pybuild("save", "app:1", root=root, check=True).stdout)
    fmt = ("--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert ok("images", *fmt, root=root) == f"app:1 {image_id[7:19]}\n"
    assert ok("images", "-q", "-f", "dangling=true", root=root) == ""
    assert ok("images", "-a", *fmt, root=root).splitlines() == [
        f"app:1 {image_id[7:19]}", f"<none>:<none> {image_id[7:19]}"]
    assert ok("rmi", "app:1", root=root) == f"Untagged: app:1\nDeleted: {image_id}\n"
    assert ok("images", "-a", "-q", root=root) == ""


def test_prune_does_not_report_a_tagged_image_as_deleted(tmp_path: Path, archive: Path):
    """prune -a removes the extra untagged manifest a save/load round trip leaves, but the
    image ID is still tagged: 'deleted: ID' would tell the user their image went. An untagged
    image held as two manifests is one 'deleted' line."""
    root = tmp_path / "root"
    ok("load", "-i", str(_docker_archive(archive, tmp_path / "docker.tar")), root=root)
    ok("load", root=root, input=run_pybuild("save", "app:1", root=root, check=True).stdout)
    out = ok("prune", "-a", "-f", root=root)
    assert "Deleted Images" not in out and "deleted:" not in out, out
    assert len(ok("images", "-a", "-q", root=root).splitlines()) == 1
    img = image_of([{"etc/f": b"untagged"}], docker=True)
    untagged = write_archive(tmp_path / "untagged.tar", img, ())
    ok("load", "-i", str(untagged), root=root)
    ok("load", "-i", str(_docker_archive(untagged, tmp_path / "untagged-docker.tar")), root=root)
    out = ok("prune", "-a", "-f", root=root)
    assert out.startswith(f"Deleted Images:\ndeleted: {img.config_digest()}\n\n"), out
    assert ok("images", "-a", "--format", "{{.Repository}}:{{.Tag}}", root=root) == "app:1\n"


def test_inspect_templates_print_empty_fields_as_docker_does(tmp_path: Path):
    """Go prints a null slice as `[]` and a null map as `map[]`; fields docker's JSON leaves out
    when empty (ExposedPorts, Shell, ...) still read as their zero value instead of failing a
    script; `map[string]struct{}` values print `{}`; index takes a list position."""
    from dataclasses import replace

    from builder.image.config import ContainerConfig
    from builder.image.mutate import DerivedImage

    img = make_image("tmpl", layers=1)
    bare = DerivedImage(img.layers(), replace(img.config_file(), config=ContainerConfig(env=("A=1", "B=2"))))
    ports = DerivedImage(img.layers(), replace(img.config_file(), config=ContainerConfig(
        exposed_ports=("80/tcp",), volumes=("/data",))))
    root = tmp_path / "root"
    ok("load", "-i", str(write_archive(tmp_path / "bare.tar", bare, ("bare:1",))), root=root)
    ok("load", "-i", str(write_archive(tmp_path / "ports.tar", ports, ("ports:1",))), root=root)
    template = ("{{.Config.Cmd}}|{{.Config.Entrypoint}}|{{.Config.Labels}}|{{.Config.Volumes}}|"
                "{{.Config.ExposedPorts}}|{{.Config.Shell}}|{{.Config.Healthcheck}}|{{.Config.StopSignal}}|"
                "{{json .Config.Cmd}}|{{json .Config.ExposedPorts}}|{{index .Config.Env 1}}")
    assert ok("inspect", "-f", template, "bare:1", root=root) == "[]|[]|map[]|map[]|map[]|[]|<nil>||null|null|B=2\n"
    template = '{{.Config.ExposedPorts}}|{{.Config.Volumes}}|{{json .Config.Volumes}}|{{index .Config.Volumes "/data"}}'
    assert ok("inspect", "-f", template, "ports:1", root=root) == 'map[80/tcp:{}]|map[/data:{}]|{"/data":{}}|{}\n'
    assert "index out of range" in fails("inspect", "-f", "{{index .Config.Env 2}}", "bare:1", root=root, code=125)
    assert "can't evaluate field Nope" in fails("inspect", "-f", "{{.Config.Nope}}", "bare:1", root=root, code=125)


def test_load_names_what_it_loaded_and_the_image_a_tag_leaves(tmp_path: Path, archive: Path):
    """`docker load -q` still prints `Loaded image: NAME` (scripts read it; -q hides progress);
    loading a tag another image holds says that image is renamed to empty string (<none>)."""
    root = tmp_path / "root"
    assert ok("load", "-q", "-i", str(archive), root=root) == "Loaded image: app:1\n"
    old_id = json.loads(ok("inspect", "app:1", root=root))[0]["Id"]
    assert ok("load", "-q", "-i", str(archive), root=root) == "Loaded image: app:1\n"  # the same image
    other = write_archive(tmp_path / "other.tar", make_image("other", layers=1), ("app:1", "app:2"))
    assert ok("load", "-i", str(other), root=root) == (
        f"The image app:1 already exists, renaming the old one with ID {old_id} to empty string\n"
        "Loaded image: app:1\nLoaded image: app:2\n")
    assert ok("images", "-q", "-f", "dangling=true", "--no-trunc", root=root) == old_id + "\n"


def test_format_templates_range_if_with_and_docker_s_functions(tmp_path: Path, archive: Path):
    """What docker users' scripts write: range over tags and labels, if/with/else, variables,
    string literals, trim markers, and docker's join/len/title/println; each output was
    checked against `docker inspect -f` on the same image."""
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    ok("tag", "app:1", "app:2", root=root)

    def inspect(template: str) -> str:
        return ok("inspect", "-f", template, "app:1", root=root)

    image_id = inspect("{{.Id}}").strip()
    assert inspect("{{range .RepoTags}}{{.}} {{end}}") == "app:1 app:2 \n"
    assert inspect('{{range $i, $t := .RepoTags}}{{$i}}={{$t}}{{"\\n"}}{{end}}') == "0=app:1\n1=app:2\n\n"
    assert inspect("{{- range .RepoTags -}} [{{ . }}] {{- end }}") == "[app:1][app:2]\n"
    assert inspect("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{else}}no labels{{end}}") == "no labels\n"
    assert inspect("{{if .Config.Healthcheck}}hc{{else}}none{{end}}|{{with .Config.Env}}{{index . 0}}{{end}}") == \
        "none|A=1\n"
    assert inspect("{{range .RepoTags}}{{$.Id}}{{end}}") == image_id * 2 + "\n"
    assert inspect('{{join .Config.Cmd " "}}|{{len .RepoTags}}|{{title .Os}}|{{println .Os}}') == \
        "/bin/sh|2|Linux|linux\n\n"
    assert inspect("{{/* a comment */}}{{json .Config.Entrypoint}}") == "null\n"
    for template, message in (("{{if .Id}}", "no {{end}}"), ("{{end}}", "unexpected {{end}}"),
                              ("{{.Id | upper}}", "unsupported template"),
                              ("{{range .RepoTags}}{{.Nope}}{{end}}", "can't evaluate field Nope"),
                              ("{{$x}}", "undefined variable: $x")):
        assert message in fails("inspect", "-f", template, "app:1", root=root, code=125), template


def test_inspect_of_an_ambiguous_short_id_shows_the_others(tmp_path: Path):
    """docker inspect prints the images it finds and an error for each other name (exit 1);
    an ambiguous short ID is one of those errors, not the end of the whole command."""
    from builder.export import TaggedImage
    from builder.export.archive import save

    by_first: dict[str, object] = {}
    seed = 0
    while True:
        image = make_image(f"amb{seed}", layers=1, size=64)
        first = image.config_digest().hex[0]
        if first in by_first:
            break
        by_first[first] = image
        seed += 1
    save([TaggedImage(by_first[first], ("one:1",)), TaggedImage(image, ("two:1",))], tmp_path / "two.tar")
    root = tmp_path / "root"
    ok("load", "-i", str(tmp_path / "two.tar"), root=root)
    proc = run_pybuild("inspect", "-f", "{{.RepoTags}}", "one:1", first, "nope:1", root=root)
    assert proc.returncode == 1 and proc.stdout == b"[one:1]\n"
    assert proc.stderr.decode() == (f"Error: short ID {first} is ambiguous: it matches 2 images\n"
                                    "Error: No such image: nope:1\n")


def test_images_virtual_size_has_docker_s_four_digits(tmp_path: Path, archive: Path):
    """docker's images shows Size with HumanSizeWithPrecision(3) and VirtualSize with HumanSize (4)."""
    from builder.cli.images import human_size

    assert (human_size(1982758), human_size(1982758, 4), human_size(999), human_size(1234567890, 4)) == \
        ("1.98MB", "1.983MB", "999B", "1.235GB")
    root = tmp_path / "root"
    ok("load", "-i", str(archive), root=root)
    size = json.loads(ok("inspect", "app:1", root=root))[0]["Size"]
    assert ok("images", "--format", "{{.Size}} {{.VirtualSize}}", root=root) == \
        f"{human_size(size)} {human_size(size, 4)}\n"
    header = ok("images", "--format", "table {{.VirtualSize}}\t{{.SharedSize}}\t{{.CreatedAt}}", root=root)
    assert re.split(r"\s{3,}", header.splitlines()[0]) == ["SIZE", "SHARED SIZE", "CREATED AT"]
