"""``-o type=local``'s merge of the exported tree into a directory that may hold files already."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import traceback
from pathlib import Path

from builder.export.outputs import _merge_tree
from builder.fileio import Directory


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    return {str(p.relative_to(root)): (stat.S_IMODE(p.lstat().st_mode), p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def test_merge_as_a_user_moves_read_only_directories_and_keeps_their_modes() -> None:
    """Not root, a directory moved to another parent must be writable, and so must one merged
    into: an image's 0555 /usr/bin exported by a user, fresh or over an earlier export."""
    base = Path(tempfile.mkdtemp(prefix="pybuild-merge-"))  # pytest's tmp dirs are root's only
    try:
        _merge_twice_as_nobody(base / "dest", base / "dest" / ".scratch")
    finally:
        shutil.rmtree(base)


def _merge_twice_as_nobody(dest: Path, scratch: Path) -> None:
    for run in ("fresh", "again"):
        scratch.mkdir(parents=True)
        (scratch / "usr" / "bin").mkdir(parents=True)
        (scratch / "usr" / "bin" / "tool").write_text(run)
        (scratch / "proc").mkdir()
        for d in (scratch / "usr" / "bin", scratch / "proc"):
            d.chmod(0o555)
        for path in [dest.parent, dest, *dest.rglob("*")]:
            os.lchown(path, 65534, 65534)
        pid = os.fork()
        if pid == 0:  # the child: the user's merge, then its exit status
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                with Directory.open(scratch) as src, Directory.open(dest) as into:
                    _merge_tree(src, into)
                code = 0
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, run
        assert _tree(dest)["usr/bin"] == (0o555, None) and _tree(dest)["proc"] == (0o555, None)
        assert (dest / "usr" / "bin" / "tool").read_text() == run
        shutil.rmtree(scratch)  # what export_local does with the emptied scratch


def test_a_killed_exports_scratch_is_swept_by_the_next(tmp_path: Path) -> None:
    """The scratch dir an export works in lives inside dest (renames, not copies); a SIGKILLed
    export leaves it, and the next export into that directory removes it (its pid is gone)."""
    from builder.export.outputs import export_local
    from tests.store.imagegen import make_image

    dest = tmp_path / "out"
    dead = dest / ".pybuild-export-999999999-abcd"
    (dead / "d0").mkdir(parents=True)
    (dead / "d0" / "half").write_text("left by a killed export")
    live = dest / f".pybuild-export-{os.getpid()}-live"
    live.mkdir()
    export_local(make_image("swept", layers=1), dest)
    assert sorted(p.name for p in dest.iterdir()) == [live.name, "d0"]
    assert sorted(p.name for p in (dest / "d0").iterdir()) == ["f0.bin", "name"]


def test_a_directory_swapped_for_a_link_during_the_merge_is_not_followed(tmp_path: Path) -> None:
    """``-o type=local,dest=DIR`` into a directory someone else writes into: they swap DIR/d0 for
    a link just as the image's d0 is merged into it (checked a directory a moment before).
    Everything goes into the directory that was opened; nothing moves to the link's target,
    whose mode stays as it was."""
    from builder.export.outputs import export_local
    from tests.helpers.race import swap_at, swap_for_link
    from tests.store.imagegen import make_image

    dest, outside = tmp_path / "out", tmp_path / "outside"
    (dest / "d0").mkdir(parents=True)
    (dest / "d0" / "mine").write_text("kept")
    outside.mkdir(mode=0o711)
    mode = outside.stat().st_mode
    held: list[Path] = []

    def merging_d0(path: str) -> bool:
        return f"{dest}/.pybuild-export-" in path and path.endswith("/d0")

    with swap_at(("os.listdir", "os.scandir"), merging_d0,
                 lambda: held.append(swap_for_link(dest / "d0", outside))) as fired:
        export_local(make_image("raced", layers=1), dest)
    assert fired, "the swap never happened"
    assert list(outside.iterdir()) == [] and outside.stat().st_mode == mode
    assert sorted(p.name for p in held[0].iterdir()) == ["f0.bin", "mine", "name"]


def test_an_export_merges_over_an_earlier_one(tmp_path: Path) -> None:
    """The ordinary case: files replaced, directories merged, the user's own files kept, a
    symlink where the image has a directory replaced (not followed)."""
    from builder.export.outputs import export_local
    from tests.store.imagegen import make_image

    dest, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    dest.mkdir()
    (dest / "own.txt").write_text("mine")
    (dest / "d1").symlink_to(outside)
    export_local(make_image("first", layers=2), dest)
    (dest / "d0" / "extra").write_text("mine too")
    export_local(make_image("second", layers=2), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["d0", "d1", "own.txt"]
    assert (dest / "d0" / "name").read_text() == "second" and (dest / "d0" / "extra").read_text() == "mine too"
    assert not (dest / "d1").is_symlink() and (dest / "d1" / "name").read_text() == "second"
    assert list(outside.iterdir()) == []
