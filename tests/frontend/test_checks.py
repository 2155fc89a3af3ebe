"""Build checks: every rule, firing and not firing, with BuildKit's names and messages; # check= directives."""

from __future__ import annotations

import pytest

from builder.errors import DockerfileError, LintError
from builder.frontend.checks import RULES, CheckConfig, Warning, run_checks
from builder.frontend.expand import format_platform
from builder.frontend.instructions import parse_dockerfile
from builder.frontend.parser import parse

KNOWN_ENV = {"busybox": ["PATH=/bin", "HOME=/root"], "golang:1": ["PATH=/go/bin:/bin", "GOPATH=/go"]}


def base_env(image: str):
    return KNOWN_ENV.get(image)


def check(source: str, **kwargs) -> list[Warning]:
    kwargs.setdefault("base_env", base_env)
    return run_checks(parse_dockerfile(parse(source)), **kwargs).warnings


def fired(source: str, rule: str, **kwargs) -> list[tuple[int, str]]:
    return [(w.start_line, w.message) for w in check(source, **kwargs) if w.rule == rule]


CASES = [
    # (rule, bad Dockerfile, [(line, message)], good Dockerfile)
    ("JSONArgsRecommended", "FROM busybox\nCMD echo hi\nENTRYPOINT run.sh\n",
     [(2, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"),
      (3, "JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals")],
     'FROM busybox\nCMD ["echo", "hi"]\nSHELL ["/bin/bash", "-c"]\nENTRYPOINT run.sh\n'),
    ("StageNameCasing", "FROM busybox AS Builder\n", [(1, "Stage name 'Builder' should be lowercase")],
     "FROM busybox AS builder\n"),
    ("FromAsCasing", "FROM busybox as build\n",
     [(1, "'as' and 'FROM' keywords' casing do not match")], "from busybox as build\n"),
    ("ConsistentInstructionCasing", "FROM busybox\nrun true\nRUN true\nRun x\n",
     [(2, "Command 'run' should match the case of the command majority (uppercase)"),
      (4, "Command 'Run' should match the case of the command majority (uppercase)")],
     "ARG X\nfrom busybox\nrun true\n"),
    ("DuplicateStageName", "FROM busybox AS a\nFROM busybox AS A\n",
     [(2, 'Duplicate stage name "a", stage names should be unique')],
     "FROM busybox AS a\nFROM busybox AS b\n"),
    ("ReservedStageName", "FROM busybox AS scratch\nFROM busybox AS context\n",
     [(1, 'Stage name should not use the same name as reserved stage "scratch"'),
      (2, 'Stage name should not use the same name as reserved stage "context"')],
     "FROM busybox AS scratchpad\n"),
    ("MaintainerDeprecated", "FROM busybox\nMAINTAINER me\n",
     [(2, "Maintainer instruction is deprecated in favor of using label")],
     "FROM busybox\nLABEL org.opencontainers.image.authors=me\n"),
    ("UndefinedVar", "FROM busybox\nENV A=$HOME B=$NOT_DEFINED\nWORKDIR $HOMR\nRUN echo $NOPE_IN_RUN\n",
     [(2, "Usage of undefined variable '$NOT_DEFINED'"),
      (3, "Usage of undefined variable '$HOMR' (did you mean $HOME?)")],
     "FROM busybox\nARG V\nENV A=$HOME B=$V C=${HOME:-x}\nCOPY $A /x\n"),
    ("UndefinedArgInFrom", "ARG VERSION=1\nFROM golang:${VERSON}\n",
     [(2, "FROM argument 'VERSON' is not declared (did you mean VERSION?)")],
     "ARG VERSION=1\nFROM golang:${VERSION}\nFROM --platform=$BUILDPLATFORM busybox\n"),
    ("InvalidDefaultArgInFrom", "ARG TAG\nFROM busybox:${TAG}\nARG IMG\nFROM $IMG\n",
     [(2, "Default value for ARG busybox:${TAG} results in empty or invalid base image name"),
      (4, "Default value for ARG $IMG results in empty or invalid base image name")],
     "ARG TAG=1\nFROM busybox:${TAG}\nARG TAG2\nFROM busybox:latest${TAG2}\n"),
    ("WorkdirRelativePath", "FROM busybox\nWORKDIR app\n",
     [(2, 'Relative workdir "app" can have unexpected results if the base image changes')],
     "FROM busybox\nWORKDIR /srv\nWORKDIR app\n"),
    ("LegacyKeyValueFormat", "FROM busybox\nENV A 1\nLABEL b 2\n",
     [(2, '"ENV key=value" should be used instead of legacy "ENV key value" format'),
      (3, '"LABEL key=value" should be used instead of legacy "LABEL key value" format')],
     "FROM busybox\nENV A=1\nLABEL b=2\n"),
    ("MultipleInstructionsDisallowed",
     'FROM busybox\nCMD ["a"]\nCMD ["b"]\nHEALTHCHECK NONE\nHEALTHCHECK NONE\nENTRYPOINT ["x"]\n',
     [(2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
      (4, "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used")],
     'FROM busybox\nCMD ["a"]\nFROM busybox\nCMD ["b"]\n'),
    ("SecretsUsedInArgOrEnv", "FROM busybox\nARG DB_PASSWORD=x\nENV GITHUB_TOKEN=t\n",
     [(2, 'Do not use ARG or ENV instructions for sensitive data (ARG "DB_PASSWORD")'),
      (3, 'Do not use ARG or ENV instructions for sensitive data (ENV "GITHUB_TOKEN")')],
     # BuildKit checks ARGs as stages declare them, not the global ones.
     "ARG API_KEY\nFROM busybox\nARG PUBLIC_KEY\nENV KEYBOARD=us TOKENIZER=x MONKEY=1\n"
     "ARG SESSION_SECRET_FILE\nENV AUTH_MODULE_VERSION=2\n"),
    ("RedundantTargetPlatform", "FROM --platform=$TARGETPLATFORM busybox\n",
     [(1, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior")],
     "FROM --platform=$BUILDPLATFORM busybox\nFROM --platform=${TARGETOS}/${TARGETARCH} busybox\n"),
    ("FromPlatformFlagConstDisallowed", "FROM --platform=linux/amd64 busybox AS build\n",
     [(1, 'FROM --platform flag should not use constant value "linux/amd64"')],
     "FROM --platform=linux/amd64 busybox AS build-amd64\nFROM --platform=$BUILDPLATFORM busybox\n"),
    ("NoEmptyContinuation", "FROM busybox\nRUN echo a \\\n\n  b\n",
     [(4, "Empty continuation line")], "FROM busybox\nRUN echo a \\\n# comment\n  b\n"),
    ("ExposeProtoCasing", "FROM busybox\nEXPOSE 80/TcP\n",
     [(2, "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase")],
     "FROM busybox\nEXPOSE 80/tcp 53/udp 8080\n"),
    ("ExposeInvalidFormat", "FROM busybox\nENV P=8080:80\nEXPOSE 127.0.0.1:80:80 $P\n",
     [(3, "EXPOSE instruction should not define an IP address or host-port mapping, found '8080:80'"),
      (3, "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'")],
     "FROM busybox\nEXPOSE 80 443/tcp 1000-2000/udp\n"),
    ("InvalidDefinitionDescription",
     "# check=experimental=InvalidDefinitionDescription\n\n# a comment\nFROM busybox AS base\n# another\nARG VERSION=1\n",
     [(4, "Comment for FROM should follow the format: `# base <description>`"),
      (6, "Comment for ARG should follow the format: `# VERSION <description>`")],
     "# check=experimental=InvalidDefinitionDescription\n\n# base is the base\nFROM busybox AS base\n"
     "# VERSION picks the release\nARG VERSION=1\nARG OTHER\n"),
]


def test_every_rule_has_a_case():
    assert {c[0] for c in CASES} | {"CopyIgnoredFile", "InvalidBaseImagePlatform"} == set(RULES)


COPY_IGNORED = [
    # (.dockerignore, Dockerfile, [(line, message)]): BuildKit's testCopyIgnoredFiles and the
    # context-root and negation cases of its later fixes (moby/buildkit#6534, #6930).
    ("\nDockerfile\n", "\nFROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\n",
     [(3, 'Attempting to Copy file "Dockerfile" that is excluded by .dockerignore'),
      (4, 'Attempting to Add file "Dockerfile" that is excluded by .dockerignore')]),
    ("\nfoobar\n", "\nFROM scratch AS base\nCOPY Dockerfile /foobar\nADD Dockerfile /windy\n\n"
     "FROM base\nCOPY --from=base /foobar /Dockerfile\n", []),
    ("secret.txt\nlogs\n", "FROM scratch\nCOPY secret.txt ./app /x/\nCOPY --from=other secret.txt /y\n"
     "ADD ./logs/a.log https://example.com/x /z\nCOPY <<EOF /secret.txt\nx\nEOF\n",
     [(2, 'Attempting to Copy file "secret.txt" that is excluded by .dockerignore'),
      (4, 'Attempting to Add file "logs/a.log" that is excluded by .dockerignore')]),
    ("*\n!src\n", "FROM scratch\nCOPY src /src\nCOPY other /other\n", []),  # a "!" anywhere: no guess
    (".*\n", "FROM scratch\nCOPY . /app\nCOPY .env /\n",
     [(3, 'Attempting to Copy file ".env" that is excluded by .dockerignore')]),
    ("**\n", "FROM scratch\nCOPY . /app\nCOPY ./ /app2\n",
     [(2, 'Attempting to Copy file "." that is excluded by .dockerignore'),
      (3, 'Attempting to Copy file "." that is excluded by .dockerignore')]),
    ("logs\n", "FROM scratch\nCOPY . /app\n", []),
]


@pytest.mark.parametrize(("ignore", "source", "expected"), COPY_IGNORED)
def test_copy_ignored_file(ignore, source, expected):
    from builder.frontend.dockerignore import PatternMatcher

    matcher = PatternMatcher.from_file_text(ignore)
    assert fired(source, "CopyIgnoredFile", ignore=matcher) == expected
    skipped = "# check=skip=CopyIgnoredFile\n" + source.lstrip("\n")
    assert fired(skipped, "CopyIgnoredFile", ignore=matcher) == []


def test_copy_ignored_file_is_no_longer_experimental():
    """Dockerfile frontends since early 2026 run it by default (docker 29.2 warns on COPY . . under
    a catch-all .dockerignore without any # check=)."""
    assert not RULES["CopyIgnoredFile"].experimental
    assert [r for r in RULES.values() if r.experimental] == [RULES["InvalidDefinitionDescription"]]


@pytest.mark.parametrize(("rule", "bad", "expected", "good"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_and_does_not(rule, bad, expected, good):
    assert fired(bad, rule) == expected
    assert fired(good, rule) == []


def test_from_as_casing_leaves_a_mixed_case_from_to_the_casing_rule():
    """BuildKit's testConsistentInstructionCasing: ``From scratch as base`` is one warning, not two."""
    source = "\n#\n#\nFrom scratch as base\nFROM scratch AS base2\n"
    assert [(w.start_line, w.rule, w.message) for w in check(source)] == [
        (4, "ConsistentInstructionCasing",
         "Command 'From' should match the case of the command majority (uppercase)")]
    assert fired("from scratch AS base\n", "FromAsCasing") == [
        (1, "'AS' and 'from' keywords' casing do not match")]


def test_warning_rendering():
    (w,) = [w for w in check("FROM busybox as build\n") if w.rule == "FromAsCasing"]
    assert str(w) == "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match"
    assert w.short() == "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"
    assert w.url == "https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    assert w.to_json()["description"] == RULES["FromAsCasing"].description
    assert (w.file, w.start_line, w.end_line) == ("Dockerfile", 1, 1)


def test_messages_use_the_keyword_as_written():
    source = "from busybox\ncmd echo a\ncmd echo b\nenv A 1\n"
    messages = [w.message for w in check(source)]
    assert "JSON arguments recommended for cmd to prevent unintended behavior related to OS signals" in messages
    assert ("Multiple cmd instructions should not be used in the same stage because only the last "
            "one will be used") in messages
    assert '"env key=value" should be used instead of legacy "env key value" format' in messages


def test_experimental_rule_is_off_by_default():
    assert fired("# nope\nFROM busybox AS base\n", "InvalidDefinitionDescription") == []
    assert RULES["InvalidDefinitionDescription"].experimental


def test_base_image_config_shell_and_platform():
    """BuildKit reads the base image's config: a SHELL there makes a shell-form CMD deliberate,
    and an image for another platform than the build's is InvalidBaseImagePlatform (no URL)."""
    from builder.frontend.checks import BaseImage
    from builder.image.platform import Platform

    host = Platform.host()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    images = {"shelled": BaseImage(("PATH=/bin",), ("/bin/bash", "-c"), host),
              "foreign": BaseImage(("PATH=/bin",), (), other)}
    source = "FROM shelled\nCMD run\nFROM foreign\nCMD run\nFROM --platform=$BUILDPLATFORM shelled\n"
    found = check(source, base_env=images.get)
    assert [(w.start_line, w.rule, w.message) for w in found] == [
        (3, "InvalidBaseImagePlatform",
         f'Base image foreign was pulled with platform "linux/{other.architecture}", expected '
         f'"{format_platform(host)}" for current build'),
        (4, "JSONArgsRecommended",
         "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals")]
    assert found[0].url == "" and "url" not in found[0].to_json()  # Go's omitempty


def test_undefined_var_is_quiet_when_the_base_env_is_unknown():
    source = "FROM unknown-image\nENV A=$MAYBE_FROM_BASE\n"
    assert fired(source, "UndefinedVar") == []
    assert fired("FROM scratch\nENV A=$NOPE\n", "UndefinedVar") == [
        (2, "Usage of undefined variable '$NOPE'")]


def test_undefined_var_counts_names_with_a_default():
    """BuildKit's lexer reports ${X:-default} as an unmatched name, so the rule fires."""
    assert fired("FROM scratch\nENV A=${UNSET:-default}\n", "UndefinedVar") == [
        (2, "Usage of undefined variable '$UNSET'")]


def test_expansion_failures_wait_for_a_known_base_env():
    source = "FROM unknown-image\nRUN --mount=type=cache,target=/c,uid=$MAYBE x\nWORKDIR ${MAYBE:?}\n"
    assert fired(source, "UndefinedVar") == []  # no error either: the image might set MAYBE
    with pytest.raises(DockerfileError, match="invalid value  for uid"):
        check(source.replace("unknown-image", "busybox"))


def test_undefined_var_follows_the_parent_stage():
    source = "FROM busybox AS base\nENV FROM_BASE=1\nFROM base\nENV A=$FROM_BASE B=$NOT_SET\n"
    assert fired(source, "UndefinedVar") == [(4, "Usage of undefined variable '$NOT_SET'")]


ONBUILD_PARENT = ("FROM busybox AS base\nONBUILD CMD echo hi\nONBUILD ENV A 1\nONBUILD WORKDIR rel\n"
                  "ONBUILD COPY $NOPE /x\n")


def test_onbuild_triggers_are_checked_where_they_run():
    """A stage built on one with ONBUILD runs the triggers first; BuildKit checks them there and
    reports them at that stage's FROM line (the ONBUILD lines themselves warn of nothing)."""
    source = ONBUILD_PARENT + "FROM base\nCMD [\"x\"]\n"
    assert sorted((w.start_line, w.rule) for w in check(source)) == [
        (6, "JSONArgsRecommended"), (6, "LegacyKeyValueFormat"), (6, "MultipleInstructionsDisallowed"),
        (6, "UndefinedVar"), (6, "WorkdirRelativePath")]
    assert check(ONBUILD_PARENT) == []


def test_a_base_image_s_onbuild_triggers_are_checked_at_the_from():
    from builder.frontend.checks import BaseImage

    images = {"onbuilt": BaseImage(("PATH=/bin",), on_build=("CMD echo hi", "ENV A 1")),
              "broken": BaseImage(("PATH=/bin",), on_build=("NOPE x",))}
    found = check("FROM busybox\nRUN true\nFROM onbuilt\nFROM broken\n", base_env=images.get)
    assert sorted((w.start_line, w.rule) for w in found) == [(3, "JSONArgsRecommended"), (3, "LegacyKeyValueFormat")]
    assert check("FROM onbuilt AS a\nFROM busybox\n", base_env=images.get, reachable=[1]) == []


def test_onbuild_triggers_run_only_in_stages_the_target_needs():
    """BuildKit sets up the triggers of the target's stages only, even when lint checks them all."""
    source = ONBUILD_PARENT + "FROM base AS child\nFROM busybox\n"
    assert {w.start_line for w in check(source)} == {6}
    assert check(source, reachable=[2]) == []


def test_warnings_before_an_instruction_error():
    """BuildKit's testWarningsBeforeError: the instructions above the one that fails to parse are
    checked as it reads them (not the whole-file rules, which need every instruction)."""
    from builder.frontend.checks import warnings_before_error

    parsed = parse("\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nrun x \\\n\n y\nBADCMD\n")
    with pytest.raises(DockerfileError) as info:
        parse_dockerfile(parsed)
    found = warnings_before_error(parsed, info.value)
    assert [(w.start_line, w.rule) for w in found] == [
        (2, "StageNameCasing"), (3, "MaintainerDeprecated"), (6, "NoEmptyContinuation")]
    assert warnings_before_error(parsed, info.value, config="skip=all") == []


def test_checks_limited_to_the_built_stages():
    source = "FROM busybox AS unused\nWORKDIR rel\nFROM busybox\nWORKDIR other\n"
    assert [line for line, _ in fired(source, "WorkdirRelativePath")] == [2, 4]
    assert [line for line, _ in fired(source, "WorkdirRelativePath", stages=[1])] == [4]


def test_check_directive_skip_and_error():
    source = "# check=skip=FromAsCasing,StageNameCasing\nFROM busybox as Build\nMAINTAINER me\n"
    assert [w.rule for w in check(source)] == ["MaintainerDeprecated"]
    assert check("# check=skip=all\nFROM busybox as Build\nMAINTAINER me\n") == []
    result = run_checks(parse_dockerfile(parse("# check=error=true\nFROM busybox as b\nMAINTAINER x\n")))
    assert result.failed
    err = result.error()
    assert isinstance(err, LintError)
    assert str(err) == "lint violation found for rules: FromAsCasing, MaintainerDeprecated"
    clean = run_checks(parse_dockerfile(parse("# check=error=true\nFROM busybox\n")))
    assert not clean.failed and clean.error() is None


def test_experimental_rules_run_when_asked_even_with_skip_all():
    """BuildKit's Linter.Run looks at ``skip`` only for stable rules (its testCopyIgnoredFiles case
    ``skip=all;experimental=CopyIgnoredFile`` still reports)."""
    source = ("# check=skip=all;experimental=InvalidDefinitionDescription\n# nope\nFROM busybox AS base\n"
              "MAINTAINER me\n")
    assert [(w.start_line, w.rule) for w in check(source)] == [(3, "InvalidDefinitionDescription")]
    skipped = "# check=skip=InvalidDefinitionDescription\n# nope\nFROM busybox AS base\n"
    assert check(skipped) == []  # experimental and not asked for: off, skip or not


def test_check_directive_ends_at_a_space():
    """BuildKit reads a directive's value up to the first space, so a note may follow it."""
    assert check("# check=skip=FromAsCasing // legacy stage names\nFROM busybox as build\n") == []


CHECK_COMMENTS = [
    # (Dockerfile, [(line, rule)]): a "# check=" comment just above an instruction skips (or turns
    # on) rules for that instruction only (BuildKit's WithMergedConfigFromComments).
    ("FROM busybox\n# check=skip=MaintainerDeprecated\nMAINTAINER me\nMAINTAINER you\n",
     [(4, "MaintainerDeprecated")]),
    ("FROM busybox\n# why: legacy\n# check=skip=all\nENV A 1\nENV B 2\n", [(5, "LegacyKeyValueFormat")]),
    ("FROM busybox\n# check=skip=LegacyKeyValueFormat // the old form, on purpose\nENV A 1\n", []),
    ("FROM busybox\n# check=skip=LegacyKeyValueFormat\n\nENV A 1\n", [(4, "LegacyKeyValueFormat")]),
    ("FROM busybox\n# check=skip=JSONArgsRecommended,WorkdirRelativePath\nCMD run\nWORKDIR rel\nCMD again\n",
     [(3, "MultipleInstructionsDisallowed"), (4, "WorkdirRelativePath"), (5, "JSONArgsRecommended")]),
    ("FROM busybox\nCMD [\"a\"]\n# check=skip=MultipleInstructionsDisallowed\nCMD [\"b\"]\n", []),
    ("FROM busybox AS one\n# check=skip=StageNameCasing,FromAsCasing,FromPlatformFlagConstDisallowed\n"
     "FROM --platform=linux/amd64 busybox as Two\nFROM busybox as Three\n",
     [(4, "FromAsCasing"), (4, "StageNameCasing")]),
    ("FROM busybox AS a\n# check=skip=DuplicateStageName,ConsistentInstructionCasing\nfrom busybox AS a\n",
     [(3, "ConsistentInstructionCasing"), (3, "DuplicateStageName"), (3, "FromAsCasing")]),  # file-wide
    ("FROM busybox\n# check=skip\nMAINTAINER me\n", [(3, "MaintainerDeprecated")]),  # unparsable: ignored
    ("FROM busybox\n# check=experimental=InvalidDefinitionDescription\nARG VERSION=1\n"
     "# nope\nARG OTHER\n", [(3, "InvalidDefinitionDescription")]),
]


@pytest.mark.parametrize(("source", "expected"), CHECK_COMMENTS)
def test_check_comment_above_an_instruction(source, expected):
    assert sorted((w.start_line, w.rule) for w in check(source)) == expected


def test_check_comment_does_not_turn_off_error_true():
    result = run_checks(parse_dockerfile(parse(
        "# check=error=true\nFROM busybox\n# check=error=false\nMAINTAINER me\n")))
    assert str(result.error()) == "lint violation found for rules: MaintainerDeprecated"


def test_build_arg_config_overrides_the_directive():
    source = "# check=error=true\nFROM busybox as b\n"
    df = parse_dockerfile(parse(source))
    assert run_checks(df).failed
    assert run_checks(df, config="skip=FromAsCasing;error=true").warnings == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("skip", 'invalid check option "skip"'),
        ("error=maybe", 'failed to parse check option "error=maybe"'),
        ("color=red", 'invalid check option "color"'),
    ],
)
def test_invalid_check_directive(text, message):
    with pytest.raises(DockerfileError) as info:
        run_checks(parse_dockerfile(parse(f"# check={text}\nFROM busybox\n")))
    assert message in str(info.value)
    assert str(info.value).startswith("Dockerfile:1: ")


def test_check_config_parsing():
    config = CheckConfig.parse(" skip = A, B ; error = true ; experimental=all")
    assert config == CheckConfig(frozenset({"A", "B"}), False, True, frozenset(), True)
    assert not config.enabled("A") and config.enabled("C") and config.enabled("InvalidDefinitionDescription")


def test_real_world_corpus_lint_counts():
    """BuildKit-style findings over the 208 real Dockerfiles: the legacy ENV form dominates."""
    from tests.helpers.tools import CONFORMANCE

    counts: dict[str, int] = {}
    for path in sorted((CONFORMANCE / "real-world").glob("*/*/Dockerfile")):
        for w in run_checks(parse_dockerfile(parse(path.read_text(), str(path)))).warnings:
            counts[w.rule] = counts.get(w.rule, 0) + 1
    assert counts == {"LegacyKeyValueFormat": 750, "SecretsUsedInArgOrEnv": 24}
