"""The stage DAG: targets, parallel levels, COPY --from by index/name/image, mounts, cycles."""

from __future__ import annotations

import pytest

from builder.errors import StagePlanError
from builder.frontend.instructions import parse_dockerfile
from builder.frontend.parser import parse
from builder.plan.stages import DepKind, StagePlan, plan_stages
from tests.helpers.tools import CONFORMANCE

MULTI = """\
ARG BASE=busybox
FROM $BASE AS deps
RUN fetch
FROM $BASE AS tools
RUN build-tools
FROM deps AS build
COPY --from=tools /bin/tool /bin/
RUN make
FROM $BASE AS docs
RUN make-docs
FROM scratch AS final
COPY --from=build /out /app
COPY --from=nginx:1.27 /etc/nginx/nginx.conf /etc/
"""


def plan(source: str, target: str | None = None, **kwargs) -> StagePlan:
    return plan_stages(parse_dockerfile(parse(source)), target=target, **kwargs)


def test_default_target_is_the_last_stage_and_only_needed_stages_are_planned():
    p = plan(MULTI)
    names = [s.display_name() for s in p.stages]
    assert names == ["deps", "tools", "build", "final"]  # docs is not needed
    assert p.target == 4 and p.total == 5
    assert p.levels == ((0, 1), (2,), (4,))
    final = p.stage(4)
    assert final.deps == (2,)
    assert final.images == ("nginx:1.27",)
    assert final.base == "scratch" and final.base_stage is None
    build = p.stage(2)
    assert build.base_stage == 0 and build.deps == (0, 1)
    assert [d.kind for d in build.dependencies] == [DepKind.FROM, DepKind.COPY]


def test_target_selects_a_stage_and_what_it_needs():
    p = plan(MULTI, target="BUILD")
    assert [s.index for s in p.stages] == [0, 1, 2]
    assert p.target == 2
    assert plan(MULTI, target="docs").levels == ((3,),)


def test_unknown_target_names_the_stages():
    with pytest.raises(StagePlanError) as info:
        plan(MULTI, target="biuld")
    text = str(info.value)
    assert 'target stage "biuld" could not be found (did you mean build?)' in text
    assert "stages: deps, tools, build, docs, final" in text


def test_base_names_are_expanded_with_global_args():
    p = plan(MULTI, build_args={"BASE": "alpine:3"})
    assert p.stage(0).base == "alpine:3"
    assert p.stage(0).dependencies[0].image == "alpine:3"


def test_from_an_arg_that_names_a_stage():
    p = plan("ARG PARENT=base\nFROM busybox AS base\nFROM busybox AS other\nFROM $PARENT\n")
    assert p.stage(2).base_stage == 0 and p.stage(2).base == "base"
    assert plan("ARG PARENT=base\nFROM busybox AS base\nFROM busybox AS other\nFROM $PARENT\n",
                build_args={"PARENT": "other"}).stage(2).base_stage == 1


def test_copy_from_index_name_and_image():
    p = plan("FROM a AS one\nFROM b\nCOPY --from=0 /x /x\nCOPY --from=ONE /y /y\n"
             "COPY --from=registry.example:5000/img:1 /z /z\n")
    last = p.stage(1)
    assert last.deps == (0,)
    assert [(d.kind, d.stage, d.image) for d in last.dependencies] == [
        (DepKind.FROM, None, "b"),
        (DepKind.COPY, 0, None),
        (DepKind.COPY, 0, None),
        (DepKind.COPY, None, "registry.example:5000/img:1"),
    ]
    assert p.levels == ((0,), (1,))


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("FROM a\nCOPY --from=1 /x /x\nFROM b AS later\n",
         'cannot copy from stage "1", it needs to be defined before current stage "stage-0"', 2),
        ("FROM a AS first\nCOPY --from=later /x /x\nFROM b AS later\n",
         'cannot copy from stage "later", it needs to be defined before current stage "first"', 2),
        ("FROM a AS self\nCOPY --from=self /x /x\n",
         'cannot copy from stage "self", it needs to be defined before current stage "self"', 2),
        ("FROM a\nCOPY --from=7 /x /x\n", "invalid stage index 7", 2),
        ("FROM later\nFROM a AS later\n",
         'stage "later" is defined at line 2, after this FROM; a stage can only build on an earlier stage', 1),
        ("ARG B=\nFROM $B\n", "base name ($B) should not be blank", 2),
    ],
)
def test_references_that_cannot_be_planned(source, message, line):
    with pytest.raises(StagePlanError) as info:
        plan(source)
    assert message in str(info.value)
    assert info.value.line == line
    assert str(info.value).startswith(f"Dockerfile:{line}: ")


def test_run_mount_from_stage_or_image_and_forward_reference():
    p = plan("FROM a AS first\nRUN --mount=from=second,target=/s ls\n"
             "FROM b AS second\nRUN true\n"
             "FROM c\nRUN --mount=type=bind,from=first,target=/f --mount=from=alpine,target=/a ls\n")
    assert p.stage(0).deps == (1,)  # a mount may name a later stage when no cycle forms
    assert p.stage(2).deps == (0,)
    assert p.stage(2).images == ("alpine",)
    assert p.levels == ((1,), (0,), (2,))


def test_onbuild_triggers_of_a_parent_stage_add_dependencies():
    p = plan("FROM a AS assets\nRUN x\nFROM b AS base\nONBUILD COPY --from=assets /a /a\n"
             "FROM base\nRUN y\n")
    assert p.stage(1).deps == ()  # the trigger does not run in the stage that declares it
    assert p.stage(2).deps == (0, 1)
    assert p.levels == ((0, 1), (2,))



def test_onbuild_triggers_of_a_base_image_add_dependencies():
    """``ONBUILD COPY --from=builder`` in an image needs the child's builder stage (docker builds it);
    an image is asked for its triggers only when a stage the target reaches builds on it."""
    triggers = {"onb:1": "COPY --from=builder /b /b\nRUN --mount=from=tools,target=/t true\n",
                "other:1": "COPY --from=unused /u /u\n"}
    asked = []

    def image_triggers(stage, name):
        asked.append(name)
        text = triggers.get(name)
        return parse_dockerfile(parse(f"FROM scratch\n{text}")).stages[0].commands if text else []

    p = plan("FROM busybox AS builder\nRUN b\nFROM busybox AS tools\nFROM busybox AS unused\n"
             "FROM other:1 AS skipped\nFROM onb:1\nRUN x\n", image_triggers=image_triggers)
    assert [s.index for s in p.stages] == [0, 1, 4]
    assert p.stage(4).deps == (0, 1)
    assert p.levels == ((0, 1), (4,))
    assert sorted(asked) == ["busybox", "busybox", "onb:1"]
    later = parse_dockerfile(parse("FROM scratch\nCOPY --from=later /l /l\n")).stages[0].commands
    with pytest.raises(StagePlanError) as info:
        plan("FROM onb:1 AS first\nFROM busybox AS later\n", target="first",
             image_triggers=lambda stage, name: later if name == "onb:1" else [])
    assert 'cannot copy from stage "later"' in str(info.value)
    assert "(in an ONBUILD trigger of onb:1)" in str(info.value) and info.value.line == 1

def test_cycle_through_mounts_is_an_error():
    source = ("FROM a AS one\nRUN --mount=from=two,target=/t ls\n"
              "FROM b AS two\nRUN --mount=from=one,target=/o ls\n")
    with pytest.raises(StagePlanError, match="circular dependency detected on stage: "):
        plan(source)
    with pytest.raises(StagePlanError, match="circular dependency detected on stage: me"):
        plan("FROM a AS me\nRUN --mount=from=me,target=/x ls\n")


def test_duplicate_names_from_binds_earlier_target_binds_last():
    source = "FROM a AS x\nFROM x AS y\nFROM b AS x\nFROM c\nCOPY --from=x / /\n"
    p = plan(source)
    assert p.stage(3).deps == (2,)
    assert plan(source, target="y").stage(1).base_stage == 0
    assert plan(source, target="x").target == 2


def test_no_stages():
    with pytest.raises(StagePlanError, match="dockerfile contains no stages to build"):
        plan("ARG A=1\n")


def test_render_is_readable():
    text = plan(MULTI).render()
    lines = text.splitlines()
    assert lines[0].split() == ["STAGE", "BASE", "NEEDS", "LEVEL", "LINE"]
    assert lines[3].split() == ["#2", "build", "deps", "deps,", "tools", "1", "6"]
    assert "image nginx:1.27" in lines[4]
    assert "target final: 4 of 5 stage(s) needed, 3 level(s)" in text
    assert "  level 0: deps, tools" in text


def test_real_world_multi_stage_files_plan():
    planned = 0
    for path in sorted((CONFORMANCE / "real-world").glob("*/*/Dockerfile")):
        df = parse_dockerfile(parse(path.read_text(), str(path)))
        p = plan_stages(df)
        assert p.target == len(df.stages) - 1
        planned += len(df.stages) > 1
    assert planned == 14


def test_levels_respect_dependencies_for_random_dags():
    """Any DAG of stages: a stage's level is one more than its deepest dependency's."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @st.composite
    def dags(draw):
        n = draw(st.integers(min_value=1, max_value=8))
        edges = {i: draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set() for i in range(n)}
        return n, edges

    @settings(max_examples=60, deadline=None)
    @given(dags())
    def check(dag):
        n, edges = dag
        lines = []
        for i in range(n):
            lines.append(f"FROM busybox AS s{i}")
            lines += [f"COPY --from=s{d} /x /x{d}" for d in sorted(edges[i])]
        p = plan("\n".join(lines) + "\n")
        level = {s.index: s.level for s in p.stages}
        for s in p.stages:
            assert set(s.deps) == edges[s.index]
            expected = 1 + max((level[d] for d in s.deps), default=-1)
            assert s.level == expected
        assert sorted(i for group in p.levels for i in group) == sorted(level)
        assert p.target == n - 1

    check()
