"""Typed instructions from small Dockerfiles: every instruction, flag and form, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import DockerfileError, InstructionError, ParseError
from builder.frontend.instructions import (
    Add,
    Arg,
    ArgSpec,
    CacheSharing,
    Cmd,
    Copy,
    Device,
    Entrypoint,
    Env,
    Expandable,
    Expose,
    From,
    Healthcheck,
    Instruction,
    KeyValue,
    Label,
    Maintainer,
    Mount,
    MountType,
    NetworkMode,
    Onbuild,
    Run,
    SecurityMode,
    Shell,
    SourceContent,
    StopSignal,
    User,
    Volume,
    Workdir,
    parse_dockerfile,
    parse_go_duration,
    parse_ram_size,
)
from builder.frontend.parser import parse
from tests.helpers.tools import CONFORMANCE


def typed(source: str, file: str = "Dockerfile"):
    return parse_dockerfile(parse(source, file))


def one(body: str) -> Instruction:
    """The single instruction after ``FROM scratch``."""
    dockerfile = typed("FROM scratch\n" + body)
    (ins,) = dockerfile.stages[0].commands
    return ins


def error(source: str) -> DockerfileError:
    with pytest.raises(DockerfileError) as info:
        typed(source)
    return info.value


# --------------------------------------------------------------------------- FROM and stages


def test_from_with_stage_name_and_platform():
    df = typed("FROM --platform=linux/arm64 Alpine:3.19 As Build\nRUN true\n")
    stage = df.stages[0]
    assert stage.from_ == From(
        location=stage.from_.location, base_name="Alpine:3.19", stage_name="build",
        platform="linux/arm64",
    )
    assert (stage.name, stage.base_name, stage.platform, stage.index) == (
        "build", "Alpine:3.19", "linux/arm64", 0)
    assert stage.location.start_line == 1


def test_meta_args_and_stages():
    df = typed("ARG A=1\nARG B\nFROM x AS one\nRUN a\nFROM one\nCOPY --from=one / /\n")
    assert [a.args for a in df.meta_args] == [(ArgSpec("A", "1"),), (ArgSpec("B"),)]
    assert [(s.index, s.name, s.base_name) for s in df.stages] == [(0, "one", "x"), (1, None, "one")]
    assert [type(c) for c in df.stages[0].commands] == [Run]
    assert df.find_stage("ONE") is df.stages[0]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("FROM a b", "FROM requires either one or three arguments"),
        ("FROM a AS 1x", 'invalid name for build stage: "1x"'),
        ("FROM a AS b$c", 'invalid name for build stage: "b$c"'),
        ("FROM --plaform=x a", "unknown flag: --plaform (did you mean --platform?)"),
        ("FROM --platform a", "missing a value on flag: platform"),
        ("RUN true", "no build stage in current context"),
    ],
)
def test_from_errors(source, message):
    err = error(source)
    assert isinstance(err, InstructionError)
    assert message in str(err)
    assert err.line == 1
    assert str(err).startswith("Dockerfile:1: ")


# --------------------------------------------------------------------------- RUN


def test_run_shell_and_exec_form():
    shell = one("RUN echo $HOME && ls\n")
    assert isinstance(shell, Run)
    assert shell.command == ("echo $HOME && ls",)
    assert shell.prepend_shell
    exec_ = one('RUN ["echo", "$HOME"]\n')
    assert exec_.command == ("echo", "$HOME")
    assert not exec_.prepend_shell


def test_run_heredoc():
    run = one("RUN <<EOF\necho hi\nEOF\n")
    assert run.command == ("<<EOF",)
    assert [(f.name, f.data, f.chomp) for f in run.files] == [("EOF", "echo hi\n", False)]
    assert (run.start_line, run.end_line) == (2, 4)


def test_run_mounts_all_types_and_options():
    run = one(
        "RUN --mount=type=bind,source=/src,target=/dst,from=build,rw "
        "--mount=type=cache,dst=/root/.cache,id=pip,sharing=locked,mode=0700,uid=1000,gid=1000 "
        "--mount=type=tmpfs,destination=/tmp,size=64m "
        "--mount=type=secret,id=token,env=TOKEN,required "
        "--mount=type=ssh,required=false "
        "--mount=target=/ctx,readonly=false "
        "make\n"
    )
    assert run.mounts == (
        Mount(MountType.BIND, target="/dst", source="/src", from_="build", readonly=False),
        Mount(MountType.CACHE, target="/root/.cache", id="pip", readonly=False,
              sharing=CacheSharing.LOCKED, mode=0o700, uid=1000, gid=1000),
        Mount(MountType.TMPFS, target="/tmp", readonly=False, size=64 << 20),
        Mount(MountType.SECRET, id="token", env="TOKEN", required=True, readonly=True),
        Mount(MountType.SSH, required=False, readonly=True),
        Mount(MountType.BIND, target="/ctx", readonly=False),
    )
    assert len(run.mount_specs) == 6


def test_run_mount_defaults():
    (bind,) = one("RUN --mount=target=/x ls\n").mounts
    assert bind.type is MountType.BIND and bind.readonly
    (cache,) = one("RUN --mount=type=cache,target=/x ls\n").mounts
    assert not cache.readonly and cache.sharing is CacheSharing.SHARED


def test_run_network_security_device():
    run = one("RUN --network=none --security=insecure --device=vendor.com/gpu=all,required x\n")
    assert run.network is NetworkMode.NONE
    assert run.security is SecurityMode.INSECURE
    assert run.devices == (Device("vendor.com/gpu=all", True),)
    host = one("RUN --network=host x\n")
    assert host.network is NetworkMode.HOST and host.security is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--mount=type=bnd,target=/x", 'unsupported mount type "bnd" (did you mean bind?)'),
        ("--mount=from=$STAGE,target=/x",
         "'from' doesn't support variable expansion, define alias stage instead"),
        ("--mount=type=bind,target=/x,mode=0700", 'mode not allowed for "bind" type mounts'),
        ("--mount=type=cache,target=/x,size=1g", "unexpected key 'size' for mount type 'cache'"),
        ("--mount=type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
        ("--mount=type=cache,target=/x,sharing=everyone", 'unsupported sharing value "everyone"'),
        ("--mount=type=secret,from=x,target=/s", "secret mount should not have a from"),
        ("--mount=type=bind,target=/x,required", "unexpected key 'required' for mount type 'bind'"),
        ("--mount=type=cache,target=/x,uid=me", "invalid value me for uid"),
        ("--mount=type=bind,targte=/x", "unexpected key 'targte' in 'targte=/x' (did you mean target?)"),
        ("--mount=type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
        ("--mount=type=tmpfs,target=/", 'invalid mount target "/"'),
        ("--mount=type=cache,target=//./", 'invalid mount target "//./"'),
        ("--network=bridge", 'invalid network mode "bridge" (use default, none or host)'),
        ("--security=weak", 'security "weak" is not valid (use sandbox or insecure)'),
        ("--privileged", "unknown flag: --privileged"),
        ("--network=none --network=host", "duplicate flag specified: network"),
    ],
)
def test_run_flag_errors(flags, message):
    err = error(f"FROM scratch\nRUN {flags} true\n")
    assert isinstance(err, InstructionError)
    assert message in str(err)
    assert err.line == 2
    assert f"   2 | RUN {flags} true" in str(err)


def test_run_mount_values_with_variables_wait_for_expansion():
    run = one("RUN --mount=type=cache,target=$HOME/.cache,uid=$UID ls\n")
    (mount,) = run.mounts
    assert mount.target is None and mount.uid is None  # decided after expansion
    assert run.mount_specs == ("type=cache,target=$HOME/.cache,uid=$UID",)


# --------------------------------------------------------------------------- CMD / ENTRYPOINT / SHELL


def test_cmd_and_entrypoint_forms():
    assert one('CMD ["a", "b"]\n') == Cmd(location=one('CMD ["a", "b"]\n').location,
                                          command=("a", "b"), prepend_shell=False)
    assert one("CMD echo hi\n").command == ("echo hi",)
    assert one("CMD []\n").command == ()
    assert one("ENTRYPOINT []\n").command is None
    entry = one("ENTRYPOINT exec nginx -g 'daemon off;'\n")
    assert isinstance(entry, Entrypoint)
    assert entry.command == ("exec nginx -g 'daemon off;'",) and entry.prepend_shell


def test_malformed_json_is_shell_form():
    cmd = one("CMD ['single', 'quotes']\n")
    assert cmd.prepend_shell and cmd.command == ("['single', 'quotes']",)


def test_shell():
    assert one('SHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n') == Shell(
        location=one('SHELL ["x"]\n').location.__class__("Dockerfile", 2, 2),
        shell=("/bin/bash", "-eo", "pipefail", "-c"),
    )
    assert "SHELL requires the arguments to be in JSON form" in str(error("FROM a\nSHELL bash -c\n"))
    assert "SHELL requires at least one argument" in str(error("FROM a\nSHELL []\n"))


@pytest.mark.parametrize("keyword", ["CMD", "ENTRYPOINT", "ENV", "LABEL", "USER", "WORKDIR",
                                     "EXPOSE", "VOLUME", "ARG", "STOPSIGNAL", "MAINTAINER"])
def test_flags_on_instructions_that_take_none(keyword):
    err = error(f"FROM a\n{keyword} --foo=bar x=y\n")
    assert f"unknown flag: --foo ({keyword} takes no flags)" in str(err)


# --------------------------------------------------------------------------- ENV / LABEL / ARG


def test_env_both_forms():
    env = one('ENV A=1 B="two words" C=\n')
    assert isinstance(env, Env)
    assert env.pairs == (KeyValue("A", "1"), KeyValue("B", '"two words"'), KeyValue("C", ""))
    legacy = one("ENV PATH /usr/local/bin:$PATH\n")
    assert legacy.pairs == (KeyValue("PATH", "/usr/local/bin:$PATH", no_delim=True),)


def test_label_and_maintainer():
    label = one('LABEL org.opencontainers.image.title="x y" version=1\n')
    assert isinstance(label, Label)
    assert label.pairs == (KeyValue("org.opencontainers.image.title", '"x y"'), KeyValue("version", "1"))
    assert one("MAINTAINER Jane <jane@example.com>\n") == Maintainer(
        location=label.location, maintainer="Jane <jane@example.com>")


def test_arg_several_per_line():
    arg = one('ARG A B=2 C="three four"\n')
    assert isinstance(arg, Arg)
    assert arg.args == (ArgSpec("A"), ArgSpec("B", "2"), ArgSpec("C", '"three four"'))
    assert "ARG names can not be blank" in str(error("FROM a\nARG =x\n"))
    assert "ARG requires at least one argument" in str(error("FROM a\nARG\n"))


def test_arg_and_stage_descriptions():
    df = typed("# build compiles things\nFROM a AS build\n# VERSION the release\nARG VERSION=1\n")
    assert df.stages[0].from_.comment == "compiles things"
    assert df.stages[0].commands[0].args[0].comment == "the release"


# --------------------------------------------------------------------------- simple ones


def test_expose_user_workdir_volume_stopsignal():
    assert one("EXPOSE 8080/udp 80 443/tcp\n").ports == ("443/tcp", "80", "8080/udp")
    assert one("USER app:app\n") == User(location=one("USER x\n").location, user="app:app")
    assert one("WORKDIR /srv/app\n") == Workdir(location=one("USER x\n").location, path="/srv/app")
    assert one('VOLUME ["/data", "/var/log"]\n').volumes == ("/data", "/var/log")
    assert one("VOLUME /a /b\n").volumes == ("/a", "/b")
    assert one("STOPSIGNAL SIGQUIT\n") == StopSignal(location=one("USER x\n").location, signal="SIGQUIT")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("USER", "USER requires exactly one argument"),
        ("WORKDIR", "WORKDIR requires exactly one argument"),
        ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
        ("MAINTAINER", "MAINTAINER requires exactly one argument"),
        ("EXPOSE", "EXPOSE requires at least one argument"),
        ("VOLUME", "VOLUME requires at least one argument"),
        ('VOLUME [""]', "VOLUME specified can not be an empty string"),
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("ONBUILD", "ONBUILD requires at least one argument"),
        ("COPY onlyone", "COPY requires at least two arguments, but only one was provided."),
        ("ADD onlyone", "ADD requires at least two arguments, but only one was provided."),
    ],
)
def test_argument_count_errors(line, message):
    err = error(f"FROM a\n\n{line}\n")
    assert message in str(err)
    assert err.line == 3
    assert f"   3 | {line}" in str(err)


# --------------------------------------------------------------------------- COPY / ADD


def test_copy_flags():
    copy = one("COPY --from=build --chown=app:app --chmod=0755 --link --parents "
               "--exclude=*.pyc --exclude=.git a/ b/ /dest/\n")
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest, copy.from_, copy.chown, copy.chmod) == (
        ("a/", "b/"), "/dest/", "build", "app:app", "0755")
    assert copy.link and copy.parents
    assert copy.excludes == ("*.pyc", ".git")


def test_copy_json_form_keeps_spaces():
    copy = one('COPY ["my file.txt", "/dest dir/"]\n')
    assert copy.sources == ("my file.txt",) and copy.dest == "/dest dir/" and copy.json_form


def test_add_flags():
    add = one("ADD --chown=1:2 --chmod=u+x --link --checksum=sha256:abc --keep-git-dir "
              "--unpack=false --exclude=x https://example.com/a.tar.gz /opt/\n")
    assert isinstance(add, Add)
    assert (add.chown, add.chmod, add.checksum, add.link, add.keep_git_dir, add.unpack) == (
        "1:2", "u+x", "sha256:abc", True, True, False)
    assert add.excludes == ("x",)
    assert one("ADD a b\n").unpack is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("COPY --form=a b c", "unknown flag: --form (did you mean --from?)"),
        ("ADD --from=a b c", "unknown flag: --from"),
        ("COPY --link=maybe a b", "expecting boolean value for flag link, not: maybe"),
        ("COPY --link= a b", "missing a value on flag: link"),
        ("COPY --chown a b", "missing a value on flag: chown"),
        ("COPY --from=$STAGE a b",
         "variable expansion is not supported for --from, define a new stage with FROM using "
         "ARG from global scope as a workaround"),
        ("COPY --chmod=64a a b",
         "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"),
        ("COPY --from=a --from=b x y", "duplicate flag specified: from"),
        ("COPY --chmod=10000 a b",
         "invalid chmod parameter: '10000'. it should be octal string and between 0 and 07777"),
        ("ADD --chmod=u+q a b",
         "invalid chmod parameter: 'u+q'. it should be octal string and between 0 and 07777"),
    ],
)
def test_copy_add_errors(line, message):
    err = error(f"FROM a\n{line}\n")
    assert message in str(err)
    assert err.line == 2


@pytest.mark.parametrize("chmod", ["go=u-w", "u+r-w", "u=g", "u=rwX,go=rX", "=rw,+X", "a+t", "g+s,o-rwx"])
def test_copy_takes_every_symbolic_mode_buildkit_parses(chmod):
    """BuildKit accepts whatever its mode library parses; the frontend refused go=u-w and u+r-w."""
    assert one(f"COPY --chmod={chmod} a b").chmod == chmod



def test_copy_heredocs():
    copy = one("COPY <<EOF <<'RAW' /dest/\nhello $NAME\nEOF\nraw $NAME\nRAW\n")
    assert copy.sources == ()
    assert copy.contents == (
        SourceContent("EOF", "hello $NAME\n", True),
        SourceContent("RAW", "raw $NAME\n", False),
    )
    chomped = one("COPY <<-EOT /x\n\tindented\n\tEOT\n")
    assert chomped.contents == (SourceContent("EOT", "indented\n", True),)
    err = error("FROM a\nCOPY x <<EOF\nbody\nEOF\n")
    assert "COPY cannot accept a heredoc as a destination" in str(err)


# --------------------------------------------------------------------------- ONBUILD / HEALTHCHECK


def test_onbuild_keeps_the_trigger_and_validates_it():
    onbuild = one("ONBUILD COPY --chown=app . /app\n")
    assert isinstance(onbuild, Onbuild)
    assert onbuild.expression == "COPY --chown=app . /app"
    assert isinstance(onbuild.trigger, Copy) and onbuild.trigger.chown == "app"
    assert "unknown flag: --chwn" in str(error("FROM a\nONBUILD COPY --chwn=x a b\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
        ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
        ("ONBUILD MAINTAINER x", "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ],
)
def test_onbuild_forbidden_triggers(line, message):
    err = error(f"FROM a\n{line}\n")
    assert message in str(err) and err.line == 2


def test_healthcheck_none_and_cmd():
    none = one("HEALTHCHECK NONE\n")
    assert isinstance(none, Healthcheck) and none.health.test == ("NONE",)
    check = one("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=2.5s "
                "--start-interval=100ms --retries=3 CMD curl -f http://localhost/\n")
    h = check.health
    assert h.test == ("CMD-SHELL", "curl -f http://localhost/")
    assert (h.interval, h.timeout, h.start_period, h.start_interval, h.retries) == (
        90_000_000_000, 5_000_000_000, 2_500_000_000, 100_000_000, 3)
    assert one('HEALTHCHECK CMD ["/bin/check", "-q"]\n').health.test == ("CMD", "/bin/check", "-q")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CONNECT TCP 7000", 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK --interval=10 CMD x", 'time: missing unit in duration "10"'),
        ("HEALTHCHECK --timeout=5x CMD x", 'time: unknown unit "x" in duration "5x"'),
        ("HEALTHCHECK --interval=10us CMD x", 'Interval "interval" cannot be less than 1ms'),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retires=1 CMD x", "unknown flag: --retires (did you mean --retries?)"),
    ],
)
def test_healthcheck_errors(line, message):
    err = error(f"FROM a\n{line}\n")
    assert message in str(err) and err.line == 2


def test_go_durations_and_sizes():
    assert parse_go_duration("1h2m3s") == 3_723_000_000_000
    assert parse_go_duration("1.5h") == 5_400_000_000_000
    assert parse_go_duration("0") == 0
    assert parse_go_duration("300µs") == 300_000
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration("")
    assert parse_ram_size("64m") == 64 << 20
    assert parse_ram_size("1GiB") == 1 << 30
    assert parse_ram_size("512") == 512


# --------------------------------------------------------------------------- unknown instructions


def test_unknown_instruction_suggests():
    err = error("FROM a\nFORM b\n")
    assert isinstance(err, ParseError)
    assert str(err).startswith("Dockerfile:2: unknown instruction: FORM (did you mean FROM?)")
    assert "   2 | FORM b" in str(err)
    err = error("FROM a\nXYZZY b\n")
    assert "did you mean" not in str(err)


def test_error_names_the_file():
    with pytest.raises(InstructionError) as info:
        typed("FROM a\nUSER\n", "app/Dockerfile.dev")
    assert str(info.value).startswith("app/Dockerfile.dev:2: USER requires exactly one argument")


# --------------------------------------------------------------------------- behaviour by type


def test_which_types_expand():
    expands = {From, Env, Label, Expose, Add, Copy, Volume, User, Workdir, StopSignal, Run}
    for cls in (From, Run, Cmd, Entrypoint, Shell, Env, Label, Maintainer, Expose, Add, Copy,
                Volume, User, Workdir, Arg, Onbuild, StopSignal, Healthcheck):
        assert (cls in expands) == hasattr(cls, "expand"), cls
        assert cls.__doc__ and cls.__doc__.startswith(cls.__name__.upper()), cls


class _Upper:
    """A stand-in expander: shows which fields an instruction passes through expansion."""

    def word(self, text: str) -> str:
        return text.upper()

    def words(self, text: str) -> list[str]:
        return text.upper().split()

    def raw(self, text: str) -> str:
        return "raw:" + text


def test_expand_touches_exactly_the_expanded_fields():
    copy = one("COPY --from=build --chown=app --exclude=x <<EOF a /d\nbody\nEOF\n")
    assert isinstance(copy, Expandable)
    e = copy.expand(_Upper())
    assert (e.sources, e.dest, e.chown, e.from_, e.excludes) == (("A",), "/D", "APP", "build", ("x",))
    assert e.contents == (SourceContent("EOF", "raw:body\n", True),)
    assert copy.sources == ("a",)  # the original is unchanged (frozen values)
    run = one("RUN --mount=type=cache,target=/c$x echo $x\n").expand(_Upper())
    assert run.command == ("echo $x",) and run.mounts[0].target == "/C$X"
    expose = one("EXPOSE 80/tcp\n").expand(_Upper())
    assert expose.ports == ("80/TCP",)


# --------------------------------------------------------------------------- the real-world corpus

REAL_WORLD = sorted((CONFORMANCE / "real-world").glob("*/*/Dockerfile"))


def test_real_world_corpus_is_complete():
    assert len(REAL_WORLD) == 208


@pytest.mark.parametrize("path", REAL_WORLD, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_real_world_dockerfile_types(path: Path):
    df = typed(path.read_text(), str(path))
    assert df.stages, "every corpus file has at least one stage"
    count = len(df.meta_args) + sum(1 + len(s.commands) for s in df.stages)
    assert count == len(df.parsed.nodes)
    for stage in df.stages:
        for ins in stage.commands:
            assert ins.start_line <= ins.end_line
            assert ins.to_json()["instruction"] == ins.name


def test_real_world_corpus_totals():
    """The counts real-world/ORACLE.md reports: 3031 instructions, 268 in JSON form, 14 multi-stage."""
    total = exec_form = multi_stage = copy_from = run_mounts = 0
    for path in REAL_WORLD:
        df = typed(path.read_text(), str(path))
        total += len(df.parsed.nodes)
        exec_form += sum(1 for n in df.parsed.nodes if n.json_form)
        multi_stage += len(df.stages) > 1
        for stage in df.stages:
            copy_from += sum(1 for c in stage.commands if isinstance(c, Copy) and c.from_)
            run_mounts += sum(len(c.mounts) for c in stage.commands if isinstance(c, Run))
    assert (total, exec_form, multi_stage, copy_from, run_mounts) == (3031, 268, 14, 20, 2)


def test_go_duration_sums_its_parts():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    units = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000,
             "us": 1_000, "ns": 1}
    parts = st.lists(st.tuples(st.integers(0, 999), st.sampled_from(sorted(units))), min_size=1, max_size=4)

    @settings(max_examples=100, deadline=None)
    @given(parts)
    def check(items):
        text = "".join(f"{n}{u}" for n, u in items)
        assert parse_go_duration(text) == sum(n * units[u] for n, u in items)
        assert parse_go_duration("-" + text) == -parse_go_duration(text)

    check()
