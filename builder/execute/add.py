"""What ADD does beyond COPY: unpack local archives, download URLs, clone git repositories.

- A local source is an archive when its content is a tar, plain or compressed
  with gzip, bzip2, xz or zstd (detected by content as docker does, never by
  name); it is unpacked into dest with the layer extractor's rules (nothing
  escapes dest), keeping the owners written in the tar, or all of them the
  ``--chown`` user's, as BuildKit unpacks (docker's classic builder kept the
  tar's even then). ``--unpack=false`` copies it as a file.
- A URL is downloaded (unpacked only with ``--unpack=true``, as BuildKit):
  the file is named after the last segment of the URL path (``__unnamed__`` when
  it has none, as BuildKit; dest itself when dest does not end in '/'), mode 0600,
  mtime from Last-Modified (the epoch without one);
  ``--checksum=<algo>:<hex>`` is verified.
- A git URL (``git@host:repo``, ``git://``, ``https://host/repo.git#ref:subdir``,
  ``https://.../repo.git``) is cloned with the ``git`` binary (``file://`` is refused: it
  would read the host outside the context); ``.git`` is
  dropped unless ``--keep-git-dir``; ``--checksum=<commit>`` pins the commit.
"""

from __future__ import annotations

import bz2
import email.utils
import hashlib
import lzma
import os
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qs

import zstandard

from builder.errors import IgnoreFileError, ImageError
from builder.execute.copy import (
    CopySpec,
    SourceFile,
    SourceItem,
    SourceKind,
    synthetic_stat,
    walk_tree,
)
from builder.execute.fetch import FetchFailed, UrlFetches, fetch
from builder.execute.rootfs import RootfsView
from builder.layers.compression import BZIP2_MAGIC, GZIP_MAGIC, XZ_MAGIC, ZSTD_MAGIC

if TYPE_CHECKING:
    from builder.execute.gitsource import GitSources

URL_MODE = 0o600
_CHUNK = 1 << 20


# -- archives -----------------------------------------------------------------------------


def open_archive(path: str | Path) -> BinaryIO | None:
    """The uncompressed tar stream of ``path`` if it is an archive, else None (stream closed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    raw = os.fdopen(fd, "rb")
    try:
        stream = _decompressed(raw)
        if _looks_like_tar(stream):
            raw.seek(0)
            return _decompressed(raw)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError, ImageError, ValueError):
        pass
    raw.close()
    return None


def _decompressed(raw: BinaryIO) -> BinaryIO:
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(GZIP_MAGIC):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if head.startswith(BZIP2_MAGIC):
        return bz2.BZ2File(raw)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if head.startswith(XZ_MAGIC):
        return lzma.LZMAFile(raw)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
    return raw


def _looks_like_tar(stream: BinaryIO) -> bool:
    """Go's tar.Reader.Next() succeeds: the first block is a valid header (checksum right)."""
    block = stream.read(512)
    if len(block) < 512 or block.count(0) == 512:
        return False
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip(b" ") or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32
    signed = unsigned - 2 * sum(b for b in block if b > 127)  # old tars summed signed bytes
    signed -= 2 * sum(b for b in block[148:156] if b > 127)
    return stored in (unsigned, signed)


@dataclass
class Unpacked:
    """What unpacking an ADD archive found beyond its files."""

    explicit_dirs: set[tuple[str, ...]]  # directories with entries of their own (others are implied)
    outside_links: list[tuple[str, str]]  # hardlinks to files the destination, not the archive, holds


def extract_archive(path: str | Path, into: Path, check: Callable[[], None] | None = None) -> Unpacked | None:
    """Unpack the archive at ``path`` into ``into``; None when it is not an archive. ``check``
    may raise between reads to stop (a cancelled build)."""
    from builder.layers.extract import extract_layer

    stream = open_archive(path)
    if stream is None:
        return None
    links: list[tuple[str, str]] = []
    with stream:
        # As docker, which unpacks in a chroot of the destination: an absolute link (or
        # one that climbs) in the archive resolves inside it, never outside.
        stats = extract_layer(stream, into, apply_whiteouts=False, same_owner=True, outside_links=links,
                              chroot_symlinks=True, check=check)
    return Unpacked(stats.explicit_dirs, links)


def tree_files(root: Path, explicit_dirs: set[tuple[str, ...]] | None = None) -> list[SourceFile]:
    """Everything below ``root`` as SourceFiles (a plain tree: no overlay semantics); with
    ``explicit_dirs``, the directories not in it are marked implicit."""
    view = RootfsView([root], overlay=False)
    files = []
    for rel, host, st in view.walk_parts(()):
        link = os.readlink(host) if stat.S_ISLNK(st.st_mode) else ""
        implicit = (explicit_dirs is not None and stat.S_ISDIR(st.st_mode)
                    and tuple(rel.split("/")) not in explicit_dirs)
        files.append(SourceFile(rel, host, st, link, implicit=implicit))
    return files


# -- URLs ----------------------------------------------------------------------------------


_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}


def _checksum(spec: CopySpec) -> tuple[str, str] | None:
    """``--checksum``'s algorithm and hex, refused before any download when it cannot be a
    digest (a short hex too: BuildKit's digest.Parse checks the length)."""
    if not spec.checksum:
        return None
    algo, sep, value = spec.checksum.partition(":")
    if not sep or not re.fullmatch(rf"[0-9a-f]{{{_DIGEST_HEX.get(algo, 0)}}}", value) or algo not in _DIGEST_HEX:
        raise spec.error(
            f"invalid --checksum={spec.checksum}: expected sha256:<hex> (or sha384:, sha512:)"
        )
    return algo, value


def download(
    url: str, spec: CopySpec, scratch: Path, *, fetches: UrlFetches | None = None,
) -> SourceItem:
    """Fetch ``url`` into ``scratch`` (or take what keying it fetched) as a file source (mode 0600)."""
    want = _checksum(spec)
    target = scratch / f"download-{len(list(scratch.iterdir()))}"
    hasher = hashlib.new(want[0]) if want else None
    fetched = fetches.take(url, target) if fetches is not None else None
    if fetched is not None:
        if hasher is not None:
            with open(target, "rb") as f:
                while chunk := f.read(_CHUNK):
                    hasher.update(chunk)
    else:
        sha = hashlib.sha256()  # for the provenance (fetches.pins): the digest BuildKit pins it by
        try:
            fetched = fetch(url, target, [sha.update] + ([hasher.update] if hasher is not None else []))
        except FetchFailed as err:
            raise spec.error(f"downloading {url}: {err}") from None
        if fetches is not None:
            fetches.pin(url, f"sha256:{sha.hexdigest()}")
    if want is not None and hasher is not None and hasher.hexdigest() != want[1]:
        raise spec.error(
            f"checksum of {url} does not match: expected {want[0]}:{want[1]}, "
            f"got {want[0]}:{hasher.hexdigest()}"
        )
    name = fetched.name
    mtime = 0  # no (readable) Last-Modified: the epoch, as docker and BuildKit date it
    if fetched.last_modified:
        try:
            mtime = int(email.utils.parsedate_to_datetime(fetched.last_modified).timestamp())
        except (TypeError, ValueError):
            pass
    size = target.stat().st_size
    st = synthetic_stat(stat.S_IFREG | URL_MODE, size, mtime)
    return SourceItem(url, name, SourceKind.FILE, [SourceFile("", target, st)])


# -- git -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GitRef:
    """A git source as BuildKit reads it: ``URL#ref:subdir`` or ``URL?ref=..&subdir=..``."""

    remote: str
    ref: str = ""
    subdir: str = ""
    keep_git_dir: bool = False
    checksum: str = ""
    submodules: bool = True


def parse_git_ref(url: str, spec: CopySpec) -> GitRef:
    """Split the ref, subdir and options off a git source URL."""
    remote, _, fragment = url.partition("#")
    ref, _, subdir = fragment.partition(":")
    options: dict[str, str] = {}
    if "?" in remote and not remote.startswith("git@"):
        remote, _, query = remote.partition("?")
        for key, values in parse_qs(query, keep_blank_values=True).items():
            if key not in ("ref", "tag", "branch", "subdir", "keep-git-dir", "checksum", "submodules"):
                raise spec.error(f"unexpected query '{key}' in the git source {url}")
            if len(values) != 1:
                raise spec.error(f"the query '{key}' is given more than once in the git source {url}")
            options[key] = values[0]
        if fragment and options:
            raise spec.error(f"the git source {url} cannot have both a #fragment and ?query options")
    ref = options.get("ref") or options.get("tag") or options.get("branch") or ref
    if ref.startswith("-"):
        # git would take it for an option (`#--upload-pack=CMD` ran as `git fetch origin
        # --upload-pack=CMD`, and the build went on from HEAD); no ref starts with one.
        raise spec.error(f"invalid git ref '{ref}' in the git source {url}: a ref cannot start with '-'")
    return GitRef(
        remote=remote,
        ref=ref,
        subdir=options.get("subdir", subdir),
        keep_git_dir=options.get("keep-git-dir", "false").lower() in ("1", "true"),
        checksum=options.get("checksum", ""),
        submodules=options.get("submodules", "true").lower() not in ("0", "false"),
    )


def git_checkout(url: str, spec: CopySpec, scratch: Path, sources: GitSources | None = None) -> Path:
    """The directory a git source (``#ref[:subdir]`` or ``?ref=&subdir=``, as BuildKit) names:
    its checkout, or the subdirectory there. With ``sources`` (the build's, backed by the store)
    an unchanged commit is not fetched again; the directory is then the store's, to read only."""
    from builder.execute.gitsource import GitSources

    ref_spec = parse_git_ref(url, spec)
    subdir = ref_spec.subdir
    if ref_spec.remote.startswith("file:"):
        raise spec.error(
            f"{ref_spec.remote} is a repository on the build host, outside the build context: serve it over "
            "git://, ssh:// or https://, or copy it into the context"
        )
    keep_git_dir = spec.keep_git_dir or ref_spec.keep_git_dir
    if ref_spec.checksum and spec.checksum and ref_spec.checksum != spec.checksum:
        raise spec.error(f"checksum mismatch {spec.checksum!r} != {ref_spec.checksum!r}")
    target, commit = (sources or GitSources()).checkout(url, ref_spec, spec, scratch, keep_git_dir=keep_git_dir)
    if spec.checksum or ref_spec.checksum:
        _verify_commit(commit, url, spec.checksum or ref_spec.checksum, spec)
    if not subdir:
        return target
    resolved = RootfsView([target], overlay=False).resolve(subdir)
    if resolved.clamped or resolved.absolute:
        raise spec.error(f"the subdirectory '{subdir}' of {url} leaves the repository")
    root = target.joinpath(*resolved.parts)
    if not root.is_dir():
        raise spec.error(f"{url}: no directory '{subdir}' in the repository")
    return root


def clone(url: str, spec: CopySpec, scratch: Path, sources: GitSources | None = None) -> SourceItem:
    """A git source as a DIR-like item (see :func:`git_checkout`); ``.git`` only with keep-git-dir,
    and without what ``--exclude`` names (relative to the checkout, or its subdir), as BuildKit."""
    root = git_checkout(url, spec, scratch, sources)
    if spec.excludes:
        try:
            files = walk_tree(RootfsView([root], overlay=False), spec.excludes)
        except IgnoreFileError as err:
            raise spec.error(f"invalid --exclude: {err}") from None
        return SourceItem(url, url, SourceKind.GIT, files)
    return SourceItem(url, url, SourceKind.GIT, tree_files(root))


def _verify_commit(head: str, url: str, checksum: str, spec: CopySpec) -> None:
    """BuildKit's ``ADD --checksum=<commit> <git url>``: the checked-out commit must be that one."""
    want = checksum.lower()
    if not re.fullmatch(r"[0-9a-f]{7,64}", want):
        raise spec.error(f"invalid --checksum={checksum} for a git source: expected a commit hash")
    if not head.startswith(want):
        raise spec.error(f"checksum of {url} does not match: expected commit {want}, got {head}")


# -- putting it together ----------------------------------------------------------------------


def prepare_add_items(
    spec: CopySpec, items: Sequence[SourceItem], scratch: Path, *, git: GitSources | None = None,
    fetches: UrlFetches | None = None, check: Callable[[], None] | None = None,
) -> list[SourceItem]:
    """Turn ADD's remote sources and local archives into items COPY's planner can place
    (``check``: see :func:`extract_archive`)."""
    if spec.checksum and len(items) != 1:
        raise spec.error("checksum can't be specified for multiple sources")
    if spec.checksum and items[0].kind not in (SourceKind.URL, SourceKind.GIT):
        raise spec.error("checksum requires HTTP(S) or Git sources")
    out: list[SourceItem] = []
    for item in items:
        if item.kind is SourceKind.URL:
            item = download(item.arg, spec, scratch, fetches=fetches)
            if spec.unpack is not True:  # a URL is unpacked only on request (BuildKit's --unpack)
                out.append(item)
                continue
        if item.kind is SourceKind.GIT:
            out.append(clone(item.arg, spec, scratch, git))
        elif item.kind is SourceKind.FILE and spec.unpack is not False and spec.from_ is None:
            host = item.files[0].host if item.files else None
            st = item.files[0].stat if item.files else None
            if host is None or st is None or not stat.S_ISREG(os.stat(host).st_mode):
                out.append(item)
                continue
            into = scratch / f"archive-{len(out)}"
            into.mkdir()
            try:
                unpacked = extract_archive(host, into, check)
            except ImageError as err:
                raise spec.error(f"unpacking '{item.path}': {err}") from None
            if unpacked is None:
                shutil.rmtree(into)
                out.append(item)
                continue
            out.append(SourceItem(item.arg, item.path, SourceKind.ARCHIVE,
                                  tree_files(into, unpacked.explicit_dirs), keep_owner=not spec.chown,
                                  outside_links=unpacked.outside_links))
        else:
            out.append(item)
    return out

