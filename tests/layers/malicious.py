"""A corpus of crafted layer tars that try to escape or break extraction.

Modelled on moby's pkg/archive breakout tests (TestUntarInvalidFilenames,
TestUntarInvalidHardlink, TestUntarInvalidSymlink, the ``testBreakout`` cases
of utils_test.go) plus stream-level damage. Every case targets ``sentinel``,
a directory beside the extraction target that must stay byte-for-byte the
same, and must be refused with the given error class.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.errors import DigestMismatchError, ImageError, UnsafeLayerError

SENTINEL_FILES = {"hello": b"sentinel hello\n", "secret": b"do not read\n"}


@dataclass(frozen=True)
class Member:
    """One crafted entry: type is a tarfile type constant; data only for regular files."""

    name: str
    type: bytes = tarfile.REGTYPE
    linkname: str = ""
    data: bytes = b""
    mode: int = 0o644
    devmajor: int = 0
    devminor: int = 0


@dataclass(frozen=True)
class MaliciousCase:
    """A named crafted blob, the error it must cause, and a word the message must contain."""

    name: str
    blob: bytes
    error: type[Exception]
    mentions: str = ""


def build_tar(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = m.type
            info.mode = m.mode
            info.linkname = m.linkname
            info.devmajor, info.devminor = m.devmajor, m.devminor
            info.mtime = 1_700_000_000
            info.size = len(m.data) if m.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(m.data) if m.data else None)
    return buf.getvalue()


def _header(name: bytes, size_field: bytes, typeflag: bytes = b"0") -> bytes:
    """A raw ustar header with an arbitrary size field and a correct checksum."""
    fields = struct.pack(
        "100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s",
        name, b"0000644\0", b"0000000\0", b"0000000\0", size_field, b"00000000000\0",
        b" " * 8, typeflag, b"", b"ustar\0", b"00", b"", b"", b"", b"", b"", b"",
    )
    checksum = b"%06o\0 " % sum(fields)
    return fields[:148] + checksum + fields[156:]


def _pax_tar(records: dict[str, str]) -> bytes:
    """One file whose PAX records override numeric fields."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("numbers")
        info.pax_headers = records
        tf.addfile(info)
    return buf.getvalue()


def _reg(name: str, data: bytes = b"pwned\n") -> Member:
    return Member(name, tarfile.REGTYPE, data=data)


def _sym(name: str, target: str) -> Member:
    return Member(name, tarfile.SYMTYPE, linkname=target)


def _hard(name: str, target: str) -> Member:
    return Member(name, tarfile.LNKTYPE, linkname=target)


def corpus(sentinel: Path) -> list[MaliciousCase]:
    """All cases, aimed at ``sentinel`` (an absolute path beside the extraction target)."""
    name = sentinel.name
    absolute = str(sentinel)
    unsafe: list[tuple[str, list[Member], str]] = [
        ("dotdot-name", [_reg(f"../{name}/evil")], "'..'"),
        ("leading-slash-dotdot", [_reg(f"/../{name}/evil")], "'..'"),
        ("nested-dotdot", [Member("a", tarfile.DIRTYPE, mode=0o755), _reg(f"a/../../{name}/hello")], "'..'"),
        ("symlink-to-dotdot-then-file", [_sym("esc", ".."), _reg(f"esc/{name}/evil")], "esc"),
        ("symlink-to-root-then-file", [_sym("root", "/"), _reg(f"root{absolute}/evil")], "root"),
        ("symlink-to-absolute-dir-then-file", [_sym("loophole", absolute), _reg("loophole/evil")], "loophole"),
        ("symlink-dir-then-overwrite", [_sym("loophole", f"../{name}"), _reg("loophole/hello")], "loophole"),
        ("relative-symlink-chain", [
            Member("d", tarfile.DIRTYPE, mode=0o755), _sym("d/up", ".."), _sym("chain", "d/up/.."),
            _reg(f"chain/{name}/evil"),
        ], "outside"),
        ("symlink-loop", [_sym("a", "b"), _sym("b", "a"), _reg("a/evil")], "symlinks"),
        ("hardlink-dotdot", [_hard("h", f"../{name}/secret")], "'..'"),
        ("hardlink-dotdot-then-overwrite", [_hard("h", f"../{name}/hello"), _reg("h")], "'..'"),
        ("hardlink-absolute-outside", [_hard("h", f"{absolute}/secret")], "does not exist"),
        ("hardlink-etc-shadow", [_hard("shadow", "/etc/shadow")], "does not exist"),
        ("hardlink-through-symlink", [_sym("s", f"../{name}"), _hard("h", "s/secret")], "'s'"),
        ("hardlink-to-symlink-then-write-through", [
            _sym("s", f"../{name}"), _hard("h", "s"), _reg("h/evil"),
        ], "'h'"),
        ("hardlink-to-directory", [Member("d", tarfile.DIRTYPE, mode=0o755), _hard("h", "d")], "directory"),
        ("device-dotdot", [Member(f"../{name}/null", tarfile.CHRTYPE, devmajor=1, devminor=3)], "'..'"),
        ("device-through-symlink", [
            _sym("dev", f"../{name}"), Member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0),
        ], "dev"),
        ("whiteout-dotdot", [_reg("a/.wh...", b"")], "whiteout of '..'"),
        ("whiteout-dot", [_reg(".wh..", b"")], "whiteout"),
        ("whiteout-through-symlink", [_sym("s", f"../{name}"), _reg("s/.wh.hello", b"")], "'s'"),
        ("opaque-through-symlink", [_sym("s", f"../{name}"), _reg("s/.wh..wh..opq", b"")], "'s'"),
        ("nested-symlink-then-new-dirs", [
            _sym("dir/loophole", f"../../{name}"), _reg("dir/loophole/newdir/newfile"),
        ], "loophole"),
        ("hardlink-then-new-dirs-through-it", [
            _hard("loophole", f"../{name}"), _reg("loophole/newdir/newfile"),
        ], "'..'"),
        ("fifo-through-absolute-symlink", [
            _sym("s", absolute), Member("s/fifo", tarfile.FIFOTYPE),
        ], "'s'"),
    ]
    cases = [
        MaliciousCase(n, build_tar(members), UnsafeLayerError, word) for n, members, word in unsafe
    ]
    cases += [
        MaliciousCase(f"impossible-{what}", _pax_tar(records), ImageError, "impossible")
        for what, records in (
            ("uid", {"uid": "99999999999"}), ("gid", {"gid": "-5"}),
            ("mtime", {"mtime": "1" + "0" * 30}),
        )
    ]
    cases.append(MaliciousCase(
        "impossible-device", build_tar([Member("dev", tarfile.CHRTYPE, devmajor=2**20, devminor=1)]),
        ImageError, "impossible",
    ))
    valid = build_tar([_reg("big", b"x" * 100_000), _reg("after")])
    gz = gzip.compress(valid, mtime=0)
    flipped = bytearray(gz)
    flipped[len(gz) // 2] ^= 0xFF
    cases += [
        MaliciousCase("absurd-size", _header(b"huge", b"77777777777\0") + b"x" * 1024, ImageError, "truncated"),
        MaliciousCase(
            "absurd-base256-size", _header(b"huge", b"\x80" + b"\xff" * 11) + b"x" * 1024,
            ImageError, "truncated",
        ),
        MaliciousCase(
            "negative-base256-size", _header(b"neg", b"\xff" * 12) + b"\0" * 1024, ImageError,
            "negative",
        ),
        MaliciousCase(
            "absurd-pax-header", _header(b"pax", b"%011o\0" % (1 << 30), b"x") + b"9 a=b\n" * 100,
            ImageError, "claims",
        ),
        MaliciousCase("truncated-tar", valid[: 512 + 50_000], ImageError, "truncated"),
        MaliciousCase("truncated-header", valid[:300], ImageError, "truncated"),
        MaliciousCase("not-a-tar", b"GIF89a" + bytes(range(256)) * 4, ImageError, "checksum"),
        MaliciousCase("truncated-gzip", gz[: len(gz) // 2], ImageError, "gzip"),
        MaliciousCase("corrupt-gzip", bytes(flipped), ImageError, ""),
        MaliciousCase("name-too-long", build_tar([_reg("x" * 300)]), ImageError, "too long"),
        MaliciousCase("gnu-sparse", _header(b"sparse", b"00000000000\0", b"S") + b"\0" * 1024,
                      ImageError, "sparse"),
    ]
    return cases


def contained(sentinel: Path) -> list[tuple[str, bytes]]:
    """Layers that are allowed (moby extracts them too) but must still not touch ``sentinel``."""
    name = sentinel.name
    cases = {
        # Creating symlinks that point outside is fine; only following them is not.
        "symlink-dotdot": [_sym("dotdot", f"../{name}/hello")],
        "symlink-slash-dotdot": [_sym("slash-dotdot", f"/../{name}/hello")],
        "symlink-symlink": [_sym("loophole", f"../{name}"), _sym("symlink", "loophole/hello")],
        # Replacing a symlink to a directory must unlink the symlink, not empty the directory.
        "symlink-then-file-replacing-it": [_sym("loophole", f"../{name}"), _reg("loophole")],
        "symlink-then-dir-replacing-it": [
            _sym("loophole", f"../{name}"), Member("loophole", tarfile.DIRTYPE, mode=0o755),
            _reg("loophole/hello", b"inside now"),
        ],
        "whiteout-of-symlink-to-outside": [_sym("loophole", f"../{name}"), _reg(".wh.loophole", b"")],
        "opaque-dir-with-symlink-to-outside": [
            _sym("d/loophole", f"../../{name}"), Member("d", tarfile.DIRTYPE, mode=0o755),
            _reg("d/.wh..wh..opq", b""),
        ],
        # moby's TestUntarHardlinkToSymlink: a hardlink to a symlink links the symlink itself.
        "hardlink-to-symlink": [_sym("symlink1", "regfile"), _hard("symlink2", "symlink1"), _reg("regfile")],
    }
    return [(n, build_tar(m)) for n, m in cases.items()]


class _Blobs:
    """A BlobSource over bytes in memory (the registry and the store hand out the same)."""

    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def open_blob(self, descriptor: object) -> io.BytesIO:
        return io.BytesIO(self._blob)


def mismatched_blob_layer(sentinel: Path) -> tuple[Callable[[], io.BufferedIOBase], type[Exception]]:
    """A layer whose blob is a valid gzip tar but not the one its descriptor names."""
    from builder.image import BlobLayer, Descriptor, Digest, MediaType

    real = gzip.compress(build_tar([_reg("innocent", b"but not what was announced")]), mtime=0)
    announced = gzip.compress(build_tar([_reg("innocent", b"the announced content")]), mtime=0)
    descriptor = Descriptor(
        media_type=MediaType.OCI_LAYER_GZIP, digest=Digest.of(announced), size=len(real),
    )
    layer = BlobLayer(_Blobs(real), descriptor, Digest.of(b"diff id unused here"))
    return layer.compressed, DigestMismatchError  # type: ignore[return-value]
