"""Stages as a DAG: what the target needs, and which stages can run at the same time.

BuildKit's rules (``dockerfile2llb``): a FROM may name an *earlier* stage (a
later duplicate name rebinds it); ``COPY --from`` takes a stage name, a 0-based
index or, failing both, an image, and the stage must come before the current
one; ``RUN --mount=from=`` takes a stage name (any position, as long as no
cycle forms) or an image. ONBUILD triggers of a parent stage count as the
child's own instructions, and so do a base image's (``image_triggers``, asked
only for the stages the target reaches): ``ONBUILD COPY --from=builder`` in an
image needs the child Dockerfile's ``builder`` stage, as docker's builder has it. ``--target`` picks the last stage of that name,
otherwise the last stage is built. Only the stages the target reaches are
planned; ``levels`` groups them so that a stage runs after all it needs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from builder.errors import StagePlanError
from builder.frontend.expand import GlobalScope
from builder.frontend.instructions import (
    Copy,
    Dockerfile,
    Instruction,
    Onbuild,
    Run,
    Stage,
    closest,
)


class DepKind(enum.Enum):
    FROM = "from"
    COPY = "copy --from"
    MOUNT = "mount from"


@dataclass(frozen=True)
class Dependency:
    """One use of another stage or of an image by a stage."""

    kind: DepKind
    line: int
    stage: int | None = None  # the stage index, or None for an image
    image: str | None = None


@dataclass(frozen=True)
class PlannedStage:
    """A stage as the scheduler sees it."""

    index: int
    name: str | None
    base: str  # the base after expanding global ARGs: an image, a stage name or "scratch"
    base_stage: int | None  # the stage it builds on, if any
    platform: str | None
    dependencies: tuple[Dependency, ...]
    level: int
    line: int

    @property
    def deps(self) -> tuple[int, ...]:
        """Indices of the stages that must be built first."""
        return tuple(sorted({d.stage for d in self.dependencies if d.stage is not None}))

    @property
    def images(self) -> tuple[str, ...]:
        """Images this stage reads files from (``COPY --from``/mount ``from`` that name no stage)."""
        return tuple(dict.fromkeys(d.image for d in self.dependencies if d.image is not None and d.kind is not DepKind.FROM))

    def display_name(self) -> str:
        return self.name if self.name else f"stage-{self.index}"


@dataclass(frozen=True)
class StagePlan:
    """The stages the target needs, in file order, each with its level."""

    target: int
    stages: tuple[PlannedStage, ...]
    total: int  # how many stages the Dockerfile has

    def stage(self, index: int) -> PlannedStage:
        for s in self.stages:
            if s.index == index:
                return s
        raise KeyError(index)

    @property
    def levels(self) -> tuple[tuple[int, ...], ...]:
        """Stage indices grouped by level: every stage of a level can run at once."""
        if not self.stages:
            return ()
        depth = max(s.level for s in self.stages) + 1
        return tuple(tuple(s.index for s in self.stages if s.level == lvl) for lvl in range(depth))

    def render(self) -> str:
        """A readable table for people: stage, base, what it needs, level, line."""
        names = {s.index: s.display_name() for s in self.stages}
        rows = [("STAGE", "BASE", "NEEDS", "LEVEL", "LINE")]
        for s in self.stages:
            needs = [names[d] for d in s.deps if d != s.base_stage]
            if s.base_stage is not None:
                needs.insert(0, names[s.base_stage])
            needs += [f"image {img}" for img in s.images]
            rows.append((
                f"#{s.index} {s.display_name()}", s.base + (f" ({s.platform})" if s.platform else ""),
                ", ".join(needs) or "-", str(s.level), str(s.line),
            ))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
            for row in rows
        ]
        target = names[self.target]
        lines.append(
            f"target {target}: {len(self.stages)} of {self.total} stage(s) needed, "
            f"{len(self.levels)} level(s)"
        )
        for lvl, group in enumerate(self.levels):
            lines.append(f"  level {lvl}: " + ", ".join(names[i] for i in group))
        return "\n".join(lines)


def _error(message: str, ins: Instruction | None = None, hint: str | None = None) -> StagePlanError:
    if ins is None:
        return StagePlanError(message, hint=hint)
    error = ins.error(message, StagePlanError)
    return StagePlanError(message, ins.location, source_line=error.source_line, hint=hint)


def _last_by_name(stages: tuple[Stage, ...], name: str, before: int | None = None) -> Stage | None:
    found = None
    for s in stages:
        if before is not None and s.index >= before:
            break
        if s.name is not None and s.name == name.lower():
            found = s
    return found


def _commands(stage: Stage) -> list[Instruction]:
    """The stage's instructions, with ONBUILD triggers (they run in child images, not here) left out."""
    return [c for c in stage.commands if not isinstance(c, Onbuild)]


def _inherited_triggers(stages: tuple[Stage, ...], base_stage: int | None) -> list[Instruction]:
    """ONBUILD triggers of the stage this one builds on: they run first here (BuildKit's initOnBuildTriggers)."""
    if base_stage is None:
        return []
    return [c.trigger for c in stages[base_stage].commands if isinstance(c, Onbuild)]


def plan_stages(
    dockerfile: Dockerfile,
    global_scope: GlobalScope | None = None,
    *,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    is_named_context: Callable[[str], bool] | None = None,
    image_triggers: Callable[[Stage, str], Sequence[Instruction]] | None = None,
) -> StagePlan:
    """The DAG of stages the target needs; StagePlanError (with file:line) when it cannot be built.

    A name ``is_named_context`` accepts (``--build-context``) replaces a stage of the same
    name, as in BuildKit: it is a source, not a stage. ``image_triggers`` gives the ONBUILD
    triggers of a stage's base image (by its expanded name), parsed; none when not known yet.
    """
    stages = dockerfile.stages
    last_by_name = _last_by_name
    if is_named_context is not None:
        def last_by_name(stages: tuple[Stage, ...], name: str, before: int | None = None) -> Stage | None:
            return None if is_named_context(name) else _last_by_name(stages, name, before)
    if not stages:
        raise StagePlanError("dockerfile contains no stages to build")
    if global_scope is None:
        global_scope = GlobalScope(
            dockerfile.meta_args, build_args, escape=dockerfile.parsed.escape
        )

    bases: dict[int, tuple[str, int | None, str | None]] = {}
    deps: dict[int, list[Dependency]] = {}
    for stage in stages:
        expanded = global_scope.expand_from(stage.from_)
        base = expanded.base_name
        if not base:
            raise _error(f"base name ({stage.base_name}) should not be blank", stage.from_)
        earlier = last_by_name(stages, base, before=stage.index)
        base_stage = earlier.index if earlier is not None else None
        if earlier is None:
            later = last_by_name(stages, base)
            if later is not None and later.index >= stage.index:
                raise _error(
                    f'FROM {base}: stage "{later.display_name()}" is defined at line '
                    f"{later.location.start_line}, after this FROM; "
                    "a stage can only build on an earlier stage",
                    stage.from_,
                )
        bases[stage.index] = (base, base_stage, expanded.platform)
        found: list[Dependency] = []
        if base_stage is not None:
            found.append(Dependency(DepKind.FROM, stage.from_.start_line, stage=base_stage))
        elif base.lower() != "scratch":
            found.append(Dependency(DepKind.FROM, stage.from_.start_line, image=base))
        found += _uses(stages, stage, _commands(stage) + _inherited_triggers(stages, base_stage), last_by_name)
        deps[stage.index] = found

    target_stage = _target(dockerfile, target)
    needed = _reachable(stages, deps, target_stage.index)
    if image_triggers is not None and len(stages) > 1:
        asked: set[int] = set()
        while todo := sorted(i for i in needed - asked if bases[i][1] is None and bases[i][0].lower() != "scratch"):
            for i in todo:
                asked.add(i)
                try:
                    deps[i] += _uses(stages, stages[i], list(image_triggers(stages[i], bases[i][0])), last_by_name)
                except StagePlanError as err:  # the line quoted is the image's, not this file's
                    raise StagePlanError(f"{err.message} (in an ONBUILD trigger of {bases[i][0]})",
                                         stages[i].from_.location, source_line=stages[i].from_.first_line or None,
                                         hint=err.hint) from None
            needed = _reachable(stages, deps, target_stage.index)
    levels = _levels(stages, deps, needed)
    planned = tuple(
        PlannedStage(
            index=s.index,
            name=s.name,
            base=bases[s.index][0],
            base_stage=bases[s.index][1],
            platform=bases[s.index][2],
            dependencies=tuple(deps[s.index]),
            level=levels[s.index],
            line=s.from_.start_line,
        )
        for s in stages
        if s.index in needed
    )
    return StagePlan(target=target_stage.index, stages=planned, total=len(stages))


def _uses(stages: tuple[Stage, ...], stage: Stage, commands: list[Instruction],
          last_by_name: Callable[..., Stage | None]) -> list[Dependency]:
    """The stages and images ``commands`` read from: ``COPY --from`` and ``RUN --mount=from``."""
    found: list[Dependency] = []
    for ins in commands:
        if isinstance(ins, Copy) and ins.from_:
            found.append(_copy_source(stages, stage, ins, last_by_name))
        elif isinstance(ins, Run):
            for mount in ins.mounts:
                if mount.from_:
                    source = last_by_name(stages, mount.from_)
                    if source is not None and source.index == stage.index:
                        raise _error(f"circular dependency detected on stage: {stage.display_name()}", ins)
                    found.append(Dependency(
                        DepKind.MOUNT, ins.start_line,
                        stage=source.index if source is not None else None,
                        image=None if source is not None else mount.from_,
                    ))
    return found


def _copy_source(stages: tuple[Stage, ...], stage: Stage, ins: Copy,
                 last_by_name: Callable[..., Stage | None] = _last_by_name) -> Dependency:
    ref = ins.from_ or ""
    if ref.isdigit():
        index = int(ref)
        if index >= len(stages):
            raise _error(f"invalid stage index {index}", ins,
                         hint=f"the Dockerfile has {len(stages)} stage(s), numbered from 0")
        source: Stage | None = stages[index]
    else:
        source = last_by_name(stages, ref)
    if source is None:
        return Dependency(DepKind.COPY, ins.start_line, image=ref)
    if source.index >= stage.index:
        raise _error(
            f'cannot copy from stage "{ref}", it needs to be defined before current stage '
            f'"{stage.display_name()}"',
            ins,
        )
    return Dependency(DepKind.COPY, ins.start_line, stage=source.index)


def _target(dockerfile: Dockerfile, target: str | None) -> Stage:
    if target is None:
        return dockerfile.stages[-1]
    found = dockerfile.find_stage(target)
    if found is not None:
        return found
    names = [s.name for s in dockerfile.stages if s.name]
    message = f'target stage "{target}" could not be found'
    guess = closest(target, names)
    if guess:
        message += f" (did you mean {guess}?)"
    hint = ("stages: " + ", ".join(names)) if names else "no stage has a name (FROM ... AS <name>)"
    raise StagePlanError(message, hint=hint)


def _reachable(stages: tuple[Stage, ...], deps: dict[int, list[Dependency]], start: int) -> set[int]:
    """Stages the target needs; StagePlanError on a cycle (through RUN --mount=from)."""
    state: dict[int, int] = {}  # 1 = on the current path, 2 = done

    def visit(i: int) -> None:
        state[i] = 1
        for dep in deps[i]:
            if dep.stage is None:
                continue
            if state.get(dep.stage) == 1:
                raise StagePlanError(
                    f"circular dependency detected on stage: {stages[dep.stage].display_name()}"
                )
            if dep.stage not in state:
                visit(dep.stage)
        state[i] = 2

    visit(start)
    return set(state)


def _levels(stages: tuple[Stage, ...], deps: dict[int, list[Dependency]], needed: set[int]) -> dict[int, int]:
    levels: dict[int, int] = {}

    def level(i: int) -> int:
        if i not in levels:
            inner = [level(d.stage) for d in deps[i] if d.stage is not None]
            levels[i] = 1 + max(inner) if inner else 0
        return levels[i]

    for i in sorted(needed):
        level(i)
    return levels
