"""Fuzzing the parser: generated and mutated Dockerfiles either parse or raise ParseError with a line.

Never any other exception (a traceback in the CLI) and never a result that
breaks the parser's own invariants; 11,500 examples in all, under a minute.
"""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import ParseError
from builder.frontend import dump_buildkit, parse
from tests.helpers.tools import CONFORMANCE

REAL_WORLD = sorted(p.read_bytes() for p in (CONFORMANCE / "real-world").rglob("Dockerfile*") if p.is_file())
BUILDKIT = sorted(
    p.read_bytes() for p in (CONFORMANCE / "buildkit-parser").rglob("Dockerfile") if p.is_file()
)

# Fragments that hit the parser's special cases.
FRAGMENTS = [
    b"\\", b"\\\n", b"\\\\\n", b"`", b"`\n", b"\n", b"\n\n", b"\r\n", b"\r", b" ", b"\t", b"\x0b",
    b"#", b"# comment\n", b"\n# escape=`\n", b"# escape=\\\n", b"# syntax=docker/dockerfile:1\n",
    b"# check=skip=all\n", b"# escape=x\n", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00", b"\xe2\x98\x83",
    b'"', b"'", b"[", b"]", b"{", b"}", b",", b'["a", "b"]', b'["a", 1]', b"[[", b"]]", b"=", b"==",
    b"--", b"--flag=", b"--mount=type=cache,target=/x ", b" -- ", b"$", b"${", b"${X:-y}", b"${X/a/b}",
    b"<<", b"<<EOF\n", b"<<-EOF\n", b"<<'EOF'\n", b'<<"EOF"', b"3<<X ", b"<<  EOF", b"EOF\n", b"\tEOF\n",
    b"X\n", b"ONBUILD ", b"ONBUILD RUN <<EOF\n", b"RUN <<EOF\n", b"COPY <<A <<B /d\n", b"HEALTHCHECK ",
    b"ENV ", b"ENV a", b"LABEL a=b c", b"ARG ", b"FROM ", b"CMD ", b"SHELL ", b"unknown ", b"\xc2\xa0",
    b"\xe3\x80\x80", b"\x1c", b"\\ \t\n", b"ONBUILD " * 40, b"${a:-" * 30, b"}" * 30, b"[" * 50,
]
KEYWORDS = [
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
    "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "from", "Run", "FORM", "",
]


def check(source: bytes | str) -> None:
    """The property: a result that keeps its invariants, or a ParseError that names a line."""
    try:
        parsed = parse(source)
    except ParseError as error:
        assert error.line is not None and error.line >= 1, error
        assert str(error).startswith(f"Dockerfile:{error.line}: ")
        return
    assert parsed.nodes
    count = len(parsed.lines)
    previous_end = 0
    for node in parsed.nodes:
        assert previous_end < node.start_line <= node.end_line <= max(count, 1), (node, count)
        previous_end = node.end_line
        if node.keyword == "onbuild" and node.args:
            raise AssertionError(node)
    for warning in parsed.warnings:
        assert 1 <= warning.start_line <= warning.end_line <= max(count, 1)
    dump = dump_buildkit(parsed)
    assert dump.endswith(")\n") and dump.count("\n") == len(parsed.nodes)
    assert parsed.escape in ("\\", "`")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """The same mutations as :func:`mutated`, driven by a seeded generator (faster to draw)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        kind = rng.choice(["insert", "fragment", "delete", "dup_line", "drop_line", "byte"])
        pos = rng.randint(0, len(buf))
        if kind == "insert":
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif kind == "fragment":
            buf[pos:pos] = rng.choice(FRAGMENTS)
        elif kind == "delete":
            buf[pos : pos + rng.randint(1, 40)] = b""
        elif kind == "byte" and pos < len(buf):
            buf[pos] = rng.randint(0, 255)
        elif kind in ("dup_line", "drop_line"):
            start = buf.rfind(b"\n", 0, pos) + 1
            end = buf.find(b"\n", pos)
            end = len(buf) if end < 0 else end + 1
            line = bytes(buf[start:end])
            buf[start:end] = line * 2 if kind == "dup_line" else b""
    return bytes(buf)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["insert", "fragment", "delete", "dup_line", "drop_line", "byte"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "fragment":
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS))
        elif kind == "delete":
            data[pos : pos + draw(st.integers(1, 40))] = b""
        elif kind == "byte" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind in ("dup_line", "drop_line"):
            start = data.rfind(b"\n", 0, pos) + 1
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end + 1
            line = bytes(data[start:end])
            data[start:end] = line * 2 if kind == "dup_line" else b""
    return bytes(data)


WORD_PIECES = [*"abcXYZ019 =-_/.:$'\"[]{},\\`<>#\t", "<<", "--", "é", "☃", "\xa0", "${", "EOF"]
DIRECTIVE_LINES = ["# escape=`", "# escape=\\", "# syntax=x", "#check=a", "# x=y"]
FLAG_WORDS = ["--a=b", "--", "--x='y z'", '--m="q"']
ARG_SHAPES = ['["a", "b"]', "[]", '["x"', "[1]", "<<EOF", "<<-'E' x", "3<<A <<B"]
ENDINGS = ["", "", " \\", "\\", " `", "\\\\"]
BODY_LINES = ["EOF", "\tEOF", "E", "A", "B", "X"]


def generate(rng: random.Random) -> bytes:
    """A Dockerfile-shaped text from a seeded generator (cheap to make, so thousands fit)."""
    lines = [rng.choice(DIRECTIVE_LINES)] if rng.random() < 0.5 else []
    for _ in range(rng.randint(0, 12)):
        kind = rng.choice(["instruction", "instruction", "instruction", "comment", "blank", "body"])
        if kind == "instruction":
            flags = " ".join(rng.choices(FLAG_WORDS, k=rng.randint(0, 2)))
            words = ["".join(rng.choices(WORD_PIECES, k=rng.randint(0, 8))) for _ in range(rng.randint(0, 4))]
            args = rng.choice(ARG_SHAPES) if rng.random() < 0.3 else " ".join(words)
            indent = rng.choice(["", " ", "\t"])
            lines.append(f"{indent}{rng.choice(KEYWORDS)} {flags} {args}{rng.choice(ENDINGS)}")
        elif kind == "comment":
            lines.append("#" + "".join(rng.choices(WORD_PIECES, k=rng.randint(0, 8))))
        elif kind == "blank":
            lines.append(rng.choice(["", "  ", "\t"]))
        else:
            lines.append(rng.choice(BODY_LINES))
    newline = rng.choice(["\n", "\r\n"])
    return (newline.join(lines) + rng.choice(["", newline])).encode("utf-8")


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )


@fuzz(4000)
@given(st.sampled_from(REAL_WORLD), st.randoms(use_true_random=True))
def test_mutated_real_world_files(source: bytes, rng: random.Random) -> None:
    check(mutate(source, rng))


@fuzz(2500)
@given(mutated(BUILDKIT))
def test_mutated_buildkit_cases(source: bytes) -> None:
    check(source)


@fuzz(2500)
@given(st.randoms(use_true_random=True))
def test_generated_dockerfiles(rng: random.Random) -> None:
    check(generate(rng))


@fuzz(1000)
@given(st.binary(max_size=300) | st.text(max_size=200))
def test_arbitrary_input(source: bytes | str) -> None:
    check(source)


def _outcome(source: bytes) -> tuple[str, object]:
    try:
        parsed = parse(source)
    except ParseError as error:
        return "error", (error.message, error.line)
    spans = [(n.start_line, n.end_line, n.comments, n.flags, n.args) for n in parsed.nodes]
    return dump_buildkit(parsed), (spans, parsed.directives, parsed.escape, len(parsed.warnings))


@fuzz(1500)
@given(st.randoms(use_true_random=True), st.sampled_from(BUILDKIT + REAL_WORLD[::8]))
def test_crlf_and_bom_do_not_change_the_parse(rng: random.Random, seed: bytes) -> None:
    """BuildKit trims CR before a line's newline and a BOM before the first line."""
    source = generate(rng) if rng.random() < 0.5 else mutate(seed, rng)
    source = source.replace(b"\r", b"").lstrip(b"\xef\xbb\xbf")
    expected = _outcome(source)
    assert _outcome(source.replace(b"\n", b"\r\n")) == expected
    assert _outcome(b"\xef\xbb\xbf" + source) == expected


def test_fuzz_corpora_loaded() -> None:
    assert len(REAL_WORLD) == 208 and len(BUILDKIT) >= 37
    assert Path(__file__).name == "test_parser_fuzz.py"
