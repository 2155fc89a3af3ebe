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

from bench import harness, limits, report
from bench import workloads as wl
from bench.builders import Builder, all_builders

REPO = Path(__file__).resolve().parents[1]


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
        for name, archive in bases.items():
            try:
                b.load_base(name, archive)
            except Exception as err:  # reported in RESULTS.md
                results.notes.append(f"{b.name}: loading base {name} failed: {err}")

    chosen = wl.by_name(args.workloads)
    if args.quick:
        chosen = [w for w in chosen if not w.network]
    for w in chosen:
        ctx = wl.generate(w, args.workdir / "contexts", scale=scale)
        print(f"[bench] {w.name}: {w.title}", flush=True)
        harness.run_workload(w, builders, ctx, runs, scenarios, results, args.workdir)
        if w.name == "W2":
            results.limits.update(limits.copy_tree(ctx, args.workdir, runs=3))
    results.limits.update(limits.hashing_and_compression(16 if args.quick else 64))
    if not args.no_components:
        harness.run_components(args.workdir / "components", results, args.quick)

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    header = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": harness.machine(),
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "duration": f"{(time.time() - started) / 60:.1f} min",
    }
    report.write(results, args.results, header=header, builders=names)
    report.chart(results, args.results.with_name("results.png"), names)
    (args.workdir / "results.json").write_text(json.dumps(
        {"header": header, "cells": {"|".join(k): vars(v) for k, v in results.cells.items()},
         "components": results.components, "limits": results.limits}, indent=1, default=str))
    print(f"[bench] wrote {args.results} in {header['duration']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
