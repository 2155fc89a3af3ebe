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
