"""BuildKit's frontend subrequests: ``--call targets`` and ``--call outline``.

``targets`` lists every stage (the last one is the default) with its
description: the comment right above its FROM that starts with the stage's
name (``# build compiles the binary``). ``outline`` lists what the target
takes from outside: the build args it uses, with their values and
descriptions (the comment above the ARG that starts with its name), the
secrets and SSH agents its RUN steps mount, each with whether it is required.
The rules are BuildKit's (``dockerfile2llb/outline.go``): an ARG declared in a
stage counts as used, a global ARG counts when a FROM names it (or a used
ARG's default does), and the target's base stage and the stages it copies or
mounts from count too. The text is BuildKit's ``result.txt``, column for column.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from builder.errors import ExpansionError, InstructionError
from builder.frontend.expand import GlobalScope, PlatformArgs, Scope
from builder.frontend.instructions import Arg, Dockerfile, MountType, Run, Stage
from builder.frontend.shell import ShellLex

BaseEnv = Callable[[str], "Mapping[str, str] | Sequence[str] | None"]


@dataclass(frozen=True)
class Target:
    name: str
    default: bool
    description: str
    base: str
    platform: str
    line: int


@dataclass(frozen=True)
class OutlineArg:
    name: str
    value: str
    description: str
    line: int


@dataclass(frozen=True)
class Requirement:
    """A secret or an SSH agent a RUN step mounts."""

    name: str
    required: bool
    line: int


@dataclass(frozen=True)
class Outline:
    name: str
    description: str
    args: tuple[OutlineArg, ...]
    secrets: tuple[Requirement, ...]
    ssh: tuple[Requirement, ...]


def written_name(dockerfile: Dockerfile, stage: Stage) -> str:
    """The stage name as the FROM line spells it (BuildKit's OrigName; ``stage.name`` is lower-cased)."""
    node = stage.from_.source
    if node is not None and len(node.args) == 3:
        return node.args[2]
    return stage.name or ""


def targets(dockerfile: Dockerfile) -> list[Target]:
    last = len(dockerfile.stages) - 1
    return [Target(written_name(dockerfile, s), s.index == last, s.from_.comment, s.from_.base_name,
                   s.from_.platform or "", s.from_.start_line) for s in dockerfile.stages]


@dataclass
class _ArgInfo:
    value: str
    description: str
    line: int
    deps: set[str] = field(default_factory=set)


@dataclass
class _StageOutline:
    args: dict[str, _ArgInfo]
    used: set[str]
    secrets: dict[str, tuple[bool, int]] = field(default_factory=dict)
    ssh: dict[str, tuple[bool, int]] = field(default_factory=dict)
    base: int | None = None
    deps: tuple[int, ...] = ()


def outline(dockerfile: Dockerfile, *, build_args: Mapping[str, str] | None = None, target: str | None = None,
            base_env: BaseEnv | None = None, platforms: PlatformArgs | None = None) -> Outline:
    """What building ``target`` (default: the last stage) takes from outside."""
    from builder.plan.stages import plan_stages

    build_args = dict(build_args or {})
    scope = GlobalScope(dockerfile.meta_args, build_args, platforms=platforms, escape=dockerfile.parsed.escape)
    plan = plan_stages(dockerfile, scope, target=target, build_args=build_args)
    lex = ShellLex(escape=dockerfile.parsed.escape)
    global_args: dict[str, _ArgInfo] = {}
    for arg in dockerfile.meta_args:
        for spec in arg.args:
            deps: set[str] = set()
            if spec.key not in build_args and spec.default is not None:
                deps = set(lex.process_word_with_matches(spec.default, scope.values).matched)
            value = scope.declared.get(spec.key)
            global_args[spec.key] = _ArgInfo(value or "", spec.comment, arg.start_line, deps)
    outlines: dict[int, _StageOutline] = {}
    scopes: dict[int, Scope] = {}
    for planned in plan.stages:
        stage = dockerfile.stages[planned.index]
        used = set(lex.process_word_with_matches(stage.from_.base_name, scope.values).matched)
        if stage.from_.platform:
            used |= lex.process_word_with_matches(stage.from_.platform, scope.values).matched
        own = _StageOutline(dict(global_args), used, base=planned.base_stage,
                            deps=tuple(d for d in planned.deps if d != planned.base_stage))
        if planned.base_stage is not None and planned.base_stage in scopes:
            stage_scope = scopes[planned.base_stage].child()
        else:
            base = planned.base
            env = {} if base.lower() == "scratch" else base_env(base) if base_env is not None else None
            stage_scope = scope.stage_scope(env)
        for ins in stage.commands:
            try:
                expanded = stage_scope.apply(ins)
            except (ExpansionError, InstructionError):
                continue  # what an unknown base image might define: the build says, not the outline
            if isinstance(ins, Arg) and isinstance(expanded, Arg):  # apply keeps the instruction's type
                for spec, resolved in zip(ins.args, expanded.args, strict=True):
                    inherited = spec.default is None and spec.key not in build_args and spec.key in scope.values
                    if not inherited:
                        own.args[spec.key] = _ArgInfo(resolved.default or "", spec.comment, ins.start_line)
                    own.used.add(spec.key)
            elif isinstance(expanded, Run):
                for mount in expanded.mounts:
                    if mount.type is MountType.SECRET:
                        name = mount.id or posixpath.basename(mount.target or "")
                        own.secrets[name] = (mount.required, ins.start_line)
                    elif mount.type is MountType.SSH:
                        own.ssh[mount.id or "default"] = (mount.required, ins.start_line)
        scopes[planned.index] = stage_scope
        outlines[planned.index] = own

    target_stage = dockerfile.stages[plan.target]
    args = _collect(outlines, plan.target, _args_of, set())
    secrets = _collect(outlines, plan.target, lambda o: _requirements(o.secrets), set())
    ssh = _collect(outlines, plan.target, lambda o: _requirements(o.ssh), set())
    return Outline(
        name=written_name(dockerfile, target_stage), description=target_stage.from_.comment,
        args=tuple(sorted(args, key=lambda a: a.line)),
        secrets=tuple(sorted(secrets, key=lambda r: r.line)),
        ssh=tuple(sorted(ssh, key=lambda r: r.line)),
    )


def _args_of(o: _StageOutline) -> list[tuple[str, OutlineArg]]:
    used = set()

    def mark(names: set[str]) -> None:  # an ARG used makes the ARGs of its default used too
        for name in names:
            if name in used:
                continue
            used.add(name)
            if name in o.args:
                mark(o.args[name].deps)

    mark(set(o.used))
    return [(name, OutlineArg(name, o.args[name].value, o.args[name].description, o.args[name].line))
            for name in sorted(used) if name in o.args]


def _requirements(found: dict[str, tuple[bool, int]]) -> list[tuple[str, Requirement]]:
    return [(name, Requirement(name, required, line)) for name, (required, line) in sorted(found.items())]


def _collect(outlines: dict[int, _StageOutline], index: int, items: Callable, visited: set[str]) -> list:
    """The stage's items not seen yet, then its base stage's, then the stages it copies from."""
    o = outlines[index]
    result = []
    for name, item in items(o):
        if name not in visited:
            visited.add(name)
            result.append(item)
    for other in ((o.base,) if o.base is not None else ()) + o.deps:
        if other in outlines:
            result += _collect(outlines, other, items, visited)
    return result


# -- text, as BuildKit's result.txt (Go's text/tabwriter)


def _table(rows: Sequence[Sequence[str]], padding: int) -> str:
    """Go's tabwriter with minwidth 0 and padchar ' ': every cell but a line's last is padded
    to its column's widest cell plus ``padding``."""
    widths = [max(len(row[i]) for row in rows) + padding for i in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + row[-1] + "\n"
                   for row in rows)


def render_targets(found: Sequence[Target]) -> str:
    rows = [("TARGET", "DESCRIPTION")]
    for t in found:
        name = t.name
        if t.default:
            name = f"{name} (default)" if name else "(default)"
        rows.append((name, t.description))
    return _table(rows, 1)


def render_outline(o: Outline) -> str:
    out = ""
    if o.name or o.description:
        rows = [("TARGET:", o.name or "(default)")]
        if o.description:
            rows.append(("DESCRIPTION:", o.description))
        out += _table(rows, 1) + "\n"
    if o.args:
        out += _table([("BUILD ARG", "VALUE", "DESCRIPTION"), *((a.name, a.value, a.description) for a in o.args)],
                      3) + "\n"
    for title, items in (("SECRET", o.secrets), ("SSH", o.ssh)):
        if items:
            out += _table([(title, "REQUIRED"), *((r.name, "true" if r.required else "") for r in items)], 3) + "\n"
    return out


def targets_json(dockerfile: Dockerfile, found: Sequence[Target]) -> dict:
    """BuildKit's result.json of ``targets`` (locations as line ranges)."""
    return {"targets": [
        {k: v for k, v in (("name", t.name), ("default", t.default), ("description", t.description),
                           ("base", t.base), ("platform", t.platform)) if v}
        | {"location": _location(t.line)} for t in found]}


def outline_json(o: Outline) -> dict:
    result: dict = {k: v for k, v in (("name", o.name), ("description", o.description)) if v}
    if o.args:
        result["args"] = [{"name": a.name, **({"description": a.description} if a.description else {}),
                           **({"value": a.value} if a.value else {}), "location": _location(a.line)}
                          for a in o.args]
    for key, items in (("secrets", o.secrets), ("ssh", o.ssh)):
        if items:
            result[key] = [{"name": r.name, **({"required": True} if r.required else {}),
                            "location": _location(r.line)} for r in items]
    return result


def _location(line: int) -> dict:
    return {"ranges": [{"start": {"line": line}, "end": {"line": line}}]}
