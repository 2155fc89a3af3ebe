"""The bench report judges the issues' targets only on the full-size run: a --quick run's smaller
workloads once printed '**no**' beside targets set for 400 MB contexts and 500 MB images."""

from bench import harness, report


def _results(parse_ms: float) -> harness.Results:
    results = harness.Results()
    results.components["parse_speed"] = {"median_ms": parse_ms, "files": 208, "files_per_s": 1000.0}
    return results


def _parse_row(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("| parse,"))


def test_the_full_run_says_whether_each_target_is_met() -> None:
    assert _parse_row(report.headline_table(_results(0.3))).endswith("| yes |")
    assert _parse_row(report.headline_table(_results(3.0))).endswith("| **no** |")


def test_a_quick_run_only_says_how_its_small_workloads_compare() -> None:
    table = report.headline_table(_results(3.0), quick=True)
    assert "targets are judged on the full run" in table[0]
    assert _parse_row(table).endswith("| outside |")
    assert _parse_row(report.headline_table(_results(0.3), quick=True)).endswith("| within |")
    assert not any("yes" in line or "**no**" in line for line in table[2:])
