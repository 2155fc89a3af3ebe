"""Variable scopes: which build args and environment each instruction's expansion sees.

Follows BuildKit's ``dockerfile2llb`` rules:

* Global ARGs (before the first FROM) and the automatic platform args are
  visible to FROM lines only (:class:`GlobalScope`).
* Inside a stage (:class:`Scope`) an ARG is visible after its ``ARG NAME``
  line. Its value is the ``--build-arg`` if one was given, else its expanded
  default, else the global ARG's value, else it is declared but unset.
* ENV values join the environment; the base image's config env comes first
  (plus the default PATH when it has none). Later ENV and ARG lines replace
  earlier values of the same name for what follows.
* The proxy args (``HTTP_PROXY`` and friends, any case) reach every RUN
  without being declared, and stay out of history and cache keys unless
  declared (:meth:`Scope.run_env`, :meth:`Scope.proxy_env`).

A scope is used in file order: :meth:`Scope.apply` expands one instruction
(if its type is :class:`~builder.frontend.instructions.Expandable`) and then
records what it declares. Names that an expansion looked up but found unset
are collected in :attr:`Scope.undefined` for the UndefinedVar check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from builder.errors import ExpansionError
from builder.frontend.instructions import (
    Arg,
    ArgSpec,
    Env,
    Expandable,
    Expander,
    From,
    Instruction,
    closest,
)
from builder.frontend.shell import ShellLex, env_from_list
from builder.image.platform import Platform

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PLATFORM_ARGS = (
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT",
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
)

_PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
PROXY_ARGS = frozenset(_PROXY_NAMES) | frozenset(n.lower() for n in _PROXY_NAMES)

# Build args the frontend itself reads; never "unused", never in a RUN's env.
FRONTEND_ARGS = frozenset({
    "BUILDKIT_SYNTAX", "BUILDKIT_DOCKERFILE_CHECK", "BUILDKIT_INLINE_CACHE",
    "BUILDKIT_MULTI_PLATFORM", "BUILDKIT_SANDBOX_HOSTNAME", "BUILDKIT_CACHE_MOUNT_NS",
    "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "SOURCE_DATE_EPOCH",
    "BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE",
})
# Declared ARGs that never enter the environment (BuildKit's nonEnvArgs).
NON_ENV_ARGS = frozenset({"BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"})


def format_platform(p: Platform) -> str:
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


@dataclass(frozen=True)
class PlatformArgs:
    """The platform the build runs on and the one it builds for."""

    build: Platform
    target: Platform

    @classmethod
    def host(cls, target: Platform | None = None) -> PlatformArgs:
        host = Platform.host()
        return cls(build=host, target=target or host)

    def values(self) -> dict[str, str]:
        return {
            "BUILDPLATFORM": format_platform(self.build),
            "BUILDOS": self.build.os,
            "BUILDARCH": self.build.architecture,
            "BUILDVARIANT": self.build.variant or "",
            "TARGETPLATFORM": format_platform(self.target),
            "TARGETOS": self.target.os,
            "TARGETARCH": self.target.architecture,
            "TARGETVARIANT": self.target.variant or "",
        }


@dataclass(frozen=True)
class Undefined:
    """A variable an instruction used while it was unset (the UndefinedVar check's input)."""

    name: str
    instruction: Instruction
    suggestion: str | None = None


class _LexExpander:
    """An :class:`Expander` over one environment, reporting names it could not find."""

    def __init__(
        self, escape: str, env: Mapping[str, str], on_unmatched: Callable[[set[str]], None]
    ) -> None:
        self._lex = ShellLex(escape=escape)
        # Heredoc bodies: BuildKit's ExpandRaw lexes with '\\' whatever the escape directive says.
        self._raw = ShellLex(escape="\\", skip_process_quotes=True)
        self._env = env
        self._on_unmatched = on_unmatched

    def word(self, text: str) -> str:
        result = self._lex.process_word_with_matches(text, self._env)
        if result.unmatched:
            self._on_unmatched(set(result.unmatched))
        return result.result

    def words(self, text: str) -> list[str]:
        result = self._lex.process_word_with_matches(text, self._env)
        if result.unmatched:
            self._on_unmatched(set(result.unmatched))
        return list(result.words)

    def raw(self, text: str) -> str:
        result = self._raw.process_word_with_matches(text, self._env)
        if result.unmatched:
            self._on_unmatched(set(result.unmatched))
        return result.result


def _relocated(ins: Instruction, err: ExpansionError) -> ExpansionError:
    """An expansion error from the lexer, now naming the instruction's file:line."""
    if err.location is not None:
        return err
    return ins.error(err.message, ExpansionError)


class GlobalScope:
    """What FROM lines see: the platform args and the ARGs before the first FROM."""

    def __init__(
        self,
        meta_args: Sequence[Arg],
        build_args: Mapping[str, str] | None = None,
        *,
        platforms: PlatformArgs | None = None,
        escape: str = "\\",
    ) -> None:
        self.escape = escape
        self.build_args: dict[str, str] = dict(build_args or {})
        self.platforms = platforms or PlatformArgs.host()
        self.values: dict[str, str] = self.platforms.values()
        for name in PLATFORM_ARGS:  # a build arg of the same name overrides each (defaultArgs)
            if name in self.build_args:
                self.values[name] = self.build_args[name]
        self.declared: dict[str, str | None] = {}
        self.unmatched: list[tuple[Instruction, set[str]]] = []
        for arg in meta_args:
            for spec in arg.args:
                spec = replace(spec, key=self._expand_word(arg, spec.key))  # docker's processMetaArg
                value: str | None
                if spec.key in self.build_args:
                    value = self.build_args[spec.key]
                elif spec.default is not None:
                    value = self._expand_word(arg, spec.default)
                else:
                    value = self.values.get(spec.key)
                if value is not None:
                    self.values[spec.key] = value
                self.declared[spec.key] = value

    def _expand_word(self, ins: Instruction, text: str) -> str:
        try:
            return self.expander(ins).word(text)
        except ExpansionError as err:
            raise _relocated(ins, err) from None

    def expander(self, ins: Instruction) -> Expander:
        """An expander over the global values; unset names are recorded against ``ins``."""
        return _LexExpander(
            self.escape, self.values, lambda names: self.unmatched.append((ins, names))
        )

    def expand_from(self, from_: From) -> From:
        """FROM's base name and --platform, expanded against the global args."""
        try:
            return from_.expand(self.expander(from_))
        except ExpansionError as err:
            raise _relocated(from_, err) from None

    def meta_arg_names(self) -> list[str]:
        return [*self.declared, *(n for n in PLATFORM_ARGS if n not in self.declared)]

    def stage_scope(self, base_env: Mapping[str, str] | Iterable[str] | None) -> Scope:
        """A fresh scope for a stage whose base image has this config env (None: unknown)."""
        return Scope(self, base_env)


@dataclass
class Scope:
    """The variables of one stage, updated instruction by instruction (see module docstring)."""

    global_scope: GlobalScope
    base_env: Mapping[str, str] | Iterable[str] | None = None
    config_env: dict[str, str] = field(init=False)  # what the image config's Env becomes
    env: dict[str, str] = field(init=False)  # what expansion and RUN see (ENV + valued ARGs)
    args: dict[str, str | None] = field(init=False)  # ARGs declared in this stage
    undefined: list[Undefined] = field(init=False)
    base_env_known: bool = field(init=False)

    def __post_init__(self) -> None:
        self.base_env_known = self.base_env is not None
        base = self.base_env if self.base_env is not None else {}
        env = dict(base) if isinstance(base, Mapping) else env_from_list(base)
        if "PATH" not in env:
            env["PATH"] = DEFAULT_PATH
        self.config_env = dict(env)
        self.env = dict(env)
        self.args = {}
        self.undefined = []

    def child(self) -> Scope:
        """The scope of a stage built FROM this one: it inherits env and declared ARGs."""
        new = Scope(self.global_scope, dict(self.config_env))
        new.base_env_known = self.base_env_known
        new.env = dict(self.env)
        new.args = dict(self.args)
        return new

    # -- expansion

    def _record(self, ins: Instruction, names: set[str]) -> None:
        for name in sorted(names):
            if name in self.args or name in NON_ENV_ARGS:
                continue
            self.undefined.append(Undefined(name, ins, closest_var(name, list(self.env))))

    def expander(self, ins: Instruction) -> Expander:
        """An expander over the stage's current variables, recording unset names against ``ins``."""
        return _LexExpander(self.global_scope.escape, self.env, lambda names: self._record(ins, names))

    def expand(self, ins: Instruction) -> Instruction:
        """``ins`` with its variables expanded if its type expands (pure: the scope is unchanged)."""
        if not isinstance(ins, Expandable):
            return ins
        try:
            return ins.expand(self.expander(ins))
        except ExpansionError as err:
            raise _relocated(ins, err) from None

    def apply(self, ins: Instruction) -> Instruction:
        """Expand ``ins`` and record what it declares (ENV, ARG); returns the expanded value.

        For ARG the returned value holds the resolved values as defaults (None: unset).
        """
        if isinstance(ins, Arg):
            return self._apply_arg(ins)
        expanded = self.expand(ins)
        if isinstance(ins, Env) and isinstance(expanded, Env):
            for written, pair in zip(ins.pairs, expanded.pairs, strict=True):
                if not pair.key:  # docker refuses it here; kept, it fails every later RUN in runc
                    raise ins.error(f"ENV names can not be blank: {written.key} expands to nothing",
                                    ExpansionError)
                self.config_env[pair.key] = pair.value
                self.env.pop(pair.key, None)
                self.env[pair.key] = pair.value
        return expanded

    def _apply_arg(self, ins: Arg) -> Arg:
        resolved: list[ArgSpec] = []
        try:  # names are words too, all expanded first (ArgCommand.Expand): quotes go, variables expand
            specs = [replace(spec, key=self.expander(ins).word(spec.key)) for spec in ins.args]
        except ExpansionError as err:
            raise _relocated(ins, err) from None
        for spec in specs:
            value: str | None
            if spec.key in self.global_scope.build_args:
                value = self.global_scope.build_args[spec.key]
            elif spec.default is not None:
                try:
                    value = self.expander(ins).word(spec.default)
                except ExpansionError as err:
                    raise _relocated(ins, err) from None
            else:
                value = self.global_scope.declared.get(spec.key)
                if value is None and spec.key in PLATFORM_ARGS:
                    value = self.global_scope.values[spec.key]
            self.args[spec.key] = value
            if value is not None and spec.key not in NON_ENV_ARGS:
                self.env.pop(spec.key, None)
                self.env[spec.key] = value
            resolved.append(replace(spec, default=value))
        return replace(ins, args=tuple(resolved))

    # -- what the engine asks

    def visible_args(self) -> dict[str, str | None]:
        """ARGs declared in this stage (or inherited from its parent stage), with their values."""
        return dict(self.args)

    def proxy_env(self) -> dict[str, str]:
        """Proxy build args not declared with ARG: in every RUN's env, not in history or cache keys."""
        return {
            k: v for k, v in self.global_scope.build_args.items()
            if k in PROXY_ARGS and k not in self.args
        }

    def run_env(self, *, proxies: bool = True) -> dict[str, str]:
        """The environment a RUN sees: the config env, then ENV and valued ARGs in order."""
        env = dict(self.env)
        if proxies:
            for k, v in self.proxy_env().items():
                env.setdefault(k, v)
        return env


def closest_var(name: str, options: Sequence[str]) -> str | None:
    """BuildKit's suggestion for a misspelt variable (case-sensitive names, 2 edits at most)."""
    if not options:
        return None
    guess = closest(name, options, case_sensitive=True)
    if guess is None or guess == name:
        return None
    return guess


def unused_build_args(
    build_args: Mapping[str, str], declared: Iterable[str]
) -> list[str]:
    """Build args that no ARG consumes (proxy and frontend args never count as unused)."""
    seen = set(declared)
    return sorted(
        k for k in build_args
        if k not in seen and k not in PROXY_ARGS and k not in FRONTEND_ARGS
    )
