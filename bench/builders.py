"""The builders under comparison, each driven through its own command line.

Every adapter does the same four things so the runner can alternate them:
load the base images, build a context, empty its build cache (keeping the
base images), and export an image to a tarball.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from bench.workloads import BUSYBOX, DEBIAN


class BenchError(RuntimeError):
    """A builder failed during a benchmark; the message has its output tail."""


def _run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         timeout: float = 1800) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).decode(errors="replace")[-2000:]
        raise BenchError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc


def timed(cmd: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    _run(cmd, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - start


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
        """See the class docstring."""

    @abstractmethod
    def build_cmd(self, ctx: Path, tag: str) -> list[str]:
        """See the class docstring."""

    def env(self) -> dict[str, str] | None:
        return None

    def build(self, ctx: Path, tag: str) -> float:
        self.built.add(tag)
        return timed(self.build_cmd(ctx, tag), env=self.env())

    @abstractmethod
    def reset_cache(self) -> None:
        """See the class docstring."""

    @abstractmethod
    def export(self, tag: str, dest: Path) -> float:
        """See the class docstring."""

    @abstractmethod
    def info(self, tag: str) -> ImageInfo:
        """See the class docstring."""


class Docker(Builder):
    """docker's classic builder (DOCKER_BUILDKIT=0), the reference in DESIGN.md."""

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_BUILDKIT": "0"}

    def load_base(self, name: str, docker_archive: Path) -> None:
        _run(["docker", "load", "-i", str(docker_archive)])

    def build_cmd(self, ctx: Path, tag: str) -> list[str]:
        return ["docker", "build", "-q", "--network", "host", "-t", f"bench/{tag}", str(ctx)]

    def reset_cache(self) -> None:
        for tag in sorted(self.built):
            subprocess.run(["docker", "rmi", "-f", f"bench/{tag}"], capture_output=True)
        subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
        subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True)
        self.built.clear()

    def export(self, tag: str, dest: Path) -> float:
        return timed(["docker", "save", "-o", str(dest), f"bench/{tag}"])

    def info(self, tag: str) -> ImageInfo:
        data = json.loads(_run(["docker", "image", "inspect", f"bench/{tag}"]).stdout)[0]
        return ImageInfo(size=int(data["Size"]), layers=len(data["RootFS"]["Layers"]))


class Buildah(Builder):
    """buildah with --isolation chroot and layer caching (--layers), as kaniko-like CI uses it."""

    def load_base(self, name: str, docker_archive: Path) -> None:
        out = _run(["buildah", "pull", "-q", f"docker-archive:{docker_archive}"]).stdout.decode().split()
        _run(["buildah", "tag", out[-1], f"localhost/{name}"])

    def build_cmd(self, ctx: Path, tag: str) -> list[str]:
        dockerfile = ctx / "Dockerfile"
        text = dockerfile.read_text()
        local = ctx / ".buildah.Dockerfile"
        # buildah resolves short names against registries; point it at local storage.
        local.write_text(text.replace(f"FROM {BUSYBOX}", f"FROM localhost/{BUSYBOX}")
                         .replace(f"FROM {DEBIAN}", f"FROM localhost/{DEBIAN}"))
        return ["buildah", "bud", "-q", "--isolation", "chroot", "--network", "host", "--layers",
                "-f", str(local), "-t", f"bench/{tag}", str(ctx)]

    def reset_cache(self) -> None:
        for tag in sorted(self.built):
            subprocess.run(["buildah", "rmi", "-f", f"bench/{tag}"], capture_output=True)
        subprocess.run(["buildah", "rmi", "--prune"], capture_output=True)
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


class Pybuild(Builder):
    """pybuild from this checkout, with its own store under the bench work dir."""

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYBUILD_ROOT": str(self.workdir / "pybuild-root")}

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "builder", *args]

    def load_base(self, name: str, docker_archive: Path) -> None:
        _run(self._cli("load", "-i", str(docker_archive)), env=self.env())

    def build_cmd(self, ctx: Path, tag: str) -> list[str]:
        return self._cli("build", "-q", "-t", f"bench/{tag}", str(ctx))

    def reset_cache(self) -> None:
        for tag in sorted(self.built):
            subprocess.run(self._cli("rmi", "-f", f"bench/{tag}"), capture_output=True, env=self.env())
        subprocess.run(self._cli("prune", "-f"), capture_output=True, env=self.env())
        self.built.clear()

    def export(self, tag: str, dest: Path) -> float:
        return timed(self._cli("save", "--format", "docker", "-o", str(dest), f"bench/{tag}"), env=self.env())

    def info(self, tag: str) -> ImageInfo:
        data = json.loads(_run(self._cli("inspect", f"bench/{tag}"), env=self.env()).stdout)[0]
        return ImageInfo(size=int(data["Size"]), layers=len(data["RootFS"]["Layers"]))


def all_builders(workdir: Path) -> list[Builder]:
    return [Pybuild("pybuild", workdir), Docker("docker", workdir), Buildah("buildah", workdir)]
