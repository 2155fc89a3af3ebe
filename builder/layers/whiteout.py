"""OCI whiteout names and their overlayfs equivalents.

A layer tar deletes lower content with marker entries: ``.wh.NAME`` removes
``NAME`` from the layers below; ``.wh..wh..opq`` inside a directory hides
everything the lower layers put there. overlayfs spells the same things as a
0/0 character device and the ``trusted.overlay.opaque=y`` xattr. The writer
turns the overlay spelling into the OCI one (an upper dir becomes a layer),
the extractor can go back (a snapshot becomes an overlay lower dir).
"""

from __future__ import annotations

import errno
import os
import stat

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

OVERLAY_XATTR_PREFIX = "trusted.overlay."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
# An overlay mounted with "userxattr" (rootless) keeps the same bookkeeping under user.*.
USER_OVERLAY_XATTR_PREFIX = "user.overlay."
USER_OVERLAY_OPAQUE_XATTR = "user.overlay.opaque"
# Upper dirs written with these features cannot be read as plain trees.
OVERLAY_UNSUPPORTED_XATTRS = (
    "trusted.overlay.redirect", "trusted.overlay.metacopy",
    "user.overlay.redirect", "user.overlay.metacopy",
)


def is_whiteout(name: str) -> bool:
    """True for any OCI marker base name (``.wh.x`` and ``.wh..wh..opq``)."""
    return name.startswith(WHITEOUT_PREFIX)


def is_opaque_marker(name: str) -> bool:
    return name == OPAQUE_MARKER


def whiteout_target(name: str) -> str | None:
    """The base name a ``.wh.NAME`` marker deletes; None for opaque and reserved ``.wh..wh.`` names."""
    if not name.startswith(WHITEOUT_PREFIX) or name.startswith(WHITEOUT_META_PREFIX):
        return None
    return name[len(WHITEOUT_PREFIX):]


def whiteout_name(name: str) -> str:
    """The marker base name that deletes ``name``."""
    return WHITEOUT_PREFIX + name


def is_overlay_whiteout(st: os.stat_result) -> bool:
    """overlayfs marks a deleted file in the upper dir as a 0/0 character device."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_overlay_xattr(name: str) -> bool:
    """overlayfs bookkeeping that must never travel inside a layer."""
    return name.startswith(OVERLAY_XATTR_PREFIX)


def is_upper_dir_xattr(name: str) -> bool:
    """Bookkeeping of either overlay flavour, dropped when an upper dir becomes a layer."""
    return name.startswith((OVERLAY_XATTR_PREFIX, USER_OVERLAY_XATTR_PREFIX))


def make_overlay_whiteout(name: str, dir_fd: int) -> None:
    """Create the overlayfs spelling of a whiteout (needs CAP_MKNOD)."""
    os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)


def set_overlay_opaque(fd: int) -> None:
    """Mark an open directory opaque for overlayfs (needs CAP_SYS_ADMIN for trusted.*)."""
    os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")


def is_overlay_opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, OVERLAY_OPAQUE_XATTR) == b"y"
    except OSError as err:
        if err.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
            return False
        raise
