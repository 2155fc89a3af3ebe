"""Typed instructions: parser nodes given meaning, one small frozen dataclass per instruction.

Modelled on BuildKit's ``frontend/dockerfile/instructions`` package: each class's
docstring is its syntax, it holds exactly its parsed fields and its source
location, and it is made from a :class:`~builder.frontend.ast.Node` by
:func:`parse_instruction`. Behaviour is a property of the type: an instruction
whose arguments docker expands implements ``expand(expander) -> Self`` and
returns a new value (see :class:`Expandable`); RUN, CMD and ENTRYPOINT do not
(their environment is applied by the shell at run time), except for the values
of RUN's ``--mount`` options, as in BuildKit.

Errors are :class:`~builder.errors.InstructionError` naming file:line and quoting
the line, with BuildKit's messages where BuildKit has one.
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from builder.errors import DockerfileError, ExpansionError, InstructionError, SourceLocation
from builder.frontend.ast import Heredoc, Node, ParsedDockerfile
from builder.frontend.suggest import levenshtein, unknown_instruction_error

_E = TypeVar("_E", bound=DockerfileError)

# --------------------------------------------------------------------------- expansion


class Expander(Protocol):
    """What an instruction needs to expand its arguments; bound to one scope's variables."""

    def word(self, text: str) -> str:
        """Expand one word, removing quotes (BuildKit's ProcessWord)."""
        ...

    def words(self, text: str) -> list[str]:
        """Expand and split into words (BuildKit's ProcessWords)."""
        ...

    def raw(self, text: str) -> str:
        """Expand without treating quotes as special (heredoc bodies of COPY/ADD)."""
        ...


@runtime_checkable
class Expandable(Protocol):
    """An instruction whose arguments docker expands before using them."""

    def expand(self, expander: Expander) -> Self: ...


# --------------------------------------------------------------------------- base


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Common part of every instruction: where it was written and how."""

    keyword: ClassVar[str] = ""
    location: SourceLocation
    original: str = field(default="", compare=False)  # the logical line as written
    source: Node | None = field(default=None, compare=False, repr=False)
    first_line: str = field(default="", compare=False, repr=False)  # physical line, for quotes

    @property
    def start_line(self) -> int:
        return self.location.start_line

    @property
    def end_line(self) -> int:
        return self.location.end_line or self.location.start_line

    @property
    def name(self) -> str:
        """The keyword in upper case, as messages show it (``COPY``)."""
        return self.keyword.upper()

    def error(self, message: str, cls: type[_E] = InstructionError) -> _E:  # type: ignore[assignment]  # mypy cannot type a TypeVar parameter's default
        """An error of class ``cls`` at this instruction's line, quoting it."""
        line = self.first_line or (self.original.splitlines()[0] if self.original else None)
        return cls(message, self.location, source_line=line)

    def to_json(self) -> dict[str, Any]:
        """A plain-data view for ``pybuild parse --format json`` (tools and editors)."""
        out: dict[str, Any] = {
            "instruction": self.name,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "original": self.original,
        }
        for f in fields(self):
            if f.name in ("location", "original", "source", "first_line"):
                continue
            out[f.name.rstrip("_")] = _plain(getattr(self, f.name))  # from_ -> "from"
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Instruction):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name.rstrip("_"): _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class KeyValue:
    """One ``key=value`` of ENV or LABEL; ``no_delim`` marks the legacy ``ENV key value`` form."""

    key: str
    value: str
    no_delim: bool = False


@dataclass(frozen=True)
class ArgSpec:
    """One ``name[=default]`` of an ARG line; ``comment`` is its description comment, if any."""

    key: str
    default: str | None = None
    comment: str = ""


@dataclass(frozen=True)
class SourceContent:
    """A heredoc used as a COPY/ADD source: a file named ``path`` holding ``data``."""

    path: str
    data: str
    expand: bool = True


@dataclass(frozen=True)
class ShellFile:
    """A heredoc attached to RUN/CMD: the body the shell reads."""

    name: str
    data: str
    chomp: bool = False
    expand: bool = True


class MountType(enum.Enum):
    BIND = "bind"
    CACHE = "cache"
    TMPFS = "tmpfs"
    SECRET = "secret"
    SSH = "ssh"


class CacheSharing(enum.Enum):
    SHARED = "shared"
    PRIVATE = "private"
    LOCKED = "locked"


class NetworkMode(enum.Enum):
    DEFAULT = "default"
    NONE = "none"
    HOST = "host"


class SecurityMode(enum.Enum):
    SANDBOX = "sandbox"
    INSECURE = "insecure"


@dataclass(frozen=True)
class Mount:
    """``RUN --mount=type=bind|cache|tmpfs|secret|ssh[,option=value...]``.

    Options whose value still holds a variable are left unset until the
    instruction is expanded (BuildKit parses mounts again after expansion).
    """

    type: MountType = MountType.BIND
    target: str | None = None
    source: str | None = None
    from_: str | None = None
    readonly: bool = True
    id: str | None = None
    sharing: CacheSharing | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None  # tmpfs size limit in bytes
    required: bool = False
    env: str | None = None  # secret: also expose the value as this environment variable


@dataclass(frozen=True)
class Device:
    """``RUN --device=name[,required]``: a CDI device for the step."""

    name: str
    required: bool = False


@dataclass(frozen=True)
class Health:
    """A healthcheck as the image config stores it; durations in nanoseconds (0 = default)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


# --------------------------------------------------------------------------- instructions


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    """FROM [--platform=<platform>] <image> [AS <name>]"""

    keyword: ClassVar[str] = "from"
    base_name: str
    stage_name: str | None = None  # lower-cased, as BuildKit stores it
    platform: str | None = None
    comment: str = ""  # the stage's description comment, if any

    def expand(self, expander: Expander) -> Self:
        platform = expander.word(self.platform) if self.platform else self.platform
        return replace(self, base_name=expander.word(self.base_name), platform=platform)


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    """RUN [--mount=<spec>...] [--network=default|none|host] [--security=sandbox|insecure] [--device=<name>...] <command> | ["exe", "arg"...]"""

    keyword: ClassVar[str] = "run"
    command: tuple[str, ...]
    prepend_shell: bool = True  # shell form: run through the stage's SHELL
    files: tuple[ShellFile, ...] = ()
    mounts: tuple[Mount, ...] = ()
    mount_specs: tuple[str, ...] = ()  # the --mount values as written, parsed again after expansion
    network: NetworkMode | None = None
    security: SecurityMode | None = None
    devices: tuple[Device, ...] = ()

    def expand(self, expander: Expander) -> Self:
        # Only the --mount values are expanded; the command is left to the shell.
        try:
            mounts = tuple(parse_mount(spec, expander.word) for spec in self.mount_specs)
        except _MountError as err:
            raise self.error(str(err)) from None
        return replace(self, mounts=mounts)


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    """CMD <command> | ["exe", "arg"...] | ["arg"...]"""

    keyword: ClassVar[str] = "cmd"
    command: tuple[str, ...]
    prepend_shell: bool = True
    files: tuple[ShellFile, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    """ENTRYPOINT <command> | ["exe", "arg"...]"""

    keyword: ClassVar[str] = "entrypoint"
    command: tuple[str, ...] | None  # None for ENTRYPOINT [] (clears it)
    prepend_shell: bool = True
    files: tuple[ShellFile, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    """SHELL ["exe", "arg"...]"""

    keyword: ClassVar[str] = "shell"
    shell: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    """ENV <key>=<value> [<key>=<value>...]  |  ENV <key> <value>"""

    keyword: ClassVar[str] = "env"
    pairs: tuple[KeyValue, ...]

    def expand(self, expander: Expander) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, expander))


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    """LABEL <key>=<value> [<key>=<value>...]"""

    keyword: ClassVar[str] = "label"
    pairs: tuple[KeyValue, ...]

    def expand(self, expander: Expander) -> Self:
        return replace(self, pairs=_expand_pairs(self.pairs, expander))


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    """MAINTAINER <name>"""

    keyword: ClassVar[str] = "maintainer"
    maintainer: str


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    """EXPOSE <port>[/<protocol>] [<port>[/<protocol>]...]"""

    keyword: ClassVar[str] = "expose"
    ports: tuple[str, ...]  # string-sorted, as BuildKit stores them

    def expand(self, expander: Expander) -> Self:
        ports: list[str] = []
        for port in self.ports:
            ports.extend(expander.words(port))
        return replace(self, ports=tuple(ports))


@dataclass(frozen=True, kw_only=True)
class Add(Instruction):
    """ADD [--chown=<user>:<group>] [--chmod=<perms>] [--link] [--checksum=<digest>] [--keep-git-dir] [--unpack[=<bool>]] [--exclude=<path>...] <src>... <dest>"""

    keyword: ClassVar[str] = "add"
    sources: tuple[str, ...]
    dest: str
    contents: tuple[SourceContent, ...] = ()  # heredoc sources
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    checksum: str | None = None
    keep_git_dir: bool = False
    unpack: bool | None = None  # None: unpack local archives (the default), keep remote ones
    excludes: tuple[str, ...] = ()
    json_form: bool = False

    def expand(self, expander: Expander) -> Self:
        checksum = expander.word(self.checksum) if self.checksum else self.checksum
        return replace(self, checksum=checksum, **_expand_copy_fields(self, expander))


@dataclass(frozen=True, kw_only=True)
class Copy(Instruction):
    """COPY [--from=<name>] [--chown=<user>:<group>] [--chmod=<perms>] [--link] [--parents] [--exclude=<path>...] <src>... <dest>"""

    keyword: ClassVar[str] = "copy"
    sources: tuple[str, ...]
    dest: str
    contents: tuple[SourceContent, ...] = ()  # heredoc sources
    from_: str | None = None  # a stage name or index, or an image; never expanded (as BuildKit)
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    excludes: tuple[str, ...] = ()
    json_form: bool = False

    def expand(self, expander: Expander) -> Self:
        return replace(self, **_expand_copy_fields(self, expander))


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    """VOLUME <path>... | ["<path>"...]"""

    keyword: ClassVar[str] = "volume"
    volumes: tuple[str, ...]

    def expand(self, expander: Expander) -> Self:
        return replace(self, volumes=tuple(expander.word(v) for v in self.volumes))


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    """USER <user>[:<group>]"""

    keyword: ClassVar[str] = "user"
    user: str

    def expand(self, expander: Expander) -> Self:
        return replace(self, user=expander.word(self.user))


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    """WORKDIR <path>"""

    keyword: ClassVar[str] = "workdir"
    path: str

    def expand(self, expander: Expander) -> Self:
        return replace(self, path=expander.word(self.path))


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """ARG <name>[=<default>] [<name>[=<default>]...]

    Not :class:`Expandable`: a default is expanded only when no build arg gives
    the value, which only the scope knows (:meth:`builder.frontend.expand.Scope.apply`).
    """

    keyword: ClassVar[str] = "arg"
    args: tuple[ArgSpec, ...]


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    """ONBUILD <instruction>"""

    keyword: ClassVar[str] = "onbuild"
    expression: str  # the trigger as written, stored in the image config
    trigger: Instruction  # the same, parsed (validated now, run by images built FROM this one)


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    """STOPSIGNAL <signal>"""

    keyword: ClassVar[str] = "stopsignal"
    signal: str

    def expand(self, expander: Expander) -> Self:
        return replace(self, signal=expander.word(self.signal))


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    """HEALTHCHECK [--interval=<d>] [--timeout=<d>] [--start-period=<d>] [--start-interval=<d>] [--retries=<n>] CMD <command> | HEALTHCHECK NONE"""

    keyword: ClassVar[str] = "healthcheck"
    health: Health


def _expand_pairs(pairs: tuple[KeyValue, ...], expander: Expander) -> tuple[KeyValue, ...]:
    return tuple(
        KeyValue(expander.word(p.key), expander.word(p.value), p.no_delim) for p in pairs
    )


def _expand_copy_fields(ins: Add | Copy, expander: Expander) -> dict[str, Any]:
    """What COPY and ADD both expand: sources, dest, heredoc bodies, --chown, --chmod."""
    return {
        "sources": tuple(expander.word(s) for s in ins.sources),
        "dest": expander.word(ins.dest),
        "contents": _expand_contents(ins.contents, expander),
        "chown": expander.word(ins.chown) if ins.chown else ins.chown,
        "chmod": expander.word(ins.chmod) if ins.chmod else ins.chmod,
    }


def _expand_contents(
    contents: tuple[SourceContent, ...], expander: Expander
) -> tuple[SourceContent, ...]:
    return tuple(replace(c, data=expander.raw(c.data)) if c.expand else c for c in contents)


# --------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """One build stage: its FROM and the instructions up to the next FROM."""

    index: int
    from_: From
    commands: tuple[Instruction, ...]

    @property
    def name(self) -> str | None:
        return self.from_.stage_name

    @property
    def base_name(self) -> str:
        """The base as written (before expansion)."""
        return self.from_.base_name

    @property
    def platform(self) -> str | None:
        return self.from_.platform

    @property
    def location(self) -> SourceLocation:
        return self.from_.location

    def display_name(self) -> str:
        return self.name if self.name else f"stage-{self.index}"


@dataclass(frozen=True)
class Dockerfile:
    """A Dockerfile given meaning: global ARGs and stages, plus the parse it came from."""

    meta_args: tuple[Arg, ...]
    stages: tuple[Stage, ...]
    parsed: ParsedDockerfile = field(repr=False, compare=False)

    @property
    def file(self) -> str:
        return self.parsed.file

    def find_stage(self, name: str) -> Stage | None:
        """The last stage of that name (case-insensitive), as ``--target`` and ``--from`` bind."""
        found = None
        for stage in self.stages:
            if stage.name is not None and stage.name == name.lower():
                found = stage
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "escape": self.parsed.escape,
            "directives": {d.name: d.value for d in self.parsed.directives},
            "meta_args": [a.to_json() for a in self.meta_args],
            "stages": [
                {
                    "index": s.index,
                    "name": s.name,
                    "base_name": s.base_name,
                    "platform": s.platform,
                    "start_line": s.from_.start_line,
                    "end_line": (s.commands[-1] if s.commands else s.from_).end_line,
                    "from": s.from_.to_json(),
                    "commands": [c.to_json() for c in s.commands],
                }
                for s in self.stages
            ],
        }


def parse_dockerfile(parsed: ParsedDockerfile) -> Dockerfile:
    """Turn the parser's nodes into typed instructions grouped into stages."""
    meta_args: list[Arg] = []
    stages: list[Stage] = []
    current: From | None = None
    commands: list[Instruction] = []
    for node in parsed.nodes:
        ins = parse_instruction(node, parsed)
        if isinstance(ins, From):
            if current is not None:
                stages.append(Stage(len(stages), current, tuple(commands)))
            current, commands = ins, []
        elif current is None:
            if isinstance(ins, Arg):
                meta_args.append(ins)
            else:
                raise ins.error("no build stage in current context")
        else:
            commands.append(ins)
    if current is not None:
        stages.append(Stage(len(stages), current, tuple(commands)))
    return Dockerfile(tuple(meta_args), tuple(stages), parsed)


# --------------------------------------------------------------------------- parsing


class _Req:
    """One node being parsed: its arguments, flags, and how to report errors."""

    def __init__(self, node: Node, parsed: ParsedDockerfile) -> None:
        self.node = node
        self.parsed = parsed
        self.args = list(node.args)
        self.location = SourceLocation(parsed.file, node.start_line, node.end_line or node.start_line)

    def error(self, message: str) -> InstructionError:
        line = self.parsed.source_line(self.node.start_line)
        if line is None and self.node.original:
            line = self.node.original.splitlines()[0]
        return InstructionError(message, self.location, source_line=line)

    def base(self) -> dict[str, Any]:
        return {
            "location": self.location, "original": self.node.original, "source": self.node,
            "first_line": self.parsed.source_line(self.node.start_line) or "",
        }

    def flags(self, spec: dict[str, _FlagKind]) -> dict[str, Any]:
        return _parse_flags(self, spec)


class _FlagKind(enum.Enum):
    BOOL = "bool"
    STRING = "string"
    STRINGS = "strings"


_B, _S, _SS = _FlagKind.BOOL, _FlagKind.STRING, _FlagKind.STRINGS


def _parse_flags(req: _Req, spec: dict[str, _FlagKind]) -> dict[str, Any]:
    """BuildKit's BFlags.Parse: ``--name=value`` words, booleans also bare; values by name."""
    values: dict[str, Any] = {}
    for word in req.node.flags:
        if word == "--":
            break
        if not word.startswith("--"):
            raise req.error(f"arg should start with -- : {word}")
        name, has_value, value = word[2:].partition("=")
        kind = spec.get(name)
        if kind is None:
            message = f"unknown flag: --{name}"
            if spec:
                guess = closest(name, list(spec))
                if guess:
                    message += f" (did you mean --{guess}?)"
            else:
                message += f" ({req.node.keyword.upper()} takes no flags)"
            raise req.error(message)
        if name in values and kind is not _SS:
            raise req.error(f"duplicate flag specified: {name}")
        if kind is _B:
            if has_value and value == "":
                raise req.error(f"missing a value on flag: {name}")
            lower = value.lower()
            if lower in ("", "true"):
                values[name] = True
            elif lower == "false":
                values[name] = False
            else:
                raise req.error(f"expecting boolean value for flag {name}, not: {value}")
        else:
            if not has_value:
                raise req.error(f"missing a value on flag: {name}")
            if kind is _SS:
                values.setdefault(name, []).append(value)
            else:
                values[name] = value
    return values


def closest(
    word: str, options: Sequence[str], max_distance: int = 2, *, case_sensitive: bool = False
) -> str | None:
    """The option nearest to ``word`` within ``max_distance`` edits, if any (BuildKit's suggest)."""
    best, best_distance = None, max_distance + 1
    for option in options:
        if case_sensitive:
            d = levenshtein(word, option)
        else:
            d = levenshtein(word.lower(), option.lower())
        if d < best_distance:
            best, best_distance = option, d
    return best


def parse_instruction(node: Node, parsed: ParsedDockerfile) -> Instruction:
    """One node to its typed instruction; InstructionError (file:line) when it is invalid."""
    fn = _PARSERS.get(node.keyword)  # the table is at the end of this module
    if fn is None:
        raise unknown_instruction_error(node, parsed)
    return fn(_Req(node, parsed))


def _no_flags(req: _Req) -> None:
    req.flags({})


def _exactly_one(req: _Req, name: str) -> str:
    if len(req.args) != 1:
        raise req.error(f"{name} requires exactly one argument")
    return req.args[0]


def _at_least_one(req: _Req, name: str) -> None:
    if not req.args:
        raise req.error(f"{name} requires at least one argument")


def _comment_for(node: Node, name: str) -> str:
    """BuildKit's getComment: the comment line above that starts with the name."""
    if not name:
        return ""
    for line in node.comments:
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    return ""


_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9-_.]*$")


def _parse_from(req: _Req) -> From:
    args = req.args
    stage_name = None
    if len(args) == 3 and args[1].lower() == "as":
        stage_name = args[2].lower()
        if not _STAGE_NAME_RE.match(stage_name):
            raise req.error(
                f'invalid name for build stage: "{args[2]}", '
                "name can't start with a number or contain symbols"
            )
    elif len(args) != 1:
        raise req.error("FROM requires either one or three arguments")
    flags = req.flags({"platform": _S})
    return From(
        **req.base(),
        base_name=args[0],
        stage_name=stage_name,
        platform=flags.get("platform"),
        comment=_comment_for(req.node, args[2] if stage_name else ""),  # as written, as BuildKit matches it
    )


def _shell_files(req: _Req) -> tuple[ShellFile, ...]:
    return tuple(ShellFile(h.name, h.content, h.chomp, h.expand) for h in req.node.heredocs)


def _cmdline(req: _Req, args: list[str] | None = None) -> tuple[str, ...]:
    """BuildKit's handleJSONArgs: exec form keeps the array, shell form is one string."""
    args = req.args if args is None else args
    if not args:
        return ()
    if req.node.json_form:
        return tuple(args)
    return (" ".join(args),)


def _parse_run(req: _Req) -> Run:
    flags = req.flags({"mount": _SS, "network": _S, "security": _S, "device": _SS})
    specs = tuple(flags.get("mount", ()))
    try:
        mounts = tuple(parse_mount(spec, None) for spec in specs)
    except _MountError as err:
        raise req.error(str(err)) from None
    network = None
    if "network" in flags:
        try:
            network = NetworkMode(flags["network"])
        except ValueError:
            raise req.error(f'invalid network mode "{flags["network"]}" '
                            "(use default, none or host)") from None
    security = None
    if "security" in flags:
        try:
            security = SecurityMode(flags["security"])
        except ValueError:
            raise req.error(f'security "{flags["security"]}" is not valid '
                            "(use sandbox or insecure)") from None
    devices = []
    for spec in flags.get("device", ()):
        name, _, rest = spec.partition(",")
        if not name:
            raise req.error(f"invalid device {spec!r}: a CDI device name is required")
        required = False
        for option in filter(None, rest.split(",")):
            key, has_value, value = option.partition("=")
            if key != "required":
                raise req.error(f"unexpected key '{key}' in '{option}'")
            required = not has_value or parse_go_bool(value) is not False
        devices.append(Device(name, required))
    if not req.args and not req.node.heredocs:
        raise req.error("RUN requires at least one argument")
    return Run(
        **req.base(),
        command=_cmdline(req),
        prepend_shell=not req.node.json_form,
        files=_shell_files(req),
        mounts=mounts,
        mount_specs=specs,
        network=network,
        security=security,
        devices=tuple(devices),
    )


def _parse_cmd(req: _Req) -> Cmd:
    _no_flags(req)
    return Cmd(
        **req.base(),
        command=_cmdline(req),
        prepend_shell=not req.node.json_form,
        files=_shell_files(req),
    )


def _parse_entrypoint(req: _Req) -> Entrypoint:
    _no_flags(req)
    command = _cmdline(req)
    return Entrypoint(
        **req.base(),
        command=command or None,
        prepend_shell=not req.node.json_form,
        files=_shell_files(req),
    )


def _parse_shell(req: _Req) -> Shell:
    _no_flags(req)
    if not req.args:
        raise req.error("SHELL requires at least one argument")
    if not req.node.json_form:
        raise req.error("SHELL requires the arguments to be in JSON form")
    return Shell(**req.base(), shell=tuple(req.args))


def _kvps(req: _Req, name: str) -> tuple[KeyValue, ...]:
    args = req.args
    if not args:
        raise req.error(f"{name} requires at least one argument")
    if len(args) % 3 != 0:
        raise req.error(f"{name} requires key=value pairs")  # the parser never produces this
    pairs = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise req.error(f"{name} names can not be blank")
        pairs.append(KeyValue(args[i], args[i + 1], args[i + 2] == ""))
    return tuple(pairs)


def _parse_env(req: _Req) -> Env:
    _no_flags(req)
    return Env(**req.base(), pairs=_kvps(req, "ENV"))


def _parse_label(req: _Req) -> Label:
    _no_flags(req)
    return Label(**req.base(), pairs=_kvps(req, "LABEL"))


def _parse_maintainer(req: _Req) -> Maintainer:
    maintainer = _exactly_one(req, "MAINTAINER")
    _no_flags(req)
    return Maintainer(**req.base(), maintainer=maintainer)


def _parse_expose(req: _Req) -> Expose:
    _at_least_one(req, "EXPOSE")
    _no_flags(req)
    return Expose(**req.base(), ports=tuple(sorted(req.args)))


_HEREDOC_WORD_RE = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")


def _heredoc_name(word: str) -> str | None:
    """The delimiter of a heredoc marker word (``<<EOF``, ``<<-'EOF'``), quotes removed."""
    match = _HEREDOC_WORD_RE.match(word)
    if match is None or not match[3]:
        return None
    return re.sub(r"""['"]""", "", match[3])


def _chomp(text: str) -> str:
    return "".join(line.lstrip("\t") for line in text.splitlines(keepends=True))


def _sources_and_dest(
    req: _Req, name: str
) -> tuple[tuple[str, ...], str, tuple[SourceContent, ...]]:
    if len(req.args) < 2:
        raise req.error(
            f"{name} requires at least two arguments, but only one was provided. "
            "Destination could not be determined"
        )
    *sources, dest = req.args
    heredocs: dict[str, Heredoc] = {h.name: h for h in req.node.heredocs}
    if not req.node.json_form and _heredoc_name(dest) in heredocs:
        raise req.error(f"{name} cannot accept a heredoc as a destination")
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in sources:
        heredoc_name = None if req.node.json_form else _heredoc_name(src)
        heredoc = heredocs.get(heredoc_name) if heredoc_name is not None else None
        if heredoc is not None:
            data = _chomp(heredoc.content) if heredoc.chomp else heredoc.content
            contents.append(SourceContent(heredoc.name, data, heredoc.expand))
        else:
            paths.append(src)
    return tuple(paths), dest, tuple(contents)


def _check_chmod(req: _Req, chmod: str | None) -> None:
    """Reject what BuildKit rejects; values with variables are checked after expansion.

    A symbolic mode (dockerfile 1.14) is anything BuildKit's mode library parses, the
    grammar COPY applies (one grammar for both): ``go=u-w`` and ``u+r-w`` as well as
    ``u=rwX,go=rX``."""
    from builder.execute.chmod import ModeSyntaxError, SymbolicMode

    if chmod is None or "$" in chmod:
        return
    if re.fullmatch(r"[0-7]+", chmod):
        if int(chmod, 8) <= 0o7777:
            return
    elif not chmod[:1].isdigit():
        try:
            SymbolicMode.parse(chmod)
            return
        except ModeSyntaxError:
            pass
    raise req.error(
        f"invalid chmod parameter: '{chmod}'. it should be octal string and between 0 and 07777"
    )


def _parse_add(req: _Req) -> Add:
    flags = req.flags({
        "chown": _S, "chmod": _S, "link": _B, "checksum": _S, "keep-git-dir": _B,
        "unpack": _B, "exclude": _SS,
    })
    sources, dest, contents = _sources_and_dest(req, "ADD")
    _check_chmod(req, flags.get("chmod"))
    return Add(
        **req.base(),
        sources=sources,
        dest=dest,
        contents=contents,
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.get("link", False),
        checksum=flags.get("checksum"),
        keep_git_dir=flags.get("keep-git-dir", False),
        unpack=flags.get("unpack"),
        excludes=tuple(flags.get("exclude", ())),
        json_form=req.node.json_form,
    )


_VARIABLE_RE = re.compile(r"\$.")


def _parse_copy(req: _Req) -> Copy:
    flags = req.flags({
        "from": _S, "chown": _S, "chmod": _S, "link": _B, "parents": _B, "exclude": _SS,
    })
    sources, dest, contents = _sources_and_dest(req, "COPY")
    from_ = flags.get("from")
    if from_ is not None and _VARIABLE_RE.search(from_):
        raise req.error(
            "variable expansion is not supported for --from, define a new stage with FROM "
            "using ARG from global scope as a workaround"
        )
    _check_chmod(req, flags.get("chmod"))
    return Copy(
        **req.base(),
        sources=sources,
        dest=dest,
        contents=contents,
        from_=from_ or None,
        chown=flags.get("chown"),
        chmod=flags.get("chmod"),
        link=flags.get("link", False),
        parents=flags.get("parents", False),
        excludes=tuple(flags.get("exclude", ())),
        json_form=req.node.json_form,
    )


def _parse_volume(req: _Req) -> Volume:
    _at_least_one(req, "VOLUME")
    _no_flags(req)
    volumes = []
    for v in req.args:
        v = v.strip()
        if not v:
            raise req.error("VOLUME specified can not be an empty string")
        volumes.append(v)
    return Volume(**req.base(), volumes=tuple(volumes))


def _parse_user(req: _Req) -> User:
    user = _exactly_one(req, "USER")
    _no_flags(req)
    return User(**req.base(), user=user)


def _parse_workdir(req: _Req) -> Workdir:
    path = _exactly_one(req, "WORKDIR")
    _no_flags(req)
    return Workdir(**req.base(), path=path)


def _parse_arg(req: _Req) -> Arg:
    _at_least_one(req, "ARG")
    _no_flags(req)
    specs = []
    for word in req.args:
        key, has_value, value = word.partition("=")
        if has_value and not key:
            raise req.error("ARG names can not be blank")
        specs.append(ArgSpec(key, value if has_value else None, _comment_for(req.node, key)))
    return Arg(**req.base(), args=tuple(specs))


_ONBUILD_PREFIX_RE = re.compile(r"(?i)^\s*ONBUILD\s*")


def _parse_onbuild(req: _Req) -> Onbuild:
    inner = req.node.inner
    if inner is None:
        raise req.error("ONBUILD requires at least one argument")
    _no_flags(req)
    trigger = inner.keyword.upper()
    if trigger == "ONBUILD":
        raise req.error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise req.error(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX_RE.sub("", req.node.original, count=1)
    for heredoc in inner.heredocs or req.node.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    # The nested node carries no location of its own: it is on the ONBUILD line.
    inner_located = replace(
        inner,
        start_line=inner.start_line or req.node.start_line,
        end_line=inner.end_line or req.node.end_line,
        original=inner.original or expression,
    )
    return Onbuild(
        **req.base(), expression=expression, trigger=parse_instruction(inner_located, req.parsed)
    )


def _parse_stopsignal(req: _Req) -> StopSignal:
    signal = _exactly_one(req, "STOPSIGNAL")
    _no_flags(req)
    return StopSignal(**req.base(), signal=signal)


def _parse_healthcheck(req: _Req) -> Healthcheck:
    if not req.args:
        raise req.error("HEALTHCHECK requires at least one argument")
    kind = req.args[0].upper()
    rest = req.args[1:]
    if kind == "NONE":
        if rest:
            raise req.error("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(**req.base(), health=Health(("NONE",)))
    flags = req.flags({
        "interval": _S, "timeout": _S, "start-period": _S, "start-interval": _S, "retries": _S,
    })
    if kind != "CMD":
        raise req.error(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)')
    command = _cmdline(req, rest)
    if not command:
        raise req.error("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command) if req.node.json_form else ("CMD-SHELL", *command)
    durations = {}
    for name in ("interval", "timeout", "start-period", "start-interval"):
        value = flags.get(name, "")
        if not value:
            durations[name] = 0
            continue
        try:
            ns = parse_go_duration(value)
        except ValueError as err:
            raise req.error(str(err)) from None
        if 0 < ns < 1_000_000 or ns < 0:
            raise req.error(f'Interval "{name}" cannot be less than 1ms')
        durations[name] = ns
    retries = 0
    if flags.get("retries"):
        try:
            retries = int(flags["retries"], 10)
        except ValueError:
            raise req.error(
                f'strconv.ParseInt: parsing "{flags["retries"]}": invalid syntax'
            ) from None
        if retries < 0:
            raise req.error(f"--retries cannot be negative ({retries})")
    health = Health(
        test=test,
        interval=durations["interval"],
        timeout=durations["timeout"],
        start_period=durations["start-period"],
        start_interval=durations["start-interval"],
        retries=retries,
    )
    return Healthcheck(**req.base(), health=health)


# Keyword -> parser; a constant table, filled once at import.
_PARSERS: dict[str, Callable[[_Req], Instruction]] = {
    "from": _parse_from,
    "run": _parse_run,
    "cmd": _parse_cmd,
    "entrypoint": _parse_entrypoint,
    "shell": _parse_shell,
    "env": _parse_env,
    "label": _parse_label,
    "maintainer": _parse_maintainer,
    "expose": _parse_expose,
    "add": _parse_add,
    "copy": _parse_copy,
    "volume": _parse_volume,
    "user": _parse_user,
    "workdir": _parse_workdir,
    "arg": _parse_arg,
    "onbuild": _parse_onbuild,
    "stopsignal": _parse_stopsignal,
    "healthcheck": _parse_healthcheck,
}


# --------------------------------------------------------------------------- value parsers

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "\u00b5s": 1_000, "\u03bcs": 1_000, "ms": 1_000_000,
    "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
}
_DURATION_PART_RE = re.compile(r"(\d*\.?\d*)([a-zA-Z\u00b5\u03bc]*)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds (``1h30m``, ``2.5s``, ``300ms``)."""
    s = text
    sign = 1
    if s[:1] in "+-" and s:
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    while s:
        match = _DURATION_PART_RE.match(s)
        assert match is not None  # every part of the pattern is optional
        number, unit = match[1], match[2]
        if not number or number == ".":
            raise ValueError(f'time: invalid duration "{text}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        s = s[match.end():]
    return sign * round(total)


def parse_go_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool; None when it is not a boolean."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


_RAM_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_RAM_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_ram_size(text: str) -> int:
    """docker's units.RAMInBytes: ``64m``, ``1g``, ``512k``, ``1.5GiB`` (binary multiples)."""
    match = _RAM_RE.match(text)
    if match is None:
        raise ValueError(f"invalid size: '{text}'")
    return int(float(match[1]) * _RAM_UNITS[(match[2] or "").lower()])


class _MountError(ValueError):
    """A --mount value is invalid; turned into an InstructionError at the caller."""


_MOUNT_KEYS = (
    "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size",
    "mode", "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env",
)


def parse_mount(spec: str, expand: Callable[[str], str] | None) -> Mount:
    """BuildKit's ParseMount: CSV ``key=value`` fields, in order, with its checks and messages.

    With ``expand`` None (parse time), a value holding a variable is skipped,
    except ``from``, which may not use variables at all.
    """
    import csv

    try:
        fields_ = next(csv.reader([spec], skipinitialspace=False), [])
    except csv.Error as err:
        raise _MountError(f"invalid mount {spec!r}: {err}") from None
    values: dict[str, Any] = {"type": MountType.BIND}
    ro_auto = True
    for fld in fields_:
        key, has_value, value = fld.partition("=")
        key = key.lower()
        mtype: MountType = values["type"]
        if not has_value:
            if key in ("readonly", "ro"):
                values["readonly"], ro_auto = True, False
            elif key in ("readwrite", "rw"):
                values["readonly"], ro_auto = False, False
            elif key == "required":
                if mtype not in (MountType.SECRET, MountType.SSH):
                    raise _MountError(f"unexpected key '{key}' for mount type '{mtype.value}'")
                values["required"] = True
            else:
                raise _MountError(f"invalid field '{fld}' must be a key=value pair")
            continue
        if expand is not None:
            try:
                value = expand(value)
            except ExpansionError as err:
                raise _MountError(err.message) from None
        elif key == "from":
            if _VARIABLE_RE.search(value):
                raise _MountError(
                    "'from' doesn't support variable expansion, define alias stage instead"
                )
        elif "$" in value:
            continue  # decided after expansion
        if key == "type":
            try:
                values["type"] = MountType(value.lower())
            except ValueError:
                message = f'unsupported mount type "{value}"'
                guess = closest(value, [t.value for t in MountType])
                raise _MountError(message + (f" (did you mean {guess}?)" if guess else "")) from None
        elif key == "from":
            values["from_"] = value
        elif key in ("source", "src"):
            values["source"] = value
        elif key in ("target", "dst", "destination"):
            values["target"] = value
        elif key in ("readonly", "ro", "readwrite", "rw"):
            b = parse_go_bool(value)
            if b is None:
                raise _MountError(f"invalid value for {key}: {value}")
            values["readonly"] = b if key in ("readonly", "ro") else not b
            ro_auto = False
        elif key == "required":
            if mtype not in (MountType.SECRET, MountType.SSH):
                raise _MountError(f"unexpected key '{key}' for mount type '{mtype.value}'")
            b = parse_go_bool(value)
            if b is None:
                raise _MountError(f"invalid value for {key}: {value}")
            values["required"] = b
        elif key == "id":
            values["id"] = value
        elif key == "sharing":
            try:
                values["sharing"] = CacheSharing(value.lower())
            except ValueError:
                raise _MountError(f'unsupported sharing value "{value}"') from None
        elif key == "mode":
            try:
                values["mode"] = int(value, 8)
            except ValueError:
                raise _MountError(f"invalid value {value} for mode") from None
        elif key in ("uid", "gid"):
            if not value.isdigit():
                raise _MountError(f"invalid value {value} for {key}")
            values[key] = int(value)
        elif key == "size":
            if mtype is not MountType.TMPFS:
                raise _MountError(f"unexpected key '{key}' for mount type '{mtype.value}'")
            try:
                values["size"] = parse_ram_size(value)
            except ValueError:
                raise _MountError(f"invalid value for {key}: {value}") from None
        elif key == "env":
            if mtype is not MountType.SECRET:
                raise _MountError(f"unexpected key '{key}' for mount type '{mtype.value}'")
            values["env"] = value
        else:
            message = f"unexpected key '{key}' in '{fld}'"
            guess = closest(key, _MOUNT_KEYS)
            raise _MountError(message + (f" (did you mean {guess}?)" if guess else ""))
    mtype = values["type"]
    if mtype not in (MountType.SECRET, MountType.SSH, MountType.CACHE):
        for key in ("mode", "uid", "gid"):
            if values.get(key) is not None:
                raise _MountError(f'{key} not allowed for "{mtype.value}" type mounts')
    if ro_auto:
        values["readonly"] = mtype not in (MountType.CACHE, MountType.TMPFS)
    if values.get("sharing") is not None and mtype is not MountType.CACHE:
        raise _MountError(f"invalid cache sharing set for {mtype.value} mount")
    if mtype is MountType.SECRET:
        if values.get("from_"):
            raise _MountError("secret mount should not have a from")
        if expand is not None and not (values.get("source") or values.get("target") or values.get("id")):
            raise _MountError("invalid secret mount. one of source, target required")
        if values.get("source") and values.get("id"):
            raise _MountError("both source and id can't be set")
    target = values.get("target") or ""
    if target.startswith("/") and posixpath.normpath(target) in ("/", "//"):
        raise _MountError(f'invalid mount target "{target}"')  # BuildKit's words; it would cover the rootfs
    if mtype is MountType.CACHE and values.get("sharing") is None:
        values["sharing"] = CacheSharing.SHARED
    return Mount(**values)
