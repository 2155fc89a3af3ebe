"""The build checks as ``pybuild build`` runs them (a real build, FROM scratch): the same
configuration as ``pybuild lint`` and ``--check``, warnings printed, ``error=true`` fails."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.tools import run_pybuild


def test_build_takes_the_check_configuration_from_the_build_arg(ctx: Path, tmp_path: Path) -> None:
    """BUILDKIT_DOCKERFILE_CHECK overrides ``# check=`` for a build as for lint (BuildKit's
    testRuleCheckOption): skip=all silences, error=true fails before anything runs."""
    root = tmp_path / "root"
    (ctx / "Dockerfile").write_text("FROM scratch as build\nCOPY made /made\n")
    plain = run_pybuild("build", "--progress", "plain", str(ctx), root=root, check=True)
    assert b"FromAsCasing: 'as' and 'FROM' keywords' casing do not match" in plain.stderr
    quiet = run_pybuild("build", "--progress", "plain", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all",
                        str(ctx), root=root, check=True)
    assert b"WARN" not in quiet.stderr, quiet.stderr
    failed = run_pybuild("build", "--progress", "plain", "--build-arg",
                         "BUILDKIT_DOCKERFILE_CHECK=skip=ConsistentInstructionCasing;error=true",
                         str(ctx), root=root)
    assert failed.returncode == 1
    assert b"ERROR: lint violation found for rules: FromAsCasing" in failed.stderr
    assert b"COPY made" not in failed.stderr and failed.stdout == b""
    (ctx / "Dockerfile").write_text("# check=error=true\nFROM scratch as build\nCOPY made /made\n")
    allowed = run_pybuild("build", "-q", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all", str(ctx),
                          root=root, check=True)
    assert allowed.stdout.startswith(b"sha256:")


def test_build_reports_a_copy_of_an_ignored_file(ctx: Path, tmp_path: Path) -> None:
    """CopyIgnoredFile (on by default, as in current BuildKit) needs the context's .dockerignore:
    the build knows it as lint does, and then fails on the missing file."""
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made /made\nCOPY secret.txt /\n")
    (ctx / ".dockerignore").write_text("secret.txt\n")
    (ctx / "secret.txt").write_text("s")
    proc = run_pybuild("build", "--progress", "plain", str(ctx), root=tmp_path / "root")
    assert b'CopyIgnoredFile: Attempting to Copy file "secret.txt" that is excluded by .dockerignore' \
        in proc.stderr, proc.stderr
    assert proc.returncode == 1 and b"secret.txt" in proc.stderr.split(b"ERROR", 1)[1]


def test_first_build_reports_undefined_vars_against_a_base_it_has_not_pulled(tmp_path: Path,
                                                                             registry: str) -> None:
    """BuildKit reads the base image's config before the checks: UndefinedVar is reported on the
    first build (base still in the registry) as on the next (base in the store)."""
    from builder.registry import push
    from tests.registry.images import make_image, random_name

    ref = f"{registry}/{random_name('checks')}/base:1"
    push(make_image(1, 100, seed=random_name()), ref)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nENV A=$PATH B=$NOT_SET\n")
    root = tmp_path / "root"
    for build in ("first", "second"):
        proc = run_pybuild("build", "--progress", "plain", str(ctx), root=root, check=True)
        assert proc.stderr.count(b"UndefinedVar") == 1, (build, proc.stderr)
        assert b"Usage of undefined variable '$NOT_SET'" in proc.stderr, (build, proc.stderr)


def test_build_prints_the_warnings_above_an_instruction_that_fails(ctx: Path, tmp_path: Path) -> None:
    (ctx / "Dockerfile").write_text("FROM scratch AS Base\nCOPY made /made\nCOPPY made /again\n")
    proc = run_pybuild("build", "--progress", "plain", str(ctx), root=tmp_path / "root")
    assert proc.returncode == 1
    assert b"WARN: Dockerfile:1: StageNameCasing: Stage name 'Base' should be lowercase" in proc.stderr
    assert b"Dockerfile:3: unknown instruction: COPPY" in proc.stderr


def test_build_warns_of_a_base_image_for_another_platform(tmp_path: Path, registry: str) -> None:
    """A single-platform image of another architecture is taken, with BuildKit's warning."""
    from builder.image.platform import Platform
    from builder.registry import push
    from tests.registry.images import make_image, random_name

    host = Platform.host()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    ref = f"{registry}/{random_name('checks')}/foreign:1"
    push(make_image(1, 100, seed=random_name(), platform=other), ref)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {ref}\nENV A=1\n")
    proc = run_pybuild("build", "--progress", "plain", str(ctx), root=tmp_path / "root", check=True)
    assert (f'InvalidBaseImagePlatform: Base image {ref} was pulled with platform "linux/{other.architecture}", '
            f'expected "linux/{host.architecture}" for current build').encode() in proc.stderr, proc.stderr


def test_build_checks_the_onbuild_triggers_of_its_base_image(ctx: Path, tmp_path: Path) -> None:
    """A base image's ONBUILD triggers run first in the stage built on it: BuildKit checks them
    there, at that FROM line."""
    root = tmp_path / "root"
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made /made\nONBUILD ENV A 1\n")
    run_pybuild("build", "-q", "-t", "onbuilt:1", str(ctx), root=root, check=True)
    (ctx / "Dockerfile").write_text("# the base runs ENV A 1 here\nFROM onbuilt:1\nCOPY made /again\n")
    proc = run_pybuild("build", "--progress", "plain", str(ctx), root=root, check=True)
    assert (b'WARN: Dockerfile:2: LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy '
            b'"ENV key value" format') in proc.stderr, proc.stderr
