"""``--build-context NAME=VALUE``: named contexts, which FROM, ``COPY --from`` and ``RUN --mount=from``
find before stages and images of the same name (BuildKit's rule: a named context replaces them).

VALUE is a directory (its files after its own ``.dockerignore``, owned by root
as the main context's are, seen as a one-layer image), a git repository
(``https://host/repo.git#ref:subdir``, ``git@...``, ``git://...``) or an archive
over http(s), fetched for each build as ADD fetches them, ``docker-image://REF``
(any image reference, ``scratch`` too) or ``oci-layout://DIR[:TAG]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import UsageError
from builder.execute.urls import redact_credentials

if TYPE_CHECKING:
    from builder.execute.fetch import UrlFetches
    from builder.execute.gitsource import GitSources

DOCKER_IMAGE = "docker-image://"
OCI_LAYOUT = "oci-layout://"


def context_key(name: str) -> str:
    """A name as BuildKit matches named contexts: docker's familiar form without ``:latest``
    (``docker.io/library/alpine:latest`` and ``alpine`` are both ``alpine``)."""
    from builder.image.reference import Reference

    ref = Reference.try_parse(name)
    if ref is None:
        return name.lower()
    familiar = ref.familiar
    return familiar.removesuffix(":latest") if ref.digest is None else familiar


@dataclass(frozen=True)
class NamedContext:
    """A ``--build-context NAME=VALUE``: an image, a local directory or a URL standing for NAME."""

    name: str  # its context_key
    image: str | None = None  # a reference FROM understands: REF, scratch, oci-layout://...
    path: Path | None = None  # a local directory
    url: str | None = None  # a git repository, or an archive over http(s)

    @classmethod
    def parse(cls, text: str) -> NamedContext:
        name, sep, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UsageError(f"invalid --build-context {text!r}: expected NAME=VALUE (a directory, "
                             "docker-image://REF or oci-layout://DIR[:TAG])")
        key = context_key(name)
        if value.startswith(DOCKER_IMAGE):
            ref = value[len(DOCKER_IMAGE):]
            if ref != "scratch":
                from builder.image.reference import Reference

                if Reference.try_parse(ref) is None:
                    raise UsageError(f"invalid --build-context {text!r}: {ref!r} is not an image reference")
            return cls(key, image=ref)
        if value.startswith(OCI_LAYOUT):
            if not value[len(OCI_LAYOUT):]:
                raise UsageError(f"invalid --build-context {text!r}: oci-layout:// needs a directory "
                                 "(oci-layout://DIR[:TAG])")
            return cls(key, image=value)
        from builder.execute.urls import is_git_source, is_url

        if is_git_source(value) or is_url(value):
            return cls(key, url=value)
        if "://" in value:
            raise UsageError(f"invalid --build-context {text!r}: unknown scheme (a directory, a git or "
                             "http(s) URL, docker-image://REF or oci-layout://DIR[:TAG])")
        path = Path(value).expanduser()
        if not path.is_dir():
            raise UsageError(f"--build-context {name}: {value} is not a directory")
        return cls(key, path=path.resolve())

    def describe(self) -> str:
        return f"build context {self.name}"


def fetch(named: NamedContext, scratch: Path, git: GitSources | None = None,
          fetches: UrlFetches | None = None) -> Path:
    """A URL context's files in a directory under ``scratch`` (see :func:`fetch_url`)."""
    assert named.url is not None
    return fetch_url(named.url, scratch, f"--build-context {named.name}", git, fetches=fetches)[0]


def is_remote_context(text: str) -> bool:
    """docker's remote build contexts: a git repository (also ``github.com/...``) or an http(s) URL."""
    from builder.execute.urls import is_git_source, is_url

    return is_git_source(text) or is_url(text) or text.startswith("github.com/")


def fetch_url(url: str, scratch: Path, what: str, git: GitSources | None = None, *,
              keep_git_dir: bool = False, fetches: UrlFetches | None = None) -> tuple[Path, Path | None]:
    """The files of a git repository (a checkout, without ``.git`` unless ``keep-git-dir=true``,
    as BuildKit; kept in the store by ``git`` and read in place, never written) or of an archive
    over http(s), in a directory under ``scratch``; and, when the URL held a plain file and not
    an archive, that file (docker takes it as the Dockerfile). A URL the user typed: git signs
    in with the user's credentials, as docker's CLI does (``git`` should be the user's too)."""
    import shutil

    from builder.errors import BuildContextError, CopyError
    from builder.execute.add import download, extract_archive, git_checkout
    from builder.execute.copy import CopySpec
    from builder.execute.gitsource import GitCredentials, GitSources
    from builder.execute.urls import is_git_source

    if git is None:  # the user typed this URL: git may sign in as the user
        git = GitSources(credentials=GitCredentials(host=True))
    is_git = is_git_source(url) or url.startswith("github.com/")
    if url.startswith("github.com/"):  # docker's shorthand
        url = "https://" + url
    # A download the URL names no file of (http://host/) is the Dockerfile, as docker takes it.
    spec = CopySpec(sources=(url,), dest="/Dockerfile", is_add=True, keep_git_dir=keep_git_dir)
    try:
        if is_git:
            return git_checkout(url, spec, scratch, git), None
        item = download(url, spec, scratch, fetches=fetches)  # fetches notes its digest
        root = scratch / "context"
        root.mkdir()
        downloaded = item.files[0].host
        assert downloaded is not None
        if extract_archive(downloaded, root) is not None:
            return root, None
        single = root / item.path
        shutil.move(downloaded, single)
        return root, single
    except CopyError as err:
        message = str(err).replace(f"{spec.command} failed: ", "", 1)
        raise BuildContextError(redact_credentials(f"{what}: {message}")) from None
