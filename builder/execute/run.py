"""RUN: one process in an isolated build container; its overlay upper dir becomes the layer.

Also the ``RUN --mount`` types: ``cache`` (directories kept in the store
between builds, shared/private/locked), ``bind`` (from the context, a stage or
an image; read-only, or writable with writes discarded), ``tmpfs`` and
``secret`` (a 0400 file that exists only while the step runs: it never
reaches the layer, the history, the config or the log) and ``ssh`` (a relay
to the agent of ``--ssh``, see :mod:`builder.execute.ssh`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shlex
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.frontend.instructions import CacheSharing, MountType, NetworkMode, Run
from builder.frontend.instructions import Mount as MountSpec
from builder.runtime import ContainerSpec, Mount, Network, ProcessSpec
from builder.runtime.cleanup import temp_dir

if TYPE_CHECKING:
    from builder.execute.ssh import SshAgents

SECRETS_DIR = "/run/secrets"
LOCK_POLL_SECONDS = 0.1  # how soon a step waiting for a locked cache mount sees a cancel
SSH_AGENT_TARGET = "/run/buildkit/ssh_agent.{}"  # BuildKit's default, numbered among the step's ssh mounts


@dataclass(frozen=True)
class Secret:
    """``--secret id=ID,src=FILE`` or ``id=ID,env=VAR``: the value is read only when a step mounts it."""

    id: str
    src: Path | None = None
    env: str | None = None

    @classmethod
    def parse(cls, text: str) -> Secret:
        from builder.errors import UsageError

        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise UsageError(f"invalid --secret {text!r}: expected id=ID,src=FILE or id=ID,env=VAR")
            name = key.strip().lower()
            if name not in ("id", "src", "source", "env", "type"):
                raise UsageError(f"invalid --secret {text!r}: unexpected key {name!r} "
                                 "(id, src or source, env, type=file|env)")
            fields[name] = value.strip()
        sid = fields.get("id")
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        if not sid:
            raise UsageError(f"invalid --secret {text!r}: missing id=")
        kind = fields.get("type")
        if kind not in (None, "file", "env"):
            raise UsageError(f"invalid --secret {text!r}: type must be file or env")
        if kind == "env":  # as buildx: the variable is env=, else src=, else the id
            env, src = env or src or sid, None
        elif kind == "file":
            src, env = src or sid, None
        if src is None and env is None:
            if sid in os.environ:
                env = sid
            else:
                src = sid
        return cls(sid, Path(src).expanduser() if src else None, env)

    def value(self) -> bytes:
        from builder.errors import UsageError

        if self.env is not None:
            if self.env not in os.environ:
                raise UsageError(f"secret {self.id}: environment variable {self.env} is not set")
            return os.environ[self.env].encode()
        assert self.src is not None
        try:
            return self.src.read_bytes()
        except OSError as err:
            raise UsageError(f"secret {self.id}: cannot read {self.src}: {err.strerror}") from None


@dataclass
class RunResources:
    """What RUN mounts can draw on; the stage runner fills it in per step."""

    store_root: Path
    work_root: Path
    context_root: Path | None
    secrets: Mapping[str, Secret]
    lowers_of: Callable[[str], Sequence[Path]]  # a stage name/index or image -> its lower dirs
    ssh: SshAgents | None = None  # --ssh
    cache_namespace: str = ""  # BUILDKIT_CACHE_MOUNT_NS
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    cancel: threading.Event | None = None  # set on Ctrl-C or a failed stage: stop waiting for a lock
    workdir: str = "/"  # the step's WORKDIR: where relative cache, bind and tmpfs targets go
    # With .dockerignore rules: the files below a context path a bind mount may show, as
    # (path below it, host file, stat, link target); None when nothing is ignored.
    context_files: Callable[[str], list[tuple[str, Path, os.stat_result, str]]] | None = None


def cache_mount_id(spec: MountSpec, target: str, namespace: str = "") -> str:
    """A cache mount's id: its id= or its target, under BUILDKIT_CACHE_MOUNT_NS when that is set."""
    cache_id = spec.id or (target if target.startswith("/") else "/" + target)
    return f"{namespace}/{cache_id}" if namespace else cache_id


def shell_command(ins: Run, shell: Sequence[str]) -> tuple[list[str], list[tuple[str, bytes]]]:
    """The argv a RUN executes, and files (heredocs with a shebang) to provide at /dev/pipes.

    BuildKit's rules: a lone heredoc runs as the shell's script (or, with a
    ``#!`` line, as an executable file); a heredoc inside a longer command is
    put back into the command text for the shell to read.
    """
    if not ins.files:
        return ([*shell, ins.command[0]] if ins.prepend_shell else list(ins.command)), []
    first = ins.files[0]
    text = ins.command[0].strip() if ins.command else ""
    data = _chomp(first.data) if first.chomp else first.data
    if len(ins.files) == 1 and text.lstrip("0123456789").startswith("<<") and " " not in text:
        if data.startswith("#!"):
            return [f"/dev/pipes/{first.name}"], [(first.name, data.encode())]
        return [*shell, data], []
    full = ins.command[0]
    for f in ins.files:
        full += "\n" + (_chomp(f.data) if f.chomp else f.data) + f.name
    return [*shell, full], []


def _chomp(text: str) -> str:
    return "".join(line.lstrip("\t") for line in text.splitlines(keepends=True))


def history_text(ins: Run, shell: Sequence[str], args: Mapping[str, str | None]) -> str:
    """docker's ``created_by`` for a RUN: ``|N K=V ... /bin/sh -c cmd``."""
    if ins.prepend_shell:
        body = " ".join([*shell, ins.command[0] if ins.command else ""])
    else:
        body = " ".join(ins.command)
    valued = sorted((k, v) for k, v in args.items() if v is not None)
    if valued:
        return f"|{len(valued)} " + " ".join(f"{k}={v}" for k, v in valued) + " " + body
    return body


def network_for(ins: Run, default: str) -> Network:
    mode = ins.network.value if ins.network is not None else "default"
    if mode == NetworkMode.DEFAULT.value:
        mode = default if default != "default" else "host"
    return Network.NONE if mode == "none" else Network.HOST


@contextlib.contextmanager
def prepared_mounts(ins: Run, res: RunResources, env: dict[str, str],
                    pipes: Sequence[tuple[str, bytes]]) -> Iterator[list[Mount]]:
    """The runtime mounts for a RUN's ``--mount`` flags; everything is undone on exit."""
    mounts: list[Mount] = []
    with contextlib.ExitStack() as stack:
        if pipes:
            pipe_dir = temp_dir(res.work_root, "pipes")
            stack.callback(shutil.rmtree, pipe_dir, True)
            for name, data in pipes:
                path = pipe_dir / name
                path.write_bytes(data)
                path.chmod(0o755)
            mounts.append(Mount.bind(pipe_dir, "/dev/pipes", readonly=True))
        ssh_targets: list[str] = []
        for spec in ins.mounts:
            if spec.type is MountType.SSH:
                target = _target(ins, spec, SSH_AGENT_TARGET.format(len(ssh_targets)))
                ssh_targets.append(target)
                if (mount := _ssh_mount(ins, spec, target, res, stack)) is not None:
                    mounts.append(mount)
            elif (mount := _one_mount(ins, spec, res, env, stack)) is not None:
                mounts.append(mount)
        if ssh_targets:
            env.setdefault("SSH_AUTH_SOCK", ssh_targets[0])  # BuildKit: the first ssh mount's socket
        yield mounts


def _target(ins: Run, spec: MountSpec, default: str | None = None, workdir: str = "/") -> str:
    """Where the mount goes: a relative target= is under the WORKDIR for cache, bind and tmpfs
    mounts (BuildKit's dockerfile2llb), under / for secrets and ssh; ``/`` itself is refused."""
    import posixpath

    target = spec.target or default
    if not target:
        raise ins.error(f"RUN --mount=type={spec.type.value} needs target=")
    path = posixpath.normpath(posixpath.join("/", workdir, target))
    if path == "/":
        raise ins.error(f'invalid mount target "{target}"')
    return "/" + path.lstrip("/")


def _one_mount(ins: Run, spec: MountSpec, res: RunResources, env: dict[str, str],
               stack: contextlib.ExitStack) -> Mount | None:
    if spec.type is MountType.TMPFS:
        return Mount.tmpfs(_target(ins, spec, workdir=res.workdir), size=spec.size)
    if spec.type is MountType.SECRET:
        return _secret_mount(ins, spec, res, env, stack)
    if spec.type is MountType.CACHE:
        return _cache_mount(ins, spec, res, stack)
    return _bind_mount(ins, spec, res, stack)


def _ssh_mount(ins: Run, spec: MountSpec, target: str, res: RunResources,
               stack: contextlib.ExitStack) -> Mount | None:
    from builder.execute.ssh import DEFAULT_ID, AgentRelay

    sid = spec.id or DEFAULT_ID
    upstream = res.ssh.socket(sid) if res.ssh is not None else None
    if upstream is None:
        if spec.required:
            raise ins.error(f"RUN --mount=type=ssh: no SSH agent or key {sid!r} was given (use --ssh {sid})")
        return None  # BuildKit: an optional agent that is absent is not mounted
    holder = temp_dir(res.work_root, "ssh")
    stack.callback(shutil.rmtree, holder, True)
    relay = AgentRelay(upstream, holder / "agent.sock", uid=spec.uid or 0, gid=spec.gid or 0,
                       mode=spec.mode if spec.mode is not None else 0o600)
    stack.callback(relay.close)
    return Mount.bind(holder / "agent.sock", target)


def _secret_mount(ins: Run, spec: MountSpec, res: RunResources, env: dict[str, str],
                  stack: contextlib.ExitStack) -> Mount | None:
    """None where BuildKit mounts no file: an optional secret not given, or one only for ``env=``."""
    sid = spec.id or (Path(spec.target).name if spec.target else None)
    if not sid:
        raise ins.error("RUN --mount=type=secret needs id= or target=")
    secret = res.secrets.get(sid)
    if secret is None:
        if spec.required:
            raise ins.error(f"secret {sid} is required but was not given (use --secret id={sid},src=FILE)")
        return None
    value = secret.value()
    if spec.env:
        env[spec.env] = value.decode(errors="replace")
        if not spec.target:
            return None
    holder = temp_dir(res.work_root, "secret")
    stack.callback(shutil.rmtree, holder, True)
    path = holder / "value"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)
    os.chown(path, spec.uid or 0, spec.gid or 0)
    path.chmod(spec.mode if spec.mode is not None else 0o400)
    return Mount.bind(path, _target(ins, spec, f"{SECRETS_DIR}/{sid}"), readonly=True)


def _cache_mount(ins: Run, spec: MountSpec, res: RunResources, stack: contextlib.ExitStack) -> Mount:
    target = _target(ins, spec, workdir=res.workdir)
    cache_id = cache_mount_id(spec, spec.target or "", res.cache_namespace)  # the target as written
    root = res.store_root / "cachemounts"
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(cache_id.encode()).hexdigest()[:32]
    path = root / key
    sharing = spec.sharing or CacheSharing.SHARED
    lock_path = root / f"{key}.lock"
    if sharing is not CacheSharing.SHARED:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        stack.callback(os.close, fd)
        if sharing is CacheSharing.LOCKED:
            _lock_unless_cancelled(fd, res.cancel)
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Another step has this cache: a private mount gets a new one, made as a new
                # cache is (uid, gid, mode, from=), thrown away after the step.
                scratch = temp_dir(res.work_root, "cache-private")
                stack.callback(shutil.rmtree, scratch, True)
                _new_cache(scratch / "cache", ins, spec, res, stack)
                return Mount.bind(scratch / "cache", target, readonly=spec.readonly)
    if not path.exists():
        # unique: two stages of one build may make the same cache at once (the first rename wins)
        fresh = root / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.new"
        _new_cache(fresh, ins, spec, res, stack)
        (root / f"{key}.id").write_text(cache_id)
        try:
            os.rename(fresh, path)
        except OSError:
            shutil.rmtree(fresh, ignore_errors=True)
    os.utime(path)  # last use, for prune
    return Mount.bind(path, target, readonly=spec.readonly)


def _new_cache(path: Path, ins: Run, spec: MountSpec, res: RunResources, stack: contextlib.ExitStack) -> None:
    """A new cache mount's directory at ``path``: empty with ``uid``/``gid``/``mode`` (0:0 0755 by
    default), or, with ``from=``, a copy of ``source`` there with its files' owners, modes and
    times, as BuildKit's snapshot of it (``uid``/``gid``/``mode``, when given, set its root)."""
    if spec.from_:
        view = _merged_view(res.lowers_of(spec.from_), res, stack)
        seed = _inside(view, (spec.source or "/").lstrip("/"), ins)
        if not seed.is_dir():
            raise ins.error(f"RUN --mount=type=cache,from={spec.from_}: {spec.source or '/'} is not a directory")
        _copy_tree(seed, path)
        if spec.uid is None and spec.gid is None and spec.mode is None:
            return
    else:
        path.mkdir()
    os.chown(path, spec.uid or 0, spec.gid or 0)
    path.chmod(spec.mode if spec.mode is not None else 0o755)


def _copy_tree(source: Path, dest: Path) -> None:
    """``shutil.copytree`` with the owners too (it keeps modes, times and xattrs only)."""
    shutil.copytree(source, dest, symlinks=True)
    for top, dirs, files in os.walk(source):
        rel = os.path.relpath(top, source)
        for name in (".", *dirs, *files) if rel == "." else (*dirs, *files):
            src = os.path.normpath(os.path.join(top, name))
            dst = os.path.normpath(os.path.join(dest, rel, name))
            _keep_metadata(dst, os.lstat(src))


def _lock_unless_cancelled(fd: int, cancel: threading.Event | None) -> None:
    """``sharing=locked``: wait for the cache's lock, which another step or build may hold for
    long, but give up when the build is cancelled (a blocked flock would let no Ctrl-C through)."""
    from builder.scheduler import Cancelled

    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if cancel is None:
            time.sleep(LOCK_POLL_SECONDS)
        elif cancel.wait(LOCK_POLL_SECONDS):
            raise Cancelled("build cancelled")


def _bind_mount(ins: Run, spec: MountSpec, res: RunResources, stack: contextlib.ExitStack) -> Mount:
    target = _target(ins, spec, workdir=res.workdir)
    source = (spec.source or "/").lstrip("/")
    if spec.from_:
        lowers = res.lowers_of(spec.from_)
        root = _merged_view(lowers, res, stack)
    else:
        if res.context_root is None:
            raise ins.error("RUN --mount=type=bind without from= needs a build context")
        root = res.context_root
    host = _inside(root, source, ins)
    if not spec.from_ and res.context_files is not None:
        # .dockerignore hides files from the step too, as BuildKit's context snapshot does:
        # the mount shows a tree of exactly the files its cache key counted.
        host = _filtered_view(host, res.context_files(spec.source or "."), res, stack)
    if not spec.readonly:
        host = _writable_view(host, res, stack)
    return Mount.bind(host, target, readonly=spec.readonly)


def _writable_view(host: Path, res: RunResources, stack: contextlib.ExitStack) -> Path:
    """A writable bind's source: the step may write, but nothing it writes is kept. A directory
    gets an overlay with a scratch upper dir (no copy of a big context, as BuildKit's snapshot
    of the mount); a file, or a directory where overlay refuses its file system, a copy."""
    from builder.errors import ContainerError
    from builder.runtime.overlay import make_links, mount_overlay, unmount

    scratch = temp_dir(res.work_root, "bind-rw")
    stack.callback(shutil.rmtree, scratch, True)
    dest = scratch / "data"
    if not host.is_dir():
        shutil.copy2(host, dest, follow_symlinks=False)
        return dest
    upper, work = scratch / "upper", scratch / "work"
    for directory in (upper, work, dest):
        directory.mkdir()
    st = host.stat()  # the mount's root shows the upper dir's owner and mode: make them the source's
    os.chown(upper, st.st_uid, st.st_gid)
    upper.chmod(stat.S_IMODE(st.st_mode))
    try:
        mount_overlay(dest, link_dir=scratch / "l", lowers=make_links(scratch / "l", [host]),
                      upperdir=upper, workdir=work)
    except ContainerError:
        dest.rmdir()
        _copy_tree(host, dest)
        return dest
    stack.callback(unmount, dest)
    return dest


def _filtered_view(host: Path, files: list[tuple[str, Path, os.stat_result, str]], res: RunResources,
                   stack: contextlib.ExitStack) -> Path:
    """``host`` showing only ``files``: a read-only overlay of it under a layer of whiteouts over
    what .dockerignore hides. Nothing of the context is linked or touched, so its ctimes, which
    the stat cache trusts, stay as they are (hard links change them, and every later build
    read each file again). Where overlay or mknod is refused, a tree of hard links."""
    from builder.errors import ContainerError
    from builder.runtime.overlay import make_links, mount_overlay, unmount

    if not host.is_dir():
        return host
    kept = {rel: st for rel, _, st, _ in files}
    needed = {"/".join(parts[:i]) for rel in kept for parts in [rel.split("/")] for i in range(1, len(parts))}
    scratch = temp_dir(res.work_root, "bind-ctx")
    stack.callback(shutil.rmtree, scratch, True)
    hide, dest = scratch / "hide", scratch / "data"
    hide.mkdir()
    dest.mkdir()
    made: set[str] = set()

    def parent_of(rel: str) -> Path:
        """``rel``'s directory in the whiteout layer, with the context's owner, mode and times
        (overlay shows a merged directory's from its top-most layer)."""
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                (hide / sub).mkdir()
                _keep_metadata(hide / sub, os.lstat(host / sub))
                made.add(sub)
        return hide / "/".join(parts) if parts else hide

    def walk(rel_dir: str) -> None:
        with os.scandir(host / rel_dir if rel_dir else host) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                st = kept.get(rel)
                shown = st is not None and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
                                            or stat.S_ISLNK(st.st_mode))
                if shown or rel in needed:
                    if entry.is_dir(follow_symlinks=False):
                        walk(rel)
                    continue
                os.mknod(parent_of(rel) / entry.name, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    try:
        walk("")
        _keep_metadata(hide, os.stat(host))
        mount_overlay(dest, link_dir=scratch / "l", lowers=make_links(scratch / "l", [host, hide]))
    except (OSError, ContainerError):
        return _filtered_tree(host, files, res, stack)
    stack.callback(unmount, dest)
    return dest


def _filtered_tree(host: Path, files: list[tuple[str, Path, os.stat_result, str]], res: RunResources,
                   stack: contextlib.ExitStack) -> Path:
    """A copy of ``host`` holding only ``files`` (hard links where the file system allows)."""
    if not host.is_dir():
        return host
    tree = temp_dir(res.work_root, "bind-ctx")
    stack.callback(shutil.rmtree, tree, True)
    top = os.stat(host)
    for rel, source, st, link in [("", host, top, ""), *files]:
        dest = tree / "data" / rel if rel else tree / "data"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISDIR(st.st_mode):
            dest.mkdir(exist_ok=True)
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(link, dest)
        elif stat.S_ISREG(st.st_mode):
            try:
                os.link(source, dest, follow_symlinks=False)  # the same inode: nothing to set
            except OSError:
                shutil.copy2(source, dest, follow_symlinks=False)
                os.chown(dest, st.st_uid, st.st_gid)
            continue
        else:
            continue  # devices, fifos, sockets: not shown
        _keep_metadata(dest, st)
    return tree / "data"


def _keep_metadata(path: Path | str, st: os.stat_result) -> None:
    """``path`` takes the owner, mode and times of ``st``; the mode after the owner, whose change
    clears set-id bits."""
    os.lchown(path, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _inside(root: Path, relative: str, ins: Run) -> Path:
    """``root/relative`` with symlinks resolved inside ``root``; refused if it leaves it."""
    root_real = Path(os.path.realpath(root))
    candidate = Path(os.path.realpath(root_real / relative))
    if candidate != root_real and root_real not in candidate.parents:
        raise ins.error(f"RUN --mount source {relative!r} is outside of its root")
    if not os.path.lexists(candidate):
        raise ins.error(f"RUN --mount source {relative!r} not found")
    return candidate


def _merged_view(lowers: Sequence[Path], res: RunResources, stack: contextlib.ExitStack) -> Path:
    from builder.runtime.overlay import make_links, mount_overlay, unmount

    if not lowers:
        empty = temp_dir(res.work_root, "empty")
        stack.callback(shutil.rmtree, empty, True)
        return empty
    base = temp_dir(res.work_root, "view")
    stack.callback(shutil.rmtree, base, True)
    links = base / "l"
    target = base / "merged"
    target.mkdir()
    names = make_links(links, lowers)
    mount_overlay(target, link_dir=links, lowers=names)
    stack.callback(unmount, target)
    return target


def container_spec(*, lowers: Sequence[Path], upper: Path, argv: Sequence[str], env: Mapping[str, str],
                   cwd: str, user: str, mounts: Sequence[Mount], network: Network,
                   hostname: str = "buildkitsandbox", settings: Mapping[str, object] | None = None) -> ContainerSpec:
    """``settings``: further ContainerSpec fields from the command line (extra hosts, shm size, ulimits)."""
    return ContainerSpec(
        lowerdirs=list(lowers), upperdir=upper,
        process=ProcessSpec(args=tuple(argv), env=tuple(f"{k}={v}" for k, v in env.items()),
                            cwd=clean_cwd(cwd), user=user),
        mounts=tuple(mounts), network=network, hostname=hostname,
        **(settings or {}),  # type: ignore[arg-type]  # ContainerSpec fields of several types
    )


def clean_cwd(path: str | None) -> str:
    """The working directory a container gets: cleaned, as docker's SetupWorkingDirectory does
    (the config keeps ``WORKDIR /a/x/..`` as written; the process starts in ``/a``)."""
    import posixpath

    cleaned = posixpath.normpath(path or "/")
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def failure_message(label: str, location: str, argv_text: str, code: int, tail: Sequence[str],
                    memory: int = 0) -> str:
    """``memory``: the ``--memory`` limit, named when the step was SIGKILLed (the OOM killer's way)."""
    lines = [line for line in tail if line.strip()][-10:]
    text = f"{location}: {label} failed: `{argv_text}` exited with code {code}"
    if code == 137 and memory:
        text += f" (killed: the OOM killer ends a step that needs more than --memory {memory >> 20}MiB)"
    if lines:
        text += "\n" + "\n".join(f"  | {line}" for line in lines)
    return text


def solve_message(argv: Sequence[str], code: int, memory: int = 0) -> str:
    """BuildKit's words for a RUN that failed: ``process "/bin/sh -c exit 3" did not complete
    successfully: exit code: 3`` (the argv joined with spaces, as BuildKit joins it)."""
    text = f'process "{" ".join(argv)}" did not complete successfully: exit code: {code}'
    if code == 137 and memory:
        text += f" (killed: the OOM killer ends a step that needs more than --memory {memory >> 20}MiB)"
    return text


def quote_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv) if len(argv) != 3 or argv[1] != "-c" else argv[2]
