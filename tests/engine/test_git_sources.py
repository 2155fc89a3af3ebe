"""Git sources as BuildKit keys them: ``ADD <git URL>`` by the commit its ref names now (a moved
branch is fetched again, an unmoved one only listed), checkouts kept in the store for ADD and git
build contexts alike, and pruned as build cache."""

from __future__ import annotations

import os
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


# -- whose credentials a git source signs in with -----------------------------------------------


def _user_home(tmp_path: Path, password: str) -> Path:
    """A HOME whose git credential helper and ~/.netrc both hold the private server's password."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f"[credential]\n\thelper = \"!f() {{ echo username=ci; echo password={password}; }}; f\"\n")
    (home / ".netrc").write_text(f"machine 127.0.0.1 login ci password {password}\n")
    (home / ".netrc").chmod(0o600)
    return home


def _holds(path: Path, needles: list[bytes]) -> list[str]:
    """The files under ``path`` (a gzip one read decompressed) holding one of ``needles``."""
    import gzip

    found = []
    for file in path.rglob("*"):
        if not file.is_file() or file.is_symlink():
            continue
        data = file.read_bytes()
        if data[:2] == b"\x1f\x8b":
            try:
                data += gzip.decompress(data)
            except (OSError, EOFError):
                pass
        if any(n in data for n in needles):
            found.append(str(file))
    return found


def test_a_dockerfile_add_never_signs_in_with_the_users_git_credentials(
        builder: Builder, repo: Repo, git_repo: Path, base_archive: Path, tmp_path: Path) -> None:
    """BuildKit's ADD <git> uses no host credentials: a credential helper in ~/.gitconfig, or a
    ~/.netrc, that opens a private repository for the user does not open it for a Dockerfile,
    not even by a commit a git context (which the user typed, and which does use them) fetched."""
    import base64

    from tests.helpers.fileserver import serve_git

    password = f"PW-{uuid.uuid4().hex}"
    (repo.work / "Dockerfile").write_text("FROM busybox:local\nCOPY VERSION /v\n")
    repo.commit("private")
    repo.push()
    commit = subprocess.run([repo.git, "rev-parse", "HEAD"], cwd=repo.work, check=True,
                            capture_output=True, text=True).stdout.strip()
    home = _user_home(tmp_path, password)
    root = tmp_path / "store"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    auth = "Basic " + base64.b64encode(f"ci:{password}".encode()).decode()
    with serve_git(git_repo.parent, auth) as base:
        url = f"{base}/{repo.url.rsplit('/', 1)[1]}"
        user_env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        # The user's own git does get in with them (or this test would prove nothing)...
        for only in (".gitconfig", ".netrc"):
            (home / only).rename(home / f"{only}.off")
            listed = subprocess.run([repo.git, "ls-remote", url, "main"], env={**os.environ, **user_env,
                                    "GIT_TERMINAL_PROMPT": "0"}, capture_output=True, text=True)
            (home / f"{only}.off").rename(home / only)
            assert commit in listed.stdout, listed.stderr
        # ...and so does a git context: the user typed its URL, as with docker's CLI.
        typed = run_pybuild("build", "-q", "-t", "wtf2-git-user:ctx", f"{url}#main", root=root, env=user_env)
        assert typed.returncode == 0, typed.stderr.decode()
        for ref in ("main", commit):  # a branch (listed), a commit (fetched; the context's is not used)
            ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {url}#{ref} /src\n"}, f"user-{ref}")
            added = run_pybuild("build", "--progress", "plain", str(ctx), root=root, env=user_env)
            err = added.stderr.decode()
            assert added.returncode == 1 and "Traceback" not in err, err
            assert "Dockerfile:2" in err and f"cloning {url}" in err, err
            assert "--secret id=GIT_AUTH_TOKEN" in err and "host's git credentials" in err, err
            assert password not in err + added.stdout.decode()
    assert run_pybuild("run", "--rm", "wtf2-git-user:ctx", "cat", "/v", root=root,
                       check=True).stdout == b"private\n"


def test_git_auth_token_secret_opens_a_private_repository_and_stays_out_of_everything(
        builder: Builder, repo: Repo, git_repo: Path, base_archive: Path, tmp_path: Path) -> None:
    """``--secret id=GIT_AUTH_TOKEN,env=VAR`` (or ``GIT_AUTH_TOKEN.<host>``) is sent as BuildKit
    sends it, ``Authorization: basic base64(x-access-token:TOKEN)``, and then is nowhere: not in
    the output, the store, the image, its history or a kept .git/config. A wrong one says so."""
    import base64

    from tests.helpers.fileserver import serve_git

    token = f"TOK-{uuid.uuid4().hex}"
    header = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    repo.commit("with-token")
    repo.push()
    root = tmp_path / "store"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    with serve_git(git_repo.parent, f"basic {header}") as base:
        url = f"{base}/{repo.url.rsplit('/', 1)[1]}"
        host = base.split("://", 1)[1]
        ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD --keep-git-dir=true {url}#main /src\n"
                                             "RUN cat /src/VERSION > /version\n"}, "token")
        outputs = b""
        for sid in ("GIT_AUTH_TOKEN", f"GIT_AUTH_TOKEN.{host}"):
            built = run_pybuild("build", "--progress", "plain", "--no-cache", "--secret", f"id={sid},env=TOK",
                                "-t", "wtf2-git-token:1", str(ctx), root=root, env={"TOK": token})
            assert built.returncode == 0, built.stderr.decode()
            outputs += built.stdout + built.stderr
        wrong = run_pybuild("build", "--progress", "plain", "--no-cache", "--secret", "id=GIT_AUTH_TOKEN,env=TOK",
                            str(ctx), root=root, env={"TOK": "not-" + token})
        assert wrong.returncode == 1 and b"refused the GIT_AUTH_TOKEN" in wrong.stderr, wrong.stderr.decode()
        outputs += wrong.stdout + wrong.stderr
    assert run_pybuild("run", "--rm", "wtf2-git-token:1", "cat", "/version", root=root,
                       check=True).stdout == b"with-token\n"
    history = run_pybuild("history", "--no-trunc", "wtf2-git-token:1", root=root, check=True)
    saved = tmp_path / "saved"
    saved.mkdir()
    run_pybuild("save", "-o", str(saved / "image.tar"), "wtf2-git-token:1", root=root, check=True)
    subprocess.run(["tar", "-xf", str(saved / "image.tar"), "-C", str(saved)], check=True)
    needles = [token.encode(), header.encode()]
    assert not any(n in outputs + history.stdout for n in needles)
    assert _holds(root, needles) == [] and _holds(saved, needles) == []


def test_a_dockerfile_ssh_source_gets_the_agent_of_ssh_default_only(builder: Builder, tmp_path: Path) -> None:
    """An ssh git source of a Dockerfile is fetched without the user's ssh config, keys or agent
    (``$SSH_AUTH_SOCK``): only the agent given with ``--ssh default``, as BuildKit. A git context
    (typed by the user) keeps them. (No sshd here: an ``ssh`` first on PATH records what git ran.)"""
    import socket

    record = tmp_path / "ssh-calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        f"#!/bin/sh\necho \"args=$* agent=$SSH_AUTH_SOCK home=$HOME\" >> {record}\n"
        "echo 'git@127.0.0.1: Permission denied (publickey).' >&2\nexit 255\n")
    (bin_dir / "ssh").chmod(0o755)
    user_agent = tmp_path / "user-agent.sock"
    given_agent = tmp_path / "given-agent.sock"
    sockets = []
    for path in (user_agent, given_agent):
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sockets.append(sock)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SSH_AUTH_SOCK": str(user_agent),
           "GIT_SSH_COMMAND": "ssh -i /root/.ssh/id_user"}
    url = "ssh://git@127.0.0.1:1/private.git"
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {url}#main /src\n"}, "ssh-add")
    try:
        bare = builder.build(ctx, env=env, check=False)
        calls = record.read_text().splitlines()
        record.unlink()
        given = builder.build(ctx, "--ssh", f"default={given_agent}", env=env, check=False)
        given_calls = record.read_text().splitlines()
        record.unlink()
        typed = run_pybuild("build", f"{url}#main", root=builder.root, env=env)
        typed_calls = record.read_text().splitlines()
    finally:
        for sock in sockets:
            sock.close()
    err = bare.stderr.decode()
    assert bare.returncode == 1 and "Traceback" not in err and "Dockerfile:2" in err, err
    assert "cloning ssh://xxxxx@127.0.0.1:1/private.git" in err and "pass --ssh default" in err, err
    for call in calls + given_calls:
        assert "-F /dev/null" in call and "IdentityFile=none" in call and "id_user" not in call, call
        assert "home=/dev/null" in call, call
    assert calls and all("agent= " in c and "IdentityAgent=none" in c for c in calls), calls
    assert given.returncode == 1 and b"refused the keys of --ssh default" in given.stderr, given.stderr
    assert given_calls and all(f"agent={given_agent} " in c and "IdentityAgent" not in c for c in given_calls)
    assert typed.returncode == 1 and typed_calls, typed.stderr
    assert all(f"agent={user_agent} " in c and "id_user" in c for c in typed_calls), typed_calls


def test_a_dockerfile_git_source_still_goes_through_the_users_proxy(builder: Builder) -> None:
    """Of the user's environment a Dockerfile's git source keeps the way out: ``http_proxy``."""
    import http.server
    import threading

    asked: list[str] = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:1/behind-the-proxy.git"
        ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {url}#main /src\n"}, "proxy")
        env = {"http_proxy": f"http://127.0.0.1:{proxy.server_address[1]}", "no_proxy": "", "NO_PROXY": ""}
        failed = builder.build(ctx, env=env, check=False)
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert failed.returncode == 1 and b"Traceback" not in failed.stderr, failed.stderr
    assert any(p.startswith(f"{url}/info/refs") for p in asked), asked
