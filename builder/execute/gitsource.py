"""Git sources: a ref resolved to its commit (``git ls-remote``), each commit checked out once.

BuildKit's way: ``ADD <git URL>`` is keyed on the commit its ref names now, so
a branch that moved is fetched again and one that did not costs one
``ls-remote``; the checkout is kept in the store (:mod:`cache.gitsources`) and
reused by every later build of that commit, ``ADD`` and git build contexts
alike. Without a store (or when the server cannot list its refs) a source is
cloned into the build's scratch dir, as before.

A Dockerfile's source signs in only with what the build passes (BuildKit's
``GIT_AUTH_TOKEN``/``GIT_AUTH_HEADER`` secrets, ``--ssh default``); a URL the
user typed, with the user's own credentials (:class:`GitCredentials`).
"""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from builder.errors import UsageError
from builder.execute.urls import redact_credentials

if TYPE_CHECKING:
    from builder.execute.add import GitRef
    from builder.execute.copy import CopySpec
    from builder.execute.run import Secret

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# What a Dockerfile's git source keeps of the user's environment: the way to the server (proxies,
# CAs), never a way in (git config, credential helpers, askpass, ssh agent and keys, .netrc).
_KEPT_ENV = frozenset({
    "PATH", "TMPDIR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "no_proxy", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH", "GIT_SSL_NO_VERIFY",
})
# git's own words (LC_ALL=C) for "the server wants credentials it was not given".
_AUTH_FAILED = re.compile(r"could not read (Username|Password)|Authentication failed|"
                          r"returned error: 40[13]|Permission denied \(|no such identity|"
                          r"Permission denied, please try again")


def git_env() -> dict[str, str]:
    """The environment of git run for a URL the user typed (a git build context): with all the
    user's credentials, as docker's CLI fetches it."""
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "true",
        # No ext:: (runs commands) or fd:: transports, from the URL or from a submodule.
        # file:// is refused by the callers: it would read the build host outside the context.
        "GIT_ALLOW_PROTOCOL": "https:http:git:ssh",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
    }


@dataclass(frozen=True)
class GitCredentials:
    """What git may sign in to a server with. A URL the user typed (a git build context,
    ``--build-context``) is fetched with ``host=True``: all the user's credentials, as docker's
    CLI does. A Dockerfile's ``ADD <git>`` gets only what the build passes, as BuildKit: the
    secrets ``GIT_AUTH_TOKEN``/``GIT_AUTH_HEADER`` (or ``.<host>``) for http(s), the ``--ssh
    default`` agent for ssh; else a Dockerfile could bake the build host's private repositories
    (its credential helpers, ~/.netrc, ssh keys or agent) into an image."""

    host: bool = False
    secrets: Mapping[str, Secret] = field(default_factory=dict)
    ssh_agent: Path | None = None  # the socket of ``--ssh default``

    def env(self, remote: str) -> dict[str, str]:
        """git's environment for ``remote``; a header of the secrets goes in as config through
        ``GIT_CONFIG_COUNT``, so it is on no command line and in no ``.git/config``."""
        if self.host:
            return git_env()
        env = {k: v for k, v in os.environ.items()
               if k in _KEPT_ENV or (k.startswith("GIT_TRACE") and k != "GIT_TRACE_REDACT")}
        ssh = "ssh -F /dev/null -o BatchMode=yes -o IdentityFile=none -o GSSAPIAuthentication=no"
        if self.ssh_agent is not None:
            env["SSH_AUTH_SOCK"] = str(self.ssh_agent)
        else:
            ssh += " -o IdentityAgent=none"
        env.update(
            HOME="/dev/null",  # no ~/.netrc (curl), no ~/.gitconfig, ~/.git-credentials, ~/.config/git
            GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", LC_ALL="C", GIT_TERMINAL_PROMPT="0",
            GIT_ALLOW_PROTOCOL="https:http:git:ssh", GIT_SSH_COMMAND=ssh, GIT_CONFIG_COUNT="0",
        )
        header = self.auth_header(remote)
        if header is not None:
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"http.{_token_scope(remote)}.extraheader",
                       GIT_CONFIG_VALUE_0=f"Authorization: {header}")
        return env

    def auth_header(self, remote: str) -> str | None:
        """The Authorization value of the secrets for ``remote``, in BuildKit's order: the header
        for its host, the token for its host, the header, the token; a token is sent as BuildKit
        sends it, ``basic base64(x-access-token:TOKEN)``."""
        found = self._secret(remote)
        if found is None:
            return None
        secret, is_token = found
        value = _one_line(secret)
        if is_token:
            return "basic " + base64.b64encode(b"x-access-token:" + value.encode(errors="surrogateescape")).decode()
        return value

    def scrub(self, text: str, remote: str) -> str:
        """``text`` without the secret for ``remote`` (nor its header), for a message."""
        found = self._secret(remote)
        if found is None:
            return text
        for value in (_one_line(found[0]), self.auth_header(remote) or ""):
            if len(value) >= 4:
                text = text.replace(value, "xxxxx")
        return text

    def _secret(self, remote: str) -> tuple[Secret, bool] | None:
        """The secret that signs in to ``remote`` and whether it is a token (else a header)."""
        if self.host or not self.secrets:
            return None
        parts = urlsplit(remote)
        if parts.scheme not in ("http", "https"):
            return None
        host = parts.netloc.rpartition("@")[2]
        for name, is_token in (("GIT_AUTH_HEADER.", False), ("GIT_AUTH_TOKEN.", True),
                               ("GIT_AUTH_HEADER", False), ("GIT_AUTH_TOKEN", True)):
            secret = self.secrets.get(name + host if name.endswith(".") else name)
            if secret is not None:
                return secret, is_token
        return None

    def missing(self, remote: str) -> str:
        """What a Dockerfile's git source must be given to sign in to ``remote``."""
        if urlsplit(remote).scheme in ("http", "https"):
            if self.auth_header(remote) is not None:
                return ("the server refused the GIT_AUTH_TOKEN/GIT_AUTH_HEADER secret given: check "
                        "the token and that it may read this repository")
            return ("a private repository needs a token: pass --secret id=GIT_AUTH_TOKEN,env=VAR (or "
                    "GIT_AUTH_HEADER); ADD does not use the build host's git credentials")
        if self.ssh_agent is None:
            return ("a private repository needs an ssh key: pass --ssh default (an agent, or key files); "
                    "ADD does not use the build host's ssh keys or agent unless given")
        return "the server refused the keys of --ssh default"


def _one_line(secret: Secret) -> str:
    value = secret.value().decode(errors="surrogateescape").strip()
    if "\n" in value or "\r" in value:  # would end the header and start another
        raise UsageError(f"secret {secret.id}: a git token or header must be one line")
    return value


def _token_scope(remote: str) -> str:
    """Which URLs the header goes to: the repository's, as BuildKit (all of github.com there)."""
    for prefix in ("https://github.com/", "https://www.github.com/"):
        if remote.startswith(prefix):
            return prefix
    return remote


def git_binary(url: str, spec: CopySpec) -> str:
    git = shutil.which("git")
    if git is None:
        raise spec.error(
            f"{url} is a git repository, and git is not installed: install git, or download an "
            "archive with ADD <https URL>"
        )
    return git


class GitSources:
    """The git sources of one build: each ref listed once, each commit checked out once.

    ``credentials`` are what git may sign in with (:class:`GitCredentials`): a Dockerfile's own
    by default. Checkouts made with the user's credentials are kept apart in the store from a
    Dockerfile's, so an ``ADD`` of the same commit does not read what only the user could fetch.
    """

    def __init__(self, store_root: Path | None = None, credentials: GitCredentials | None = None) -> None:
        self._store_root = store_root
        self.credentials = credentials or GitCredentials()
        self._commits: dict[tuple[str, str], str | None] = {}
        self._pins: dict[str, str] = {}
        self._lock = threading.Lock()

    def _pin(self, ref: GitRef, commit: str) -> str:
        # As BuildKit's provenance names a git source: the remote (no credentials) and its ref.
        uri = redact_credentials(ref.remote) + (f"#{ref.ref}" if ref.ref else "")
        with self._lock:
            self._pins[uri] = commit
        return commit

    def pins(self) -> dict[str, str]:
        """The git sources this build read, as provenance materials: URI -> commit (sha1)."""
        with self._lock:
            return dict(self._pins)

    @functools.cached_property
    def root(self) -> Path | None:
        """Where checkouts are kept (None: nowhere); the store's git code loads only when a
        build has a git source, as most builds have none."""
        from cache.gitsources import sources_root

        return sources_root(self._store_root) if self._store_root is not None else None

    def commit(self, ref: GitRef, spec: CopySpec) -> str | None:
        """The commit ``ref`` names now; None when the server cannot say (then a clone will)."""
        if _COMMIT.fullmatch(ref.ref):
            return self._pin(ref, ref.ref)
        key = (ref.remote, ref.ref)
        with self._lock:
            if key in self._commits:
                return self._commits[key]
        found = _ls_remote(git_binary(ref.remote, spec), ref.remote, ref.ref, self.credentials, spec)
        with self._lock:
            self._commits[key] = found
        return found if found is None else self._pin(ref, found)

    def checkout(self, url: str, ref: GitRef, spec: CopySpec, scratch: Path, *,
                 keep_git_dir: bool) -> tuple[Path, str]:
        """The tree of ``ref`` (with its ``.git`` only with ``keep_git_dir``) and its commit."""
        from cache.gitsources import entry_key

        git = git_binary(url, spec)
        known = self.commit(ref, spec) if self.root is not None else None
        # A Dockerfile's checkouts are keyed apart from the user's (their key as before: older
        # stores' checkouts, whoever made them, stay the user's only).
        scope = "" if self.credentials.host else "dockerfile"

        def key(commit: str) -> str:
            return entry_key(ref.remote, commit, submodules=ref.submodules, keep_git_dir=keep_git_dir, scope=scope)

        if self.root is not None and known is not None:
            entry = self.root / key(known)
            if (entry / "commit").is_file():
                os.utime(entry)  # last use, for prune --keep-storage
                return entry / "tree", self._pin(ref, known)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            work = self.root / f".{os.getpid()}-{threading.get_ident()}-{len(os.listdir(self.root))}.tmp"
            shutil.rmtree(work, ignore_errors=True)
        else:
            work = scratch / f"git-{len(list(scratch.iterdir()))}"
        try:
            tree = work / "tree"
            commit = self._pin(ref, _clone(git, ref, tree, spec, fetch=known or ref.ref,
                                           credentials=self.credentials))
            if not keep_git_dir:
                shutil.rmtree(tree / ".git", ignore_errors=True)
            (work / "commit").write_text(commit + "\n")
            if self.root is None:
                return tree, commit
            entry = self.root / key(commit)
            try:
                os.rename(work, entry)
            except OSError:  # another build made it meanwhile: use that one
                if not (entry / "commit").is_file():
                    raise
            return entry / "tree", commit
        finally:
            if self.root is not None:
                shutil.rmtree(work, ignore_errors=True)


def _ls_remote(git: str, remote: str, ref: str, credentials: GitCredentials, spec: CopySpec) -> str | None:
    """What ``ref`` (a branch, a tag, a full ref name, or "" for HEAD) names on ``remote``.
    A Dockerfile's source the server refuses is an error here, saying what to pass."""
    try:
        proc = subprocess.run([git, "ls-remote", remote, *([ref] if ref else ["HEAD"])],
                              env=credentials.env(remote), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        if not credentials.host and _AUTH_FAILED.search(proc.stderr):
            raise spec.error(_refused(remote, "ls-remote", proc.stderr, credentials))
        return None
    refs = {}
    for line in proc.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    wanted = ["HEAD"] if not ref else [f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", ref]
    for name in wanted:
        if name in refs and _COMMIT.fullmatch(refs[name]):
            return refs[name]
    return None


def _refused(remote: str, command: str, stderr: str, credentials: GitCredentials) -> str:
    """The message of a Dockerfile's git source the server would not let in."""
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    return redact_credentials(credentials.scrub(
        f"cloning {remote}: git {command} failed: {credentials.missing(remote)}:\n{tail}", remote))


def _clone(git: str, ref: GitRef, target: Path, spec: CopySpec, *, fetch: str,
           credentials: GitCredentials) -> str:
    """A shallow checkout of ``fetch`` (the commit when known, else the ref) in ``target``;
    returns the commit checked out."""
    env = credentials.env(ref.remote)

    def run(*args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([git, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            if not credentials.host and _AUTH_FAILED.search(proc.stderr):
                raise spec.error(_refused(ref.remote, args[0], proc.stderr, credentials))
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise spec.error(redact_credentials(credentials.scrub(
                f"cloning {ref.remote}: git {args[0]} failed (a git source needs network access to the "
                f"git server):\n{tail}", ref.remote
            )))
        return proc.stdout

    run("init", "-q", str(target))
    run("remote", "add", "origin", ref.remote, cwd=target)
    fallback = ref.ref or "HEAD"
    try:
        run("fetch", "-q", "--depth", "1", "origin", fetch or fallback, cwd=target)
    except Exception:
        if (fetch or fallback) == fallback:
            raise
        run("fetch", "-q", "--depth", "1", "origin", fallback, cwd=target)  # a server that refuses a bare commit
    run("-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD", cwd=target)
    if ref.submodules:
        run("submodule", "update", "-q", "--init", "--recursive", "--depth", "1", cwd=target)
    commit = run("rev-parse", "HEAD", cwd=target).strip()
    _scrub_credentials(target / ".git")
    return commit


def _scrub_credentials(git_dir: Path) -> None:
    """Mask the token of every remote URL in a checkout's git configs (the repository's, and each
    submodule's under ``modules/``), as BuildKit sets the origin of a kept ``.git`` to the
    redacted URL: a keep-git-dir layer, and the store's checkout, must not carry it."""
    for config in git_dir.rglob("config"):
        if not config.is_file() or config.is_symlink():
            continue
        text = config.read_text(errors="surrogateescape")
        scrubbed = redact_credentials(text)
        if scrubbed != text:
            config.write_text(scrubbed, errors="surrogateescape")
