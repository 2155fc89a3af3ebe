"""Store commands SIGKILLed at their state changes: a pull, a load, a prune and a repair
killed the moment their Nth new file appears in the store (a temp blob, a blob renamed into
place, a snapshot set aside). Each time ``store check`` is clean, the same command run again
works and gives the image it gives undisturbed, and the next writer sweeps what the killed
one left. The random version of these runs is tests/store/chaos.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cache import Store
from tests.helpers.tools import REPO, run_pybuild
from tests.store.imagegen import Files, image_of, noise, write_archive


def _image_archive(path: Path, name: str) -> Path:
    """Five layers of incompressible megabytes and one of many small files."""
    layers: list[Files] = [{f"l{i}/blob": noise(f"{name}{i}", 1 << 20)} for i in range(5)]
    layers.append({f"many/f{j}": noise(f"{name}-small{j}", 256) for j in range(800)})
    return write_archive(path, image_of(layers), (f"{name}:1",))


def _entries(root: Path) -> set[str]:
    found: set[str] = set()
    for sub in ("tmp", "blobs/sha256", "snapshots"):
        try:
            with os.scandir(root / sub) as it:
                found.update(e.path for e in it)
        except FileNotFoundError:
            pass
    return found


def _kill_at_new_entry(root: Path, nth: int, *args: str) -> bool:
    """Start ``pybuild ARGS`` and SIGKILL it when the ``nth`` new entry appears in the store's
    tmp/, blobs/ or snapshots/; whether it was killed (False: it ended first)."""
    known = _entries(root)
    proc = subprocess.Popen([sys.executable, "-m", "builder", *args], cwd=REPO,
                            env={**os.environ, "PYBUILD_ROOT": str(root)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = 0
    while proc.poll() is None:
        now = _entries(root)
        seen += len(now - known)
        known = now
        if seen >= nth:
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.0005)
    return False


def _clean(root: Path) -> None:
    done = run_pybuild("store", "check", root=root)
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and "clean" in out, out


def _image_id(root: Path, name: str) -> str:
    return run_pybuild("inspect", "--format", "{{.Id}}", name, root=root, check=True).stdout.decode().strip()


@pytest.mark.parametrize("command", ["pull", "load"])
def test_pull_and_load_killed_at_each_new_file(command: str, registry: str, tmp_path: Path) -> None:
    archive = _image_archive(tmp_path / "img.tar", "killed")
    ref = f"{registry}/killed/{command}:1"
    seed = tmp_path / "seed"
    run_pybuild("load", "-i", str(archive), root=seed, check=True)
    run_pybuild("tag", "killed:1", ref, root=seed, check=True)
    run_pybuild("push", "-q", ref, root=seed, check=True)
    want = _image_id(seed, "killed:1")
    root = tmp_path / "root"
    args = ("pull", "-q", ref) if command == "pull" else ("load", "-q", "-i", str(archive))
    name = ref if command == "pull" else "killed:1"
    killed = 0
    for nth in (1, 2, 4, 7, 11):
        killed += _kill_at_new_entry(root, nth, *args)
        _clean(root)
        run_pybuild(*args, root=root, check=True)  # the same command again, undisturbed
        assert _image_id(root, name) == want
        # every blob reads back whole (save reads and verifies each)
        run_pybuild("save", "-o", str(tmp_path / "out.tar"), name, root=root, check=True)
        assert list((root / "tmp").iterdir()) == []  # the writer swept what the killed one left
        _clean(root)
        run_pybuild("rmi", name, root=root, check=True)
        run_pybuild("prune", "-a", "-f", root=root, check=True)
        assert [p for p in (root / "blobs" / "sha256").iterdir()] == []
    assert killed >= 3, killed


def test_prune_killed_while_it_sets_snapshots_aside(tmp_path: Path) -> None:
    """Prune renames snapshots into tmp/ under its lock and deletes them after: killed in
    between, the next command sweeps them and a snapshot needed again is unpacked again."""
    archive = _image_archive(tmp_path / "img.tar", "pruned")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(archive), root=root, check=True)
    killed = 0
    for nth in (1, 2, 3, 5):
        with Store(root) as store:
            store.snapshot(store.image("pruned:1"))
        run_pybuild("tag", "pruned:1", "gone:1", root=root, check=True)
        run_pybuild("rmi", "pruned:1", root=root, check=True)
        killed += _kill_at_new_entry(root, nth, "prune", "-a", "-f")
        _clean(root)
        run_pybuild("load", "-q", "-i", str(archive), root=root, check=True)
        assert list((root / "tmp").iterdir()) == []
        with Store(root) as store:
            paths = store.snapshot(store.image("pruned:1"))
            assert len(list(paths[-1].rglob("f*"))) == 800
            assert (paths[0] / "l0" / "blob").read_bytes() == noise("pruned0", 1 << 20)
        _clean(root)
        run_pybuild("rmi", "gone:1", root=root)
    assert killed >= 2, killed


def test_repair_killed_midway_then_run_again(tmp_path: Path) -> None:
    """``store check --repair`` of a store with a lost blob and a snapshot damaged, killed as it
    unpacks again: the repair run again finishes, and the store is clean."""
    archive = _image_archive(tmp_path / "img.tar", "repaired")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(archive), root=root, check=True)
    killed = 0
    for nth in (1, 2):
        with Store(root) as store:
            paths = store.snapshot(store.image("repaired:1"))
        (paths[-1] / "many" / "f3").write_bytes(b"damaged")
        killed += _kill_at_new_entry(root, nth, "store", "check", "--repair")
        done = run_pybuild("store", "check", "--repair", root=root)
        assert done.returncode == 0, done.stderr.decode()
        _clean(root)
        with Store(root) as store:
            paths = store.snapshot(store.image("repaired:1"))
            assert (paths[-1] / "many" / "f3").read_bytes() == noise("repaired-small3", 256)
    assert killed >= 1, killed
