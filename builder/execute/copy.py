"""COPY (and the COPY part of ADD): which files are read, where they land, and the layer tar.

The rules are docker's classic builder's, checked against it in
tests/execute/test_copy_docker.py, with BuildKit's flags on top
(``--chmod``, ``--parents``, ``--exclude``, ``--link``, heredocs):

- ``dest`` is relative to WORKDIR; it names a directory when it ends in '/',
  or when it already is one in the image (symlinks in it followed inside the
  image, so ``/usr/local/bin/`` -> ``/usr/bin`` lands in /usr/bin).
- More than one source (after wildcards) needs a dest ending in '/'.
- A source directory copies its contents; a top-level source symlink is
  followed inside the source tree (a link that leaves the context is refused);
  symlinks further down are copied as symlinks; hardlinks inside one source
  stay hardlinks (of symlinks, fifos and devices too, as docker's archive
  links any non-directory).
- Owners become 0:0, or the ``--chown`` user (looked up in the destination
  image's /etc/passwd and /etc/group; a user alone also names the group);
  ``COPY --from`` without ``--chown`` keeps the source's owners. Modes and
  mtimes are kept unless ``--chmod``, except that a file docker chowns loses
  its setuid bit (and setgid with group exec) and file capabilities, as
  chown(2) does to it there. Of the xattrs only file capabilities are copied:
  docker's layers (and BuildKit's) record no other.
- Directories the copy creates are 0755: for a file, all of them belong to the
  ``--chown`` user; for a directory source only the dest directory does (its
  parents are root's). Under a setgid directory they are setgid as well, as
  mkdir(2) makes them there. Directories that exist are left as they are.

``--link`` gives the same files; the directories above them are then written
as new (0755 root) instead of as the image has them, so the layer does not
depend on the base's directory metadata (dest and ``--chown`` names are still
resolved in it). With ``--chmod`` too, BuildKit does not link, nor does pybuild.

Selection (wildcards, .dockerignore, ``--exclude``, directory contents) is one
function, :func:`select_sources`, used both to write the layer and by
:func:`copy_sources_digest` for the cache key.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import xxhash

from builder.errors import CopyError, IgnoreFileError, ImageError, SourceLocation
from builder.execute.context import BuildContext
from builder.execute.rootfs import NAME_MAX, PATH_MAX, Parts, RootfsView, path_too_long, split_path
from builder.execute.urls import redact_credentials
from builder.frontend.dockerignore import MatchType, PatternMatcher, go_clean, walk_context
from builder.layers.entry import STEP_LAYER_XATTRS, EntryType, TarEntry

if TYPE_CHECKING:
    from builder.execute.fetch import UrlFetches
    from builder.execute.gitsource import GitSources
    from builder.frontend.instructions import Add, Copy
    from builder.layers.tarwriter import LayerStats

MULTI_SOURCE_ERROR = (
    "When using {cmd} with more than one source file, the destination must be a directory and "
    "end with a /"
)
_WILDCARD = re.compile(r"[*?\[\\]")
_HEREDOC_MODE = 0o644
_DIR_MODE = 0o755
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HeredocSource:
    """``COPY <<EOF /dest``: a file named ``name`` holding ``data`` (``<<-`` tabs already stripped)."""

    name: str
    data: str
    expand: bool = True  # False when the delimiter was quoted


@dataclass(frozen=True)
class CopySpec:
    """One COPY or ADD, its words already expanded by the engine."""

    sources: tuple[str, ...]
    dest: str
    workdir: str = "/"
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    is_add: bool = False
    unpack: bool | None = None  # ADD: None = extract local archives (docker's default)
    checksum: str | None = None  # ADD <url> --checksum=sha256:...
    keep_git_dir: bool = False
    heredocs: tuple[HeredocSource, ...] = ()
    # Applied to heredoc bodies whose delimiter was unquoted; None when already expanded.
    expand: Callable[[str], str] | None = field(default=None, compare=False)
    location: SourceLocation | None = None
    from_: str | None = None  # COPY --from, for messages only
    label: str | None = None  # what messages call it, when not COPY/ADD (a RUN bind mount)

    @property
    def command(self) -> str:
        return self.label or ("ADD" if self.is_add else "COPY")

    @classmethod
    def from_instruction(
        cls, inst: Copy | Add, *, workdir: str = "/", expand: Callable[[str], str] | None = None
    ) -> CopySpec:
        """The spec of a parsed (and expanded) COPY/ADD instruction."""
        from builder.frontend.instructions import Add

        is_add = isinstance(inst, Add)
        return cls(
            sources=tuple(inst.sources),
            dest=inst.dest,
            workdir=workdir,
            chown=inst.chown,
            chmod=inst.chmod,
            link=inst.link,
            parents=getattr(inst, "parents", False),
            excludes=tuple(inst.excludes),
            is_add=is_add,
            unpack=getattr(inst, "unpack", None),
            checksum=getattr(inst, "checksum", None),
            keep_git_dir=getattr(inst, "keep_git_dir", False),
            heredocs=tuple(HeredocSource(c.path, c.data, c.expand) for c in inst.contents),
            expand=expand,
            location=inst.location,
            from_=getattr(inst, "from_", None),
        )

    def error(self, message: str) -> CopyError:
        # A source URL may carry a token (``https://user:token@host/repo.git``): never in a message.
        return CopyError(redact_credentials(f"{self.command} failed: {message}"), self.location)


class SourceKind(Enum):
    """What one source argument turned out to be."""

    FILE = "file"
    DIR = "dir"
    HEREDOC = "heredoc"
    URL = "url"
    ARCHIVE = "archive"  # ADD of a local tar: its contents land in dest
    GIT = "git"


@dataclass(frozen=True)
class SourceFile:
    """One file a COPY reads, with what the cache key and the layer need of it."""

    rel: str  # path below the source item ("" for the item itself)
    host: str | Path | None  # the file holding the content (None for heredocs)
    stat: os.stat_result
    link: str = ""  # symlink target
    data: bytes | None = None  # heredoc content
    implicit: bool = False  # a directory an unpacked archive only implies (no entry of its own)

    @property
    def type(self) -> EntryType | None:
        return _entry_type(self.stat.st_mode)

    def content_hash(self) -> str:
        """XXH3-128 of the content (regular files and heredocs), the link target for symlinks."""
        h = xxhash.xxh3_128()
        if self.data is not None:
            h.update(self.data)
        elif stat.S_ISREG(self.stat.st_mode) and self.host is not None:
            fd = os.open(self.host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(fd)
            if self.stat.st_ino and (st.st_dev, st.st_ino) != (self.stat.st_dev, self.stat.st_ino):
                os.close(fd)
                raise ImageError(f"'{self.host}' changed while it was being read; refusing to read it")
            with os.fdopen(fd, "rb", buffering=0) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        else:
            h.update(os.fsencode(self.link))
        return h.hexdigest()


@dataclass
class SourceItem:
    """One source after wildcard expansion: a file or directory (and its files), a heredoc..."""

    arg: str  # the source as written
    path: str  # where in the source tree (context-relative, or absolute in an image); name for heredocs
    kind: SourceKind
    files: list[SourceFile] = field(default_factory=list)  # FILE/HEREDOC: one; DIR: the contents
    keep_owner: bool = False  # COPY --from and ADD archives (without --chown) keep the owners
    outside_links: list[tuple[str, str]] = field(default_factory=list)  # ADD archives: (name, target)

    @property
    def base_name(self) -> str:
        return posixpath.basename(self.path.rstrip("/")) or self.path


@dataclass(frozen=True)
class Identity:
    """The owner copied files get: ``--chown`` resolved in the destination image, else root."""

    uid: int = 0
    gid: int = 0


def synthetic_stat(mode: int, size: int, mtime: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    """A stat for content that has no file of its own (heredocs, downloads before they land)."""
    ns = mtime * 1_000_000_000
    return os.stat_result(
        (mode, 0, 0, 1, uid, gid, size, mtime, mtime, mtime, float(mtime), float(mtime),
         float(mtime), ns, ns, ns)
    )


def _entry_type(mode: int) -> EntryType | None:
    if stat.S_ISREG(mode):
        return EntryType.FILE
    if stat.S_ISDIR(mode):
        return EntryType.DIR
    if stat.S_ISLNK(mode):
        return EntryType.SYMLINK
    if stat.S_ISCHR(mode):
        return EntryType.CHAR
    if stat.S_ISBLK(mode):
        return EntryType.BLOCK
    if stat.S_ISFIFO(mode):
        return EntryType.FIFO
    return None


# -- flags ---------------------------------------------------------------------------------


def parse_chmod(text: str, spec: CopySpec) -> Callable[[int, bool], int]:
    """``--chmod``: octal (``0755``) or symbolic (``u+x,g-w``) as BuildKit; returns mode(old, is_dir)."""
    from builder.execute.chmod import ModeSyntaxError, SymbolicMode

    if text.isascii() and text.isdigit():
        if not re.fullmatch(r"[0-7]+", text) or int(text, 8) > 0o7777:
            raise spec.error(
                f"invalid chmod parameter: '{text}'. it should be octal string and between 0 and 07777"
            )
        value = int(text, 8)
        return lambda _old, _is_dir: value
    try:
        return SymbolicMode.parse(text).apply
    except ModeSyntaxError:
        raise spec.error(
            f"invalid --chmod={text}: use an octal mode such as 0755, or symbolic modes such as u+x,g-w"
        ) from None


def _atoi(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def resolve_chown(chown: str, dest_view: RootfsView, spec: CopySpec) -> Identity:
    """``--chown=user[:group]`` against the destination image, as docker's parseChownFlag.

    Numbers are used as they are; names are looked up in the image's
    /etc/passwd and /etc/group; a user without a group also names the group.
    """
    from builder.runtime.users import parse_group, parse_passwd

    parts = chown.split(":")
    if len(parts) > 2 or not parts[0]:
        raise spec.error(f"invalid --chown={chown}: use user, user:group, uid or uid:gid")
    user = parts[0]
    group = parts[1] if len(parts) == 2 and parts[1] else user
    uid = _atoi(user)
    if uid is None:
        passwd = parse_passwd(dest_view.read_text("/etc/passwd") or "")
        found = [u for u in passwd if u.name == user]
        if not found:
            raise spec.error(
                f"--chown={chown}: no user named '{user}' in the image's /etc/passwd"
            )
        uid = found[0].uid
    gid = _atoi(group)
    if gid is None:
        groups = parse_group(dest_view.read_text("/etc/group") or "")
        found_groups = [g for g in groups if g.name == group]
        if not found_groups:
            raise spec.error(
                f"--chown={chown}: no group named '{group}' in the image's /etc/group"
            )
        gid = found_groups[0].gid
    return Identity(uid, gid)


# -- selecting the sources -------------------------------------------------------------------


def _glob_component(pattern: str) -> Callable[[str], bool]:
    """Go's filepath.Match for one path component ('**' is just '*')."""
    collapsed = re.sub(r"\*+", "*", pattern)
    rules = PatternMatcher.from_patterns([collapsed]).rules
    if not rules:
        return lambda name: False
    rule = rules[0]
    return lambda name: rule.match(name)


@dataclass
class _Tree:
    """A source tree: the build context (with its ignore rules) or another stage's root."""

    view: RootfsView
    context: BuildContext | None

    @property
    def is_context(self) -> bool:
        return self.context is not None

    def ignored(self, parts: Parts) -> str | None:
        if self.context is None or not parts:
            return None
        return self.context.ignore.match_rule("/".join(parts))


def _source_parts(arg: str, tree: _Tree, spec: CopySpec) -> Parts:
    """A source argument as components inside the tree; '..' out of the context is refused."""
    if tree.is_context:
        depth = 0
        for comp in split_path(arg):
            depth = depth - 1 if comp == ".." else depth + 1
            if depth < 0:
                raise spec.error(f"forbidden path outside the build context: {arg}")
    return split_path(go_clean("/" + arg))


def _expand_wildcards(parts: Parts, tree: _Tree, ignored: list[tuple[str, str]]) -> list[Parts]:
    """The paths a source with wildcards matches, sorted; matches .dockerignore hides go to ``ignored``."""
    matches: list[Parts] = [()]
    for comp in parts:
        if not _WILDCARD.search(comp):
            matches = [(*m, comp) for m in matches]
            continue
        match = _glob_component(comp)
        nxt: list[Parts] = []
        for m in matches:
            resolved = tree.view.resolve("/".join(m))
            if tree.is_context and resolved.clamped:
                continue  # a directory outside the context has nothing to match
            for name in tree.view.listdir(resolved.parts):
                if not match(name):
                    continue
                rule = tree.ignored((*m, name))
                if rule is None or _brought_along(tree, (*m, name)):
                    nxt.append((*m, name))
                else:
                    ignored.append(("/".join((*m, name)), rule))
        matches = nxt
    return [m for m in matches if tree.view.exists("/".join(m))]


def select_sources(
    spec: CopySpec, source: BuildContext | RootfsView | None
) -> list[SourceItem]:
    """Every local file the COPY reads, grouped by source: wildcards expanded, ignored files gone.

    ADD's remote sources (URLs, git) are returned as items without files;
    heredocs are items of their own.
    """
    items: list[SourceItem] = []
    tree: _Tree | None = None
    if isinstance(source, BuildContext):
        tree = _Tree(source.view, source)
    elif isinstance(source, RootfsView):
        tree = _Tree(source, None)
    try:
        excludes = PatternMatcher.from_patterns(spec.excludes) if spec.excludes else None
    except IgnoreFileError as err:
        raise spec.error(f"invalid --exclude: {err}") from None
    # A wildcard matching nothing is an error only when no other source brings anything
    # (docker's "no source files were specified"); BuildKit skips empty wildcards too.
    unmatched: list[CopyError] | None = [] if len(spec.sources) + len(spec.heredocs) > 1 else None
    for arg in spec.sources:
        if spec.from_ is None:
            from builder.execute.urls import is_git_source, is_url

            remote = SourceKind.GIT if is_git_source(arg) else SourceKind.URL if is_url(arg) else None
            if remote is not None and not spec.is_add:
                what = "a git ref" if remote is SourceKind.GIT else "a URL"
                raise spec.error(f"source can't be {what} for COPY (use ADD)")
            if remote is not None:
                items.append(SourceItem(arg, arg, remote))
                continue
        if tree is None:
            raise spec.error(f"no build context to copy '{arg}' from")
        items.extend(_select_local(arg, tree, spec, excludes, unmatched))
    if unmatched and not items and not spec.heredocs:
        raise unmatched[0]
    now = _now(None)
    for doc in spec.heredocs:
        data = doc.data
        if doc.expand and spec.expand is not None:
            data = spec.expand(data)
        raw = data.encode("utf-8", "surrogateescape")
        st = synthetic_stat(stat.S_IFREG | _HEREDOC_MODE, len(raw), now)
        items.append(SourceItem(doc.name, doc.name, SourceKind.HEREDOC, [SourceFile("", None, st, data=raw)]))
    return items


def _select_parents(
    arg: str, tree: _Tree, spec: CopySpec, excludes: PatternMatcher | None,
    unmatched: list[CopyError] | None = None,
) -> list[SourceItem]:
    """``COPY --parents`` as BuildKit: the part before the first ``/./`` (the whole tree
    without one) is the copy's source, wildcards allowed; the rest is an include pattern
    (``**`` spans directories) below each directory that part matches. Matches keep their
    path below it, and the directories on the way come along with their own metadata.
    """
    parent, sep, pattern = arg.partition("/./")
    if not sep:
        parent, pattern = "/", arg
    pivot = _source_parts(parent, tree, spec)
    pattern_parts = _source_parts(pattern, tree, spec)
    if not pattern_parts:
        raise spec.error(f"--parents needs a path below the pivot in '{arg}'")
    wildcard = any(_WILDCARD.search(c) for c in pivot)
    if not wildcard and not any(_WILDCARD.search(c) for c in pattern_parts):
        # A missing path gets docker's errors; what is there is walked below, not twice.
        _select_local(arg, tree, replace(spec, parents=False), None, walk=False)
    if wildcard:
        try:
            candidates = _expand_wildcards(pivot, tree, [])
        except IgnoreFileError:
            raise spec.error(f"invalid wildcard in the source '{arg}': syntax error in pattern") from None
    else:
        candidates = [pivot]
    include = "/".join(pattern_parts)
    items: list[SourceItem] = []
    for cand in candidates:
        resolved = tree.view.resolve("/".join(cand))
        if tree.is_context and resolved.clamped:
            continue  # a directory outside the context has nothing to copy
        found = tree.view.entry(resolved.parts)
        if found is None or not stat.S_ISDIR(found.stat.st_mode):
            continue
        try:
            files = list(_walk_dir(tree, resolved.parts, excludes, include=include))
        except IgnoreFileError:
            raise spec.error(f"invalid wildcard in the source '{arg}': syntax error in pattern") from None
        if files:
            keep_owner = not tree.is_context and not spec.chown  # COPY --from keeps owners
            items.append(SourceItem(arg, "/".join(cand) or ".", SourceKind.DIR, files, keep_owner=keep_owner))
    if not items:
        error = spec.error(f"no source files were specified (nothing matches '{arg}')")
        if unmatched is None:
            raise error
        unmatched.append(error)
    return items


def _select_local(
    arg: str, tree: _Tree, spec: CopySpec, excludes: PatternMatcher | None,
    unmatched: list[CopyError] | None = None, *, walk: bool = True,
) -> list[SourceItem]:
    """The items of one local source; a wildcard matching nothing goes to ``unmatched`` if given.
    Without ``walk``, a directory's item has no files (the source is only checked)."""
    if spec.parents:
        return _select_parents(arg, tree, spec, excludes, unmatched)
    parts = _source_parts(arg, tree, spec)
    wildcard = any(_WILDCARD.search(c) for c in parts)
    if wildcard:
        hidden: list[tuple[str, str]] = []
        try:
            candidates = _expand_wildcards(parts, tree, hidden)
        except IgnoreFileError:
            raise spec.error(f"invalid wildcard in the source '{arg}': syntax error in pattern") from None
        if excludes is not None:
            # Matched relative to the directory the wildcard starts in, as BuildKit's copy root.
            start = next(i for i, c in enumerate(parts) if _WILDCARD.search(c))
            candidates = [c for c in candidates if not excludes.matches("/".join(c[start:]))]
        if not candidates:
            why = f"nothing matches '{arg}'"
            if hidden:
                path, hiding = hidden[0]
                more = f" and {len(hidden) - 1} more" if len(hidden) > 1 else ""
                why += f"; '{path}'{more} excluded by {hiding}"
            error = spec.error(f"no source files were specified ({why})")
            if unmatched is None:
                raise error
            unmatched.append(error)
            return []
    else:
        candidates = [parts]
    items: list[SourceItem] = []
    for cand in candidates:
        shown = "/".join(cand) or "."
        rule = tree.ignored(cand)
        if rule is not None and not _brought_along(tree, cand):
            raise spec.error(
                f"file not found in build context or excluded by .dockerignore: '{shown}' "
                f"(excluded by {rule})"
            )
        try:
            # An absolute link means the context's root, as docker resolves it; '..' past the
            # root is refused (docker would quietly clamp it).
            resolved = tree.view.resolve("/".join(cand))
        except ImageError as err:
            raise spec.error(f"'{shown}': {err}") from None
        if tree.is_context and resolved.clamped:
            raise spec.error(
                f"'{shown}' is a symlink that points outside the build context; refusing to follow it"
            )
        found = tree.view.entry(resolved.parts)
        if found is None:
            if tree.is_context and resolved.absolute:
                raise spec.error(
                    f"'{shown}' is a symlink to '/{'/'.join(resolved.parts)}', which is not in the build "
                    "context (an absolute link is resolved inside the context, as docker does)"
                )
            if tree.is_context:
                raise spec.error(
                    f"file not found in build context or excluded by .dockerignore: '{shown}'"
                )
            raise spec.error(f"'{'/' + shown.lstrip('/')}' not found in '{spec.from_}'")
        rule = tree.ignored(resolved.parts)
        if rule is not None and not _brought_along(tree, resolved.parts):
            raise spec.error(
                f"file not found in build context or excluded by .dockerignore: '{shown}' "
                f"(through a symlink to '{'/'.join(resolved.parts)}', excluded by {rule})"
            )
        keep_owner = not tree.is_context and not spec.chown  # COPY --from keeps owners
        if stat.S_ISDIR(found.stat.st_mode):
            item = SourceItem(arg, shown, SourceKind.DIR, keep_owner=keep_owner)
            item.files = list(_walk_dir(tree, resolved.parts, excludes)) if walk else []
        else:
            if excludes is not None and not wildcard and excludes.matches(cand[-1] if cand else ""):
                continue
            link = os.readlink(found.host) if stat.S_ISLNK(found.stat.st_mode) else ""
            item = SourceItem(arg, shown, SourceKind.FILE, [SourceFile("", found.host, found.stat, link)],
                              keep_owner=keep_owner)
        items.append(item)
    return items


def _brought_along(tree: _Tree, parts: Parts) -> bool:
    """An ignored directory is still in the context when a "!" rule keeps something inside it."""
    if tree.context is None or not tree.context.ignore.has_exclusions:
        return False
    found = tree.view.entry(tree.view.resolve("/".join(parts)).parts)
    if found is None or not stat.S_ISDIR(found.stat.st_mode):
        return False
    return next(_walk_dir(tree, parts, None), None) is not None


def _walk_dir(
    tree: _Tree, base: Parts, excludes: PatternMatcher | None, *, include: str | None = None
) -> Iterator[SourceFile]:
    """A directory's contents minus ignored and ``--exclude``d paths, parents first.

    As fsutil's walk: a directory no "!" rule can reach inside is not opened;
    one that a "!" rule may re-include is walked, and comes along (before its
    kept children) only when something inside it is kept. With ``include`` (a
    pattern relative to ``base``, ``--parents``), only what it matches is kept,
    and the directories on the way to it come along.
    """
    if tree.context is not None:
        yield from _walk_context_dir(tree.context, base, excludes, include)
        return
    prune = excludes is not None and not excludes.has_exclusions
    included = PatternMatcher.from_patterns([include]) if include is not None else None
    view = tree.view  # a stage or an image: no .dockerignore

    def walk(parts: Parts, prefix: str, pending: list[list[object]]) -> Iterator[SourceFile]:
        for name in view.listdir(parts):
            child = (*parts, name)
            found = view.entry(child)
            if found is None:
                continue
            rel = prefix + name
            st = found.stat
            is_dir = stat.S_ISDIR(st.st_mode)
            link = os.readlink(found.host) if stat.S_ISLNK(st.st_mode) else ""
            entry = SourceFile(rel, found.host, st, link)
            excluded = excludes is not None and excludes.matches(rel)
            left_out = included is not None and not included.matches(rel)
            if excluded or left_out:
                if is_dir and not (excluded and prune) and not (left_out and not _may_match_below(included, rel)):
                    yield from walk(child, rel + "/", [*pending, [entry, False]])
                continue
            for cell in pending:
                if not cell[1]:
                    cell[1] = True
                    yield cell[0]  # type: ignore[misc]  # pending cells are [SourceFile, emitted] lists
            yield entry
            if is_dir:
                yield from walk(child, rel + "/", [])

    yield from walk(base, "", [])


def walk_tree(view: RootfsView, excludes: Sequence[str]) -> list[SourceFile]:
    """Everything in ``view`` (a checkout, say) but what the ``--exclude`` patterns leave out."""
    matcher = PatternMatcher.from_patterns(excludes) if excludes else None
    return list(_walk_dir(_Tree(view, None), (), matcher))


def _may_match_below(matcher: PatternMatcher | None, rel: str) -> bool:
    """Whether a pattern could match something inside directory ``rel`` (else it is not walked)."""
    dir_slash = rel + "/"
    depth = dir_slash.count("/")
    for rule in matcher.rules if matcher is not None else ():
        if rule.depth is not None and rule.depth <= depth:
            continue
        if rule.match_type is MatchType.SUFFIX or rule.literal_prefix.startswith(dir_slash) \
                or dir_slash.startswith(rule.literal_prefix):
            return True
    return False


def _walk_context_dir(
    context: BuildContext, base: Parts, excludes: PatternMatcher | None, pattern: str | None = None
) -> Iterator[SourceFile]:
    """:func:`_walk_dir` for the build context: fsutil's filtered walk (walk_context), fast."""
    prefix = "/".join(base)
    escaped = re.sub(r"([*?\[\]\\])", r"\\\1", prefix)
    if pattern is not None:
        include: list[str] | None = [f"{escaped}/{pattern}" if prefix else pattern]
    else:
        include = [escaped] if prefix else None
    root = os.fspath(context.root)
    cut = len(prefix) + 1 if prefix else 0
    prune_excluded = excludes is not None and not excludes.has_exclusions
    skipped: str | None = None  # an excluded directory nothing inside can come back from
    pending: list[list[object]] = []  # excluded directories a kept child brings along
    for entry in walk_context(context.root, context.ignore, include=include):
        path = entry.path
        if prefix and not path.startswith(prefix + "/"):
            continue
        rel = path[cut:]
        if skipped is not None and rel.startswith(skipped):
            continue
        skipped = None
        st = entry.stat
        host = os.path.join(root, path)  # a str: Path objects cost more than the walk
        link = os.readlink(host) if stat.S_ISLNK(st.st_mode) else ""
        item = SourceFile(rel, host, st, link)
        while pending and not rel.startswith(pending[-1][0].rel + "/"):  # type: ignore[attr-defined]  # pending cells are [SourceFile, emitted] lists
            pending.pop()
        if excludes is not None and excludes.matches(rel):
            if entry.is_dir:
                if prune_excluded:
                    skipped = rel + "/"
                else:
                    pending.append([item, False])
            continue
        for cell in pending:
            if not cell[1]:
                cell[1] = True
                yield cell[0]  # type: ignore[misc]  # pending cells are [SourceFile, emitted] lists
        yield item


def iter_source_files(
    spec: CopySpec, source: BuildContext | RootfsView | None
) -> Iterator[tuple[SourceItem, SourceFile]]:
    """Every (item, file) the COPY reads, in order: what the cache key hashes."""
    for item in select_sources(spec, source):
        for f in item.files:
            yield item, f


def copy_sources_digest(
    spec: CopySpec,
    source: BuildContext | RootfsView | None,
    *,
    content_hash: Callable[[SourceFile], str] | None = None,
) -> str:
    """A sha256 over exactly the files COPY reads: path, type, mode, size, link, content.

    Owners count only where the copy keeps them (``COPY --from`` without
    ``--chown``, ADD archives' own entries): a context file becomes root's (or
    the --chown user's, which is part of the instruction), so two checkouts
    by different users share the key. mtimes are left out (docker's cache
    ignores them too). URL and git sources contribute their address,
    ``--checksum`` and ``--keep-git-dir`` only. ``content_hash`` replaces
    :meth:`SourceFile.content_hash` (e.g. with a stat-cached one).
    """
    hash_of = content_hash or SourceFile.content_hash
    h = hashlib.sha256()
    with _user_errors(spec):
        return _sources_digest(spec, source, hash_of, h)


def _sources_digest(
    spec: CopySpec,
    source: BuildContext | RootfsView | None,
    hash_of: Callable[[SourceFile], str],
    h: hashlib._Hash,
) -> str:
    for item in select_sources(spec, source):
        h.update(f"item\0{item.kind.value}\0{item.arg}\0{item.path}\0\n".encode(  # (a field once held --parents paths)
            "utf-8", "surrogateescape"))
        if item.kind in (SourceKind.URL, SourceKind.GIT):
            h.update(f"remote\0{spec.checksum or ''}\0{spec.keep_git_dir}\n".encode())
        for f in item.files:
            st = f.stat
            kind = f.type.name if f.type else "OTHER"
            owner = f"{st.st_uid}:{st.st_gid}" if item.keep_owner else "-"
            device = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if kind in ("CHAR", "BLOCK") else ""
            h.update(
                f"{f.rel}\0{kind}\0{stat.S_IMODE(st.st_mode):o}\0{owner}\0"
                f"{st.st_size if kind == 'FILE' else 0}\0{f.link}\0{device}\0".encode("utf-8", "surrogateescape")
            )
            h.update(hash_of(f).encode() if kind == "FILE" else b"-")
            h.update(b"\n")
    return "sha256:" + h.hexdigest()


# -- planning the layer ----------------------------------------------------------------------


@dataclass
class _Planned:
    """One layer entry to write; content from ``host`` or ``data``."""

    entry: TarEntry
    host: str | Path | None = None
    data: bytes | None = None
    group: int = -1  # hardlinks are kept within one source item only
    inode: tuple[int, int] | None = None
    xattrs_from: str | Path | None = None
    drop_caps: bool = False  # chown(2) drops file capabilities too
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) seen when the source was selected


def _now(source_date_epoch: int | None) -> int:
    now = int(time.time())
    if source_date_epoch is not None:
        return min(now, source_date_epoch)
    return now


@dataclass
class _Planner:
    """Plans a COPY/ADD layer: the entries to write, their owners and modes, parents first."""

    spec: CopySpec
    dest_view: RootfsView
    identity: Identity
    chmod: Callable[[int, bool], int] | None
    now: int
    entries: dict[Parts, _Planned] = field(default_factory=dict)

    def dest_exists_dir(self, parts: Parts) -> bool:
        planned = self.entries.get(parts)
        if planned is not None:
            return planned.entry.type is EntryType.DIR
        found = self.dest_view.entry(parts)
        return found is not None and stat.S_ISDIR(found.stat.st_mode)

    def ensure_dirs(self, parts: Parts, owner: Identity | None, *, top: Identity | None = None) -> None:
        """Entries for ``parts`` and its ancestors: existing ones as they are, new ones 0755.

        New ones are made as docker's mkdir(2) makes them: under a setgid directory they are
        setgid too (a chown keeps that on a directory), and when docker does not chown them
        (``owner`` None: COPY --from a file, keeping owners) they are root's with the group
        a setgid parent hands down.
        """
        for i in range(1, len(parts) + 1):
            sub = parts[:i]
            if sub in self.entries:
                continue
            # BuildKit merges a --link copy onto the image only without --chmod (its MergeOp
            # condition); with --chmod it is a plain copy, and the parents stay the image's.
            found = None if self.spec.link and self.spec.chmod is None else self.dest_view.entry(sub)
            name = "/".join(sub)
            if found is not None and not stat.S_ISDIR(found.stat.st_mode):
                raise self.spec.error(f"cannot copy into '/{name}': it is not a directory in the image")
            if found is not None:
                st = found.stat
                self.entries[sub] = _Planned(
                    TarEntry(name, EntryType.DIR, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0,
                             st.st_mtime_ns // 1_000_000_000),
                    xattrs_from=found.host, ident=(st.st_dev, st.st_ino),
                )
                continue
            who = top if (top is not None and i == len(parts)) else owner
            parent = self.entries.get(sub[:-1]) if i > 1 else None  # planned just above, when there is one
            setgid = parent is not None and bool(parent.entry.mode & stat.S_ISGID)
            uid, gid = (who.uid, who.gid) if who is not None else (0, parent.entry.gid if setgid and parent else 0)
            self.entries[sub] = _Planned(
                TarEntry(name, EntryType.DIR, _DIR_MODE | (stat.S_ISGID if setgid else 0), uid, gid, 0, self.now)
            )

    def add_file(self, parts: Parts, f: SourceFile, group: int, keep_owner: bool, *, unpacked: bool = False) -> None:
        """Plan one file; ``unpacked`` (an ADD archive's entry) keeps its mode, as BuildKit
        unpacks without --chmod."""
        st = f.stat
        kind = f.type
        if kind is None:
            return  # sockets have no place in a layer
        is_dir = kind is EntryType.DIR
        mode = stat.S_IMODE(st.st_mode)
        if kind is EntryType.SYMLINK:
            mode = 0o777
        elif self.chmod is not None and not unpacked:
            mode = self.chmod(mode, is_dir)
        uid, gid = (st.st_uid, st.st_gid) if keep_owner else (self.identity.uid, self.identity.gid)
        chowned = not keep_owner and kind is EntryType.FILE
        if chowned and self.chmod is None and not unpacked:
            # docker chowns the copy, and chown(2) clears setuid (and setgid with group exec);
            # BuildKit's unpack sets an archive entry's mode after its owner, so it keeps them.
            mode &= ~stat.S_ISUID
            if mode & stat.S_IXGRP:
                mode &= ~stat.S_ISGID
        entry = TarEntry(
            "/".join(parts), kind, mode, uid, gid,
            st.st_size if kind is EntryType.FILE else 0,
            st.st_mtime_ns // 1_000_000_000 if f.data is None else self.now,
            f.link,
            os.major(st.st_rdev) if kind in (EntryType.CHAR, EntryType.BLOCK) else 0,
            os.minor(st.st_rdev) if kind in (EntryType.CHAR, EntryType.BLOCK) else 0,
        )
        inode = (st.st_dev, st.st_ino) if not is_dir and st.st_nlink > 1 and f.host else None
        # A file replacing a planned directory drops what was planned below it.
        old = self.entries.get(parts)
        if old is not None and old.entry.type is EntryType.DIR and not is_dir:
            for key in [k for k in self.entries if k[: len(parts)] == parts and k != parts]:
                del self.entries[key]
        self.entries[parts] = _Planned(
            entry, f.host if f.data is None else None, f.data, group, inode,
            f.host if f.data is None and kind is not EntryType.SYMLINK else None, chowned,
            (st.st_dev, st.st_ino) if st.st_ino else None,  # synthetic stats (downloads) have none
        )


def _dest_parts(spec: CopySpec, dest_view: RootfsView) -> tuple[Parts, bool]:
    """The resolved dest path inside the image, and whether it was written as a directory."""
    dest = spec.dest  # an empty one (an unset variable) is the WORKDIR, as in docker and BuildKit
    # Cleaned as a string first ("/link/../x" is "/x"), then resolved in the image, as docker does.
    full = go_clean(dest if dest.startswith("/") else posixpath.join(spec.workdir or "/", dest))
    is_dir = dest.endswith("/") or dest == "."  # docker: "/x/." names the file /x
    resolved = dest_view.resolve(full)
    return resolved.parts, is_dir


def plan_copy(
    spec: CopySpec,
    items: Sequence[SourceItem],
    dest_view: RootfsView,
    *,
    now: int,
) -> dict[Parts, _Planned]:
    """Where every selected file lands, plus the directories around them."""
    count = len(items)
    if count > 1 and not spec.dest.endswith("/"):
        raise spec.error(MULTI_SOURCE_ERROR.format(cmd=spec.command))
    chmod = parse_chmod(spec.chmod, spec) if spec.chmod else None
    identity = resolve_chown(spec.chown, dest_view, spec) if spec.chown else Identity()
    dest, dest_is_dir = _dest_parts(spec, dest_view)
    planner = _Planner(spec, dest_view, identity, chmod, now)
    root = Identity()
    for group, item in enumerate(items):
        if item.kind in (SourceKind.DIR, SourceKind.ARCHIVE, SourceKind.GIT):
            base = dest
            if item.kind is SourceKind.ARCHIVE:
                planner.ensure_dirs(base, identity)  # BuildKit's MkdirAll(dest, 0755, chown)
                _plan_archive(planner, base, item, group)
                continue
            planner.ensure_dirs(base, root, top=identity)
            for f in item.files:
                planner.add_file((*base, *split_path(f.rel)), f, group, item.keep_owner)
            continue
        target = (*dest, item.base_name) if dest_is_dir or planner.dest_exists_dir(dest) else dest
        if not target:
            raise spec.error(f"cannot copy '{item.arg}' over the root directory")
        planner.ensure_dirs(target[:-1], None if item.keep_owner else identity)
        for f in item.files:
            planner.add_file(target, f, group, item.keep_owner)
    for parts in planner.entries:
        problem = path_too_long(parts)
        if problem is not None:
            raise spec.error(problem)
    return planner.entries


def _plan_archive(planner: _Planner, base: Parts, item: SourceItem, group: int) -> None:
    """docker's Unpack: the archive's own entries replace what is there (a directory entry only
    updates an existing directory), but the parents it merely implies are made only where
    nothing is: an existing directory keeps its mode and owner, and a symlink to one is
    followed (``ADD rootfs.tar /`` onto a merged-/usr image writes through /lib -> usr/lib)."""
    placed: dict[str, Parts] = {"": base}
    for f in item.files:  # parents before children
        parent, _, name = f.rel.rpartition("/")
        where = (*placed.get(parent, (*base, *split_path(parent))), name)
        if f.implicit:
            there = planner.dest_view.resolve("/".join(where)).parts if where not in planner.entries else where
            exists = there in planner.entries or planner.dest_view.entry(there) is not None
            if exists and not planner.dest_exists_dir(there):
                raise planner.spec.error(f"cannot unpack '{item.path}' into '/{'/'.join(there)}': it is not "
                                         "a directory in the image")
            planner.ensure_dirs(there, Identity())
            placed[f.rel] = there
            continue
        planner.add_file(where, f, group, item.keep_owner, unpacked=True)
        placed[f.rel] = where
    for name, target in item.outside_links:
        _plan_outside_link(planner, base, item, group, name, target)


def _plan_outside_link(planner: _Planner, base: Parts, item: SourceItem, group: int, name: str,
                       target: str) -> None:
    """A hardlink in the archive to a file the destination already has (docker links it there):
    the layer carries that file again and the link to it, as a copy-up would."""
    there = planner.dest_view.resolve("/".join((*base, *split_path(target))), follow_last=False).parts
    found = planner.dest_view.entry(there)
    if found is None or not stat.S_ISREG(found.stat.st_mode):
        what = "does not exist" if found is None else "is not a regular file"
        raise planner.spec.error(f"unpacking '{item.path}': '{name}' is a hardlink to '{target}', which "
                                 f"{what} in the archive or at '/{'/'.join(there)}'")
    parent, _, leaf = name.strip("/").rpartition("/")
    where = (*planner.dest_view.resolve("/".join((*base, *split_path(parent)))).parts, leaf)
    planner.ensure_dirs(where[:-1], Identity())
    source = SourceFile("/".join(there), found.host, found.stat)
    for parts in (there, where):
        if parts not in planner.entries:
            planner.add_file(parts, source, group, keep_owner=True, unpacked=True)
        planner.entries[parts].inode = (found.stat.st_dev, found.stat.st_ino)  # one file, two names


def _sort_key(parts: Parts) -> tuple[bytes, ...]:
    return tuple(os.fsencode(p) for p in parts)


def _open_checked(p: _Planned) -> int | None:
    """Open the file or directory an entry copies, refusing one that is no longer the same inode.

    Paths were resolved (inside the source tree) when the sources were
    selected; a context changed since then, e.g. a directory swapped for a
    symlink to /etc, must not make pybuild read outside it.
    """
    kind = p.entry.type
    if p.host is None and p.xattrs_from is None:
        return None
    if kind is EntryType.DIR:
        flags = os.O_RDONLY | os.O_DIRECTORY
    elif kind is EntryType.FILE:
        flags = os.O_RDONLY | os.O_NONBLOCK
    else:
        return None  # symlinks, devices and fifos are described, never opened
    path = p.host if p.host is not None else p.xattrs_from
    assert path is not None
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if p.ident is not None and (st.st_dev, st.st_ino) != p.ident:
        os.close(fd)
        raise ImageError(f"'{path}' changed while it was being copied; refusing to copy it")
    return fd


def _fd_xattrs(fd: int, drop_caps: bool) -> tuple[tuple[str, bytes], ...]:
    """The xattrs a copy keeps: file capabilities only (STEP_LAYER_XATTRS), unless chowned."""
    try:
        names = os.listxattr(fd)
    except OSError:
        return ()
    out = []
    for key in sorted(names):
        if key not in STEP_LAYER_XATTRS or (drop_caps and key == "security.capability"):
            continue
        try:
            out.append((key, os.getxattr(fd, key)))
        except OSError:
            continue
    return tuple(out)


def write_planned(
    entries: dict[Parts, _Planned], out: BinaryIO, *, source_date_epoch: int | None = None
) -> LayerStats:
    """The layer tar: parents before children, names sorted by their bytes."""
    from builder.layers.tarwriter import TarStreamWriter

    writer = TarStreamWriter(out, source_date_epoch=source_date_epoch)
    with writer:  # an error (or a cancel) stops the writer's hashing thread
        first: dict[tuple[int, int, int], str] = {}
        for parts in sorted(entries, key=_sort_key):
            p = entries[parts]
            entry = p.entry
            if p.inode is not None:
                key = (p.group, *p.inode)
                target = first.get(key)
                if target is not None:
                    writer.add(replace(entry, type=EntryType.HARDLINK, size=0, linkname=target))
                    continue
                first[key] = entry.name
            if p.data is not None:
                writer.add(entry, io.BytesIO(p.data))
                continue
            fd = _open_checked(p)
            if fd is None:
                writer.add(entry)
                continue
            try:
                xattrs = _fd_xattrs(fd, p.drop_caps) if p.xattrs_from is not None else ()
                if xattrs:
                    entry = replace(entry, xattrs=xattrs)
                if entry.type is EntryType.FILE:
                    with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                        writer.add(entry, f)
                else:
                    writer.add(entry)
            finally:
                os.close(fd)
    return writer.close()


def copy_layer(
    spec: CopySpec,
    *,
    source: BuildContext | RootfsView | None,
    dest_view: RootfsView,
    out: BinaryIO,
    source_date_epoch: int | None = None,
    workdir: Path | None = None,
    git: GitSources | None = None,
    fetches: UrlFetches | None = None,
    check: Callable[[], None] | None = None,
) -> LayerStats:
    """Write the layer tar of one COPY/ADD to ``out`` and return its DiffID and size.

    ``source`` is the build context, or the RootfsView of ``--from``'s stage or
    image; ``dest_view`` is the stage's file system before this step. ADD
    downloads, clones and unpacks into temp dirs under ``workdir`` (removed
    before returning); ``git`` keeps checkouts of git sources between builds; ``fetches``
    holds the URLs that keying the step downloaded; ``check`` may raise to stop unpacking an
    archive (a cancelled build).
    """
    now = _now(source_date_epoch)
    with ExitStack() as stack, _user_errors(spec):
        items = select_sources(spec, source)
        if spec.is_add:
            from builder.execute.add import prepare_add_items

            # named by the pid, as every temp of the store: a concurrent sweep keeps a live one
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-add-",
                                                                            dir=workdir)))
            items = prepare_add_items(spec, items, scratch, git=git, fetches=fetches, check=check)
        elif spec.checksum:
            raise spec.error("checksum can't be specified for COPY")
        entries = plan_copy(spec, items, dest_view, now=now)
        return write_planned(entries, out, source_date_epoch=source_date_epoch)


@contextmanager
def _user_errors(spec: CopySpec) -> Iterator[None]:
    """File-system trouble while copying, as one message naming the Dockerfile line."""
    try:
        yield
    except CopyError:
        raise
    except ImageError as err:
        raise spec.error(str(err)) from None
    except IgnoreFileError as err:  # an --exclude pattern that only fails when it is used
        raise spec.error(f"invalid --exclude: {err}") from None
    except FileNotFoundError as err:
        raise spec.error(f"'{err.filename}' disappeared while it was copied") from None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:  # a deep tree: the host path outgrew PATH_MAX
            tail = os.fsdecode(err.filename or "")[-60:]
            raise spec.error(f"a path is longer than Linux allows ({NAME_MAX} bytes a name, {PATH_MAX} a "
                             f"path): '...{tail}'") from None
        if err.filename:
            raise spec.error(f"cannot read '{err.filename}': {err.strerror or err}") from None
        raise spec.error(f"writing the layer: {err.strerror or err}") from None
