"""Mistakes a user can make, each answered with one clear message and a non-zero exit (never a
traceback), worded as docker words it where docker has the same mistake."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.tools import run_pybuild


def error_of(*args: str, root: Path, code: int = 1, cwd: Path | None = None) -> str:
    """The stderr of a command that must fail with ``code``; no traceback, no internal error."""
    proc = run_pybuild(*args, root=root, cwd=cwd)
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def test_deeply_nested_substitution_is_a_dockerfile_error(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nARG A=1\nENV X=" + "${A:-" * 2000 + "z"
                                         + "}" * 2000 + "\n")
    for command in ("lint", "build"):
        err = error_of(command, str(tmp_path), root=tmp_path / "root")
        assert err.splitlines()[0].endswith(
            "Dockerfile:3: variable substitutions nested more than 100 levels deep"), err


def test_bytes_that_are_not_utf8_in_a_dockerfile_build_as_docker_s_json_writes_them(
        tmp_path: Path, ctx: Path) -> None:
    """Go's encoding/json writes U+FFFD for each byte that is not UTF-8; pybuild crashed."""
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\nLABEL l=a\xffb\nCOPY made /made\n")
    root = tmp_path / "root"
    proc = run_pybuild("build", "-q", "-t", "u8", str(ctx), root=root)
    assert proc.returncode == 0, proc.stderr.decode()
    labels = json.loads(run_pybuild("inspect", "-f", "{{json .Config.Labels}}", "u8", root=root,
                                    check=True).stdout)
    assert labels == {"l": "a\ufffdb"}
