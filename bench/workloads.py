"""Deterministic build contexts W1-W6: the same bytes on every machine and every run.

Content comes from a seeded generator, so a workload's context (and so every
builder's cache behaviour) is identical across runs; only the file that a
"one small change" scenario edits differs, and it is restored afterwards.
"""

from __future__ import annotations

import hashlib
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "bench-busybox:1"
DEBIAN = "bench-bookworm:1"


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    base: str  # BUSYBOX or DEBIAN
    changed_file: str  # context-relative file the one-file-change scenario edits
    slow: bool = False  # 3 runs instead of 5
    network: bool = False  # needs the host network (apt-get)
    jobs: int | None = None  # steps at once (--jobs) where the builder has the option; else its default


WORKLOADS = (
    Workload("W1", "small app: 50 files, 3 RUNs", BUSYBOX, "src/module_07.py"),
    Workload("W2", "big context: 20,000 files / ~400 MB, COPY . and one RUN", BUSYBOX,
             "data/d000/f00000.bin", slow=True),
    Workload("W3", "4 independent stages of ~2 s each + COPY --from", BUSYBOX, "stage.txt", jobs=4),
    Workload("W4", "Debian base: RUN writes 5,000 files, RUN deletes half", DEBIAN, "marker.txt"),
    Workload("W5", "40 sequential small instructions", BUSYBOX, "files/f17.txt"),
    Workload("W6", "apt-get install on Debian bookworm (host network)", DEBIAN, "marker.txt",
             slow=True, network=True),
)


def by_name(names: str | None) -> list[Workload]:
    if not names:
        return list(WORKLOADS)
    wanted = {n.strip().upper() for n in names.split(",")}
    return [w for w in WORKLOADS if w.name in wanted]


def _rng_bytes(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


def _text(rng: random.Random, lines: int) -> str:
    words = ("build", "layer", "cache", "image", "stage", "digest", "context", "snapshot")
    return "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(lines)) + "\n"


QUICK_NOTE = "--quick: smaller workloads (W2 at 1/10: 2,000 files / 40 MB; W3 stages of 1 s; " \
    "W4 1,000 files; W5 20 instructions), W6 not run"


def generate(workload: Workload, dest: Path, *, scale: float = 1.0) -> Path:
    """(Re)create the context of ``workload`` under ``dest``; returns the context dir.

    ``scale`` below 1 is --quick: W2 shrinks by that factor, W3-W5 take their small variants.
    """
    ctx = dest / workload.name
    stamp = ctx / ".bench-stamp"
    expected = f"{workload.name}:{scale}:v2"
    if stamp.exists() and stamp.read_text() == expected:
        return ctx
    if ctx.exists():
        shutil.rmtree(ctx)
    ctx.mkdir(parents=True)
    rng = random.Random(f"pybuild-bench-{workload.name}")
    _MAKERS[workload.name](ctx, rng, scale)
    (ctx / ".dockerignore").write_text(".bench-stamp\n")
    stamp.write_text(expected)
    return ctx


def _make_w1(ctx: Path, rng: random.Random, scale: float) -> None:
    src = ctx / "src"
    src.mkdir()
    for i in range(48):
        (src / f"module_{i:02d}.py").write_text(f"# module {i}\n" + _text(rng, 40))
    (ctx / "requirements.txt").write_text("requests\nlark\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {BUSYBOX}\n"
        "WORKDIR /app\n"
        "COPY requirements.txt .\n"
        "RUN mkdir -p /app/venv && cp requirements.txt /app/venv/installed.txt\n"
        "COPY src/ ./src/\n"
        "RUN find src -name '*.py' | sort | xargs cat | sha256sum > /app/build.sum\n"
        "RUN adduser -D -u 1000 app 2>/dev/null || true\n"
        'CMD ["cat", "/app/build.sum"]\n'
    )


def _make_w2(ctx: Path, rng: random.Random, scale: float) -> None:
    files = int(20000 * scale)
    total = int(400 * 1024 * 1024 * scale)
    # Sizes: mostly small files, a few large ones, like a real source tree with assets.
    sizes = [rng.choice((512, 2048, 4096, 8192, 16384)) for _ in range(files)]
    big = max(1, files // 500)
    small_total = sum(sizes[big:])
    for i in range(big):
        sizes[i] = max(1, (total - small_total) // big)
    rng.shuffle(sizes)
    # A pool of random bytes sliced per file: incompressible, deterministic, fast to make.
    pool = _rng_bytes(rng, 8 * 1024 * 1024)
    data = ctx / "data"
    for i, size in enumerate(sizes):
        d = data / f"d{i // 200:03d}"
        if i % 200 == 0:
            d.mkdir(parents=True)
        off = (i * 7919) % (len(pool) - 1)
        chunk = (pool[off:] + pool[:off]) if size > len(pool) - off else pool[off:off + size]
        with open(d / f"f{i:05d}.bin", "wb") as f:
            while size > 0:
                f.write(chunk[:size])
                size -= len(chunk[:size])
    (ctx / "Dockerfile").write_text(
        f"FROM {BUSYBOX}\n"
        "COPY . /data\n"
        "RUN du -s /data > /data.size\n"
    )


def _make_w3(ctx: Path, rng: random.Random, scale: float) -> None:
    (ctx / "stage.txt").write_text("stage input\n")
    stages = []
    for name in ("alpha", "beta", "gamma", "delta"):
        stages.append(
            f"FROM {BUSYBOX} AS {name}\n"
            "COPY stage.txt /in.txt\n"
            f"RUN sleep {2 if scale >= 1 else 1} && echo {name} > /out.txt\n"
        )
    final = f"FROM {BUSYBOX}\n" + "".join(
        f"COPY --from={n} /out.txt /{n}.txt\n" for n in ("alpha", "beta", "gamma", "delta")
    )
    (ctx / "Dockerfile").write_text("\n".join(stages) + "\n" + final)


def _make_w4(ctx: Path, rng: random.Random, scale: float) -> None:
    files = 5000 if scale >= 1 else 1000
    (ctx / "marker.txt").write_text("w4\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {DEBIAN}\n"
        "COPY marker.txt /marker.txt\n"
        f"RUN mkdir -p /work && cd /work && for i in $(seq 1 {files}); do echo \"file $i\" > f$i.txt; done\n"
        f"RUN cd /work && rm -f $(seq -f 'f%g.txt' 1 2 {files})\n"
    )


def _make_w5(ctx: Path, rng: random.Random, scale: float) -> None:
    files = ctx / "files"
    files.mkdir()
    lines = [f"FROM {BUSYBOX}"]
    for i in range(40 if scale >= 1 else 20):
        kind = i % 4
        if kind == 0:
            lines.append(f"ENV STEP_{i}=value-{i}")
        elif kind == 1:
            (files / f"f{i}.txt").write_text(f"file {i}\n" + _text(rng, 5))
            lines.append(f"COPY files/f{i}.txt /files/f{i}.txt")
        elif kind == 2:
            lines.append(f"RUN echo step {i} >> /steps.log")
        else:
            lines.append(f'LABEL step{i}="{i}"')
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")


def _make_w6(ctx: Path, rng: random.Random, scale: float) -> None:
    (ctx / "marker.txt").write_text("w6\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {DEBIAN}\n"
        "COPY marker.txt /marker.txt\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends jq ca-certificates"
        " && rm -rf /var/lib/apt/lists/*\n"
        'CMD ["jq", "--version"]\n'
    )


_MAKERS = {"W1": _make_w1, "W2": _make_w2, "W3": _make_w3, "W4": _make_w4, "W5": _make_w5, "W6": _make_w6}


def touch_change(ctx: Path, workload: Workload, run: int) -> bytes:
    """Edit the workload's change file (a different content per run); returns the old bytes."""
    path = ctx / workload.changed_file
    old = path.read_bytes()
    path.write_bytes(old + f"\n# change {run} {hashlib.sha256(old).hexdigest()[:8]}\n".encode())
    return old


def restore_change(ctx: Path, workload: Workload, old: bytes) -> None:
    (ctx / workload.changed_file).write_bytes(old)
