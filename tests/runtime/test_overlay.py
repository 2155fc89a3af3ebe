"""overlay mounts on their own: read-only views, the mount table, unmounting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import ContainerError
from builder.runtime.overlay import (
    make_links,
    mount_overlay,
    mounts_under,
    unmount,
    unmount_all_under,
)


def _layer(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


@pytest.mark.parametrize("count", [1, 2])
def test_read_only_view(tmp_path, count):
    lowers = [_layer(tmp_path / f"l{i}", {"f": str(i), f"only{i}": ""}) for i in range(count)]
    view = tmp_path / "with space" / "view"
    view.mkdir(parents=True)
    mount_overlay(view, link_dir=tmp_path / "links", lowers=make_links(tmp_path / "links", lowers))
    try:
        assert (view / "f").read_text() == str(count - 1)
        assert sorted(os.listdir(view)) == sorted(["f", *(f"only{i}" for i in range(count))])
        with pytest.raises(OSError):
            (view / "new").write_text("x")
        assert mounts_under(tmp_path) == [view]  # octal escapes in mountinfo decoded
    finally:
        unmount(view)
    assert mounts_under(tmp_path) == []


def test_unmount_all_under_peels_stacked_mounts(tmp_path, busybox_rootfs):
    target = tmp_path / "m"
    target.mkdir()
    links = tmp_path / "l"
    names = make_links(links, [busybox_rootfs])
    for _ in range(3):
        mount_overlay(target, link_dir=links, lowers=names)
    assert len(mounts_under(tmp_path)) == 3
    unmount_all_under(tmp_path)
    assert mounts_under(tmp_path) == []
    unmount(target)  # not mounted any more: fine


def test_missing_lower_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ContainerError, match=r"lower dir .*/nope of the container is missing"):
        make_links(tmp_path / "l", [tmp_path / "nope"])
