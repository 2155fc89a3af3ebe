"""Git sources as BuildKit keys them: ``ADD <git URL>`` by the commit its ref names now (a moved
branch is fetched again, an unmoved one only listed), checkouts kept in the store for ADD and git
build contexts alike, and pruned as build cache."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import require_tool, run_pybuild

GIT_ENV = ["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]


class Repo:
    """A repository served by the session's git daemon, whose branch the test moves."""

    def __init__(self, served_dir: Path, daemon: str) -> None:
        self.git = require_tool("git")
        self.name = f"moving-{uuid.uuid4().hex[:8]}.git"
        self.work = served_dir.parent / f"work-{self.name}"
        self.work.mkdir()
        self.url = daemon.rsplit("/", 1)[0] + "/" + self.name
        self._git("init", "-q")
        self.commit("one")
        subprocess.run([self.git, "clone", "-q", "--bare", str(self.work), str(served_dir / self.name)],
                       check=True, capture_output=True)
        self._git("remote", "add", "served", str(served_dir / self.name))

    def _git(self, *args: str) -> None:
        subprocess.run([self.git, *GIT_ENV, *args], cwd=self.work, check=True, capture_output=True)

    def commit(self, text: str) -> None:
        (self.work / "VERSION").write_text(text + "\n")
        self._git("add", ".")
        self._git("commit", "-q", "-m", text)

    def push(self) -> None:
        self._git("push", "-q", "served", "main")


@pytest.fixture
def repo(git_daemon: str, git_repo: Path) -> Repo:
    return Repo(git_repo.parent, git_daemon)


def _git_commands(trace: Path) -> list[str]:
    """The git sub-commands pybuild ran, from GIT_TRACE's log."""
    found = []
    for line in trace.read_text().splitlines() if trace.exists() else []:
        if "trace: built-in: git " in line:
            found.append(line.split("trace: built-in: git ", 1)[1].split()[0].strip("'"))
    return found


def _checkouts(builder: Builder) -> list[Path]:
    root = builder.root / "gitsources"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_add_git_follows_the_branch_and_fetches_only_when_it_moved(builder: Builder, repo: Repo,
                                                                   tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {repo.url}#main /src\n"
                                         "RUN cat /src/VERSION > /version\n"}, "add-git")
    trace = tmp_path / "trace"
    env = {"GIT_TRACE": str(trace)}
    before = len(_checkouts(builder))
    builder.build(ctx, "-t", "git-add:1", env=env)
    assert builder.run("git-add:1", "cat", "/version").stdout == b"one\n"
    assert "fetch" in _git_commands(trace) and len(_checkouts(builder)) == before + 1
    trace.unlink()
    again = builder.build(ctx, "-t", "git-add:1", env=env)
    assert again.stderr.count(b"CACHED") == 2
    assert _git_commands(trace) == ["ls-remote"]  # listed, not fetched
    repo.commit("two")
    repo.push()
    trace.unlink()
    moved = builder.build(ctx, "-t", "git-add:2", env=env)
    assert b"CACHED" not in moved.stderr.split(b"ADD", 1)[1].split(b"RUN", 1)[0], moved.stderr
    assert "fetch" in _git_commands(trace) and len(_checkouts(builder)) == before + 2
    assert builder.run("git-add:2", "cat", "/version").stdout == b"two\n"


def test_a_git_build_context_is_checked_out_once_per_commit(builder: Builder, repo: Repo,
                                                             tmp_path: Path) -> None:
    (repo.work / "Dockerfile").write_text("FROM busybox:local\nCOPY VERSION /v\n")
    repo.commit("with-dockerfile")
    repo.push()
    trace = tmp_path / "trace"
    env = {"GIT_TRACE": str(trace)}
    before = set(_checkouts(builder))
    run_pybuild("build", "-q", "-t", "git-ctx:1", f"{repo.url}#main", root=builder.root, check=True, env=env)
    assert "fetch" in _git_commands(trace)
    trace.unlink()
    run_pybuild("build", "-q", "-t", "git-ctx:1", f"{repo.url}#main", root=builder.root, check=True, env=env)
    assert _git_commands(trace) == ["ls-remote"]
    assert builder.run("git-ctx:1", "cat", "/v").stdout == b"with-dockerfile\n"
    (tree,) = [c / "tree" for c in set(_checkouts(builder)) - before]
    assert not (tree / ".git").exists()  # no keep-git-dir: the context has no .git


def test_prune_keeps_checkouts_as_cache_and_all_removes_them(builder: Builder, repo: Repo,
                                                             tmp_path: Path) -> None:
    root = tmp_path / "store"
    run_pybuild("load", "-i", str(_busybox_archive(builder, tmp_path)), root=root, check=True)
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {repo.url} /src\n"}, "prune-git")
    run_pybuild("build", "-q", str(ctx), root=root, check=True)
    assert len(list((root / "gitsources").iterdir())) == 1
    run_pybuild("prune", "-f", root=root, check=True)
    assert len(list((root / "gitsources").iterdir())) == 1
    run_pybuild("prune", "-a", "-f", root=root, check=True)
    assert not list((root / "gitsources").iterdir())


def _busybox_archive(builder: Builder, tmp_path: Path) -> Path:
    out = tmp_path / "busybox.tar"
    run_pybuild("save", "-o", str(out), "busybox:local", root=builder.root, check=True)
    return out


def test_cache_du_and_cache_prune_count_checkouts(builder: Builder, repo: Repo, tmp_path: Path) -> None:
    import json

    root = tmp_path / "store"
    run_pybuild("load", "-i", str(_busybox_archive(builder, tmp_path)), root=root, check=True)
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {repo.url}#main /src\n"}, "du-git")
    run_pybuild("build", "-q", str(ctx), root=root, check=True)
    du = json.loads(run_pybuild("cache", "du", "--format", "json", root=root, check=True).stdout)
    assert du["git_checkouts"] == 1 and du["git_checkout_bytes"] > 0
    pruned = run_pybuild("cache", "prune", "-f", root=root, check=True).stdout.decode()
    assert "1 git checkout(s)" in pruned and not list((root / "gitsources").iterdir())


def test_check_and_call_read_a_git_context(builder: Builder, repo: Repo) -> None:
    """--call and --check on a git URL read the Dockerfile there, as a build would."""
    (repo.work / "Dockerfile").write_text("# base is where it starts\nFROM busybox:local AS base\nFROM base\n")
    repo.commit("dockerfile")
    repo.push()
    targets = run_pybuild("build", "--call", "targets", f"{repo.url}#main", root=builder.root, check=True)
    assert targets.stdout == b"TARGET    DESCRIPTION\nbase      is where it starts\n(default) \n"
    checked = run_pybuild("build", "--check", f"{repo.url}#main", root=builder.root, check=True)
    assert b"Check complete, no warnings found." in checked.stdout


def test_a_token_in_a_git_url_stays_out_of_layers_store_and_messages(builder: Builder, repo: Repo,
                                                                     git_repo: Path, tmp_path: Path) -> None:
    """As BuildKit redacts it (``remote set-url origin xxxxx:xxxxx@…``): the token of
    ``https://user:token@host/repo.git`` opens the repository, and then is nowhere, not in a
    keep-git-dir ``.git/config``, the store's checkout, or an error."""
    import base64
    import gzip
    import tarfile

    from tests.helpers.fileserver import serve_git

    token = f"TOKEN-{uuid.uuid4().hex}"
    (repo.work / "Dockerfile").write_text("FROM busybox:local\nCOPY . /ctx\n")
    repo.commit("token-dockerfile")
    repo.push()
    served = repo.url.rsplit("/", 1)[1]
    auth = "Basic " + base64.b64encode(f"ci:{token}".encode()).decode()
    with serve_git(git_repo.parent, auth) as base:  # where the Repo's bare clone is served from
        url = f"{base.replace('://', f'://ci:{token}@')}/{served}"
        ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD --keep-git-dir=true {url}#main /add\n"},
                              "git-token")
        added = builder.build(ctx, "--no-cache", "-t", "git-token:add", check=False)
        from_context = run_pybuild("build", "--no-cache", "--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1",
                                   "-t", "git-token:ctx", f"{url}#main", root=builder.root, check=False)
        missing = run_pybuild("build", f"{base.replace('://', f'://ci:{token}@')}/nothing-here.git#main",
                              root=builder.root, check=False)
    # (The ADD step's own line quotes the Dockerfile, as BuildKit's does: its author wrote the token.)
    assert added.returncode == 0 and from_context.returncode == 0, added.stderr + from_context.stderr
    assert token.encode() not in from_context.stdout + from_context.stderr
    assert missing.returncode == 1 and b"Traceback" not in missing.stderr
    assert b"xxxxx:xxxxx@127.0.0.1" in missing.stderr and token.encode() not in missing.stderr
    assert builder.run("git-token:add", "cat", "/add/.git/config").stdout.count(b"//xxxxx:xxxxx@127.0.0.1") == 1
    assert b"//xxxxx:xxxxx@" in builder.run("git-token:ctx", "cat", "/ctx/.git/config").stdout
    for tag in ("git-token:add", "git-token:ctx"):
        saved = tmp_path / "saved.tar"
        run_pybuild("save", "-o", str(saved), tag, root=builder.root, check=True)
        with tarfile.open(saved) as tf:
            for member in tf:
                f = tf.extractfile(member) if member.isfile() else None
                data = f.read() if f is not None else b""
                assert token.encode() not in (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    for checkout in _checkouts(builder):
        for config in checkout.rglob("config"):
            assert not config.is_file() or token not in config.read_text(errors="replace")


def test_a_git_contexts_dockerfile_is_found_inside_the_repository(builder: Builder, repo: Repo,
                                                                   tmp_path: Path) -> None:
    """A repository's ``Dockerfile -> /some/host/file`` link is an error: the host file is never
    read (its first line was quoted in the parse error). A link inside the repository works."""
    secret = tmp_path / "host-file"
    secret.write_text(f"HOST-SECRET-{uuid.uuid4().hex} line\n")
    (repo.work / "Dockerfile").symlink_to(secret)
    (repo.work / "real").mkdir()
    (repo.work / "real" / "Dockerfile").write_text("FROM busybox:local\nCOPY VERSION /v\n")
    (repo.work / "inside.Dockerfile").symlink_to("real/Dockerfile")
    repo.commit("symlinked-dockerfile")
    repo.push()
    for args in ((), ("--check",), ("--call", "targets")):
        p = run_pybuild("build", *args, f"{repo.url}#main", root=builder.root, check=False)
        assert p.returncode == 1 and b"Traceback" not in p.stderr, p.stderr.decode()
        assert b"HOST-SECRET" not in p.stdout + p.stderr
        assert b"'Dockerfile' in the build context" in p.stderr and b"leads outside the context" in p.stderr
    run_pybuild("build", "-q", "-f", "inside.Dockerfile", "-t", "git-inside:1", f"{repo.url}#main",
                root=builder.root, check=True)
    assert builder.run("git-inside:1", "cat", "/v").stdout == b"symlinked-dockerfile\n"
