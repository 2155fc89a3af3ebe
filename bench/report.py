"""RESULTS.md, the ratio chart and the README's headline table, written from one harness run."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import FARM_WORKLOADS, SCENARIO_TITLES, Cell, Results
from bench.workloads import WORKLOADS

NOISE_NOTE = (
    "The machine is shared: other engineers' test suites (docker, runc, registries) ran "
    "during this run, so absolute seconds are noisy. Builders alternate within every "
    "repetition, so the ratios of medians are the figures to read."
)


def _fmt(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 100 else f"{seconds:.0f}"


def _cell_text(results: Results, key: tuple[str, str, str]) -> str:
    cell = results.cells.get(key)
    if cell is not None and cell.error:
        return f"failed: {cell.error}"
    if cell is None or not cell.times:
        return results.reasons.get(key, "not run")
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


def _cell_median(cell: Any) -> float | None:
    if isinstance(cell, Cell) and cell.times:
        return statistics.median(cell.times)
    return None


def farm_ratio(results: Results, workload: str, builder: str = "pybuild") -> float | None:
    """Builder B's --cache-from build over a cold build in an equally empty store."""
    detail = results.farm.get(workload, {}).get(builder, {})
    b, cold = _cell_median(detail.get("cache_from")), _cell_median(detail.get("cold"))
    return b / cold if b is not None and cold else None


@dataclass(frozen=True)
class Headline:
    label: str
    figure: str  # the measured median ratio or value, as text
    target: str
    met: bool | None  # None: no target


def _x(r: float) -> str:
    return f"{r:.2f}x"


def headlines(results: Results) -> list[Headline]:
    """The figures the README quotes, each with its issue's target."""
    out: list[Headline] = []

    def versus(w: str, scenario: str, label: str, target: str, limit: float | None) -> None:
        r = ratio(results, w, scenario, "docker")
        mine = median(results, (w, scenario, "pybuild"))
        if r is None or mine is None:
            out.append(Headline(label, "not measured", target, None if limit is None else False))
            return
        theirs = median(results, (w, scenario, "docker")) or 0.0
        text = f"{_x(r)} ({_fmt(mine)} s vs {_fmt(theirs)} s; {theirs / mine:.1f}x faster)" if r < 1 else \
            f"{_x(r)} ({_fmt(mine)} s vs {_fmt(theirs)} s)"
        out.append(Headline(label, text, target, None if limit is None else r <= limit))

    versus("W1", "cold", "W1 small app, cold build, pybuild/docker", "<= 1 (issue 4)", 1.0)
    versus("W5", "cold", "W5 40 steps, cold build, pybuild/docker", "<= 1 (issue 4)", 1.0)
    noop = median(results, ("W2", "noop", "pybuild"))
    r = ratio(results, "W2", "noop", "docker")
    if noop is not None and r is not None:
        theirs = median(results, ("W2", "noop", "docker")) or 0.0
        out.append(Headline("W2 big context, no-op rebuild, pybuild/docker",
                            f"{_x(r)} ({_fmt(noop)} s vs {_fmt(theirs)} s; {1 / r:.1f}x faster)",
                            "< 1 s and >= 5x faster (issue 5)", noop < 1.0 and r <= 0.2))
    else:
        out.append(Headline("W2 no-op rebuild, pybuild/docker", "not measured", "< 1 s, >= 5x", False))
    versus("W2", "change", "W2 big context, one-file-change rebuild, pybuild/docker", ">= 3x faster (issue 5)", 1 / 3)
    versus("W3", "cold", "W3 four parallel 2 s stages (`--jobs 4`), cold, pybuild/docker",
           "whole build < 4 s (issue 4)", None)
    w3 = median(results, ("W3", "cold", "pybuild"))
    out[-1] = Headline(out[-1].label, out[-1].figure, out[-1].target, w3 is not None and w3 < 4.0)
    for w in FARM_WORKLOADS:
        fr = farm_ratio(results, w)
        detail = results.farm.get(w, {}).get("pybuild", {})
        peer = farm_ratio(results, w, "buildah")
        text = "not measured"
        if fr is not None:
            text = _x(fr) + (" (same image ID as builder A" if detail.get("same_image") else
                             " (image ID differs from A")
            text += f"; buildah's B / cold: {_x(peer)})" if peer is not None else ")"
        out.append(Headline(f"{w} farm builder B (--cache-from, empty store) / cold build", text,
                            "faster than cold (issue 5)", None if fr is None else fr < 1))
    reg = results.components.get("registry", {})
    for op in ("push", "pull"):
        r = reg.get(f"{op}_ratio_skopeo_over_pybuild")
        mbs = reg.get("median_mb_per_s", {})
        if r:
            out.append(Headline(f"{op} of a {reg.get('image', {}).get('bytes', 0) / 1e6:.0f} MB, "
                                f"{reg.get('image', {}).get('layers', '?')}-layer image, pybuild/skopeo",
                                f"{_x(1 / r)} ({mbs.get(f'pybuild_{op}', 0):.0f} vs "
                                f"{mbs.get(f'skopeo_{op}', 0):.0f} MB/s)",
                                ">= skopeo's throughput (issue 6)", 1 / r <= 1.0))
        else:
            out.append(Headline(f"{op} vs skopeo copy", "not measured", ">= skopeo (issue 6)", False))
    parse = results.components.get("parse_speed", {})
    if "median_ms" in parse:
        out.append(Headline(f"parse, median of {parse.get('files', '?')} real-world Dockerfiles",
                            f"{parse['median_ms']:.2f} ms ({parse.get('files_per_s', 0):,.0f} files/s)",
                            "< 2 ms (issue 2)", parse["median_ms"] < 2.0))
    layers = results.components.get("layers", {})
    for op in ("write", "extract"):
        r = layers.get(f"{op}_ratio")
        if r is not None:
            out.append(Headline(f"layer {op} of {layers.get('files')} files / {layers.get('total_mb')} MB, "
                                f"pybuild/tar", f"{_x(r)} ({layers.get(f'{op}_pybuild_s')} s vs "
                                f"{layers.get(f'{op}_tar_s')} s)", "<= 1.5x (issue 3)", r <= 1.5))
    runtime = results.components.get("runtime", {}).get("builders", {})
    if "runc" in runtime and "docker" in runtime:
        out.append(Headline("RUN step overhead (`true`), pybuild runc/docker run",
                            f"{_x(runtime['runc']['ratio_to_docker'])} ({runtime['runc']['median']:.0f} ms "
                            f"vs {runtime['docker']['median']:.0f} ms)", "reported (issue 4)", None))
    return out


def headline_table(results: Results, quick: bool = False) -> list[str]:
    """In a --quick run the workloads are smaller than the ones the targets are set for, so its
    column only says how the small run compares; the full run is the one that meets or misses."""
    met_title = "at --quick size (targets are judged on the full run)" if quick else "met"
    lines = [f"| measure (median ratio; below 1 = pybuild faster) | figure | target | {met_title} |",
             "|---|---|---|---|"]
    for h in headlines(results):
        if h.met is None:
            met = "-"
        elif quick:
            met = "within" if h.met else "outside"
        else:
            met = "yes" if h.met else "**no**"
        lines.append(f"| {h.label} | {h.figure} | {h.target} | {met} |")
    return lines


def _components(results: Results) -> list[str]:
    lines: list[str] = ["## pybuild components against their peer tools (same run)", ""]
    c = results.components
    parse = c.get("parse_speed", {})
    if "median_ms" in parse:
        lines += ["### Parse (bench/parse_speed.py): the real-world corpus, best of 20 per file", "",
                  "| files | median ms | p95 ms | max ms | files/s | dockerfile-parse median ms |",
                  "|---|---|---|---|---|---|",
                  f"| {parse['files']} | {parse['median_ms']:.3f} | {parse['p95_ms']:.3f} | "
                  f"{parse['max_ms']:.2f} | {parse['files_per_s']:,.0f} | "
                  f"{parse.get('dockerfile_parse_median_ms', float('nan')):.3f} |", ""]
    layers = c.get("layers", {})
    if "write_ratio" in layers:
        lines += [f"### Layers (bench/layers.py): {layers['files']} files / {layers['total_mb']} MB, "
                  f"{layers['runs']} alternating runs against GNU tar", "",
                  "| step | pybuild s | tar s | ratio (wall) | ratio (CPU) |", "|---|---|---|---|---|"]
        for op in ("write", "extract"):
            lines.append(f"| {op} | {layers[f'{op}_pybuild_s']} | {layers[f'{op}_tar_s']} | "
                         f"{layers[f'{op}_ratio']} | {layers[f'{op}_cpu_ratio']} |")
        lines.append("")
    runtime = c.get("runtime", {})
    if "builders" in runtime:
        lines += [f"### RUN step overhead (bench/runtime.py): `true`, start to exit, {runtime['runs']} runs", "",
                  "| isolation | min ms | median ms | max ms | / docker run |", "|---|---|---|---|---|"]
        for name, row in runtime["builders"].items():
            lines.append(f"| {name} | {row['min']} | {row['median']} | {row['max']} | {row['ratio_to_docker']} |")
        lines.append("")
    reg = c.get("registry", {})
    if "median_seconds" in reg:
        med, mbs = reg["median_seconds"], reg["median_mb_per_s"]
        lines += [f"### Registry (bench/registry.py): {reg['image']['layers']} layers, "
                  f"{reg['image']['bytes'] / 1e6:.0f} MB, {reg['runs']} alternating runs, loopback registry", "",
                  "| operation | pybuild s | skopeo s | pybuild MB/s | skopeo MB/s | skopeo time / pybuild time |",
                  "|---|---|---|---|---|---|"]
        for op in ("push", "pull"):
            lines.append(f"| {op} | {med[f'pybuild_{op}']:.2f} | {med[f'skopeo_{op}']:.2f} | "
                         f"{mbs[f'pybuild_{op}']:.0f} | {mbs[f'skopeo_{op}']:.0f} | "
                         f"{reg[f'{op}_ratio_skopeo_over_pybuild']:.2f} |")
        lines.append("")
    for name, data in c.items():
        if "error" in data or name not in ("parse_speed", "layers", "runtime", "registry"):
            lines += [f"### {name}", "", "```", json.dumps(data, indent=1, default=str)[:4000], "```", ""]
    took = ", ".join(f"{k} {v.get('_seconds', '?')} s" for k, v in c.items())
    lines += [f"Component run times: {took}.", ""]
    return lines


def _farm(results: Results) -> list[str]:
    if not results.farm:
        return []
    lines = ["## Shared cache: farm builder B", "",
             "Builder A builds once with its registry cache export (pybuild: `--cache-to "
             "type=registry,ref=...,mode=max`; buildah: `--layers --cache-to REPO`), time below. "
             "Builder B starts from an empty store holding only the base image and builds with "
             "`--cache-from`, alternating with a cold build in an equally empty store. docker's "
             "classic builder cannot export a build cache to a registry.", "",
             "| workload | builder | A: build + cache export s | B: --cache-from s | cold s | B / cold "
             "| B's image ID = A's |", "|---|---|---|---|---|---|---|"]
    for w, by_builder in results.farm.items():
        for name, d in by_builder.items():
            fr = farm_ratio(results, w, name)
            same = "yes" if d.get("same_image") else "no"
            export = d.get("export_s")
            lines.append(f"| {w} | {name} | {f'{export:.2f}' if export is not None else '-'} | "
                         f"{_cell_text_of(d.get('cache_from'))} | {_cell_text_of(d.get('cold'))} | "
                         f"{f'{fr:.2f}' if fr is not None else '-'} | {same} |")
    return [*lines, ""]


def _cell_text_of(cell: Any) -> str:
    if not isinstance(cell, Cell) or not cell.times:
        return "-"
    t = cell.times
    return f"{_fmt(statistics.median(t))} ({_fmt(min(t))}-{_fmt(max(t))}, n={len(t)})"


def write(results: Results, out: Path, *, header: dict[str, str], builders: list[str]) -> None:
    lines = ["# Benchmark results", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", NOISE_NOTE, "", "## Headline figures", "", *headline_table(results, "mode" in header), "",
              "![ratios](results.png)", "", "## Builds: every workload x scenario x builder", "",
              "Seconds: median (min-max, n runs). Ratio = pybuild median / peer median "
              "(below 1 means pybuild is faster). docker is the classic builder (`DOCKER_BUILDKIT=0`, "
              "`--network host`); buildah runs `bud --layers --isolation chroot`. Cold: pybuild starts "
              "from a fresh store holding only the base image (loaded and unpacked outside the "
              "timing); docker and buildah remove the images they built and their intermediate images.",
              ""]
    peers = [b for b in builders if b != "pybuild"]
    cols = ["workload", "scenario", *builders, *(f"pybuild/{p}" for p in peers)]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for w in WORKLOADS:
        for scenario, title in SCENARIO_TITLES.items():
            keys = [(w.name, scenario, b) for b in builders]
            if not any(k in results.cells or k in results.reasons for k in keys):
                continue
            row = [f"{w.name}", title]
            row += [_cell_text(results, k) for k in keys]
            for p in peers:
                r = ratio(results, w.name, scenario, p)
                row.append(f"{r:.2f}" if r is not None else "-")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Workloads: " + "; ".join(
        f"{w.name} {w.title}" + (f" (built with `--jobs {w.jobs}` by pybuild and buildah; docker's "
                                 "classic builder has no such option and runs one step at a time)"
                                 if w.jobs else "") for w in WORKLOADS) + ".", ""]
    lines += ["## Images (size in MB / layers)", "",
              "| workload | " + " | ".join(builders) + " |", "|" + "---|" * (len(builders) + 1)]
    for w in WORKLOADS:
        row = [f"{w.name}: {w.title}"]
        for b in builders:
            info = results.info.get((w.name, b))
            row.append(f"{info.size / 1e6:.1f} / {info.layers}" if info else "-")
        if any(v != "-" for v in row[1:]):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _farm(results)
    if results.components:
        lines += _components(results)
    if results.limits:
        lines += ["## Physical limits of this machine (same run)", "", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in results.limits.items()]
        lines.append("")
    if results.durations:
        lines += ["Phase durations: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in results.durations.items())
                  + ".", ""]
    if results.notes:
        lines += ["## Notes", ""] + [f"- {n.strip().splitlines()[0][:300]}" for n in results.notes[:40]]
    lines.append("")
    out.write_text("\n".join(lines))


def readme_section(results: Results, header: dict[str, str]) -> str:
    """The README's ``## Benchmarks`` section, quoting this run only."""
    lines = ["## Benchmarks", "",
             "`make bench` (`python -m bench`) builds six workloads with pybuild, docker's classic "
             "builder and buildah, alternating, and measures pybuild's parts against their peer tools "
             "(`make bench-quick` is a smaller run). Every figure below comes from one run:", "",
             f"- machine: {header.get('machine', '?')}", f"- date: {header.get('date', '?')}",
             f"- command: `{header.get('command', '?')}`, commit {header.get('commit', '?')}",
             f"- {header.get('builders', '')}", "",
             *headline_table(results, "mode" in header), "",
             "All cells (min / median / max, image sizes and layer counts, physical limits of the "
             "machine): [bench/RESULTS.md](bench/RESULTS.md); chart: "
             "[bench/results.png](bench/results.png). " + NOISE_NOTE, ""]
    return "\n".join(lines)


def chart(results: Results, out: Path, builders: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [b for b in builders if b != "pybuild"]
    labels: list[str] = []
    series: dict[str, list[float]] = {p: [] for p in peers}
    for w in WORKLOADS:
        for scenario in SCENARIO_TITLES:
            if not any(ratio(results, w.name, scenario, p) for p in peers):
                continue
            labels.append(f"{w.name} {scenario}")
            for p in peers:
                series[p].append(ratio(results, w.name, scenario, p) or 0.0)
    extra: list[tuple[str, float]] = []
    for name in FARM_WORKLOADS:
        fr = farm_ratio(results, name)
        if fr is not None:
            extra.append((f"{name} farm B / pybuild cold", fr))
    reg = results.components.get("registry", {})
    for op in ("push", "pull"):
        if reg.get(f"{op}_ratio_skopeo_over_pybuild"):
            extra.append((f"{op} / skopeo", 1 / reg[f"{op}_ratio_skopeo_over_pybuild"]))
    layers = results.components.get("layers", {})
    for op in ("write", "extract"):
        if layers.get(f"{op}_ratio"):
            extra.append((f"layer {op} / tar", layers[f"{op}_ratio"]))
    runc = results.components.get("runtime", {}).get("builders", {}).get("runc", {})
    if runc.get("ratio_to_docker"):
        extra.append(("RUN overhead / docker run", runc["ratio_to_docker"]))
    if not labels and not extra:
        return
    n = len(labels) + len(extra)
    fig, ax = plt.subplots(figsize=(max(9, n * 0.45), 5.5))
    width = 0.8 / max(1, len(peers))
    for i, p in enumerate(peers):
        ax.bar([x + i * width for x in range(len(labels))], series[p], width, label=f"pybuild / {p}")
    if extra:
        xs = [len(labels) + i + width * (len(peers) - 1) / 2 for i in range(len(extra))]
        ax.bar(xs, [v for _, v in extra], width, color="tab:gray", label="pybuild / peer tool")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.1g"))
    ax.set_ylabel("time ratio, median (below 1: pybuild faster)")
    ticks = [x + width * (len(peers) - 1) / 2 for x in range(n)]
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels + [name for name, _ in extra], rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax.set_title("pybuild against docker build (classic), buildah and peer tools, one run")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
