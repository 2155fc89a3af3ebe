"""``python -m bench`` (``make bench``): pybuild side by side with docker build and buildah.

Installs and starts what it needs (tests/setup.sh), generates the workloads,
runs every builder in turn, and writes bench/RESULTS.md and bench/results.png
with the command and commit that produced them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench import harness, limits, registry, report
from bench import workloads as wl
from bench.builders import BenchError, Builder, Pybuild, all_builders

REPO = Path(__file__).resolve().parents[1]


def _commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def _version(b: Builder) -> str:
    try:
        return b.version()
    except (BenchError, OSError, IndexError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads, 3 runs: under 10 minutes")
    parser.add_argument("--runs", type=int, help="repetitions per cell (default 5, quick 3)")
    parser.add_argument("--workloads", help="comma-separated subset, e.g. W1,W3")
    parser.add_argument("--scenarios", default=",".join(harness.SCENARIOS))
    parser.add_argument("--builders", default="pybuild,docker,buildah")
    parser.add_argument("--no-components", action="store_true")
    parser.add_argument("--no-setup", action="store_true", help="skip tests/setup.sh (already done)")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)

    started = time.time()
    commit_at_start = _commit()
    if not args.no_setup:
        subprocess.run(["bash", str(REPO / "tests" / "setup.sh")], check=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = args.runs or (3 if args.quick else 5)
    scale = 0.1 if args.quick else 1.0
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    wanted = set(args.builders.split(","))
    builders: list[Builder] = [b for b in all_builders(args.workdir) if b.name in wanted]
    names = [b.name for b in builders]

    results = harness.Results()
    harness.clean(args.workdir)
    bases = harness.make_base_archives(args.workdir)
    for b in builders:
        if isinstance(b, Pybuild):
            b.warm_bytecode()
        for name, archive in bases.items():
            try:
                b.load_base(name, archive)
            except Exception as err:  # reported in RESULTS.md
                results.notes.append(f"{b.name}: loading base {name} failed: {err}")
    versions = {b.name: _version(b) for b in builders}

    chosen = wl.by_name(args.workloads)
    for w in wl.WORKLOADS:
        if w not in chosen:
            reason = "not run: not in --workloads"
        elif args.quick and w.network:
            reason = "not run in --quick (needs the network)"
        else:
            continue
        for scenario in scenarios:
            for name in names:
                results.reasons[(w.name, scenario, name)] = reason
    if args.quick:
        chosen = [w for w in chosen if not w.network]
    with registry.fresh_registry(args.workdir / "registry-main") as addr:
        for w in chosen:
            ctx = wl.generate(w, args.workdir / "contexts", scale=scale)
            print(f"[bench] {w.name}: {w.title}", flush=True)
            phase = time.time()
            harness.run_workload(w, builders, ctx, runs, scenarios, results, args.workdir, addr)
            if w.name == "W2":
                results.limits.update(limits.copy_tree(ctx, args.workdir, runs=3))
            results.durations[w.name] = time.time() - phase
            print(f"[bench] {w.name} took {results.durations[w.name] / 60:.1f} min", flush=True)
        phase = time.time()
        results.limits.update(limits.hashing_and_compression(16 if args.quick else 64))
        results.durations["limits"] = time.time() - phase
        if not args.no_components:
            phase = time.time()
            harness.run_components(args.workdir / "components", results, args.quick, addr)
            results.durations["components"] = time.time() - phase
    harness.clean(args.workdir)

    commit = commit_at_start
    if _commit() != commit_at_start:  # others commit to the shared tree while the run goes on
        commit += f" at the start, {_commit()} at the end"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.splitlines()
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": harness.machine(),
        "command": " ".join(["python -m bench", shlex.join(argv if argv is not None else sys.argv[1:])]).strip(),
        "commit": commit + (f" (plus {len(dirty)} uncommitted file(s) in the shared tree)" if dirty else ""),
        "builders": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "runs": f"{runs} per cell, builders alternating; 3 for the slowest (W2, W6, and any cell whose "
                f"slowest builder's median exceeds {harness.SLOW_CELL_SECONDS:.0f} s)",
        "duration": f"{(time.time() - started) / 60:.1f} min",
    }
    if args.quick:
        header["mode"] = wl.QUICK_NOTE
    report.write(results, args.results, header=header, builders=names)
    report.chart(results, args.results.with_name("results.png"), names)
    (args.workdir / "README-benchmarks.md").write_text(report.readme_section(results, header))
    (args.workdir / "results.json").write_text(json.dumps(
        {"header": header, "cells": {"|".join(k): vars(v) for k, v in results.cells.items()},
         "reasons": {"|".join(k): v for k, v in results.reasons.items()},
         "info": {"|".join(k): vars(v) for k, v in results.info.items()},
         "farm": results.farm, "components": results.components, "limits": results.limits,
         "durations": results.durations, "notes": results.notes}, indent=1, default=str))
    print(f"[bench] wrote {args.results} in {header['duration']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
