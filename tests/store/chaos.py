"""Chaos run: pybuild commands killed at random moments (SIGKILL, SIGINT, SIGTERM, SIGHUP) on one
store, and several commands at once on it; after each round the store must be usable.

Not collected by pytest (a long run): ``python3 -m tests.store.chaos --iterations 200``.
Each failure found here has a deterministic regression test beside it in tests/store,
tests/engine or tests/cache.

After every round: ``store check`` is clean, a rebuild of the Dockerfile gives the image ID of an
undisturbed build, no mount and no runtime container is left under the store, no temp file is
left after the next command's sweep, the tags are those expected. A command stopped by a signal it
can catch (not SIGKILL) leaves nothing at all, before any other command runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.tools import REPO, free_port, make_busybox_rootfs, require_tool
from tests.store.imagegen import Files, image_of, noise, write_archive

EPOCH = "1700000000"
DOCKERFILE = """\
FROM busybox:local AS gen
RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/hits; mkdir /out && \
for i in $(seq 1 300); do echo $i > /out/f$i; done; head -c 3000000 /dev/zero > /out/big'
FROM busybox:local
COPY data /data
ADD arch.tar /arch/
COPY --from=gen /out /out
RUN cat /data/a /arch/t1 > /joined && ls /out | wc -l > /count
"""
SIGNALS = (signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGTERM, signal.SIGHUP)
INTERNAL = ("Traceback", "internal error", "database is locked")


def startup_interrupt(err: str) -> bool:
    """A Ctrl-C while the interpreter still starts (site.py's imports): Python's traceback, no
    pybuild code ran yet, nothing pybuild can catch."""
    return err.rstrip().endswith("KeyboardInterrupt") and str(REPO) not in err and "builder" not in err


@dataclass
class Chaos:
    work: Path
    registry: str
    base: Path
    ctx: Path
    reference: str = ""
    rng: random.Random = field(default_factory=random.Random)
    failures: list[str] = field(default_factory=list)
    rounds: int = 0

    @property
    def root(self) -> Path:
        return self.work / "root"

    def env(self, root: Path | None = None) -> dict[str, str]:
        return {**os.environ, "PYBUILD_ROOT": str(root or self.root), "SOURCE_DATE_EPOCH": EPOCH}

    def pb(self, *args: str, root: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "builder", *args], cwd=REPO, env=self.env(root),
                              capture_output=True, text=True, timeout=timeout)

    def start(self, args: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "builder", *args], cwd=REPO, env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def build_args(self, *extra: str) -> list[str]:
        return ["build", "-q", *extra, str(self.ctx)]

    def ops(self) -> dict[str, list[str]]:
        reg = self.registry
        return {
            "build": self.build_args("-t", "app:1"),
            "build-nocache": self.build_args("--no-cache", "-t", "app:2"),
            "cache-to": self.build_args("--no-cache", "--cache-to", f"type=local,dest={self.work / 'cachedir'},mode=max"),
            "cache-from": self.build_args("--cache-from", f"type=local,src={self.work / 'cachedir'}", "-t", "app:3"),
            "pull": ["pull", f"{reg}/chaos/app:1"],
            "push": ["push", f"{reg}/chaos/pushed:1"],
            "save": ["save", "-o", str(self.work / "saved.tar"), "app:1"],
            "load": ["load", "-i", str(self.work / "app.tar")],
            "prune": ["prune", "-f"],
            "prune-a": ["prune", "-a", "-f"],
            "cache-prune": ["cache", "prune", "-f"],
            "rmi": ["rmi", "app:2"],
            "pull-big": ["pull", f"{reg}/chaos/big:1"],
            "load-big": ["load", "-i", str(self.work / "big.tar")],
            "tag": ["tag", "app:1", "other:1"],
            "run": ["run", "--rm", "app:1", "sh", "-c", "cat /count; sleep 1"],
            "repair": ["store", "check", "--repair"],
        }

    # -- setup -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The base in the store, the registry holding the app, archives to load."""
        reg = self.registry
        out = self.pb("load", "-i", str(self.base))
        assert out.returncode == 0, out.stderr
        ref = self.pb(*self.build_args(), root=self.work / "refroot")
        if ref.returncode:  # the reference store needs the base too
            assert self.pb("load", "-i", str(self.base), root=self.work / "refroot").returncode == 0
            ref = self.pb(*self.build_args(), root=self.work / "refroot")
        assert ref.returncode == 0, ref.stderr
        self.reference = ref.stdout.strip()
        self.ensure()
        layers: list[Files] = [{f"l{i}/blob": noise(f"big{i}", 3 << 20)} for i in range(5)]
        layers.append({f"many/f{j}": noise(f"small{j}", 512) for j in range(1500)})
        write_archive(self.work / "big.tar", image_of(layers), ("big:1",))
        for args in (["load", "-i", str(self.work / "big.tar")], ["tag", "big:1", f"{reg}/chaos/big:1"],
                     ["push", f"{reg}/chaos/big:1"], ["rmi", "big:1", f"{reg}/chaos/big:1"], ["prune", "-f"]):
            done = self.pb(*args)
            assert done.returncode == 0, (args, done.stderr)
        for args in (["tag", "app:1", f"{self.registry}/chaos/app:1"], ["push", f"{self.registry}/chaos/app:1"],
                     ["save", "-o", str(self.work / "app.tar"), "app:1"]):
            done = self.pb(*args)
            assert done.returncode == 0, (args, done.stderr)

    def fresh(self, names: list[str]) -> None:
        """The big image gone from the store, so that its pull or load does all the work."""
        if any(n.endswith("-big") for n in names):
            self.pb("rmi", "big:1", f"{self.registry}/chaos/big:1")
            self.pb("prune", "-f")

    def ensure(self) -> None:
        """What the ops work on: the base, app:1, app:2, the tag to push; unkilled."""
        steps = [["load", "-i", str(self.base)], self.build_args("-t", "app:1"), ["tag", "app:1", "app:2"],
                 ["tag", "app:1", f"{self.registry}/chaos/pushed:1"]]
        for args in steps:
            done = self.pb(*args)
            if done.returncode:
                self.fail(f"setup {args} failed: {done.stderr.strip()}")

    # -- checks ------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        print(f"FAIL [{self.rounds}] {what}", flush=True)
        self.failures.append(f"[{self.rounds}] {what}")

    def mounts(self) -> list[str]:
        prefix = str(self.root.resolve()) + "/"
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(prefix)]

    def containers(self) -> list[str]:
        found = []
        for runtime in ("runc", "crun"):
            out = subprocess.run([runtime, "list", "--format", "json"], capture_output=True).stdout
            found += [e["id"] for e in json.loads(out or b"[]") or []
                      if str(e.get("bundle", "")).startswith(str(self.root))]
        return found

    def leftovers(self) -> list[str]:
        """Temp entries, and the dot-named (half made, half removed) ones of the store's dirs."""
        found = [str(p.relative_to(self.root)) for sub in ("tmp", "run/tmp", "run/containers", "run/state")
                 if (self.root / sub).is_dir() for p in (self.root / sub).iterdir()]
        found += [str(p.relative_to(self.root)) for sub in ("cachemounts", "gitsources", "snapshots", "leases")
                  if (self.root / sub).is_dir() for p in (self.root / sub).iterdir() if p.name.startswith(".")]
        return found

    def check(self, label: str, tags_before: set[str], may_change: set[str]) -> None:
        done = self.pb("store", "check")
        text = done.stdout + done.stderr
        if done.returncode or "clean" not in text:
            self.fail(f"{label}: store check: rc={done.returncode} {text.strip()}")
        if any(w in text for w in INTERNAL):
            self.fail(f"{label}: store check internal: {text.strip()}")
        tags = self.tags()
        lost = (tags_before - tags) - may_change
        if lost:
            self.fail(f"{label}: tags lost: {sorted(lost)}")
        built = self.pb(*self.build_args("-t", "app:1"))
        if built.returncode or built.stdout.strip() != self.reference:
            self.fail(f"{label}: rebuild rc={built.returncode} id={built.stdout.strip()} want {self.reference}: "
                      f"{built.stderr.strip()[-600:]}")
        if self.mounts():
            self.fail(f"{label}: mounts left: {self.mounts()}")
        if self.containers():
            self.fail(f"{label}: containers left: {self.containers()}")
        if self.leftovers():
            self.fail(f"{label}: temp files left after a build: {self.leftovers()}")
        again = self.pb("store", "check")
        if again.returncode or "clean" not in again.stdout + again.stderr:
            self.fail(f"{label}: store check after rebuild: {(again.stdout + again.stderr).strip()}")

    def tags(self) -> set[str]:
        done = self.pb("images", "--format", "{{.Repository}}:{{.Tag}}")
        if done.returncode:
            self.fail(f"images failed: {done.stderr.strip()}")
            return set()
        return {line for line in done.stdout.split() if line}

    # -- rounds ------------------------------------------------------------------------------

    def delay(self) -> float:
        return self.rng.uniform(0.005, 0.05) if self.rng.random() < 0.3 else self.rng.uniform(0, 3)

    def kill_round(self) -> None:
        ops = self.ops()
        name = self.rng.choice(sorted(ops))
        sig = self.rng.choice(SIGNALS)
        delay = self.delay()
        self.rounds += 1
        label = f"{name} {sig.name} after {delay:.3f}s"
        self.ensure()
        self.fresh([name])
        before = self.tags()
        proc = self.start(ops[name])
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, sig) if sig != signal.SIGKILL else proc.kill()
        self.reap(proc, label, sig)
        if proc.returncode not in (0, -sig, 128 + sig, 130, 143, 1) and sig != signal.SIGKILL:
            self.fail(f"{label}: exit {proc.returncode}: {self.last_err.strip()[-400:]}")
        print(f"round {self.rounds}: {label} rc={proc.returncode}", flush=True)
        may = {"app:2", "other:1", "app:3", "big:1"} | {t for t in before if "chaos/" in t}
        self.check(label, before, may)
        self.after(name, label)

    def watched(self) -> set[str]:
        """Entries of the store's and the cache dir's working directories, as they are now."""
        dirs = [self.root / d for d in ("tmp", "run/tmp", "run/state", "run/containers", "blobs/sha256",
                                         "snapshots", "cachemounts", "leases", "gitsources")]
        dirs += [self.work / "cachedir", self.work / "cachedir" / "blobs" / "sha256", self.work]
        seen: set[str] = set()
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    seen.update(e.path for e in it)
            except OSError:
                pass
        return seen

    def watch_round(self) -> None:
        """Kill at a state change: when the Nth new entry appears in the store (a temp file, a
        blob, a snapshot, a lease, a container's state), so kills land right at the edges."""
        ops = self.ops()
        name = self.rng.choice(sorted(ops))
        sig = self.rng.choice(SIGNALS)
        nth = self.rng.randint(1, 12)
        self.rounds += 1
        self.ensure()
        self.fresh([name])
        before = self.tags()
        known = self.watched()
        proc = self.start(ops[name])
        seen = 0
        hit = ""
        while proc.poll() is None:
            now = self.watched()
            new = now - known
            known = now
            seen += len(new)
            if seen >= nth:
                hit = sorted(new)[0]
                os.killpg(proc.pid, sig) if sig != signal.SIGKILL else proc.kill()
                break
            time.sleep(0.001)
        label = f"{name} {sig.name} at new entry #{nth} {hit.replace(str(self.work), '')}"
        self.reap(proc, label, sig)
        print(f"round {self.rounds}: {label} rc={proc.returncode}", flush=True)
        self.check(label, before, {"app:2", "other:1", "app:3", "big:1"} | {t for t in before if "chaos/" in t})
        self.after(name, label)

    def reap(self, proc: subprocess.Popen[str], label: str, sig: signal.Signals) -> None:
        """Wait for a signalled command; fail on a hang or an internal error (its stderr is kept
        in ``last_err``)."""
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            self.fail(f"{label}: did not stop within 120 s of the signal")
        self.last_err = err
        if sig == signal.SIGKILL:
            return
        if any(w in err for w in INTERNAL) and not startup_interrupt(err):
            self.fail(f"{label}: internal error on {sig.name}: {err.strip()[-800:]}")
        # a signal it could catch: it cleaned up itself, nothing waits for the next command's sweep
        left = self.leftovers() + self.mounts() + self.containers()
        if left:
            self.fail(f"{label}: left behind after {sig.name} (rc={proc.returncode}): {left}")

    def after(self, name: str, label: str) -> None:
        """The killed command itself, run again, works."""
        again: list[str] | None = {
            "pull": ["pull", "-q", f"{self.registry}/chaos/app:1"],
            "pull-big": ["pull", "-q", f"{self.registry}/chaos/big:1"],
            "load-big": ["load", "-i", str(self.work / "big.tar")],
            "load": ["load", "-i", str(self.work / "app.tar")],
            "push": ["push", "-q", f"{self.registry}/chaos/pushed:1"],
            "cache-to": self.build_args("--cache-to", f"type=local,dest={self.work / 'cachedir'},mode=max"),
            "cache-from": self.build_args("--cache-from", f"type=local,src={self.work / 'cachedir'}"),
            "save": ["save", "-o", str(self.work / "saved.tar"), "app:1"],
        }.get(name)
        if again is None:
            return
        done = self.pb(*again)
        if done.returncode or "warning" in done.stderr.lower():
            self.fail(f"{label}: {name} again: rc={done.returncode} {done.stderr.strip()[-600:]}")
        parts = [p.name for p in self.work.iterdir() if p.name.endswith(".part")]
        if parts:
            self.fail(f"{label}: .part files left in the output dir: {parts}")

    def concurrent_round(self) -> None:
        ops = self.ops()
        combos = [["build", "build"], ["build-nocache", "prune-a"], ["pull", "prune-a"], ["pull", "pull"],
                  ["load", "prune"], ["build", "prune-a", "cache-prune"], ["cache-to", "cache-from", "prune"],
                  ["push", "rmi", "prune-a"], ["save", "prune-a", "load"], ["run", "prune-a"],
                  ["repair", "build-nocache"], ["build", "build", "pull", "prune-a"],
                  ["pull-big", "prune-a"], ["pull-big", "pull-big"], ["load-big", "prune"], ["load-big", "pull-big"],
                  ["pull-big", "repair"], ["load-big", "prune-a", "pull-big"],
                  ["build-nocache", "cache-prune"], ["build-nocache", "build-nocache", "cache-prune"]]
        combo = self.rng.choice(combos)
        self.rounds += 1
        kill = self.rng.random() < 0.3
        label = f"concurrent {combo}" + (" one killed" if kill else "")
        self.ensure()
        self.fresh(combo)
        before = self.tags()
        procs = [self.start(ops[name]) for name in combo]
        victim = -1
        if kill:
            sig = self.rng.choice(SIGNALS)
            label += f" ({sig.name})"
            time.sleep(self.delay())
            victim = self.rng.randrange(len(procs))
            if procs[victim].poll() is None:
                os.killpg(procs[victim].pid, sig)
        for i, (name, proc) in enumerate(zip(combo, procs, strict=True)):
            try:
                _, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                self.fail(f"{label}: {name} hung")
            if i == victim:
                continue
            if any(w in err for w in INTERNAL):
                self.fail(f"{label}: {name} internal error: {err.strip()[-800:]}")
            elif proc.returncode and not (name in ("rmi", "run", "save", "push") and "No such image" in err):
                self.fail(f"{label}: {name} failed rc={proc.returncode}: {err.strip()[-600:]}")
        print(f"round {self.rounds}: {label}", flush=True)
        self.check(label, before, {"app:2", "other:1", "app:3", "big:1"} | {t for t in before if "chaos/" in t})


def make_base(work: Path) -> Path:
    """A docker-archive of a busybox image as busybox:local (docker import, save, rmi)."""
    docker = require_tool("docker")
    rootfs = make_busybox_rootfs(work / "rootfs")
    tar = work / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(rootfs, arcname=".")
    tag = f"busybox:chaos-{os.getpid()}"
    with open(tar, "rb") as f:
        subprocess.run([docker, "import", "-", tag], stdin=f, check=True, capture_output=True)
    try:
        archive = work / "base.tar"
        subprocess.run([docker, "save", "-o", str(archive), tag], check=True)
    finally:
        subprocess.run([docker, "rmi", tag], capture_output=True)
    # Retag inside the archive as busybox:local.
    fixed = work / "busybox.tar"
    with tarfile.open(archive) as src, tarfile.open(fixed, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name in ("manifest.json", "repositories"):
                data = data.replace(tag.encode(), b"busybox:local") if data else data
                member.size = len(data or b"")
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return fixed


def start_registry(work: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = work / "registry.yml"
    config.write_text("version: 0.1\nlog: {level: error}\n"
                      f"storage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([require_tool("docker-registry"), "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    return f"127.0.0.1:{port}", proc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/chaos-explore5-f"))
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--concurrent", type=float, default=0.3, help="share of concurrent rounds")
    parser.add_argument("--watch", type=float, default=0.4, help="share of rounds killed at a new entry")
    args = parser.parse_args()
    work: Path = args.work
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    ctx = work / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "data" / "a").write_text("a\n")
    (ctx / "data" / "blob").write_bytes(random.Random(1).randbytes(2 << 20))
    with tarfile.open(ctx / "arch.tar", "w") as tar:
        for i in range(200):
            info = tarfile.TarInfo(f"t{i}")
            payload = f"t{i}\n".encode() * 50
            info.size = len(payload)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(payload))
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    base = make_base(work)
    registry, reg_proc = start_registry(work)
    chaos = Chaos(work, registry, base, ctx, rng=random.Random(args.seed))
    print(f"seed {args.seed}", flush=True)
    try:
        chaos.prepare()
        for _ in range(args.iterations):
            r = chaos.rng.random()
            if r < args.concurrent:
                chaos.concurrent_round()
            elif r < args.concurrent + args.watch:
                chaos.watch_round()
            else:
                chaos.kill_round()
    finally:
        reg_proc.terminate()
        reg_proc.wait()
    print(f"{chaos.rounds} rounds, {len(chaos.failures)} failures", flush=True)
    for f in chaos.failures:
        print(f)
    return 1 if chaos.failures else 0


if __name__ == "__main__":
    sys.exit(main())
