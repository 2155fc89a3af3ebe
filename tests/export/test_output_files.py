"""Output files (archives, --iidfile, --metadata-file) are written beside their place under a
predictable temp name: whatever is planted there is replaced, never written through."""

from __future__ import annotations

import os
from pathlib import Path

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
