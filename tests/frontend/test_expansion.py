"""ARG/ENV scoping: meta args in FROM, redeclared ARGs, ENV over ARG, build args, platform and proxy args."""

from __future__ import annotations

import pytest

from builder.errors import ExpansionError
from builder.frontend.expand import (
    DEFAULT_PATH,
    GlobalScope,
    PlatformArgs,
    Scope,
    unused_build_args,
)
from builder.frontend.instructions import (
    Arg,
    Copy,
    Dockerfile,
    Env,
    Expose,
    Run,
    Workdir,
    parse_dockerfile,
)
from builder.frontend.parser import parse
from builder.image.platform import Platform

AMD64 = Platform.parse("linux/amd64")
ARM64 = Platform.parse("linux/arm64")
ARMV7 = Platform.parse("linux/arm/v7")
PLATFORMS = PlatformArgs(build=AMD64, target=ARM64)


def typed(source: str) -> Dockerfile:
    return parse_dockerfile(parse(source))


def walk(source: str, build_args: dict[str, str] | None = None, base_env=None,
         platforms: PlatformArgs = PLATFORMS) -> tuple[Scope, list]:
    """Apply every instruction of the last stage; returns its scope and the expanded instructions."""
    df = typed(source)
    gs = GlobalScope(df.meta_args, build_args, platforms=platforms, escape=df.parsed.escape)
    scope = gs.stage_scope(base_env if base_env is not None else {})
    return scope, [scope.apply(ins) for ins in df.stages[-1].commands]


def env_of(source: str, **kwargs) -> dict[str, str]:
    return walk(source, **kwargs)[0].run_env(proxies=False)


# --------------------------------------------------------------------------- global scope and FROM


def test_meta_args_expand_in_from():
    df = typed("ARG TAG=1.0\nARG IMAGE=busybox:${TAG}\nFROM $IMAGE AS a\nFROM alpine:${TAG:-x}\n")
    gs = GlobalScope(df.meta_args, platforms=PLATFORMS)
    assert [gs.expand_from(s.from_).base_name for s in df.stages] == ["busybox:1.0", "alpine:1.0"]
    gs = GlobalScope(df.meta_args, {"TAG": "2"}, platforms=PLATFORMS)
    assert [gs.expand_from(s.from_).base_name for s in df.stages] == ["busybox:2", "alpine:2"]


def test_build_arg_replaces_meta_default_without_evaluating_it():
    df = typed("ARG X=${UNSET:?must be given}\nFROM img:$X\n")
    gs = GlobalScope(df.meta_args, {"X": "ok"}, platforms=PLATFORMS)
    assert gs.expand_from(df.stages[0].from_).base_name == "img:ok"
    with pytest.raises(ExpansionError) as info:
        GlobalScope(df.meta_args, platforms=PLATFORMS)
    assert str(info.value).startswith("Dockerfile:1: ")
    assert "must be given" in str(info.value)


def test_undeclared_build_arg_is_not_visible_in_from():
    df = typed("FROM img:${TAG}\n")
    gs = GlobalScope(df.meta_args, {"TAG": "2"}, platforms=PLATFORMS)
    assert gs.expand_from(df.stages[0].from_).base_name == "img:"
    assert [names for _, names in gs.unmatched] == [{"TAG"}]


def test_build_args_override_platform_args_in_from():
    df = typed("FROM --platform=$BUILDPLATFORM img:$TARGETARCH\n")
    gs = GlobalScope(df.meta_args, {"TARGETARCH": "riscv64"}, platforms=PLATFORMS)
    assert gs.expand_from(df.stages[0].from_).base_name == "img:riscv64"


def test_platform_args_in_global_scope():
    df = typed("FROM --platform=$BUILDPLATFORM golang:1-$TARGETARCH$TARGETVARIANT\n")
    gs = GlobalScope(df.meta_args, platforms=PlatformArgs(AMD64, ARMV7))
    from_ = gs.expand_from(df.stages[0].from_)
    assert (from_.platform, from_.base_name) == ("linux/amd64", "golang:1-armv7")


# --------------------------------------------------------------------------- stage scope


def test_meta_arg_needs_redeclaration_inside_a_stage():
    source = "ARG V=1\nFROM x\nENV BEFORE=$V\nARG V\nENV AFTER=$V\n"
    scope, _ = walk(source)
    assert scope.config_env["BEFORE"] == ""
    assert scope.config_env["AFTER"] == "1"
    assert [u.name for u in scope.undefined] == ["V"]
    assert scope.visible_args() == {"V": "1"}


def test_stage_arg_default_build_arg_and_global_value():
    assert env_of("ARG V=global\nFROM x\nARG V=local\nENV R=$V\n")["R"] == "local"
    assert env_of("ARG V=global\nFROM x\nARG V=local\nENV R=$V\n", build_args={"V": "cli"})["R"] == "cli"
    assert env_of("ARG V=global\nFROM x\nARG V\nENV R=$V\n", build_args={"V": "cli"})["R"] == "cli"
    assert env_of("FROM x\nARG V\nENV R=$V\n")["R"] == ""


def test_declared_arg_without_value_is_not_undefined():
    scope, _ = walk("FROM x\nARG V\nENV R=$V\n")
    assert scope.undefined == []
    assert scope.visible_args() == {"V": None}
    assert "V" not in scope.run_env()


def test_stage_default_expands_against_the_stage():
    env = env_of("FROM x\nENV BASE=/opt\nARG DIR=${BASE}/app\nENV D=$DIR\n")
    assert env["D"] == "/opt/app"


def test_stage_default_not_evaluated_when_build_arg_given():
    assert env_of("FROM x\nARG X=${Y:?boom}\n", build_args={"X": "1"})["X"] == "1"
    with pytest.raises(ExpansionError) as info:
        walk("FROM x\n\nARG X=${Y:?boom}\n")
    assert str(info.value).startswith("Dockerfile:3: ")
    assert "boom" in str(info.value)
    assert "   3 | ARG X=${Y:?boom}" in str(info.value)


def test_env_overrides_an_arg_of_the_same_name():
    scope, _ = walk("FROM x\nARG X=from-arg\nENV X=from-env\nENV Y=$X\n")
    assert scope.config_env["Y"] == "from-env"
    assert scope.run_env()["X"] == "from-env"


def test_arg_after_env_sets_the_run_env_not_the_config():
    scope, _ = walk("FROM x\nENV X=from-env\nARG X=from-arg\nENV Y=$X\n")
    assert scope.config_env["X"] == "from-env"
    assert scope.run_env()["X"] == "from-arg"
    assert scope.config_env["Y"] == "from-arg"


def test_env_pairs_see_values_from_before_the_line():
    env = env_of("FROM x\nENV a=1\nENV a=2 b=$a\n")
    assert (env["a"], env["b"]) == ("2", "1")


def test_env_quotes_are_removed_and_base_env_is_used():
    env = env_of('FROM x\nENV A="two words" B=\'$HOME\' C=$HOME/bin PATH=/x:$PATH\n',
                 base_env=["HOME=/root", "PATH=/usr/bin"])
    assert env == {"HOME": "/root", "PATH": "/x:/usr/bin", "A": "two words", "B": "$HOME",
                   "C": "/root/bin"}


def test_default_path_when_the_base_has_none():
    assert env_of("FROM x\n")["PATH"] == DEFAULT_PATH
    assert env_of("FROM x\n", base_env={"PATH": "/bin"})["PATH"] == "/bin"


def test_predefined_platform_args_need_declaring_in_a_stage():
    scope, _ = walk("FROM x\nENV A=$TARGETARCH\nARG TARGETARCH TARGETPLATFORM BUILDOS TARGETVARIANT\n"
                    "ENV B=$TARGETARCH C=$TARGETPLATFORM D=$BUILDOS E=$TARGETVARIANT\n")
    env = scope.config_env
    assert (env["A"], env["B"], env["C"], env["D"], env["E"]) == ("", "arm64", "linux/arm64", "linux", "")
    arm = env_of("FROM x\nARG TARGETPLATFORM TARGETVARIANT\n", platforms=PlatformArgs(AMD64, ARMV7))
    assert (arm["TARGETPLATFORM"], arm["TARGETVARIANT"]) == ("linux/arm/v7", "v7")
    overridden = env_of("FROM x\nARG TARGETOS\n", build_args={"TARGETOS": "freebsd"})
    assert overridden["TARGETOS"] == "freebsd"


def test_proxy_args_reach_run_without_declaration():
    args = {"HTTP_PROXY": "http://127.0.0.1:3128", "no_proxy": "localhost", "OTHER": "x"}
    scope, _ = walk("FROM x\nENV A=$HTTP_PROXY\n", build_args=args)
    assert scope.config_env["A"] == ""  # not visible to expansion
    assert scope.proxy_env() == {"HTTP_PROXY": "http://127.0.0.1:3128", "no_proxy": "localhost"}
    assert scope.run_env()["HTTP_PROXY"] == "http://127.0.0.1:3128"
    assert "HTTP_PROXY" not in scope.run_env(proxies=False)
    assert "OTHER" not in scope.run_env()
    declared, _ = walk("FROM x\nARG HTTP_PROXY\n", build_args=args)
    assert declared.proxy_env() == {"no_proxy": "localhost"}  # declared: part of history and keys
    assert declared.run_env(proxies=False)["HTTP_PROXY"] == "http://127.0.0.1:3128"


def test_arg_instruction_returns_resolved_values():
    _, (arg,) = walk("FROM x\nARG A=1 B C=$A\n", build_args={"B": "two"})
    assert isinstance(arg, Arg)
    assert [(s.key, s.default) for s in arg.args] == [("A", "1"), ("B", "two"), ("C", "1")]


def test_child_stage_inherits_args_and_env():
    df = typed("FROM x AS base\nARG V=1\nENV E=e\nFROM base\nENV R=$V-$E\n")
    gs = GlobalScope(df.meta_args, platforms=PLATFORMS)
    parent = gs.stage_scope({})
    for ins in df.stages[0].commands:
        parent.apply(ins)
    child = parent.child()
    for ins in df.stages[1].commands:
        child.apply(ins)
    assert child.config_env["R"] == "1-e"
    assert "R" not in parent.config_env


# --------------------------------------------------------------------------- what each instruction expands


def test_instructions_expand_what_docker_expands():
    source = (
        "FROM x\nENV DIR=/srv NAME=app P=\"80 443\" C=/cache U=1000\n"
        "WORKDIR $DIR/$NAME\n"
        "COPY --chown=$U:$U --from=build ${NAME}.conf $DIR/\n"
        "EXPOSE $P 8080/udp\n"
        "RUN --mount=type=cache,target=$C,uid=$U echo $DIR\n"
        "COPY <<EOF <<'RAW' /x\n\"$NAME\" \\$DIR\nEOF\n$NAME\nRAW\n"
    )
    _, expanded = walk(source)
    workdir, copy, expose, run, heredoc = expanded[1:]
    assert isinstance(workdir, Workdir) and workdir.path == "/srv/app"
    assert isinstance(copy, Copy)
    assert (copy.chown, copy.from_, copy.sources, copy.dest) == ("1000:1000", "build", ("app.conf",), "/srv/")
    assert isinstance(expose, Expose) and expose.ports == ("80", "443", "8080/udp")
    assert isinstance(run, Run)
    assert run.command == ("echo $DIR",)  # left to the shell
    assert (run.mounts[0].target, run.mounts[0].uid) == ("/cache", 1000)
    assert [c.data for c in heredoc.contents] == ['"app" $DIR\n', "$NAME\n"]


def test_expansion_errors_name_the_line():
    with pytest.raises(ExpansionError) as info:
        walk("FROM x\nENV A=1\nWORKDIR ${MISSING:?set MISSING}\n")
    assert str(info.value).startswith("Dockerfile:3: ")
    assert "set MISSING" in str(info.value)


def test_expand_is_pure_apply_records():
    df = typed("FROM x\nENV A=1\n")
    scope = GlobalScope(df.meta_args, platforms=PLATFORMS).stage_scope({})
    env = df.stages[0].commands[0]
    assert isinstance(scope.expand(env), Env)
    assert "A" not in scope.env
    scope.apply(env)
    assert scope.env["A"] == "1"


def test_escape_directive_applies_to_expansion():
    scope, _ = walk("# escape=`\nFROM scratch\nENV HOME=/root\n"
                    "ENV A=`$HOME B=\"x`\"y\" C=c:\\dir D=$HOME\n")
    env = scope.config_env
    assert (env["A"], env["B"], env["C"], env["D"]) == ("$HOME", 'x"y', "c:\\dir", "/root")


def test_heredoc_bodies_use_backslash_whatever_the_escape_directive():
    _, expanded = walk('# escape=`\nFROM scratch\nENV N=x\nCOPY <<EOF /f\n\\$N `$N "$N"\nEOF\n')
    assert expanded[-1].contents[0].data == '$N `x "x"\n'


def test_real_world_stages_expand_without_error():
    """Every instruction of the 208 real Dockerfiles (Windows ones included) goes through a scope."""
    from tests.helpers.tools import CONFORMANCE

    applied = 0
    for path in sorted((CONFORMANCE / "real-world").glob("*/*/Dockerfile")):
        df = parse_dockerfile(parse(path.read_text(), str(path)))
        gs = GlobalScope(df.meta_args, escape=df.parsed.escape, platforms=PLATFORMS)
        for stage in df.stages:
            gs.expand_from(stage.from_)
            scope = gs.stage_scope(None)
            for ins in stage.commands:
                scope.apply(ins)
                applied += 1
    assert applied == 3031 - 222 - 2  # every instruction but the 222 FROMs and the 2 global ARGs


def test_unused_build_args():
    assert unused_build_args(
        {"USED": "1", "UNUSED": "2", "HTTP_PROXY": "x", "BUILDKIT_INLINE_CACHE": "1"}, ["USED"]
    ) == ["UNUSED"]


# --------------------------------------------------------------------------- against docker's builder

DIFFERENTIAL = """\
ARG GREETING=hello
FROM scratch
ARG GREETING
ARG NAME=world
ENV MSG="${GREETING} ${NAME}" PATH_EXTRA=/opt/${NAME:-x}/bin
ENV NAME=env-name
ENV AFTER=$NAME Q='$NAME' E=\\$NAME
LABEL msg="$MSG" "quoted key"=v other=${UNSET:-dflt}
WORKDIR /srv/${NAME}
WORKDIR sub
USER ${NAME}:${GREETING}
EXPOSE 8080/udp ${PORT:-80}
VOLUME ["/data/${NAME}"]
STOPSIGNAL SIG${SIG:-TERM}
"""


@pytest.mark.docker
def test_expansion_matches_docker_builder(docker, tmp_path):
    """The config docker's builder writes equals what our scopes expand (same build args)."""
    import json
    import posixpath
    import subprocess
    import uuid

    from builder.frontend.instructions import Expose, Label, StopSignal, User, Volume

    (tmp_path / "Dockerfile").write_text(DIFFERENTIAL)
    tag = f"pybuild-expansion-test:{uuid.uuid4().hex[:12]}"
    subprocess.run(
        [docker, "build", "--force-rm", "--network", "host", "-q", "--build-arg", "NAME=cli", "-t", tag, str(tmp_path)],
        check=True, capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    try:
        inspect = subprocess.run([docker, "inspect", tag, "--format", "{{json .Config}}"],
                                 check=True, capture_output=True, timeout=60)
        config = json.loads(inspect.stdout)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)

    scope, expanded = walk(DIFFERENTIAL, build_args={"NAME": "cli"}, base_env={})
    assert [f"{k}={v}" for k, v in scope.config_env.items()] == config["Env"]
    labels = {p.key: p.value for ins in expanded if isinstance(ins, Label) for p in ins.pairs}
    assert labels == config["Labels"]
    workdir = "/"
    for ins in expanded:
        if isinstance(ins, Workdir):
            workdir = posixpath.join(workdir, ins.path)
    assert workdir == config["WorkingDir"]
    (user,) = [ins.user for ins in expanded if isinstance(ins, User)]
    assert user == config["User"]
    (expose,) = [ins for ins in expanded if isinstance(ins, Expose)]
    ports = {p if "/" in p else p + "/tcp" for p in expose.ports}
    assert ports == set(config["ExposedPorts"])
    (volume,) = [ins for ins in expanded if isinstance(ins, Volume)]
    assert set(volume.volumes) == set(config["Volumes"])
    (signal,) = [ins.signal for ins in expanded if isinstance(ins, StopSignal)]
    assert signal == config["StopSignal"]


def test_an_env_name_that_expands_to_nothing_is_refused_at_its_line():
    """docker refuses it at the ENV; kept, every later RUN would fail in runc ("=x" in the env)."""
    with pytest.raises(ExpansionError) as info:
        walk("FROM a\nENV A=1 $UNDEF=x\n")
    assert info.value.line == 2 and "ENV names can not be blank: $UNDEF expands to nothing" in str(info.value)
    _, (label,) = walk("FROM a\nLABEL $UNDEF=x\n")  # a blank label name is docker's too
    assert [(p.key, p.value) for p in label.pairs] == [("", "x")]
