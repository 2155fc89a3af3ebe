"""BuildKit's shell lexer: variable expansion, quote removal and word splitting.

A port of ``frontend/dockerfile/shell/lex.go`` from moby/buildkit, kept
behaviour-for-behaviour (the conformance corpus in ``shared/conformance/
buildkit-shell`` is the acceptance test). It does not run commands: it only
expands ``$VAR`` / ``${VAR...}``, removes quotes and processes escapes, the way
ENV, ARG, COPY, WORKDIR and friends see their arguments.

Errors are :class:`~builder.errors.ExpansionError` without a location; the
instruction layer re-raises them with file:line.

One deliberate difference: upstream shares one word buffer between nested
``${...}`` levels, so ``ProcessWords("a${X:-b}")`` loses the ``a``; here every
level has its own buffer, which gives ``["ab"]`` as a shell would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from builder.errors import ExpansionError

# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property.
# Python's str.isspace differs (it counts \x1c-\x1f), so the set is explicit.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_MODIFIERS = frozenset("+-?#%")
# Characters of a ${VAR#pattern} that are regex syntax and must be escaped.
_REGEX_META = frozenset("[]{}.+()|^$")
_EOF = ""
# ${VAR:-${VAR:-...}} levels one word may nest: each level is a few Python frames, and no
# real Dockerfile nests more than a handful; deeper is refused with a message, not a crash.
MAX_NESTING = 100


@dataclass(frozen=True)
class WordResult:
    """Outcome of one expansion: the single word, its split words, and the names looked up."""

    result: str
    words: list[str]
    matched: set[str] = field(default_factory=set)  # looked up and found
    unmatched: set[str] = field(default_factory=set)  # looked up and not set


def env_from_list(entries: Iterable[str]) -> dict[str, str]:
    """Turn ``NAME=value`` strings into a lookup table, as BuildKit's EnvsFromSlice.

    An entry without ``=`` defines the name as set but empty; the last duplicate wins.
    """
    env: dict[str, str] = {}
    for entry in entries:
        name, _, value = entry.partition("=")
        env[name] = value
    return env


class _LexError(Exception):
    """Internal: a failure deep in the scanner, turned into ExpansionError at the top."""

    def __init__(self, message: str, *, with_source: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.with_source = with_source


class _NestingError(_LexError):
    """Internal: ${...} nested deeper than MAX_NESTING; no level rewrites it."""


@dataclass(frozen=True)
class ShellLex:
    """The lexer's settings; one instance can be shared, each call keeps its own state."""

    escape: str = "\\"
    raw_quotes: bool = False  # keep the quote characters in the result
    raw_escapes: bool = False  # keep the escape characters in the result
    skip_unset_env: bool = False  # leave $VAR / ${VAR...} as written when VAR is unset
    skip_process_quotes: bool = False  # quotes are ordinary characters

    def __post_init__(self) -> None:
        if len(self.escape) != 1:
            raise ValueError(f"escape must be one character, not {self.escape!r}")

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand one word without splitting it (BuildKit's ProcessWord)."""
        return self.process_word_with_matches(word, env).result

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand and split into words; only unquoted, unescaped whitespace separates."""
        return self.process_word_with_matches(word, env).words

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> WordResult:
        """Expand ``word`` and report which variable names were found and which were not."""
        if not _needs_scanning(word, self.escape, self.skip_process_quotes):
            return WordResult(word, _split_plain(word))
        scanner = _Scanner(self, word, env)
        try:
            result, words = scanner.process_stop_on(_EOF, self.raw_escapes)
        except _LexError as err:
            message = f"{err.message}: {word}" if err.with_source else err.message
            raise ExpansionError(message) from None
        return WordResult(result, words, scanner.matched, scanner.unmatched)


def _needs_scanning(word: str, escape: str, skip_quotes: bool) -> bool:
    if "$" in word or escape in word or word.startswith("\ufeff"):
        return True
    return not skip_quotes and ("'" in word or '"' in word)


def _split_plain(word: str) -> list[str]:
    """Split text with nothing to expand on Go's whitespace."""
    words: list[str] = []
    current: list[str] = []
    for ch in word:
        if ch in _SPACES:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


class _Words:
    """Upstream's wordsStruct: accumulates split words next to the single-word result."""

    __slots__ = ("buf", "in_word", "words")

    def __init__(self) -> None:
        self.words: list[str] = []
        self.buf: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACES:
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.buf.append(ch)
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        if text:
            self.buf.append(text)
        self.in_word = True

    def get_words(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class _Scanner:
    """State of one expansion: position in the source, the env, names seen."""

    __slots__ = ("depth", "env", "escape", "lex", "matched", "pos", "raw_escapes", "src", "unmatched")

    def __init__(self, lex: ShellLex, src: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        # Go's text/scanner drops a byte-order mark at the very start.
        self.src = src[1:] if src.startswith("\ufeff") else src
        self.pos = 0
        self.depth = 0  # ${...} operands being read, one inside the other
        self.env = env
        self.escape = lex.escape
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    # -- the scanner primitives of text/scanner -------------------------------

    def peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF

    # -- lex.go ---------------------------------------------------------------

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Read up to ``stop`` (or the end when ``stop`` is empty) and return (word, words)."""
        saved_raw = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_stop_on(stop)
        finally:
            self.raw_escapes = saved_raw

    def _process_stop_on(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        src = self.src
        end = len(src)
        escape = self.escape
        quotes = not self.lex.skip_process_quotes
        while self.pos < end:
            ch = src[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.get_words()
            handler: Callable[[], str] | None = None
            if ch == "$":
                handler = self.process_dollar
            elif quotes and ch == "'":
                handler = self.process_single_quote
            elif quotes and ch == '"':
                handler = self.process_double_quote
            if handler is not None:
                text = handler()
                result.append(text)
                if ch == "$":
                    words.add_string(text)
                else:
                    words.add_raw_string(text)
                continue
            self.pos += 1
            if ch == escape:
                if self.raw_escapes:
                    words.add_raw_char(ch)
                    result.append(ch)
                if self.pos >= end:
                    break
                ch = src[self.pos]
                self.pos += 1
                words.add_raw_char(ch)
            else:
                words.add_char(ch)
            result.append(ch)
        if stop:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get_words()

    def process_single_quote(self) -> str:
        """Everything up to the next ``'`` is literal; a ``'`` cannot be escaped."""
        start = self.pos + 1
        close = self.src.find("'", start)
        if close < 0:
            self.pos = len(self.src)
            raise _LexError("unterminated single quote")
        self.pos = close + 1
        if self.lex.raw_quotes:
            return self.src[start - 1 : close + 1]
        return self.src[start:close]

    def process_double_quote(self) -> str:
        """Literal except ``$`` expansions; the escape only escapes ``"``, ``$`` and itself."""
        result: list[str] = []
        if self.lex.raw_quotes:
            result.append('"')
        self.pos += 1
        src = self.src
        end = len(src)
        escape = self.escape
        while True:
            if self.pos >= end:
                raise _LexError("unterminated double quote")
            ch = src[self.pos]
            if ch == '"':
                self.pos += 1
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.process_dollar())
                continue
            self.pos += 1
            if ch == escape:
                if self.raw_escapes:
                    result.append(ch)
                if self.pos >= end:
                    continue  # a trailing escape is dropped; the loop then reports the quote
                following = src[self.pos]
                if following in ('"', "$", escape):
                    ch = following
                    self.pos += 1
            result.append(ch)

    def process_dollar(self) -> str:
        self.pos += 1  # the '$'
        if self.peek() != "{":
            name = self.process_name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "$" + name
            return value

        self.pos += 1  # the '{'
        first = self.peek()
        if first == _EOF:
            raise _LexError("syntax error: missing '}'")
        if first in "{}:":
            raise _LexError("bad substitution")
        name = self.process_name()
        ch = self.next()
        modifier = ch

        if ch == "}":
            value, found = self.get_env(name)
            if not found and self.lex.skip_unset_env:
                return "${" + name + "}"
            return value
        if ch == _EOF:
            raise _LexError("syntax error: missing '}'")

        if ch == ":":
            # The ':' forms treat set-but-empty as unset; any character may follow,
            # the operand is read before an unknown one is rejected.
            ch = self.next()
            return self._modifier(name, ch, modifier + ch, null_is_unset=True)
        if ch in _MODIFIERS:
            return self._modifier(name, ch, modifier, null_is_unset=False)
        if ch == "/":
            return self._replace(name)
        raise _LexError(f"unsupported modifier ({modifier}) in substitution")

    def _operand(self, stop: str, *, raw_escapes: bool) -> str:
        if self.depth >= MAX_NESTING:
            raise _NestingError(f"variable substitutions nested more than {MAX_NESTING} levels deep",
                                with_source=False)
        self.depth += 1
        try:
            word, _ = self.process_stop_on(stop, raw_escapes)
        except _NestingError:
            raise
        except _LexError:
            if self.pos >= len(self.src):
                raise _LexError(
                    "syntax error: missing '/' in ${}"
                    if stop == "/"
                    else "syntax error: missing '}'"
                ) from None
            raise
        finally:
            self.depth -= 1
        return word

    def _modifier(self, name: str, op: str, modifier: str, *, null_is_unset: bool) -> str:
        raw = op in ("#", "%") and op != _EOF
        if null_is_unset and raw:
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        word = self._operand("}", raw_escapes=raw)
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if op == "-":
            return word if empty else value
        if op == "+":
            return "" if empty else word
        if op == "?":
            if not found:
                raise _LexError(
                    f"{name}: {word or 'is not allowed to be unset'}", with_source=False
                )
            if null_is_unset and value == "":
                raise _LexError(
                    f"{name}: {word or 'is not allowed to be empty'}", with_source=False
                )
            return value
        if op not in _MODIFIERS:
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        greedy = word.startswith(op)
        if greedy:
            word = word[1:]
        if op == "%":
            return _trim_suffix(word, value, greedy)
        return _trim_prefix(word, value, greedy)

    def _replace(self, name: str) -> str:
        replace_all = self.peek() == "/"
        if replace_all:
            self.pos += 1
        pattern = self._operand("/", raw_escapes=True)
        replacement = self._operand("}", raw_escapes=True)
        value, found = self.get_env(name)
        if self.lex.skip_unset_env and not found:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        regex = _compile_pattern(pattern, greedy=True, anchored=False)
        if replace_all:
            return _go_replace_all(regex, value, replacement)
        match = regex.search(value)
        if match is None:
            return value
        return value[: match.start()] + replacement + value[match.end() :]

    def process_name(self) -> str:
        """Read a variable name: letters, digits, ``_``; digits alone; or one special character."""
        src = self.src
        end = len(src)
        start = self.pos
        if start >= end:
            return ""
        first = src[start]
        if first.isdecimal():
            pos = start
            while pos < end and src[pos].isdecimal():
                pos += 1
            self.pos = pos
            return src[start:pos]
        if first in _SPECIAL_PARAMS:
            self.pos += 1
            return first
        pos = start
        while pos < end:
            ch = src[pos]
            if not (ch == "_" or ch.isalpha() or ch.isdecimal()):
                break
            pos += 1
        self.pos = pos
        return src[start:pos]

    def get_env(self, name: str) -> tuple[str, bool]:
        value = self.env.get(name)
        if value is None:
            self.unmatched.add(name)
            return "", False
        self.matched.add(name)
        return value, True


# -- ${VAR#pattern}, ${VAR%pattern}, ${VAR/pattern/replacement} -----------------


def _compile_pattern(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """Turn a shell pattern (``*``, ``?``, escapes, no brackets) into a regex, as upstream."""
    out: list[str] = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
        elif tok == "?":
            out.append(".")
        elif tok == "\\":
            following = pattern[i] if i < n else _EOF
            if following in ("}", "/") and following:
                continue  # the escape of '}' or '/' inside ${} is not part of the pattern
            i += 1
            if following not in ("*", "?", "\\") or not following:
                shown = following or "EOF"
                raise _LexError(
                    f"invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                )
            out.append("\\" + following)
        elif tok in _REGEX_META:
            out.append("\\" + tok)
        else:
            out.append(tok)
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _compile_pattern(pattern, greedy=greedy, anchored=True).match(value)
    return value[match.end() :] if match else value


def _reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each escape before the character it escapes: a\\*c -> c\\*a."""
    out = [""] * len(pattern)
    last = len(pattern) - 1
    i = 0
    while i <= last:
        tok = pattern[i]
        out_idx = last - i
        if tok == "\\" and i != last:
            out[out_idx - 1] = tok
            out[out_idx] = pattern[i + 1]
            i += 2
        else:
            out[out_idx] = tok
            i += 1
    return "".join(out)


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    """Regexes find leftmost matches, so trim the reversed value by the reversed pattern."""
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _go_replace_all(regex: re.Pattern[str], value: str, template: str) -> str:
    """Go's Regexp.ReplaceAllString: its empty-match rule and ``$`` template expansion."""
    out: list[str] = []
    last_end = 0
    search = 0
    n = len(value)
    while search <= n:
        match = regex.search(value, search)
        if match is None:
            break
        start, end = match.span()
        out.append(value[last_end:start])
        if end > last_end or start == 0:
            out.append(_go_expand(template, match))
        last_end = end
        width = 1 if search < n else 0
        if search + width > end:
            search += width
        elif search + 1 > end:
            search += 1
        else:
            search = end
    out.append(value[last_end:])
    return "".join(out)


def _go_expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.Expand for a regex whose only group is the whole match."""
    if "$" not in template:
        return template
    out: list[str] = []
    rest = template
    while True:
        before, dollar, after = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        rest = after
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        parsed = _go_extract(rest)
        if parsed is None:
            out.append("$")
            continue
        number, rest = parsed
        if number == 0:
            out.append(match.group(0))


def _go_extract(text: str) -> tuple[int, str] | None:
    """Parse ``name`` or ``{name}`` after a ``$``; returns (group number or -1, rest)."""
    brace = text.startswith("{")
    body = text[1:] if brace else text
    i = 0
    while i < len(body) and (body[i] == "_" or body[i].isalpha() or body[i].isdecimal()):
        i += 1
    if i == 0:
        return None
    name = body[:i]
    if brace:
        if i >= len(body) or body[i] != "}":
            return None
        i += 1
    # Only group 0 (the whole match) exists: the pattern's parentheses are escaped.
    return (0 if name == "0" else -1), body[i:]
