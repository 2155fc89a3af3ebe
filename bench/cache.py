"""Issue 5's farm, as a component benchmark: builder B with ``--cache-from`` vs a cold build.

    python -m bench.cache --registry 127.0.0.1:5000 [--runs 3] [--workdir DIR]

Builder A builds a multi-stage Dockerfile (RUN steps that cost CPU and write
~20 MB) and exports its cache to the registry (``mode=max``). Then, alternating
so that noise hits both alike, B builds the same context in an empty store
(only the busybox base loaded) once with ``--cache-from`` and once without any
cache (cold). Reported: medians, the ratio cold / cache-from (> 1 means the
shared cache pays), the export time, whether B's image ID equals A's, and how
many bytes of layers B fetched compared with what the cache holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE = "busybox:local"

DOCKERFILE = """\
FROM busybox:local AS build
COPY src/ /src/
RUN mkdir -p /gen && for i in $(seq 1 100); do head -c 200000 /dev/urandom > /gen/f$i; done
RUN dd if=/dev/zero bs=1M count=300 2>/dev/null | sha256sum > /work.sum && cat /src/* >> /work.sum
RUN cd /gen && sha256sum f* > /sums && tar cf /bundle.tar /gen /sums

FROM busybox:local
COPY --from=build /work.sum /app/work.sum
COPY --from=build /sums /app/sums
RUN dd if=/dev/zero bs=1M count=200 2>/dev/null | md5sum > /app/check
CMD ["cat", "/app/check"]
"""


def _pybuild(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYBUILD_ROOT=str(root), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise RuntimeError(f"pybuild {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def _timed_build(root: Path, ctx: Path, *extra: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    proc = _pybuild(root, "build", "--progress", "plain", *extra, "-t", "farm:1", str(ctx))
    return time.perf_counter() - start, proc.stdout + proc.stderr


def make_base(template: Path, workdir: Path) -> None:
    """A store holding busybox:local, made from Debian's busybox-static (no docker needed)."""
    from builder.image.config import ContainerConfig, History
    from builder.image.mutate import Addendum, append, empty, with_config
    from builder.layers.tarwriter import write_layer
    from cache.store import BuildLayers, Store
    from tests.helpers.tools import make_busybox_rootfs

    rootfs = workdir / "busybox-rootfs"
    if not rootfs.exists():
        make_busybox_rootfs(rootfs)
    with Store(template) as store:
        tar = store.temp_path(".layer.tar")
        with open(tar, "wb") as out:
            stats = write_layer(rootfs, out, source_date_epoch=0)
        layer = BuildLayers(store).add_tar(tar, stats)
        image = append(empty(), [Addendum(History(created="1970-01-01T00:00:00Z", created_by="busybox"), layer)])
        image = with_config(image, ContainerConfig(
            env=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)))
        store.write_image(image, [BASE])


def _fresh(template: Path, root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root, symlinks=True)


def _image_id(root: Path) -> str:
    data = json.loads(_pybuild(root, "inspect", "farm:1").stdout)
    return (data[0] if isinstance(data, list) else data)["Id"]


def _cached(log: bytes) -> int:
    return sum(1 for line in log.splitlines() if line.startswith(b"#") and line.endswith(b" CACHED"))


def run(workdir: Path | str | None = None, registry_addr: str | None = None, runs: int = 3) -> dict[str, Any]:
    """The farm: medians of B's ``--cache-from`` build and of a cold build, alternating."""
    if not registry_addr:
        raise RuntimeError("bench.cache needs a registry (registry_addr=host:port on loopback)")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-cache-"))
    workdir.mkdir(parents=True, exist_ok=True)
    template, root_a, root_b = workdir / "template", workdir / "farm-a", workdir / "farm-b"
    ctx = workdir / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "src").mkdir(exist_ok=True)
    for i in range(20):
        (ctx / "src" / f"m{i}.txt").write_text(f"module {i}\n" * 100)
    ref = f"{registry_addr}/bench/farm-cache:{int(time.time())}"
    try:
        shutil.rmtree(template, ignore_errors=True)
        make_base(template, workdir)
        _fresh(template, root_a)
        t_a, _ = _timed_build(root_a, ctx)
        start = time.perf_counter()
        # A's cache export alone: the build is all hits, then compress once + upload.
        _timed_build(root_a, ctx, "--cache-to", f"type=registry,ref={ref},mode=max")
        export_s = time.perf_counter() - start
        image_a = _image_id(root_a)
        times: dict[str, list[float]] = {"cache_from": [], "cold": []}
        same_id, all_cached, fetched = True, True, 0
        for n in range(runs):
            for kind in (("cache_from", "cold") if n % 2 == 0 else ("cold", "cache_from")):
                _fresh(template, root_b)
                subprocess.run(["sync"], check=False)
                extra = ("--cache-from", f"type=registry,ref={ref}") if kind == "cache_from" else ()
                seconds, log = _timed_build(root_b, ctx, *extra)
                times[kind].append(seconds)
                if kind == "cache_from":
                    same_id &= _image_id(root_b) == image_a
                    all_cached &= _cached(log) == 8  # every step but the two FROMs
                    fetched = sum(int(line.split(b"(")[1].split(b" ")[0]) for line in log.splitlines()
                                  if b"importing cache layer" in line)
        cache_from, cold = statistics.median(times["cache_from"]), statistics.median(times["cold"])
        return {
            "runs": runs,
            "build_a_s": round(t_a, 3),
            "export_s": round(export_s, 3),
            "cache_from_median_s": round(cache_from, 3),
            "cold_median_s": round(cold, 3),
            "cold_over_cache_from": round(cold / cache_from, 2),
            "cache_from_times": [round(t, 3) for t in times["cache_from"]],
            "cold_times": [round(t, 3) for t in times["cold"]],
            "same_image_id": same_id,
            "every_step_cached": all_cached,
            "layer_bytes_fetched": fetched,
        }
    finally:
        for root in (root_a, root_b, template):
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True, help="host:port of a registry on loopback")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(json.dumps(run(args.workdir, args.registry, args.runs), indent=2))


if __name__ == "__main__":
    main()
