"""Runs every workload x scenario with the builders alternating, and collects timings.

Builders take turns within each repetition (A B C, then B C A, ...) so that
a noisy neighbour or a page-cache eviction hits all of them alike; results
are reported as min / median / max and as the ratio of medians.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import tarfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench import workloads as wl
from bench.builders import BenchError, Builder, ImageInfo

SCENARIOS = ("cold", "noop", "change", "export")
SCENARIO_TITLES = {
    "cold": "cold build (cache emptied, base present)",
    "noop": "no-op rebuild",
    "change": "rebuild after one small file changes",
    "export": "export to a docker-archive tar",
}
DEBIAN_TAR = Path("/var/cache/pybuild-tests/bookworm-minbase.tar")


@dataclass
class Cell:
    times: list[float] = field(default_factory=list)
    error: str | None = None

    def add(self, seconds: float) -> None:
        self.times.append(seconds)


@dataclass
class Results:
    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)  # (workload, scenario, builder)
    info: dict[tuple[str, str], ImageInfo] = field(default_factory=dict)  # (workload, builder)
    components: dict[str, dict] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cell(self, workload: str, scenario: str, builder: str) -> Cell:
        return self.cells.setdefault((workload, scenario, builder), Cell())


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return f"{cores} cores, {mem_kb / 1024 / 1024:.0f} GiB RAM, {platform.system()} {platform.release()}"


def make_base_archives(workdir: Path) -> dict[str, Path]:
    """docker-archive tarballs of the two base images, made with docker from Debian's packages."""
    from tests.helpers.tools import make_busybox_rootfs

    out = {}
    rootfs = workdir / "busybox-rootfs"
    if not rootfs.exists():
        make_busybox_rootfs(rootfs)
    sources = {wl.BUSYBOX: rootfs, wl.DEBIAN: DEBIAN_TAR}
    for name, src in sources.items():
        archive = workdir / f"{name.replace(':', '_')}.docker.tar"
        if not archive.exists():
            if src.is_dir():
                tar = workdir / "busybox-rootfs.tar"
                with tarfile.open(tar, "w") as tf:
                    tf.add(src, arcname=".")
                src = tar
            with open(src, "rb") as f:
                subprocess.run(["docker", "import", "-", name], stdin=f, check=True, capture_output=True)
            subprocess.run(["docker", "save", "-o", str(archive), name], check=True)
        out[name] = archive
    return out


def _order(builders: list[Builder], run: int) -> list[Builder]:
    k = run % len(builders)
    return builders[k:] + builders[:k]


def _attempt(results: Results, key: tuple[str, str, str], fn) -> None:  # type: ignore[no-untyped-def]
    cell = results.cell(*key)
    if cell.error:
        return
    try:
        cell.add(fn())
    except (BenchError, OSError, subprocess.SubprocessError) as err:
        cell.error = str(err).splitlines()[0][:200]
        results.notes.append(f"{key}: {err}")


def run_workload(w: wl.Workload, builders: list[Builder], ctx: Path, runs: int, scenarios: tuple[str, ...],
                 results: Results, export_dir: Path) -> None:
    tag = w.name.lower()
    n = max(3, runs // 2 + 1) if w.slow else runs
    for b in builders:
        b.built.add(tag)  # an image left by an earlier run is removed by the first reset too
    if "cold" in scenarios:
        for run in range(n):
            for b in _order(builders, run):
                b.reset_cache()
                _attempt(results, (w.name, "cold", b.name), lambda b=b: b.build(ctx, tag))
    for b in builders:  # warm every builder once so the next scenarios start from a cached build
        if not results.cell(w.name, "cold", b.name).times:
            _attempt(results, (w.name, "cold", b.name), lambda b=b: b.build(ctx, tag))
        try:
            results.info[(w.name, b.name)] = b.info(tag)
        except (BenchError, OSError, ValueError, KeyError) as err:
            results.notes.append(f"{w.name} {b.name} info: {err}")
    if "noop" in scenarios:
        for run in range(n):
            for b in _order(builders, run):
                _attempt(results, (w.name, "noop", b.name), lambda b=b: b.build(ctx, tag))
    if "change" in scenarios:
        original = (ctx / w.changed_file).read_bytes()
        try:
            for run in range(n):
                wl.touch_change(ctx, w, run)
                for b in _order(builders, run):
                    _attempt(results, (w.name, "change", b.name), lambda b=b: b.build(ctx, tag))
        finally:
            (ctx / w.changed_file).write_bytes(original)
    if "export" in scenarios:
        for run in range(n):
            for b in _order(builders, run):
                dest = export_dir / f"{w.name}-{b.name}.tar"
                _attempt(results, (w.name, "export", b.name), lambda b=b, dest=dest: b.export(tag, dest))
                dest.unlink(missing_ok=True)
    for b in builders:
        b.reset_cache()


def run_components(workdir: Path, results: Results, quick: bool) -> None:
    """pybuild's component benchmarks (parse, layers, runtime, registry), each against its peer tool."""
    import importlib

    for name, kwargs in (
        ("parse_speed", {}),
        ("layers", {"workdir": workdir / "layers", "files": 2000 if quick else 20000,
                    "total_mb": 40 if quick else 400}),
        ("runtime", {"workdir": workdir / "runtime"}),
        ("registry", {"workdir": workdir / "registry", "quick": quick}),
    ):
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as err:
            results.components[name] = {"error": f"not available: {err}"}
            continue
        start = time.perf_counter()
        try:
            results.components[name] = module.run(**kwargs)
        except Exception as err:  # a broken component bench must not lose the others' numbers
            results.components[name] = {"error": f"{type(err).__name__}: {err}"}
            results.notes.append(traceback.format_exc())
        results.components[name]["_seconds"] = round(time.perf_counter() - start, 1)


def clean(workdir: Path) -> None:
    shutil.rmtree(workdir / "pybuild-root", ignore_errors=True)
