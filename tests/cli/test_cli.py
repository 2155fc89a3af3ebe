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


def test_command_modules_name_the_module_of_every_command():
    """A run builds only its command's parser, found through COMMAND_MODULES: the table must
    list every command, each with the module that registers it."""
    import argparse

    from builder import cli

    assert set(cli.COMMAND_MODULES) == cli._command_names(cli.build_parser())
    for command, module in cli.COMMAND_MODULES.items():
        parser = cli.build_parser(only=command)
        assert command in cli._command_names(parser), (command, module)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert sub.choices[command].get_default("func").__module__ == f"builder.cli.{module}", command


def test_global_options_before_the_command():
    assert run_pybuild("--root", "/nonexistent-root", "--debug", "parse", "--help", check=True).returncode == 0
    proc = run_pybuild("--debug", "-t", "x")  # the default command after global options
    assert proc.returncode == 125 and b"pybuild build" in proc.stderr


def test_boolean_flags_take_an_explicit_value_as_docker_s_do(tmp_path):
    """``--pull=false``, ``--no-cache=true``, ``--quiet=1``: Go's boolean flag values; a bad one is
    docker's error; `run` leaves what follows the image alone."""
    from builder import cli

    parser = cli.build_parser("build")
    assert cli._explicit_booleans(parser, ["build", "--pull=false", "--no-cache=true", "-q", "--quiet=0", "."]) == \
        ["build", "--no-cache", "-q", "."]
    assert cli._explicit_booleans(parser, ["build", "--build-arg", "--pull=false", "."]) == \
        ["build", "--build-arg", "--pull=false", "."]  # a flag's value is never rewritten
    run = cli.build_parser("run")
    assert cli._explicit_booleans(run, ["run", "--rm=true", "img", "echo", "--rm=true"]) == \
        ["run", "--rm", "img", "echo", "--rm=true"]
    proc = run_pybuild("build", "--pull=maybe", str(tmp_path))
    assert proc.returncode == 125 and b'invalid argument "maybe" for "--pull" flag' in proc.stderr


def test_docker_s_image_management_commands(tmp_path):
    """`pybuild image ls` / `image rm` / `image inspect` as `docker image ...`; a directory named
    `image` still builds; `inspect --type image` is accepted, another type is a clear error."""
    from builder import cli

    commands = cli.COMMAND_MODULES
    assert cli._insert_default_command(["image", "ls", "-q"], commands) == ["images", "-q"]
    assert cli._insert_default_command(["--debug", "image", "rm", "-f", "a"], commands) == ["--debug", "rmi", "-f", "a"]
    assert cli._insert_default_command(["image", "inspect", "a"], commands) == ["inspect", "a"]
    assert cli._insert_default_command(["image"], commands) == ["build", "image"]
    assert cli._insert_default_command(["image", "-t", "x"], commands) == ["build", "image", "-t", "x"]
    root = tmp_path / "root"
    assert run_pybuild("image", "ls", "-q", root=root, check=True).stdout == b""
    proc = run_pybuild("image", "inspect", "--type", "image", "nope", root=root)
    assert proc.returncode == 1 and b"No such image: nope" in proc.stderr
    proc = run_pybuild("inspect", "--type", "container", "nope", root=root)
    assert proc.returncode == 125 and b"pybuild has images only" in proc.stderr


def test_an_unknown_flag_of_a_nested_command_points_at_its_help(tmp_path):
    proc = run_pybuild("cache", "du", "-v", root=tmp_path / "root")
    assert proc.returncode == 125 and proc.stderr == b"ERROR: unknown shorthand flag: 'v' in -v\nSee 'pybuild cache du --help'.\n"
    proc = run_pybuild("store", "check", "--bogus", root=tmp_path / "root")
    assert proc.returncode == 125 and b"See 'pybuild store check --help'." in proc.stderr


def test_debug_in_a_container_s_command_is_not_pybuild_s(tmp_path):
    """`pybuild run IMG prog --debug`: the flag is the program's; pybuild's own errors stay one line."""
    proc = run_pybuild("run", "--pull", "never", "no-such-image:1", "prog", "--debug", root=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "no-such-image" in err and "Traceback" not in err
    proc = run_pybuild("--debug", "run", "--pull", "never", "no-such-image:1", "prog", root=tmp_path)
    assert "Traceback" in proc.stderr.decode()
