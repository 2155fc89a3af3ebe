"""The command line behaves like docker's: version, help, build as default, argument errors."""

from builder import __version__
from tests.helpers.tools import run_pybuild


def test_version():
    proc = run_pybuild("--version", check=True)
    assert proc.stdout.decode().strip() == f"pybuild version {__version__}"


def test_help_lists_build():
    out = run_pybuild("--help", check=True).stdout.decode()
    assert "build" in out


def test_unknown_flag_is_a_docker_style_error():
    proc = run_pybuild("build", "--no-such-flag", ".")
    assert proc.returncode == 125
    err = proc.stderr.decode()
    assert "unknown flag: --no-such-flag" in err
    assert "See 'pybuild build --help'." in err
    assert "Traceback" not in err


def test_missing_context_is_a_docker_style_error():
    proc = run_pybuild("build", "-t", "x")
    assert proc.returncode == 125
    assert "Traceback" not in proc.stderr.decode()
