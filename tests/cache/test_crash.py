"""Issue 5: concurrent builds and exports on one store, and builds SIGKILLed mid-export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cache.conftest import Machine, steps, write_context
from tests.helpers.tools import run_pybuild


def _dockerfile(variant: int) -> str:
    # Related Dockerfiles: a shared prefix, then steps of their own.
    return (
        "FROM busybox:local\n"
        "COPY shared.txt /shared.txt\n"
        "RUN cat /shared.txt > /prefix.txt && head -c 20000 /dev/urandom > /noise\n"
        f"RUN echo variant {variant} > /variant.txt\n"
        f"COPY v{variant}.txt /own.txt\n"
    )


def _popen_build(m: Machine, ctx: Path, *args: str, dockerfile: str | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYBUILD_ROOT=str(m.root))
    extra = ["-f", dockerfile] if dockerfile else []
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "build", "--progress", "plain", *extra, *args, str(ctx)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _check_clean(m: Machine) -> None:
    result = run_pybuild("store", "check", root=m.root)
    out = result.stdout.decode()
    assert result.returncode == 0 and "clean" in out, out + result.stderr.decode()


def test_four_concurrent_builds_and_exports_on_one_store(machines, tmp_path: Path, registry: str) -> None:
    m: Machine = machines()
    files: dict[str, str | bytes] = {"shared.txt": "shared\n"}
    for v in range(4):
        files[f"Dockerfile.{v}"] = _dockerfile(v)
        files[f"v{v}.txt"] = f"own {v}\n"
    ctx = write_context(tmp_path / "ctx", files)
    shared = tmp_path / "shared-cache"
    procs = []
    for v in range(4):
        # Two pairs write the same ref at once: a local tag, and a registry tag.
        cache_to = (f"type=local,dest={shared},tag=same,mode=max" if v < 2
                    else f"type=registry,ref={registry}/crash/conc:1,mode=max")
        procs.append(_popen_build(m, ctx, "-t", f"v{v}:1", "--cache-to", cache_to,
                                  dockerfile=str(ctx / f"Dockerfile.{v}")))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out.decode()
    _check_clean(m)
    index = json.loads((shared / "index.json").read_text())
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] == ["same"]
    # Each ref is whole: whichever exporter wrote last, a fresh machine rebuilds that one's
    # Dockerfile without running anything, and the shared prefix of the other.
    for spec, variants in ((f"type=local,src={shared},tag=same", (0, 1)),
                           (f"type=registry,ref={registry}/crash/conc:1", (2, 3))):
        counts = []
        for v in variants:
            fresh = machines()
            built = fresh.build(ctx, "-f", str(ctx / f"Dockerfile.{v}"), "--cache-from", spec)
            counts.append(steps(built.stdout + built.stderr)["cached"])
            _check_clean(fresh)
        assert sorted(counts) == [2, 4], counts
    # The store of the four builds still hits locally for all of them.
    for v in range(4):
        again = m.build(ctx, "-f", str(ctx / f"Dockerfile.{v}"))
        assert steps(again.stdout + again.stderr) == {"cached": 4, "done": 1}


@pytest.mark.parametrize("kind", ["registry", "local"])
def test_sigkill_mid_export_leaves_store_and_cache_usable(machines, tmp_path: Path, registry: str,
                                                          kind: str) -> None:
    a: Machine = machines()
    spec_to = (f"type=registry,ref={registry}/crash/kill-{kind}:1,mode=max" if kind == "registry"
               else f"type=local,dest={tmp_path / 'shared'},mode=max")
    spec_from = spec_to.replace("dest=", "src=").replace(",mode=max", "")
    files = {"Dockerfile": _dockerfile(0), "shared.txt": "shared\n", "v0.txt": "own 0\n"}
    ctx = write_context(tmp_path / "ctx", files)
    a.build(ctx, "--cache-to", spec_to)  # a complete cache: v1
    # v2: a big layer, so that the export (compress + upload) takes a while; killed in the middle.
    (ctx / "Dockerfile").write_text(_dockerfile(0).replace("head -c 20000", "head -c 60000000"))
    killed = 0
    for delay in (0.0, 0.3, 1.0):
        proc = _popen_build(a, ctx, "--cache-to", spec_to)
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"exporting cache to" in line:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                killed += 1
                break
        proc.wait(timeout=600)
        proc.stdout.close()
    assert killed == 3
    _check_clean(a)
    # The ref still reads whole (v1's cache, or v2's if an export finished): a fresh machine uses it.
    hits = []
    for text in (_dockerfile(0), _dockerfile(0).replace("head -c 20000", "head -c 60000000")):
        (ctx / "Dockerfile").write_text(text)
        b = machines()
        built = b.build(ctx, "--cache-from", spec_from)
        hits.append(steps(built.stdout + built.stderr)["cached"])
        _check_clean(b)
    assert sorted(hits) == [1, 4], hits  # all of the cache that is there, just the COPY of the other
    # And the killed machine's own cache serves its next build.
    (ctx / "Dockerfile").write_text(_dockerfile(0).replace("head -c 20000", "head -c 60000000"))
    again = a.build(ctx, "--cache-to", spec_to)
    assert steps(again.stdout + again.stderr) == {"cached": 4, "done": 1}
    _check_clean(a)


def _write_tag(args: tuple[str, int]) -> None:
    from cache.remote import LocalTarget

    root, n = args
    raw = json.dumps({"schemaVersion": 2, "n": n}).encode()
    for _ in range(5):
        LocalTarget(Path(root), f"tag{n}").put_manifest(raw)


def test_local_index_merges_concurrent_writers(tmp_path: Path) -> None:
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(8) as pool:
        pool.map(_write_tag, [(str(tmp_path), n) for n in range(8)])
    index = json.loads((tmp_path / "index.json").read_text())
    names = sorted(e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"])
    assert names == [f"tag{n}" for n in range(8)]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_local_cache_export_sweeps_temp_files_of_killed_writers(tmp_path: Path) -> None:
    """A writer killed mid-export leaves its temp files; the next export removes the stale ones.

    The directory may be shared between machines, so a temp file another writer
    is still filling (fresh mtime) is kept whatever its pid.
    """
    from cache.remote import STALE_TEMP_SECONDS

    _write_tag((str(tmp_path), 0))
    blobs = tmp_path / "blobs" / "sha256"
    stale = [tmp_path / ".index.json.999999.1.tmp", blobs / f".{'a' * 64}.999999.1.tmp"]
    fresh = blobs / f".{'b' * 64}.1.1.tmp"
    for path in (*stale, fresh):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_SECONDS - 60
    for path in stale:
        os.utime(path, (old, old))
    _write_tag((str(tmp_path), 1))
    assert [p.exists() for p in stale] == [False, False]
    assert fresh.exists()


def _partial_seed(mounts: Path, tmp: Path) -> bool:
    """A cache mount being unpacked: a ``.partial`` dir in cachemounts/ or in a tmp/ seed dir."""
    places = [mounts] + ([p for p in tmp.iterdir() if p.name.endswith(".seed")] if tmp.is_dir() else [])
    for place in places:
        try:
            if any(p.name.endswith(".partial") for p in place.iterdir()):
                return True
        except FileNotFoundError:
            continue
    return False


def test_a_build_killed_while_it_seeds_a_cache_mount_leaves_nothing_held(machines, tmp_path: Path) -> None:
    """--cache-from gives a RUN's cache mount its exported content, unpacked and renamed into
    place. SIGKILLed while it unpacked, the build left the half-made dot dir in cachemounts/ for
    an hour (its space held, in no ``cache du``, swept by a prune only). Now it unpacks in tmp/
    under its pid: the next build sweeps it, and seeds the mount whole."""
    a, b = machines(), machines()
    dockerfile = ("FROM busybox:local\nCOPY a.txt /a.txt\n"
                  "RUN --mount=type=cache,id=pkgs,target=/pkgs sh -c 'test -f /pkgs/f2999 && echo seeded "
                  "|| { for i in $(seq 1 3000); do echo $i > /pkgs/f$i; done; "
                  "head -c 30000000 /dev/urandom > /pkgs/big; echo made; }'\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "a.txt": "one\n"})
    cache = tmp_path / "cache"
    a.build(ctx, "--cache-to", f"type=local,dest={cache},mode=max,cache-mounts=true")
    (ctx / "a.txt").write_text("two\n")  # the RUN runs on B, its mount seeded from the cache
    mounts = b.root / "cachemounts"
    proc = _popen_build(b, ctx, "--cache-from", f"type=local,src={cache}")
    killed = False
    while proc.poll() is None:
        if _partial_seed(mounts, b.root / "tmp"):
            proc.kill()
            killed = True
            break
    proc.communicate()
    assert killed
    again = b.build(ctx, "--cache-from", f"type=local,src={cache}")
    assert b"seeded" in again.stdout + again.stderr, again.stderr.decode()
    left = [p.name for d in (mounts, b.root / "tmp") for p in d.iterdir() if p.name.startswith(".")]
    assert left == [] and list((b.root / "tmp").iterdir()) == [], left
    _check_clean(b)
