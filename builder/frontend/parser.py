"""Dockerfile text -> :class:`ParsedDockerfile`, exactly as BuildKit's parser forms its nodes.

The Lark grammar (``grammar/dockerfile.lark``) cuts the file into directives,
comment lines, blank runs and whole logical instructions; this module turns
each instruction token into a :class:`Node` (keyword, flags, arguments by the
per-instruction rules of BuildKit's ``line_parsers.go``), reads heredoc bodies
and reports errors with file:line. It gives no meaning to instructions: that is
:mod:`builder.frontend.instructions`' job.

The smaller public helpers (parse_words, parse_json_array, heredocs_from_line,
parse_heredoc_word, detect_syntax, parse_directive) work on one piece of text;
those that can fail raise ParseError without a location, which parse() fills in.

Reference: moby/buildkit ``frontend/dockerfile/parser`` (parser.go,
line_parsers.go, split_command.go, directives.go, parser_heredoc.go) and the
corpus in ``shared/conformance/buildkit-parser`` (see its FORMAT.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import grammar
from builder.errors import ParseError, SourceLocation
from builder.frontend.ast import Directive, Heredoc, Node, ParsedDockerfile, ParserWarning
from builder.frontend.dump import go_quote

if TYPE_CHECKING:
    from lark import Lark, Token

DEFAULT_ESCAPE = "\\"
ESCAPE_CHARS = ("\\", "`")
DIRECTIVE_NAMES = ("syntax", "escape", "check")
# BuildKit reads lines with a 64 KiB bufio.Scanner buffer; longer lines are an error.
MAX_LINE_BYTES = 65535

# Go's unicode.IsSpace. Python's str.isspace also counts \x1c-\x1f, so it is spelled out.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACES = frozenset(GO_SPACE)
_SPACE_RUN = re.compile(f"[{GO_SPACE}]+")
_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")  # BuildKit's reWhitespace / tokenWhitespace
_DIRECTIVE_BODY = re.compile(r"([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*\Z")
_HEREDOC_WORD = re.compile(r"([0-9]*)<<(-?)([^<]*)\Z", re.DOTALL)
_HEREDOC_GLUE = re.compile(f"<<[{GO_SPACE}]*\\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)

_MAYBE_JSON = frozenset({"run", "cmd", "entrypoint", "shell"})
_MAYBE_JSON_LIST = frozenset({"add", "copy", "volume"})
_WHITESPACE_LIST = frozenset({"from", "expose"})
_WHOLE_STRING = frozenset({"maintainer", "stopsignal", "user", "workdir"})
_HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


class _LexError(Exception):
    """The heredoc word lexer met an unterminated quote or a bad ${...}."""


def _too_deep() -> ParseError:
    return ParseError(
        "${...} nested too deeply to look for heredocs", hint="nest variable references less deeply"
    )


@functools.cache
def _lark(escape: str) -> Lark:
    """The LALR parser for one escape character; built once per process and escape.

    Building the LALR tables costs ~0.1 s, so Lark keeps them in a cache file,
    checked against the grammar's hash. The file is a pickle: it lives in a
    directory only this user can write (never a shared /tmp).
    """
    from lark import Lark  # only when a Dockerfile is parsed: a cached parse never needs it

    text = grammar.load().replace("%ESC%", re.escape(escape))
    options: dict[str, object] = {"parser": "lalr", "lexer": "contextual", "start": ["start", "body"]}
    cache = _grammar_cache_file(escape)
    if cache is not None:
        try:
            return Lark(text, cache=str(cache), **options)
        except Exception:  # a damaged or foreign cache file: build without it
            with contextlib.suppress(OSError):
                cache.unlink()
    return Lark(text, **options)


def user_cache_dir() -> Path | None:
    """``~/.cache/pybuild`` (or under $XDG_CACHE_HOME), for pickles of this user's only: None
    when another user could write there."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pybuild"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = base.stat()
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None  # someone else could plant a pickle there
    return base


def _grammar_cache_file(escape: str) -> Path | None:
    base = user_cache_dir()
    return None if base is None else base / f"lark-dockerfile-{ord(escape):x}.cache"


@dataclass(frozen=True)
class DetectedDirective:
    """A directive found by :func:`detect_syntax` / :func:`parse_directive`."""

    ref: str  # the value up to the first space ("docker/dockerfile:1")
    cmdline: str  # the whole value
    line: int  # 1-based; 0 for a JSON-object Dockerfile without shebang


class Parser:
    """Parses Dockerfiles. Stateless: the LALR parsers are cached per escape character."""

    def parse(self, source: str | bytes, file: str = "Dockerfile") -> ParsedDockerfile:
        text = _decode(source)
        raw_lines = text.split("\n")
        count = len(raw_lines) - 1 if text.endswith("\n") or not text else len(raw_lines)
        lines = tuple(line.rstrip("\r") for line in raw_lines[:count]) if "\r" in text else tuple(raw_lines[:count])
        too_long = _first_long_line(text, raw_lines, count)
        if too_long is None:
            return _Run(file, lines, raw_lines, count).parse(text)
        # BuildKit reports what goes wrong before the long line first, as its scanner would.
        try:
            _Run(file, lines, raw_lines, too_long - 1).parse("\n".join(raw_lines[: too_long - 1]) + "\n")
        except ParseError as error:
            if error.message != "file with no instructions":
                raise
        raise ParseError(
            f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
            SourceLocation(file, too_long),
            hint="split it with line continuations",
        )


def parse(source: str | bytes, file: str = "Dockerfile") -> ParsedDockerfile:
    """Parse a Dockerfile; raises ParseError naming file:line for anything BuildKit rejects."""
    return Parser().parse(source, file)


class _Run:
    """The state of one parse: location data, directives, comments seen, nodes so far."""

    def __init__(self, file: str, lines: tuple[str, ...], raw_lines: list[str], count: int) -> None:
        self.file = file
        self.lines = lines
        self.raw_lines = raw_lines
        self.count = count  # physical lines this run may read
        self.escape = DEFAULT_ESCAPE
        self.directives: list[Directive] = []
        self.nodes: list[Node] = []
        self.warnings: list[ParserWarning] = []
        self.comments: list[str] = []

    def error(
        self, message: str, start: int, end: int | None = None, hint: str | None = None,
        *, quote: bool = True,
    ) -> ParseError:
        line = max(start, 1)
        return ParseError(
            message,
            SourceLocation(self.file, line, end if end and end > line else None),
            source_line=self.lines[line - 1] if quote and line <= len(self.lines) else None,
            hint=hint,
        )

    def parse(self, text: str) -> ParsedDockerfile:
        tree_children = self._lark_parse(DEFAULT_ESCAPE, text, "start", 0)
        self._read_directives(tree_children)
        if self.escape != DEFAULT_ESCAPE:
            tree_children = self._lark_parse(self.escape, text, "start", 0)
        offset = 0
        position = 0
        while True:
            resume, position = self._walk(tree_children, offset, position)
            if resume is None or resume >= self.count:
                break
            # After heredoc bodies, carry on with the tokens already made if one starts
            # right after the last body; otherwise the bodies split a token: lex again.
            while position < len(tree_children) and _line(tree_children[position]) + offset <= resume:
                position += 1
            if position < len(tree_children) and _line(tree_children[position]) + offset == resume + 1:
                continue
            offset = resume
            position = 0
            rest = "\n".join(self.raw_lines[resume : self.count])
            if self.count < len(self.raw_lines):
                rest += "\n"
            tree_children = self._lark_parse(self.escape, rest, "body", offset)
        if not self.nodes:
            raise self.error(
                "file with no instructions", self.count,
                hint="a Dockerfile needs at least one instruction, such as FROM", quote=False,
            )
        return ParsedDockerfile(
            nodes=tuple(self.nodes),
            directives=tuple(self.directives),
            warnings=tuple(self.warnings),
            escape=self.escape,
            file=self.file,
            lines=self.lines,
        )

    def _lark_parse(self, escape: str, text: str, start: str, offset: int) -> list[Token]:
        from lark.exceptions import LarkError

        try:
            return _lark(escape).parse(text, start=start).children  # type: ignore[return-value]  # lark types children as Tree | Token; these rules hold tokens
        except LarkError as error:  # the grammar accepts every text; this is a bug guard
            line = getattr(error, "line", 0) or 0
            raise self.error(f"cannot parse: {error}", offset + max(line, 1)) from None

    def _read_directives(self, children: list[Token]) -> None:
        seen: set[str] = set()
        for token in children:
            if token.type != "DIRECTIVE":
                break
            body = token.value.rstrip("\r\n").lstrip(GO_SPACE)[1:].lstrip(GO_SPACE)
            match = _DIRECTIVE_BODY.match(body)
            if match is None:  # cannot happen while the grammar and this regex agree
                break
            name, value = match.group(1).lower(), match.group(2)
            if name in seen:
                raise self.error(
                    f"only one {name} parser directive can be used", _line(token),
                    hint="remove the repeated directive",
                )
            seen.add(name)
            if name == "escape":
                if value not in ESCAPE_CHARS:
                    raise self.error(
                        f"invalid escape token '{value}' does not match ` or \\", _line(token),
                        hint="write # escape=\\ or # escape=`",
                    )
                self.escape = value
            self.directives.append(Directive(name, value, _line(token)))

    def _walk(self, children: list[Token], offset: int, position: int) -> tuple[int | None, int]:
        """Build nodes from tokens[position:]; stops after an instruction with heredocs and
        returns the 0-based line after its bodies and the position of the next token."""
        for index in range(position, len(children)):
            token = children[index]
            kind = token.type
            if kind == "INSTRUCTION":
                resume = self._instruction(token, offset)
                if resume is not None:
                    return resume, index + 1
            elif kind == "COMMENT":
                # BuildKit keeps the text after the line's first character, trimmed, and an
                # empty comment ("#") forgets the comments gathered so far.
                comment = token.value[1:].strip(GO_SPACE)
                if comment:
                    self.comments.append(comment)
                else:
                    self.comments.clear()
            elif kind == "BLANK":
                # A blank line separates comments from the next instruction: they do not
                # describe it (BuildKit's InvalidDefinitionDescription documentation).
                self.comments.clear()
        return None, len(children)

    def _instruction(self, token: Token, offset: int) -> int | None:
        start = _line(token) + offset
        physical = token.value.split("\n")
        if token.value.endswith("\n"):
            physical.pop()
        end = start + len(physical) - 1
        escape = self.escape
        first = physical[0].rstrip("\r").lstrip(GO_SPACE)
        line = _without_continuation(first, escape)
        empty_continuation = False
        if line is None:
            line = first
        else:
            parts = [line]
            for raw in physical[1:]:
                text = raw.rstrip("\r")
                stripped = text.lstrip(GO_SPACE)
                if not stripped:
                    empty_continuation = True
                    continue
                if stripped[0] == "#":
                    continue
                cut = _without_continuation(text, escape)
                parts.append(text if cut is None else cut)
            line = "".join(parts)
        if empty_continuation:
            self.warnings.append(ParserWarning(
                rule="NoEmptyContinuation",
                message=f"Empty continuation line found in: {line}",
                start_line=end,
                end_line=end,
                detail="Empty continuation lines will become errors in a future release",
            ))
        try:
            node = _node_from_line(line, self.escape, start, end)
        except ParseError as error:  # raised without a location below
            raise self.error(error.message, start, end, error.hint) from None
        comments = tuple(self.comments)
        self.comments.clear()
        resume = None
        if "<<" in line and _can_have_heredocs(node):
            try:
                heredocs = heredocs_from_line(line)
            except ParseError as error:  # raised without a location below
                raise self.error(error.message, start, end, error.hint) from None
            if heredocs:
                filled, end = self._read_heredoc_bodies(heredocs, start, end)
                resume = end
                inner = node.inner
                if inner is not None:
                    inner = replace(inner, heredocs=filled, end_line=end)
                node = replace(node, heredocs=filled, inner=inner, end_line=end)
        self.nodes.append(replace(node, comments=comments) if comments else node)
        return resume

    def _read_heredoc_bodies(
        self, heredocs: list[Heredoc], start: int, end: int
    ) -> tuple[tuple[Heredoc, ...], int]:
        """Take each body from the lines after the instruction, in marker order."""
        index = end  # 0-based index of the first line after the instruction
        last_with_newline = len(self.raw_lines) - 1
        filled = []
        for heredoc in heredocs:
            content: list[str] = []
            terminated = False
            while index < self.count:
                raw = self.raw_lines[index]
                index += 1
                candidate = raw.rstrip("\r")
                if heredoc.chomp:
                    candidate = candidate.lstrip("\t")
                if candidate == heredoc.name:
                    terminated = True
                    break
                content.append(raw + "\n" if index <= last_with_newline else raw)
            if not terminated:
                raise self.error(
                    "unterminated heredoc", start, index,
                    hint=f"end it with a line that is exactly {heredoc.name}",
                )
            filled.append(Heredoc(
                name=heredoc.name, content="".join(content), expand=heredoc.expand,
                chomp=heredoc.chomp, file_descriptor=heredoc.file_descriptor,
            ))
        return tuple(filled), index


def _without_continuation(line: str, escape: str) -> str | None:
    """The line without its continuation escape (and the blanks after it); None if it does not continue.

    BuildKit's rule: an escape character, not itself preceded by one, then only
    spaces and tabs to the end of the line (``RUN a \\\\`` does not continue).
    """
    core = line.rstrip(" \t")
    if core[-1:] == escape and core[-2:-1] != escape:
        return core[:-1]
    return None


def _decode(source: str | bytes) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        text = bytes(source).decode("utf-8", "surrogateescape")
    else:
        text = source
    return text[1:] if text.startswith("\ufeff") else text


def _byte_length(line: str) -> int:
    try:
        return len(line.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(line.encode("utf-8", "surrogatepass"))


def _first_long_line(text: str, raw_lines: list[str], count: int) -> int | None:
    """The 1-based number of the first line BuildKit's 64 KiB line buffer cannot hold."""
    if len(text) <= MAX_LINE_BYTES // 4:
        return None
    for number, line in enumerate(raw_lines[:count], 1):
        if len(line) * 4 > MAX_LINE_BYTES and _byte_length(line) > MAX_LINE_BYTES:
            return number
    return None


# --- one logical line -> Node (BuildKit's newNodeFromLine and line parsers) ---------------


def _node_from_line(line: str, escape: str, start: int, end: int) -> Node:
    # ONBUILD nests a whole instruction; the chain is built inside out without recursion,
    # so that ``ONBUILD ONBUILD ...`` as deep as a line allows cannot exhaust the stack.
    outer: list[tuple[str, str, tuple[str, ...]]] = []
    while True:
        keyword_text, keyword, flags, rest = _split_command(line, escape)
        if keyword != "onbuild":
            break
        if not rest:
            node = Node(keyword=keyword, args=(), flags=flags, original=line,
                        start_line=start, end_line=end, keyword_text=keyword_text)
            return _wrap_onbuild(node, outer, start, end)
        outer.append((line, keyword_text, flags))
        line = rest
    args: tuple[str, ...] = ()
    json_form = False
    if keyword in _MAYBE_JSON:
        args, json_form = _maybe_json(rest)
    elif keyword in _MAYBE_JSON_LIST:
        decoded = parse_json_array(rest)
        if decoded is None:
            args = _whitespace_split(rest)
        else:
            args, json_form = decoded, True
    elif keyword in _WHITESPACE_LIST:
        args = _whitespace_split(rest)
    elif keyword in _WHOLE_STRING:
        args = (rest,) if rest else ()
    elif keyword == "arg":
        args = tuple(parse_words(rest, escape))
    elif keyword in ("env", "label"):
        args = _name_values(rest, keyword.upper(), escape)
    elif keyword == "healthcheck":
        args, json_form = _healthcheck(rest)
    else:
        args = ("",)  # BuildKit keeps unknown instructions with one empty argument
    node = Node(
        keyword=keyword, args=args, flags=flags, json_form=json_form, original=line,
        start_line=start, end_line=end, keyword_text=keyword_text,
    )
    return _wrap_onbuild(node, outer, start, end)


def _split_command(line: str, escape: str) -> tuple[str, str, tuple[str, ...], str]:
    """Keyword as written, keyword lower-cased, flags, and the trimmed rest (splitCommand)."""
    parts = _TOKEN_WS.split(line.strip(GO_SPACE), maxsplit=1)
    keyword_text = parts[0]
    if len(parts) == 1:
        return keyword_text, keyword_text.lower(), (), ""
    rest, flags = _extract_flags(parts[1], escape)
    return keyword_text, keyword_text.lower(), flags, rest.strip(GO_SPACE)


def _wrap_onbuild(node: Node, outer: list[tuple[str, str, tuple[str, ...]]], start: int, end: int) -> Node:
    for original, keyword_text, flags in reversed(outer):
        node = Node(keyword="onbuild", args=(), flags=flags, original=original,
                    start_line=start, end_line=end, inner=node, keyword_text=keyword_text)
    return node


def _extract_flags(line: str, escape: str) -> tuple[str, tuple[str, ...]]:
    """Leading ``--flag`` words (quotes removed, escapes applied) and the rest of the line.

    Works on code points where BuildKit works on bytes (FORMAT.md 3.2 says a new
    engine need not copy that quirk).
    """
    stripped = line.lstrip(GO_SPACE)
    if not stripped.startswith("--"):
        return stripped, ()
    words: list[str] = []
    n = len(line)
    pos = 0
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    word: list[str] = []
    quote = ""
    blank_ok = False
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if ch in _SPACES:
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], tuple(words)
            phase = in_word
        if pos == n:
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if phase == in_word:
            if ch in _SPACES:
                phase = in_spaces
                text = "".join(word)
                if text == "--":
                    return line[pos:], tuple(words)
                if blank_ok or text:
                    words.append(text)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = in_quote
                pos += 1
                continue
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
            pos += 1
            continue
        if ch == escape:
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", tuple(words)


def _whitespace_split(rest: str) -> tuple[str, ...]:
    return tuple(_TOKEN_WS.split(rest)) if rest else ()


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if not rest:
        return (), False
    decoded = parse_json_array(rest)
    if decoded is None:
        return (rest,), False
    return decoded, True


def _healthcheck(rest: str) -> tuple[tuple[str, ...], bool]:
    """``HEALTHCHECK [flags] TYPE [command]``: the type word, then the RUN/CMD rule."""
    sep = 0
    while sep < len(rest) and rest[sep] not in _SPACES:
        sep += 1
    if sep == 0:
        return (), False
    following = sep
    while following < len(rest) and rest[following] in _SPACES:
        following += 1
    command, json_form = _maybe_json(rest[following:])
    return (rest[:sep], *command), json_form


def _reject_number(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")  # Go's float64 decoding fails here
    return value


def _reject_constant(text: str) -> float:
    raise ValueError(f"{text} is not JSON")


_JSON = json.JSONDecoder(parse_float=_reject_number, parse_int=_reject_number, parse_constant=_reject_constant)


def parse_json_array(rest: str) -> tuple[str, ...] | None:
    """The strings of an exec-form array, or None when ``rest`` is not a JSON array.

    A valid array with a non-string element is an error (BuildKit refuses it
    rather than falling back to shell form). What follows the array is ignored:
    docker and BuildKit decode one JSON value (``json.Decoder.Decode``), so
    ``CMD ["a"] b`` is ``CMD ["a"]``.
    """
    text = rest.lstrip(GO_SPACE)
    if not text.startswith("["):
        return None
    try:
        value, _ = _JSON.raw_decode(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise ParseError(
            "when using JSON array syntax, arrays must be comprised of strings only",
            hint='quote every element, as in ["executable", "arg"]',
        )
    # Go decodes invalid UTF-8 and lone surrogate escapes to U+FFFD.
    return tuple(_SURROGATE.sub("\ufffd", item) if _SURROGATE.search(item) else item for item in value)


def parse_words(rest: str, escape: str = DEFAULT_ESCAPE) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (BuildKit's parseWords)."""
    if "'" not in rest and '"' not in rest and escape not in rest:
        return [word for word in _SPACE_RUN.split(rest) if word]
    words: list[str] = []
    in_spaces, in_word, in_quote = 0, 1, 2
    phase = in_spaces
    quote = ""
    blank_ok = False
    buf: list[str] = []
    n = len(rest)
    pos = 0
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == in_spaces:
            if pos == n:
                break
            if ch in _SPACES:
                pos += 1
                continue
            phase = in_word
        if pos == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == in_word:
            if ch in _SPACES:
                phase = in_spaces
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = in_quote
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue  # a lone escape at the very end is dropped
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # in_quote
        if ch == quote:
            phase = in_word
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = in_word
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


def _name_values(rest: str, key: str, escape: str) -> tuple[str, ...]:
    """ENV/LABEL: ``name value`` (old form) or ``k=v ...``; values keep quotes and escapes."""
    words = parse_words(rest, escape)
    if not words:
        return ()
    if "=" not in words[0]:
        parts = _TOKEN_WS.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ParseError(f"{key} must have two arguments", hint=f"write {key} name=value")
        return (parts[0], parts[1], "")
    values: list[str] = []
    for word in words:
        if "=" not in word:
            raise ParseError(
                f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value",
                hint='quote values that contain spaces: name="a b"',
            )
        name, value = word.split("=", 1)
        values += (name, value, "=")
    return tuple(values)


# --- heredocs (BuildKit's parser_heredoc.go with the shell lexer's raw modes) -------------


def chomp_heredoc(content: str) -> str:
    """Strip the leading tabs of every line, as ``<<-`` asks; the parser stores content unchomped."""
    return _LEADING_TABS.sub("", content)


def _can_have_heredocs(node: Node) -> bool:
    if node.keyword == "onbuild" and node.inner is not None:
        node = node.inner
    return node.keyword in _HEREDOC_KEYWORDS and not node.json_form


def heredocs_from_line(line: str) -> list[Heredoc]:
    """The heredocs an instruction line announces (bodies not yet read), in marker order."""
    try:
        words = _ShellWords(line, raw_quotes=True, raw_escapes=True).words()
    except _LexError:
        return []  # BuildKit ignores lexing errors of the whole line
    except RecursionError:
        raise _too_deep() from None
    found = []
    for word in words:
        heredoc = parse_heredoc_word(word)
        if heredoc is not None:
            found.append(heredoc)
    return found


def parse_heredoc_word(word: str) -> Heredoc | None:
    """``[n]<<[-]NAME`` as one raw word -> Heredoc (empty content), None if not a heredoc."""
    match = _HEREDOC_WORD.match(word)
    if match is None:
        return None
    digits, dash, rest = match.groups()
    if not rest:
        return None
    try:
        words = _ShellWords(rest, raw_quotes=False, raw_escapes=False).words()
        if len(words) != 1:
            return None
        raw = _ShellWords(rest, raw_quotes=True, raw_escapes=False).words()
    except _LexError as error:
        raise ParseError(f"invalid heredoc {word}: {error}", hint="close the quotes of the heredoc name") from None
    except RecursionError:
        raise _too_deep() from None
    if len(raw) != 1:
        raise ParseError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    fd = min(int(digits), 2**64 - 1) if digits else 0
    return Heredoc(name=name, content="", expand=quotes == raw_quotes, chomp=dash == "-", file_descriptor=fd)


class _ShellWords:
    """The word splitting of BuildKit's shell lexer with an empty environment, unset
    variables kept as written (SkipUnsetEnv), and optionally raw quotes and escapes.

    Only heredoc detection uses it; as there, the escape character is always ``\\``.
    Whitespace directly after ``<<`` stays in the word, so ``<<  EOF`` is one word.
    """

    escape = "\\"

    def __init__(self, text: str, *, raw_quotes: bool, raw_escapes: bool) -> None:
        self.text = text
        self.pos = 0
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def words(self) -> list[str]:
        return self.process_until("", self.raw_escapes)[1]

    def process_until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return self._process_until(stop)
        finally:
            self.raw_escapes = saved

    def _process_until(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words: list[str] = []
        word = ""
        in_word = False

        def add_char(ch: str) -> None:
            nonlocal word, in_word
            if ch in _SPACES:
                if in_word and word:
                    if _HEREDOC_GLUE.search(word):
                        word += ch
                    else:
                        words.append(word)
                        word = ""
                        in_word = False
            else:
                word += ch
                in_word = True

        while (ch := self.peek()) != "":
            if stop and ch == stop:
                self.next()
                if word:
                    words.append(word)
                return "".join(result), words
            if ch == "$":
                text = self.dollar()
                result.append(text)
                for c in text:
                    add_char(c)
            elif ch == "'":
                text = self.single_quoted()
                result.append(text)
                word += text
                in_word = True
            elif ch == '"':
                text = self.double_quoted()
                result.append(text)
                word += text
                in_word = True
            else:
                ch = self.next()
                if ch == self.escape:
                    if self.raw_escapes:
                        word += ch
                        in_word = True
                        result.append(ch)
                    ch = self.next()
                    if not ch:
                        break
                    word += ch
                    in_word = True
                else:
                    add_char(ch)
                result.append(ch)
        if stop:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        if word:
            words.append(word)
        return "".join(result), words

    def single_quoted(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.next()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def double_quoted(self) -> str:
        opening = self.next()
        out = [opening] if self.raw_quotes else []
        while True:
            ch = self.peek()
            if not ch:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if self.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                if self.raw_escapes:
                    out.append(ch)
                following = self.peek()
                if not following:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def name(self) -> str:
        name = ""
        while (ch := self.peek()) != "":
            if not name and ch.isdecimal():
                while (ch := self.peek()) != "" and ch.isdecimal():
                    name += self.next()
                return name
            if not name and ch in "@*#?-$!0":
                return self.next()
            if not (ch.isalpha() or ch.isdecimal() or ch == "_"):
                break
            name += self.next()
        return name

    def dollar(self) -> str:
        """``$x`` / ``${...}`` with every variable unset: the text comes back as written."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            return f"${name}" if name else "$"
        self.next()
        following = self.peek()
        if not following:
            raise _LexError("syntax error: missing '}'")
        if following in "{}:":
            raise _LexError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return f"${{{name}}}"
        modifier = ch
        colon = ch == ":"
        if colon:
            ch = self.next()
            modifier += ch or "\ufffd"
            if ch in ("#", "%"):
                raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        elif not ch or ch not in ("+", "-", "?", "#", "%", "/"):
            raise _LexError(f"unsupported modifier ({modifier}) in substitution")
        if ch == "/" and not colon:
            if self.peek() == "/":
                self.next()
            pattern = self._until("/", True, "syntax error: missing '/' in ${}")
            replacement = self._until("}", True, "syntax error: missing '}'")
            return f"${{{name}/{pattern}/{replacement}}}"
        word = self._until("}", ch in ("#", "%"), "syntax error: missing '}'")
        return f"${{{name}{modifier}{word}}}"

    def _until(self, stop: str, raw_escapes: bool, missing: str) -> str:
        try:
            return self.process_until(stop, raw_escapes)[0]
        except _LexError:
            if not self.peek():
                raise _LexError(missing) from None
            raise


# --- directives outside the parse (BuildKit's DetectSyntax / ParseDirective) --------------


def detect_syntax(source: str | bytes) -> DetectedDirective | None:
    """The ``syntax`` directive: ``#``, ``//`` or a whole-file JSON object; shebang skipped."""
    return _detect_directive("syntax", source, any_format=True)


def parse_directive(key: str, source: str | bytes) -> DetectedDirective | None:
    """Another directive (``check``), ``#`` comments only, shebang skipped."""
    return _detect_directive(key, source, any_format=False)


def comment_directive(comment: str) -> tuple[str, str] | None:
    """A comment's text (``#`` removed, as nodes keep it) read as a directive, ``name=value``:
    how the ``# check=`` comment just above an instruction is found."""
    match = _DIRECTIVE_BODY.match(comment)
    return (match.group(1).lower(), match.group(2)) if match else None


def _detect_directive(key: str, source: str | bytes, any_format: bool) -> DetectedDirective | None:
    text = _decode(source)
    first, _, remainder = text.partition("\n")
    line = 0
    if first.startswith("#!"):
        text = remainder
        line = 1
    prefixes = ("#", "//") if any_format else ("#",)
    for prefix in prefixes:
        found = _scan_directives(key, text, prefix, line)
        if found is not None:
            return found
    if any_format:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(value, dict) and isinstance(value.get(key), str):
            return DetectedDirective(value[key].split(" ", 1)[0], value[key], line)
    return None


def _scan_directives(key: str, text: str, prefix: str, line: int) -> DetectedDirective | None:
    seen: set[str] = set()
    for raw in text.split("\n"):
        line += 1
        if not raw.startswith(prefix):
            return None
        match = _DIRECTIVE_BODY.match(raw[len(prefix) :].rstrip("\r").lstrip(GO_SPACE))
        if match is None:
            return None
        name = match.group(1).lower()
        if name not in DIRECTIVE_NAMES or name in seen:
            return None
        seen.add(name)
        if name == key:
            value = match.group(2)
            return DetectedDirective(value.split(" ", 1)[0], value, line)
    return None


def _line(token: Token) -> int:
    """A token's line: lark's lexer sets it on every token it makes (its type allows None)."""
    assert token.line is not None
    return token.line
