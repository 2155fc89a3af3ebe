"""A store whose file system fills up: every command fails with one line that says so, and
works again, with a clean store, once space is freed."""

from __future__ import annotations

import os
from pathlib import Path

from cache import Store
from tests.helpers.tools import run_pybuild, small_fs
from tests.store.imagegen import make_image


def _fill(fs: Path, filler: Path, keep_kb: int) -> None:
    """Take all of ``fs``'s free space but ``keep_kb`` KiB with ``filler``."""
    filler.unlink(missing_ok=True)
    st = os.statvfs(fs)
    free_kb = st.f_bavail * st.f_frsize // 1024
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * 1024
        for _ in range(max(free_kb - keep_kb, 0)):
            try:
                f.write(chunk)
            except OSError:
                break


def test_a_full_disk_under_the_database_is_one_clear_error(tmp_path: Path) -> None:
    """SQLite's 'database or disk is full' was an internal error, and a file system too full
    for its shared-memory file 'disk I/O error' for every command, prune included."""
    with small_fs(tmp_path / "small", "8m") as small:
        root = small / "root"
        with Store(root) as store:
            store.write_image(make_image("full-db", 2, 50_000), ["app:1"])
        filler = small / "filler"
        expected = f"ERROR: cannot write the store database {root / 'meta.db'}: No space left on device\n"
        failed = 0
        for keep_kb in range(8, 56, 4):  # too full to open it; to write it:
            _fill(small, filler, keep_kb)
            for args in (("tag", "app:1", f"app:{keep_kb}"), ("rmi", f"app:{keep_kb}"), ("prune", "-f")):
                p = run_pybuild(*args, root=root)
                err = p.stderr.decode()
                if p.returncode != 0 and "No such image" not in err:  # rmi of a tag that failed
                    assert err == expected, (keep_kb, args, err)
                    failed += 1
            filler.unlink()
        assert failed, "the file system never filled up"
        done = run_pybuild("store", "check", root=root, check=True)
        assert b"clean" in done.stdout, done.stdout + done.stderr
        run_pybuild("tag", "app:1", "app:after", root=root, check=True)
        listed = run_pybuild("images", "--format", "{{.Tag}}", root=root, check=True).stdout.split()
        assert b"after" in listed and b"1" in listed
