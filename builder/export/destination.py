"""Where an output file goes: checked before the build, and never replaced when it is not a file.

A regular file (or a new path) is written atomically: a temp file beside the
real file (symlinks followed, so a link keeps pointing at the new content),
fsync, rename. A FIFO, a terminal or ``/dev/stdout`` is written in place: a
rename would have put a plain file where the device was. Archives refuse
devices, as docker's ``ValidateOutputPath`` does, since ``-o dest=/dev/sda``
is far more likely a slip than a wish.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from builder.errors import PybuildError
from builder.fileio import Directory


class OutputPathError(PybuildError):
    """An output path that cannot be written: the user's to fix, reported before the build
    (exit code 1, as docker's "invalid output path")."""


def followed_path(path: str | Path) -> Path:
    """Where the kernel's own walk of ``path`` leads, its links included (for a path not there
    yet: its directory's, and the name). Not os.path.realpath, which reads links itself and so
    passes by fs.protected_symlinks: the kernel's refusal to let root follow a link another
    user planted in a shared sticky directory (``-o /tmp/app.tar``) to a file of its choosing."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        if os.path.islink(path):  # dangling, and the kernel followed it: where it leads is ours to make
            return Path(os.path.realpath(path))
        if path.parent == path:
            return path
        return followed_path(path.parent) / path.name
    except PermissionError as err:
        raise OutputPathError(f'invalid output path "{path}": {err.strerror}') from None
    except OSError:
        return Path(os.path.realpath(path))  # the checks that follow say what is wrong with it
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # no /proc
        return Path(os.path.realpath(path))
    finally:
        os.close(fd)


def check_output_file(path: str | Path, *, devices: bool = False, make_parents: bool = False) -> Path:
    """docker's ValidateOutputPath: the directory exists (unless it will be made), and an existing
    path is a regular file, a FIFO, or (``devices``) a device; never a directory. Returns where
    ``path`` leads (:func:`followed_path`)."""
    path = Path(path)
    real = followed_path(path)
    try:
        st = os.stat(path)  # through symlinks: /dev/stdout -> /proc/self/fd/1 -> a pipe
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise OutputPathError(f'invalid output path "{path}": {err.strerror}') from None
    if st is None:
        parent = real.parent
        while make_parents and not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise OutputPathError(f'invalid output path: directory "{path.parent}" does not exist')
        if not os.access(parent, os.W_OK):
            raise OutputPathError(f'invalid output path "{path}": directory "{parent}" is not writable')
        return real
    if stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f'invalid output path: "{path}" is a directory; name a file')
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or devices):
        raise OutputPathError(f'invalid output path: "{path}" must be a directory or a regular file: '
                              "got a device")
    return real


@contextlib.contextmanager
def output_file(path: str | Path, *, devices: bool = False, make_parents: bool = False) -> Iterator[BinaryIO]:
    """A stream for ``path``'s new content, replacing it only once the whole content is written."""
    path = Path(path)
    real = check_output_file(path, devices=devices, make_parents=make_parents)
    if (path.exists() and not path.is_file()) or _through_proc_or_dev(path):
        # a FIFO or a device, or /dev/stdout redirected to a file: written in place (a rename would
        # replace the file the shell opened, and what the process writes later would be lost)
        try:
            f = open(path, "wb")  # noqa: SIM115 - closed below, with its own error
        except OSError as err:
            raise PybuildError(f"cannot write {path}: {err.strerror}") from None
        with _closing(f, path):
            yield f
        return
    # ``real``: a symlink keeps its place and points at the new file.
    if make_parents:
        make_dir(real.parent, path.parent)
    # The directory is opened once, and the temp file made, written and renamed through its
    # descriptor: a part of the path swapped for a symlink meanwhile (by someone else who
    # writes into a shared directory) is never followed to put the file somewhere else.
    try:
        folder = Directory.open(real.parent)
    except OSError as err:
        raise PybuildError(f"cannot write {path}: {err.strerror}") from None
    tmp = f".{real.name}.{os.getpid()}.part"
    with folder:
        _sweep_parts(folder, real.name)
        # The temp file keeps its name for the messages of what writes to it.
        replacing = folder.replacing(real.name, temp=tmp, mode=0o666, shown=str(real.with_name(tmp)))
        with contextlib.ExitStack() as stack:
            try:
                out = stack.enter_context(replacing)
            except OSError as err:
                raise PybuildError(f"cannot write {path}: {err.strerror}") from None
            yield out  # an error of the body removes the temp file and goes on as it was raised
            try:
                stack.close()  # flush, fsync, rename
            except OSError as err:
                raise PybuildError(f"cannot write {path}: {err.strerror}") from None


def _sweep_parts(folder: Directory, name: str) -> None:
    """Remove the ``.NAME.PID.part`` files that killed writers of ``name`` left (their pid is gone)."""
    from cache.blobs import pid_alive

    prefix = f".{name}."
    try:
        names = os.listdir(folder.fd)
    except OSError:
        return
    for entry in names:
        pid = entry[len(prefix):-len(".part")]
        if entry.startswith(prefix) and entry.endswith(".part") and pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=folder.fd)


@contextlib.contextmanager
def _closing(f: BinaryIO, path: Path) -> Iterator[None]:
    """Close ``f`` after the body; a failed body's error is the one reported.

    Closing flushes the buffer, which fails again on a full disk: that OSError
    must not replace the body's own message (it would show as an internal error).
    """
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()
        raise
    try:
        f.close()
    except OSError as err:
        raise PybuildError(f"cannot write {path}: {err.strerror}") from None


def make_dir(real: Path, shown: Path | None = None) -> None:
    """mkdir -p, with the user's error instead of an OSError."""
    try:
        real.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PybuildError(f'cannot create the output directory "{shown or real}": {err.strerror}') from None


def _through_proc_or_dev(path: str | Path) -> bool:
    """Whether ``path`` names a file through /dev or /proc (``/dev/stdout``, ``/proc/self/fd/1``,
    or a link to them): the open file of a process, which may be a regular file."""
    current = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on links followed
        if current.parts[1:2] in (("dev",), ("proc",)):
            return True
        if not current.is_symlink():
            return False
        current = Path(os.path.abspath(current.parent / os.readlink(current)))
    return False


def remove_stale_output(path: str | Path) -> None:
    """Remove the --iidfile / --metadata-file of an earlier build before this one runs, as docker
    removes its ID file: a build that fails must not leave the last one's ID for a script to push.
    Only a regular file goes (through a symlink, its target, which the new file takes the place
    of); ``/dev/stdout`` (even when it is a file the shell opened) and FIFOs stay."""
    if _through_proc_or_dev(path):
        return
    real = followed_path(path)
    try:
        with Directory.open(real.parent) as folder:  # the file checked is the one removed
            st = folder.lstat(real.name)
            if st is not None and stat.S_ISREG(st.st_mode):
                folder.unlink(real.name)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise OutputPathError(f'cannot remove the earlier "{path}": {err.strerror}') from None


def write_output(path: str | Path, data: bytes, *, devices: bool = True) -> None:
    """Small outputs (--iidfile, --metadata-file): docker writes these through to /dev/stdout too."""
    with output_file(path, devices=devices) as f:
        try:
            f.write(data)
        except OSError as err:
            raise PybuildError(f"cannot write {path}: {err.strerror}") from None
