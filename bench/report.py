"""RESULTS.md and the ratio chart, written from one harness run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.harness import SCENARIO_TITLES, Results
from bench.workloads import WORKLOADS


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def _cell_text(results: Results, key: tuple[str, str, str]) -> str:
    cell = results.cells.get(key)
    if cell is None:
        return "not run"
    if cell.error:
        return f"failed: {cell.error}"
    if not cell.times:
        return "not run"
    t = cell.times
    return f"{_fmt(statistics.median(t))} ({_fmt(min(t))}-{_fmt(max(t))}, n={len(t)})"


def median(results: Results, key: tuple[str, str, str]) -> float | None:
    cell = results.cells.get(key)
    if cell is None or cell.error or not cell.times:
        return None
    return statistics.median(cell.times)


def ratio(results: Results, workload: str, scenario: str, peer: str) -> float | None:
    mine = median(results, (workload, scenario, "pybuild"))
    theirs = median(results, (workload, scenario, peer))
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def write(results: Results, out: Path, *, header: dict[str, str], builders: list[str]) -> None:
    lines = ["# Benchmark results", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", "Seconds: median (min-max, n runs). Ratio = pybuild median / peer median "
              "(below 1 means pybuild is faster).", ""]
    peers = [b for b in builders if b != "pybuild"]
    cols = ["workload", "scenario", *builders, *(f"pybuild/{p}" for p in peers)]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for w in WORKLOADS:
        for scenario in SCENARIO_TITLES:
            if not any(k[0] == w.name and k[1] == scenario for k in results.cells):
                continue
            row = [f"{w.name}", SCENARIO_TITLES[scenario]]
            row += [_cell_text(results, (w.name, scenario, b)) for b in builders]
            for p in peers:
                r = ratio(results, w.name, scenario, p)
                row.append(f"{r:.2f}" if r is not None else "-")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Images (size in MB / layers)", "",
              "| workload | " + " | ".join(builders) + " |", "|" + "---|" * (len(builders) + 1)]
    for w in WORKLOADS:
        row = [f"{w.name}: {w.title}"]
        for b in builders:
            info = results.info.get((w.name, b))
            row.append(f"{info.size / 1e6:.1f} / {info.layers}" if info else "-")
        if any(v != "-" for v in row[1:]):
            lines.append("| " + " | ".join(row) + " |")
    if results.components:
        lines += ["", "## pybuild components against their peer tools", ""]
        for name, data in results.components.items():
            lines += [f"### {name}", "", "```", json.dumps(data, indent=2, default=str), "```", ""]
    if results.limits:
        lines += ["## Physical limits of this machine (same run)", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in results.limits.items()]
    if results.notes:
        lines += ["", "## Notes", ""] + [f"- {n.splitlines()[0][:300]}" for n in results.notes[:40]]
    lines += ["", "![ratios](results.png)", ""]
    out.write_text("\n".join(lines))


def chart(results: Results, out: Path, builders: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [b for b in builders if b != "pybuild"]
    labels, series = [], {p: [] for p in peers}
    for w in WORKLOADS:
        for scenario in SCENARIO_TITLES:
            if not any(ratio(results, w.name, scenario, p) for p in peers):
                continue
            labels.append(f"{w.name} {scenario}")
            for p in peers:
                series[p].append(ratio(results, w.name, scenario, p) or 0.0)
    if not labels:
        return
    fig, ax = plt.subplots(figsize=(max(8, len(labels) * 0.6), 5))
    width = 0.8 / len(peers)
    for i, p in enumerate(peers):
        ax.bar([x + i * width for x in range(len(labels))], series[p], width, label=f"pybuild / {p}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("time ratio (lower is better for pybuild)")
    ax.set_xticks([x + width * (len(peers) - 1) / 2 for x in range(len(labels))])
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
