"""COPY's rules on real trees: what the layer tar holds, and the errors a user sees."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from builder.errors import CopyError, ImageError, SourceLocation
from builder.execute.context import BuildContext
from builder.execute.copy import (
    CopySpec,
    HeredocSource,
    SourceFile,
    copy_layer,
    copy_sources_digest,
    iter_source_files,
    plan_copy,
    select_sources,
    write_planned,
)
from builder.execute.rootfs import RootfsView
from builder.layers import whiteout
from builder.layers.extract import extract_layer

LOC = SourceLocation("Dockerfile", 7)


def spec(*sources: str, dest: str, **kw: object) -> CopySpec:
    return CopySpec(sources=tuple(sources), dest=dest, location=LOC, **kw)  # type: ignore[arg-type]


def layer(
    s: CopySpec, source: BuildContext | RootfsView | None, dest: RootfsView, **kw: object
) -> dict[str, SimpleNamespace]:
    """The layer's entries by name: tarfile's fields and methods, plus ``data`` for files."""
    buf = io.BytesIO()
    copy_layer(s, source=source, dest_view=dest, out=buf, **kw)  # type: ignore[arg-type]
    buf.seek(0)
    out = {}
    with tarfile.open(fileobj=buf) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isreg() else None  # type: ignore[union-attr]
            out[m.name] = SimpleNamespace(
                name=m.name, mode=m.mode, uid=m.uid, gid=m.gid, mtime=m.mtime, size=m.size,
                linkname=m.linkname, data=data, isdir=m.isdir, isfile=m.isfile, issym=m.issym,
                islnk=m.islnk,
            )
    return out


# -- heredocs, --chmod, --parents, --exclude, --link ---------------------------------------------


def test_heredoc_files(ctx: BuildContext, base: RootfsView) -> None:
    s = spec(dest="/app/", heredocs=(
        HeredocSource("a.sh", "echo $HOME\n"), HeredocSource("b.txt", "raw $HOME\n", expand=False),
    ), expand=lambda text: text.replace("$HOME", "/root"))
    out = layer(s, ctx, base)
    assert out["app/a.sh"].data == b"echo /root\n"
    assert out["app/b.txt"].data == b"raw $HOME\n"
    assert out["app/a.sh"].mode == 0o644 and out["app/a.sh"].uid == 0
    assert out["app"].isdir() and out["app"].mode == 0o755


def test_heredoc_to_file_name_with_chmod_and_chown(ctx: BuildContext, base: RootfsView) -> None:
    s = spec(dest="/usr/local/bin/hello", chmod="0755", chown="app",
             heredocs=(HeredocSource("EOF", "#!/bin/sh\necho hi\n"),))
    out = layer(s, ctx, base)
    f = out["usr/bin/hello"]
    assert (f.mode, f.uid, f.gid) == (0o755, 1000, 1000)
    assert out["usr/bin"].uid == 0  # existing directories are kept as they are


def test_chmod_octal_applies_to_copied_files_and_dirs_only(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("dir", dest="/new/deep/", chmod="0640"), ctx, base)
    assert out["new/deep/a"].mode == 0o640
    assert out["new/deep/sub"].mode == 0o640
    assert out["new/deep/lnk"].issym()
    assert out["new"].mode == 0o755 and out["new/deep"].mode == 0o755


def test_chmod_symbolic(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("f1", "dir", dest="/s/", chmod="u+x,g+r,o="), ctx, base)
    assert out["s/f1"].mode == 0o740  # 0600 + u+x + g+r
    assert out["s/sub"].mode == 0o750


@pytest.mark.parametrize("mode, start, want", [
    # No who: the umask (dockerd's 022) limits what is set or cleared, as chmod(1) and BuildKit do.
    ("+w", 0o444, 0o644), ("-w", 0o666, 0o466), ("=rw", 0o754, 0o644), ("+rwx", 0o000, 0o755),
    ("a+w", 0o444, 0o666), ("-x", 0o754, 0o644),
    # X (x where the file has an x bit) with every operator, as Linux's chmod (moby/buildkit#5835);
    # copying one class's bits to another; several operations in one clause.
    ("+X", 0o640, 0o640), ("+X", 0o754, 0o755), ("=X", 0o754, 0o111), ("a-X", 0o755, 0o644),
    ("a-X", 0o644, 0o644), ("u=rwX,go=rX", 0o700, 0o755), ("u=rwX,go=rX", 0o600, 0o644),
    ("o=rX", 0o644, 0o644), ("o=rX", 0o710, 0o715),
    ("u=g", 0o754, 0o554), ("go=u-w", 0o754, 0o755), ("ug=rx,+w", 0o640, 0o750), ("u+r-w", 0o666, 0o466),
    ("o+t", 0o666, 0o666), ("+t", 0o666, 0o1666), ("o+s", 0o754, 0o754), ("g+s", 0o754, 0o2754),
])
def test_chmod_symbolic_as_buildkit(tmp_path: Path, base: RootfsView, mode: str, start: int, want: int) -> None:
    """BuildKit's --chmod=<symbolic> (its mode library, chmod(1)'s rules, under dockerd's umask 022)."""
    (tmp_path / "f").write_text("f")
    (tmp_path / "f").chmod(start)
    assert layer(spec("f", dest="/x", chmod=mode), BuildContext.from_dir(tmp_path), base)["x"].mode == want


@pytest.mark.parametrize("mode, want", [
    ("u=rwX,go=rX", 0o755), ("a-X", 0o600), ("u=X", 0o100), ("o=rX", 0o705), ("go=u-w", 0o755),
])
def test_chmod_symbolic_x_counts_for_directories(tmp_path: Path, base: RootfsView, mode: str, want: int) -> None:
    """X always counts for a directory: ``COPY --chmod=u=rwX,go=rX`` leaves copied directories
    searchable (0755), where BSD's rule (X only with '+') made them 0644."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_text("f")
    (tmp_path / "d" / "sub" / "f").chmod(0o600)
    (tmp_path / "d" / "sub").chmod(0o700)
    out = layer(spec("d", dest="/x/", chmod=mode), BuildContext.from_dir(tmp_path), base)
    assert out["x/sub"].mode == want
    assert out["x"].mode == 0o755  # the destination COPY made takes no --chmod, as BuildKit's


@pytest.mark.parametrize("bad", ["u+q", "rwx", "0o755", "a+z", "u+x,", "u", "+w,,u+x"])
def test_chmod_invalid(ctx: BuildContext, base: RootfsView, bad: str) -> None:
    with pytest.raises(CopyError, match=re.escape(f"Dockerfile:7: COPY failed: invalid --chmod={bad}")):
        layer(spec("f1", dest="/x", chmod=bad), ctx, base)


@pytest.mark.parametrize("bad", ["999", "17777", "8"])
def test_chmod_numeric_out_of_range(ctx: BuildContext, base: RootfsView, bad: str) -> None:
    with pytest.raises(CopyError, match=re.escape(
        f"invalid chmod parameter: '{bad}'. it should be octal string and between 0 and 07777"
    )):
        layer(spec("f1", dest="/x", chmod=bad), ctx, base)


def test_chmod_leading_zeros(ctx: BuildContext, base: RootfsView) -> None:
    assert layer(spec("f1", dest="/x", chmod="000755"), ctx, base)["x"].mode == 0o755


@pytest.mark.parametrize("source, message", [
    ("https://example.com/x.tgz", "source can't be a URL for COPY (use ADD)"),
    ("https://example.com/repo.git#main", "source can't be a git ref for COPY (use ADD)"),
])
def test_copy_refuses_remote_sources(ctx: BuildContext, base: RootfsView, source: str, message: str) -> None:
    with pytest.raises(CopyError, match=re.escape(message)):
        layer(spec(source, dest="/x"), ctx, base)
    with pytest.raises(CopyError, match="checksum can't be specified for COPY"):
        layer(spec("f1", dest="/x", checksum="sha256:" + "0" * 64), ctx, base)


def test_parents_keeps_source_directories(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("dir/sub/b", "d2", dest="/p/", parents=True), ctx, base)
    assert out["p/dir/sub/b"].data == b"x\n"
    assert out["p/d2/c"].isfile()
    assert out["p/dir/sub"].mode == 0o750  # the directories on the way keep their metadata
    assert out["p/d2"].mode == 0o711
    out = layer(spec("dir/./sub/b", "*/c", dest="/q/", parents=True), ctx, base)
    assert "q/sub/b" in out and "q/dir" not in out
    assert "q/d2/c" in out
    out = layer(spec("**/b", dest="/g/", parents=True), ctx, base)  # '**' spans directories here
    assert sorted(n for n in out if n.startswith("g/")) == ["g/dir", "g/dir/sub", "g/dir/sub/b"]
    out = layer(spec("dir/./**/b", dest="/g/", parents=True), ctx, base)
    assert sorted(n for n in out if n.startswith("g/")) == ["g/sub", "g/sub/b"]
    with pytest.raises(CopyError, match="file not found in build context"):
        layer(spec("dir/nope", dest="/g/", parents=True), ctx, base)
    with pytest.raises(CopyError, match=r"excluded by \.dockerignore line 2"):
        layer(spec("x.log", dest="/g/", parents=True), ctx, base)


def _parents_tree(root: Path) -> Path:
    """BuildKit's testCopyRelativeParents tree, under ``root``/test."""
    for d in ("a/b/c/d/e", "a/b2/c/d/e", "a/b/c2/d/e", "a/b/c2/d/e2"):
        (root / "test" / d).mkdir(parents=True, exist_ok=True)
    for f in ("a/b/c/d/foo", "a/b/c/d/e/bay", "a/b2/c/d/e/bar", "a/b/c2/d/e/baz", "a/b/c2/d/e2/baz"):
        (root / "test" / f).write_text(f)
    (root / "test/a").chmod(0o700)
    os.chown(root / "test/a/b", 33, 44)
    return root


@pytest.mark.parametrize("where", ["context", "stage"])
def test_parents_as_buildkit(tmp_path: Path, base: RootfsView, where: str) -> None:
    """BuildKit's --parents: the part before the first '/./' is the copy's source (wildcards
    allowed there too), the rest an include pattern in which '**' spans directories; the same
    from the context and from a stage (where the directories on the way keep their owners)."""
    tree = _parents_tree(tmp_path / "src")
    source: BuildContext | RootfsView = BuildContext.from_dir(tree) if where == "context" else RootfsView([tree])
    extra = {} if where == "context" else {"from_": "base"}

    def names(*sources: str) -> list[str]:
        out = layer(spec(*sources, dest="/out/", parents=True, **extra), source, base)
        return sorted(n[4:] for n in out if n.startswith("out/") and not out[n].isdir())

    assert names("/test/a/b/./c/d") == ["c/d/e/bay", "c/d/foo"]
    assert names("/test/a/./b/./c") == ["b/c/d/e/bay", "b/c/d/foo"]  # the first '/./' is the pivot
    assert names("/test/a/b/c/d/.") == ["test/a/b/c/d/e/bay", "test/a/b/c/d/foo"]
    assert names("/test/a/./*/c") == ["b/c/d/e/bay", "b/c/d/foo", "b2/c/d/e/bar"]
    assert names("/test/a/b*/./c/**/e") == ["c/d/e/bar", "c/d/e/bay"]  # both b and b2 land in c/
    assert names("/test/a/b/c*/./d/**/baz", "/test/a/b*/./c/**/bar") == ["c/d/e/bar", "d/e/baz", "d/e2/baz"]
    assert names("test/**/bay") == ["test/a/b/c/d/e/bay"]
    out = layer(spec("test/a/b/c/d/foo", dest="/out/", parents=True, **extra), source, base)
    assert out["out/test/a"].mode == 0o700  # the directories on the way keep their metadata
    kept = (33, 44) if where == "stage" else (0, 0)  # COPY --from keeps owners
    assert (out["out/test/a/b"].uid, out["out/test/a/b"].gid) == kept
    missing = "file not found in build context" if where == "context" else "not found in 'base'"
    with pytest.raises(CopyError, match=missing):
        layer(spec("test/a/./nope", dest="/out/", parents=True, **extra), source, base)


def test_exclude_patterns(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("dir", dest="/e/", excludes=("sub", "lnk")), ctx, base)
    assert sorted(n for n in out if n.startswith("e/")) == ["e/a", "e/hard"]
    out = layer(spec("a.tar", "a.t*", dest="/e/", excludes=("*.tgz", "*.tbz")), ctx, base)
    assert sorted(n for n in out if n.startswith("e/")) == ["e/a.tar", "e/a.txz", "e/a.tzst"]
    out = layer(spec("dir/*", dest="/e/", excludes=("hard", "s*")), ctx, base)
    assert sorted(n for n in out if n.startswith("e/")) == ["e/a", "e/lnk"]


def test_exclude_bad_pattern_names_the_line(ctx: BuildContext, base: RootfsView) -> None:
    for sources in (("dir",), ("d*",)):
        with pytest.raises(CopyError, match=re.escape("Dockerfile:7: COPY failed: invalid --exclude: invalid pattern `[`")):
            layer(spec(*sources, dest="/e/", excludes=("[",)), ctx, base)


def test_link_does_not_copy_existing_parent_metadata(ctx: BuildContext, base: RootfsView) -> None:
    plain = layer(spec("f1", dest="/existing/"), ctx, base)
    assert (plain["existing"].uid, plain["existing"].mode) == (1000, 0o755)
    linked = layer(spec("f1", dest="/existing/", link=True), ctx, base)
    assert (linked["existing"].uid, linked["existing"].mode) == (0, 0o755)
    # BuildKit merges a --link copy only without --chmod: with it, the parents are the image's.
    both = layer(spec("f1", dest="/existing/", link=True, chmod="0600"), ctx, base)
    assert (both["existing"].uid, both["existing"].mode) == (1000, 0o755)
    both = layer(spec("f1", dest="/ex2/f", link=True, chmod="u+x"), ctx, base)
    assert both["ex2"].mode == 0o700 and both["ex2/f"].mode == 0o700


# -- sources ----------------------------------------------------------------------------------


def test_owners_become_root_modes_and_mtimes_kept(ctx: BuildContext, base: RootfsView, copy_context: Path) -> None:
    out = layer(spec("f1", "dir", dest="/o/"), ctx, base)
    assert (out["o/f1"].uid, out["o/f1"].gid, out["o/f1"].mode) == (0, 0, 0o600)
    assert out["o/a"].uid == 0
    assert out["o/f1"].mtime == int((copy_context / "f1").stat().st_mtime)


def test_hardlinks_within_one_source_only(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("dir", dest="/h1/"), ctx, base)
    assert out["h1/hard"].islnk() and out["h1/hard"].linkname == "h1/a"
    out = layer(spec("dir/a", "dir/hard", dest="/h2/"), ctx, base)
    assert out["h2/a"].isfile() and out["h2/hard"].isfile()


def test_copy_from_stage_with_whiteouts(tmp_path: Path, base: RootfsView) -> None:
    lower, upper = tmp_path / "l", tmp_path / "u"
    (lower / "app").mkdir(parents=True)
    (lower / "app/keep").write_text("keep\n")
    (lower / "app/gone").write_text("gone\n")
    os.chown(lower / "app/keep", 33, 33)
    upper.mkdir()
    (upper / "app").mkdir()
    fd = os.open(upper / "app", os.O_RDONLY)
    try:
        whiteout.make_overlay_whiteout("gone", fd)
    finally:
        os.close(fd)
    stage = RootfsView([lower, upper])
    out = layer(spec("/app", dest="/srv/", from_="build"), stage, base)
    assert sorted(n for n in out if n.startswith("srv")) == ["srv", "srv/keep"]
    assert out["srv/keep"].uid == 33  # COPY --from keeps owners (without --chown)
    assert out["srv"].uid == 0
    with pytest.raises(CopyError, match="'/app/gone' not found in 'build'"):
        layer(spec("/app/gone", dest="/srv/", from_="build"), stage, base)
    # A stage's paths resolve inside the stage: '..' stays at its root.
    out = layer(spec("../../app/keep", dest="/k", from_="build"), stage, base)
    assert out["k"].data == b"keep\n"


def test_dockerignore_exception_keeps_ignored_dir(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("secret", dest="/s/"), ctx, base)
    assert sorted(n for n in out if n.startswith("s/")) == ["s/keep"]
    out = layer(spec(".", dest="/all/"), ctx, base)
    assert "all/x.log" not in out and "all/secret/k" not in out and "all/secret/keep" in out
    assert out["all/abslink"].issym() and out["all/abslink"].linkname == "/etc/passwd"


def test_file_to_existing_dir_and_workdir(ctx: BuildContext, base: RootfsView) -> None:
    out = layer(spec("f1", dest="/existing"), ctx, base)
    assert "existing/f1" in out
    out = layer(spec("f1", dest=".", workdir="/existing"), ctx, base)
    assert "existing/f1" in out
    out = layer(spec("f1", dest="new", workdir="/w/d"), ctx, base)
    assert out["w/d/new"].isfile() and out["w"].isdir()
    out = layer(spec("f1", dest="", workdir="/existing"), ctx, base)  # `COPY f1 $UNSET`: the WORKDIR
    assert "existing/f1" in out
    with pytest.raises(CopyError, match="more than one source file"):
        layer(spec("f1", "d2", dest="", workdir="/existing"), ctx, base)


# -- escapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dest, landed", [
    ("/evil/x", "proc/self/x"),
    ("/fdlink/x", "proc/self/fd/3/x"),
    ("/up/x", "x"),
    ("/../../x", "x"),
    ("/usr/local/bin/../lib/x", "usr/local/lib/x"),  # cleaned before it is resolved
    ("/evil/../y", "y"),
])
def test_dest_symlink_tricks_stay_in_the_image(
    ctx: BuildContext, base: RootfsView, fresh_base: Path, dest: str, landed: str
) -> None:
    out = layer(spec("f1", dest=dest), ctx, base)
    assert landed in out
    for name in out:
        assert not name.startswith(("/", "../")) and "/../" not in name
    buf = io.BytesIO()
    copy_layer(spec("f1", dest=dest), source=ctx, dest_view=RootfsView([fresh_base]), out=buf)
    buf.seek(0)
    extract_layer(buf, fresh_base)
    assert (fresh_base / landed).read_text() == "hello\n"


@pytest.mark.parametrize("source, message", [
    ("../f1", "forbidden path outside the build context: ../f1"),
    ("dir/../../f1", "forbidden path outside the build context: dir/../../f1"),
    ("abslink", "which is not in the build context (an absolute link is resolved inside the context"),
    ("rellink", "'rellink' is a symlink that points outside the build context"),
    ("x.log", "excluded by .dockerignore: 'x.log' (excluded by .dockerignore line 2: `*.log`)"),
    ("secret/k", "'secret/k' (excluded by .dockerignore line 3: `secret/`)"),
    ("missing", "file not found in build context or excluded by .dockerignore: 'missing'"),
    ("nomatch*", "no source files were specified (nothing matches 'nomatch*')"),
    ("*.log", "no source files were specified (nothing matches '*.log'; 'x.log' excluded by "
              ".dockerignore line 2: `*.log`)"),
])
def test_source_errors(ctx: BuildContext, base: RootfsView, source: str, message: str) -> None:
    with pytest.raises(CopyError) as info:
        layer(spec(source, dest="/x/"), ctx, base)
    assert str(info.value).startswith("Dockerfile:7: COPY failed: ")
    assert message in str(info.value)


def test_wildcard_matching_nothing_beside_other_sources(ctx: BuildContext, base: RootfsView) -> None:
    """docker fails only when no source brings anything; an empty wildcard beside others is skipped."""
    out = layer(spec("nomatch*", "f1", dest="/x/"), ctx, base)
    assert "x/f1" in out
    with pytest.raises(CopyError, match="nothing matches 'nomatch\\*'"):
        layer(spec("nomatch*", "*.none", dest="/x/"), ctx, base)


def test_source_through_symlinked_dir_outside(tmp_path: Path, base: RootfsView) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c/etc").symlink_to("/etc")
    with pytest.raises(CopyError, match="too many levels of symbolic links"):
        layer(spec("etc/passwd", dest="/x"), BuildContext.from_dir(tmp_path / "c"), base)


@pytest.mark.parametrize("source, dest, what", [
    ("f1", "/etc/passwd/x", "/etc/passwd"),
    ("d2", "/etc/group", "/etc/group"),
    ("f1", "/bin/sh/", "/bin/busybox"),
])
def test_dest_through_a_file_is_an_error(
    ctx: BuildContext, base: RootfsView, source: str, dest: str, what: str
) -> None:
    with pytest.raises(CopyError, match=f"cannot copy into '{what}': it is not a directory in the image"):
        layer(spec(source, dest=dest), ctx, base)


def test_multiple_sources_need_a_directory_dest(ctx: BuildContext, base: RootfsView) -> None:
    with pytest.raises(CopyError, match="the destination must be a directory and end with a /"):
        layer(spec("f1", "d2", dest="/m"), ctx, base)
    with pytest.raises(CopyError, match="When using COPY with more than one source file"):
        layer(spec("d*", dest="/m"), ctx, base)
    with pytest.raises(CopyError, match="When using ADD"):
        layer(spec(dest="/m", is_add=True, heredocs=(HeredocSource("a", ""), HeredocSource("b", ""))), ctx, base)


@pytest.mark.parametrize("chown, message", [
    ("nosuch", "no user named 'nosuch' in the image's /etc/passwd"),
    ("app:nosuch", "no group named 'nosuch' in the image's /etc/group"),
    ("a:b:c", "invalid --chown=a:b:c"),
])
def test_chown_errors(ctx: BuildContext, base: RootfsView, chown: str, message: str) -> None:
    with pytest.raises(CopyError, match=message):
        layer(spec("f1", dest="/x", chown=chown), ctx, base)


def test_chown_forms(ctx: BuildContext, base: RootfsView) -> None:
    assert (lambda m: (m.uid, m.gid))(layer(spec("f1", dest="/x", chown="42"), ctx, base)["x"]) == (42, 42)
    assert (lambda m: (m.uid, m.gid))(layer(spec("f1", dest="/x", chown="app:0"), ctx, base)["x"]) == (1000, 0)
    assert (lambda m: (m.uid, m.gid))(layer(spec("f1", dest="/x", chown="7:app"), ctx, base)["x"]) == (7, 1000)


# -- listing and the cache key ----------------------------------------------------------------


def test_listing_is_what_the_layer_holds(ctx: BuildContext, base: RootfsView) -> None:
    s = spec("dir", "f*", dest="/l/")
    listed = [(item.path, f.rel) for item, f in iter_source_files(s, ctx)]
    assert listed == [("dir", "a"), ("dir", "hard"), ("dir", "lnk"), ("dir", "sub"),
                      ("dir", "sub/b"), ("f1", ""), ("f1link", ""), ("fake.tar.gz", "")]


def test_sources_digest_tracks_content_and_mode_not_mtime(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "src").mkdir(parents=True)
    (root / "src/a").write_text("1")
    (root / "x.log").write_text("ignored")
    (root / ".dockerignore").write_text("*.log\n")
    s = spec(".", dest="/app/")

    def digest() -> str:
        return copy_sources_digest(s, BuildContext.from_dir(root))

    first = digest()
    assert digest() == first
    os.utime(root / "src/a", (1, 1))
    assert digest() == first
    (root / "x.log").write_text("changed, but ignored")
    assert digest() == first
    (root / "src/a").write_text("2")
    second = digest()
    assert second != first
    (root / "src/a").chmod(0o600)
    third = digest()
    assert third != second
    os.chown(root / "src/a", 4321, 4321)  # another user's checkout: same result, same key
    assert digest() == third
    calls: list[str] = []

    def cached(f: SourceFile) -> str:
        calls.append(f.rel)
        return "same"

    assert copy_sources_digest(s, BuildContext.from_dir(root), content_hash=cached) != third
    assert "src/a" in calls


def test_sources_digest_keeps_owners_of_copy_from(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/f").write_text("x")
    s = spec("/app", dest="/srv/", from_="build")
    first = copy_sources_digest(s, RootfsView([tmp_path]))
    os.chown(tmp_path / "app/f", 33, 33)
    assert copy_sources_digest(s, RootfsView([tmp_path])) != first
    chowned = spec("/app", dest="/srv/", from_="build", chown="1")
    assert copy_sources_digest(chowned, RootfsView([tmp_path])) == copy_sources_digest(
        chowned, RootfsView([tmp_path])
    )


def test_same_input_same_layer_with_source_date_epoch(ctx: BuildContext, base: RootfsView) -> None:
    s = spec("dir", "f1", dest="/deep/new/", heredocs=(HeredocSource("h", "x"),))
    a, b = io.BytesIO(), io.BytesIO()
    first = copy_layer(s, source=ctx, dest_view=base, out=a, source_date_epoch=1000)
    second = copy_layer(s, source=ctx, dest_view=base, out=b, source_date_epoch=1000)
    assert first.diff_id == second.diff_id and a.getvalue() == b.getvalue()
    a.seek(0)
    with tarfile.open(fileobj=a) as tar:
        assert max(m.mtime for m in tar.getmembers()) <= 1000


def test_source_swapped_for_symlink_after_selection_is_refused(tmp_path: Path, base: RootfsView) -> None:
    root, outside = tmp_path / "c", tmp_path / "outside"
    (root / "d").mkdir(parents=True)
    (root / "d/f").write_text("in context")
    outside.mkdir()
    (outside / "f").write_text("secret outside the context")
    s = spec("d", dest="/x/")
    entries = plan_copy(s, select_sources(s, BuildContext.from_dir(root)), base, now=0)
    (root / "d").rename(root / "d.old")
    (root / "d").symlink_to(outside)
    with pytest.raises(ImageError, match="changed while it was being copied"):
        write_planned(entries, io.BytesIO())


CAPABILITY = b"\x01\x00\x00\x02\x00\x04\x00\x00" + b"\x00" * 12  # cap_net_bind_service+ep


def test_only_file_capabilities_are_copied(tmp_path: Path, base: RootfsView) -> None:
    """As in docker's and BuildKit's layers: a file capability travels (unless the copy chowns the
    file), the host's other xattrs (user.*, trusted.*) never reach the image."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c/f").write_text("x")
    os.setxattr(tmp_path / "c/f", "user.note", b"host metadata")
    os.setxattr(tmp_path / "c/f", "trusted.t", b"host metadata")
    os.setxattr(tmp_path / "c/f", "security.capability", CAPABILITY)
    os.setxattr(tmp_path / "c", "user.dir", b"host metadata")
    for source, s, caps in ((BuildContext.from_dir(tmp_path / "c"), spec("f", ".", dest="/d/"), False),
                            (RootfsView([tmp_path / "c"]), spec("/f", "/", dest="/d/", from_="s"), True)):
        buf = io.BytesIO()
        copy_layer(s, source=source, dest_view=base, out=buf)
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tar:
            xattrs = {m.name: {k for k in m.pax_headers if k.startswith("SCHILY.xattr.")} for m in tar}
        capability = {"SCHILY.xattr.security.capability"} if caps else set()
        assert xattrs == {"d": set(), "d/f": capability}, xattrs


def test_layer_as_overlay_snapshot_keeps_existing_dirs(ctx: BuildContext, copy_base: Path, tmp_path: Path) -> None:
    """Stacked as a snapshot over the base, the copy changes no existing directory's metadata."""
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    buf = io.BytesIO()
    copy_layer(spec("f1", "dir", dest="/existing/deep/"), source=ctx, dest_view=RootfsView([copy_base]), out=buf)
    buf.seek(0)
    extract_layer(buf, snapshot, overlay_whiteouts=True)
    merged = RootfsView([copy_base, snapshot])
    st = merged.lookup("/existing")
    assert st is not None and (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o755)
    deep = merged.lookup("/existing/deep")
    assert deep is not None and (deep.st_uid, deep.st_mode & 0o7777) == (0, 0o755)
    assert merged.read_file("/existing/deep/f1") == b"hello\n"
    assert [rel for rel, _h, _s in merged.walk("/existing/deep")] == ["a", "f1", "hard", "lnk", "sub", "sub/b"]


def test_tar_context_copies_like_the_directory(copy_context: Path, base: RootfsView, tmp_path: Path) -> None:
    data = subprocess.run(
        ["tar", "--numeric-owner", "-C", str(copy_context), "-c", "."], capture_output=True, check=True
    ).stdout
    s = spec(".", dest="/all/")
    from_dir = layer(s, BuildContext.from_dir(copy_context), base)
    with BuildContext.from_tar(io.BytesIO(data), tmp_path) as tar_ctx:
        from_tar = layer(s, tar_ctx, base)

    def shape(out: dict[str, SimpleNamespace]) -> dict[str, tuple[object, ...]]:
        return {n: (m.mode, m.uid, m.gid, m.data, m.linkname) for n, m in out.items()}

    assert shape(from_tar) == shape(from_dir)


def test_non_utf8_names(tmp_path: Path, base: RootfsView) -> None:
    root = tmp_path / "c"
    root.mkdir()
    name = os.fsdecode(b"caf\xe9.txt")
    (root / name).write_text("latin-1 name")
    buf = io.BytesIO()
    copy_layer(spec("caf*", dest="/n/"), source=BuildContext.from_dir(root), dest_view=base, out=buf)
    buf.seek(0)
    target = tmp_path / "out"
    target.mkdir()
    extract_layer(buf, target)
    assert (target / "n" / name).read_text() == "latin-1 name"


def test_many_layers(tmp_path: Path, ctx: BuildContext) -> None:
    lowers = []
    for i in range(150):
        d = tmp_path / f"l{i}"
        (d / "etc").mkdir(parents=True)
        (d / "etc" / f"f{i}").write_text(str(i))
        lowers.append(d)
    (lowers[0] / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nsvc:x:77:77::/:/bin/sh\n")
    (lowers[0] / "etc/group").write_text("svc:x:77:\n")
    view = RootfsView(lowers)
    assert len(list(view.walk("/etc"))) == 152
    out = layer(spec("f1", dest="/etc/", chown="svc"), ctx, view)
    assert (out["etc/f1"].uid, out["etc/f1"].gid) == (77, 77)


def test_unreadable_source_is_a_clear_error(tmp_path: Path, base: RootfsView) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "f").write_text("x")
    s = spec("f", dest="/f")
    entries = plan_copy(s, select_sources(s, BuildContext.from_dir(root)), base, now=0)
    (root / "f").unlink()
    with pytest.raises(FileNotFoundError):
        write_planned(entries, io.BytesIO())

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            raise OSError(28, "No space left on device")

    (root / "f").write_text("x")
    with pytest.raises(CopyError, match="Dockerfile:7: COPY failed: cannot write the layer: No space left on device"):
        copy_layer(s, source=BuildContext.from_dir(root), dest_view=base, out=Full())  # type: ignore[arg-type]


def test_directory_names_with_pattern_characters(tmp_path: Path, base: RootfsView) -> None:
    root = tmp_path / "c"
    (root / "we[ir]d*?\\dir/sub").mkdir(parents=True)
    (root / "we[ir]d*?\\dir/sub/f").write_text("odd")
    (root / "wei").mkdir()
    (root / "wei/other").write_text("not this")
    (root / ".dockerignore").write_text("nothing-matches\n")
    out = layer(spec("we\\[ir\\]d\\*\\?\\\\dir", dest="/o/"), BuildContext.from_dir(root), base)
    assert sorted(n for n in out if n.startswith("o/")) == ["o/sub", "o/sub/f"]
    with pytest.raises(CopyError, match="invalid wildcard in the source 'we\\[\\]': syntax error"):
        layer(spec("we[]", dest="/o/"), BuildContext.from_dir(root), base)
