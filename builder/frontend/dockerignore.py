""".dockerignore: reading the file, matching paths, and walking a build context.

Matching follows moby/patternmatcher (what BuildKit, the docker CLI and moby
use) and the walk follows tonistiigi/fsutil's filter, so that a context holds
exactly the files BuildKit would send. The corpus in ``shared/conformance/
dockerignore`` is the acceptance test.

Every pattern remembers where it was written, so a build can say
"COPY source 'x' is excluded by .dockerignore line 3: `*.log`".
"""

from __future__ import annotations

import os
import re
import stat as stat_module
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import NamedTuple

from builder.errors import BuildContextError, IgnoreFileError
from builder.fileio import read_limited

MAX_IGNORE_FILE = 16 << 20  # read whole: a larger one is an attack (a link to /dev/zero), or the wrong file

# Go's strings.TrimSpace trims unicode.IsSpace characters; Python's strip() also
# trims \x1c-\x1f, so the set is explicit.
_SPACES = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_MAX_LINE_BYTES = 64 * 1024  # bufio.Scanner's limit: upstream fails on longer lines
_REGEX_ESCAPED = frozenset(".+()|{}$")  # regex syntax that means nothing in filepath.Match
_WILDCARDS = frozenset("*?[]\\^")  # where a pattern's literal prefix ends
_FSUTIL_PATTERN_CHARS = frozenset("*[]?^\\")
# Go regexp escapes of ASCII letters/digits that Python's re reads the same way
# (with re.ASCII, \d \w \s \b are ASCII-only as in Go).
_CLASS_ESCAPES = frozenset("afnrtvdDsSwWx0")  # \1-\7: octal in Go, backreferences in Python
_ASSERTION_ESCAPES = frozenset("bBA")
_POSIX_CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}


# -- reading the file --------------------------------------------------------------


@dataclass(frozen=True)
class IgnoreLine:
    """One pattern of an ignore file: what the matcher gets and what the user wrote."""

    pattern: str  # normalised as ignorefile.ReadAll does ("!" kept in front)
    text: str  # the line as written, surrounding whitespace removed
    line: int  # 1-based


def read_ignore_lines(text: str | bytes) -> list[IgnoreLine]:
    """Read ignore-file text like moby's ignorefile.ReadAll, keeping line numbers."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline ends the last line; it does not start another
    result: list[IgnoreLine] = []
    for number, raw in enumerate(lines, 1):
        if len(raw.encode("utf-8", "surrogateescape")) >= _MAX_LINE_BYTES:
            raise IgnoreFileError(f"line {number} is too long (64 KiB or more)")
        raw = raw.removesuffix("\r")
        if raw.startswith("#"):
            continue
        stripped = raw.strip(_SPACES)
        if not stripped:
            continue
        pattern = stripped
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip(_SPACES)
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        if invert:
            pattern = "!" + pattern
        result.append(IgnoreLine(pattern, stripped, number))
    return result


def read_ignore_file(text: str | bytes | None) -> list[str]:
    """The patterns of an ignore file (ignorefile.ReadAll); ``None`` (no file) gives none."""
    if text is None:
        return []
    return [entry.pattern for entry in read_ignore_lines(text)]


def go_clean(path: str) -> str:
    """Go's filepath.Clean on Unix (posixpath.normpath differs: it keeps a leading ``//``)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def _go_dir(path: str) -> str:
    """Go's filepath.Dir: everything up to the last slash, cleaned."""
    return go_clean(path[: path.rfind("/") + 1])


# -- one pattern ----------------------------------------------------------------------


class MatchType(Enum):
    """How a pattern is tested, as patternmatcher classifies it."""

    EXACT = "exact"
    PREFIX = "prefix"  # "dir/**": the path starts with "dir/"
    SUFFIX = "suffix"  # "**/name", "**file", "**": the path ends with the rest
    REGEXP = "regexp"


@dataclass(frozen=True)
class IgnoreRule:
    """One pattern of a matcher, with where it was written."""

    pattern: str  # cleaned, without the leading "!"
    exclusion: bool  # a "!" pattern: re-includes what earlier patterns excluded
    text: str  # as the user wrote it
    line: int | None = None  # 1-based line in ``source``, when it came from a file
    source: str | None = None  # the ignore file, as shown to the user
    match_type: MatchType = field(default=MatchType.EXACT, compare=False)
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    compile_error: str | None = field(default=None, compare=False)
    literal_prefix: str = field(default="", compare=False, repr=False)
    depth: int | None = field(default=None, compare=False, repr=False)  # components it can match

    def describe(self) -> str:
        """``.dockerignore line 3: `*.log``` or, for a pattern not from a file, ```*.log```."""
        if self.line is not None:
            return f"{self.source or '.dockerignore'} line {self.line}: `{self.text}`"
        return f"`{self.text}`"

    def __str__(self) -> str:
        return self.describe()

    def __post_init__(self) -> None:
        # The test for one path, chosen once: the walk calls it for every entry.
        object.__setattr__(self, "_test", self._make_test())

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_test", None)  # a closure: rebuilt on unpickling
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        object.__setattr__(self, "_test", self._make_test())

    def _make_test(self) -> Callable[[str], object]:
        kind = self.match_type
        pattern = self.pattern
        if kind is MatchType.EXACT:
            return pattern.__eq__
        if kind is MatchType.PREFIX:
            return _starts(pattern[:-2])
        if kind is MatchType.SUFFIX:
            return _ends(pattern[2:])
        if self.regex is not None:
            return self.regex.fullmatch
        return self._fail

    def _fail(self, path: str) -> bool:
        raise IgnoreFileError(
            f"invalid .dockerignore pattern {self.describe()}: syntax error in pattern"
            + (f" ({self.compile_error})" if self.compile_error else "")
        )

    def match(self, path: str) -> bool:
        """Whether this pattern matches ``path`` itself (no parent-directory rule)."""
        return bool(self._test(path))  # type: ignore[attr-defined]  # _test is set with object.__setattr__ (frozen)

    def could_match_under(self, dir_slash: str) -> bool:
        """Whether an entry directly inside ``dir_slash`` ("a/b/", "" for the root) might match."""
        if self.depth is not None and self.depth != dir_slash.count("/") + 1:
            return False
        if self.match_type is MatchType.SUFFIX:
            return True
        prefix = self.literal_prefix
        return prefix.startswith(dir_slash) or dir_slash.startswith(prefix)

    def without_trailing_glob(self) -> str:
        """fsutil's patternWithoutTrailingGlob: "a/**" and "a/*" become "a"."""
        return self.pattern.removesuffix("/**").removesuffix("/*")


def _starts(prefix: str) -> Callable[[str], bool]:
    return lambda path: path.startswith(prefix)


def _ends(suffix: str) -> Callable[[str], bool]:
    """patternmatcher's suffix match: "**/foo" also matches "foo" itself."""
    bare = suffix[1:] if suffix.startswith("/") else None
    return lambda path: path.endswith(suffix) or path == bare


def _make_rule(
    raw: str, *, text: str | None, line: int | None, source: str | None
) -> IgnoreRule | None:
    """patternmatcher.New for one pattern: trim, clean, split off "!", check the syntax."""
    pattern = raw.strip(_SPACES)
    if not pattern:
        return None
    pattern = go_clean(pattern)
    where = f"{source or '.dockerignore'} line {line}: " if line is not None else ""
    exclusion = pattern.startswith("!")
    if exclusion:
        if len(pattern) == 1:
            raise IgnoreFileError(f'{where}illegal exclusion pattern: "!"')
        pattern = pattern[1:]
    if not _glob_syntax_ok(pattern):
        raise IgnoreFileError(
            f"{where}invalid pattern `{text if text is not None else raw}`: syntax error in pattern"
        )
    match_type, go_regex = _classify(pattern)
    regex = None
    error = None
    if go_regex is not None:
        regex_text = _python_regex(go_regex)
        try:
            if regex_text is None:
                raise re.error("not a valid Go regular expression")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "[[" and "--" inside classes
                regex = re.compile(regex_text, re.ASCII)
        except re.error as err:
            error = str(err)
    literal_end = next((i for i, ch in enumerate(pattern) if ch in _WILDCARDS), len(pattern))
    # Without "**", brackets (which may match "/") or escapes (\W), a pattern only
    # matches paths with as many components as it has.
    fixed_depth = match_type in (MatchType.EXACT, MatchType.REGEXP) and not any(
        token in pattern for token in ("**", "[", "\\")
    )
    return IgnoreRule(
        pattern=pattern,
        exclusion=exclusion,
        text=text if text is not None else raw.strip(_SPACES),
        line=line,
        source=source,
        match_type=match_type,
        regex=regex,
        compile_error=error,
        literal_prefix=pattern[:literal_end],
        depth=pattern.count("/") + 1 if fixed_depth else None,
    )


def _classify(pattern: str) -> tuple[MatchType, str | None]:
    """patternmatcher's compile: the match type and, for REGEXP, Go's regex text."""
    out = ["^"]
    kind = MatchType.EXACT
    n = len(pattern)
    i = 0
    token = 0  # upstream counts loop iterations, not characters
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":  # treat "**/" as "**"
                    i += 1
                if i >= n:
                    if kind is MatchType.EXACT:
                        kind = MatchType.PREFIX
                    else:
                        out.append(".*")
                        kind = MatchType.REGEXP
                else:
                    out.append("(.*/)?")
                    kind = MatchType.REGEXP
                if token == 0:
                    kind = MatchType.SUFFIX
            else:
                out.append("[^/]*")
                kind = MatchType.REGEXP
        elif ch == "?":
            out.append("[^/]")
            kind = MatchType.REGEXP
        elif ch in _REGEX_ESCAPED:
            out.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                out.append("\\" + pattern[i])
                i += 1
                kind = MatchType.REGEXP
            else:
                out.append("\\")
        elif ch in "[]":
            out.append(ch)
            kind = MatchType.REGEXP
        else:
            out.append(ch)
        token += 1
    if kind is not MatchType.REGEXP:
        return kind, None
    out.append("$")
    return kind, "".join(out)


def _python_regex(go_regex: str) -> str | None:
    """Translate the Go regex that ``_classify`` builds into Python syntax, for fullmatch.

    Only what that regex can contain needs care: escapes, bracket expressions
    (Go's POSIX classes, a literal "]" first) and the anchors. None when Go's
    regexp would reject it.
    """
    body = go_regex[1:-1]  # "^...$": fullmatch anchors, and Python's $ also matches before "\n"
    out: list[str] = []
    n = len(body)
    i = 0
    in_class = False
    while i < n:
        ch = body[i]
        i += 1
        if ch == "\\":
            if i >= n:
                return None  # trailing backslash
            escaped = _go_escape(body[i], in_class=in_class)
            i += 1
            if escaped is None:
                return None
            out.append(escaped)
        elif in_class:
            if ch == "]":
                in_class = False
                out.append(ch)
            elif ch == "[" and body.startswith(":", i) and body.find(":]", i + 1) > 0:
                close = body.find(":]", i + 1)
                ranges = _posix_ranges(body[i + 1 : close])
                if ranges is None:
                    return None  # Go rejects an unknown class name
                out.append(ranges)
                i = close + 2
            elif ch in "[&~|":
                out.append("\\" + ch)  # literal in Go; avoid Python's nested-set syntax
            else:
                out.append(ch)
        elif ch == "[":
            in_class = True
            out.append("[")
            if i < n and body[i] == "^":
                out.append("^")
                i += 1
            if i < n and body[i] == "]":
                out.append("\\]")  # "]" first in a class is literal
                i += 1
        else:
            out.append(ch)
    if in_class:
        return None  # missing closing ]
    return "".join(out)


def _posix_ranges(name: str) -> str | None:
    """Go's ``[:name:]`` / ``[:^name:]`` as ranges for inside a Python bracket expression."""
    negated = name.startswith("^")
    ranges = _POSIX_CLASSES.get(name.removeprefix("^"))
    if ranges is None:
        return None
    if negated:
        complement: list[tuple[int, int]] = []
        low = 0
        for lo, hi in ranges:
            if lo > low:
                complement.append((low, lo - 1))
            low = hi + 1
        complement.append((low, 0x10FFFF))
        ranges = tuple(complement)
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


def _go_escape(ch: str, *, in_class: bool) -> str | None:
    """Go regexp's backslash + ``ch`` as Python regex text; None where Go rejects it."""
    if ch.isascii() and not ch.isalnum():
        return "\\" + ch
    if ch in _CLASS_ESCAPES or (not in_class and ch in _ASSERTION_ESCAPES):
        return "\\" + ch
    if ch == "z" and not in_class:
        return "\\Z"
    return None


def _glob_syntax_ok(pattern: str) -> bool:
    """Whether Go's filepath.Match accepts the pattern's syntax (Unix rules)."""
    rest = pattern
    while rest:
        rest = rest.lstrip("*")
        # scanChunk: up to the next '*' outside a bracket expression.
        in_range = False
        i = 0
        while i < len(rest):
            ch = rest[i]
            if ch == "\\":
                if i + 1 < len(rest):
                    i += 1
            elif ch == "[":
                in_range = True
            elif ch == "]":
                in_range = False
            elif ch == "*" and not in_range:
                break
            i += 1
        chunk, rest = rest[:i], rest[i:]
        if not _chunk_syntax_ok(chunk):
            return False
    return True


def _chunk_syntax_ok(chunk: str) -> bool:
    """matchChunk's syntax checks: bracket expressions and escapes."""
    i = 0
    n = len(chunk)
    while i < n:
        ch = chunk[i]
        if ch == "[":
            i += 1
            if i < n and chunk[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and chunk[i] == "]" and ranges > 0:
                    i += 1
                    break
                i = _class_char(chunk, i)
                if i < 0:
                    return False
                if chunk[i] == "-":
                    i = _class_char(chunk, i + 1)
                    if i < 0:
                        return False
                ranges += 1
        elif ch == "\\":
            i += 1
            if i >= n:
                return False
            i += 1
        else:
            i += 1
    return True


def _class_char(chunk: str, i: int) -> int:
    """getEsc: one (possibly escaped) character of a range; -1 on bad syntax."""
    n = len(chunk)
    if i >= n or chunk[i] in "-]":
        return -1
    if chunk[i] == "\\":
        i += 1
        if i >= n:
            return -1
    i += 1
    return i if i < n else -1


# -- the matcher ------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternMatcher:
    """An ordered list of ignore rules; the last rule that applies to a path decides."""

    rules: tuple[IgnoreRule, ...] = ()

    @classmethod
    def from_patterns(
        cls,
        patterns: Iterable[str],
        *,
        source: str | None = None,
        lines: Sequence[IgnoreLine] | None = None,
    ) -> PatternMatcher:
        """patternmatcher.New: bad syntax and a bare "!" raise IgnoreFileError now.

        ``lines`` (from :func:`read_ignore_lines`) attach file line numbers; a pattern
        that is valid syntax but not a valid regex fails later, when it is used.
        """
        rules: list[IgnoreRule] = []
        if lines is not None:
            for entry in lines:
                rule = _make_rule(entry.pattern, text=entry.text, line=entry.line, source=source)
                if rule is not None:
                    rules.append(rule)
        else:
            for pattern in patterns:
                rule = _make_rule(pattern, text=None, line=None, source=source)
                if rule is not None:
                    rules.append(rule)
        return cls(tuple(rules))

    @classmethod
    def from_file_text(cls, text: str | bytes, *, source: str = ".dockerignore") -> PatternMatcher:
        """Read an ignore file's text and build its matcher, keeping line numbers."""
        lines = read_ignore_lines(text)
        return cls.from_patterns((), source=source, lines=lines)

    @property
    def patterns(self) -> list[str]:
        """The cleaned patterns, "!" in front of exclusions."""
        return [("!" if r.exclusion else "") + r.pattern for r in self.rules]

    @property
    def has_exclusions(self) -> bool:
        """Whether any "!" pattern exists (upstream's Exclusions())."""
        return any(rule.exclusion for rule in self.rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (slash-separated, relative to the context) is excluded.

        A pattern that matches a parent directory covers everything below it; the
        context root "." is never excluded.
        """
        return self.match_pattern(path) is not None

    def match_pattern(self, path: str) -> IgnoreRule | None:
        """The rule that excludes ``path``, or None when the path is kept."""
        if not self.rules:
            return None
        path = go_clean(path)
        if path == ".":
            return None
        parent = _go_dir(path)
        ancestors: list[str] = []
        if parent != ".":
            parts = parent.split("/")
            ancestors = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        matched = False
        decider: IgnoreRule | None = None
        for rule in self.rules:
            if rule.exclusion != matched:
                continue
            hit = rule.match(path)
            if not hit and ancestors:
                for ancestor in ancestors:
                    try:
                        hit = rule.match(ancestor)
                    except IgnoreFileError:
                        hit = False  # upstream ignores errors on the parent check
                    if hit:
                        break
            if hit:
                matched = not rule.exclusion
                decider = rule if matched else None
        return decider

    def match_rule(self, path: str) -> str | None:
        """Which pattern excludes ``path``, for messages: ``.dockerignore line 3: `*.log```."""
        rule = self.match_pattern(path)
        return rule.describe() if rule is not None else None

    def _match_using_parent(
        self, path: str, parent: tuple[bool, ...] | None, active: Sequence[int]
    ) -> tuple[bool, tuple[bool, ...]]:
        """MatchesUsingParentResults for a walk, evaluating only the ``active`` rules.

        A rule outside ``active`` neither matched the parent directory nor can match
        anything inside it, so its result is known to be False.
        """
        rules = self.rules
        info = [False] * len(rules)
        matched = False
        for i in active:
            rule = rules[i]
            if parent is not None and parent[i]:
                hit = True
            else:
                if rule.exclusion != matched:
                    continue
                hit = bool(rule._test(path))  # type: ignore[attr-defined]  # _test is set with object.__setattr__ (frozen)
            if hit:
                info[i] = True
                matched = not rule.exclusion
        return matched, tuple(info)

    def _active_under(self, dir_slash: str, parent: tuple[bool, ...] | None) -> tuple[int, ...]:
        """Indexes of the rules that can affect an entry inside ``dir_slash`` ("" for the root)."""
        return tuple(
            i
            for i, rule in enumerate(self.rules)
            if (parent is not None and parent[i]) or rule.could_match_under(dir_slash)
        )


# -- finding the ignore file --------------------------------------------------------------


def load_ignore(context_dir: Path, dockerfile: Path | None = None) -> PatternMatcher:
    """The context's ignore rules, found the way BuildKit finds them.

    ``<Dockerfile name>.dockerignore`` beside the Dockerfile wins over
    ``<context>/.dockerignore``; with neither, nothing is excluded. Pass
    ``dockerfile=None`` when the Dockerfile does not come from a file.
    """
    candidates: list[Path] = []
    if dockerfile is not None:
        candidates.append(dockerfile.parent / f"{dockerfile.name}.dockerignore")
    candidates.append(context_dir / ".dockerignore")
    for candidate in candidates:
        try:
            data = read_limited(candidate, MAX_IGNORE_FILE)
        except ValueError as err:
            raise IgnoreFileError(f"cannot read {candidate}: {err}") from None
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            raise IgnoreFileError(f"{candidate} is a directory, not an ignore file") from None
        except OSError as err:
            raise IgnoreFileError(f"cannot read {candidate}: {err.strerror}") from None
        source = _display_name(candidate, context_dir)
        try:
            lines = read_ignore_lines(data)
        except IgnoreFileError as err:
            raise IgnoreFileError(f"{source}: {err}") from None
        return PatternMatcher.from_patterns((), source=source, lines=lines)
    return PatternMatcher()


def _display_name(path: Path, context_dir: Path) -> str:
    try:
        return path.relative_to(context_dir).as_posix()
    except ValueError:
        return str(path)


# -- walking the context -------------------------------------------------------------------


class ContextEntry(NamedTuple):
    """One path of the build context as it would be sent: never followed if a symlink."""

    path: str  # relative, slash-separated, no leading "./"
    stat: os.stat_result  # lstat
    is_dir: bool

    @property
    def is_symlink(self) -> bool:
        return stat_module.S_ISLNK(self.stat.st_mode)


class _Filter:
    """One matcher (exclude or include) as fsutil's filter applies it during a walk."""

    __slots__ = ("exclusions", "matcher", "only_prefix", "prefixes")

    def __init__(self, matcher: PatternMatcher, *, exclude: bool) -> None:
        self.matcher = matcher
        # The patterns that can bring something back inside a pruned directory:
        # exceptions ("!") of an exclude list, or the patterns of an include list.
        keepers = [r for r in matcher.rules if r.exclusion == exclude]
        self.exclusions = matcher.has_exclusions
        self.only_prefix = not any(
            _FSUTIL_PATTERN_CHARS.intersection(r.without_trailing_glob()) for r in keepers
        )
        self.prefixes = tuple(r.without_trailing_glob() + "/" for r in keepers)

    def may_prune(self, dir_slash: str, *, exclude: bool) -> bool:
        """fsutil's shortcut: a directory no keeper pattern reaches need not be opened."""
        if not self.only_prefix:
            return False
        if exclude and not self.exclusions:
            return True
        return not any(prefix.startswith(dir_slash) for prefix in self.prefixes)


@dataclass
class _Dir:
    """A directory being walked: its results for both matchers, and whether it was yielded."""

    path: str  # relative path; "" for the root
    prefix: str  # path + "/" ("" for the root): what entries inside start with
    entry: os.DirEntry[str] | None
    exclude_info: tuple[bool, ...] | None
    include_info: tuple[bool, ...] | None
    exclude_active: tuple[int, ...]
    include_active: tuple[int, ...]
    emitted: bool


def walk_context(
    root: Path,
    matcher: PatternMatcher,
    *,
    include: Sequence[str] | None = None,
) -> Iterator[ContextEntry]:
    """The files of a build context that ``matcher`` keeps, depth first, names sorted.

    Symlinks are reported, never followed. An excluded directory is not opened
    unless an exception pattern could re-include something inside it; a kept
    entry inside an excluded directory brings its directories along, as fsutil
    sends them. ``include`` patterns, when given, restrict the walk further.
    """
    exclude = _Filter(matcher, exclude=True) if matcher.rules else None
    include_filter = None
    if include is not None:
        include_matcher = PatternMatcher.from_patterns(include)
        if include_matcher.rules:
            include_filter = _Filter(include_matcher, exclude=False)
    try:
        if not stat_module.S_ISDIR(os.stat(root).st_mode):
            raise BuildContextError(f"build context {root} is not a directory")
    except FileNotFoundError:
        raise BuildContextError(f"build context {root} does not exist") from None
    except PermissionError:
        raise BuildContextError(f"build context {root} is not readable") from None
    if exclude is None and include_filter is None:
        yield from _walk_plain(root)
        return
    yield from _walk_filtered(root, exclude, include_filter)


def _scan(path: Path | str, rel: str, *, skipped: bool) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except PermissionError:
        if skipped:
            return []  # fsutil ignores unreadable directories that are excluded anyway
        raise BuildContextError(
            f"cannot read {rel or '.'} in the build context: permission denied"
        ) from None
    except FileNotFoundError:
        return []  # removed while walking: fsutil skips it too
    except NotADirectoryError:
        return []
    if all(entry.name.isascii() for entry in entries):
        entries.sort(key=_name)
    else:
        entries.sort(key=_byte_order)  # as Go sorts names: by their bytes
    return entries


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _byte_order(entry: os.DirEntry[str]) -> bytes:
    return entry.name.encode("utf-8", "surrogateescape")


def _walk_plain(root: Path) -> Iterator[ContextEntry]:
    """No patterns: every entry, with no matching at all."""
    stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = [
        ("", iter(_scan(root, "", skipped=False)))
    ]
    while stack:
        prefix, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel = prefix + entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        is_dir = stat_module.S_ISDIR(st.st_mode)
        yield ContextEntry(rel, st, is_dir)
        if is_dir:
            stack.append((rel + "/", iter(_scan(entry.path, rel, skipped=False))))


def _walk_filtered(
    root: Path, exclude: _Filter | None, include: _Filter | None
) -> Iterator[ContextEntry]:
    exclude_matcher = exclude.matcher if exclude else None
    include_matcher = include.matcher if include else None
    top = _Dir(
        path="",
        prefix="",
        entry=None,
        exclude_info=None,
        include_info=None,
        exclude_active=exclude_matcher._active_under("", None) if exclude_matcher else (),
        include_active=include_matcher._active_under("", None) if include_matcher else (),
        emitted=True,
    )
    dirs: list[_Dir] = [top]
    stack: list[Iterator[os.DirEntry[str]]] = [iter(_scan(root, "", skipped=False))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            dirs.pop()
            continue
        parent = dirs[-1]
        rel = parent.prefix + entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        skip = False
        include_info: tuple[bool, ...] | None = None
        exclude_info: tuple[bool, ...] | None = None
        if include is not None and include_matcher is not None:
            kept, include_info = include_matcher._match_using_parent(
                rel, parent.include_info, parent.include_active
            )
            if not kept:
                if is_dir and include.may_prune(rel + "/", exclude=False):
                    continue
                skip = True
        if exclude is not None and exclude_matcher is not None:
            excluded, exclude_info = exclude_matcher._match_using_parent(
                rel, parent.exclude_info, parent.exclude_active
            )
            if excluded:
                if is_dir and exclude.may_prune(rel + "/", exclude=True):
                    continue
                skip = True
        if not skip:
            # A kept entry inside skipped directories brings those directories along.
            for ancestor in dirs:
                if not ancestor.emitted and ancestor.entry is not None:
                    ancestor.emitted = True
                    try:
                        yield ContextEntry(
                            ancestor.path, ancestor.entry.stat(follow_symlinks=False), True
                        )
                    except FileNotFoundError:
                        pass
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield ContextEntry(rel, st, is_dir)
        if is_dir:
            dir_slash = rel + "/"
            dirs.append(
                _Dir(
                    path=rel,
                    prefix=dir_slash,
                    entry=entry,
                    exclude_info=exclude_info,
                    include_info=include_info,
                    exclude_active=exclude_matcher._active_under(dir_slash, exclude_info)
                    if exclude_matcher
                    else (),
                    include_active=include_matcher._active_under(dir_slash, include_info)
                    if include_matcher
                    else (),
                    emitted=not skip,
                )
            )
            stack.append(iter(_scan(entry.path, rel, skipped=skip)))
