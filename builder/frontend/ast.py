"""The parser's output: a Dockerfile as a list of nodes, before any meaning is given to them.

Mirrors BuildKit's ``parser.Node``: one node per instruction with its keyword,
flags and argument strings exactly as BuildKit's parser forms them. The typed
instructions (:mod:`builder.frontend.instructions`) are made from these nodes;
the parser itself knows nothing of what an instruction means.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heredoc:
    """A here-document attached to RUN/COPY/ADD: ``<<EOF`` ... ``EOF``."""

    name: str
    content: str
    expand: bool = True  # False when the delimiter was quoted (<<"EOF", <<'EOF')
    chomp: bool = False  # True for <<-EOF: leading tabs are stripped from each line
    file_descriptor: int = 0  # the N of N<<EOF; 0 when not given


@dataclass(frozen=True)
class Node:
    """One instruction as the parser sees it."""

    keyword: str  # lower-cased, as BuildKit's Node.Value ("from", "run", ...)
    args: tuple[str, ...]  # BuildKit's Next chain: the argument strings
    flags: tuple[str, ...] = ()  # whole flag words after quote/escape processing: "--from=build"
    json_form: bool = False  # the arguments were a JSON (exec-form) array
    original: str = ""  # the logical line as written, continuations joined
    start_line: int = 0  # 1-based, first physical line
    end_line: int = 0  # 1-based, last physical line including skipped comments/blank lines
    heredocs: tuple[Heredoc, ...] = ()
    inner: Node | None = None  # the nested instruction of ONBUILD
    keyword_text: str = ""  # the keyword as written, for casing checks ("From", "RUN")
    comments: tuple[str, ...] = ()  # comment lines directly above, '#' stripped (check descriptions)


@dataclass(frozen=True)
class ParserWarning:
    """A problem the parser tolerates, such as an empty line inside a continuation."""

    rule: str  # the BuildKit check name, e.g. "NoEmptyContinuation"
    message: str
    start_line: int
    end_line: int
    detail: str = ""  # longer explanation, e.g. "will become errors in a future release"


@dataclass(frozen=True)
class Directive:
    """A parser directive (``# syntax=``, ``# escape=``, ``# check=``) at the top of a Dockerfile."""

    name: str  # lower-cased: "syntax", "escape", "check"
    value: str
    line: int


@dataclass(frozen=True)
class ParsedDockerfile:
    """The whole parse: instruction nodes in file order, plus directives and warnings."""

    nodes: tuple[Node, ...]
    directives: tuple[Directive, ...] = ()
    warnings: tuple[ParserWarning, ...] = ()
    escape: str = "\\"
    file: str = "Dockerfile"
    lines: tuple[str, ...] = field(default=(), repr=False)  # physical lines, for error quotes

    def directive(self, name: str) -> str | None:
        for d in self.directives:
            if d.name == name:
                return d.value
        return None

    def source_line(self, line: int) -> str | None:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else None
