"""The shell lexer against BuildKit's own corpus (shared/conformance/buildkit-shell)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import ExpansionError, PybuildError
from builder.frontend.shell import MAX_NESTING, ShellLex, WordResult, env_from_list
from tests.helpers.tools import CONFORMANCE

CORPUS = CONFORMANCE / "buildkit-shell"

LEX = ShellLex()
ENV_VAR_TEST_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[int, str, str]]:
    cases = []
    for number, line in enumerate((CORPUS / "envVarTest").read_text("utf-8").split("\n"), 1):
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        fields = [f.strip() for f in line.split("|")]
        assert len(fields) == 3, f"envVarTest:{number}: {line!r}"
        platform, source, expected = fields
        if platform in ("A", "U"):
            cases.append((number, source, expected))
    return cases


def _words_cases() -> list[tuple[int, str, dict[str, str], list[str]]]:
    env: dict[str, str] = {}
    cases = []
    for number, line in enumerate((CORPUS / "wordsTest").read_text("utf-8").splitlines(), 1):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[4:].lstrip(" ").partition("=")
            env[name] = value
            continue
        source, expected = line.split("|")
        cases.append((number, source.strip(), dict(env), expected.lstrip(" ").split(",")))
    return cases


VECTORS = json.loads((CORPUS / "vectors.json").read_text("utf-8"))
ENV_VAR_CASES = _env_var_cases()
WORDS_CASES = _words_cases()


def test_corpus_counts() -> None:
    assert len(ENV_VAR_CASES) == 228
    assert sum(1 for _, _, expected in ENV_VAR_CASES if expected == "error") == 36
    assert len(WORDS_CASES) == 24
    assert len(VECTORS["process_word_with_matches"]["cases"]) == 47


@pytest.mark.parametrize(
    ("line", "source", "expected"), ENV_VAR_CASES, ids=[f"L{c[0]}" for c in ENV_VAR_CASES]
)
def test_env_var_test(line: int, source: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(ExpansionError):
            LEX.process_word(source, ENV_VAR_TEST_ENV)
    else:
        assert LEX.process_word(source, ENV_VAR_TEST_ENV) == expected


@pytest.mark.parametrize(
    ("line", "source", "env", "expected"), WORDS_CASES, ids=[f"L{c[0]}" for c in WORDS_CASES]
)
def test_words_test(line: int, source: str, env: dict[str, str], expected: list[str]) -> None:
    if expected == ["error"]:
        with pytest.raises(ExpansionError):
            LEX.process_words(source, env)
    else:
        assert LEX.process_words(source, env) == expected


MATCH_CASES = VECTORS["process_word_with_matches"]["cases"]


@pytest.mark.parametrize("case", MATCH_CASES, ids=[c["input"] for c in MATCH_CASES])
def test_process_word_with_matches(case: dict) -> None:
    if case["error"]:
        with pytest.raises(ExpansionError):
            LEX.process_word_with_matches(case["input"], case["envs"])
        return
    result = LEX.process_word_with_matches(case["input"], case["envs"])
    assert isinstance(result, WordResult)
    assert result.result == case["expected"]
    assert result.matched == set(case["matches"])
    assert result.unmatched == set(case["unmatched"])


REQUIRED_CASES = VECTORS["required_variables"]["cases"]


@pytest.mark.parametrize(
    "case", REQUIRED_CASES, ids=[f"{c['input']}-{'|'.join(c['env'])}" for c in REQUIRED_CASES]
)
def test_required_variables(case: dict) -> None:
    env = env_from_list(case["env"])
    if "error_contains" in case:
        with pytest.raises(ExpansionError) as info:
            LEX.process_word(case["input"], env)
        assert case["error_contains"] in str(info.value)
        assert str(info.value) == f"VAR: {case['error_contains']}"
    else:
        assert LEX.process_word(case["input"], env) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["platform_filename"]["cases"])
def test_platform_filename(case: dict) -> None:
    assert LEX.process_word(VECTORS["platform_filename"]["input"], case["envs"]) == case["expected"]


@pytest.mark.parametrize("case", VECTORS["env_list_lookup"]["cases"])
def test_env_list_lookup(case: dict) -> None:
    env = env_from_list(case["env"])
    for name, value in case["lookups"].items():
        assert env.get(name, "") == value
    if case["env"] == ["foo"]:
        assert env == {"foo": ""}  # set, but empty: ${foo-x} keeps it empty
        assert LEX.process_word("${foo-x}", env) == ""


def test_pattern_helpers() -> None:
    from builder.frontend import shell

    helpers = VECTORS["pattern_helpers_internal"]
    for case in helpers["reverse_pattern"]:
        assert shell._reverse_pattern(case["pattern"]) == case["reversed"]
    for case in helpers["to_regex_greedy_anchored"]:
        regex = shell._compile_pattern(case["pattern"], greedy=True, anchored=True)
        assert regex.pattern == case["regex"]
    for pattern in helpers["invalid_patterns"]:
        with pytest.raises(shell._LexError, match="invalid pattern"):
            shell._compile_pattern(pattern, greedy=True, anchored=True)
    # Seen from a Dockerfile, "\x" in a pattern operand is a user error.
    with pytest.raises(ExpansionError, match=r"invalid pattern \(\\x\) in substitution"):
        LEX.process_word("${FOO#\\x}", {"FOO": "x"})


# -- messages a user reads ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("${:}", "bad substitution: ${:}"),
        ("he${}", "bad substitution: he${}"),
        ("${VAR:?}", "VAR: is not allowed to be unset"),
        ("${NULL:?}", "NULL: is not allowed to be empty"),
        ("${VAR?must be set to $SHELL}", "VAR: must be set to bash"),
        ("${FOO=aaa}", "unsupported modifier (=) in substitution: ${FOO=aaa}"),
        ("${FOO:=aaa}", "unsupported modifier (:=) in substitution: ${FOO:=aaa}"),
        ("${FOO:#x}", "unsupported modifier (:#) in substitution: ${FOO:#x}"),
        ("he${PWD", "syntax error: missing '}': he${PWD"),
        ("'abc", "unterminated single quote: 'abc"),
        ('a"bc', 'unterminated double quote: a"bc'),
        ("${FOO/x", "syntax error: missing '/' in ${}: ${FOO/x"),
    ],
)
def test_error_messages(source: str, message: str) -> None:
    with pytest.raises(ExpansionError) as info:
        LEX.process_word(source, {"NULL": "", "SHELL": "bash"})
    assert str(info.value) == message
    assert info.value.location is None  # the instruction layer adds file:line
    assert isinstance(info.value, PybuildError)


# -- behaviour beyond the corpus --------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("${X/o/0}", "f0o"),
        ("${X//o/0}", "f00"),
        ("${X//o/$R}", "f[o][o]"),  # Go's replace-all template: $0 is the whole match
        ("${X/o/$R}", "f[$0]o"),  # the single replacement is literal
        ("${X//o/$D}", "f$$"),  # $$ in the template is one $
        ("${X//*/-}", "-"),  # Go's empty-match rule: no second replacement at the end
        ("${X//o*/$}", "f$"),
        ("${X//$/-}", "foo"),
        ("${X%o}", "fo"),
        ("${X%%o*}", "f"),
        ("${X#f}", "oo"),
        ("${X:+a b}", "a b"),
    ],
)
def test_pattern_operators(source: str, expected: str) -> None:
    assert LEX.process_word(source, {"X": "foo", "R": "[$0]", "D": "$$"}) == expected


def test_nested_operand_keeps_outer_word() -> None:
    # Upstream shares one word buffer between nesting levels and drops "a"; a shell keeps it.
    assert LEX.process_words("a${X:-b c}d e", {}) == ["ab", "cd", "e"]
    assert LEX.process_words("a${X:-b}", {}) == ["ab"]


def test_skip_unset_env_keeps_text() -> None:
    lex = ShellLex(skip_unset_env=True)
    env = {"SET": "v"}
    assert lex.process_word("$UNSET-$SET", env) == "$UNSET-v"
    assert (
        lex.process_word("${UNSET}/${UNSET:-x}/${UNSET/a/b}", env)
        == "${UNSET}/${UNSET:-x}/${UNSET/a/b}"
    )
    assert lex.process_word("${SET:-x}", env) == "v"


def test_raw_modes() -> None:
    assert ShellLex(raw_quotes=True).process_word("'a'\"$X\"", {"X": "x"}) == "'a'\"x\""
    assert ShellLex(raw_escapes=True).process_word(r"a\ b", {}) == r"a\ b"
    assert ShellLex(skip_process_quotes=True).process_words("'a b'", {}) == ["'a", "b'"]


def test_backtick_escape() -> None:
    lex = ShellLex(escape="`")
    assert lex.process_word("C:\\path`$X", {"X": "x"}) == "C:\\path$X"
    assert lex.process_words("a` b c", {}) == ["a b", "c"]


def test_escape_must_be_one_character() -> None:
    with pytest.raises(ValueError):
        ShellLex(escape="")


def test_plain_words_fast_path() -> None:
    result = LEX.process_word_with_matches("  a\tb  c ", {})
    assert result.result == "  a\tb  c "
    assert result.words == ["a", "b", "c"]
    assert result.matched == set() and result.unmatched == set()


def test_unicode_names_and_spaces() -> None:
    assert LEX.process_word("$한국어.", {"한국어": "ko"}) == "ko."
    # \x1c is whitespace to Python but not to Go: it does not split.
    assert LEX.process_words("a\x1cb a\u3000b", {}) == ["a\x1cb", "a", "b"]


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("$\\{}:?-+#%/*'\" aZ_9@\t.")), max_size=30),
    st.dictionaries(st.sampled_from(["a", "Z", "_", "9", "aZ"]), st.text(max_size=5), max_size=3),
)
def test_random_input_expands_or_raises_expansion_error(source: str, env: dict[str, str]) -> None:
    for lex in (LEX, ShellLex(skip_unset_env=True, raw_quotes=True, raw_escapes=True)):
        try:
            result = lex.process_word_with_matches(source, env)
        except ExpansionError:
            continue
        assert isinstance(result.result, str)
        assert all(isinstance(w, str) and w for w in result.words)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_random_unicode_never_crashes(source: str) -> None:
    try:
        LEX.process_words(source, {"a": "x y"})
    except ExpansionError:
        pass


def test_nesting_up_to_the_limit_expands() -> None:
    depth = MAX_NESTING
    source = "${A:-" * depth + "z" + "}" * depth
    assert LEX.process_word(source, {}) == "z"
    quoted = '"${A:-' * depth + "z" + '}"' * depth
    assert LEX.process_word(quoted, {"A": "set"}) == "set"


def test_nesting_past_the_limit_is_an_expansion_error_not_a_recursion_error() -> None:
    for depth in (MAX_NESTING + 1, 5000):
        for source in ("${A:-" * depth + "z" + "}" * depth, '"${A:+' * depth + '}"' * depth):
            with pytest.raises(ExpansionError) as info:
                LEX.process_word(source, {"A": "1"})
            assert str(info.value) == f"variable substitutions nested more than {MAX_NESTING} levels deep"
