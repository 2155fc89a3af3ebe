"""The builders under comparison, each driven through its own command line.

Every adapter does the same things so the runner can alternate them: load
the base images, build a context, empty its build cache (keeping the base
images, unpacked, as a user's machine has them), and export an image to a
tarball. Only the build or export command itself is timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench.workloads import BUSYBOX, DEBIAN

REPO = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """A builder failed during a benchmark; the message has its output tail."""


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 1800) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


def timed_run(cmd: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    start = time.perf_counter()
    proc = _run(cmd, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - start, proc


def timed(cmd: list[str], **kwargs: object) -> float:
    return timed_run(cmd, **kwargs)[0]


@dataclass
class ImageInfo:
    size: int
    layers: int


@dataclass
class Builder(ABC):
    """Base adapter; subclasses fill in the commands."""

    name: str
    workdir: Path
    built: set[str] = field(default_factory=set)

    @abstractmethod
    def load_base(self, name: str, docker_archive: Path) -> None:
        """Make a base image available, unpacked, outside any timing."""

    @abstractmethod
    def build_cmd(self, ctx: Path, tag: str, jobs: int | None = None) -> list[str]:
        """The build command line, as a user types it; ``jobs``: how many steps may run at once,
        for a builder that has the option (docker's classic builder runs one at a time)."""

    def env(self) -> dict[str, str] | None:
        return None

    def build(self, ctx: Path, tag: str, jobs: int | None = None) -> float:
        self.built.add(tag)
        return timed(self.build_cmd(ctx, tag, jobs), env=self.env())

    @abstractmethod
    def reset_cache(self, base: str | None = None) -> None:
        """Empty the build cache; ``base`` (if given) is the base the next build needs."""

    def cleanup(self) -> None:
        """Free what this workload left (the next workload starts with a reset anyway)."""
        self.reset_cache()

    @abstractmethod
    def export(self, tag: str, dest: Path) -> float:
        """Time writing ``tag`` to a docker-archive tarball ``dest``."""

    @abstractmethod
    def info(self, tag: str) -> ImageInfo:
        """Size and layer count of a built image."""

    def version(self) -> str:
        return ""


class FarmBuilder(Builder):
    """A builder that can share its build cache through a registry (the farm scenario, issue 5)."""

    @abstractmethod
    def farm_fresh(self, root: Path, base: str) -> None:
        """An empty store at ``root`` holding only ``base``."""

    @abstractmethod
    def farm_build(self, ctx: Path, tag: str, root: Path, *, cache_to: str | None = None,
                   cache_from: str | None = None) -> float:
        """Time a build in the store at ``root``, exporting or importing the registry cache ``ref``."""

    @abstractmethod
    def farm_image_id(self, tag: str, root: Path) -> str:
        """The image ID (config digest) of ``tag`` in the store at ``root``."""


@dataclass
class Docker(Builder):
    """docker's classic builder (DOCKER_BUILDKIT=0), the reference in DESIGN.md.

    The cache of the classic builder is its intermediate images. Only the
    images this harness built are removed (by ID, which takes their untagged
    parents with them): a global ``docker image prune`` would delete other
    people's images on a shared machine.
    """

    image_ids: set[str] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_BUILDKIT": "0"}

    def load_base(self, name: str, docker_archive: Path) -> None:
        _run(["docker", "load", "-i", str(docker_archive)])

    def build_cmd(self, ctx: Path, tag: str, jobs: int | None = None) -> list[str]:
        return ["docker", "build", "-q", "--network", "host", "-t", f"bench/{tag}", str(ctx)]

    def build(self, ctx: Path, tag: str, jobs: int | None = None) -> float:
        self.built.add(tag)
        seconds, proc = timed_run(self.build_cmd(ctx, tag, jobs), env=self.env())
        image_id = proc.stdout.decode().strip().splitlines()[-1:]
        self.image_ids.update(image_id)
        return seconds

    def reset_cache(self, base: str | None = None) -> None:
        for tag in sorted(self.built):
            subprocess.run(["docker", "rmi", "-f", f"bench/{tag}"], capture_output=True)
        leftovers = sorted(self.image_ids | self._descendants_of_bases())
        if leftovers:
            subprocess.run(["docker", "rmi", "-f", *leftovers], capture_output=True)
        self.built.clear()
        self.image_ids.clear()

    def _descendants_of_bases(self) -> set[str]:
        """Every image whose parent chain reaches a bench base image: the classic builder's cache.

        Final images are not enough: the stages of a multi-stage build leave
        intermediate images that no final image descends from.
        """
        bases = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", BUSYBOX, DEBIAN],
                               capture_output=True, text=True).stdout.split()
        ids = subprocess.run(["docker", "images", "-a", "-q", "--no-trunc"],
                             capture_output=True, text=True).stdout.split()
        if not bases or not ids:
            return set()
        parents: dict[str, str] = {}
        listing = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{.Parent}}", *set(ids)],
                                 capture_output=True, text=True).stdout
        for line in listing.splitlines():
            image, _, parent = line.partition(" ")
            parents[image] = parent.strip()
        found: set[str] = set()
        for image in parents:
            chain: list[str] = []
            cur = image
            while cur and cur not in bases and cur not in found and len(chain) < 1000:
                chain.append(cur)
                cur = parents.get(cur, "")
            if cur and (cur in bases or cur in found):
                found.update(chain)
        return found

    def export(self, tag: str, dest: Path) -> float:
        return timed(["docker", "save", "-o", str(dest), f"bench/{tag}"])

    def info(self, tag: str) -> ImageInfo:
        data = json.loads(_run(["docker", "image", "inspect", f"bench/{tag}"]).stdout)[0]
        return ImageInfo(size=int(data["Size"]), layers=len(data["RootFS"]["Layers"]))

    def version(self) -> str:
        return _run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.decode().strip()


@dataclass
class Buildah(FarmBuilder):
    """buildah with --isolation chroot and layer caching (--layers), as kaniko-like CI uses it."""

    bases: dict[str, Path] = field(default_factory=dict)
    @staticmethod
    def _storage(root: Path | None) -> list[str]:
        if root is None:
            return ["buildah"]
        return ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run")]

    def load_base(self, name: str, docker_archive: Path, root: Path | None = None) -> None:
        self.bases[name] = docker_archive
        cli = self._storage(root)
        out = _run([*cli, "pull", "-q", f"docker-archive:{docker_archive}"]).stdout.decode().split()
        _run([*cli, "tag", out[-1], f"localhost/{name}"])

    def farm_fresh(self, root: Path, base: str) -> None:
        if root.exists():
            subprocess.run([*self._storage(root), "rm", "--all"], capture_output=True)
            subprocess.run([*self._storage(root), "rmi", "--all", "--force"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        self.load_base(base, self.bases[base], root)

    def farm_build(self, ctx: Path, tag: str, root: Path, *, cache_to: str | None = None,
                   cache_from: str | None = None) -> float:
        cmd = [*self._storage(root), *self.build_cmd(ctx, tag)[1:]]
        extra = []
        if cache_to:
            extra += ["--cache-to", cache_to]
        if cache_from:
            extra += ["--cache-from", cache_from]
        if extra:  # plain HTTP: the registry is on loopback
            extra.append("--tls-verify=false")
        return timed([*cmd[:-1], *extra, cmd[-1]])

    def farm_image_id(self, tag: str, root: Path) -> str:
        out = _run([*self._storage(root), "images", "--no-trunc", "--format", "{{.ID}}", f"bench/{tag}"])
        return out.stdout.decode().split()[0]

    def build_cmd(self, ctx: Path, tag: str, jobs: int | None = None) -> list[str]:
        dockerfile = ctx / "Dockerfile"
        text = dockerfile.read_text()
        local = ctx / ".buildah.Dockerfile"
        # buildah resolves short names against registries; point it at local storage.
        local.write_text(text.replace(f"FROM {BUSYBOX}", f"FROM localhost/{BUSYBOX}")
                         .replace(f"FROM {DEBIAN}", f"FROM localhost/{DEBIAN}"))
        return ["buildah", "bud", "-q", "--isolation", "chroot", "--network", "host", "--layers",
                *(["--jobs", str(jobs)] if jobs else []), "-f", str(local), "-t", f"bench/{tag}", str(ctx)]

    def reset_cache(self, base: str | None = None) -> None:
        for tag in sorted(self.built):
            subprocess.run(["buildah", "rmi", "-f", f"bench/{tag}"], capture_output=True)
        subprocess.run(["buildah", "rmi", "--prune"], capture_output=True)  # buildah's own storage only
        self.built.clear()

    def export(self, tag: str, dest: Path) -> float:
        dest.unlink(missing_ok=True)
        return timed(["buildah", "push", "-q", f"bench/{tag}", f"docker-archive:{dest}"])

    def info(self, tag: str) -> ImageInfo:
        data = json.loads(_run(["buildah", "inspect", "--type", "image", f"bench/{tag}"]).stdout)
        layers = data.get("OCIv1", {}).get("rootfs", {}).get("diff_ids", [])
        # Local storage keeps layers uncompressed: the manifest sizes add up to the image size.
        manifest = json.loads(data["Manifest"]) if isinstance(data.get("Manifest"), str) else {}
        size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers", []))
        return ImageInfo(size=size, layers=len(layers))

    def version(self) -> str:
        return _run(["buildah", "--version"]).stdout.decode().split()[2]


def user_env() -> dict[str, str]:
    """The environment without PYTHONDONTWRITEBYTECODE: pybuild runs as a user's install does."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_bytecode() -> None:
    """Compile pybuild's modules once, so that no timed run pays for it."""
    import builder
    import cache

    dirs = [str(Path(m.__file__).parent) for m in (builder, cache)]  # type: ignore[arg-type]
    _run([sys.executable, "-m", "compileall", "-q", *dirs], env=user_env())


def pybuild_executable() -> list[str]:
    """The installed ``pybuild`` console script (not a pyenv shim, which adds ~0.2 s a call)."""
    beside = Path(sys.executable).parent / "pybuild"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pybuild")
    if found is None:
        raise BenchError("pybuild is not installed: run tests/setup.sh (pip install -e .)")
    return [found]


@dataclass
class Pybuild(FarmBuilder):
    """pybuild as users run it: the installed console script, with bytecode.

    "Cold" means a fresh store (``$PYBUILD_ROOT``) holding only the base image,
    loaded and unpacked outside the timing: ``pybuild prune`` keeps the build
    cache on purpose and ``prune --all`` also drops the base's snapshot, so
    neither gives the state docker's ``rmi`` leaves.
    """

    bases: dict[str, Path] = field(default_factory=dict)
    root_name: str = "pybuild-root"

    @property
    def root(self) -> Path:
        return self.workdir / self.root_name

    def env(self, root: Path | None = None) -> dict[str, str]:
        env = user_env()
        env["PYBUILD_ROOT"] = str(root or self.root)
        return env

    def _cli(self, *args: str) -> list[str]:
        return [*pybuild_executable(), *args]

    def warm_bytecode(self) -> None:
        """Compile pybuild's modules and make the parser's tables, so no timed run pays for it."""
        compile_bytecode()
        # The parser keeps its LALR tables in a per-user cache file: make it now too.
        tiny = self.workdir / "warm-context"
        tiny.mkdir(parents=True, exist_ok=True)
        (tiny / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN true\n")
        _run(self._cli("build", "--dry-run", str(tiny)), env=self.env())

    def load_base(self, name: str, docker_archive: Path, root: Path | None = None) -> None:
        self.bases[name] = docker_archive
        env = self.env(root)
        _run(self._cli("load", "-i", str(docker_archive)), env=env)
        # Unpack the base's snapshot now, as docker and buildah do on load.
        _run(self._cli("run", "--rm", name, "true"), env=env)

    def fresh_root(self, root: Path, base: str | None) -> None:
        """An empty store at ``root`` with only ``base`` (or every known base) in it."""
        shutil.rmtree(root, ignore_errors=True)
        for name, archive in self.bases.items():
            if base is None or name == base:
                self.load_base(name, archive, root)

    def farm_fresh(self, root: Path, base: str) -> None:
        self.fresh_root(root, base)

    def farm_build(self, ctx: Path, tag: str, root: Path, *, cache_to: str | None = None,
                   cache_from: str | None = None) -> float:
        extra: list[str] = []
        if cache_to:
            extra += ["--cache-to", f"type=registry,ref={cache_to},mode=max"]
        if cache_from:
            extra += ["--cache-from", f"type=registry,ref={cache_from}"]
        return self.build(ctx, tag, extra=extra, root=root)

    def farm_image_id(self, tag: str, root: Path) -> str:
        out = _run(self._cli("inspect", f"bench/{tag}"), env=self.env(root)).stdout
        return str(json.loads(out)[0]["Id"])

    def build_cmd(self, ctx: Path, tag: str, jobs: int | None = None, *,
                  extra: list[str] | None = None) -> list[str]:
        return self._cli("build", "-q", *(["--jobs", str(jobs)] if jobs else []), *(extra or ()),
                         "-t", f"bench/{tag}", str(ctx))

    def build(self, ctx: Path, tag: str, jobs: int | None = None, *, extra: list[str] | None = None,
              root: Path | None = None) -> float:
        self.built.add(tag)
        return timed(self.build_cmd(ctx, tag, jobs, extra=extra), env=self.env(root))

    def reset_cache(self, base: str | None = None) -> None:
        self.fresh_root(self.root, base)
        self.built.clear()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.built.clear()

    def export(self, tag: str, dest: Path) -> float:
        return timed(self._cli("save", "--format", "docker", "-o", str(dest), f"bench/{tag}"), env=self.env())

    def info(self, tag: str) -> ImageInfo:
        data = json.loads(_run(self._cli("inspect", f"bench/{tag}"), env=self.env()).stdout)[0]
        return ImageInfo(size=int(data["Size"]), layers=len(data["RootFS"]["Layers"]))

    def version(self) -> str:
        return _run(self._cli("--version"), env=self.env()).stdout.decode().split()[-1]


def all_builders(workdir: Path) -> list[Builder]:
    return [Pybuild("pybuild", workdir), Docker("docker", workdir), Buildah("buildah", workdir)]
