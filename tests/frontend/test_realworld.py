"""Every real-world Dockerfile parses, and agrees with dockerfile-parse where that is a valid oracle.

See shared/conformance/real-world/ORACLE.md: dockerfile-parse agrees with
BuildKit's line rules on instruction boundaries and joined argument text for
this corpus, but not on empty continuation lines, continuation at end of file
or a doubled escape at the end of a line.
"""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from builder.frontend import parse
from builder.frontend.ast import ParsedDockerfile
from tests.helpers.tools import CONFORMANCE

REAL_WORLD = CONFORMANCE / "real-world"
FILES = sorted(p for p in REAL_WORLD.rglob("Dockerfile*") if p.is_file())
BUILDKIT_POSITIVE = CONFORMANCE / "buildkit-parser" / "positive"
_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")

# Real-world files where pybuild and dockerfile-parse disagree, with the reason
# dockerfile-parse is wrong. None today: ORACLE.md found full agreement.
REAL_WORLD_DISAGREEMENTS: dict[str, str] = {}

# BuildKit's own parser cases where dockerfile-parse is known to be wrong
# (ORACLE.md, "Notable differences"); every other case must agree.
BUILDKIT_CASE_DISAGREEMENTS: dict[str, str] = {
    "brimstone-consuldock": "ends an instruction at an empty continuation line (`&&` becomes an instruction)",
    "brimstone-docker-consul": "ends an instruction at an empty continuation line (`&&` becomes an instruction)",
    "escapes": "ends an instruction at an empty continuation line (BAR and BAZ become instructions)",
    "continueIndent": "ends an instruction at an empty continuation line (THIS becomes an instruction)",
    "continue-at-eof": "loses an instruction continued at the end of the file",
    "env": "loses the last ENV, continued at the end of the file",
    "trailing-backslash": "treats a doubled backslash at the end of a line as a continuation",
}


def relative(path: Path) -> str:
    return path.relative_to(REAL_WORLD).as_posix()


def ours(parsed: ParsedDockerfile) -> list[tuple[str, str]]:
    """(KEYWORD, argument text after the keyword, continuations joined) per instruction."""
    result = []
    for node in parsed.nodes:
        parts = _TOKEN_WS.split(node.original.strip(), maxsplit=1)
        result.append((node.keyword_text.upper(), parts[1].strip() if len(parts) == 2 else ""))
    return result


def theirs(path: Path) -> list[tuple[str, str]]:
    with path.open("rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    return [(e["instruction"], e["value"]) for e in structure if e["instruction"] != "COMMENT"]


def test_corpus_is_complete() -> None:
    manifest = json.loads((REAL_WORLD / "manifest.json").read_text())
    assert sorted(entry["corpus_path"] for entry in manifest["files"]) == sorted(map(relative, FILES))


@pytest.mark.parametrize("path", FILES, ids=relative)
def test_parses_and_agrees_with_dockerfile_parse(path: Path) -> None:
    parsed = parse(path.read_bytes(), file=str(path))
    assert parsed.nodes[0].keyword in ("from", "arg")
    if relative(path) in REAL_WORLD_DISAGREEMENTS:
        assert ours(parsed) != theirs(path)
    else:
        assert ours(parsed) == theirs(path)


def test_line_spans_agree_with_dockerfile_parse() -> None:
    for path in FILES:
        with path.open("rb") as handle:
            structure = DockerfileParser(fileobj=handle).structure
        spans = [(e["startline"] + 1, e["endline"] + 1) for e in structure if e["instruction"] != "COMMENT"]
        assert [(n.start_line, n.end_line) for n in parse(path.read_bytes()).nodes] == spans, path


def test_corpus_statistics_match_oracle_md() -> None:
    keywords: collections.Counter[str] = collections.Counter()
    flags: collections.Counter[tuple[str, str]] = collections.Counter()
    exec_form = old_env = multi_stage = 0
    for path in FILES:
        parsed = parse(path.read_bytes())
        stages = 0
        for node in parsed.nodes:
            keywords[node.keyword] += 1
            exec_form += node.json_form
            stages += node.keyword == "from"
            old_env += node.keyword == "env" and node.args[2] == ""
            for flag in node.flags:
                flags[(node.keyword, flag.split("=", 1)[0])] += 1
        multi_stage += stages > 1
        assert parsed.warnings == ()
        assert all(not n.heredocs for n in parsed.nodes)
    assert sum(keywords.values()) == 3031
    assert keywords == {
        "env": 1114, "run": 981, "from": 222, "copy": 222, "cmd": 146, "entrypoint": 102,
        "expose": 64, "workdir": 60, "stopsignal": 56, "volume": 28, "shell": 16, "user": 8,
        "arg": 8, "label": 4,
    }
    assert old_env == 750
    assert exec_form == 268
    assert flags == {("copy", "--from"): 20, ("copy", "--link"): 12, ("run", "--mount"): 2}
    assert multi_stage == 14


@pytest.mark.parametrize("case", sorted(p.name for p in BUILDKIT_POSITIVE.iterdir()))
def test_buildkit_cases_against_dockerfile_parse(case: str) -> None:
    path = BUILDKIT_POSITIVE / case / "Dockerfile"
    agree = ours(parse(path.read_bytes())) == theirs(path)
    assert agree == (case not in BUILDKIT_CASE_DISAGREEMENTS), BUILDKIT_CASE_DISAGREEMENTS.get(case)
