"""The store as a library: write and read images, names and IDs, layers in several
compressions, snapshots, check/repair, prune, and what a crash leaves behind."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.errors import DigestMismatchError, ImageError, ImageNotFoundError, StoreError
from builder.image.digest import Digest
from builder.image.mediatypes import Compression
from builder.image.mutate import DerivedImage
from cache import Store
from cache.snapshots import chain_ids
from tests.store.imagegen import image_of, make_image, make_layer, noise


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root")
    yield s
    s.close()


def test_write_and_read_back(store: Store):
    img = make_image("a")
    digest = store.write_image(img, ["app:1"])
    assert digest == img.digest()
    back = store.image("app:1")
    assert back.raw_manifest() == img.raw_manifest()
    assert back.raw_config() == img.raw_config()
    assert [layer.diff_id() for layer in back.layers()] == [layer.diff_id() for layer in img.layers()]
    with back.layers()[0].uncompressed() as f:
        assert f.read() == img.layers()[0].tar
    assert store.check().clean


def test_image_content_is_only_for_the_store_owner(tmp_path: Path):
    """As docker's 0710 /var/lib/docker (CVE-2021-41091): an unpacked setuid-root file from an
    image must not be reachable by other local users, nor a private image's blobs readable. A
    store made 0755 by an earlier version is closed when opened."""
    import stat

    from cache.store import PRIVATE_DIRS

    root = tmp_path / "root"
    with Store(root):
        pass
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for sub in PRIVATE_DIRS:
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700, sub
    old = tmp_path / "old"
    old.mkdir()
    for sub in ("blobs", "snapshots", "run"):
        (old / sub).mkdir(mode=0o755)
        (old / sub).chmod(0o755)
    with Store(old):
        pass
    assert stat.S_IMODE(old.stat().st_mode) == 0o755  # the root may be any directory given: kept
    assert all(stat.S_IMODE((old / sub).stat().st_mode) == 0o700 for sub in PRIVATE_DIRS)


def test_lookup_by_name_id_prefix_and_digest(store: Store):
    img = make_image("b")
    store.write_image(img, ["docker.io/library/thing:2", "other/app"])
    config = img.config_digest()
    for ref in ("thing:2", "docker.io/library/thing:2", "other/app:latest", "other/app",
                str(config), config.hex, config.hex[:12], config.hex[:5], f"sha256:{config.hex[:12]}",
                str(img.digest()), f"thing@{img.digest()}"):
        assert store.resolve(ref).manifest_digest == img.digest(), ref
    record = store.resolve("thing:2")
    assert record.id == config
    assert record.names == ("docker.io/library/thing:2", "docker.io/other/app:latest")
    with pytest.raises(ImageNotFoundError, match="No such image: thing:3"):
        store.image("thing:3")
    with pytest.raises(ImageNotFoundError, match="No such image: nothing"):
        store.image("nothing")
    with pytest.raises(ImageNotFoundError, match="No such image: sha256:0000000"):
        store.image("sha256:0000000")


def test_writing_twice_is_idempotent_and_blobs_are_shared(store: Store):
    one = make_image("shared")
    store.write_image(one, ["a:1"])
    store.write_image(one, ["a:2"])
    files = sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())
    assert len(files) == 4  # config, manifest, two layers
    assert len(store.images()) == 1
    assert store.resolve("a:1").names == ("docker.io/library/a:1", "docker.io/library/a:2")


def test_layer_content_must_match_the_config_diff_id(store: Store):
    good = make_image("c")
    bad_layer = make_layer({"evil": b"not what the config says"})
    layers = list(good.layers())
    # A layer whose content is not what the config's diff_id claims.
    liar = type(bad_layer)(bad_layer.blob, layers[1].tar, bad_layer.mediatype)
    img = DerivedImage([layers[0], liar], good.config_file())
    with pytest.raises(ImageError, match="does not match the image config"):
        store.write_image(img, ["liar:1"])
    assert store.images() == []
    with pytest.raises(ImageNotFoundError):
        store.image("liar:1")
    assert store.check().clean


def test_blobs_are_verified_on_read_and_check_finds_corruption(store: Store):
    img = make_image("d")
    store.write_image(img, ["corrupt:1"])
    layer = img.layers()[0]
    path = store.blobs.path(layer.digest())
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError), store.image("corrupt:1").layers()[0].compressed() as f:
        f.read()
    report = store.check()
    assert not report.clean
    assert [p.kind for p in report.problems] == ["corrupt-blob"]
    repaired = store.check(repair=True)
    assert any("removed broken blob" in line for line in repaired.repaired)
    assert any("corrupt:1" in line for line in repaired.repaired)
    assert store.check().clean
    with pytest.raises(ImageNotFoundError):
        store.image("corrupt:1")


def test_check_finds_missing_blobs_and_dangling_rows(store: Store):
    img = make_image("e")
    store.write_image(img, ["gone:1"])
    store.blobs.path(img.config_digest()).unlink()
    with store.db.transaction() as conn:
        conn.execute("INSERT INTO images VALUES ('docker.io/library/ghost:1', ?, 0)", ("sha256:" + "0" * 64,))
    (store.root / "blobs" / "sha256" / "junk").write_text("x")
    kinds = sorted(p.kind for p in store.check().problems)
    assert kinds == ["dangling-tag", "missing-blob", "stray-file"]
    store.check(repair=True)
    assert store.check().clean
    assert store.images() == []


@pytest.mark.parametrize("damage, kind", [
    ("UPDATE blobs SET size=5 WHERE digest=:config", "wrong-size"),
    ("UPDATE blobs SET size=5 WHERE digest=:manifest", "wrong-size"),
    ("UPDATE manifests SET config_digest='nonsense' WHERE digest=:manifest", "wrong-config"),
    ("UPDATE manifests SET media_type='garbage' WHERE digest=:manifest", "wrong-config"),
])
def test_repair_corrects_a_wrong_record_of_whole_content_and_keeps_the_image(store: Store, damage: str, kind: str):
    """A damaged meta.db row about a blob whose content checks out (its digest matches) is
    corrected from the content: the image and its tag stay. Before, repair deleted them; a
    wrong media type was not even found, and every save or run of the image failed."""
    img = make_image("row")
    store.write_image(img, ["row:1"])
    with store.db.transaction() as conn:
        conn.execute(damage, {"config": img.config_digest(), "manifest": img.digest()})
    assert [p.kind for p in store.check().problems] == [kind]
    repaired = store.check(repair=True)
    assert repaired.clean and len(repaired.repaired) == 1 and "again" in repaired.repaired[0]
    assert store.check().clean
    back = store.image("row:1")
    assert back.raw_manifest() == img.raw_manifest() and back.raw_config() == img.raw_config()
    assert store.resolve("row:1").media_type == img.manifest().media_type


def test_tmp_files_are_ignored_by_check_and_swept_when_stale(store: Store):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = store.tmp_dir / f"{dead.stdout.strip()}-abc.blob"
    stale.write_bytes(b"half a blob")
    own = store.tmp_dir / f"{os.getpid()}-old.blob"
    own.write_bytes(b"x")
    live = store.tmp_dir / f"{os.getppid()}-live.blob"
    live.write_bytes(b"being written")
    anonymous = store.tmp_dir / "stray.part"
    anonymous.write_bytes(b"x")
    long_ago = time.time() - 3600
    for path in (own, live, anonymous):
        os.utime(path, (long_ago, long_ago))
    assert store.check().clean
    store.write_image(make_image("f"), ["f:1"])  # a writer sweeps
    assert not stale.exists() and not anonymous.exists()
    assert live.exists() and own.exists()  # live owners are left alone, however old


def test_unrecorded_blob_file_is_harmless_and_pruned(store: Store):
    # What a crash between renaming a blob into place and committing its row leaves.
    written = store.blobs.write_bytes(b"orphan content")
    report = store.check()
    assert report.clean
    assert any("unrecorded blob" in note for note in report.notes)
    pruned = store.prune()
    assert written.digest in pruned.blobs
    assert not store.blobs.exists(written.digest)


def test_tag_untag_and_rmi_follow_docker(store: Store):
    img = make_image("g")
    store.write_image(img, ["one:1"])
    store.tag("one:1", "two:1")
    store.tag(img.config_digest().hex[:12], "one:2")
    assert set(store.resolve("one:1").names) == {
        "docker.io/library/one:1", "docker.io/library/one:2", "docker.io/library/two:1"}
    assert [str(e) for e in store.rmi("one:2")] == ["Untagged: one:2"]
    with pytest.raises(ImageError, match="must be forced"):
        store.rmi(img.config_digest().hex[:12])
    assert [str(e) for e in store.rmi("two:1")] == ["Untagged: two:1"]
    events = [str(e) for e in store.rmi("one:1")]
    assert events == ["Untagged: one:1", f"Deleted: {img.config_digest()}"]
    assert store.images() == []
    with pytest.raises(ImageNotFoundError):
        store.rmi("one:1")


def test_rmi_force_by_id_removes_every_tag(store: Store):
    img = make_image("h")
    store.write_image(img, ["x/a:1", "y/b:1"])
    events = [str(e) for e in store.rmi(str(img.config_digest()), force=True)]
    assert events == ["Untagged: x/a:1", "Untagged: y/b:1", f"Deleted: {img.config_digest()}"]
    assert store.images() == []


def test_untagged_image_stays_until_removed(store: Store):
    img = make_image("i")
    store.write_image(img, ["dangle:1"])
    store.untag("dangle:1")
    (record,) = store.images()
    assert record.names == ()
    assert store.image(record.id.hex[:12]).digest() == img.digest()
    store.prune()
    assert store.images() and store.check().clean
    store.prune(remove_all=True)
    assert store.images() == []


def test_layer_blob_compresses_once_and_reuses(store: Store):
    img = make_image("j", compression=Compression.GZIP)
    store.write_image(img, ["j:1"])
    diff_id = img.layers()[0].diff_id()
    zstd = store.layer_blob(diff_id, Compression.ZSTD)
    again = store.layer_blob(diff_id, Compression.ZSTD)
    assert zstd == again
    assert zstd.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    plain = store.layer_blob(diff_id, Compression.NONE, docker=True)
    assert plain.digest == diff_id
    assert plain.media_type == "application/vnd.docker.image.rootfs.diff.tar"
    gz = store.layer_blob(diff_id, Compression.GZIP)
    assert gz.digest == img.layers()[0].digest()  # the form already held
    with store.open_layer(diff_id) as f:
        assert Digest.of(f.read()) == diff_id
    assert store.check().clean


def test_layer_blob_is_race_free_across_processes(tmp_path: Path):
    root = tmp_path / "root"
    with Store(root) as s:
        img = make_image("k", size=300_000, compression=Compression.GZIP)
        s.write_image(img, ["k:1"])
        diff_id = img.layers()[0].diff_id()
    code = ("import sys; from cache import Store; from builder.image.mediatypes import Compression; "
            f"s = Store(sys.argv[1]); print(s.layer_blob('{diff_id}', Compression.ZSTD).digest)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outs) == 1
    with Store(root) as s:
        rows = s.db.query("SELECT * FROM layers WHERE diff_id=? AND compression='zstd'", (diff_id,))
        assert len(rows) == 1
        assert s.check().clean


def test_snapshots_unpack_each_layer_with_overlay_whiteouts(store: Store):
    img = image_of([
        {"etc/a": b"a1", "etc/b": b"b1", "keep": b"k"},
        {"etc/a": b"a2", "etc/b": None},
    ])
    store.write_image(img, ["snap:1"])
    paths = store.snapshot(store.image("snap:1"))
    chains = chain_ids([layer.diff_id() for layer in img.layers()])
    assert paths == [store.root / "snapshots" / c.hex for c in chains]
    assert (paths[0] / "etc" / "b").read_bytes() == b"b1"
    assert (paths[1] / "etc" / "a").read_bytes() == b"a2"
    whiteout = os.lstat(paths[1] / "etc" / "b")
    assert (os.major(whiteout.st_rdev), os.minor(whiteout.st_rdev)) == (0, 0)
    assert not (paths[1] / "keep").exists()
    assert store.snapshot(img) == paths  # reused
    assert store.check().clean


def test_chain_ids_follow_the_oci_definition():
    a, b = Digest.of(b"a"), Digest.of(b"b")
    import hashlib

    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]


def test_concurrent_snapshots_of_one_layer(tmp_path: Path):
    root = tmp_path / "root"
    with Store(root) as s:
        s.write_image(image_of([{f"f{i}": noise(str(i), 20_000) for i in range(50)}]), ["snap:2"])
    code = ("import sys; from cache import Store; s = Store(sys.argv[1]); "
            "print(s.snapshot(s.image('snap:2'))[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert len({out.strip() for out, _ in results}) == 1
    snap = Path(results[0][0].strip())
    assert len(list(snap.iterdir())) == 50
    assert not [p for p in (root / "tmp").iterdir() if p.name.endswith(".snapshot")]
    with Store(root) as s:
        assert s.check().clean


def test_snapshot_of_corrupt_layer_is_refused_and_leaves_nothing(store: Store):
    img = make_image("l")
    store.write_image(img, ["l:1"])
    path = store.blobs.path(img.layers()[0].digest())
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-12] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError):
        store.snapshot(store.image("l:1"))
    assert list(store.snapshots) == []
    assert not [p for p in store.tmp_dir.iterdir() if p.name.endswith(".snapshot")]


def test_prune_removes_unreferenced_blobs_and_snapshots(store: Store):
    keep, drop = make_image("keep"), make_image("drop")
    store.write_image(keep, ["keep:1"])
    store.write_image(drop, ["drop:1"])
    store.snapshot(keep)
    store.snapshot(drop)
    store.rmi("drop:1")
    report = store.prune()
    assert set(report.blobs) == {drop.digest(), drop.config_digest(), *(lay.digest() for lay in drop.layers())}
    assert len(report.snapshots) == 2
    assert report.reclaimed > 4096
    assert store.image("keep:1").raw_config() == keep.raw_config()
    assert len(list(store.snapshots)) == 2
    assert store.check().clean


def test_prune_forgets_where_registries_hold_the_blobs_it_removes(store: Store):
    """A record of which registry repository holds a blob (for a push to mount it) is of use
    only while the store could push that blob."""
    from cache.blobsources import BlobSources

    keep, drop = make_image("keep"), make_image("drop")
    store.write_image(keep, ["keep:1"])
    store.write_image(drop, ["drop:1"])
    sources = BlobSources(store.db)
    kept, dropped = keep.layers()[0].digest(), drop.layers()[0].digest()
    never = "sha256:" + "e" * 64  # pushed from an image the store never held (a library push)
    sources.record("127.0.0.1:5000", "library/base", [kept, dropped, never])
    store.rmi("drop:1")
    store.prune()
    assert sources.candidates("127.0.0.1:5000", [kept, dropped, never]) == {kept: ["library/base"]}


def test_blob_sources_offer_the_newest_few_of_one_registry_and_keep_fifty(store: Store):
    """A push tries the repositories that held a blob most recently, a few at most, never its own
    nor another registry's; a blob pushed to ever new repositories keeps the newest 50 records."""
    from cache.blobsources import KEPT_PER_BLOB, MOUNT_CANDIDATES, BlobSources

    sources = BlobSources(store.db)
    digest = "sha256:" + "a" * 64
    for n in range(60):
        sources.record("reg.example", f"team/r{n}", [digest])
    sources.record("other.example", "team/elsewhere", [digest])
    offered = sources.candidates("reg.example", [digest], exclude="team/r59")[digest]
    assert offered == ["team/r58", "team/r57", "team/r56"][:MOUNT_CANDIDATES]
    assert len(sources.candidates("reg.example", [digest], limit=100)[digest]) == KEPT_PER_BLOB - 1
    sources.forget("reg.example", "team/r58", digest)
    assert sources.candidates("reg.example", [digest], exclude="team/r59")[digest][0] == "team/r57"


def test_prune_keep_storage_evicts_least_recently_used_first(store: Store):
    images = [make_image(f"lru{i}", size=200_000) for i in range(3)]
    for i, img in enumerate(images):
        store.write_image(img, [f"lru:{i}"])
        time.sleep(0.01)
    for i in range(3):
        store.untag(f"lru:{i}")
    store.touch(str(images[0].config_digest()))  # the oldest written is now the most recently used
    budget = store.usage() - 250_000
    report = store.prune(keep_storage=budget)
    assert store.usage() <= budget
    left = {r.config_digest for r in store.images()}
    assert images[0].config_digest() in left
    assert images[1].config_digest() not in left
    assert report.images == [images[1].config_digest()]
    assert store.check().clean


def test_prune_never_removes_tagged_images(store: Store):
    img = make_image("tagged", size=100_000)
    store.write_image(img, ["tagged:1"])
    store.prune(keep_storage=0)
    assert store.image("tagged:1").layers()[0].compressed().read()
    assert store.check().clean


def test_store_newer_than_the_code_is_refused(tmp_path: Path):
    root = tmp_path / "root"
    Store(root).close()
    conn = sqlite3.connect(root / "meta.db")
    conn.execute("PRAGMA user_version=999")
    conn.close()
    with pytest.raises(StoreError, match="schema version 999"):
        Store(root)


def test_unusable_root_is_a_clear_error(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot use"):
        Store(tmp_path / "file" / "root")


def test_blob_written_with_wrong_digest_leaves_nothing(store: Store):
    with pytest.raises(DigestMismatchError):
        store.blobs.write(io.BytesIO(b"abc"), Digest.of(b"abd"))
    assert list(store.blobs) == []
    assert list(store.tmp_dir.iterdir()) == []


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from cache.store import default_root

    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("PYBUILD_ROOT")
    expected = Path("/var/lib/pybuild") if os.geteuid() == 0 else Path.home() / ".local/share/pybuild"
    assert default_root() == expected


def test_one_store_shared_by_threads(store: Store):
    """Parallel build stages share one Store: writes, tags and reads from several threads."""
    from concurrent.futures import ThreadPoolExecutor

    images = [make_image(f"thread{i}", size=20_000) for i in range(6)]

    def work(i: int) -> str:
        store.write_image(images[i], [f"thr:{i}"])
        store.tag(f"thr:{i}", f"thr:copy{i}")
        store.layer_blob(images[i].layers()[0].diff_id(), Compression.ZSTD)
        return str(store.image(f"thr:copy{i}").config_digest())

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(work, range(6)))
    assert got == [str(img.config_digest()) for img in images]
    assert len(store.images()) == 6
    assert store.check().clean


def test_huge_json_sizes_are_refused_before_reading(tmp_path: Path):
    import json

    from builder.export import TaggedImage
    from builder.export.archive import ArchiveError, open_archive, read_images
    from builder.export.layout import write_oci_layout

    root = tmp_path / "layout"
    write_oci_layout([TaggedImage(make_image("huge"))], root, tar=False)
    index = json.loads((root / "index.json").read_text())
    index["manifests"][0]["size"] = 1 << 40
    (root / "index.json").write_text(json.dumps(index))
    with open_archive(root, tmp_path) as files, pytest.raises(ArchiveError, match="is refused"):
        read_images(files)


def test_prune_keeps_build_cache_layers_unless_all(store: Store):
    img = make_image("cached", layers=1)
    store.write_image(img, ["cached:1"])
    diff_id = img.layers()[0].diff_id()
    with store.db.transaction() as conn:
        conn.execute("INSERT INTO cache_records VALUES ('k', 'p', 'l', ?, x'00', x'00', 0, ?)",
                     (diff_id, time.time()))
    store.rmi("cached:1")
    report = store.prune()
    assert img.layers()[0].digest() not in report.blobs  # the build cache can still replay it
    assert store.blobs.exists(img.layers()[0].digest())
    report = store.prune(remove_all=True)
    assert img.layers()[0].digest() in report.blobs
    assert store.check().clean


def test_a_known_diff_id_does_not_vouch_for_a_new_blob(store: Store):
    """A second image may not smuggle other content under a diff_id the store already holds."""
    good = make_image("vouch", layers=1, compression=Compression.GZIP)
    store.write_image(good, ["good:1"])
    evil = make_layer({"evil": b"other content"}, Compression.ZSTD)
    liar = type(evil)(evil.blob, good.layers()[0].tar, evil.mediatype)  # claims good's diff_id
    with pytest.raises(ImageError, match="does not match the image config"):
        store.write_image(DerivedImage([liar], good.config_file()), ["evil:1"])
    assert [r[0] for r in store.db.query("SELECT compression FROM layers")] == ["gzip"]
    assert store.check().clean


def test_sigkill_during_snapshot_extraction(tmp_path: Path):
    import random
    import signal

    root = tmp_path / "root"
    files = {f"dir{i // 100}/f{i}": noise(f"s{i}", 4000) for i in range(600)}
    img = image_of([files, {"dir0/f0": None, "extra": b"x"}])
    with Store(root) as s:
        s.write_image(img, ["snapkill:1"])
    code = "import sys; from cache import Store; s = Store(sys.argv[1]); s.snapshot(s.image('snapkill:1'))"
    rng = random.Random(7)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", code, str(root)])
        time.sleep(rng.uniform(0.15, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Store(root) as s:
            assert s.check().clean
    with Store(root) as s:
        paths = s.snapshot(s.image("snapkill:1"))
        assert len(list(paths[0].rglob("f*"))) == 600
        assert (paths[1] / "extra").read_bytes() == b"x"
        assert s.check().clean
        assert not [p for p in s.tmp_dir.iterdir() if p.name.endswith(".snapshot")]  # swept
        s.prune(remove_all=True)
        assert list(s.snapshots) == [] and s.check().clean


def test_verified_streams_are_still_refused_when_wrong(store: Store):
    """The store trusts a VerifyingReader's own check instead of hashing twice: it must hold."""
    from builder.image.digest import VerifyingReader

    good = b"the right content"
    with pytest.raises(DigestMismatchError):
        store.blobs.write(VerifyingReader(io.BytesIO(b"the wrong content"), Digest.of(good)), Digest.of(good))
    with pytest.raises(DigestMismatchError):
        store.blobs.write(VerifyingReader(io.BytesIO(good + b"!"), Digest.of(good), len(good)),
                          Digest.of(good), len(good))
    assert list(store.blobs) == [] and list(store.tmp_dir.iterdir()) == []
    written = store.blobs.write(VerifyingReader(io.BytesIO(good), Digest.of(good)), Digest.of(good))
    assert store.blobs.path(written.digest).read_bytes() == good


def test_repair_of_a_lost_snapshot_and_reextraction(store: Store):
    img = make_image("lost")
    store.write_image(img, ["lost:1"])
    paths = store.snapshot(img)
    import shutil

    shutil.rmtree(paths[1])
    report = store.check()
    assert [p.kind for p in report.problems] == ["missing-snapshot"]
    repaired = store.check(repair=True)
    assert any("snapshot record" in line for line in repaired.repaired)
    assert store.check().clean
    again = store.snapshot(img)
    assert again == paths and (again[1] / "d1" / "name").read_bytes() == b"lost"
    assert store.check().clean


def test_check_finds_a_damaged_snapshot_and_repair_unpacks_it_again(store: Store):
    """A file truncated, rewritten, retyped or removed in a snapshot is what every RUN on it
    would see: check compares each snapshot with its layer and repair unpacks that one again
    (the snapshots stacked on it stay)."""
    img = image_of([
        {"etc/passwd": b"root:x:0:0::/root:/bin/sh\n", "etc/motd": b"hi\n", "gone": b"g", "keep": b"k"},
        {"etc/motd": b"hello\n", "keep": None, "data/new": b"n"},
    ])
    store.write_image(img, ["snap:1"])
    paths = store.snapshot(img)
    assert store.check().clean
    damage = [
        (lambda: os.truncate(paths[0] / "etc" / "passwd", 4), "/etc/passwd has 4 bytes, its layer 26"),
        (lambda: (paths[0] / "etc" / "passwd").write_bytes(b"evil:x:0:0::/root:/bin/sh\n"),
         "/etc/passwd differs from its layer's content"),
        (lambda: (paths[0] / "gone").unlink(), "/gone is missing"),
        (lambda: (paths[1] / "data" / "new").unlink() or (paths[1] / "data" / "new").mkdir(),
         "/data/new is no longer a regular file"),
    ]
    for harm, detail in damage:
        harm()
        report = store.check()
        assert [(p.kind, p.detail) for p in report.problems] == [("damaged-snapshot", detail)]
        repaired = store.check(repair=True)
        assert repaired.clean and [line.split(" sha256:")[0] for line in repaired.repaired] == ["unpacked snapshot"]
        assert store.check().clean
    assert (paths[0] / "etc" / "passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    assert (paths[1] / "data" / "new").read_bytes() == b"n" and (paths[0] / "gone").read_bytes() == b"g"
    assert store.snapshot(img) == paths


def test_repair_of_a_lost_base_snapshot_leaves_no_dangling_children(store: Store):
    import shutil

    img = make_image("lostbase")
    store.write_image(img, ["lostbase:1"])
    paths = store.snapshot(img)
    shutil.rmtree(paths[0])
    report = store.check(repair=True)
    assert report.clean, report.problems
    assert store.check().clean
    assert store.snapshot(img) == paths and paths[0].is_dir()


def test_an_image_without_layers(store: Store, tmp_path: Path):
    """FROM scratch with only metadata: no layers anywhere, everything still works."""
    from builder.export import TaggedImage
    from builder.export.archive import open_archive, read_images, save

    img = image_of([])
    store.write_image(img, ["empty:1"])
    assert store.resolve("empty:1").size == 0
    assert store.snapshot(store.image("empty:1")) == []
    save([TaggedImage(store.image("empty:1"), ("empty:1",))], tmp_path / "e.tar", "docker")
    with open_archive(tmp_path / "e.tar", tmp_path) as files:
        (tagged,) = read_images(files)
        assert tagged.image.config_digest() == img.config_digest()
    assert store.check().clean
    store.rmi("empty:1")
    store.prune()
    assert list(store.blobs) == [] and store.check().clean


def test_the_same_layer_twice_in_one_image(store: Store):
    img = image_of([{"a": b"1"}, {"a": None}, {"a": b"1"}])
    layers = img.layers()
    assert layers[0].digest() == layers[2].digest()
    store.write_image(img, ["twice:1"])
    paths = store.snapshot(store.image("twice:1"))
    assert len(set(paths)) == 3
    assert (paths[2] / "a").read_bytes() == b"1"
    assert store.check().clean
    assert len(list(store.blobs)) == 4  # config, manifest, two distinct layer blobs


def test_prune_removes_what_killed_cache_mount_writers_left(store: Store):
    """A cache mount seeded from an imported cache, made from= an image, or removed by prune is
    dot-named until done; a process killed meanwhile left it in cachemounts/ for good (unseen:
    neither listed nor counted). Prune removes those an hour old, never a fresh one."""
    mounts = store.root / "cachemounts"
    old = time.time() - 7200
    stale = [mounts / ".k1.partial", mounts / ".k2.123.456.gone", mounts / ".k3.123.abcd.new"]
    for path in stale:
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "file").write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    id_tmp = mounts / ".k4.id.123.tmp"
    id_tmp.write_text("id")
    os.utime(id_tmp, (old, old))
    fresh = mounts / ".k5.999.beef.new"
    fresh.mkdir()
    store.prune()
    assert sorted(p.name for p in mounts.iterdir()) == [fresh.name]


def test_a_store_of_the_previous_schema_is_migrated_and_misses_find_siblings_by_index(tmp_path: Path):
    root = tmp_path / "root"
    Store(root).close()
    conn = sqlite3.connect(root / "meta.db")
    conn.execute("DROP INDEX cache_records_parent")
    conn.execute("DROP TABLE blob_sources")  # schema 6's
    conn.execute("PRAGMA user_version=4")
    conn.close()
    store = Store(root)
    plan = store.db.query("EXPLAIN QUERY PLAN SELECT key, inputs FROM cache_records WHERE parent=? "
                          "AND key<>? ORDER BY created DESC LIMIT 200", ("p", "k"))
    store.close()
    assert any("cache_records_parent" in row[3] for row in plan), [tuple(r) for r in plan]


def test_a_store_of_schema_5_gains_the_blob_sources_table(tmp_path: Path):
    """A store written before pushes mounted from recorded repositories is migrated in place:
    its images stay, and a pull or push can record where blobs live."""
    from cache.blobsources import BlobSources

    root = tmp_path / "root"
    with Store(root) as old:
        old.write_image(make_image("old"), ["old:1"])
    conn = sqlite3.connect(root / "meta.db")
    conn.execute("DROP TABLE blob_sources")
    conn.execute("PRAGMA user_version=5")
    conn.commit()
    conn.close()
    with Store(root) as store:
        assert store.db.version == 6
        assert store.image("old:1").raw_config() == make_image("old").raw_config()
        BlobSources(store.db).record("r.example", "a/b", ["sha256:" + "1" * 64])
        assert BlobSources(store.db).candidates("r.example", ["sha256:" + "1" * 64]) == {
            "sha256:" + "1" * 64: ["a/b"]}


def test_prune_removes_snapshot_files_after_letting_the_store_lock_go(store: Store, monkeypatch):  # type: ignore[no-untyped-def]
    """Removing gigabytes of snapshot files takes long, and every build waits for prune's lock:
    the snapshots leave the store under the lock, their files are removed once it is free."""
    import fcntl

    import cache.gc

    image = make_image("aside")
    store.write_image(image, ["aside:1"])
    store.snapshot(image)
    store.rmi("aside:1")
    removed: list[tuple[Path, bool]] = []
    real_remove = cache.gc.remove_tree

    def remove_tree(path: Path) -> None:
        fd = os.open(store.root / "locks" / "gc.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # as a build starting now takes it
            free = True
        except BlockingIOError:
            free = False
        finally:
            os.close(fd)
        removed.append((path, free))
        real_remove(path)

    monkeypatch.setattr(cache.gc, "remove_tree", remove_tree)
    report = store.prune()
    assert len(report.snapshots) == 2
    assert [free for _, free in removed] == [True, True], removed
    assert all(path.parent == store.tmp_dir and not path.exists() for path, _ in removed)
    assert list(store.snapshots) == [] and list(store.tmp_dir.iterdir()) == []
    assert store.check().clean
