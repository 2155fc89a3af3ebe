"""The build context: a directory, or a tar on stdin (``pybuild build -``), with its ignore rules.

A tar context is extracted once into a private temp dir with the same safe
extractor as layers (nothing lands outside it); ``close()`` removes it. The
``.dockerignore`` matcher is found as BuildKit finds it: ``<Dockerfile
name>.dockerignore`` beside the Dockerfile wins over the context's own.
"""

from __future__ import annotations

import bz2
import io
import lzma
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.errors import BuildContextError, ImageError, PybuildError
from builder.execute.rootfs import RootfsView
from builder.frontend.dockerignore import PatternMatcher, load_ignore

DEFAULT_DOCKERFILE = "Dockerfile"


@dataclass
class BuildContext:
    """The files COPY and ADD read, and which of them ``.dockerignore`` hides."""

    root: Path
    dockerfile: Path | None  # the Dockerfile found for this context (None: given elsewhere, e.g. -f -)
    ignore: PatternMatcher
    _temp: Path | None = field(default=None, repr=False)
    _view: RootfsView | None = field(default=None, repr=False)

    @classmethod
    def from_dir(cls, path: Path, dockerfile: Path | None = None) -> BuildContext:
        """A directory context; ``dockerfile`` defaults to ``<path>/Dockerfile`` when it exists."""
        root = Path(path).resolve()
        try:
            st = root.stat()
        except FileNotFoundError:
            raise BuildContextError(f"build context {path} does not exist") from None
        except PermissionError:
            raise BuildContextError(f"build context {path} is not readable") from None
        if not stat.S_ISDIR(st.st_mode):
            raise BuildContextError(f"build context {path} is not a directory")
        if dockerfile is None:
            try:
                if (root / DEFAULT_DOCKERFILE).is_file():
                    dockerfile = root / DEFAULT_DOCKERFILE
            except PermissionError:  # a directory we may not search (mode 000): docker's words
                raise BuildContextError(
                    "unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                    f"lstat {root / DEFAULT_DOCKERFILE}: permission denied") from None
        return cls(root, dockerfile, load_ignore(root, dockerfile))

    @classmethod
    def from_tar(
        cls, stream: BinaryIO, workdir: Path, dockerfile_name: str | None = None
    ) -> BuildContext:
        """A context sent as a tar (plain, gzip, bzip2, xz or zstd) on ``stream``, extracted under ``workdir``.

        ``dockerfile_name`` (``-f`` relative to the context) defaults to
        ``Dockerfile``; it is looked up inside the extracted context.
        """
        from builder.layers.extract import extract_layer

        workdir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix="context-", dir=workdir))
        try:
            extract_layer(_decompressed(stream), temp, apply_whiteouts=False, same_owner=False)
        except PybuildError as err:
            shutil.rmtree(temp, ignore_errors=True)
            raise BuildContextError(f"cannot read the build context from the tar stream: {err}") from None
        except (EOFError, OSError, lzma.LZMAError) as err:  # a truncated or corrupt bzip2/xz stream
            shutil.rmtree(temp, ignore_errors=True)
            raise BuildContextError("cannot read the build context from the tar stream: "
                                    f"{getattr(err, 'strerror', None) or err}") from None
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        try:
            context = cls.from_tree(temp, dockerfile_name, "build context tar")
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        context._temp = temp
        return context

    @classmethod
    def from_tree(cls, root: Path, dockerfile_name: str | None, what: str) -> BuildContext:
        """A context whose files someone else made (a tar, a git repository, an archive over
        http): its Dockerfile and ignore files are looked up with symlinks resolved inside it,
        so that a ``Dockerfile -> /etc/shadow`` link is an error, never a host file read (and
        quoted in a parse error). ``what`` names the context in messages."""
        name = dockerfile_name or DEFAULT_DOCKERFILE
        view = RootfsView([root], overlay=False)
        host = _inside(view, name, what)
        dockerfile: Path | None = None
        if host is not None and host.is_file():
            dockerfile = host
        elif dockerfile_name is not None:
            raise BuildContextError(f"the Dockerfile '{dockerfile_name}' is not in the {what}")
        # The ignore files are read by path: a symlink in the tree must not lead them outside.
        for candidate in (f"{name}.dockerignore", ".dockerignore"):
            _inside(view, candidate, what)
        return cls(root, dockerfile, load_ignore(root, dockerfile), _view=view)

    @property
    def view(self) -> RootfsView:
        """The context as a tree (symlinks resolved with the context as '/')."""
        if self._view is None:
            self._view = RootfsView([self.root], overlay=False)
        return self._view

    def excluded_by(self, path: str) -> str | None:
        """The ignore rule that hides ``path`` (relative to the context), for messages; None if kept."""
        return self.ignore.match_rule(path)

    def close(self) -> None:
        """Remove what ``from_tar`` extracted; a directory context is left alone."""
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> BuildContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _inside(view: RootfsView, name: str, what: str) -> Path | None:
    """The host path of ``name`` in a context; a symlink that leaves the context is an error."""
    try:
        resolved = view.resolve(name, stop_at_absolute=True)
    except ImageError as err:
        raise BuildContextError(f"'{name}' in the {what}: {err}") from None
    if resolved.clamped or resolved.absolute:
        raise BuildContextError(f"'{name}' in the {what} is a symlink that leads outside the context")
    found = view.entry(resolved.parts)
    return found.host if found is not None else None


def _decompressed(stream: BinaryIO) -> BinaryIO:
    """bzip2 and xz unwrapped here (as the docker CLI accepts them); gzip and zstd by the extractor."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[type-var]  # no peek: a raw stream
    head = buffered.peek(6)[:6]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(buffered)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(buffered)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    return buffered
