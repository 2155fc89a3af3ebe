"""Build checks: BuildKit's statically decidable lint rules, with its rule names and messages.

The rules come from BuildKit's ``frontend/dockerfile/linter/ruleset.go``; the
conditions from where ``dockerfile2llb`` runs them. Some need the variables a
stage sees (UndefinedVar, WorkdirRelativePath, the EXPOSE rules), so the
stages are walked with :mod:`builder.frontend.expand` scopes. UndefinedVar
also needs the base image's environment (and JSONArgsRecommended its SHELL,
InvalidBaseImagePlatform its platform): the caller passes a resolver
``base_env(image) -> BaseImage | env | None``; when it returns None nothing is
reported for that stage, since the image might define any name.

``# check=skip=A,B;error=true;experimental=C`` (or the ``BUILDKIT_DOCKERFILE_CHECK``
build arg) selects rules; with ``error=true`` any warning fails the build. A
``# check=skip=...`` comment just above an instruction skips rules for it alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from builder.errors import (
    DockerfileError,
    ExpansionError,
    InstructionError,
    LintError,
    SourceLocation,
    UsageError,
)
from builder.frontend.ast import ParsedDockerfile
from builder.frontend.dockerignore import PatternMatcher, go_clean
from builder.frontend.expand import PLATFORM_ARGS, GlobalScope, PlatformArgs, Scope, format_platform
from builder.frontend.instructions import (
    Add,
    Arg,
    Cmd,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    Instruction,
    Label,
    Maintainer,
    Onbuild,
    Shell,
    Stage,
    Workdir,
    closest,
    parse_dockerfile,
    parse_go_bool,
    parse_instruction,
)
from builder.frontend.parser import comment_directive, parse
from builder.frontend.shell import ShellLex
from builder.image.config import ConfigFile
from builder.image.platform import Platform
from builder.image.reference import Reference


@dataclass(frozen=True)
class BaseImage:
    """What the checks read of a base image's config: its env (UndefinedVar), its shell (a SHELL
    there makes a shell-form CMD deliberate: no JSONArgsRecommended) and its platform
    (InvalidBaseImagePlatform)."""

    env: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()
    platform: Platform | None = None
    on_build: tuple[str, ...] = ()  # its ONBUILD triggers, which a stage built on it runs first

    @classmethod
    def of(cls, config: ConfigFile) -> BaseImage:
        return cls(tuple(config.config.env), tuple(config.config.shell or ()),
                   Platform(config.os, config.architecture, config.variant) if config.architecture else None,
                   tuple(config.config.on_build))


# A base image's config by its expanded name, or just its env; None when unknown.
BaseEnvResolver = Callable[[str], Mapping[str, str] | Sequence[str] | BaseImage | None]

_URL = "https://docs.docker.com/go/dockerfile/rule/{}/"


@dataclass(frozen=True)
class Rule:
    """A build check (BuildKit's linter rule), named as BuildKit names it."""

    name: str
    description: str
    slug: str
    experimental: bool = False

    @property
    def url(self) -> str:
        return _URL.format(self.slug) if self.slug else ""


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("StageNameCasing", "Stage names should be lowercase", "stage-name-casing"),
        Rule("FromAsCasing", "The 'as' keyword should match the case of the 'from' keyword",
             "from-as-casing"),
        Rule("NoEmptyContinuation",
             "Empty continuation lines will become errors in a future release",
             "no-empty-continuation"),
        Rule("ConsistentInstructionCasing",
             "All commands within the Dockerfile should use the same casing (either upper or lower)",
             "consistent-instruction-casing"),
        Rule("DuplicateStageName", "Stage names should be unique", "duplicate-stage-name"),
        Rule("ReservedStageName", "Reserved words should not be used as stage names",
             "reserved-stage-name"),
        Rule("JSONArgsRecommended",
             "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior "
             "related to OS signals", "json-args-recommended"),
        Rule("MaintainerDeprecated",
             "The MAINTAINER instruction is deprecated, use a label instead to define an image "
             "author", "maintainer-deprecated"),
        Rule("UndefinedArgInFrom", "FROM command must use declared ARGs", "undefined-arg-in-from"),
        Rule("WorkdirRelativePath",
             "Relative workdir without an absolute workdir declared within the build can have "
             "unexpected results if the base image changes", "workdir-relative-path"),
        Rule("UndefinedVar", "Variables should be defined before their use", "undefined-var"),
        Rule("MultipleInstructionsDisallowed",
             "Multiple instructions of the same type should not be used in the same stage",
             "multiple-instructions-disallowed"),
        Rule("LegacyKeyValueFormat",
             "Legacy key/value format with whitespace separator should not be used",
             "legacy-key-value-format"),
        Rule("SecretsUsedInArgOrEnv",
             "Sensitive data should not be used in the ARG or ENV commands",
             "secrets-used-in-arg-or-env"),
        Rule("InvalidDefaultArgInFrom",
             "Default value for global ARG results in an empty or invalid base image name",
             "invalid-default-arg-in-from"),
        Rule("ExposeProtoCasing", "Protocol in EXPOSE instruction should be lowercase",
             "expose-proto-casing"),
        Rule("ExposeInvalidFormat",
             "IP address and host-port mapping should not be used in EXPOSE instruction. "
             "This will become an error in a future release", "expose-invalid-format"),
        Rule("InvalidBaseImagePlatform", "Base image platform does not match expected target platform", ""),
        Rule("RedundantTargetPlatform",
             "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the "
             "default behavior", "redundant-target-platform"),
        Rule("FromPlatformFlagConstDisallowed", "FROM --platform flag should not use a constant value",
             "from-platform-flag-const-disallowed"),
        Rule("CopyIgnoredFile", "Attempting to Copy file that is excluded by .dockerignore",
             "copy-ignored-file"),
        Rule("InvalidDefinitionDescription",
             "Comment for build stage or argument should follow the format: "
             "`# <arg/stage name> <description>`. If this is not intended to be a description "
             "comment, add an empty line or comment between the instruction and the comment.",
             "invalid-definition-description", experimental=True),
    )
}


@dataclass(frozen=True)
class Warning:
    """One rule violation, located in the Dockerfile."""

    rule: str
    message: str
    file: str
    start_line: int
    end_line: int
    url: str

    def __str__(self) -> str:
        return f"{self.file}:{self.start_line}: {self.rule}: {self.message}"

    def short(self) -> str:
        """BuildKit's one-line form, as ``docker build`` prints it after ``WARN:``."""
        return f"{self.rule}: {self.message} (line {self.start_line})"

    def to_json(self) -> dict[str, Any]:
        """BuildKit's lint ``Warning`` as ``docker build --call check,format=json`` prints it
        (Go's omitempty: empty fields are left out), so tools written for it read ours."""
        rule = RULES.get(self.rule)
        out: dict[str, Any] = {"ruleName": self.rule}
        if rule and rule.description:
            out["description"] = rule.description
        if self.url:
            out["url"] = self.url
        if self.message:
            out["detail"] = self.message
        if self.start_line:
            out["location"] = lint_location(self.start_line, self.end_line)
        return out


def lint_location(start: int | None, end: int | None) -> dict[str, Any]:
    """A BuildKit ``pb.Location`` of source 0 (its index, 0, is left out as Go leaves it)."""
    if not start:
        return {}
    return {"ranges": [{"start": {"line": start}, "end": {"line": end or start}}]}


@dataclass(frozen=True)
class CheckConfig:
    """What ``# check=`` asks: rules to skip, experimental rules to run, and whether to fail."""

    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    error: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False

    @classmethod
    def parse(cls, text: str | None, location: SourceLocation | None = None) -> CheckConfig:
        """BuildKit's ParseLintOptions: ``skip=A,B|all;error=<bool>;experimental=C|all``."""
        text = (text or "").strip()
        if not text:
            return cls()
        skip: set[str] = set()
        experimental: set[str] = set()
        skip_all = error = experimental_all = False
        for part in text.split(";", 2):
            key, has_value, value = part.partition("=")
            if not has_value:
                raise DockerfileError(f'invalid check option "{part}"', location)
            key, value = key.strip(), value.strip()
            if key == "skip":
                if value == "all":
                    skip_all = True
                else:
                    skip = {r.strip() for r in value.split(",")}
            elif key == "experimental":
                if value == "all":
                    experimental_all = True
                else:
                    experimental = {r.strip() for r in value.split(",")}
            elif key == "error":
                parsed = parse_go_bool(value)
                if parsed is None:
                    raise DockerfileError(
                        f'failed to parse check option "{part}": '
                        f'strconv.ParseBool: parsing "{value}": invalid syntax', location,
                    )
                error = parsed
            else:
                raise DockerfileError(f'invalid check option "{key}"', location)
        return cls(frozenset(skip), skip_all, error, frozenset(experimental), experimental_all)

    def with_comments(self, comments: Sequence[str]) -> CheckConfig:
        """BuildKit's WithMergedConfigFromComments: the first ``check=`` comment just above an
        instruction adds its skipped and experimental rules for that instruction's checks (its
        ``error=`` does not count; one that does not parse is ignored)."""
        for comment in comments:
            found = comment_directive(comment)
            if found is None or found[0] != "check":
                continue
            try:
                extra = CheckConfig.parse(found[1].split(" ", 1)[0])
            except DockerfileError:
                return self
            return replace(
                self, skip=self.skip | extra.skip, skip_all=self.skip_all or extra.skip_all,
                experimental=self.experimental | extra.experimental,
                experimental_all=self.experimental_all or extra.experimental_all,
            )
        return self

    def enabled(self, rule: str) -> bool:
        """As BuildKit's Linter.Run: an experimental rule runs when asked for, whatever ``skip``
        says (``skip=all;experimental=CopyIgnoredFile`` runs that one rule); others unless skipped."""
        info = RULES.get(rule)
        if info is not None and info.experimental:
            return self.experimental_all or rule in self.experimental
        return not (self.skip_all or rule in self.skip)


@dataclass
class CheckResult:
    """The warnings of one run, and whether they fail the build."""

    warnings: list[Warning]
    config: CheckConfig
    file: str = "Dockerfile"

    @property
    def failed(self) -> bool:
        return self.config.error and bool(self.warnings)

    def error(self) -> LintError | None:
        """BuildKit's ``lint violation found for rules: ...`` when ``error=true`` and anything fired."""
        if not self.failed:
            return None
        rules = ", ".join(dict.fromkeys(w.rule for w in self.warnings))
        return LintError(f"lint violation found for rules: {rules}")


@dataclass
class _Collector:
    """The warnings of one check run, filtered by the check configuration."""

    config: CheckConfig
    file: str
    found: list[tuple[int, int, Warning]] = field(default_factory=list)

    def add(self, rule: str, message: str, start: int, end: int | None = None,
            comments: Sequence[str] = ()) -> None:
        """A warning of a rule the configuration runs: the file's, with a ``# check=`` among
        ``comments`` (those above the instruction the rule ran for) merged in."""
        if not self.config.with_comments(comments).enabled(rule):
            return
        info = RULES[rule]
        warning = Warning(rule, message, self.file, start, end or start, info.url)
        if any(w == warning for _, _, w in self.found):
            return
        self.found.append((start, len(self.found), warning))

    def at(self, rule: str, message: str, ins: Instruction, *, by: Instruction | None = None) -> None:
        """At ``ins``, for the instruction ``by`` (default ``ins``), whose ``# check=`` comment counts."""
        source = (by or ins).source
        self.add(rule, message, ins.start_line, ins.end_line, source.comments if source is not None else ())

    def at_file(self, rule: str, message: str, ins: Instruction) -> None:
        """At ``ins``, for a rule BuildKit runs over the whole file: only the file's configuration counts."""
        self.add(rule, message, ins.start_line, ins.end_line)

    def warnings(self) -> list[Warning]:
        return [w for _, _, w in sorted(self.found, key=lambda t: (t[0], t[1]))]


_SECRET_DENY = re.compile(
    r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)"
)
# BuildKit's allow list: PUBLIC_KEY is no secret, nor SESSION_SECRET_FILE (a path to one) or
# AUTH_MODULE_VERSION.
_SECRET_ALLOW = re.compile(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)")
_RESERVED_STAGE_NAMES = ("context", "scratch")


def run_checks(
    dockerfile: Dockerfile,
    *,
    build_args: Mapping[str, str] | None = None,
    base_env: BaseEnvResolver | None = None,
    platforms: PlatformArgs | None = None,
    stages: Collection[int] | None = None,
    config: str | None = None,
    ignore: PatternMatcher | None = None,
    reachable: Collection[int] | None = None,
) -> CheckResult:
    """Every enabled rule over ``dockerfile``; ``stages`` limits the per-stage walk (None: all).

    ``config`` overrides the ``# check=`` directive (the BUILDKIT_DOCKERFILE_CHECK build arg).
    ``ignore`` is the context's .dockerignore (CopyIgnoredFile). ``reachable`` are the stages
    the target needs (default: ``stages``, else all): only those run the ONBUILD triggers of the
    stage they are built on, as in BuildKit, so only there are the triggers checked.
    """
    parsed = dockerfile.parsed
    directive_line = next((d.line for d in parsed.directives if d.name == "check"), None)
    # BuildKit's ParseDirective keeps the value up to the first space: "# check=skip=A // why".
    written = parsed.directive("check")
    text = config if config is not None else (written.split(" ", 1)[0] if written else None)
    location = SourceLocation(parsed.file, directive_line) if directive_line and config is None else None
    out = _Collector(CheckConfig.parse(text, location), parsed.file)

    for w in parsed.warnings:
        if w.rule in RULES:
            out.add(w.rule, "Empty continuation line" if w.rule == "NoEmptyContinuation" else w.message,
                    w.start_line, w.end_line)
    _check_casing(dockerfile, out)
    _check_static(dockerfile, out)
    _check_from_args(dockerfile, build_args or {}, platforms, out)
    _walk_stages(dockerfile, build_args or {}, base_env, platforms, stages, out, ignore,
                 reachable if reachable is not None else stages)
    return CheckResult(out.warnings(), out.config, parsed.file)


# The rules BuildKit runs while it turns the parsed nodes into instructions, one node at a time.
_PARSE_PHASE_RULES = frozenset({
    "NoEmptyContinuation", "StageNameCasing", "FromAsCasing", "MaintainerDeprecated",
    "InvalidDefinitionDescription",
})


def warnings_before_error(parsed: ParsedDockerfile, error: DockerfileError, *,
                          config: str | None = None) -> list[Warning]:
    """The warnings BuildKit gives before an instruction of ``parsed`` fails to parse (``error``):
    the parser's, and those of the instructions above the failing one. BuildKit prints them and
    then the error; best effort, nothing when they cannot be worked out."""
    line = error.location.start_line if error.location is not None else None
    if line is None:
        return []
    try:
        partial = parse_dockerfile(replace(parsed, nodes=tuple(n for n in parsed.nodes if n.start_line < line)))
        found = run_checks(partial, config=config).warnings
    except DockerfileError:
        return []
    return [w for w in found if w.rule in _PARSE_PHASE_RULES]


def _keyword_text(node: Any) -> str:
    text = node.keyword_text or (node.original.split(None, 1)[0] if node.original.strip() else "")
    return text or node.keyword


def _written(ins: Instruction) -> str:
    """The keyword as the Dockerfile spells it (BuildKit's Command.Name())."""
    return _keyword_text(ins.source) if ins.source is not None else ins.name


def _check_casing(dockerfile: Dockerfile, out: _Collector) -> None:
    """ConsistentInstructionCasing over the stages' FROM lines and instructions (not global ARGs)."""
    instructions = [ins for stage in dockerfile.stages for ins in (stage.from_, *stage.commands)]
    words = [_written(ins) for ins in instructions]
    lower = sum(1 for w in words if w == w.lower())
    upper = sum(1 for w in words if w == w.upper() and w != w.lower())
    majority_lower = lower > upper
    for ins, word in zip(instructions, words, strict=True):
        if majority_lower and word.lower() != word:
            casing = "lowercase"
        elif not majority_lower and word.upper() != word:
            casing = "uppercase"
        else:
            continue
        out.at_file("ConsistentInstructionCasing",
                    f"Command '{word}' should match the case of the command majority ({casing})", ins)


def _check_static(dockerfile: Dockerfile, out: _Collector) -> None:
    """Rules decided by the text alone (BuildKit runs them while parsing instructions)."""
    seen_names: dict[str, Stage] = {}
    for stage in dockerfile.stages:
        from_ = stage.from_
        node = from_.source
        if node is not None and len(node.args) == 3:
            as_word = node.args[1]
            from_word = _keyword_text(node)
            # A mixed-case FROM ("From") is ConsistentInstructionCasing's to report, not this rule's.
            if from_word in (from_word.lower(), from_word.upper()):
                want = as_word.lower() if from_word == from_word.lower() else as_word.upper()
                if as_word != want:
                    out.at("FromAsCasing",
                           f"'{as_word}' and '{from_word}' keywords' casing do not match", from_)
            written = node.args[2]
            if written != written.lower():
                out.at("StageNameCasing", f"Stage name '{written}' should be lowercase", from_)
        if stage.name:
            if stage.name in _RESERVED_STAGE_NAMES:
                out.at_file("ReservedStageName",
                            f'Stage name should not use the same name as reserved stage "{stage.name}"',
                            from_)
            if stage.name in seen_names:
                out.at_file("DuplicateStageName",
                            f'Duplicate stage name "{stage.name}", stage names should be unique', from_)
            seen_names[stage.name] = stage
            _check_description(from_, "FROM", [stage.name], out)
    for arg in dockerfile.meta_args:
        _check_description(arg, "ARG", [s.key for s in arg.args], out)


def _check_description(ins: Instruction, keyword: str, keys: list[str], out: _Collector) -> None:
    node = ins.source
    if node is None or not node.comments or not keys:
        return
    first_word = node.comments[-1].strip().split(" ")[0]
    if first_word in keys:
        return
    example = keys[0] if len(keys) == 1 else "<arg_key>"
    out.at("InvalidDefinitionDescription",
           f"Comment for {keyword} should follow the format: `# {example} <description>`", ins)


def _check_arg(arg: Arg, out: _Collector) -> None:
    for spec in arg.args:
        _check_secret("ARG", spec.key, arg, out)
    _check_description(arg, "ARG", [s.key for s in arg.args], out)


def looks_secret(name: str) -> bool:
    """Whether a variable's name says it holds a secret (BuildKit's SecretsUsedInArgOrEnv rule:
    TOKEN, DB_PASSWORD, API_KEY, but not PUBLIC_KEY or TOKEN_FILE)."""
    return bool(_SECRET_DENY.search(name)) and not _SECRET_ALLOW.search(name)


def _check_secret(keyword: str, key: str, ins: Instruction, out: _Collector) -> None:
    if looks_secret(key):
        out.at("SecretsUsedInArgOrEnv",
               f'Do not use ARG or ENV instructions for sensitive data ({keyword} "{key}")', ins)


def _check_stage_commands(stage: Stage, triggers: Sequence[Instruction], out: _Collector) -> None:
    """The rules BuildKit runs as it dispatches each instruction (the inherited ONBUILD triggers first)."""
    last: dict[str, Instruction] = {}
    for ins in (*triggers, *stage.commands):
        if isinstance(ins, Maintainer):
            out.at("MaintainerDeprecated",
                   "Maintainer instruction is deprecated in favor of using label", ins)
        elif isinstance(ins, Env | Label):
            if any(p.no_delim for p in ins.pairs):
                out.at("LegacyKeyValueFormat",
                       f'"{_written(ins)} key=value" should be used instead of legacy '
                       f'"{_written(ins)} key value" format', ins)
            if isinstance(ins, Env):
                for pair in ins.pairs:
                    _check_secret("ENV", pair.key, ins, out)
        elif isinstance(ins, Arg):
            _check_arg(ins, out)
        if isinstance(ins, Cmd | Entrypoint | Healthcheck):
            previous = last.get(ins.keyword)
            if previous is not None:
                # Reported at the one that is ignored, under the later one's # check= comment.
                out.at("MultipleInstructionsDisallowed",
                       f"Multiple {_written(ins)} instructions should not be used in the same stage "
                       "because only the last one will be used", previous, by=ins)
            last[ins.keyword] = ins


def _check_from_args(
    dockerfile: Dockerfile, build_args: Mapping[str, str], platforms: PlatformArgs | None,
    out: _Collector,
) -> None:
    """UndefinedArgInFrom and InvalidDefaultArgInFrom: FROM lines against the global ARGs."""
    escape = dockerfile.parsed.escape
    actual = GlobalScope(dockerfile.meta_args, build_args, platforms=platforms, escape=escape)
    declared = set(actual.declared) | set(PLATFORM_ARGS)
    names = actual.meta_arg_names()
    for stage in dockerfile.stages:
        actual.unmatched.clear()
        actual.expand_from(stage.from_)
        for _ins, unmatched in actual.unmatched:
            for name in sorted(unmatched):
                if name in declared:
                    continue
                message = f"FROM argument '{name}' is not declared"
                guess = closest(name, names, case_sensitive=True)
                if guess:
                    message += f" (did you mean {guess}?)"
                out.at("UndefinedArgInFrom", message, stage.from_)
    _check_from_platforms(dockerfile, actual, out)
    defaults = GlobalScope(dockerfile.meta_args, {}, platforms=platforms, escape=escape)
    for stage in dockerfile.stages:
        base = defaults.expand_from(stage.from_).base_name
        if Reference.try_parse(base) is None:
            out.at_file("InvalidDefaultArgInFrom",
                        f"Default value for ARG {stage.base_name} results in empty or invalid base "
                        "image name", stage.from_)


def _check_from_platforms(dockerfile: Dockerfile, scope: GlobalScope, out: _Collector) -> None:
    """RedundantTargetPlatform and FromPlatformFlagConstDisallowed, on FROM --platform values."""
    lex = ShellLex(escape=dockerfile.parsed.escape)
    for stage in dockerfile.stages:
        written = stage.from_.platform
        if not written:
            continue
        try:
            result = lex.process_word_with_matches(written, scope.values)
        except ExpansionError:
            continue  # the planner reports it, with the line
        if (result.matched == {"TARGETPLATFORM"} and not result.unmatched
                and result.result == scope.values.get("TARGETPLATFORM")):
            out.at("RedundantTargetPlatform",
                   f"Setting platform to predefined {written} in FROM is redundant as this is the "
                   "default behavior", stage.from_)
        if result.matched or result.unmatched:
            continue
        try:
            platform = Platform.parse(result.result)
        except UsageError:
            continue
        name = stage.name or ""
        if platform.os in name or platform.architecture in name:
            continue
        out.at("FromPlatformFlagConstDisallowed",
               f'FROM --platform flag should not use constant value "{result.result}"', stage.from_)


def _walk_stages(
    dockerfile: Dockerfile,
    build_args: Mapping[str, str],
    base_env: BaseEnvResolver | None,
    platforms: PlatformArgs | None,
    selected: Collection[int] | None,
    out: _Collector,
    ignore: PatternMatcher | None = None,
    reachable: Collection[int] | None = None,
) -> None:
    """Rules that need each stage's variables: UndefinedVar, WorkdirRelativePath, EXPOSE, JSON args."""
    global_scope = GlobalScope(
        dockerfile.meta_args, build_args, platforms=platforms, escape=dockerfile.parsed.escape
    )
    finals: dict[int, tuple[Scope, bool, bool]] = {}  # stage -> (scope, workdir set, shell set)
    for stage in dockerfile.stages:
        expanded_from = global_scope.expand_from(stage.from_)
        base = expanded_from.base_name
        parent = dockerfile.find_stage(base) if base else None
        triggers: tuple[Instruction, ...] = ()
        if parent is not None and parent.index < stage.index and parent.index in finals:
            parent_scope, workdir_set, shell_set = finals[parent.index]
            scope = parent_scope.child()
            if reachable is None or stage.index in reachable:
                triggers = _inherited_triggers(parent, stage)
        else:
            workdir_set = shell_set = False
            env: Mapping[str, str] | Sequence[str] | None = None
            if base.lower() == "scratch":
                env = {}
            elif base_env is not None and (selected is None or stage.index in selected):
                found = base_env(base)  # a stage the build skips needs no look at its base
                if isinstance(found, BaseImage):
                    env, shell_set = found.env, bool(found.shell)
                    _check_base_platform(stage, base, expanded_from.platform, found.platform, platforms, out)
                    if reachable is None or stage.index in reachable:
                        triggers = _image_triggers(found.on_build, stage, dockerfile.parsed)
                else:
                    env = found
            scope = global_scope.stage_scope(env)
        _check_stage_commands(stage, triggers, out)
        for ins in (*triggers, *stage.commands):
            try:
                expanded = scope.apply(ins)
            except (ExpansionError, InstructionError):
                if scope.base_env_known:
                    raise
                continue  # the unknown base image might define what is missing: not our call
            if isinstance(expanded, Workdir):
                if not workdir_set and not _is_abs(expanded.path):
                    out.at("WorkdirRelativePath",
                           f'Relative workdir "{expanded.path}" can have unexpected results if '
                           "the base image changes", ins)
                workdir_set = True
            elif isinstance(expanded, Shell):
                shell_set = True
            elif isinstance(expanded, Cmd | Entrypoint) and expanded.prepend_shell and not shell_set:
                out.at("JSONArgsRecommended",
                       f"JSON arguments recommended for {_written(ins)} to prevent unintended "
                       "behavior related to OS signals", ins)
            elif isinstance(expanded, Expose):
                _check_expose(expanded, ins, out)
            elif isinstance(expanded, Copy | Add) and ignore:
                _check_ignored(expanded, ins, ignore, out)
        finals[stage.index] = (scope, workdir_set, shell_set)
        if (selected is None or stage.index in selected) and scope.base_env_known:
            for undefined in scope.undefined:
                message = f"Usage of undefined variable '${undefined.name}'"
                if undefined.suggestion:
                    message += f" (did you mean ${undefined.suggestion}?)"
                out.at("UndefinedVar", message, undefined.instruction)
        if selected is not None and stage.index not in selected:
            _drop_stage_warnings(out, stage)


def _check_base_platform(stage: Stage, base: str, written: str | None, actual: Platform | None,
                         platforms: PlatformArgs | None, out: _Collector) -> None:
    """InvalidBaseImagePlatform: the base image is for another OS or architecture than the stage
    builds for (its FROM --platform, else the target's), e.g. a single-platform image of another
    architecture, whose RUN steps would then fail."""
    if actual is None or not actual.os or not actual.architecture:
        return
    try:
        expected = Platform.parse(written) if written else (platforms.target if platforms else Platform.host())
    except UsageError:
        return  # the build reports a bad --platform, with the line
    if (actual.os, actual.architecture) != (expected.os, expected.architecture):
        out.at_file("InvalidBaseImagePlatform",
                    f'Base image {base} was pulled with platform "{format_platform(actual)}", expected '
                    f'"{format_platform(expected)}" for current build', stage.from_)


def _inherited_triggers(parent: Stage, stage: Stage) -> tuple[Instruction, ...]:
    """The ONBUILD triggers of ``parent``, which ``stage`` runs first: located at its FROM, as
    BuildKit reports them."""
    return tuple(replace(ins.trigger, location=stage.from_.location)
                 for ins in parent.commands if isinstance(ins, Onbuild))


def _image_triggers(expressions: Sequence[str], stage: Stage, parsed: ParsedDockerfile) -> tuple[Instruction, ...]:
    """A base image's ONBUILD triggers, parsed and located at the FROM that runs them; none when
    one does not parse (the build reports it, with the line)."""
    found: list[Instruction] = []
    try:
        for expression in expressions:
            trigger = parse(expression, file=parsed.file)
            found += [replace(parse_instruction(node, trigger), location=stage.from_.location)
                      for node in trigger.nodes]
    except DockerfileError:
        return ()
    return tuple(found)


def _drop_stage_warnings(out: _Collector, stage: Stage) -> None:
    """Forget per-stage walk findings for a stage the build does not run."""
    lines = {ins.start_line for ins in (stage.from_, *stage.commands)}
    walk_rules = {"WorkdirRelativePath", "CopyIgnoredFile", "JSONArgsRecommended", "ExposeProtoCasing",
                  "ExposeInvalidFormat", "UndefinedVar", "LegacyKeyValueFormat",
                  "SecretsUsedInArgOrEnv", "MultipleInstructionsDisallowed"}
    out.found = [t for t in out.found if not (t[2].rule in walk_rules and t[0] in lines)]


def _check_ignored(ins: Copy | Add, original: Instruction, ignore: PatternMatcher, out: _Collector) -> None:
    """CopyIgnoredFile: a context source that .dockerignore excludes (BuildKit's validateCopySourcePath).

    With a "!" pattern anywhere BuildKit does not guess (a directory may be excluded and a file in
    it brought back), so nothing is reported. The source is named cleaned, as BuildKit names it.
    The context root (``COPY . .``) counts as excluded only under a pattern that takes every entry
    of the root (``*``, ``**``, ``**/*``); ``.*`` excludes the dotfiles, not the root.
    """
    if (isinstance(ins, Copy) and ins.from_) or ignore.has_exclusions:
        return
    verb = "Copy" if isinstance(ins, Copy) else "Add"
    for src in ins.sources:
        if "://" in src or src.startswith("git@"):
            continue
        path = go_clean(src)
        if path in (".", "/"):
            excluded = any(set(pattern) <= {"*", "/"} for pattern in ignore.patterns)
        else:
            excluded = ignore.matches(path)
        if excluded:
            out.at("CopyIgnoredFile",
                   f'Attempting to {verb} file "{path}" that is excluded by .dockerignore', original)


def _is_abs(path: str) -> bool:
    """Absolute on Linux, or on Windows (``C:\\go``, ``\\go``): a Windows base image's paths."""
    return path.startswith(("/", "\\")) or bool(re.match(r"^[a-zA-Z]:[\\/]", path))


def _check_expose(expose: Expose, ins: Instruction, out: _Collector) -> None:
    for port in expose.ports:
        spec, _, proto = port.partition("/")
        if proto and proto != proto.lower():
            out.at("ExposeProtoCasing",
                   f"Defined protocol '{port}' in EXPOSE instruction should be lowercase", ins)
        if ":" in spec:
            out.at("ExposeInvalidFormat",
                   "EXPOSE instruction should not define an IP address or host-port mapping, "
                   f"found '{port}'", ins)

