"""BuildKit's own lint tests (frontend/dockerfile/dockerfile_lint_test.go), case by case: the
Dockerfile, the build args, and the (line, rule, detail) it reports for ``docker build --check``
(every stage, as the lint subrequest walks them). Sorted by line, then detail, as that test does."""

from __future__ import annotations

import pytest

from builder.frontend.checks import RULES, run_checks
from builder.frontend.instructions import parse_dockerfile
from builder.frontend.parser import parse

PATH_ONLY = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def base_env(image: str):
    return PATH_ONLY if image in ("alpine", "busybox", "busybox:latest") else None


JSON_CMD = "JSON arguments recommended for {} to prevent unintended behavior related to OS signals"
MULTIPLE = "Multiple {} instructions should not be used in the same stage because only the last one will be used"
SECRET = 'Do not use ARG or ENV instructions for sensitive data ({} "{}")'

CASES = [
    ("StageName", "\n# warning: stage name should be lowercase\n#\nFROM scratch AS BadStageName\n\n"
     "# warning: 'as' should match 'FROM' cmd casing.\n#\nFROM scratch as base2\n\nFROM scratch AS base3\n", {},
     [(4, "StageNameCasing", "Stage name 'BadStageName' should be lowercase"),
      (8, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match")]),
    ("StageName/from", "\n# warning: 'AS' should match 'from' cmd casing.\n#\nfrom scratch AS base\n\n"
     "from scratch as base2\n", {},
     [(4, "FromAsCasing", "'AS' and 'from' keywords' casing do not match")]),
    ("NoEmptyContinuation", "\nFROM scratch\n# warning: empty continuation line\nCOPY Dockerfile \\\n\n.\n"
     "COPY Dockerfile \\\n.\n", {},
     [(6, "NoEmptyContinuation", "Empty continuation line")]),
    ("Casing/From", "\n# warning: 'FROM' should be either lowercased or uppercased\n#\nFrom scratch as base\n"
     "FROM scratch AS base2\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'From' should match the case of the command majority (uppercase)")]),
    ("Casing/copy", "\nFROM scratch\n# warning: 'copy' should match command majority's casing (uppercase)\n"
     "copy Dockerfile /foo\nCOPY Dockerfile /bar\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'copy' should match the case of the command majority (uppercase)")]),
    ("Casing/frOM", "\n# warning: 'frOM' should be either lowercased or uppercased\n#\nfrOM scratch as base\n"
     "from scratch as base2\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'frOM' should match the case of the command majority (lowercase)")]),
    ("Casing/COPY", "\nfrom scratch\n# warning: 'COPY' should match command majority's casing (lowercase)\n"
     "COPY Dockerfile /foo\ncopy Dockerfile /bar\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'COPY' should match the case of the command majority (lowercase)")]),
    ("Casing/from", "\n#\n#\nfrom scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\nCOPY Dockerfile /baz\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'from' should match the case of the command majority (uppercase)")]),
    ("Casing/FROM", "\n#\n#\nFROM scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\ncopy Dockerfile /baz\n", {},
     [(4, "ConsistentInstructionCasing", "Command 'FROM' should match the case of the command majority (lowercase)")]),
    ("Casing/lower", "\nfrom scratch\ncopy Dockerfile /foo\ncopy Dockerfile /bar\n", {}, []),
    ("Casing/upper", "\nFROM scratch\nCOPY Dockerfile /foo\nCOPY Dockerfile /bar\n", {}, []),
    ("Casing/heredoc", "\nFROM alpine\nRUN <<'EOT'\nenv\nEOT\n", {}, []),
    ("DuplicateStageName", "\nFROM scratch AS b\nFROM scratch AS b\n", {},
     [(3, "DuplicateStageName", 'Duplicate stage name "b", stage names should be unique')]),
    ("DuplicateStageName/none", "\nFROM scratch AS b1\nFROM scratch AS b2\n", {}, []),
    ("ReservedStageName", "\nFROM scratch AS scratch\nFROM scratch AS context\n", {},
     [(2, "ReservedStageName", 'Stage name should not use the same name as reserved stage "scratch"'),
      (3, "ReservedStageName", 'Stage name should not use the same name as reserved stage "context"')]),
    ("ReservedStageName/none", "\nFROM scratch\nFROM scratch AS a\n", {}, []),
    ("JSONArgs/CMD", "\nFROM scratch\nCMD mycommand\n", {}, [(3, "JSONArgsRecommended", JSON_CMD.format("CMD"))]),
    ("JSONArgs/ENTRYPOINT", "\nFROM scratch\nENTRYPOINT mycommand\n", {},
     [(3, "JSONArgsRecommended", JSON_CMD.format("ENTRYPOINT"))]),
    ("JSONArgs/SHELL", '\nFROM scratch\nSHELL ["/usr/bin/customshell"]\nCMD mycommand\n', {}, []),
    ("JSONArgs/SHELL-base", '\nFROM scratch AS base\nSHELL ["/usr/bin/customshell"]\n\nFROM base\n'
     "ENTRYPOINT mycommand\n", {}, []),
    ("MaintainerDeprecated", "\nFROM scratch\nMAINTAINER me@example.org\n", {},
     [(3, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label")]),
    ("MaintainerDeprecated/label", '\nFROM scratch\nLABEL org.opencontainers.image.authors="me@example.org"\n', {}, []),
    ("UndeclaredArg/base", "\nARG base=scratch\nFROM $base\nCOPY Dockerfile .\n", {}, []),
    ("UndeclaredArg/BUILDPLATFORM", "\nARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM scratch\n", {}, []),
    ("UndeclaredArg/builtin", "\nFROM --platform=$BUILDPLATFORM scratch\nCOPY Dockerfile .\n", {}, []),
    ("UndeclaredArg/empty", "\nARG DEBUG\nFROM scratch${DEBUG}\nCOPY Dockerfile .\n", {}, []),
    ("UndeclaredArg/default", "\nARG DEBUG\nFROM scra${DEBUG:-tch}\nCOPY Dockerfile .\n", {}, []),
    ("UndeclaredArg/set", '\nARG DEBUG=""\nFROM scratch${DEBUG-@bogus}\nCOPY Dockerfile .\n', {}, []),
    ("UndeclaredArg/typo", "\nFROM --platform=$BULIDPLATFORM scratch\nCOPY Dockerfile .\n", {},
     [(2, "UndefinedArgInFrom", "FROM argument 'BULIDPLATFORM' is not declared (did you mean BUILDPLATFORM?)")]),
    ("UndeclaredArg/MYARCH", "\nARG MY_OS=linux\nARG MY_ARCH=amd64\nFROM --platform=linux/${MYARCH} busybox\n"
     "COPY Dockerfile .\n\t", {},
     [(4, "UndefinedArgInFrom", "FROM argument 'MYARCH' is not declared (did you mean MY_ARCH?)")]),
    ("UndeclaredArg/version", "\nARG tag=latest\nFROM busybox:${tag}${version} AS b\nCOPY Dockerfile .\n", {},
     [(3, "UndefinedArgInFrom", "FROM argument 'version' is not declared")]),
    ("WorkdirRelativePath", "\nFROM scratch\nWORKDIR app/\n", {},
     [(3, "WorkdirRelativePath", 'Relative workdir "app/" can have unexpected results if the base image changes')]),
    ("WorkdirRelativePath/base", "\nFROM scratch AS a\nWORKDIR /app\n\nFROM a AS b\nWORKDIR subdir/\n", {}, []),
    ("UnmatchedVars/arg", "\nFROM scratch\nARG foo\nCOPY Dockerfile${foo} .\n", {}, []),
    ("UnmatchedVars/base-arg", "\nFROM alpine AS base\nARG foo=Dockerfile\n\nFROM base\nCOPY $foo .\n", {}, []),
    ("UnmatchedVars/PATH", "\nFROM alpine\nRUN echo $PATH\n", {}, []),
    ("UnmatchedVars/before-arg", "\nFROM alpine\nCOPY $foo .\nARG foo=bar\nRUN echo $foo\n", {},
     [(3, "UndefinedVar", "Usage of undefined variable '$foo'")]),
    ("UnmatchedVars/suggest", "\nFROM alpine\nARG DIR_BINARIES=binaries/\nARG DIR_ASSETS=assets/\n"
     "ARG DIR_CONFIG=config/\nCOPY $DIR_ASSET .\n\t", {},
     [(6, "UndefinedVar", "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)")]),
    ("UnmatchedVars/PAHT", "\nFROM alpine\nENV PATH=$PAHT:/tmp/bin\n\t\t", {},
     [(3, "UndefinedVar", "Usage of undefined variable '$PAHT' (did you mean $PATH?)")]),
    ("AllTargetUnmarshal", "\nFROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n", {},
     [(3, "UndefinedVar", "Usage of undefined variable '$foo'"),
      (6, "UndefinedVar", "Usage of undefined variable '$bar'")]),
    ("MultipleInstructions", '\nFROM scratch\nENTRYPOINT ["/myapp"]\nENTRYPOINT ["/myotherapp"]\nCMD ["/myapp"]\n'
     'CMD ["/myotherapp"]\nHEALTHCHECK CMD ["/myapp"]\nHEALTHCHECK CMD ["/myotherapp"]\n', {},
     [(3, "MultipleInstructionsDisallowed", MULTIPLE.format("ENTRYPOINT")),
      (5, "MultipleInstructionsDisallowed", MULTIPLE.format("CMD")),
      (7, "MultipleInstructionsDisallowed", MULTIPLE.format("HEALTHCHECK"))]),
    ("MultipleInstructions/apart", '\nFROM scratch\nENTRYPOINT ["/myapp"]\nCMD ["/myapp"]\nHEALTHCHECK CMD ["/myapp"]\n'
     'COPY <<EOF /a.txt\nHello, World!\nEOF\nENTRYPOINT ["/myotherapp"]\nCMD ["/myotherapp"]\n'
     'HEALTHCHECK CMD ["/myotherapp"]\n', {},
     [(3, "MultipleInstructionsDisallowed", MULTIPLE.format("ENTRYPOINT")),
      (4, "MultipleInstructionsDisallowed", MULTIPLE.format("CMD")),
      (5, "MultipleInstructionsDisallowed", MULTIPLE.format("HEALTHCHECK"))]),
    ("MultipleInstructions/stages", '\nFROM scratch AS a\nENTRYPOINT ["/myapp"]\nCMD ["/myapp"]\n'
     'HEALTHCHECK CMD ["/myapp"]\n\nFROM a AS b\nENTRYPOINT ["/myotherapp"]\nCMD ["/myotherapp"]\n'
     'HEALTHCHECK CMD ["/myotherapp"]\n', {}, []),
    ("LegacyKeyValueFormat", "\nFROM scratch\nENV testkey value\nLABEL key value\n", {},
     [(3, "LegacyKeyValueFormat", '"ENV key=value" should be used instead of legacy "ENV key value" format'),
      (4, "LegacyKeyValueFormat", '"LABEL key=value" should be used instead of legacy "LABEL key value" format')]),
    ("LegacyKeyValueFormat/none", "\nFROM scratch\nENV testkey=value\nLABEL key=value\n", {}, []),
    ("RedundantTargetPlatform", "\nFROM --platform=$TARGETPLATFORM scratch\n", {},
     [(2, "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as "
       "this is the default behavior")]),
    ("RedundantTargetPlatform/braces", "\nFROM --platform=${TARGETPLATFORM} scratch\n", {},
     [(2, "RedundantTargetPlatform", "Setting platform to predefined ${TARGETPLATFORM} in FROM is redundant as "
       "this is the default behavior")]),
    ("Secrets", "\nFROM scratch\nARG SECRET_PASSPHRASE\nENV SUPER_Secret=foo\nENV password=bar secret=baz\n"
     "ARG super_duper_secret_token=foo auth=bar\nENV apikey=bar sunflower=foo\nENV git_key=\nENV PUBLIC_KEY=\n"
     "ARG public_token\n", {},
     [(3, "SecretsUsedInArgOrEnv", SECRET.format("ARG", "SECRET_PASSPHRASE")),
      (4, "SecretsUsedInArgOrEnv", SECRET.format("ENV", "SUPER_Secret")),
      (5, "SecretsUsedInArgOrEnv", SECRET.format("ENV", "password")),
      (5, "SecretsUsedInArgOrEnv", SECRET.format("ENV", "secret")),
      (6, "SecretsUsedInArgOrEnv", SECRET.format("ARG", "auth")),
      (6, "SecretsUsedInArgOrEnv", SECRET.format("ARG", "super_duper_secret_token")),
      (7, "SecretsUsedInArgOrEnv", SECRET.format("ENV", "apikey")),
      (8, "SecretsUsedInArgOrEnv", SECRET.format("ENV", "git_key"))]),
    ("InvalidDefaultArgInFrom/tag", "\nARG VERSION\nFROM busybox:$VERSION\n", {"VERSION": "latest"},
     [(3, "InvalidDefaultArgInFrom", "Default value for ARG busybox:$VERSION results in empty or invalid base "
       "image name")]),
    ("InvalidDefaultArgInFrom/image", "\nARG IMAGE\nFROM $IMAGE\n", {"IMAGE": "busybox:latest"},
     [(3, "InvalidDefaultArgInFrom", "Default value for ARG $IMAGE results in empty or invalid base image name")]),
    ("InvalidDefaultArgInFrom/suffix", '\nARG SFX="box:"\nFROM busy${SFX}\n', {"SFX": "box:latest"},
     [(3, "InvalidDefaultArgInFrom", "Default value for ARG busy${SFX} results in empty or invalid base image name")]),
    ("InvalidDefaultArgInFrom/ok", '\nARG VERSION="latest"\nFROM busybox:${VERSION}\n', {"VERSION": "latest"}, []),
    ("InvalidDefaultArgInFrom/empty-variant", '\nARG BUSYBOX_VARIANT=""\nFROM busybox:stable${BUSYBOX_VARIANT}\n',
     {"BUSYBOX_VARIANT": "-musl"}, []),
    ("InvalidDefaultArgInFrom/unset-variant", "\n\tARG BUSYBOX_VARIANT\n\tFROM busybox:stable${BUSYBOX_VARIANT}\n\t",
     {"BUSYBOX_VARIANT": "-musl"}, []),
    ("FromPlatformFlagConstDisallowed", "\nFROM --platform=linux/amd64 scratch\n", {},
     [(2, "FromPlatformFlagConstDisallowed", 'FROM --platform flag should not use constant value "linux/amd64"')]),
    ("FromPlatformFlagConstDisallowed/arch-stage", "\nFROM --platform=linux/amd64 scratch AS my_amd64_stage\n", {}, []),
    ("FromPlatformFlagConstDisallowed/os-stage", "\nFROM --platform=linux/amd64 scratch AS linux\n", {}, []),
    ("DefinitionDescription/good", "# check=experimental=InvalidDefinitionDescription\n# foo this is the foo\n"
     "ARG foo=bar\n\n# base this is the base image\nFROM scratch AS base\n\n# version this is the version number\n"
     "ARG version=latest\n\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n\n"
     "# comment for something other than ARG or FROM\nCOPY Dockerfile .\n", {}, []),
    ("DefinitionDescription/bad", "# check=experimental=InvalidDefinitionDescription\n# bar this is the bar\n"
     "ARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\n"
     "ARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n", {},
     [(3, "InvalidDefinitionDescription", "Comment for ARG should follow the format: `# foo <description>`"),
      (5, "InvalidDefinitionDescription", "Comment for FROM should follow the format: `# base <description>`"),
      (7, "InvalidDefinitionDescription", "Comment for ARG should follow the format: `# version <description>`"),
      (9, "InvalidDefinitionDescription", "Comment for ARG should follow the format: `# <arg_key> <description>`")]),
    ("RuleCheckOption/skip-all", "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n", {}, []),
    ("RuleCheckOption/skip-two", "#check=skip=ConsistentInstructionCasing,FromAsCasing\nFROM scratch as base\n"
     "copy Dockerfile .\n", {}, []),
    ("RuleCheckOption/skip-one", "#check=skip=ConsistentInstructionCasing\nFROM scratch as base\ncopy Dockerfile .\n",
     {}, [(2, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match")]),
    ("RuleCheckOption/build-arg", "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n",
     {"BUILDKIT_DOCKERFILE_CHECK": "skip=ConsistentInstructionCasing;error=true"},
     [(2, "FromAsCasing", "'as' and 'FROM' keywords' casing do not match")]),
    ("RuleCheckOption/build-arg-skip", "#check=error=true\nFROM scratch as base\ncopy Dockerfile .\n",
     {"BUILDKIT_DOCKERFILE_CHECK": "skip=all"}, []),
]


@pytest.mark.parametrize(("dockerfile", "build_args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_buildkit_lint_case(dockerfile, build_args, expected):
    result = run_checks(parse_dockerfile(parse(dockerfile)), build_args=build_args, base_env=base_env,
                        config=build_args.get("BUILDKIT_DOCKERFILE_CHECK"))
    found = sorted((w.start_line, w.rule, w.message) for w in result.warnings)
    assert found == expected
    for w in result.warnings:
        assert w.url == RULES[w.rule].url


def test_buildkit_rule_check_option_errors():
    """testRuleCheckOption: error=true fails with the rules that fired, unless none fired."""
    def error(source: str, config: str | None = None) -> str | None:
        failure = run_checks(parse_dockerfile(parse(source)), config=config).error()
        return str(failure) if failure else None

    source = "FROM scratch as base\ncopy Dockerfile .\n"
    assert error("#check=skip=all;error=true\n" + source) is None
    assert error("#check=skip=ConsistentInstructionCasing,FromAsCasing;error=true\n" + source) is None
    assert error("#check=skip=ConsistentInstructionCasing;error=true\n" + source) == (
        "lint violation found for rules: FromAsCasing")
    assert error("#check=skip=all\n" + source, "skip=ConsistentInstructionCasing;error=true") == (
        "lint violation found for rules: FromAsCasing")
    assert error("#check=error=true\n" + source, "skip=all") is None
