"""Output files (archives, --iidfile, --metadata-file) are written beside their place under a
predictable temp name: whatever is planted there is replaced, never written through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.export.destination import write_output


def test_a_link_planted_at_the_temp_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    out = tmp_path / "out" / "image.tar"
    out.parent.mkdir()
    (out.parent / f".image.tar.{os.getpid()}.part").symlink_to(victim)
    write_output(out, b"the archive")
    assert victim.read_bytes() == b"keep me\n"
    assert out.read_bytes() == b"the archive"
    assert sorted(p.name for p in out.parent.iterdir()) == ["image.tar"]


def test_a_directory_swapped_for_a_link_while_the_file_is_written_is_not_followed(tmp_path: Path) -> None:
    """The archive's directory belongs to someone else (``-o /tmp/theirs/image.tar``): while the
    archive is written they rename it away, leave a link to another directory in its place, and
    move the temp file there. The rename into place is done in the directory opened at the
    start, so the archive never lands at the link's target; the export fails in one line."""
    import pytest

    from builder.errors import PybuildError
    from builder.export.destination import output_file
    from tests.helpers.race import swap_for_link

    theirs, elsewhere = tmp_path / "theirs", tmp_path / "elsewhere"
    theirs.mkdir()
    elsewhere.mkdir()
    out = theirs / "image.tar"
    temp = f".image.tar.{os.getpid()}.part"
    with pytest.raises(PybuildError) as raised, output_file(out) as f:
        f.write(b"the archive")
        held = swap_for_link(theirs, elsewhere)
        (held / temp).rename(elsewhere / temp)
    assert not (elsewhere / "image.tar").exists()
    assert str(out) in str(raised.value) and "\n" not in str(raised.value)


def test_a_directory_swapped_for_a_link_after_it_was_opened_gets_the_file(tmp_path: Path) -> None:
    """The same swap without the temp file moved: the archive is written whole into the directory
    that was opened (where it went), and nothing reaches the link's target."""
    from builder.export.destination import output_file
    from tests.helpers.race import swap_for_link

    theirs, elsewhere = tmp_path / "theirs", tmp_path / "elsewhere"
    theirs.mkdir()
    elsewhere.mkdir()
    with output_file(theirs / "image.tar") as f:
        f.write(b"the archive")
        held = swap_for_link(theirs, elsewhere)
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in held.iterdir()) == ["image.tar"]
    assert (held / "image.tar").read_bytes() == b"the archive"


@pytest.fixture
def protected_symlinks():  # type: ignore[no-untyped-def]
    """fs.protected_symlinks on (most distributions' default; this machine's may be off), restored after."""
    knob = Path("/proc/sys/fs/protected_symlinks")
    before = knob.read_text()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(before)


def test_a_link_another_user_planted_in_a_sticky_directory_is_not_followed(tmp_path: Path,
                                                                           protected_symlinks: None) -> None:
    """``-o /tmp/app.tar`` or ``--iidfile /tmp/iid`` as root, where another user left a link of that
    name to a file of root's: the kernel refuses root to follow it (fs.protected_symlinks), as it
    refuses docker, and so does pybuild; it used to resolve the link itself and replace the target.
    A link of root's own in the same directory still leads to the file it names."""
    from builder.export.destination import OutputPathError, remove_stale_output

    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    victim = tmp_path / "shadow"
    victim.write_bytes(b"keep me\n")
    for name in ("app.tar", "iid"):
        (shared / name).symlink_to(victim)
        os.lchown(shared / name, 1000, 1000)
    with pytest.raises(OutputPathError) as raised:
        write_output(shared / "app.tar", b"the archive")
    assert str(raised.value) == f'invalid output path "{shared / "app.tar"}": Permission denied'
    with pytest.raises(OutputPathError):
        remove_stale_output(shared / "iid")
    assert victim.read_bytes() == b"keep me\n"
    assert sorted(p.name for p in shared.iterdir()) == ["app.tar", "iid"]
    (shared / "mine").symlink_to(victim)
    write_output(shared / "mine", b"the archive")
    assert victim.read_bytes() == b"the archive" and (shared / "mine").is_symlink()
