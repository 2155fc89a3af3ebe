"""Checkouts of git sources (``ADD <git URL>``, git build contexts) kept between builds, by commit.

``$PYBUILD_ROOT/gitsources/<key>/`` holds ``tree/`` (the checkout) and
``commit``; the key is the sha256 of the remote, the commit and the options
that change the tree (submodules, keep-git-dir), and who fetched it
(the user, or a Dockerfile: see :class:`builder.execute.gitsource.GitCredentials`). A checkout is made in a temp
dir beside them and renamed into place, so a build sees all of it or none of
it; the entry's mtime is its last use. Like RUN cache mounts they are build
cache: a plain ``prune`` keeps them, ``--keep-storage`` evicts the least
recently used, ``prune --all`` removes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cache.blobs import remove_tree, set_aside, sweep_dot_entries
from cache.mounts import entry_dirs, tree_size

GIT_DIR = "gitsources"


def sources_root(store_root: Path) -> Path:
    return Path(store_root) / GIT_DIR


def entry_key(remote: str, commit: str, *, submodules: bool, keep_git_dir: bool, scope: str = "") -> str:
    """``scope``: who fetched it ("" the user, with their credentials; "dockerfile" a Dockerfile's
    ADD, with the build's secrets only), so neither reads a checkout only the other could make."""
    text = f"{remote}\0{commit}\0submodules={submodules}\0keep-git-dir={keep_git_dir}"
    if scope:
        text += f"\0scope={scope}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class GitCheckout:
    """A kept git checkout (ADD <git> or a git context), for listing and pruning."""

    key: str
    path: Path
    commit: str
    size: int
    last_used: float


def list_checkouts(store_root: Path) -> list[GitCheckout]:
    """Every complete checkout, least recently used first."""
    out = []
    for path, last_used in entry_dirs(sources_root(store_root)):
        try:
            commit = (path / "commit").read_text().strip()
        except OSError:
            continue  # not complete
        out.append(GitCheckout(path.name, path, commit, tree_size(path) + 4096, last_used))
    return sorted(out, key=lambda c: (c.last_used, c.key))


def usage(store_root: Path) -> int:
    return sum(c.size for c in list_checkouts(store_root))


def remove_checkout(store_root: Path, key: str) -> None:
    """Delete one checkout (renamed aside into tmp/ first, so no build sees half of it and a
    sweep removes it if this process dies meanwhile)."""
    aside = set_aside(sources_root(store_root) / key, Path(store_root) / "tmp")
    if aside is not None:
        remove_tree(aside)


def sweep(store_root: Path, older_than: float = 3600) -> None:
    """Temp dirs of checkouts that a killed build left (older than an hour: none in progress)."""
    sweep_dot_entries(sources_root(store_root), older_than)
