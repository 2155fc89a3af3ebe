"""Layer tar speed: pybuild's writer and extractor against GNU tar, same tree, same run.

    python -m bench.layers [--files N] [--total-mb MB] [--runs N] [--workdir DIR]

A deterministic tree (default 20,000 files / 400 MB: mostly small files and a
few large ones, incompressible) is written as a layer and extracted again,
pybuild and tar alternating, ``sync`` before every timed step so that neither
pays for the other's writeback. tar runs with the same features pybuild has
(xattrs, numeric owners, permissions). The writer's time includes computing
the DiffID; plain tar's does not, so ``tar | tee | sha256sum`` is timed too. Wall time (what a user waits) and CPU time (what
a busy machine cannot hide) are both reported, as medians and ratios.

``--baseline FILE`` also times the writer of an older ``tarwriter.py`` (e.g.
``git show REV:builder/layers/tarwriter.py > /tmp/old.py``) in the same
alternation, checking that it writes the same DiffID: before/after numbers
from one run on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from builder.layers.extract import extract_layer
from builder.layers.tarwriter import write_layer

REPO = Path(__file__).resolve().parents[1]
TAR_FLAGS = ["--numeric-owner", "--xattrs", "--xattrs-include=*"]


def generate_tree(dest: Path, files: int, total_mb: int) -> Path:
    """(Re)create the tree unless an identical one is already there; returns its root."""
    stamp = dest / ".stamp"
    expected = f"{files}:{total_mb}:v1"
    root = dest / "tree"
    if stamp.exists() and stamp.read_text() == expected:
        return root
    shutil.rmtree(dest, ignore_errors=True)
    root.mkdir(parents=True)
    rng = random.Random(f"pybuild-bench-layers-{files}-{total_mb}")
    sizes = [rng.choice((512, 2048, 4096, 8192, 16384)) for _ in range(files)]
    big = max(1, files // 500)
    rest = total_mb * 1024 * 1024 - sum(sizes[big:])
    for i in range(big):
        sizes[i] = max(1, rest // big)
    rng.shuffle(sizes)
    pool = rng.randbytes(8 * 1024 * 1024)
    for i, size in enumerate(sizes):
        d = root / f"d{i // 200:03d}" / f"s{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        off = (i * 7919) % len(pool)
        with open(d / f"f{i:05d}.bin", "wb") as f:
            while size > 0:
                chunk = pool[off : off + size] or pool[:size]
                f.write(chunk)
                size -= len(chunk)
                off = 0
        if i % 1000 == 0:
            os.symlink(f"f{i:05d}.bin", d / f"link{i:05d}")
    stamp.write_text(expected)
    return root


def _cpu() -> float:
    """CPU seconds (user + system) used so far by this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(step: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one step, after a sync that is not counted."""
    subprocess.run(["sync"], check=True)
    cpu = _cpu()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start, _cpu() - cpu


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def load_baseline(path: Path) -> Callable[..., object]:
    """``write_layer`` of an older copy of builder/layers/tarwriter.py."""
    spec = importlib.util.spec_from_file_location("bench_baseline_tarwriter", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load a tar writer from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.write_layer


def run(
    workdir: Path | str, files: int = 20000, total_mb: int = 400, runs: int = 5,
    baseline: Path | None = None,
) -> dict:
    """Medians of ``runs`` alternating runs of write and extract, pybuild vs tar, and the ratios."""
    workdir = Path(workdir)
    write_old = load_baseline(baseline) if baseline is not None else None
    tar = shutil.which("tar")
    if tar is None:
        raise RuntimeError("GNU tar is not installed")
    tree = generate_tree(workdir / "src", files, total_mb)
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    ours_tar, their_tar = out / "pybuild.tar", out / "gnu.tar"
    steps: tuple[str, ...] = (
        "write_pybuild", "write_tar", "write_tar_sha256", "extract_pybuild", "extract_tar",
    )
    if write_old is not None:
        steps += ("write_baseline",)
    times: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}

    def write_ours() -> None:
        with open(ours_tar, "wb") as f:
            write_layer(tree, f)

    def write_baseline() -> None:
        assert write_old is not None
        with open(out / "baseline.tar", "wb") as f:
            write_old(tree, f)

    def write_theirs() -> None:
        subprocess.run([tar, *TAR_FLAGS, "-cf", their_tar, "-C", tree, "."], check=True)

    def write_theirs_hashed() -> None:
        # What a tar-based builder runs to get a DiffID too: hashing in a parallel process.
        pipeline = (
            f"set -o pipefail; {shlex.quote(tar)} {' '.join(TAR_FLAGS)} -cf - -C {shlex.quote(str(tree))} . "
            f"| tee {shlex.quote(str(their_tar))} | sha256sum > /dev/null"
        )
        subprocess.run(["bash", "-c", pipeline], check=True)

    def extract_ours(target: Path) -> Callable[[], object]:
        def step() -> None:
            with open(ours_tar, "rb") as f:
                extract_layer(f, target)
        return step

    def extract_theirs(target: Path) -> Callable[[], object]:
        return lambda: subprocess.run(
            [tar, *TAR_FLAGS, "-xpf", ours_tar, "-C", target], check=True
        )

    write_ours()  # warm the page cache with the tree once, for both
    if write_old is not None:
        with open(out / "baseline.tar", "wb") as f:
            write_old(tree, f)
        if (out / "baseline.tar").read_bytes() != ours_tar.read_bytes():
            raise RuntimeError(f"{baseline} writes a different layer than the current writer")
    for i in range(runs):
        order = [("write_pybuild", write_ours), ("write_tar", write_theirs),
                 ("write_tar_sha256", write_theirs_hashed)]
        if write_old is not None:
            order.append(("write_baseline", write_baseline))
        for name, step in order if i % 2 == 0 else reversed(order):
            wall, used = _timed(step)
            times[name].append(wall)
            cpu[name].append(used)
        ext = [("extract_pybuild", extract_ours), ("extract_tar", extract_theirs)]
        for name, make in ext if i % 2 == 0 else reversed(ext):
            target = _fresh(out / name)
            wall, used = _timed(make(target))
            times[name].append(wall)
            cpu[name].append(used)
    layer_bytes = ours_tar.stat().st_size
    shutil.rmtree(out)  # ~2 GB of results; the source tree is kept for the next run
    med = {k: statistics.median(v) for k, v in times.items()}
    result: dict = {
        "files": files, "total_mb": total_mb, "runs": runs, "layer_mb": round(layer_bytes / 2**20, 1),
    }
    for key, value in med.items():
        result[f"{key}_s"] = round(value, 3)
    result["write_ratio"] = round(med["write_pybuild"] / med["write_tar"], 2)
    result["write_ratio_vs_tar_sha256"] = round(med["write_pybuild"] / med["write_tar_sha256"], 2)
    if write_old is not None:
        result["write_baseline_ratio"] = round(med["write_baseline"] / med["write_tar"], 2)
    result["extract_ratio"] = round(med["extract_pybuild"] / med["extract_tar"], 2)
    result["write_pybuild_mb_s"] = round(layer_bytes / 2**20 / med["write_pybuild"], 1)
    result["extract_pybuild_mb_s"] = round(layer_bytes / 2**20 / med["extract_pybuild"], 1)
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    for key, value in cpu_med.items():
        result[f"{key}_cpu_s"] = round(value, 3)
    result["write_cpu_ratio"] = round(cpu_med["write_pybuild"] / cpu_med["write_tar"], 2)
    result["extract_cpu_ratio"] = round(cpu_med["extract_pybuild"] / cpu_med["extract_tar"], 2)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["all_s"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--total-mb", type=int, default=400)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "layers")
    parser.add_argument("--baseline", type=Path, help="an older tarwriter.py to time as well")
    args = parser.parse_args(argv)
    result = run(args.workdir, args.files, args.total_mb, args.runs, args.baseline)
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
