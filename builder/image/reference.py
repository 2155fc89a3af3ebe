"""Image references (``[registry/]repository[:tag][@digest]``) with docker's normalisation.

Follows distribution/reference's grammar and ``ParseNormalizedNamed``: a first
path element is a registry when it contains ``.`` or ``:`` or is ``localhost``;
otherwise the name lives on Docker Hub (``docker.io``), where one-element names
get the ``library/`` prefix. An upper-case first element without ``.`` or ``:``
(``MyOrg/app``) is refused, as docker's daemon refuses it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from builder.errors import InvalidReferenceError
from builder.image.digest import Digest, is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
LEGACY_DOCKER_HUB = "index.docker.io"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_REMOTE_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$",
    re.ASCII,
)
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$", re.ASCII)
_TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")


def _invalid(detail: str | None = None) -> InvalidReferenceError:
    return InvalidReferenceError(
        f"invalid reference format: {detail}" if detail else "invalid reference format"
    )


def _split_domain(name: str) -> tuple[str, str]:
    """docker's splitDockerDomain: which part of a name is the registry."""
    first, sep, rest = name.partition("/")
    if not sep:
        return DOCKER_HUB, "library/" + name
    if first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remote = first, rest
    else:
        domain, remote = DOCKER_HUB, name
    if domain == LEGACY_DOCKER_HUB:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in remote:
        remote = "library/" + remote
    return domain, remote


@dataclass(frozen=True)
class Reference:
    """A fully qualified image reference; ``tag`` is None only when a digest pins the image."""

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise what a user typed (``busybox``, ``host:5000/app:1``, ``x@sha256:…``)."""
        if not isinstance(text, str) or not text:
            raise _invalid("repository name must have at least one component")
        if _IDENTIFIER_RE.match(text):
            raise InvalidReferenceError(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        domain, remainder = _split_domain(text)
        if domain != DOCKER_HUB and domain != "localhost" and not any(c in domain for c in ".:"):
            # distribution's grammar takes an upper-case first element for a registry, but
            # docker's daemon refuses it (`MyOrg/app` is a typo, not a host named MyOrg)
            raise _invalid("repository name must be lowercase")
        remote = remainder.split(":", 1)[0]
        if remote.lower() != remote:
            raise _invalid(f"repository name ({remote}) must be lowercase")
        full = f"{domain}/{remainder}"
        match = _REFERENCE_RE.match(full)
        if match is None:
            if _REFERENCE_RE.match(full.lower()):
                raise _invalid("repository name must be lowercase")
            raise _invalid(repr(text) if text.strip() else None)
        name = match["name"]
        if len(name) > NAME_MAX:
            raise _invalid(f"repository name must not be more than {NAME_MAX} characters")
        digest = match["digest"]
        if digest is not None:
            if not digest.startswith("sha256:"):
                raise _invalid(f"unsupported digest algorithm in {digest!r}: only sha256 is supported")
            if not is_digest(digest):
                raise _invalid(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
        tag = match["tag"]
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(
            registry=domain,
            repository=name[len(domain) + 1:],
            tag=tag,
            digest=Digest(digest) if digest else None,
        )

    @classmethod
    def try_parse(cls, text: str) -> Reference | None:
        """Parse, or None when ``text`` is not a reference (e.g. to tell names from IDs)."""
        try:
            return cls.parse(text)
        except InvalidReferenceError:
            return None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest: what a store indexes tags under."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What to ask a registry's manifest endpoint for: the digest if pinned, else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def familiar_name(self) -> str:
        """The name as docker displays it: ``busybox``, ``user/app``, ``host:5000/app``."""
        if self.registry != DOCKER_HUB:
            return self.name
        repo = self.repository
        if repo.startswith("library/") and "/" not in repo[len("library/"):]:
            return repo[len("library/"):]
        return repo

    @property
    def familiar(self) -> str:
        """docker's short display form with tag and digest: ``busybox:latest``."""
        out = self.familiar_name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        """The same repository at another tag (any digest is dropped: it pinned the old tag)."""
        if not _TAG_RE.match(tag):
            raise InvalidReferenceError(f"invalid tag format: {tag!r}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to a manifest digest (the tag is kept, as docker does)."""
        if not is_digest(digest):
            raise InvalidReferenceError(f"invalid digest format: {digest!r}")
        return replace(self, digest=Digest(digest))

    def without_tag(self) -> Reference:
        return replace(self, tag=None if self.digest else DEFAULT_TAG)

    @property
    def host(self) -> str:
        """The registry's host name without port or IPv6 brackets."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def api_host(self) -> str:
        """Where the registry API answers: Docker Hub's is not ``docker.io`` itself."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (plain HTTP is allowed there)."""
        return is_loopback_host(self.registry)


def is_loopback_host(registry: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port."""
    if not _DOMAIN_RE.match(registry):
        return False
    host = registry
    if host.startswith("["):
        host = host[1:host.index("]")]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_reference(text: str) -> Reference:
    """Shorthand for :meth:`Reference.parse`."""
    return Reference.parse(text)
