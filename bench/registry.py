"""Registry transfer speed: ``pybuild`` push/pull against ``skopeo copy``, same image, same run.

    python -m bench.registry [--layers 20] [--total-mb 500] [--runs 3] [--workdir DIR]

A deterministic image (default 20 gzip layers, 500 MB, incompressible) is
pushed and pulled by pybuild (its store <-> the registry) and by skopeo
(an OCI layout <-> the registry), alternating, ``sync`` before each timed step.
Every push goes to a freshly started registry, so that neither tool can skip
uploads by mounting blobs it saw in an earlier run (skopeo remembers blob
locations in its blob-info cache). Pulls go into an empty store / empty layout.
Both tools run as the commands a user types (``pybuild push``/``pybuild pull``
with their own store root, ``skopeo copy``), each in a fresh process, so both
pay their start-up. Reported: medians (seconds and MB/s) and skopeo's time
divided by pybuild's (> 1 means pybuild is faster). Like skopeo, a pull
verifies blob digests while streaming and does not decompress layers; pybuild
checks each layer against its diff_id when it first reads it (see
``Store.claim_layer``). ``cpu_seconds`` gives each pull's CPU time (user +
system of the child process): on a shared 2-core machine the pull is
CPU-bound, so this is the steadier measure of the work each tool does.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from bench.builders import compile_bytecode, user_env
from builder.image.config import ConfigFile, History
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest
from builder.image.image import SourceImage
from builder.image.mediatypes import Compression, MediaType
from builder.image.platform import Platform
from builder.layers.compression import compress_stream
from builder.registry import push

REPO = Path(__file__).resolve().parents[1]


class LayoutSource:
    """Blobs of an OCI layout directory (a BlobSource)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return open(self.root / "blobs" / "sha256" / descriptor.digest.hex, "rb")


def make_layout(dest: Path, layers: int, total_mb: int) -> Path:
    """(Re)create an OCI layout with one image unless an identical one is there."""
    stamp = dest / ".stamp"
    expected = f"{layers}:{total_mb}:v1"
    if stamp.exists() and stamp.read_text() == expected:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    rng = random.Random(f"pybuild-bench-registry-{layers}-{total_mb}")
    per_layer = total_mb * 1024 * 1024 // layers
    descriptors, diff_ids = [], []
    for i in range(layers):
        data = rng.randbytes(per_layer)
        tar_buf = io.BytesIO()
        with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"layer{i:02d}/data.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar_bytes = tar_buf.getvalue()
        diff_ids.append(Digest.of(tar_bytes))
        gz = io.BytesIO()
        compress_stream(io.BytesIO(tar_bytes), gz, Compression.GZIP)
        blob = gz.getvalue()
        digest = Digest.of(blob)
        (blobs / digest.hex).write_bytes(blob)
        descriptors.append({"mediaType": MediaType.OCI_LAYER_GZIP.value, "digest": digest,
                            "size": len(blob)})
    plat = Platform.host()
    config = ConfigFile(architecture=plat.architecture, os=plat.os, diff_ids=tuple(diff_ids),
                        history=tuple(History(created_by=f"layer {i}") for i in range(layers)))
    raw_config = config.to_bytes()
    (blobs / Digest.of(raw_config).hex).write_bytes(raw_config)
    manifest = {"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST.value,
                "config": {"mediaType": MediaType.OCI_CONFIG.value, "digest": Digest.of(raw_config),
                           "size": len(raw_config)},
                "layers": descriptors}
    raw_manifest = json.dumps(manifest, separators=(",", ":")).encode()
    (blobs / Digest.of(raw_manifest).hex).write_bytes(raw_manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": MediaType.OCI_MANIFEST.value, "digest": Digest.of(raw_manifest),
        "size": len(raw_manifest), "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))
    stamp.write_text(expected)
    return dest


def layout_image(layout: Path) -> SourceImage:
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    raw = (layout / "blobs" / "sha256" / Digest(entry["digest"]).hex).read_bytes()
    return SourceImage(LayoutSource(layout), raw, entry["mediaType"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def fresh_registry(root: Path) -> Iterator[str]:
    """A new, empty docker-registry on a free loopback port (plain HTTP)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed: run tests/setup.sh")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = _free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("docker-registry did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _timed(step: Callable[[], object]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _skopeo(*args: str) -> None:
    proc = subprocess.run(["skopeo", *args], capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")


def _pybuild(root: Path, *args: str) -> None:
    env = dict(user_env(), PYBUILD_ROOT=str(root))
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"pybuild {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")


def run(workdir: Path, registry_addr: str, *, layers: int = 20, total_mb: int = 500,
        runs: int = 3) -> dict[str, Any]:
    """Alternate pybuild and skopeo pushes and pulls; return medians and ratios."""
    from cache.store import Store

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    layout = make_layout(workdir / "layout", layers, total_mb)
    image = layout_image(layout)
    size = sum(d.size for d in image.manifest().layers) + image.manifest().config.size
    store_root = workdir / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    with Store(store_root) as store:
        store.write_image(image, ["bench/registry:src"])
        # The pull source: the same image on the given registry, pushed once.
        pull_ref = f"{registry_addr}/bench/registry:pull"
        push(store.image("bench/registry:src"), pull_ref)
    times: dict[str, list[float]] = {"pybuild_push": [], "skopeo_push": [],
                                     "pybuild_pull": [], "skopeo_pull": []}
    cpu: dict[str, list[float]] = {"pybuild_pull": [], "skopeo_pull": []}
    for i in range(runs):
        order = ("pybuild", "skopeo") if i % 2 == 0 else ("skopeo", "pybuild")
        for tool in order:
            with fresh_registry(workdir / f"reg-{tool}") as addr:
                ref = f"{addr}/bench/push:{i}"
                if tool == "pybuild":
                    _pybuild(store_root, "tag", "bench/registry:src", ref)
                    times["pybuild_push"].append(_timed(partial(
                        _pybuild, store_root, "push", "-q", ref)))
                    _pybuild(store_root, "rmi", ref)
                else:
                    times["skopeo_push"].append(_timed(partial(
                        _skopeo, "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:bench",
                        f"docker://{ref}")))
        for tool in order:
            target = workdir / f"pull-{tool}"
            shutil.rmtree(target, ignore_errors=True)
            before = _cpu(resource.RUSAGE_CHILDREN)
            if tool == "pybuild":
                times["pybuild_pull"].append(_timed(partial(_pybuild, target, "pull", "-q", pull_ref)))
            else:
                times["skopeo_pull"].append(_timed(partial(
                    _skopeo, "copy", "--quiet", "--src-tls-verify=false", f"docker://{pull_ref}",
                    f"oci:{target}:bench")))
            cpu[f"{tool}_pull"].append(_cpu(resource.RUSAGE_CHILDREN) - before)
            shutil.rmtree(target, ignore_errors=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    mb = size / 1e6
    return {
        "image": {"layers": layers, "bytes": size},
        "runs": runs,
        "seconds": times,
        "median_seconds": medians,
        "median_mb_per_s": {k: mb / v for k, v in medians.items()},
        "cpu_seconds": cpu,
        "median_cpu_seconds": {k: statistics.median(v) for k, v in cpu.items()},
        "push_ratio_skopeo_over_pybuild": medians["skopeo_push"] / medians["pybuild_push"],
        "pull_ratio_skopeo_over_pybuild": medians["skopeo_pull"] / medians["pybuild_pull"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--total-mb", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out" / "registry")
    parser.add_argument("--registry", help="host:port of a registry to pull from (default: start one)")
    args = parser.parse_args(argv)
    if shutil.which("skopeo") is None:
        print("skopeo is not installed: run tests/setup.sh", file=sys.stderr)
        return 1
    if args.registry:
        result = run(args.workdir, args.registry, layers=args.layers, total_mb=args.total_mb,
                     runs=args.runs)
    else:
        with fresh_registry(args.workdir / "reg-source") as addr:
            result = run(args.workdir, addr, layers=args.layers, total_mb=args.total_mb, runs=args.runs)
    print(json.dumps(result, indent=2))
    med = result["median_mb_per_s"]
    print(f"push: pybuild {med['pybuild_push']:.0f} MB/s, skopeo {med['skopeo_push']:.0f} MB/s "
          f"(ratio {result['push_ratio_skopeo_over_pybuild']:.2f})", file=sys.stderr)
    print(f"pull: pybuild {med['pybuild_pull']:.0f} MB/s, skopeo {med['skopeo_pull']:.0f} MB/s "
          f"(ratio {result['pull_ratio_skopeo_over_pybuild']:.2f})", file=sys.stderr)
    cpu = result["median_cpu_seconds"]
    print(f"pull CPU: pybuild {cpu['pybuild_pull']:.2f} s, skopeo {cpu['skopeo_pull']:.2f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
