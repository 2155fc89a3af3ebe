"""Garbage collection and consistency checks of the store.

Both take ``locks/gc.lock`` exclusively when they delete, so no writer is
between writing a blob and referencing it. Deletes remove the row first, then
the file: a crash in between leaves an unrecorded file, which is harmless
garbage that the next prune removes.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from builder.errors import PybuildError
from builder.image.config import ConfigFile
from builder.image.digest import Digest
from builder.image.image import SourceImage
from builder.image.manifest import Manifest
from builder.interrupts import interrupts_deferred, run_to_end
from cache.blobs import CHUNK, is_stale_temp, remove_tree, sweep_temp
from cache.snapshots import chain_ids
from cache.store import BlobFileSource, CheckReport, Problem, PruneReport, Store

_MANIFEST_LIMIT = 4 << 20  # as a registry's: a bigger blob is a layer, not worth reading

# Queries that list blobs something still needs. The cache issue adds its own here.
BLOB_REFERENCES: tuple[str, ...] = (
    "SELECT blob_digest FROM manifest_blobs",
    "SELECT digest FROM manifests",
)


@dataclass(frozen=True)
class _Candidate:
    last_used: float
    kind: str  # "blob" | "snapshot" | "cachemount" | "gitsource"
    key: str
    size: int


# Layer blobs the build cache (cache_records) can replay: kept by a plain prune, evicted
# least recently used under --keep-storage, and removed by prune --all.
CACHE_REFERENCES = (
    "SELECT l.blob_digest, MAX(c.last_used) FROM layers l "
    "JOIN cache_records c ON c.diff_id = l.diff_id GROUP BY l.blob_digest"
)


def referenced_blobs(store: Store) -> set[str]:
    out: set[str] = set()
    for sql in BLOB_REFERENCES:
        out.update(row[0] for row in store.db.query(sql))
    return out


def cache_blob_use(store: Store) -> dict[str, float]:
    """Blob digest -> when the build cache last used it (empty before the cache tables exist)."""
    try:
        return {row[0]: row[1] for row in store.db.query(CACHE_REFERENCES)}
    except sqlite3.OperationalError:
        return {}


def _held_chains(store: Store) -> set[str]:
    """Chain IDs of every layer stack of a held image (their snapshots are in use)."""
    chains: set[str] = set()
    for row in store.db.query("SELECT DISTINCT config_digest FROM manifests"):
        path = store.blobs.path(row[0])
        try:
            config = ConfigFile.from_bytes(path.read_bytes())
        except (OSError, PybuildError):
            continue  # a missing or broken config: check reports it; its snapshots are unprotected
        chains.update(chain_ids(config.diff_ids))
    return chains


def prune(store: Store, keep_storage: int | None = None, remove_all: bool = False) -> PruneReport:
    """Remove what no image needs; with ``keep_storage``, only as much as needed, oldest first.

    Without a budget: every blob no image or build-cache record needs, unrecorded
    files, and snapshots of no held image (``remove_all``: also untagged images,
    the build cache's layers and every snapshot).
    With a budget: unreferenced blobs and snapshots least recently used first,
    then untagged images, until the store uses at most ``keep_storage`` bytes.
    RUN cache mounts count against the budget and go by last use (``remove_all``:
    all of them); cache records whose layer went are dropped.
    """
    report = PruneReport()
    report.recovered = adopt_whole_images(store)  # never delete an image that lost only its rows
    sweep_temp(store.tmp_dir)  # only dead processes' temp files: no lock needed
    # Snapshots go out of sight under the lock and are removed after it: deleting the files of
    # gigabytes of snapshots takes long, and builds wait for the lock.
    doomed: list[Path] = []
    try:
        with store.gc_lock.exclusive():
            from cache.blobs import sweep_dot_entries
            from cache.gitsources import sweep
            from cache.leases import in_use
            from cache.mounts import mounts_root

            sweep(store.root)
            sweep_dot_entries(mounts_root(store.root))  # a cache mount's seed or removal cut short
            _remove_unrecorded(store, report, doomed)
            # what running containers (pybuild run) use: they hold no lock that prune waits for
            leased, leased_chains = in_use(store.root)
            if remove_all:
                _delete_manifests(store, _dangling(store, leased), report)
            budget = keep_storage
            while True:
                candidates = _candidates(store, remove_all=remove_all or budget is not None,
                                         keep_cache=not remove_all and budget is None,
                                         leased_chains=leased_chains)
                if budget is None:
                    _evict(store, candidates, report, doomed)
                    break
                usage = _usage(store)
                chosen = []
                for cand in candidates:
                    if usage <= budget:
                        break
                    chosen.append(cand)
                    usage -= cand.size
                _evict(store, chosen, report, doomed)
                if _usage(store) <= budget:
                    break
                dangling = _dangling(store, leased)[:1]
                if not dangling:
                    break  # only tagged (or running) images are left: those are never pruned
                _delete_manifests(store, dangling, report)
            _drop_orphan_records(store)
    finally:
        # to the end even when a SIGTERM comes meanwhile (raised after it): what was set aside
        # is no longer in the store, and would otherwise stay in tmp/ until the next writer
        def remove_doomed() -> None:
            for path in doomed:
                remove_tree(path)

        run_to_end(remove_doomed)
    return report


def _usage(store: Store) -> int:
    """What counts against --keep-storage: the store (blobs, snapshots, metadata), cache mounts
    and git checkouts."""
    from cache import gitsources
    from cache.mounts import usage

    return store.usage() + usage(store.root) + gitsources.usage(store.root)


def _drop_orphan_records(store: Store) -> int:
    """Cache records whose layer is gone in every form: a lookup would miss anyway. Also where
    registries hold blobs the store no longer has: worth knowing only while a push could send them."""
    with store.db.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM cache_records WHERE diff_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM layers l WHERE l.diff_id = cache_records.diff_id)")
        conn.execute("DELETE FROM blob_sources WHERE NOT EXISTS "
                     "(SELECT 1 FROM blobs b WHERE b.digest = blob_sources.digest)")
        return cur.rowcount


_DANGLING = (
    "SELECT digest, config_digest FROM manifests m WHERE NOT EXISTS "
    "(SELECT 1 FROM images i WHERE i.manifest_digest = m.digest) ORDER BY last_used"
)


def _dangling(store: Store, leased: set[str]) -> list:
    """Untagged manifests, least recently used first, but for those a running container uses."""
    return [row for row in store.db.query(_DANGLING) if row["digest"] not in leased]


def _candidates(store: Store, remove_all: bool, keep_cache: bool, leased_chains: set[str]) -> list[_Candidate]:
    used = referenced_blobs(store)
    cached = cache_blob_use(store)
    if keep_cache:
        used |= set(cached)
    out = [
        _Candidate(max(row["last_used"], cached.get(row["digest"], 0)), "blob", row["digest"], row["size"])
        for row in store.db.query("SELECT digest, size, last_used FROM blobs")
        if row["digest"] not in used
    ]
    held = set(leased_chains) if remove_all else _held_chains(store) | leased_chains
    # Children before parents at equal age, so a chain is never left without its base.
    out += [
        _Candidate(row["last_used"], "snapshot", row["chain_id"], row["size"])
        for row in store.db.query("SELECT chain_id, size, last_used FROM snapshots")
        if row["chain_id"] not in held
    ]
    if not keep_cache:  # RUN cache mounts and git checkouts go by last use, like the cache's layers
        from cache.gitsources import list_checkouts
        from cache.mounts import list_mounts

        out += [_Candidate(m.last_used, "cachemount", m.key, m.size) for m in list_mounts(store.root)]
        out += [_Candidate(c.last_used, "gitsource", c.key, c.size) for c in list_checkouts(store.root)]
    return sorted(out, key=lambda c: (c.last_used, c.kind, c.key))


def _evict(store: Store, candidates: list[_Candidate], report: PruneReport, doomed: list[Path]) -> None:
    """Delete the rows in one transaction, then the files (a crash between leaves only garbage);
    snapshots are set aside into ``doomed``, for the caller to remove."""
    if not candidates:
        return
    blobs = [c.key for c in candidates if c.kind == "blob"]
    snaps = [c.key for c in candidates if c.kind == "snapshot"]
    with store.db.transaction() as conn:
        conn.executemany("DELETE FROM layers WHERE blob_digest=?", [(b,) for b in blobs])
        conn.executemany("DELETE FROM blobs WHERE digest=?", [(b,) for b in blobs])
        conn.executemany("DELETE FROM snapshots WHERE chain_id=?", [(c,) for c in snaps])
    # The rows are gone: their files go too, even when a SIGTERM comes meanwhile (raised after).
    with interrupts_deferred():
        for digest in blobs:
            store.blobs.delete(digest)
            report.blobs.append(Digest(digest))
        for chain in snaps:
            aside = store.snapshots.set_aside(chain)
            if aside is not None:
                doomed.append(aside)
            report.snapshots.append(Digest(chain))
        for cand in candidates:
            if cand.kind == "cachemount":
                from cache.mounts import remove_mount

                remove_mount(store.root, cand.key)
            elif cand.kind == "gitsource":
                from cache.gitsources import remove_checkout

                remove_checkout(store.root, cand.key)
    report.reclaimed += sum(c.size for c in candidates)


def _delete_manifests(store: Store, rows: list, report: PruneReport) -> None:
    """Delete untagged manifests; an image ID is reported deleted once, when its last manifest
    goes (an extra untagged manifest of a tagged image is not the image)."""
    with store.db.transaction() as conn:
        for row in rows:
            conn.execute("DELETE FROM images WHERE manifest_digest=?", (row["digest"],))
            conn.execute("DELETE FROM manifests WHERE digest=?", (row["digest"],))
        for config in dict.fromkeys(row["config_digest"] for row in rows):
            held = conn.execute("SELECT 1 FROM manifests WHERE config_digest=? LIMIT 1", (config,)).fetchone()
            if held is None and config not in report.images:
                report.images.append(Digest(config))


def _remove_unrecorded(store: Store, report: PruneReport, doomed: list[Path]) -> None:
    """Blob files and snapshot dirs without a row: what a crash between file and row leaves
    (snapshots set aside into ``doomed``)."""
    recorded = {row[0] for row in store.db.query("SELECT digest FROM blobs")}
    for digest in store.blobs:
        if digest not in recorded:
            size = _size(store.blobs.path(digest))
            store.blobs.delete(digest)
            report.blobs.append(digest)
            report.reclaimed += size
    snaps = {row[0] for row in store.db.query("SELECT chain_id FROM snapshots")}
    with interrupts_deferred():  # no snapshot set aside without being listed in doomed
        for chain in store.snapshots:
            if chain not in snaps:
                aside = store.snapshots.set_aside(chain)
                if aside is not None:
                    doomed.append(aside)
                report.snapshots.append(chain)


def _whole_images(store: Store, digests: Iterable[Digest]) -> list[tuple[Digest, bytes]]:
    """Image manifests among ``digests`` (blob files) whose config and layers are all on disk."""
    found = []
    for digest in digests:
        path = store.blobs.path(digest)
        try:
            if path.stat().st_size > _MANIFEST_LIMIT:
                continue
            raw = path.read_bytes()
            manifest = Manifest.from_bytes(raw)
        except (OSError, PybuildError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a layer, a config, an index, or a file gone meanwhile
        if Digest.of(raw) != digest:
            continue
        needed = [manifest.config.digest, *(d.digest for d in manifest.layers)]
        if all(store.blobs.exists(d) for d in needed):
            found.append((digest, raw))
    return found


def adopt_whole_images(store: Store) -> list[Digest]:
    """Record again, untagged, the images whose blobs are all on disk but whose rows are not.

    A lost, emptied or restored-from-backup meta.db (or a write killed between its blobs and
    its rows) leaves them so; prune would otherwise delete whole images as interrupted writes.
    Each is checked as a load is (config digest, every layer against its diff_id); once
    recorded, ``pybuild tag ID NAME`` names it again.
    """
    recorded = {row[0] for row in store.db.query("SELECT digest FROM blobs")}
    adopted = []
    for digest, raw in _whole_images(store, [d for d in store.blobs if d not in recorded]):
        try:
            store.write_image(SourceImage(BlobFileSource(store.blobs), raw))
        except (OSError, PybuildError):
            continue  # not an image after all (a cache artifact), or damaged: prune removes it
        adopted.append(digest)
    return adopted


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _hash_file(path: os.PathLike[str]) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def check(store: Store, repair: bool = False) -> CheckReport:
    """Verify every blob's digest and every reference between rows, blobs and snapshots.

    Temp files are not problems (a live writer may own them). Unrecorded blob
    files and snapshot dirs are noted, not problems: prune collects them.
    ``repair`` deletes what is broken and the rows that pointed at it.
    """
    report = CheckReport()
    if repair:
        for manifest in adopt_whole_images(store):
            report.repaired.append(f"recorded again the image of manifest {manifest} (whole on disk, its "
                                   "records lost), untagged")
        with store.gc_lock.exclusive():
            _check(store, report)
            # A removal can leave something else dangling (a snapshot whose parent went):
            # repair until a check finds nothing more, a few rounds at most.
            for _ in range(4):
                if not report.problems:
                    break
                _repair(store, report)
                again = CheckReport()
                _check(store, again)
                report.problems = again.problems
            removed = sweep_temp(store.tmp_dir)
            if removed:
                report.repaired.append(f"removed {len(removed)} stale temp file(s)")
    else:
        with store.gc_lock.shared():
            _check(store, report)
    return report


def _check(store: Store, report: CheckReport) -> None:
    db = store.db
    # One read transaction: a consistent view even while other processes write.
    with db.read() as conn:
        blobs = {row["digest"]: row for row in conn.execute("SELECT * FROM blobs")}
        manifests = conn.execute("SELECT * FROM manifests").fetchall()
        refs = conn.execute("SELECT * FROM manifest_blobs").fetchall()
        images = conn.execute("SELECT * FROM images").fetchall()
        layers = conn.execute("SELECT * FROM layers").fetchall()
        snapshots = conn.execute("SELECT * FROM snapshots").fetchall()

    for digest, row in sorted(blobs.items()):
        path = store.blobs.path(digest)
        report.blobs_checked += 1
        if not path.is_file():
            report.problems.append(Problem("missing-blob", digest, "recorded but its file is gone"))
            continue
        actual, size = _hash_file(path)
        if actual != digest:
            report.problems.append(Problem("corrupt-blob", digest, f"content hashes to {actual}"))
        elif size != row["size"]:  # the content is whole: only its record is wrong
            report.problems.append(Problem("wrong-size", digest, f"{size} bytes, recorded {row['size']}"))
    manifest_digests = {row["digest"] for row in manifests}
    refs_by_manifest: dict[str, set[str]] = {}
    for ref in refs:
        refs_by_manifest.setdefault(ref["manifest_digest"], set()).add(ref["blob_digest"])
    for row in manifests:
        digest = row["digest"]
        if digest not in blobs:
            report.problems.append(Problem("dangling-manifest", digest, "its manifest blob is not recorded"))
            continue
        _manifest_consistent(store, row, refs_by_manifest, report)
    for ref in refs:
        if ref["manifest_digest"] in manifest_digests and ref["blob_digest"] not in blobs:
            report.problems.append(Problem(
                "dangling-reference", ref["manifest_digest"],
                f"refers to blob {ref['blob_digest']}, which is not recorded"))
    for row in images:
        if row["manifest_digest"] not in manifest_digests:
            report.problems.append(Problem(
                "dangling-tag", row["name"], f"points at manifest {row['manifest_digest']}, which is not held"))
    for row in layers:
        if row["blob_digest"] not in blobs:
            report.problems.append(Problem(
                "dangling-layer", row["diff_id"], f"its {row['compression']} blob {row['blob_digest']} is not recorded"))
    chains = {row["chain_id"] for row in snapshots}
    for row in snapshots:
        report.snapshots_checked += 1
        if not store.snapshots.exists(row["chain_id"]):
            report.problems.append(Problem("missing-snapshot", row["chain_id"], "recorded but its directory is gone"))
        else:
            damage = _snapshot_damage(store, row["chain_id"], row["diff_id"])
            if damage:
                report.problems.append(Problem("damaged-snapshot", row["chain_id"], damage))
        if row["parent"] and row["parent"] not in chains:
            report.problems.append(Problem(
                "dangling-snapshot", row["chain_id"], f"its parent {row['parent']} is not recorded"))
    stray = store.blobs.stray_files()
    for path in stray:
        report.problems.append(Problem("stray-file", str(path), "not named like a blob"))
    unrecorded = [d for d in store.blobs if d not in blobs]
    whole = _whole_images(store, unrecorded)
    if whole:
        report.notes.append(f"{len(whole)} whole image(s) among the unrecorded blobs (a write cut short "
                            "before its records, or records lost with a damaged or replaced meta.db); "
                            "`store check --repair` records them again, untagged")
    if unrecorded:
        report.notes.append(f"{len(unrecorded)} unrecorded blob file(s) (left by interrupted writes; prune removes them)")
    stale = [p for p in store.tmp_dir.iterdir() if is_stale_temp(p)]
    if stale:
        report.notes.append(f"{len(stale)} temp file(s) of dead processes (the next writer sweeps them)")
    loose = [c for c in store.snapshots if c not in chains]
    if loose:
        report.notes.append(f"{len(loose)} unrecorded snapshot(s) (prune removes them)")


def _snapshot_damage(store: Store, chain_id: str, diff_id: str) -> str | None:
    """How the snapshot's files differ from its layer's (a file truncated, rewritten or removed
    under it: every build on it would see that); None when they match or no readable layer
    blob is held to compare with (the blob check reports a broken one)."""
    import tarfile

    from cache.statcache import hash_file

    expected: dict[str, tuple[str, int, str]] = {}  # path -> (kind, size, content or link target)
    try:
        with store.open_layer(diff_id) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                path = "/".join(p for p in member.name.split("/") if p and p != ".")
                if not path or os.path.basename(path).startswith(".wh."):
                    continue  # whiteouts are overlay devices and xattrs in a snapshot
                if member.isreg():
                    h = xxhash.xxh3_128()
                    data = tar.extractfile(member)
                    while data is not None and (chunk := data.read(CHUNK)):
                        h.update(chunk)
                    expected[path] = ("file", member.size, h.hexdigest())
                elif member.issym():
                    expected[path] = ("symlink", 0, member.linkname)
                elif member.isdir():
                    expected[path] = ("directory", 0, "")
                else:
                    expected.pop(path, None)  # hardlinks (their target is checked), devices, fifos
    except (PybuildError, tarfile.TarError, OSError, EOFError):
        return None
    root = store.snapshots.path(chain_id)
    for path, (kind, size, content) in sorted(expected.items()):
        full = root / path
        if os.path.realpath(full.parent) != str(full.parent):
            continue  # under a symlink of the layer's: extraction resolved it inside the root
        try:
            st = full.lstat()
        except OSError:
            return f"/{path} is missing"
        if kind == "file":
            if not stat.S_ISREG(st.st_mode):
                return f"/{path} is no longer a regular file"
            if st.st_size != size:
                return f"/{path} has {st.st_size} bytes, its layer {size}"
            try:
                same = hash_file(full) == content
            except OSError:  # unreadable to this user (a mode 000 file in a rootless store)
                continue
            if not same:
                return f"/{path} differs from its layer's content"
        elif kind == "symlink" and (not stat.S_ISLNK(st.st_mode) or os.readlink(full) != content):
            return f"/{path} is no longer the symlink to {content}"
        elif kind == "directory" and not stat.S_ISDIR(st.st_mode):
            return f"/{path} is no longer a directory"
    return None


def _unpack_again(store: Store, chain_id: str, report: CheckReport) -> None:
    """Replace a damaged snapshot with a fresh unpack of its layer; its record (and the
    snapshots stacked on it) stay. Without a readable layer, it goes with its record."""
    row = store.db.query_one("SELECT diff_id FROM snapshots WHERE chain_id=?", (chain_id,))
    store.snapshots.delete(chain_id)
    if row is not None:
        try:
            with store.open_layer(row["diff_id"]) as stream:
                store.snapshots.create(chain_id, row["diff_id"], stream)
            report.repaired.append(f"unpacked snapshot {chain_id} again from its layer")
            return
        except PybuildError:
            pass
    with store.db.transaction() as conn:
        conn.execute("DELETE FROM snapshots WHERE chain_id=?", (chain_id,))
    report.repaired.append(f"removed damaged snapshot {chain_id} (it is unpacked again when next used)")


def _manifest_consistent(store: Store, row, refs: dict[str, set[str]], report: CheckReport) -> bool:
    """The manifest blob parses, and what it names is what manifest_blobs records."""
    path = store.blobs.path(row["digest"])
    try:
        manifest = Manifest.from_bytes(path.read_bytes())
    except (OSError, PybuildError):  # a missing or corrupt blob is already reported by digest
        return False
    named = {str(manifest.config.digest), *(str(d.digest) for d in manifest.layers)}
    recorded = refs.get(row["digest"], set())
    missing = named - recorded
    if missing:
        report.problems.append(Problem(
            "unrecorded-reference", row["digest"], f"names {len(missing)} blob(s) not recorded as references"))
        return False
    if row["config_digest"] != manifest.config.digest:
        report.problems.append(Problem(
            "wrong-config", row["digest"], f"recorded config {row['config_digest']}, manifest says {manifest.config.digest}"))
        return False
    if row["media_type"] != manifest.media_type:
        report.problems.append(Problem(
            "wrong-config", row["digest"], f"recorded media type {row['media_type']!r}, manifest says {manifest.media_type}"))
        return False
    return True


def _repair(store: Store, report: CheckReport) -> None:
    """Delete broken blobs and every row that pointed at something missing; say what was done."""
    bad_blobs = {p.subject for p in report.problems if p.kind in ("missing-blob", "corrupt-blob")}
    with store.db.transaction() as conn:
        for digest in sorted(bad_blobs):
            conn.execute("DELETE FROM blobs WHERE digest=?", (digest,))
            report.repaired.append(f"removed broken blob {digest}")
        # A wrong record of whole content is corrected from the content (its digest was checked).
        for problem in [p for p in report.problems if p.kind == "wrong-size"]:
            size = store.blobs.path(problem.subject).stat().st_size
            conn.execute("UPDATE blobs SET size=? WHERE digest=?", (size, problem.subject))
            report.repaired.append(f"recorded the size of blob {problem.subject} again ({size} bytes)")
        for problem in [p for p in report.problems if p.kind == "wrong-config" and p.subject not in bad_blobs]:
            manifest = Manifest.from_bytes(store.blobs.path(problem.subject).read_bytes())
            conn.execute("UPDATE manifests SET config_digest=?, media_type=? WHERE digest=?",
                         (manifest.config.digest, manifest.media_type, problem.subject))
            report.repaired.append(f"recorded the config and media type of image manifest {problem.subject} "
                                   "again from the manifest")
        recorded = {row[0] for row in conn.execute("SELECT digest FROM blobs")}
        for row in conn.execute("SELECT digest FROM manifests").fetchall():
            needed = {r[0] for r in conn.execute(
                "SELECT blob_digest FROM manifest_blobs WHERE manifest_digest=?", (row[0],))}
            broken = row[0] not in recorded or not needed <= recorded or any(
                p.subject == row[0] and p.kind == "unrecorded-reference"
                for p in report.problems)
            if broken:
                names = [r[0] for r in conn.execute(
                    "SELECT name FROM images WHERE manifest_digest=?", (row[0],))]
                conn.execute("DELETE FROM images WHERE manifest_digest=?", (row[0],))
                conn.execute("DELETE FROM manifests WHERE digest=?", (row[0],))
                report.repaired.append(
                    f"removed image manifest {row[0]} (its content is damaged)"
                    + (f" and its tags {', '.join(names)}" if names else ""))
        cur = conn.execute("DELETE FROM images WHERE manifest_digest NOT IN (SELECT digest FROM manifests)")
        if cur.rowcount:
            report.repaired.append(f"removed {cur.rowcount} tag(s) of missing images")
        cur = conn.execute("DELETE FROM manifest_blobs WHERE manifest_digest NOT IN (SELECT digest FROM manifests)")
        cur = conn.execute("DELETE FROM layers WHERE blob_digest NOT IN (SELECT digest FROM blobs)")
        if cur.rowcount:
            report.repaired.append(f"removed {cur.rowcount} layer record(s) of missing blobs")
        missing_snaps = [p.subject for p in report.problems if p.kind in ("missing-snapshot", "dangling-snapshot")]
        for chain in missing_snaps:
            conn.execute("DELETE FROM snapshots WHERE chain_id=?", (chain,))
            report.repaired.append(f"removed snapshot record {chain}")
    for digest in sorted(bad_blobs):
        store.blobs.delete(digest)
    for path in store.blobs.stray_files():
        remove_tree(path)
        report.repaired.append(f"removed stray file {path}")
    for chain in [p.subject for p in report.problems if p.kind == "dangling-snapshot"]:
        store.snapshots.delete(chain)
    for chain in [p.subject for p in report.problems if p.kind == "damaged-snapshot"]:
        _unpack_again(store, chain, report)
