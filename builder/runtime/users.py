"""USER resolution against the container's own /etc/passwd and /etc/group, as docker does it.

A port of the rules of runc's ``user.GetExecUser`` (which docker and BuildKit
use), so that ``USER app``, ``USER 1000``, ``USER app:staff`` and
``USER 1000:50`` give the same uid, gid, supplementary groups and HOME as
under docker, and a missing name fails with docker's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import UserNotFoundError
from builder.runtime.rootfs import read_in_root

MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class ExecUser:
    """The identity a container process runs as."""

    uid: int = 0
    gid: int = 0
    sgids: tuple[int, ...] = ()
    home: str = "/"

    @property
    def additional_gids(self) -> tuple[int, ...]:
        """The groups a container process gets: docker (moby's getUser) puts the primary one first."""
        return tuple(dict.fromkeys((self.gid, *self.sgids)))


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: optional sign and decimal digits, nothing else."""
    body = text[1:] if text[:1] in "+-" else text
    return int(text) if body.isascii() and body.isdigit() else None


def _fields(line: str, count: int) -> list[str]:
    parts = line.split(":")
    return (parts + [""] * count)[:count]


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _pw, uid, gid, _gecos, home, _shell = _fields(line, 7)
        entries.append(PasswdEntry(name, _atoi(uid) or 0, _atoi(gid) or 0, home))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, _pw, gid, members = _fields(line, 4)
        entries.append(GroupEntry(name, _atoi(gid) or 0, tuple(m for m in members.split(",") if m)))
    return entries


def _check_range(value: int) -> int:
    if not 0 <= value <= MAX_ID:
        raise UserNotFoundError(f"uids and gids must be in range 0-{MAX_ID}")
    return value


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ExecUser:
    """Resolve a docker USER string; ``passwd``/``group`` are the files' text, None if absent."""
    user_arg, group_arg = _fields(spec, 2)
    uid_arg, gid_arg = _atoi(user_arg), _atoi(group_arg)
    users = parse_passwd(passwd or "")
    if user_arg == "":
        matches = [u for u in users if u.uid == 0]
    elif uid_arg is not None:
        matches = [u for u in users if u.uid == uid_arg]
    else:
        matches = [u for u in users if u.name == user_arg]

    uid, gid, home, matched_name = 0, 0, "/", ""
    if matches:
        uid, gid, home, matched_name = matches[0].uid, matches[0].gid, matches[0].home, matches[0].name
    elif user_arg:
        if uid_arg is None:
            raise UserNotFoundError(
                f"unable to find user {user_arg}: no matching entries in passwd file"
            )
        uid = _check_range(uid_arg)

    sgids: tuple[int, ...] = ()
    if group_arg or matched_name:
        groups = parse_group(group or "")
        if group_arg:
            if gid_arg is not None:
                found = [g for g in groups if g.gid == gid_arg]
            else:
                found = [g for g in groups if g.name == group_arg]
            if found:
                gid = found[0].gid
            elif gid_arg is None:
                raise UserNotFoundError(
                    f"unable to find group {group_arg}: no matching entries in group file"
                )
            else:
                gid = _check_range(gid_arg)
        else:
            sgids = tuple(g.gid for g in groups if matched_name in g.members)
    return ExecUser(uid=uid, gid=gid, sgids=sgids, home=home)


def lookup_user(rootfs: Path, spec: str) -> ExecUser:
    """Resolve ``spec`` from the passwd and group files of a mounted root file system."""
    return resolve_user(spec, read_in_root(rootfs, "/etc/passwd"), read_in_root(rootfs, "/etc/group"))
