"""One error hierarchy whose messages are written for the user.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; it never
shows a traceback unless ``--debug`` is given. Raise the most specific class
so that tests and callers can tell failures apart without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class PybuildError(Exception):
    """Base of every error a user can cause or needs to read."""

    exit_code = 1

    def report(self) -> str:
        """What the CLI prints for this error."""
        return f"ERROR: {self}"


class UsageError(PybuildError):
    """Bad command-line arguments; docker exits 125 for these, and so do we."""

    exit_code = 125


@dataclass(frozen=True)
class SourceLocation:
    """Where in a Dockerfile something was written (1-based lines and columns)."""

    file: str
    start_line: int
    end_line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.column:
            return f"{self.file}:{self.start_line}:{self.column}"
        return f"{self.file}:{self.start_line}"


class InvalidReferenceError(UsageError):
    """An image reference (``name[:tag][@digest]``) does not follow docker's grammar."""


class DockerfileError(PybuildError):
    """An error in a Dockerfile: names file:line, quotes the line, may suggest a fix."""

    def __init__(
        self,
        message: str,
        location: SourceLocation | None = None,
        *,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.location = location
        self.source_line = source_line
        self.hint = hint
        super().__init__(self._render())

    @property
    def line(self) -> int | None:
        return self.location.start_line if self.location else None

    def _render(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f" ({self.hint})"
        if self.source_line is not None and self.location is not None:
            text += f"\n  {self.location.start_line:>4} | {self.source_line.rstrip()}"
        return text


class ParseError(DockerfileError):
    """The Dockerfile text cannot be parsed."""


class InstructionError(DockerfileError):
    """The Dockerfile parses, but an instruction's arguments or flags are invalid."""


class ExpansionError(DockerfileError):
    """Variable expansion failed (bad syntax, or ``${VAR:?message}`` with VAR unset)."""


class LintError(DockerfileError):
    """A build check configured with ``# check=error=true`` failed."""


class StagePlanError(DockerfileError):
    """The stages cannot be planned: unknown --target, a cycle, a stage used before it is defined."""


class IgnoreFileError(PybuildError):
    """A .dockerignore pattern is invalid."""


class BuildContextError(PybuildError):
    """The build context cannot be read: missing, not a directory, or an unreadable directory."""


class ImageError(PybuildError):
    """An image, manifest or config is missing or malformed."""


class ImageNotFoundError(ImageError):
    """No image of that name or ID in the store (or the source)."""


class DigestMismatchError(ImageError):
    """Content did not hash to the digest it was stored or announced under."""

    def __init__(self, expected: str, actual: str, what: str = "content", hint: str = "") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"digest mismatch for {what}: expected {expected}, got {actual}"
                         + (f" ({hint})" if hint else ""))


class UnsafeLayerError(ImageError):
    """A layer entry would land outside its target; extraction is refused."""


class StoreError(PybuildError):
    """The local store is unusable (locked, corrupt, wrong version, out of space)."""


class CacheError(PybuildError):
    """A shared build cache (--cache-from/--cache-to) cannot be read or written."""


class RegistryError(PybuildError):
    """A registry operation failed; the message names registry, repository and operation."""


class AuthError(RegistryError):
    """Credentials were missing or rejected."""


class RemoteImageNotFoundError(RegistryError, ImageNotFoundError):
    """The registry has no manifest for that tag or digest (or no such repository)."""


class TLSError(RegistryError):
    """The registry's TLS certificate could not be verified, or it does not speak TLS."""


class BuildError(PybuildError):
    """A build step failed."""


class StepFailedError(BuildError):
    """A RUN step exited non-zero; the message names the step, line, exit code and output tail.

    With ``solve`` (BuildKit's words: ``process "/bin/sh -c exit 3" did not complete
    successfully: exit code: 3``), the CLI prints it as docker build does: the step's last
    output lines, the Dockerfile around the step (``>>>`` on its lines, once the engine has
    set ``source``), then ``ERROR: failed to solve: ...``."""

    def __init__(self, message: str, exit_code: int | None = None, *, step: str = "", solve: str = "",
                 location: SourceLocation | None = None, logs: tuple[str, ...] = ()) -> None:
        self.step_exit_code = exit_code
        self.step = step
        self.solve = solve
        self.location = location
        self.logs = logs
        self.source: str | None = None
        """The Dockerfile's text, for the excerpt."""
        super().__init__(message)

    def report(self) -> str:
        if not self.solve:
            return super().report()
        out = ["------", f" > {self.step}:", *self.logs, "------"]
        if self.location is not None and self.source is not None:
            out += source_excerpt(self.source, self.location)
        return "\n".join([*out, f"ERROR: failed to solve: {self.solve}"])


def source_excerpt(text: str, location: SourceLocation) -> list[str]:
    """BuildKit's excerpt of a Dockerfile at an error: ``Dockerfile:8``, a rule, the lines
    with ``>>>`` on those of the step and a few around it, a rule."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    start, end = location.start_line, location.end_line or location.start_line
    if start < 1 or start > len(lines):
        return []
    end = min(end, len(lines))
    first, last = start, end
    pad, p = (4 if end == start else 2), 0
    while p < pad:  # BuildKit's loop: a line before and after each turn, while there are
        if first > 1:
            first -= 1
            p += 1
        if last != len(lines):
            last += 1
            p += 1
        p += 1
    rule = "-" * 20
    shown = [f" {i:3d} | {'>>>' if start <= i <= end else '   '} {lines[i - 1]}" for i in range(first, last + 1)]
    return [f"{location.file}:{start}", rule, *shown, rule]


class CopyError(BuildError, DockerfileError):
    """A COPY/ADD cannot be done (missing or ignored source, path outside the context, bad
    --chown/--chmod, failed download or checksum); names the Dockerfile line."""


class RuntimeNotFoundError(BuildError):
    """No usable isolation (runc, crun or chroot) on this machine."""


class ContainerError(BuildError):
    """A build container could not be set up, started or cleaned up."""


class ContainerStartError(ContainerError):
    """The container's process could not be started, for the step's own reason (executable
    not found, a mount target under a file, a symlink loop): reported at the step's line."""


class UserNotFoundError(ContainerError):
    """USER names a user or group that the image's /etc/passwd or /etc/group lacks."""


class OutputError(PybuildError):
    """Our own stdout or stderr refused a write (a full disk, /dev/full): docker's words."""


def describe_path(path: Path | str) -> str:
    """Quote a path for an error message."""
    return f"'{path}'"
