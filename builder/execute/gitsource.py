"""Git sources: a ref resolved to its commit (``git ls-remote``), each commit checked out once.

BuildKit's way: ``ADD <git URL>`` is keyed on the commit its ref names now, so
a branch that moved is fetched again and one that did not costs one
``ls-remote``; the checkout is kept in the store (:mod:`cache.gitsources`) and
reused by every later build of that commit, ``ADD`` and git build contexts
alike. Without a store (or when the server cannot list its refs) a source is
cloned into the build's scratch dir, as before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from builder.execute.urls import redact_credentials
from cache.gitsources import entry_key, sources_root

if TYPE_CHECKING:
    from builder.execute.add import GitRef
    from builder.execute.copy import CopySpec

_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "true",
        # No ext:: (runs commands) or fd:: transports, from the URL or from a submodule.
        # file:// is refused by the callers: it would read the build host outside the context.
        "GIT_ALLOW_PROTOCOL": "https:http:git:ssh",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
    }


def git_binary(url: str, spec: CopySpec) -> str:
    git = shutil.which("git")
    if git is None:
        raise spec.error(
            f"{url} is a git repository, and git is not installed: install git, or download an "
            "archive with ADD <https URL>"
        )
    return git


class GitSources:
    """The git sources of one build: each ref listed once, each commit checked out once."""

    def __init__(self, store_root: Path | None = None) -> None:
        self.root = sources_root(store_root) if store_root is not None else None
        self._commits: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def commit(self, ref: GitRef, spec: CopySpec) -> str | None:
        """The commit ``ref`` names now; None when the server cannot say (then a clone will)."""
        if _COMMIT.fullmatch(ref.ref):
            return ref.ref
        key = (ref.remote, ref.ref)
        with self._lock:
            if key in self._commits:
                return self._commits[key]
        found = _ls_remote(git_binary(ref.remote, spec), ref.remote, ref.ref)
        with self._lock:
            self._commits[key] = found
        return found

    def checkout(self, url: str, ref: GitRef, spec: CopySpec, scratch: Path, *,
                 keep_git_dir: bool) -> tuple[Path, str]:
        """The tree of ``ref`` (with its ``.git`` only with ``keep_git_dir``) and its commit."""
        git = git_binary(url, spec)
        known = self.commit(ref, spec) if self.root is not None else None
        options = {"submodules": ref.submodules, "keep_git_dir": keep_git_dir}
        if self.root is not None and known is not None:
            entry = self.root / entry_key(ref.remote, known, **options)
            if (entry / "commit").is_file():
                os.utime(entry)  # last use, for prune --keep-storage
                return entry / "tree", known
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
            work = self.root / f".{os.getpid()}-{threading.get_ident()}-{len(os.listdir(self.root))}.tmp"
            shutil.rmtree(work, ignore_errors=True)
        else:
            work = scratch / f"git-{len(list(scratch.iterdir()))}"
        try:
            tree = work / "tree"
            commit = _clone(git, ref, tree, spec, fetch=known or ref.ref)
            if not keep_git_dir:
                shutil.rmtree(tree / ".git", ignore_errors=True)
            (work / "commit").write_text(commit + "\n")
            if self.root is None:
                return tree, commit
            entry = self.root / entry_key(ref.remote, commit, **options)
            try:
                os.rename(work, entry)
            except OSError:  # another build made it meanwhile: use that one
                if not (entry / "commit").is_file():
                    raise
            return entry / "tree", commit
        finally:
            if self.root is not None:
                shutil.rmtree(work, ignore_errors=True)


def _ls_remote(git: str, remote: str, ref: str) -> str | None:
    """What ``ref`` (a branch, a tag, a full ref name, or "" for HEAD) names on ``remote``."""
    try:
        proc = subprocess.run([git, "ls-remote", remote, *([ref] if ref else ["HEAD"])], env=git_env(),
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
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


def _clone(git: str, ref: GitRef, target: Path, spec: CopySpec, *, fetch: str) -> str:
    """A shallow checkout of ``fetch`` (the commit when known, else the ref) in ``target``;
    returns the commit checked out."""
    env = git_env()

    def run(*args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([git, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise spec.error(redact_credentials(
                f"cloning {ref.remote}: git {args[0]} failed (a git source needs network access to the "
                f"git server):\n{tail}"
            ))
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
