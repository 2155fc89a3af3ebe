"""SSH agent forwarding for ``RUN --mount=type=ssh`` (``--ssh default|ID[=SOCKET|KEY[,KEY...]]``).

A step never sees the user's agent socket itself: each mount is a fresh
socket, owned and moded as the mount asks (BuildKit's uid/gid/mode), whose
connections are relayed to the agent by a thread of this process, so the
relay ends with the step and nothing of it reaches the layer. Key files are
served by an ``ssh-agent`` started for the build and stopped after it (or by
the next pybuild run, if this one is killed): the keys never enter the container.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.errors import UsageError
from builder.runtime.cleanup import record_helper, temp_dir

DEFAULT_ID = "default"


@dataclass(frozen=True)
class SshSource:
    """One ``--ssh`` flag: an id and an agent socket or key files (none: ``$SSH_AUTH_SOCK``)."""

    id: str
    paths: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SshSource:
        sid, sep, rest = text.partition("=")
        sid = sid.strip()
        paths = tuple(Path(p.strip()).expanduser() for p in rest.split(",") if p.strip())
        if not sid or (sep and not paths):
            raise UsageError(f"invalid --ssh {text!r}: expected default|ID[=SOCKET|KEY[,KEY...]]")
        return cls(sid, paths)

    def resolved(self) -> SshSource:
        """The same source with ``$SSH_AUTH_SOCK`` filled in, checked to exist (as docker checks it)."""
        paths = self.paths
        if not paths:
            agent = os.environ.get("SSH_AUTH_SOCK", "")
            if not agent:
                raise UsageError(f"--ssh {self.id}: SSH_AUTH_SOCK is not set; start an ssh-agent "
                                 f"or name a socket or key files: --ssh {self.id}=PATH")
            paths = (Path(agent),)
        for path in paths:
            try:
                path.stat()
            except OSError as err:
                raise UsageError(f"--ssh {self.id}: cannot use {path}: {err.strerror}") from None
        return SshSource(self.id, paths)

    @property
    def is_agent(self) -> bool:
        return len(self.paths) == 1 and stat.S_ISSOCK(self.paths[0].stat().st_mode)


class SshAgents:
    """The agents of one build by id: given sockets as they are, key files in an ssh-agent of ours.

    Made before any stage runs, so a bad ``--ssh`` fails the build before any step.
    """

    def __init__(self, sources: Mapping[str, SshSource], work_root: Path) -> None:
        self._sockets: dict[str, Path] = {}
        self._agents: list[subprocess.Popen[bytes]] = []
        self._dirs: list[Path] = []
        self._fds: list[int] = []
        try:
            for sid, source in sources.items():
                source = source.resolved()
                self._sockets[sid] = source.paths[0] if source.is_agent else self._serve_keys(source, work_root)
        except BaseException:
            self.close()
            raise

    def socket(self, sid: str = DEFAULT_ID) -> Path | None:
        return self._sockets.get(sid)

    def close(self) -> None:
        for agent in self._agents:
            agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=5)
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        for fd in self._fds:
            os.close(fd)
        for path in self._dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._agents.clear()
        self._fds.clear()
        self._dirs.clear()

    def _serve_keys(self, source: SshSource, work_root: Path) -> Path:
        agent_exe, add_exe = shutil.which("ssh-agent"), shutil.which("ssh-add")
        if not agent_exe or not add_exe:
            raise UsageError(f"--ssh {source.id}: serving key files needs ssh-agent and ssh-add "
                             f"(Debian: openssh-client); or pass an agent's socket: --ssh {source.id}=$SSH_AUTH_SOCK")
        holder = temp_dir(work_root, "ssh-agent")
        self._dirs.append(holder)
        path = holder / "agent.sock"
        # Named through a descriptor of its directory, so a store root of any length fits in sun_path.
        dir_fd = os.open(holder, os.O_PATH | os.O_DIRECTORY)
        self._fds.append(dir_fd)
        short = f"/proc/{os.getpid()}/fd/{dir_fd}/agent.sock"
        agent = subprocess.Popen([agent_exe, "-D", "-a", short], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._agents.append(agent)
        record_helper(holder, agent.pid)  # a killed pybuild's agent is killed by the next pybuild run
        deadline = time.monotonic() + 10
        while not path.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise UsageError(f"--ssh {source.id}: ssh-agent did not start (exit code {agent.poll()})")
            time.sleep(0.01)
        env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        env.update(SSH_AUTH_SOCK=short, SSH_ASKPASS_REQUIRE="never")
        for key in source.paths:
            added = subprocess.run([add_exe, "-q", str(key)], stdin=subprocess.DEVNULL, capture_output=True, env=env)
            if added.returncode != 0:
                raise UsageError(
                    f"--ssh {source.id}: cannot load the key {key}: it needs a passphrase or is not a private "
                    f"key; add it to an ssh-agent and pass --ssh {source.id}=$SSH_AUTH_SOCK"
                )
        return Path(short)


class AgentRelay:
    """A socket at ``path`` whose every connection is relayed to the agent at ``upstream``."""

    def __init__(self, upstream: Path, path: Path, *, uid: int, gid: int, mode: int) -> None:
        self._upstream = upstream
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound through an O_PATH descriptor of its directory: a store root of any length fits in sun_path.
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            self._listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        os.chown(path, uid, gid)
        path.chmod(mode)
        self._listener.listen(16)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="ssh-relay", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "stop")
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "stop":
                        return
                    if key.data == "accept":
                        self._accept(sel, peers)
                        continue
                    conn: socket.socket = key.fileobj  # type: ignore[assignment]  # only sockets are registered
                    try:
                        data = conn.recv(65536)
                        if data:
                            peers[conn].sendall(data)
                            continue
                    except OSError:
                        pass
                    other = peers.pop(conn)
                    peers.pop(other, None)
                    for s in (conn, other):
                        sel.unregister(s)
                        s.close()
        finally:
            for s in peers:
                s.close()
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, peers: dict[socket.socket, socket.socket]) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(True)
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(str(self._upstream))
        except OSError:
            conn.close()  # the agent went away: the client sees its connection closed
            up.close()
            return
        peers[conn], peers[up] = up, conn
        sel.register(conn, selectors.EVENT_READ, "relay")
        sel.register(up, selectors.EVENT_READ, "relay")
