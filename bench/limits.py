"""Physical limits of this machine, measured in the same run as the builders.

They show how close pybuild gets: hashing, compressing and copying the same
bytes with the fastest tools available bounds what any builder can do.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import xxhash
import zstandard
from isal import igzip

MB = 1024 * 1024


def _throughput(fn, data: bytes, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Median MB/s of ``fn(data)``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - start)
    return len(data) / statistics.median(times) / MB


def sample_data(size: int = 64 * MB) -> bytes:
    """Half incompressible, half text-like: closer to real layers than either alone."""
    import random

    rng = random.Random(1)
    noise = rng.randbytes(size // 2)
    words = b" ".join(rng.choice((b"layer", b"image", b"cache", b"build", b"0123")) for _ in range(size // 10))
    return noise + words[: size - len(noise)]


def hashing_and_compression(size_mb: int = 64) -> dict[str, float]:
    data = sample_data(size_mb * MB)
    return {
        "sha256 MB/s": _throughput(lambda d: hashlib.sha256(d).digest(), data),
        "xxh3-128 MB/s": _throughput(lambda d: xxhash.xxh3_128(d).digest(), data),
        "gzip zlib-6 MB/s": _throughput(lambda d: gzip.compress(d, 6, mtime=0), data, runs=1),
        "gzip isal-1 MB/s": _throughput(lambda d: igzip.compress(d, 1, mtime=0), data),
        "zstd-3 MB/s": _throughput(lambda d: zstandard.ZstdCompressor(level=3).compress(d), data),
    }


def copy_tree(tree: Path, scratch: Path, runs: int = 3) -> dict[str, float]:
    """`tar -c` to a file and `cp -a` of a workload's context: seconds (median)."""
    tar_times, cp_times = [], []
    for i in range(runs):
        out = scratch / f"limits-{i}.tar"
        start = time.perf_counter()
        subprocess.run(["tar", "-C", str(tree), "-cf", str(out), "."], check=True)
        tar_times.append(time.perf_counter() - start)
        out.unlink()
        dest = scratch / f"limits-cp-{i}"
        start = time.perf_counter()
        subprocess.run(["cp", "-a", str(tree), str(dest)], check=True)
        cp_times.append(time.perf_counter() - start)
        shutil.rmtree(dest)
    return {"tar -c s": statistics.median(tar_times), "cp -a s": statistics.median(cp_times)}
