"""The Dockerfile parser against BuildKit's parser corpus, its test vectors, and our edge cases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ParseError
from builder.frontend import dump_buildkit, parse
from builder.frontend.ast import Heredoc
from builder.frontend.dump import go_quote
from builder.frontend.parser import (
    DetectedDirective,
    Parser,
    chomp_heredoc,
    detect_syntax,
    heredocs_from_line,
    parse_directive,
    parse_heredoc_word,
    parse_json_array,
    parse_words,
)
from builder.frontend.suggest import KEYWORDS, closest_instruction, unknown_instruction_error
from tests.helpers.tools import CONFORMANCE

CORPUS = CONFORMANCE / "buildkit-parser"
VECTORS = json.loads((CORPUS / "vectors.json").read_text(encoding="utf-8"))
POSITIVE = sorted(p.name for p in (CORPUS / "positive").iterdir())
NEGATIVE = sorted(p.name for p in (CORPUS / "negative").iterdir())


def test_corpus_is_complete() -> None:
    assert len(POSITIVE) == 33
    assert len(NEGATIVE) == 4


# --- the corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", POSITIVE)
def test_positive_dump_matches_buildkit(case: str) -> None:
    folder = CORPUS / "positive" / case
    parsed = parse((folder / "Dockerfile").read_bytes())
    assert dump_buildkit(parsed).encode("utf-8") == (folder / "result").read_bytes()


@pytest.mark.parametrize("case", POSITIVE)
def test_positive_dump_with_crlf_and_bom(case: str) -> None:
    folder = CORPUS / "positive" / case
    source = b"\xef\xbb\xbf" + (folder / "Dockerfile").read_bytes().replace(b"\n", b"\r\n")
    assert dump_buildkit(parse(source)).encode("utf-8") == (folder / "result").read_bytes()


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_case_fails_with_a_line(case: str) -> None:
    path = CORPUS / "negative" / case / "Dockerfile"
    with pytest.raises(ParseError) as caught:
        parse(path.read_bytes(), file=str(path))
    error = caught.value
    assert error.line is not None and error.line >= 1
    assert str(error).startswith(f"{path}:{error.line}: ")


def test_negative_messages_are_buildkits() -> None:
    expected = {
        "empty_dockerfile": "file with no instructions",
        "only_comments": "file with no instructions",
        "env_no_value": "ENV must have two arguments",
        "shykes-nested-json": "when using JSON array syntax, arrays must be comprised of strings only",
    }
    for case, message in expected.items():
        with pytest.raises(ParseError) as caught:
            parse((CORPUS / "negative" / case / "Dockerfile").read_bytes())
        assert caught.value.message == message


def test_env_error_quotes_the_line() -> None:
    with pytest.raises(ParseError) as caught:
        parse((CORPUS / "negative" / "env_no_value" / "Dockerfile").read_bytes())
    text = str(caught.value)
    assert text.startswith("Dockerfile:3: ENV must have two arguments (")
    assert text.endswith("\n     3 | ENV PATH")


# --- vectors.json ----------------------------------------------------------------------------


def test_line_numbers() -> None:
    spec = VECTORS["line_numbers"]
    parsed = parse((CORPUS / spec["file"]).read_bytes())
    spans = [{"start_line": n.start_line, "end_line": n.end_line} for n in parsed.nodes]
    assert spans == spec["children"]
    assert parsed.nodes[0].start_line == spec["root"]["start_line"]
    assert parsed.nodes[-1].end_line == spec["root"]["end_line"]


def test_empty_continuation_warnings() -> None:
    spec = VECTORS["empty_continuation_warnings"]
    parsed = parse(spec["dockerfile"])
    assert len(parsed.warnings) == spec["warning_count"]
    for warning, fragments in zip(parsed.warnings, spec["warnings_contain"], strict=True):
        assert warning.rule == "NoEmptyContinuation"
        for fragment in fragments:
            assert fragment in warning.message
    assert "will become errors in a future release" in parsed.warnings[0].detail
    # BuildKit locates the warning at the instruction's last line.
    assert [(w.start_line, w.end_line) for w in parsed.warnings] == [(11, 11), (15, 15)]


def test_line_too_long() -> None:
    spec = VECTORS["line_too_long"]
    template = spec["dockerfile_template"]
    text = template["prefix"] + template["repeat"] * template["repeat_count"] + template["suffix"]
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert caught.value.message == spec["error"]
    assert caught.value.line == 3


def test_line_length_limit_is_in_bytes() -> None:
    ok = "FROM a\nLABEL x=" + "a" * (65535 - len("LABEL x=")) + "\n"
    assert parse(ok).nodes[1].args[1] == "a" * (65535 - 8)
    with pytest.raises(ParseError, match="max allowed size of 65535"):
        parse("FROM a\nLABEL x=" + "é" * 32764 + "\n")  # 65536 bytes, 32772 characters


def test_error_before_a_long_line_comes_first() -> None:
    with pytest.raises(ParseError) as caught:
        parse("FROM a\nENV X\nLABEL " + "a" * 70000 + "\n")
    assert caught.value.message == "ENV must have two arguments"


@pytest.mark.parametrize("case", VECTORS["parse_words"]["cases"], ids=lambda c: c["input"])
def test_parse_words(case: dict) -> None:
    assert parse_words(case["input"]) == case["words"]
    # ARG's arguments are exactly these words.
    assert list(parse(f"ARG {case['input']}").nodes[0].args) == case["words"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a\\", ["a"]),  # a lone escape at the end is dropped
        ('"a\\', ['"a']),
        ("'a\\ b' c", ["'a\\ b'", "c"]),  # no escapes inside single quotes
        ('"a\\" b" c', ['"a\\" b"', "c"]),
        ('a="" b', ['a=""', "b"]),
        ("  lead  trail  ", ["lead", "trail"]),
        ("a\u3000b", ["a", "b"]),  # Go's unicode.IsSpace
        ("a\x1cb", ["a\x1cb"]),  # which (unlike str.isspace) does not count \x1c
    ],
)
def test_parse_words_edges(text: str, words: list[str]) -> None:
    assert parse_words(text) == words


def test_parse_words_backtick_escape() -> None:
    assert parse_words("a` b c\\ d", "`") == ["a` b", "c\\", "d"]


@pytest.mark.parametrize("case", VECTORS["name_value"]["cases"], ids=lambda c: f"{c['instruction']} {c['args']}")
def test_name_value(case: dict) -> None:
    text = f"{case['instruction']} {case['args']}\n"
    if "error" in case:
        with pytest.raises(ParseError) as caught:
            parse(text)
        assert caught.value.message == case["error"]
        assert caught.value.line == 1
    else:
        assert list(parse(text).nodes[0].args) == case["values"]


@pytest.mark.parametrize("case", VECTORS["json_arrays"]["valid"], ids=lambda c: c["input"])
def test_json_arrays_valid(case: dict) -> None:
    assert parse_json_array(case["input"]) == tuple(case["strings"])
    node = parse(f"CMD {case['input']}").nodes[0]
    assert node.json_form
    assert list(node.args) == case["strings"]


@pytest.mark.parametrize("text", VECTORS["json_arrays"]["invalid_not_all_strings"])
def test_json_arrays_with_non_strings_are_errors(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(f"FROM a\nRUN {text}\n")
    assert caught.value.line == 2
    assert "arrays must be comprised of strings only" in caught.value.message


@pytest.mark.parametrize(
    "text",
    ['["a", NaN]', '["a", Infinity]', '["a", 1e999]', '["a" "b"]', "['a']", '["a"', '["a\x01"]'],
)
def test_json_that_go_rejects_falls_back_to_shell_form(text: str) -> None:
    node = parse(f"CMD {text}").nodes[0]
    assert not node.json_form
    assert node.args == (text,)


@pytest.mark.parametrize("text", ['["a"] x', '["a"]x', '["a"] ["b"]', '["a"]\x1c', '["a"]]'])
def test_text_after_a_json_array_is_ignored(text: str) -> None:
    """docker and BuildKit decode one JSON value (json.Decoder.Decode): what follows is never read."""
    node = parse(f"CMD {text}").nodes[0]
    assert node.json_form
    assert node.args == ("a",)


def test_json_invalid_utf8_becomes_replacement_character() -> None:
    node = parse(b'CMD ["a\xffb", "\\ud800"]').nodes[0]
    assert node.args == ("a\ufffdb", "\ufffd")


def heredoc_dicts(heredocs: tuple[Heredoc, ...]) -> list[dict] | None:
    if not heredocs:
        return None
    return [
        {"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp,
         "file_descriptor": h.file_descriptor}
        for h in heredocs
    ]


def test_heredoc_children() -> None:
    spec = VECTORS["heredocs"]
    parsed = parse(spec["dockerfile"])
    assert parsed.nodes[0].keyword == "from"
    children = parsed.nodes[1:]
    assert len(children) == len(spec["children"])
    for node, expected in zip(children, spec["children"], strict=True):
        assert node.original == expected["instruction"]
        assert heredoc_dicts(node.heredocs) == expected["heredocs"], expected["instruction"]


def test_heredoc_bodies_are_not_instructions() -> None:
    parsed = parse(VECTORS["heredocs"]["dockerfile"])
    keywords = [n.keyword for n in parsed.nodes]
    assert keywords.count("invalid") == 1  # the line after USER <<INVALID
    assert "echo" not in keywords and "content" not in keywords


def test_json_form_never_has_heredocs() -> None:
    parsed = parse(VECTORS["heredocs"]["json_form_never_has_heredocs"]["dockerfile"])
    assert [n.keyword for n in parsed.nodes] == ["from", "run", "run", "run"]
    for node in parsed.nodes[1:]:
        assert node.json_form and node.heredocs == ()


def test_chomp() -> None:
    spec = VECTORS["heredocs"]["chomp"]
    assert chomp_heredoc(spec["input"]) == spec["output"]


@pytest.mark.parametrize("word", VECTORS["heredocs"]["parse_heredoc_word"]["valid"])
def test_parse_heredoc_word_valid(word: str) -> None:
    heredoc = parse_heredoc_word(word)
    assert heredoc is not None and heredoc.name == "EOF"
    assert heredoc.chomp == word.startswith("<<-")
    assert heredoc.expand == ("'" not in word and '"' not in word)


@pytest.mark.parametrize("word", VECTORS["heredocs"]["parse_heredoc_word"]["invalid"])
def test_parse_heredoc_word_invalid(word: str) -> None:
    with pytest.raises(ParseError, match=r"^invalid heredoc ") as caught:
        parse_heredoc_word(word)
    assert caught.value.location is None


@pytest.mark.parametrize("word", VECTORS["heredocs"]["parse_heredoc_word"]["not_heredoc"])
def test_parse_heredoc_word_not_heredoc(word: str) -> None:
    assert parse_heredoc_word(word) is None


@pytest.mark.parametrize("case", VECTORS["heredocs"]["heredocs_from_line"]["cases"], ids=lambda c: c["line"])
def test_heredocs_from_line(case: dict) -> None:
    names = [h.name for h in heredocs_from_line(case["line"])] or None
    if case.get("upstream_enforced", True):
        assert names == case["names"]
    else:
        assert names is None  # what upstream's code does (see the case's note)


@pytest.mark.parametrize("case", VECTORS["directives"]["parse_all"], ids=lambda c: c["input"])
def test_directives_parse_all(case: dict) -> None:
    parsed = parse(case["input"] + "FROM a\n")
    assert [{"name": d.name, "value": d.value} for d in parsed.directives] == case["directives"]


def _directive_input(case: dict) -> bytes:
    return bytes.fromhex(case.get("input_hex_prefix", "")) + case["input"].encode()


@pytest.mark.parametrize("case", VECTORS["directives"]["detect_syntax"], ids=lambda c: c["input"])
def test_detect_syntax(case: dict) -> None:
    found = detect_syntax(_directive_input(case))
    if not case["found"]:
        assert found is None
        return
    assert isinstance(found, DetectedDirective)
    assert found.ref == case["ref"]
    if "cmdline" in case:
        assert found.cmdline == case["cmdline"]
    if "line" in case:
        assert found.line == case["line"]


@pytest.mark.parametrize("case", VECTORS["directives"]["parse_directive"], ids=lambda c: c["input"])
def test_parse_directive(case: dict) -> None:
    found = parse_directive(case["key"], _directive_input(case))
    if not case["found"]:
        assert found is None
        return
    assert found is not None and found.ref == case["ref"]
    if "cmdline" in case:
        assert found.cmdline == case["cmdline"]
    if "line" in case:
        assert found.line == case["line"]


# --- directives in parse() --------------------------------------------------------------------


def test_directives_recorded_with_lines() -> None:
    parsed = parse("# syntax=docker/dockerfile:1\n#CHECK = skip=all\n# escape=`\nFROM a\n")
    assert [(d.name, d.value, d.line) for d in parsed.directives] == [
        ("syntax", "docker/dockerfile:1", 1), ("check", "skip=all", 2), ("escape", "`", 3)]
    assert parsed.directive("check") == "skip=all"
    assert parsed.escape == "`"


@pytest.mark.parametrize(
    "text",
    [
        "# comment\n# escape=`\nFROM a\n",  # after a comment
        "\n# escape=`\nFROM a\n",  # after a blank line
        "FROM a\n# escape=`\n",  # after an instruction
        "# unknown=1\n# escape=`\nFROM a\n",  # after an unknown directive name
        "# escapes=`\nFROM a\n",  # not the name escape
        "# e\u017fcape=`\nFROM a\n",  # names are ASCII: no Unicode case folding
        "# escape=\r\nFROM a\n",  # no value
    ],
)
def test_directives_only_at_the_top(text: str) -> None:
    parsed = parse(text)
    assert parsed.escape == "\\"
    assert parsed.directive("escape") is None


def test_directive_after_heredoc_is_a_comment() -> None:
    parsed = parse("FROM a\nRUN <<EOF\nx\nEOF\n# escape=`\nRUN b \\\nc\n")
    assert parsed.directives == ()
    assert parsed.nodes[-1].args == ("b c",)


@pytest.mark.parametrize("name", ["syntax", "escape", "check"])
def test_duplicate_directive_is_an_error(name: str) -> None:
    value = "\\" if name == "escape" else "x"
    with pytest.raises(ParseError) as caught:
        parse(f"# {name}={value}\n# {name.upper()} = {value}\nFROM a\n")
    assert caught.value.message == f"only one {name} parser directive can be used"
    assert caught.value.line == 2


def test_bad_escape_is_an_error() -> None:
    with pytest.raises(ParseError) as caught:
        parse("# escape=x\nFROM a\n")
    assert caught.value.message == "invalid escape token 'x' does not match ` or \\"
    assert caught.value.line == 1
    assert "# escape=x" in str(caught.value)


def test_backtick_escape() -> None:
    parsed = parse("# escape=`\nFROM a\nRUN dir c:\\ `\n  && echo `\n# comment\n  done\nCOPY a\\b c\\\n")
    assert dump_buildkit(parsed) == '(from "a")\n(run "dir c:\\\\   && echo   done")\n(copy "a\\\\b" "c\\\\")\n'
    assert parsed.nodes[1].end_line == 6


# --- line handling -------------------------------------------------------------------------------


def test_crlf_and_bom() -> None:
    crlf = b"\xef\xbb\xbf# escape=`\r\nFROM a\r\nRUN x `\r\n  y\r\nLABEL a=b\r\r\n"
    parsed = parse(crlf)
    assert parsed.escape == "`"
    assert dump_buildkit(parsed) == '(from "a")\n(run "x   y")\n(label "a" "b" "=")\n'
    assert parsed.lines[1] == "FROM a"


def test_bom_only_on_first_line() -> None:
    parsed = parse("\ufeffFROM a\n\ufeffRUN b\n")
    assert [n.keyword for n in parsed.nodes] == ["from", "\ufeffrun"]


def test_continuation_rules() -> None:
    text = (
        "FROM a\n"
        "RUN a \\\n"  # 2
        "  # comment inside\n"
        "\\\n"  # a lone escape adds nothing
        "    b\\\n"
        "c \\\\\n"  # doubled escape at the end: no continuation
        "ENV X=1 \\  \t\n"  # escape followed by blanks continues
        "  Y=2\n"
    )
    parsed = parse(text)
    assert [n.args for n in parsed.nodes] == [("a",), ("a     bc \\\\",), ("X", "1", "=", "Y", "2", "=")]
    assert [(n.start_line, n.end_line) for n in parsed.nodes] == [(1, 1), (2, 6), (7, 8)]
    assert parsed.warnings == ()


def test_continuation_at_eof_and_comment_ending_in_escape() -> None:
    parsed = parse("# comment \\\nFROM a\nRUN b \\\n\n# c\n")
    assert [(n.keyword, n.args, n.end_line) for n in parsed.nodes] == [("from", ("a",), 2), ("run", ("b",), 5)]
    assert len(parsed.warnings) == 1


def test_lone_escape_line_starts_an_instruction() -> None:
    parsed = parse("\\\nFROM a\n")
    assert dump_buildkit(parsed) == '(from "a")\n'
    assert parsed.nodes[0].start_line == 1


def test_empty_logical_line_is_a_keywordless_node() -> None:
    parsed = parse("FROM a\n\\\n")  # BuildKit makes a node with an empty keyword
    assert parsed.nodes[1].keyword == "" and parsed.nodes[1].args == ("",)


def test_keyword_case_and_text() -> None:
    parsed = parse("from a AS b\nRun echo\ncOpY --From=b x y\n")
    assert [n.keyword for n in parsed.nodes] == ["from", "run", "copy"]
    assert [n.keyword_text for n in parsed.nodes] == ["from", "Run", "cOpY"]
    assert parsed.nodes[2].flags == ("--From=b",)


def test_original_is_the_joined_line() -> None:
    parsed = parse("FROM a\n  RUN  echo \\\n   hi  \n")
    assert parsed.nodes[1].original == "RUN  echo    hi  "


def test_comments_above_instructions() -> None:
    text = (
        "# syntax=x\n"
        "# base stage\n"
        "\n"
        "#   builds things  \n"
        "FROM a AS base\n"
        "RUN x \\\n"
        "  # not a description\n"
        "  y\n"
        "# first\n"
        "#\n"
        "# second\n"
        "ARG B\n"
    )
    parsed = parse(text)
    assert parsed.nodes[0].comments == ("builds things",)  # the blank line separates "base stage"
    assert parsed.nodes[1].comments == ()
    assert parsed.nodes[2].comments == ("second",)


def test_physical_lines_kept_for_quotes() -> None:
    parsed = parse("FROM a\r\nRUN b\n")
    assert parsed.lines == ("FROM a", "RUN b")
    assert parsed.source_line(2) == "RUN b"
    assert parsed.source_line(3) is None


# --- per-instruction argument rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "dump"),
    [
        ("MAINTAINER Jane Doe <j@d>", '(maintainer "Jane Doe <j@d>")'),
        ("STOPSIGNAL SIGKILL", '(stopsignal "SIGKILL")'),
        ("USER  me:grp ", '(user "me:grp")'),
        ("WORKDIR /a b", '(workdir "/a b")'),
        ("SHELL [\"sh\", \"-c\"]", '(shell "sh" "-c")'),
        ("SHELL sh -c", '(shell "sh -c")'),
        ("EXPOSE 80/tcp\t443", '(expose "80/tcp" "443")'),
        ('COPY "a b" c', '(copy "\\"a" "b\\"" "c")'),
        ('VOLUME ["/a", "/b"]', '(volume "/a" "/b")'),
        ("VOLUME /a /b", '(volume "/a" "/b")'),
        ("FROM --platform=$P a AS b", '(from ["--platform=$P"] "a" "AS" "b")'),
        ("FROM", "(from)"),
        ("RUN", "(run)"),
        ("ENV", "(env)"),
        ("ARG", "(arg)"),
        ("CMD []", "(cmd)"),
        ("FROBNICATE a b", '(frobnicate "")'),
        ("FORM", '(form "")'),
        ('ENV name="a\\"b" c=d', '(env "name" "\\"a\\\\\\"b\\"" "=" "c" "d" "=")'),
        ("ENV A  b  c ", '(env "A" "b  c" "")'),
        ("LABEL a=", '(label "a" "" "=")'),
        ('ARG abc="123 456" def', '(arg "abc=\\"123 456\\"" "def")'),
        ("ONBUILD RUN echo test", '(onbuild (run "echo test"))'),
        ("ONBUILD", "(onbuild)"),
        ("ONBUILD --x=1 COPY --from=a b c", '(onbuild ["--x=1"] (copy ["--from=a"] "b" "c"))'),
        ('ONBUILD CMD ["a"]', '(onbuild (cmd "a"))'),
        ("HEALTHCHECK NONE", '(healthcheck "NONE")'),
        ('HEALTHCHECK --interval=1s CMD ["a", "b"]', '(healthcheck ["--interval=1s"] "CMD" "a" "b")'),
        ("RUN --mount=type=cache,target=/x -- --not-a-flag", '(run ["--mount=type=cache,target=/x"] "--not-a-flag")'),
        ("RUN --a='b c' --d=\"e\\\"f\" g", '(run ["--a=b c" "--d=e\\"f"] "g")'),
        ("RUN --a --", '(run ["--a"])'),
        ("RUN -a --b", '(run "-a --b")'),
        ("RUN echo ☃ \x00 \xa0 x", '(run "echo ☃ \\x00 \\u00a0 x")'),
    ],
)
def test_instruction_rules(line: str, dump: str) -> None:
    assert dump_buildkit(parse(line + "\n")) == dump + "\n"


def test_json_form_flag() -> None:
    parsed = parse('FROM a\nCMD ["a"]\nCMD a\nHEALTHCHECK CMD ["x"]\nONBUILD RUN ["x"]\nCOPY ["a", "b"]\n')
    assert [n.json_form for n in parsed.nodes] == [False, True, False, True, False, True]
    assert parsed.nodes[4].inner is not None and parsed.nodes[4].inner.json_form


def test_env_label_form_errors() -> None:
    with pytest.raises(ParseError) as caught:
        parse('FROM a\nLABEL a=b c\n')
    assert caught.value.message == "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    assert caught.value.line == 2
    with pytest.raises(ParseError, match="LABEL must have two arguments"):
        parse("LABEL a")
    with pytest.raises(ParseError, match="ENV must have two arguments"):
        parse("FROM a\nONBUILD ENV a\n")


def test_error_spanning_lines_names_the_first() -> None:
    with pytest.raises(ParseError) as caught:
        parse("FROM a\nCMD [\"a\", \\\n  1]\n")
    assert caught.value.location is not None
    assert (caught.value.location.start_line, caught.value.location.end_line) == (2, 3)
    assert str(caught.value).startswith("Dockerfile:2: ")


# --- heredocs beyond the vectors --------------------------------------------------------------------


def test_heredoc_lines_and_following_instructions() -> None:
    text = "FROM a\nRUN <<EOF bash\nset -e \\\nEOF\nRUN after\n"
    parsed = parse(text)
    assert [(n.keyword, n.start_line, n.end_line) for n in parsed.nodes] == [
        ("from", 1, 1), ("run", 2, 4), ("run", 5, 5)]
    assert parsed.nodes[1].heredocs == (Heredoc("EOF", "set -e \\\n"),)


def test_heredoc_in_onbuild() -> None:
    parsed = parse("FROM a\nONBUILD RUN <<-EOT\n\techo hi\n\tEOT\nRUN b\n")
    node = parsed.nodes[1]
    assert node.heredocs == (Heredoc("EOT", "\techo hi\n", chomp=True),)
    assert node.inner is not None and node.inner.heredocs == node.heredocs
    assert node.end_line == 4 and parsed.nodes[2].args == ("b",)


def test_heredoc_keeps_crlf_and_reads_to_eof() -> None:
    parsed = parse(b"FROM a\r\nCOPY <<EOF /x\r\nline\r\nEOF")
    assert parsed.nodes[1].heredocs[0].content == "line\r\n"


def test_heredoc_needs_heredoc_keyword_and_shell_form() -> None:
    parsed = parse("FROM a\nCMD <<EOF\nEOF\n")
    assert [n.keyword for n in parsed.nodes] == ["from", "cmd", "eof"]


def test_heredoc_file_descriptor_and_quoted_name_with_space() -> None:
    parsed = parse("FROM a\nRUN 3<<'my doc' cat\nbody\nmy doc\n")
    assert parsed.nodes[1].heredocs == (Heredoc("my doc", "body\n", expand=False, file_descriptor=3),)


def test_heredoc_with_backtick_escape_still_detected() -> None:
    parsed = parse("# escape=`\nFROM a\nRUN <<EOF\nx\nEOF\n")
    assert parsed.nodes[1].heredocs == (Heredoc("EOF", "x\n"),)


def test_unterminated_heredoc() -> None:
    with pytest.raises(ParseError) as caught:
        parse("FROM a\nRUN <<EOF\necho\n")
    assert caught.value.message == "unterminated heredoc"
    assert caught.value.line == 2
    assert "RUN <<EOF" in str(caught.value)


def test_unbalanced_quote_in_line_means_no_heredoc() -> None:
    parsed = parse("FROM a\nRUN <<EOF 'unbalanced\nEOF\n")
    assert [n.keyword for n in parsed.nodes] == ["from", "run", "eof"]


# --- dump quoting -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("☃♥é", '"☃♥é"'),
        ("\xa0\u2028\u200b", '"\\u00a0\\u2028\\u200b"'),
        ("\U0001f600", '"\U0001f600"'),
        ("\ufffd\u00ad", '"\ufffd\\u00ad"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("\udcff", '"\\xff"'),
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_quote_agrees_with_go_rules_on_all_bmp_controls() -> None:
    for cp in range(0x20):
        assert go_quote(chr(cp)).startswith('"\\')
    assert go_quote(" ~") == '" ~"'


def test_invalid_utf8_in_dump() -> None:
    assert dump_buildkit(parse(b"RUN echo \xff\xfe")) == '(run "echo \\xff\\xfe")\n'


# --- suggestions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "keyword"),
    [("FORM", "FROM"), ("form", "FROM"), ("RUNN", "RUN"), ("CPY", "COPY"), ("ENTRYPONT", "ENTRYPOINT"),
     ("workdri", "WORKDIR"), ("HELTHCHECK", "HEALTHCHECK"), ("FROM", "FROM")],
)
def test_closest_instruction(word: str, keyword: str) -> None:
    assert closest_instruction(word) == keyword


@pytest.mark.parametrize("word", ["", "XYZZY", "PYTHON", "apt-get"])
def test_no_suggestion_for_distant_words(word: str) -> None:
    assert closest_instruction(word) is None


def test_keywords_are_the_dispatch_table() -> None:
    parsed = parse("".join(f"{k} a=b\n" for k in KEYWORDS))
    assert all(n.args != ("",) for n in parsed.nodes)


def test_unknown_instruction_error_format() -> None:
    parsed = parse("FROM a\n\nFORM b\n", file="app/Dockerfile")
    error = unknown_instruction_error(parsed.nodes[1], parsed)
    assert isinstance(error, ParseError)
    assert str(error) == "app/Dockerfile:3: unknown instruction: FORM (did you mean FROM?)\n     3 | FORM b"
    parsed = parse("FROM a\nXYZZY b\n")
    assert str(unknown_instruction_error(parsed.nodes[1], parsed)).startswith(
        "Dockerfile:2: unknown instruction: XYZZY\n")


# --- API -----------------------------------------------------------------------------------------------


def test_parser_object_and_module_function_agree() -> None:
    text = (CORPUS / "positive" / "docker" / "Dockerfile").read_bytes()
    assert Parser().parse(text) == parse(text)
    assert parse(text.decode()) == parse(text)


def test_file_name_in_result_and_errors() -> None:
    assert parse("FROM a", file="x/Containerfile").file == "x/Containerfile"
    with pytest.raises(ParseError, match=r"^x/Containerfile:1: file with no instructions"):
        parse("# only\n", file="x/Containerfile")


def test_grammar_is_loaded_from_the_package() -> None:
    import grammar

    assert "INSTRUCTION" in grammar.load()


def test_parse_in_a_fresh_interpreter() -> None:
    code = "from builder.frontend import parse, dump_buildkit; print(dump_buildkit(parse('FROM a')), end='')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout == '(from "a")\n'


# --- inputs that would exhaust Python's stack if handled recursively ---------------------------------


def test_deep_onbuild_chain() -> None:
    parsed = parse("FROM a\n" + "ONBUILD " * 5000 + "RUN x\n")
    dump = dump_buildkit(parsed)
    assert dump.startswith('(from "a")\n(onbuild (onbuild (') and dump.endswith('(run "x")' + ")" * 5000 + "\n")
    assert dump_buildkit(parse("ONBUILD ONBUILD\n")) == "(onbuild (onbuild))\n"


def test_deeply_nested_variables_on_a_heredoc_line() -> None:
    with pytest.raises(ParseError) as caught:
        parse("FROM a\nRUN <<EOF " + "${a:-" * 3000 + "\nEOF\n")
    assert caught.value.line == 2 and "nested too deeply" in caught.value.message
    parsed = parse("FROM a\nRUN <<EOF " + "${a:-" * 50 + "}" * 50 + "\nbody\nEOF\n")
    assert parsed.nodes[1].heredocs == (Heredoc("EOF", "body\n"),)


def test_deeply_nested_json_is_shell_form() -> None:
    node = parse("CMD " + "[" * 20000 + "]" * 20000).nodes[0]
    assert not node.json_form and len(node.args[0]) == 40000


def test_unknown_instruction_error_for_an_empty_keyword() -> None:
    parsed = parse("FROM a\n\\\n")
    error = unknown_instruction_error(parsed.nodes[1], parsed)
    assert str(error).startswith("Dockerfile:2: unknown instruction: (empty) (a line ends in a line continuation")


def test_comment_text_is_buildkits() -> None:
    # BuildKit drops the line's first character and trims: an indented comment keeps its '#'.
    parsed = parse("#  plain  \n  # indented\nFROM a\n")
    assert parsed.nodes[0].comments == ("plain", "# indented")


# --- the reference engine: docker's classic builder uses BuildKit's parser ------------------------------

DOCKER_PARSE_ERRORS = [
    "FROM scratch\nENV PATH\n",
    "FROM scratch\nLABEL a\n",
    "FROM scratch\nLABEL a=b c\n",
    "FROM scratch\nONBUILD ENV x\n",
    'FROM scratch\nCMD ["a", 1]\n',
    'FROM scratch\nHEALTHCHECK CMD ["a", true]\n',
    "# escape=x\nFROM scratch\n",
    "# escape=\\\n# ESCAPE=`\nFROM scratch\n",
    "# syntax=a\n# syntax=b\nFROM scratch\n",
    "# comment\n\n",
    "FROM scratch\nLABEL a=" + "x" * 70000 + "\n",
]


def _docker_build(docker: str, context: Path, text: str) -> subprocess.CompletedProcess[str]:
    (context / "Dockerfile").write_text(text)
    return subprocess.run(
        # --no-cache: the image ID (removed by the test) is this build's own, not another test run's
        [docker, "build", "--no-cache", "--force-rm", "--network", "host", "-q", str(context)], capture_output=True,
        text=True,
        timeout=120, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


@pytest.mark.docker
@pytest.mark.parametrize("text", DOCKER_PARSE_ERRORS, ids=lambda t: t[:40])
def test_parse_errors_match_docker(docker: str, tmp_path: Path, text: str) -> None:
    result = _docker_build(docker, tmp_path, text)
    assert result.returncode != 0
    with pytest.raises(ParseError) as caught:
        parse(text)
    assert f"failed to parse Dockerfile: {caught.value.message}" in result.stderr


@pytest.mark.docker
def test_accepted_like_docker(docker: str, tmp_path: Path) -> None:
    text = 'FROM scratch\nLABEL a=b \\\n\n  c=d \\\n# x\n  e=f\nEXPOSE 80 \\\n# c\n 81/udp\nlabel "q"=r\n'
    result = _docker_build(docker, tmp_path, text)
    assert result.returncode == 0, result.stderr
    image = result.stdout.strip()
    inspect = subprocess.run([docker, "image", "inspect", image], capture_output=True, text=True, check=True)
    config = json.loads(inspect.stdout)[0]["Config"]
    parsed = parse(text)
    labels = {}
    for node in parsed.nodes:
        if node.keyword == "label":
            for i in range(0, len(node.args), 3):
                labels[node.args[i].strip('"')] = node.args[i + 1]
    assert config["Labels"] == labels == {"a": "b", "c": "d", "e": "f", "q": "r"}
    exposed = sorted(a if "/" in a else f"{a}/tcp" for n in parsed.nodes if n.keyword == "expose" for a in n.args)
    assert sorted(config["ExposedPorts"]) == exposed == ["80/tcp", "81/udp"]
    subprocess.run([docker, "image", "rm", "-f", image], capture_output=True, check=False)


def test_many_heredocs_keep_lines_and_order() -> None:
    blocks = "".join(f"RUN <<EOF\necho {i} \\\nEOF\n# note {i}\n\nENV A{i}=1\n" for i in range(50))
    parsed = parse("FROM a\n" + blocks)
    assert len(parsed.nodes) == 101
    for i in range(50):
        run, env = parsed.nodes[1 + 2 * i], parsed.nodes[2 + 2 * i]
        assert run.heredocs == (Heredoc("EOF", f"echo {i} \\\n"),)
        assert (run.start_line, run.end_line) == (2 + 6 * i, 4 + 6 * i)
        assert env.args == (f"A{i}", "1", "=") and env.start_line == 7 + 6 * i and env.comments == ()


def test_heredoc_terminator_that_looks_like_a_continuation() -> None:
    # The terminator "A\" ends in the escape character: the first lexing joined it with the
    # lines after it, so the rest of the file is lexed again after the body.
    parsed = parse("FROM a\nRUN <<'A\\'\nbody\nA\\\nRUN b \\\n  c\n")
    assert parsed.nodes[1].heredocs == (Heredoc("A\\", "body\n", expand=False),)
    assert [(n.args, n.start_line, n.end_line) for n in parsed.nodes[2:]] == [(("b   c",), 5, 6)]


def test_flags_use_the_escape_character() -> None:
    # BuildKit passes the directives to extractBuilderFlags: with escape=` a backslash in a
    # flag is an ordinary character (Windows paths) and the backtick escapes.
    parsed = parse("# escape=`\nFROM a\nCOPY --from=C:\\src --x=a`\"b --y=\"c d\" e f\n")
    assert parsed.nodes[1].flags == ("--from=C:\\src", '--x=a"b', "--y=c d")
    assert parse("COPY --x=a\\ b c d\n").nodes[0].flags == ("--x=a b",)
