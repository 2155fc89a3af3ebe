"""``-o type=oci,dest=DIR,tar=false`` adds to a directory that may hold anything: what is
there is never followed out of it, and a hostile index.json is one clear error."""

from __future__ import annotations

import os
from pathlib import Path

from builder.export import TaggedImage
from builder.export.layout import write_oci_layout
from tests.helpers.tools import run_pybuild
from tests.store.imagegen import make_image


def _context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "f").write_text("content\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    return ctx


def _export(tmp_path: Path, dest: Path):  # type: ignore[no-untyped-def]
    return run_pybuild("build", "-q", "-o", f"type=oci,dest={dest},tar=false", str(_context(tmp_path)),
                       root=tmp_path / "root")


def test_symlinked_blob_directories_are_not_followed_out_of_the_layout(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for link in ("blobs", "blobs/sha256"):
        dest = tmp_path / f"layout-{link.replace('/', '-')}"
        (dest / link).parent.mkdir(parents=True, exist_ok=True)
        (dest / link).symlink_to(outside)
        proc = _export(tmp_path, dest)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert f"{link} is a symbolic link" in err and err.count("ERROR") == 1, err
        assert list(outside.iterdir()) == []


def test_a_hostile_index_json_is_one_clear_error(tmp_path: Path) -> None:
    for name, make in (("device", lambda p: p.symlink_to("/dev/zero")),
                       ("directory", lambda p: p.mkdir()),
                       ("huge", lambda p: p.write_bytes(b" " * (17 << 20)))):
        dest = tmp_path / f"layout-{name}"
        dest.mkdir()
        make(dest / "index.json")
        proc = _export(tmp_path, dest)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert "index.json" in err and "give an empty directory" in err, err


def test_a_planted_temp_file_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    """The temp names are predictable (the pid): a link planted there must not be followed."""
    image = make_image("planted")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me\n")
    dest = tmp_path / "layout"
    (dest / "blobs" / "sha256").mkdir(parents=True)
    pid = os.getpid()
    for planted in (dest / f".index.json.{pid}.tmp", dest / "blobs" / "sha256" / f".{image.config_digest().hex}.{pid}.tmp"):
        planted.symlink_to(victim)
    write_oci_layout([TaggedImage(image, ("planted:1",))], dest, tar=False)
    assert victim.read_bytes() == b"keep me\n"
    assert (dest / "blobs" / "sha256" / image.config_digest().hex).read_bytes() == image.raw_config()


def test_a_blob_directory_swapped_for_a_link_during_the_write_is_not_followed(tmp_path: Path) -> None:
    """Someone who writes into the layout swaps blobs/sha256 for a link at the moment a blob's temp
    file is made: the blob goes into the directory that was opened, never through the link, and
    the next blob's look finds the link and refuses it in one line."""
    import pytest

    from builder.errors import PybuildError
    from tests.helpers.race import swap_at, swap_for_link

    image = make_image("raced")
    dest, outside = tmp_path / "layout", tmp_path / "outside"
    (dest / "blobs" / "sha256").mkdir(parents=True)
    outside.mkdir()
    held: list[Path] = []

    def temp_blob(path: str) -> bool:
        return path.startswith(str(dest / "blobs" / "sha256")) and path.endswith(f".{os.getpid()}.tmp")

    with swap_at(("open",), temp_blob, lambda: held.append(swap_for_link(dest / "blobs" / "sha256", outside))) \
            as fired, pytest.raises(PybuildError) as raised:
        write_oci_layout([TaggedImage(image, ("raced:1",))], dest, tar=False)
    assert fired, "the swap never happened"
    assert list(outside.iterdir()) == []
    assert [p.name for p in held[0].iterdir() if not p.name.startswith(".")] != []
    message = str(raised.value)
    assert "blobs/sha256 is a symbolic link" in message and "\n" not in message, message
