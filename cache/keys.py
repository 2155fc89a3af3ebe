"""Cache keys: what a step depends on, hashed; and the same inputs kept to explain a miss.

A step's key hashes its parent's key (the chain holds the base image digest
and every earlier step), the instruction after expansion (source lines and
comments excluded: moving a step does not change it), the build args it can
see (proxy args excluded, as BuildKit does) and, for COPY/ADD and RUN bind
mounts, exactly the files read: path, type, mode, link target and content
hash, never mtime, so a ``touch`` or a fresh checkout does not miss. Owners of
context files are left out because COPY from the context writes 0:0 (or the
``--chown`` owner) whatever they are; sources from stages and images count
by the stage's key or the image's digest instead of their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat as stat_
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from builder.frontend.instructions import Instruction

# Raised when the same inputs make a different result (a fix to what a step writes), so no store
# or shared cache hands out a layer the old code made. v2: WORKDIR's layer keeps the directories
# above it as they were; ADD <url> without Last-Modified dates the file at the epoch. v3: --chmod's
# X counts with '=' and '-' too (u=rwX,go=rX made copied directories 0644); ADD <url> names the
# file from the URL path only (never Content-Disposition), __unnamed__ when the path names none.
KEY_VERSION = "pybuild-cache-v3"


def _scrub(value: Any) -> Any:
    """The instruction's JSON without what does not change its result (lines, comments)."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()
                if k not in ("start_line", "end_line", "comment", "mount_specs")}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def instruction_text(ins: Instruction) -> str:
    """The expanded instruction as canonical JSON: the part of the key a Dockerfile edit changes."""
    return json.dumps(_scrub(ins.to_json()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class StepInputs:
    """Everything one step's cache key is made of."""

    parent: str
    instruction: str  # canonical JSON of the expanded instruction
    display: str  # the instruction as written, for people
    args: dict[str, str] = field(default_factory=dict)
    files: list[list[str]] = field(default_factory=list)  # [path, "type mode size link hash"]
    sources: dict[str, str] = field(default_factory=dict)  # stage keys, image digests, URL validators
    stage_names: dict[str, str] = field(default_factory=dict)  # source -> its stage's name: not keyed, to explain

    def key(self) -> str:
        h = hashlib.sha256(KEY_VERSION.encode())
        for part in (self.parent, self.instruction,
                     json.dumps(self.args, sort_keys=True), json.dumps(self.sources, sort_keys=True)):
            h.update(b"\0" + part.encode("utf-8", "surrogateescape"))
        for path, line in self.files:
            h.update(b"\0" + path.encode("utf-8", "surrogateescape") + b"\x01" + line.encode())
        return "sha256:" + h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        out = {"parent": self.parent, "instruction": self.instruction, "display": self.display,
               "args": self.args, "files": self.files, "sources": self.sources}
        if self.stage_names:  # kept so that a later miss can say "stage a -> stage b"
            out["stage_names"] = self.stage_names
        return out


def base_key(description: str, digest: str) -> str:
    """The key a stage starts from: its base image's manifest digest (or scratch, or a stage's key)."""
    return "sha256:" + hashlib.sha256(f"{KEY_VERSION}\0base\0{description}\0{digest}".encode()).hexdigest()


_KINDS = ((stat_.S_ISDIR, "dir"), (stat_.S_ISLNK, "link"), (stat_.S_ISREG, "file"), (stat_.S_ISFIFO, "fifo"),
          (stat_.S_ISCHR, "char"), (stat_.S_ISBLK, "block"), (stat_.S_ISSOCK, "socket"))


def file_line(mode: int, size: int, link: str, content: str, owner: str = "", *, rdev: int = 0,
              xattrs: str = "", hardlink_to: str = "") -> str:
    """One file of a step's key: everything of it that reaches the layer (or the step's view)."""
    kind = next((name for test, name in _KINDS if test(mode)), "other")
    line = f"{kind} {stat_.S_IMODE(mode):o} {size if kind == 'file' else 0} {link} {content} {owner}".rstrip()
    if kind in ("char", "block"):
        line += f" dev={os.major(rdev)},{os.minor(rdev)}"
    if xattrs:
        line += f" xattrs={xattrs}"
    if hardlink_to:
        line += f" hardlink={hardlink_to}"
    return line


def explain(old: Mapping[str, Any], new: StepInputs, *, limit: int = 5) -> str:
    """Why ``new`` missed, compared with the closest earlier build of the same step."""
    if old.get("parent") != new.parent:
        if new.sources.get("base") and old.get("sources", {}).get("base") != new.sources.get("base"):
            if "base" in new.stage_names:  # that stage's own misses say why
                return _stage_changed("base", new.stage_names["base"], old)
            return (f"base image changed: {old.get('sources', {}).get('base', '?')} -> "
                    f"{new.sources['base']}")
        return "an earlier step changed"
    if old.get("instruction") != new.instruction and old.get("display") != new.display:
        return f"instruction changed: `{old.get('display')}` -> `{new.display}`"
    old_args: dict[str, str] = old.get("args", {})
    changed = [_arg_changed(k, old_args.get(k), new.args.get(k))
               for k in sorted(set(old_args) | set(new.args)) if old_args.get(k) != new.args.get(k)]
    if changed:
        return "; ".join(changed[:limit])
    if old.get("instruction") != new.instruction:
        return f"variables in `{new.display}` expand differently"
    old_sources: dict[str, str] = old.get("sources", {})
    changed = [_stage_changed(k, new.stage_names[k], old) if k in new.stage_names and k in old_sources
               else f"{k} changed: {old_sources.get(k, '(not set)')} -> {new.sources.get(k, '(not set)')}"
               for k in sorted(set(old_sources) | set(new.sources)) if old_sources.get(k) != new.sources.get(k)]
    if changed:
        return "; ".join(changed[:limit])
    before = {p: line for p, line in old.get("files", [])}
    after = {p: line for p, line in new.files}
    notes = _file_changes(before, after)
    if notes:
        more = f" (and {len(notes) - limit} more)" if len(notes) > limit else ""
        return ", ".join(notes[:limit]) + more
    return "no earlier build of this step to compare with"


def _arg_changed(name: str, before: str | None, after: str | None) -> str:
    """A build arg's change; the values only when its name does not say it is a secret: a CI
    log showed both the old and the new token of ``--build-arg GITHUB_TOKEN=...``."""
    from builder.frontend.checks import looks_secret

    if looks_secret(name):
        return f"build arg {name} changed (values not shown: the name says it is a secret)"
    return f"build arg {name} changed: {before!r} -> {after!r}"


def _stage_changed(source: str, stage: str, old: Mapping[str, Any]) -> str:
    """A stage of this build that a step reads changed: its key is no news to a reader, its name
    is; or the step now reads another stage (or an image) than before."""
    where = {"base": "FROM", "from": "--from"}.get(source, source)
    before = (old.get("stage_names") or {}).get(source)
    if before is not None and before.lower() != stage.lower():
        return f"{where} changed: stage {before} -> stage {stage}"
    was = str(old.get("sources", {}).get(source, ""))
    if before is None and was and not was.startswith("stage "):  # an image before
        return f"{where} changed: {was.removeprefix('image ')} -> stage {stage}"
    return f"stage {stage} changed ({where})"


def _file_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    notes = []
    for path in sorted(set(before) | set(after)):
        if path not in before:
            notes.append(f"file added: {path}")
        elif path not in after:
            notes.append(f"file removed: {path}")
        elif before[path] != after[path]:
            notes.append(f"file changed ({_what_changed(before[path], after[path])}): {path}")
    return notes


# In a file_line: the content hash (XXH3-128) and a bind mount's owner, each a token of its own.
_CONTENT = re.compile(r"(?<= )[0-9a-f]{32}(?= |$)")
_OWNER = re.compile(r"(?<= )\d+:\d+(?= |$)")


def _what_changed(old: str, new: str) -> str:
    """Which part of a :func:`file_line` differs (a link target may hold spaces: no positional
    split past the mode, whose fields come first)."""
    o, n = old.split(" ", 2), new.split(" ", 2)
    if o[0] != n[0]:
        return f"type, {o[0]} -> {n[0]}"
    found = [(m.group() if (m := rx.search(line)) else "") for rx in (_CONTENT, _OWNER) for line in (old, new)]
    if found[0] != found[1]:
        return "content"
    if o[1] != n[1]:
        return f"mode, {o[1]} -> {n[1]}"
    if found[2] != found[3]:
        return f"owner, {found[2] or '?'} -> {found[3] or '?'}"
    if o[0] == "link":
        return "link target"
    return "metadata"


def visible_args(args: Mapping[str, str | None], excluded: Iterable[str]) -> dict[str, str]:
    skip = set(excluded)
    return {k: v for k, v in sorted(args.items()) if v is not None and k not in skip}
