""".dockerignore matching against moby/patternmatcher's corpus, and the context walk on real trees."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import BuildContextError, IgnoreFileError, PybuildError
from builder.frontend import dockerignore
from builder.frontend.dockerignore import (
    ContextEntry,
    MatchType,
    PatternMatcher,
    go_clean,
    load_ignore,
    read_ignore_file,
    read_ignore_lines,
    walk_context,
)
from tests.helpers.tools import CONFORMANCE, docker_tag

CORPUS = CONFORMANCE / "dockerignore"
VECTORS = json.loads((CORPUS / "vectors.json").read_text("utf-8"))


def legacy_matches(path: str, patterns: list[str]) -> bool:
    """Upstream's package-level Matches: build, then match (errors propagate)."""
    return PatternMatcher.from_patterns(patterns).matches(path)


# -- the corpus ------------------------------------------------------------------------


def test_corpus_counts() -> None:
    assert len(VECTORS["matches"]["single"]) == 67
    assert len(VECTORS["legacy_matches_function"]["filepath_match_table"]["cases"]) == 54


@pytest.mark.parametrize("case", VECTORS["ignorefile_read"], ids=lambda c: c["id"])
def test_ignorefile_read(case: dict) -> None:
    assert read_ignore_file(case["input"]) == case["patterns"]
    if case["input"] is not None:
        assert read_ignore_file(case["input"].encode()) == case["patterns"]


MATCH_CASES = [
    (group, case)
    for group in ("single", "multi", "unix_only")
    for case in VECTORS["matches"][group]
]


@pytest.mark.parametrize(
    ("group", "case"),
    MATCH_CASES,
    ids=[f"{g}:{c.get('patterns', [c.get('pattern')])}:{c['path']}" for g, c in MATCH_CASES],
)
def test_matches(group: str, case: dict) -> None:
    patterns = case["patterns"] if "patterns" in case else [case["pattern"]]
    matcher = PatternMatcher.from_patterns(patterns)
    assert matcher.matches(case["path"]) is case["match"]
    # The walk's incremental matching (parent results) must agree.
    assert _walk_style_match(matcher, case["path"].rstrip("/")) is case["match"]


def _walk_style_match(matcher: PatternMatcher, path: str, *, prune: bool = True) -> bool:
    """Match component by component with parent results, as the walker does.

    With ``prune``, only the rules the walker considers able to match are evaluated.
    """
    parts = path.split("/")
    info = None
    matched = False
    prefix = ""
    for depth, part in enumerate(parts):
        if prune:
            active: tuple[int, ...] = matcher._active_under(prefix, info)
        else:
            active = tuple(range(len(matcher.rules)))
        rel = prefix + part
        matched, info = matcher._match_using_parent(rel, info if depth else None, active)
        prefix = rel + "/"
    return matched


LEGACY = VECTORS["legacy_matches_function"]["cases"]


@pytest.mark.parametrize("case", LEGACY, ids=lambda c: c["id"])
def test_legacy_matches(case: dict) -> None:
    if case["error"]:
        with pytest.raises(IgnoreFileError) as info:
            legacy_matches(case["path"], case["patterns"])
        if case["error"] != "ErrBadPattern":
            assert case["error"] in str(info.value)
        else:
            assert "syntax error in pattern" in str(info.value)
    else:
        assert legacy_matches(case["path"], case["patterns"]) is case["match"]


FILEPATH_TABLE = VECTORS["legacy_matches_function"]["filepath_match_table"]["cases"]


@pytest.mark.parametrize(
    "case", FILEPATH_TABLE, ids=[f"{c['pattern']}:{c['path']}" for c in FILEPATH_TABLE]
)
def test_filepath_match_table(case: dict) -> None:
    if case["error"]:
        with pytest.raises(IgnoreFileError, match="syntax error in pattern"):
            legacy_matches(case["path"], [case["pattern"]])
    else:
        assert legacy_matches(case["path"], [case["pattern"]]) is case["match"]


@pytest.mark.parametrize("case", VECTORS["matcher_construction"]["cases"])
def test_matcher_construction(case: dict) -> None:
    if case["error"]:
        with pytest.raises(IgnoreFileError, match=case["error"]):
            PatternMatcher.from_patterns(case["patterns"])
        return
    matcher = PatternMatcher.from_patterns(case["patterns"])
    assert len(matcher.rules) == case["count"]
    assert matcher.has_exclusions is case["exclusions"]


@pytest.mark.parametrize("case", VECTORS["late_pattern_errors"]["cases"])
def test_late_pattern_errors(case: dict) -> None:
    matcher = PatternMatcher.from_patterns(case["patterns"])  # accepted at construction
    for _ in range(case["repeat_calls"]):
        with pytest.raises(IgnoreFileError, match="syntax error in pattern") as info:
            matcher.matches(case["path"])
        assert "[Local-Only]" in str(info.value)


@pytest.mark.parametrize("case", VECTORS["compile_internal"]["cases"], ids=lambda c: c["pattern"])
def test_compile_internal(case: dict) -> None:
    kind, regex = dockerignore._classify(case["pattern"])
    assert kind is MatchType(case["match_type"])
    assert regex == case["regexp_unix"]


# -- matching beyond the corpus -------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("[[:digit:]]x", "7x", True),  # Go regexp's POSIX classes
        ("[[:digit:]]x", "ax", False),
        ("[[:^digit:]]x", "ax", True),
        ("a[*]b", "a*b", False),  # upstream turns '*' inside [] into [^/]*: Go's quirk kept
        ("a\\.b", "a.b", True),
        ("a\\.b", "axb", False),
        ("*.log", "sub/x.log", False),  # '*' does not cross '/'
        ("**/*.log", "sub/x.log", True),
        ("docs", "docs/a/b/c", True),  # a parent directory match covers the subtree
        ("a/../b", "b", True),  # patterns are cleaned
        ("x\n", "x", True),  # surrounding whitespace trimmed
        ("café/*", "café/menu", True),
    ],
)
def test_match_extra(pattern: str, path: str, expected: bool) -> None:
    assert PatternMatcher.from_patterns([pattern]).matches(path) is expected


def test_unknown_regex_escape_fails_when_used() -> None:
    matcher = PatternMatcher.from_patterns(
        ["a\\qb"]
    )  # filepath.Match accepts it, Go's regexp does not
    with pytest.raises(IgnoreFileError, match="syntax error in pattern"):
        matcher.matches("aqb")


def test_matcher_pickles() -> None:
    matcher = PatternMatcher.from_patterns(["**/x", "a/**", "*.log", "exact", "[Local-Only]"])
    copy = pickle.loads(pickle.dumps(matcher))
    assert copy == matcher
    assert [copy.matches(p) for p in ("d/x", "a/b", "z.log", "exact")] == [True] * 4


def test_go_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("//a//b/") == "/a/b"
    assert go_clean("a/./b/../../..") == ".."
    assert go_clean("/../a") == "/a"
    assert go_clean("./") == "."


def test_dot_is_never_excluded() -> None:
    assert PatternMatcher.from_patterns(["**"]).matches(".") is False
    assert PatternMatcher.from_patterns(["*"]).matches("./") is False


def test_match_rule_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("# logs\n\n*.log\n!keep.log\n  tmp/  \n")
    matcher = load_ignore(tmp_path, None)
    assert matcher.match_rule("x.log") == ".dockerignore line 3: `*.log`"
    assert matcher.match_rule("keep.log") is None
    assert matcher.match_rule("tmp/a/b") == ".dockerignore line 5: `tmp/`"
    assert matcher.match_rule("src/main.c") is None
    rule = matcher.match_pattern("x.log")
    assert rule is not None and rule.line == 3 and rule.pattern == "*.log"
    message = f"COPY source 'x.log' is excluded by {matcher.match_rule('x.log')}"
    assert message == "COPY source 'x.log' is excluded by .dockerignore line 3: `*.log`"


def test_match_rule_without_file() -> None:
    matcher = PatternMatcher.from_patterns(["*.tmp", "!a.tmp", "a.*"])
    assert matcher.match_rule("a.tmp") == "`a.*`"
    assert matcher.match_rule("b.tmp") == "`*.tmp`"


def test_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("ok\n!\n")
    with pytest.raises(
        IgnoreFileError, match=r'\.dockerignore line 2: illegal exclusion pattern: "!"'
    ):
        load_ignore(tmp_path, None)
    (tmp_path / ".dockerignore").write_text("ok\n\nsrc/[a-\n")
    with pytest.raises(IgnoreFileError) as info:
        load_ignore(tmp_path, None)
    assert (
        str(info.value)
        == ".dockerignore line 3: invalid pattern `src/[a-`: syntax error in pattern"
    )
    assert isinstance(info.value, PybuildError)


def test_read_ignore_lines_details() -> None:
    text = "\ufeffa\r\n  # not a comment\n#comment\n! /b/ \n"
    lines = read_ignore_lines(text)
    assert [(x.line, x.pattern, x.text) for x in lines] == [
        (1, "a", "a"),
        (2, "# not a comment", "# not a comment"),
        (4, "!b", "! /b/"),
    ]
    with pytest.raises(IgnoreFileError, match="too long"):
        read_ignore_lines("x" * 70_000)


# -- finding the file -----------------------------------------------------------------------


def test_load_ignore_lookup(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    assert not load_ignore(context, context / "Dockerfile")  # no file: nothing excluded
    (context / ".dockerignore").write_text("from-context\n")
    assert load_ignore(context, context / "Dockerfile").patterns == ["from-context"]
    # <Dockerfile name>.dockerignore beside the Dockerfile wins.
    (context / "Dockerfile.dockerignore").write_text("from-dockerfile\n")
    matcher = load_ignore(context, context / "Dockerfile")
    assert matcher.patterns == ["from-dockerfile"]
    assert (
        matcher.match_rule("from-dockerfile") == "Dockerfile.dockerignore line 1: `from-dockerfile`"
    )
    # ...also when the Dockerfile lives outside the context, under another name.
    elsewhere = tmp_path / "df"
    elsewhere.mkdir()
    (elsewhere / "app.Dockerfile.dockerignore").write_text("outside\n")
    assert load_ignore(context, elsewhere / "app.Dockerfile").patterns == ["outside"]
    assert load_ignore(context, elsewhere / "other.Dockerfile").patterns == ["from-context"]
    assert load_ignore(context, None).patterns == ["from-context"]
    # An empty <name>.dockerignore still wins: nothing is excluded.
    (context / "Dockerfile.dockerignore").write_text("# nothing\n")
    assert not load_ignore(context, context / "Dockerfile")


def test_load_ignore_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").mkdir()
    with pytest.raises(IgnoreFileError, match="is a directory"):
        load_ignore(tmp_path, None)


# -- walking a real tree ---------------------------------------------------------------------


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)


def _paths(root: Path, patterns: list[str], **kwargs: object) -> list[str]:
    matcher = PatternMatcher.from_patterns(patterns)
    return [entry.path for entry in walk_context(root, matcher, **kwargs)]  # type: ignore[arg-type]


def test_walk_without_patterns_is_sorted_depth_first(tmp_path: Path) -> None:
    _tree(tmp_path, ["b.txt", "a/z", "a/b/c", "a.txt", "empty/"])
    entries = list(walk_context(tmp_path, PatternMatcher()))
    assert [e.path for e in entries] == ["a", "a/b", "a/b/c", "a/z", "a.txt", "b.txt", "empty"]
    assert all(isinstance(e, ContextEntry) for e in entries)
    assert [e.is_dir for e in entries] == [True, True, False, False, False, False, True]
    assert entries[2].stat.st_size == len("a/b/c")


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the directories the walk opens (the real os.scandir still does the work)."""
    seen: list[str] = []
    real = os.scandir

    def spy(path):  # type: ignore[no-untyped-def]
        seen.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(dockerignore.os, "scandir", spy)
    return seen


def test_walk_sorts_names_by_bytes(tmp_path: Path) -> None:
    # U+E000 is EE 80 80 in UTF-8, below the undecodable byte FF; as str it sorts above it.
    for name in (b"\xff", "\ue000".encode(), b"a", "é".encode()):
        (Path(os.fsdecode(tmp_path)) / os.fsdecode(name)).write_bytes(b"")
    names = [e.path for e in walk_context(tmp_path, PatternMatcher())]
    assert [os.fsencode(n) for n in names] == [b"a", "é".encode(), "\ue000".encode(), b"\xff"]
    filtered = [e.path for e in walk_context(tmp_path, PatternMatcher.from_patterns(["a"]))]
    assert filtered == names[1:]


def test_walk_prunes_excluded_directories(tmp_path: Path, opened: list[str]) -> None:
    _tree(
        tmp_path, ["node_modules/x/y.js", "src/main.py", "src/debug.log", "top.log", "Dockerfile"]
    )
    assert _paths(tmp_path, ["node_modules", "*.log", "**/*.log"]) == [
        "Dockerfile",
        "src",
        "src/main.py",
    ]
    assert [Path(p).name for p in opened] == [tmp_path.name, "src"]


def test_walk_reincludes_inside_excluded_directory(tmp_path: Path, opened: list[str]) -> None:
    _tree(tmp_path, ["docs/a.md", "docs/keep/README.md", "docs/keep/other.md", "src/x"])
    assert _paths(tmp_path, ["docs", "!docs/keep/README.md"]) == [
        "docs",
        "docs/keep",
        "docs/keep/README.md",
        "src",
        "src/x",
    ]
    # A wildcard exception makes fsutil open every excluded directory.
    assert _paths(tmp_path, ["docs", "!**/README.md"]) == [
        "docs",
        "docs/keep",
        "docs/keep/README.md",
        "src",
        "src/x",
    ]
    # An exception elsewhere lets the excluded directory be pruned without opening it.
    opened.clear()
    assert _paths(tmp_path, ["docs", "!src/x"]) == ["src", "src/x"]
    assert [Path(p).name for p in opened] == [tmp_path.name, "src"]


def test_walk_everything_but(tmp_path: Path) -> None:
    _tree(tmp_path, ["app/main.py", "app/test/t.py", "junk/j", "Dockerfile", ".dockerignore"])
    assert _paths(tmp_path, ["*", "!app", "app/test"]) == ["app", "app/main.py"]
    # The Dockerfile and .dockerignore are ordinary files: excluded only if a pattern says so.
    assert _paths(tmp_path, ["junk"]) == [
        ".dockerignore",
        "Dockerfile",
        "app",
        "app/main.py",
        "app/test",
        "app/test/t.py",
    ]


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir other users can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pybuild-ignore-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a forked child with uid/gid 65534, so permissions apply even under root."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, send back the result or the exception
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                result: object = ("ok", fn())
            except Exception as err:
                result = ("error", err)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(result, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        kind, value = pickle.load(pipe)
    os.waitpid(pid, 0)
    if kind == "error":
        raise value
    return value


def test_walk_unreadable_directories(shared_tmp: Path) -> None:
    context = shared_tmp / "ctx"
    _tree(context, ["ok/f", "secret/s", "data/private/p", "data/pub"])
    for name in ("secret", "data/private"):
        (context / name).chmod(0o700)  # root's: unreadable for the walking user

    def walk(patterns: list[str]) -> Callable[[], object]:
        return lambda: _paths(context, patterns)

    # Excluded and pruned: never opened.
    assert _as_nobody(walk(["secret", "data/private"])) == ["data", "data/pub", "ok", "ok/f"]
    # Excluded but opened (a wildcard exception might re-include): the error is ignored.
    assert _as_nobody(walk(["secret", "data/private", "!**/f"])) == [
        "data",
        "data/pub",
        "ok",
        "ok/f",
    ]
    # Needed: a clear error naming the directory.
    with pytest.raises(BuildContextError, match="cannot read secret in the build context"):
        _as_nobody(walk(["data/private"]))
    with pytest.raises(BuildContextError, match="cannot read data/private"):
        _as_nobody(lambda: [e.path for e in walk_context(context, PatternMatcher())])


def test_walk_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _tree(outside, ["secret"])
    context = tmp_path / "ctx"
    _tree(context, ["real/file"])
    (context / "link-dir").symlink_to(outside)
    (context / "link-file").symlink_to(outside / "secret")
    (context / "dangling").symlink_to(tmp_path / "missing")
    entries = {e.path: e for e in walk_context(context, PatternMatcher())}
    assert sorted(entries) == ["dangling", "link-dir", "link-file", "real", "real/file"]
    for name in ("dangling", "link-dir", "link-file"):
        assert entries[name].is_symlink and not entries[name].is_dir
    with_patterns = [e.path for e in walk_context(context, PatternMatcher.from_patterns(["real"]))]
    assert with_patterns == ["dangling", "link-dir", "link-file"]


def test_walk_include_patterns(tmp_path: Path) -> None:
    _tree(tmp_path, ["src/a.py", "src/b.txt", "docs/x", "setup.py"])
    assert _paths(tmp_path, [], include=["src"]) == ["src", "src/a.py", "src/b.txt"]
    # A directory that only leads to an included file comes along with it.
    assert _paths(tmp_path, [], include=["src/a.py"]) == ["src", "src/a.py"]
    assert _paths(tmp_path, [], include=["*/x"]) == ["docs", "docs/x"]
    assert _paths(tmp_path, ["**/*.txt"], include=["src", "setup.py"]) == [
        "setup.py",
        "src",
        "src/a.py",
    ]


def test_walk_late_pattern_error(tmp_path: Path) -> None:
    _tree(tmp_path, ["x"])
    with pytest.raises(IgnoreFileError, match="syntax error in pattern"):
        _paths(tmp_path, ["[Local-Only]"])


def test_walk_root_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(BuildContextError, match="not a directory"):
        list(walk_context(tmp_path / "f", PatternMatcher()))
    with pytest.raises(BuildContextError, match="does not exist"):
        list(walk_context(tmp_path / "missing", PatternMatcher()))


def test_walk_agrees_with_matches(tmp_path: Path) -> None:
    """Every kept file is one matches() keeps, and every file matches() keeps is walked."""
    files = [
        f"{top}/{mid}/{leaf}"
        for top in ("a", "b", "node_modules")
        for mid in ("x", "test", "y.d")
        for leaf in ("f.py", "f.log", "README.md")
    ]
    _tree(tmp_path, files)
    patterns = ["**/*.log", "node_modules", "!node_modules/x/README.md", "b/test", "!**/f.py"]
    matcher = PatternMatcher.from_patterns(patterns)
    walked = {e.path for e in walk_context(tmp_path, matcher) if not e.is_dir}
    expected = {f for f in files if not matcher.matches(f)}
    assert walked == expected


def test_walk_matches_docker_classic_builder(tmp_path: Path, docker: str) -> None:
    """The same context through docker's own builder lists the same files."""
    files = [
        "keep/a", "keep/b.log", "skip/c", "skip/d.md", "deep/er/x.log", "deep/er/y", "top.txt",
        "top.log", "x/y.tmp", "x/z/w.tmp", "a1b.txt", "a12.txt", "a1.txt", "bz", "bx", "b/c",
        "v/cache/q", "cache/r", "docs/v1/old/o", "docs/v1/new", "lit(eral).txt", "litXeralX.txt",
        "sp ace", "abs/file", "abs/other", "dir/in", "dir2/in", "k/.hidden", "k/visible",
        "m/n/o/p.md", "m/n/keep.md", "q+r.txt", "q$.txt", "caf\u00e9/x", "t/1", "t/2", "u/[x]",
    ]  # fmt: skip
    _tree(tmp_path, files)
    ignore = "\n".join(
        [
            "# comment", "*.log", "skip", "!skip/d.md", "!deep/er/x.log", "**/*.tmp",
            "a[0-9]?.txt", "b[^x]", "b/", "**/cache/**", "docs/*/old", "lit(eral).txt",
            "  sp ace  ", "/abs/file", "dir/**", "k/.*", "m/**/*.md", "!m/n/keep.md",
            "q+r.txt", "q$.txt", "caf\u00e9", "t/[!1]", "u/\\[x\\]",
        ]
    )  # fmt: skip
    (tmp_path / ".dockerignore").write_text(ignore)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    expected = sorted(
        e.path for e in walk_context(tmp_path, load_ignore(tmp_path, None)) if not e.is_dir
    )
    tag = docker_tag("pybuild-test-dockerignore")
    build = subprocess.run(
        [docker, "build", "-q", "--force-rm", "--network", "host", "-t", tag, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert build.returncode == 0, build.stderr
    try:
        container = subprocess.run(
            [docker, "create", tag, "none"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        try:
            export = subprocess.run(
                [docker, "export", container], capture_output=True, timeout=60, check=True
            ).stdout
        finally:
            subprocess.run([docker, "rm", container], capture_output=True, timeout=60)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=60)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        sent = sorted(
            m.name.removeprefix("ctx/")
            for m in tar.getmembers()
            if m.isfile() and m.name.startswith("ctx/")
        )
    # The classic builder always sends the Dockerfile and .dockerignore; BuildKit does not.
    assert [p for p in sent if p not in (".dockerignore", "Dockerfile")] == [
        p for p in expected if p not in (".dockerignore", "Dockerfile")
    ]


# -- robustness ------------------------------------------------------------------------------

_PATTERN_CHARS = st.sampled_from([*"ab/*?[]^!-\\.:{}() ", "[:digit:]", "**", "\\1", "\\W", "[^a]"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(_PATTERN_CHARS, max_size=8).map("".join), max_size=4),
    st.lists(st.sampled_from(["a", "b", "ab", "a.b", "[", "*", "-"]), min_size=1, max_size=4),
)
def test_random_patterns_match_or_raise_ignore_file_error(
    patterns: list[str], parts: list[str]
) -> None:
    path = "/".join(parts)
    try:
        matcher = PatternMatcher.from_patterns(patterns)
        walked = _walk_style_match(matcher, path)
        unpruned = _walk_style_match(matcher, path, prune=False)
        direct = matcher.matches(path)
    except IgnoreFileError:
        return
    assert isinstance(direct, bool)
    assert walked is unpruned  # skipping rules that cannot match changes nothing
