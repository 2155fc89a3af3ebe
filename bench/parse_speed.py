"""Parser speed over the real-world corpus: files/s, median and p95 milliseconds per file.

    python -m bench.parse_speed [CORPUS_DIR]

Each file is parsed REPEAT times and its best time kept (the machines are
noisy); the LALR parsers are built before timing starts, as in a long-running
process. When dockerfile-parse is installed it is timed in the same run,
alternating with pybuild file by file, as a reference point.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from builder.frontend.parser import Parser

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "conformance" / "real-world"
REPEAT = 20
HEREDOC_BLOCKS = 300


def _best(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def _summary(prefix: str, times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        f"{prefix}files_per_s": len(times) / sum(times),
        f"{prefix}median_ms": statistics.median(ordered) * 1000,
        f"{prefix}p95_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000,
        f"{prefix}max_ms": ordered[-1] * 1000,
    }


def _dockerfile_parse() -> Callable[[bytes], object] | None:
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        return None

    def structure(source: bytes) -> object:
        return DockerfileParser(fileobj=io.BytesIO(source)).structure

    return structure


def run(corpus_dir: Path | str = DEFAULT_CORPUS, repeat: int = REPEAT, reference: bool = True) -> dict[str, float]:
    """Time Parser.parse (and dockerfile-parse, if wanted and installed) on every Dockerfile."""
    files = sorted(p for p in Path(corpus_dir).rglob("Dockerfile*") if p.is_file())
    sources = [p.read_bytes() for p in files]
    if not sources:
        raise SystemExit(f"no Dockerfiles under {corpus_dir}")
    parser = Parser()
    parser.parse(b"FROM scratch\n")  # build the LALR parser outside the timing
    other = _dockerfile_parse() if reference else None
    ours: list[float] = []
    theirs: list[float] = []
    for source in sources:
        ours.append(_best(partial(parser.parse, source), repeat))
        if other is not None:
            theirs.append(_best(partial(other, source), repeat))
    result: dict[str, float] = {
        "files": len(sources),
        "median_lines": statistics.median(s.count(b"\n") for s in sources),
        "median_bytes": statistics.median(len(s) for s in sources),
        **_summary("", ours),
    }
    # A synthetic file with many heredocs: each body is cut out of the token stream, which
    # must stay linear in the number of heredocs.
    heredocs = "FROM a\n" + "".join(
        f"RUN <<EOF\necho {i} \\\nEOF\n# note\n\nENV A{i}=1\n" for i in range(HEREDOC_BLOCKS)
    )
    result["heredoc_file_lines"] = heredocs.count("\n")
    result["heredoc_file_ms"] = _best(lambda: parser.parse(heredocs), max(3, repeat // 4)) * 1000
    if theirs:
        result.update(_summary("dockerfile_parse_", theirs))
        result["speedup_vs_dockerfile_parse"] = statistics.median(t / o for o, t in zip(ours, theirs, strict=True))
    return result


def main(argv: list[str]) -> int:
    corpus = Path(argv[0]) if argv else DEFAULT_CORPUS
    for key, value in run(corpus).items():
        print(f"{key:>32}: {value:,.3f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
