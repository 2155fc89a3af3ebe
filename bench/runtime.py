"""RUN step overhead: container start to exit of ``true``, per isolation, against ``docker run``.

    python -m bench.runtime [--runs N] [--workdir DIR] [--json]

Each repetition runs ``true`` once with every builder, in rotating order so
that noise hits all alike: pybuild's runc, crun and chroot isolations (the
whole ``Runtime.run``: state file, init layer, overlay mount, bundle, runtime,
unmount, clean-up) over a busybox root file system,
``docker run --rm --network host <the same rootfs as an image> true``, and
"setup only": pybuild's own share (the same minus the runtime and the process).
Reports min / median / max in milliseconds and each median's ratio to docker's.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from builder.runtime import ContainerSpec, ProcessSpec, detect
from builder.runtime.bundle import prepare
from tests.helpers.tools import make_busybox_rootfs

ISOLATIONS = ("runc", "crun", "chroot")
DOCKER_TAG = "pybuild-bench/busybox:runtime"


def _docker_image(rootfs: Path) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    subprocess.run(["docker", "import", "-", DOCKER_TAG], input=buf.getvalue(), check=True,
                   capture_output=True)
    return DOCKER_TAG


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run(workdir: Path, runs: int = 20) -> dict:
    """Measure; returns {"runs", "unit", "builders": {name: {min, median, max, ratio_to_docker}}}."""
    workdir.mkdir(parents=True, exist_ok=True)
    rootfs = make_busybox_rootfs(workdir / "rootfs")
    work_root = workdir / "run"
    uppers = workdir / "uppers"
    actions: dict[str, Callable[[], object]] = {}
    counter = iter(range(10**6))

    def sink(chunk: bytes) -> None:
        pass

    for isolation in ISOLATIONS:
        runtime = detect(isolation, work_root=work_root)

        def once(runtime=runtime) -> None:
            upper = uppers / str(next(counter))
            code = runtime.run(ContainerSpec([rootfs], upper, ProcessSpec(("true",))), stdout=sink)
            if code != 0:
                raise RuntimeError(f"{runtime.name}: true exited {code}")
            shutil.rmtree(upper)

        actions[isolation] = once
    def setup_only() -> None:
        """pybuild's own share: state file, init layer, overlay, teardown; no process."""
        upper = uppers / str(next(counter))
        with prepare(ContainerSpec([rootfs], upper, ProcessSpec(("true",))), work_root, "none"):
            pass
        shutil.rmtree(upper)

    actions["setup only"] = setup_only
    docker = shutil.which("docker")
    if docker:
        image = _docker_image(rootfs)
        actions["docker"] = lambda: subprocess.run(
            [docker, "run", "--rm", "--network", "host", image, "true"], check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    for action in actions.values():  # warm-up: page cache, binaries, the docker image
        action()
    times: dict[str, list[float]] = {name: [] for name in actions}
    names = list(actions)
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            times[name].append(_timed(actions[name]))
    if docker:
        subprocess.run([docker, "rmi", "-f", DOCKER_TAG], capture_output=True)
    docker_median = statistics.median(times["docker"]) if docker else None
    builders = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        builders[name] = {
            "min": round(min(samples) * 1000, 1),
            "median": round(median * 1000, 1),
            "max": round(max(samples) * 1000, 1),
            "ratio_to_docker": round(median / docker_median, 2) if docker_median else None,
        }
    return {"runs": runs, "unit": "ms", "builders": builders}


def _table(result: dict) -> str:
    lines = [f"RUN step overhead (`true`, container start to exit), {result['runs']} runs each",
             f"{'builder':<10} {'min':>8} {'median':>8} {'max':>8} {'vs docker':>10}"]
    for name, row in result["builders"].items():
        ratio = f"{row['ratio_to_docker']:.2f}x" if row["ratio_to_docker"] is not None else "-"
        lines.append(f"{name:<10} {row['min']:>8.1f} {row['median']:>8.1f} {row['max']:>8.1f} {ratio:>10}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-runtime-") as tmp:
        result = run(args.workdir or Path(tmp), runs=args.runs)
    print(json.dumps(result, indent=2) if args.json else _table(result))


if __name__ == "__main__":
    main()
