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
                _merge_tree(scratch, dest)
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
