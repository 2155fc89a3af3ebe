"""Parser speed over the real-world corpus: files/s, median and p95 milliseconds per file.

    python -m bench.parse_speed [CORPUS_DIR]

Each file is parsed REPEAT times and its best time kept (the machines are noisy);
the LALR parsers are built before timing starts, as a long-running process would.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from builder.frontend.parser import Parser

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "real-world"
REPEAT = 20


def run(corpus_dir: Path | str = DEFAULT_CORPUS, repeat: int = REPEAT) -> dict[str, float]:
    """Time Parser.parse on every Dockerfile under corpus_dir."""
    files = sorted(p for p in Path(corpus_dir).rglob("Dockerfile*") if p.is_file())
    sources = [p.read_bytes() for p in files]
    if not sources:
        raise SystemExit(f"no Dockerfiles under {corpus_dir}")
    parser = Parser()
    parser.parse(b"FROM scratch\n")  # build the LALR parser outside the timing
    best: list[float] = []
    for source in sources:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            parser.parse(source)
            times.append(time.perf_counter() - start)
        best.append(min(times))
    ordered = sorted(best)
    sizes = sorted(len(s) for s in sources)
    lines = sorted(s.count(b"\n") for s in sources)
    return {
        "files": len(sources),
        "median_lines": statistics.median(lines),
        "median_bytes": statistics.median(sizes),
        "files_per_s": len(sources) / sum(best),
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def main(argv: list[str]) -> int:
    corpus = Path(argv[0]) if argv else DEFAULT_CORPUS
    result = run(corpus)
    for key, value in result.items():
        print(f"{key:>13}: {value:,.3f}" if isinstance(value, float) else f"{key:>13}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
