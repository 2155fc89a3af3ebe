"""Suggestions for misspelled instruction keywords, and the one message that carries them.

BuildKit's parser accepts any keyword; the error for an unknown one is raised
when instructions are made (builder/frontend/instructions.py), with the message
built here so that its wording lives in one place.
"""

from __future__ import annotations

from builder.errors import ParseError, SourceLocation
from builder.frontend.ast import Node, ParsedDockerfile

KEYWORDS: tuple[str, ...] = (
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
)

MAX_DISTANCE = 2


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute one character)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def closest_instruction(word: str) -> str | None:
    """The keyword (upper case) closest to ``word`` within MAX_DISTANCE edits, else None.

    Case is ignored; on a tie the first keyword in KEYWORDS order wins.
    """
    upper = word.upper()
    if not upper:
        return None
    best: str | None = None
    best_distance = MAX_DISTANCE + 1
    for keyword in KEYWORDS:
        if abs(len(keyword) - len(upper)) >= best_distance:
            continue
        distance = levenshtein(upper, keyword)
        if distance < best_distance:
            best, best_distance = keyword, distance
    return best


def unknown_instruction_error(node: Node, parsed: ParsedDockerfile) -> ParseError:
    """``Dockerfile:3: unknown instruction: FORM (did you mean FROM?)`` with the line quoted."""
    written = node.keyword_text or node.keyword
    location = SourceLocation(parsed.file, node.start_line, node.end_line)
    if not written:  # a continuation that runs into nothing: BuildKit keeps an empty keyword
        return ParseError(
            "unknown instruction: (empty)", location, source_line=parsed.source_line(node.start_line),
            hint="a line ends in a line continuation with no instruction after it",
        )
    if node.start_line == 1 and written.startswith(("\udcff\udcfe", "\udcfe\udcff")):
        # A UTF-16 byte-order mark (Windows editors): every other byte is NUL, nothing parses.
        return ParseError("the Dockerfile is UTF-16 encoded; Dockerfiles are read as UTF-8", location,
                          hint="save it as UTF-8")
    if "\0" in written or any("\udc80" <= ch <= "\udcff" for ch in written):
        shown = written.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\0", "\ufffd")
        return ParseError(f"unknown instruction: {shown[:40]!r}: the Dockerfile is not UTF-8 text", location,
                          hint="is it a binary file?")
    suggestion = closest_instruction(written)
    return ParseError(
        f"unknown instruction: {written}",
        location,
        source_line=parsed.source_line(node.start_line),
        hint=f"did you mean {suggestion}?" if suggestion else None,
    )
