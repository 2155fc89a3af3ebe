"""``pybuild parse``, ``pybuild lint`` and the interim ``pybuild build``, run as a user runs them."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.helpers.tools import CONFORMANCE, REPO, run_pybuild

HELLO = REPO / "fixtures" / "hello"
PARSER_CASES = CONFORMANCE / "buildkit-parser" / "positive"


def out(proc) -> str:
    return proc.stdout.decode()


def err(proc) -> str:
    return proc.stderr.decode()


@pytest.mark.parametrize("case", ["docker", "escape-with-syntax", "health", "flags"])
def test_parse_buildkit_dump_matches_buildkit(case):
    proc = run_pybuild("parse", "-f", str(PARSER_CASES / case / "Dockerfile"), check=True)
    assert out(proc) == (PARSER_CASES / case / "result").read_text()


def test_parse_json_has_stages_lines_flags_and_heredocs(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE=busybox\nFROM $BASE AS build\nRUN --mount=type=cache,target=/c <<EOF\nmake\nEOF\n"
        "FROM scratch\nCOPY --from=build --link /out /\n"
    )
    proc = run_pybuild("parse", "--format", "json", str(tmp_path), check=True)
    data = json.loads(out(proc))
    assert data["meta_args"][0]["args"] == [{"key": "BASE", "default": "busybox", "comment": ""}]
    build, final = data["stages"]
    assert (build["name"], build["base_name"], build["start_line"], build["end_line"]) == (
        "build", "$BASE", 2, 5)
    run = build["commands"][0]
    assert (run["instruction"], run["start_line"], run["end_line"]) == ("RUN", 3, 5)
    assert run["original"] == "RUN --mount=type=cache,target=/c <<EOF"
    assert run["mounts"][0]["type"] == "cache" and run["mounts"][0]["target"] == "/c"
    assert run["files"] == [{"name": "EOF", "data": "make\n", "chomp": False, "expand": True}]
    copy = final["commands"][0]
    assert (copy["from"], copy["link"], copy["sources"], copy["dest"]) == ("build", True, ["/out"], "/")


def test_parse_reads_stdin_and_reports_errors_with_lines():
    proc = run_pybuild("parse", "-f", "-", input=b"FROM busybox\nRUN true\n", check=True)
    assert out(proc) == '(from "busybox")\n(run "true")\n'
    proc = run_pybuild("parse", "--format", "json", "-f", "-", input=b"FROM busybox\nFORM x\n")
    assert proc.returncode == 1
    assert "ERROR: Dockerfile:2: unknown instruction: FORM (did you mean FROM?)" in err(proc)
    assert "   2 | FORM x" in err(proc)
    assert "Traceback" not in err(proc)


def test_missing_dockerfile(tmp_path: Path):
    proc = run_pybuild("lint", str(tmp_path))
    assert proc.returncode == 1
    assert f"failed to read dockerfile: open {tmp_path}/Dockerfile: no such file or directory" in err(proc)


def test_lint_prints_warnings_and_exits_0(tmp_path: Path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM busybox as build\nMAINTAINER me\nCMD run\n")
    proc = run_pybuild("lint", "--debug", str(tmp_path), check=True)
    lines = out(proc).splitlines()
    assert lines[0] == f"{dockerfile}:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match"
    assert lines[1] == "  https://docs.docker.com/go/dockerfile/rule/from-as-casing/"
    assert f"{dockerfile}:2: MaintainerDeprecated: Maintainer instruction is deprecated" in out(proc)
    assert lines[-1] == "Check complete, 3 warnings have been found!"
    clean = run_pybuild("lint", str(HELLO), check=True)
    assert out(clean) == "Check complete, no warnings found.\n"


def test_lint_reads_the_dockerignore(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("# check=experimental=all\nFROM scratch\nCOPY secret.txt /\n")
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    proc = run_pybuild("lint", str(tmp_path), check=True)
    assert (f"{tmp_path}/Dockerfile:3: CopyIgnoredFile: Attempting to Copy file \"secret.txt\" "
            "that is excluded by .dockerignore") in out(proc)


def test_lint_checks_onbuild_triggers_in_the_stages_that_run_them(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("FROM busybox AS base\nONBUILD CMD echo hi\nFROM base AS child\n"
                                         "FROM busybox\n")
    assert out(run_pybuild("lint", str(tmp_path), check=True)) == "Check complete, no warnings found.\n"
    child = run_pybuild("lint", "--target", "child", str(tmp_path), check=True)
    assert out(child).splitlines()[0] == (f"{tmp_path}/Dockerfile:3: JSONArgsRecommended: JSON arguments "
                                          "recommended for CMD to prevent unintended behavior related to OS signals")


def test_lint_prints_the_warnings_above_an_instruction_that_fails(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("\nFROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n")
    proc = run_pybuild("lint", str(tmp_path))
    assert proc.returncode == 1
    assert out(proc).splitlines() == [
        f"{tmp_path}/Dockerfile:2: StageNameCasing: Stage name 'BadStageName' should be lowercase",
        f"{tmp_path}/Dockerfile:3: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label"]
    assert "Dockerfile:4: unknown instruction: BADCMD" in err(proc)
    data = json.loads(out(run_pybuild("lint", "--format", "json", str(tmp_path))))
    assert [w["ruleName"] for w in data["warnings"]] == ["StageNameCasing", "MaintainerDeprecated"]
    assert data["buildError"] == {"message": "unknown instruction: BADCMD",
                                  "location": {"ranges": [{"start": {"line": 4}, "end": {"line": 4}}]}}
    assert [s["filename"] for s in data["sources"]] == ["Dockerfile"]
    assert base64.b64decode(data["sources"][0]["data"]) == (tmp_path / "Dockerfile").read_bytes()
    dry = run_pybuild("build", "--dry-run", str(tmp_path))
    assert dry.returncode == 1
    assert "WARN: StageNameCasing: Stage name 'BadStageName' should be lowercase (line 2)" in err(dry)


def test_lint_reports_plan_errors(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("ARG A=1\n")
    proc = run_pybuild("lint", str(tmp_path))
    assert proc.returncode == 1
    assert "dockerfile contains no stages to build" in err(proc)


def test_lint_error_directive_fails_and_json_output(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("# check=error=true\nFROM busybox as build\n")
    proc = run_pybuild("lint", str(tmp_path))
    assert proc.returncode == 1
    assert "ERROR: lint violation found for rules: FromAsCasing" in err(proc)
    proc = run_pybuild("lint", "--format", "json", str(tmp_path))
    assert proc.returncode == 1
    data = json.loads(out(proc))
    assert data["buildError"] == {"message": "lint violation found for rules: FromAsCasing", "location": {}}
    (warning,) = data["warnings"]
    # BuildKit's lint.Warning, as docker build --call check,format=json prints it
    assert warning == {
        "ruleName": "FromAsCasing",
        "description": "The 'as' keyword should match the case of the 'from' keyword",
        "url": "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
        "detail": "'as' and 'FROM' keywords' casing do not match",
        "location": {"ranges": [{"start": {"line": 2}, "end": {"line": 2}}]},
    }
    skipped = run_pybuild("lint", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing",
                          str(tmp_path), check=True)
    assert "no warnings" in out(skipped)


def test_build_prints_parse_and_plan_and_builds_nothing():
    proc = run_pybuild("build", "--dry-run", "-t", "hello", str(HELLO), check=True)
    text = out(proc)
    assert f"{HELLO}/Dockerfile: 2 stage(s)" in text
    assert '     5  FROM ${BASE} AS build' in text
    assert "    12  COPY --from=build /src/message.txt /etc/message.txt" in text
    assert "#1 stage-1  busybox:local  build  1      10" in text
    assert "No image was built" in text
    assert err(proc) == ""


def test_build_target_build_args_and_warnings(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE=busybox\nFROM $BASE as deps\nRUN a\nFROM $BASE AS app\nCOPY --from=deps / /\n"
        "FROM $BASE AS docs\n"
    )
    proc = run_pybuild("build", "--dry-run", "--target", "app", "--build-arg", "BASE=alpine:3",
                       "--build-arg", "NOBODY=1", str(tmp_path), check=True)
    text = out(proc)
    assert "target app: 2 of 3 stage(s) needed" in text
    assert "#0 deps  alpine:3" in text
    assert "WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 2)" in err(proc)
    assert "WARN: build-arg NOBODY was not consumed" in err(proc)
    bad = run_pybuild("build", "--dry-run", "--target", "dosc", str(tmp_path))
    assert bad.returncode == 1
    assert 'target stage "dosc" could not be found (did you mean docs?)' in err(bad)
    assert "stages: deps, app, docs" in err(bad)


def test_build_context_from_stdin(tmp_path: Path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        body = b"FROM busybox AS only\nRUN true\n"
        info = tarfile.TarInfo("sub/Build.file")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    proc = run_pybuild("build", "--dry-run", "-f", "sub/Build.file", "-", input=data.getvalue(), check=True)
    assert "sub/Build.file: 1 stage(s)" in out(proc)
    plain = run_pybuild("build", "--dry-run", "-", input=b"FROM busybox\n", check=True)
    assert "Dockerfile: 1 stage(s)" in out(plain)
    from_stdin = run_pybuild("build", "--dry-run", "-f", "-", str(tmp_path), input=b"FROM busybox\n", check=True)
    assert "#0 stage-0  busybox" in out(from_stdin)
    both = run_pybuild("build", "--dry-run", "-f", "-", "-", input=b"FROM busybox\n")
    assert both.returncode == 1  # as docker's
    assert "can't use stdin for both build context and dockerfile" in err(both)
    missing = run_pybuild("build", "--dry-run", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert 'unable to prepare context: path "' in err(missing)


def test_build_fails_on_lint_error_and_on_expansion_error(tmp_path: Path):
    (tmp_path / "Dockerfile").write_text("# check=error=true\nFROM busybox\nMAINTAINER me\n")
    proc = run_pybuild("build", "--dry-run", str(tmp_path))
    assert proc.returncode == 1
    assert "WARN: MaintainerDeprecated" in err(proc)
    assert "ERROR: lint violation found for rules: MaintainerDeprecated" in err(proc)
    assert "No image was built" not in out(proc)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nWORKDIR ${DIR:?set DIR with --build-arg}\n")
    proc = run_pybuild("build", "--dry-run", str(tmp_path))
    assert proc.returncode == 1
    assert "Dockerfile:2: " in err(proc) and "set DIR with --build-arg" in err(proc)
    assert "Traceback" not in err(proc)
