"""Mistakes a user can make, each answered with one clear message and a non-zero exit (never a
traceback), worded as docker words it where docker has the same mistake."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.helpers.fileserver import serve_files
from tests.helpers.tools import REPO, run_pybuild


def error_of(*args: str, root: Path, code: int = 1, cwd: Path | None = None) -> str:
    """The stderr of a command that must fail with ``code``; no traceback, no internal error."""
    proc = run_pybuild(*args, root=root, cwd=cwd, env={"PYTHONPATH": str(REPO)})
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


def error_without_file_override(*args: str, root: Path) -> str:
    """Run as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so that mode 000 files and
    directories are unreadable as they are to a user; the stderr of a failure (exit 1 or 125)."""
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "builder",
         *args], capture_output=True, env={**os.environ, "PYBUILD_ROOT": str(root)}, cwd=REPO,
        timeout=300)
    err = proc.stderr.decode()
    assert proc.returncode in (1, 125), (proc.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    return err


def test_an_unreadable_file_in_the_context_is_named_at_the_copy_line(tmp_path: Path, ctx: Path) -> None:
    (ctx / "made").chmod(0)
    err = error_without_file_override("build", "-q", str(ctx), root=tmp_path / "root")
    assert err == "ERROR: Dockerfile:2: COPY failed: cannot read made in the build context: permission denied\n"


def test_an_unreadable_context_directory_is_docker_s_prepare_context_error(tmp_path: Path, ctx: Path) -> None:
    ctx.chmod(0)
    try:
        err = error_without_file_override("build", "-q", str(ctx), root=tmp_path / "root")
    finally:
        ctx.chmod(0o755)
    assert err == ("ERROR: unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                   f"lstat {ctx}/Dockerfile: permission denied\n")


def test_an_unreadable_archive_to_load(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"")
    archive.chmod(0)
    err = error_without_file_override("load", "-i", str(archive), root=tmp_path / "root")
    assert err == f"ERROR: open {archive}: permission denied\n"


def test_a_local_output_under_a_directory_that_cannot_be_searched(tmp_path: Path, ctx: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    err = error_without_file_override("build", "-q", "-o", f"type=local,dest={locked}/out", str(ctx),
                                      root=tmp_path / "root")
    assert err == f'ERROR: invalid output path "{locked}/out": Permission denied\n'


def test_an_empty_context_argument_is_no_path(tmp_path: Path, ctx: Path) -> None:
    """docker: `docker build ""` is 'path "" not found'; pybuild built the current directory."""
    for extra in ([], ["--dry-run"]):
        err = error_of("build", *extra, "", root=tmp_path / "root", cwd=ctx)
        assert err == 'ERROR: unable to prepare context: path "" not found\n'


def test_ctrl_c_while_the_cli_is_imported_is_one_message_and_130() -> None:
    """The first tenth of a second of `pybuild` is Python importing the CLI; a Ctrl-C there
    printed an import's traceback. (A KeyboardInterrupt raised by an import stands for it.)"""
    script = (
        "import builtins, builder\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'dataclasses':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "raise SystemExit(builder.console())\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO, timeout=60)
    assert (proc.returncode, proc.stderr.decode()) == (130, "ERROR: interrupted\n")


def test_an_unknown_flag_is_reported_before_a_missing_argument(tmp_path: Path) -> None:
    """cobra reads the flags first; pybuild said the PATH was missing."""
    root = tmp_path / "root"
    cases = {
        ("--nope",): "unknown flag: --nope\nSee 'pybuild build --help'.",
        ("build", "--nope=1"): "unknown flag: --nope\nSee 'pybuild build --help'.",
        ("tag", "-Z", "x"): "unknown shorthand flag: 'Z' in -Z\nSee 'pybuild tag --help'.",
        ("build", "-qZ"): "unknown shorthand flag: 'Z' in -Z\nSee 'pybuild build --help'.",
        ("build", "-Zq", "."): "unknown shorthand flag: 'Z' in -Zq\nSee 'pybuild build --help'.",
        # a value that starts with '-' is the flag's, not an unknown flag
        ("build", "--cpu-quota", "-1"): "\"pybuild build\" requires exactly 1 argument (PATH).\n"
                                        "See 'pybuild build --help'.",
    }
    for args, message in cases.items():
        assert error_of(*args, root=root, code=125) == f"ERROR: {message}\n", args


def test_run_with_a_bad_reference_says_only_that(tmp_path: Path) -> None:
    """docker run reports the reference alone; pybuild said 'Unable to find image' first."""
    err = error_of("run", "UPPER", "true", root=tmp_path / "root", code=125)
    assert err == "ERROR: invalid reference format: repository name (library/UPPER) must be lowercase\n"


def test_a_format_indexes_a_string_s_bytes_as_go_does(tmp_path: Path, ctx: Path) -> None:
    """`{{index .Repository 9}}` printed empty lines and exited 0."""
    root = tmp_path / "root"
    run_pybuild("build", "-q", "-t", "app", str(ctx), root=root, check=True)
    err = error_of("images", "--format", "{{index .Repository 9}}", "app", root=root, code=125)
    assert err == "ERROR: template '{{index .Repository 9}}': error calling index: index out of range: 9\n"
    out = run_pybuild("images", "--format", "{{index .Repository 0}}", "app", root=root, check=True)
    assert out.stdout == b"97\n"
    err = error_of("inspect", "-f", '{{index .Id "x"}}', "app", root=root, code=125)
    assert err.endswith("error calling index: cannot index slice/array with type string\n")


def test_bad_flag_values_are_worded_as_docker_s(tmp_path: Path, ctx: Path) -> None:
    """docker's `invalid argument "V" for "FLAG" flag: REASON` (pybuild adds what it expects);
    an empty size was taken for the default and built."""
    root = tmp_path / "root"
    cases = {
        ("--shm-size", ""): 'invalid argument "" for "--shm-size" flag: invalid size: \'\' '
                            "(a size such as 67108864, 512m or 2g)",
        ("-m", "abc"): 'invalid argument "abc" for "-m, --memory" flag: invalid size: \'abc\' '
                       "(a size such as 67108864, 512m or 2g)",
        ("--build-arg", "=x"): 'invalid argument "=x" for "--build-arg" flag: invalid environment '
                               "variable: =x (expected KEY=VALUE)",
        ("--label", "=x"): 'invalid argument "=x" for "--label" flag: invalid label \'=x\': empty name '
                           "(expected KEY=VALUE)",
        ("--add-host", "x"): 'invalid argument "x" for "--add-host" flag: bad format for add-host: "x" '
                             "(expected NAME:IP)",
        ("--ulimit", "nofile=10:5"): 'invalid argument "nofile=10:5" for "--ulimit" flag: ulimit soft '
                                     "limit must be less than or equal to hard limit: 10 > 5",
        ("-t", "a:b:c"): 'invalid argument "a:b:c" for "-t, --tag" flag: invalid reference format: '
                         "'a:b:c'",
    }
    for args, message in cases.items():
        assert error_of("build", "-q", *args, str(ctx), root=root, code=125) == f"ERROR: {message}\n", args


def test_rmi_of_a_missing_image_names_it_as_docker_s_daemon_does(tmp_path: Path) -> None:
    proc = run_pybuild("rmi", "nosuch", "nosuch:1", root=tmp_path / "root")
    assert proc.returncode == 1
    assert proc.stderr == (b"Error response from daemon: No such image: nosuch:latest\n"
                           b"Error response from daemon: No such image: nosuch:1\n")


def test_an_archive_whose_repo_tags_are_a_string_is_refused(tmp_path: Path, ctx: Path) -> None:
    """A hand-edited manifest.json with "RepoTags": "app" loaded an image named a:latest,
    p:latest, p:latest (one per letter)."""
    root = tmp_path / "root"
    run_pybuild("build", "-q", "-t", "app", str(ctx), root=root, check=True)
    saved = tmp_path / "saved.tar"
    run_pybuild("save", "-o", str(saved), "app", root=root, check=True)
    edited = tmp_path / "edited.tar"
    with tarfile.open(saved) as src, tarfile.open(edited, "w") as out:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data or b"")
                manifest[0]["RepoTags"] = "app"
                data = json.dumps(manifest).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if data is not None else None)
    err = error_of("load", "-i", str(edited), root=tmp_path / "fresh")
    assert err == f"ERROR: {edited}: manifest.json: RepoTags is not a list of image names\n"


def test_login_to_a_web_server_that_is_no_registry_fails(tmp_path: Path) -> None:
    """Its /v2/ answers 404 and asks for no auth: pybuild said "Login Succeeded" and stored the
    password; docker's words for it."""
    docker_config = tmp_path / "docker-config"
    with serve_files({"/index.html": b"hello"}) as url:
        host = url.removeprefix("http://")
        proc = run_pybuild("login", "-u", "me", "--password-stdin", host, input=b"secret\n",
                           root=tmp_path / "root", env={"DOCKER_CONFIG": str(docker_config)})
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"ERROR: login attempt to {url}/v2/ failed with status: 404 Not Found\n"
    assert not (docker_config / "config.json").exists()


def test_extra_arguments_are_counted_as_docker_counts_them(tmp_path: Path) -> None:
    """pybuild said 'accepts at most the given arguments, received extra: b'."""
    root = tmp_path / "root"
    cases = {
        ("images", "a", "b"): '"pybuild images" requires at most 1 argument.',
        ("tag", "a", "b", "c"): '"pybuild tag" requires exactly 2 arguments (SOURCE_IMAGE[:TAG] '
                                'TARGET_IMAGE[:TAG]).',
        ("load", "x"): '"pybuild load" accepts no arguments.',
        ("cache", "du", "x"): '"pybuild cache du" accepts no arguments.',
    }
    for args, message in cases.items():
        help_of = " ".join(args[:2] if args[0] == "cache" else args[:1])
        assert error_of(*args, root=root, code=125) == f"ERROR: {message}\nSee 'pybuild {help_of} --help'.\n"
