"""``pybuild parse`` and ``pybuild lint``: the frontend on its own, for people, tools and editors.

``parse`` prints BuildKit's AST dump (``--format buildkit``, byte-compatible
with BuildKit's parser tests) or the typed instructions as JSON. ``lint`` runs
the build checks; it exits 1 when a rule is configured with ``error=true`` or
the Dockerfile does not parse, 0 when there are only warnings.

The Dockerfile is found as docker finds it: ``-f FILE`` (relative to the
current directory; ``-`` reads stdin), else ``PATH/Dockerfile``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import DockerfileError, UsageError

if TYPE_CHECKING:
    from builder.frontend.checks import BaseImage, CheckResult, Warning
    from builder.frontend.dockerignore import PatternMatcher
    from builder.frontend.instructions import Dockerfile

ORDER = 60


def _dockerfile_arguments(p: argparse.ArgumentParser) -> None:
    """PATH and -f, found the way `pybuild build` finds them."""
    p.add_argument("path", nargs="?", default=".", metavar="PATH",
                   help="directory holding the Dockerfile (default: .)")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="the Dockerfile (default: PATH/Dockerfile; - reads stdin)")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "parse", parents=[common], help="print how a Dockerfile parses",
        description="Parse a Dockerfile and print BuildKit's AST dump (buildkit) or the typed "
        "instructions with their lines, flags and heredocs (json).",
        usage="pybuild parse [-f FILE] [--format buildkit|json] [PATH]",
    )
    _dockerfile_arguments(p)
    p.add_argument("--format", choices=("buildkit", "json"), default="buildkit",
                   help="buildkit: BuildKit's AST dump (default); json: typed instructions")
    p.set_defaults(func=_parse)

    p = subparsers.add_parser(
        "lint", parents=[common], help="run the build checks on a Dockerfile",
        description="Run BuildKit's build checks. Exits 1 when a rule is configured with "
        "# check=error=true and fires, or the Dockerfile is invalid.",
        usage="pybuild lint [-f FILE] [--format text|json] [--build-arg KEY=VALUE] [PATH]",
    )
    _dockerfile_arguments(p)
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: one line per warning (default); json: for tools")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]",
                   help="a build-time variable, as for build (affects FROM and ARG checks)")
    p.add_argument("--target", metavar="STAGE", help="check only the stages this target needs")
    p.set_defaults(func=lint_command)


@dataclass(frozen=True)
class DockerfileSource:
    """The bytes of a Dockerfile and the name messages use for it."""

    data: bytes
    name: str


def read_dockerfile(path: str, file: str | None, stdin: bytes | None = None) -> DockerfileSource:
    """Find the Dockerfile as docker does: ``-f`` (``-`` = stdin) or ``PATH/Dockerfile``."""
    if file == "-":
        data = stdin if stdin is not None else sys.stdin.buffer.read()
        return DockerfileSource(data, "Dockerfile")
    from builder.execute.named import is_remote_context

    if is_remote_context(path):
        return _remote_dockerfile(path, file)
    target = Path(file) if file else Path(path) / "Dockerfile"
    try:
        return DockerfileSource(target.read_bytes(), str(target))
    except FileNotFoundError:
        raise DockerfileError(
            f"failed to read dockerfile: open {target}: no such file or directory"
        ) from None
    except IsADirectoryError:
        raise DockerfileError(f"failed to read dockerfile: {target} is a directory") from None
    except OSError as err:
        raise DockerfileError(f"failed to read dockerfile {target}: {err.strerror}") from None


def _remote_dockerfile(url: str, file: str | None) -> DockerfileSource:
    """The Dockerfile of a git or http(s) context, fetched into a temp dir (``--check``, ``--call``)."""
    import tempfile

    from builder.execute.context import BuildContext
    from builder.execute.named import fetch_url
    from builder.execute.urls import redact_credentials

    with tempfile.TemporaryDirectory(prefix="pybuild-context-") as scratch:
        root, single = fetch_url(url, Path(scratch), f"build context {url}")
        if single is not None:
            return DockerfileSource(single.read_bytes(), "Dockerfile")
        # Found inside the tree only: its Dockerfile may be a symlink to a host file.
        found = BuildContext.from_tree(root, file, f"build context {redact_credentials(url)}").dockerfile
        data = read_dockerfile(str(root), str(found or root / (file or "Dockerfile"))).data
        return DockerfileSource(data, file or "Dockerfile")


def load_dockerfile(source: DockerfileSource) -> Dockerfile:
    """Parse and type the Dockerfile; errors name file:line."""
    from builder.frontend.instructions import parse_dockerfile
    from builder.frontend.parser import parse

    return parse_dockerfile(parse(source.data, source.name))


def parse_build_args(values: Sequence[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``KEY=VALUE``, or ``KEY`` alone to take the value from the environment (skipped if unset)."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for item in values:
        key, has_value, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid argument \"{item}\" for \"--build-arg\" flag: "
                             "key must not be empty")
        if has_value:
            out[key] = value
        elif key in environ:
            out[key] = environ[key]
    return out


def local_base_env(name: str) -> BaseImage | None:
    """A base image's config from the local store, or None when unknown (never creates a store)."""
    try:
        from builder.frontend.checks import BaseImage
        from cache.store import Store, default_root

        root = default_root()
        if not (root / "meta.db").exists():
            return None
        with Store(root) as store:
            return BaseImage.of(store.image_config(store.resolve(name)))
    except Exception:  # any failure means "unknown": the check then stays quiet
        return None


def context_ignore(context: str, file: str | None) -> PatternMatcher | None:
    """The context's .dockerignore rules (None: no context directory)."""
    from builder.frontend.dockerignore import load_ignore

    if context == "-" or not Path(context).is_dir():
        return None
    dockerfile = Path(file) if file and file != "-" else Path(context) / "Dockerfile"
    return load_ignore(Path(context), dockerfile if file != "-" else None)


def run_lint(dockerfile: Dockerfile, build_args: Mapping[str, str], target: str | None = None,
             stages: Sequence[int] | None = None,
             ignore: PatternMatcher | None = None,
             reachable: Sequence[int] | None = None) -> CheckResult:
    """The checks the way build and lint both run them (BUILDKIT_DOCKERFILE_CHECK overrides # check=)."""
    from builder.frontend.checks import run_checks

    return run_checks(
        dockerfile,
        build_args=build_args,
        base_env=local_base_env,
        stages=stages,
        config=build_args.get("BUILDKIT_DOCKERFILE_CHECK"),
        ignore=ignore,
        reachable=reachable,
    )


def _parse(args: argparse.Namespace) -> int:
    source = read_dockerfile(args.path, args.file)
    if args.format == "buildkit":
        from builder.frontend.dump import dump_buildkit
        from builder.frontend.parser import parse

        text = dump_buildkit(parse(source.data, source.name))
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return 0
    dockerfile = load_dockerfile(source)
    json.dump(dockerfile.to_json(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def lint_command(args: argparse.Namespace) -> int:
    """``pybuild lint``, also ``pybuild build --check``, which exits 1 when a check warns (BuildKit's
    lint subrequest answers status 1 then, and buildx exits with it)."""
    from builder.frontend.checks import warnings_before_error
    from builder.frontend.instructions import parse_dockerfile
    from builder.frontend.parser import parse
    from builder.plan.stages import plan_stages

    source = read_dockerfile(args.path, args.file)
    build_args = parse_build_args(args.build_arg)
    debug = getattr(args, "debug", False)
    parsed = parse(source.data, source.name)
    try:
        dockerfile = parse_dockerfile(parsed)
    except DockerfileError as err:
        # As BuildKit: the warnings of the instructions above the one that fails, then the error.
        found = warnings_before_error(parsed, err, config=build_args.get("BUILDKIT_DOCKERFILE_CHECK"))
        if args.format == "json":
            _print_lint_json(source, found, err)
            return 1
        if getattr(args, "fail_on_warnings", False):
            _print_check(source, found)
        else:
            _print_warnings(found, debug)
        raise
    # Planning also finds what BuildKit's lint reports as errors (no stages, cycles, bad --from).
    plan = plan_stages(dockerfile, target=args.target, build_args=build_args)
    needed = [s.index for s in plan.stages]
    result = run_lint(dockerfile, build_args, stages=needed if args.target else None,
                      ignore=context_ignore(args.path, args.file), reachable=needed)
    error = result.error()
    if args.format == "json":
        _print_lint_json(source, result.warnings, error)
        return 1 if error or (result.warnings and getattr(args, "fail_on_warnings", False)) else 0
    count = len(result.warnings)
    if getattr(args, "fail_on_warnings", False):
        _print_check(source, result.warnings)
    else:
        _print_warnings(result.warnings, debug)
        print(_check_complete(count))
    if error:
        raise error
    return 1 if count and getattr(args, "fail_on_warnings", False) else 0


def _check_complete(count: int) -> str:
    if count == 0:
        return "Check complete, no warnings found."
    return f"Check complete, {count} warning{'s have' if count != 1 else ' has'} been found!"


def _print_check(source: DockerfileSource, warnings: Sequence[Warning]) -> None:
    """``docker build --check``'s report, as buildx prints BuildKit's lint results: the count,
    then each warning (rule, URL, detail) over an excerpt of the Dockerfile, by line."""
    from builder.errors import SourceLocation, source_excerpt

    print(_check_complete(len(warnings)))
    text = source.data.decode("utf-8", "replace")
    name = Path(source.name).name
    for w in sorted(warnings, key=lambda w: (w.start_line > 0, w.start_line)):
        print(f"\nWARNING: {w.rule}" + (f" - {w.url}" if w.url else ""))
        print(w.message)
        if w.start_line:
            print("\n".join(source_excerpt(text, SourceLocation(name, w.start_line, w.end_line))))


def _print_warnings(warnings: Sequence[Warning], debug: bool) -> None:
    for w in warnings:
        print(w)
        if debug and w.url:
            print(f"  {w.url}")


def _print_lint_json(source: DockerfileSource, warnings: Sequence[Warning], error: DockerfileError | None) -> None:
    """BuildKit's ``LintResults``, as buildx prints it for ``--call check,format=json``: the
    warnings, the Dockerfile they point into (``sources``, its bytes base64) and ``buildError``."""
    import base64

    from builder.frontend.checks import lint_location

    results: dict[str, object] = {
        "warnings": [w.to_json() for w in warnings],
        "sources": [{"filename": Path(source.name).name,
                     "data": base64.b64encode(source.data).decode("ascii"),
                     "language": "Dockerfile"}],
    }
    if error is not None:
        message = error.message + (f" ({error.hint})" if error.hint else "")
        results["buildError"] = {"message": message,
                                 "location": lint_location(error.line, error.location.end_line if error.location else None)}
    json.dump(results, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def subrequest_command(args: argparse.Namespace, call: str, fmt: str) -> int:
    """``pybuild build --call outline|targets``: BuildKit's frontend subrequests, built nothing."""
    from builder.frontend import subrequests

    source = read_dockerfile(args.context, args.file)
    dockerfile = load_dockerfile(source)
    if call == "targets":
        found = subrequests.targets(dockerfile)
        if fmt == "json":
            json.dump(subrequests.targets_json(dockerfile, found), sys.stdout, indent=2, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(subrequests.render_targets(found))
        return 0
    def base_env(name: str) -> tuple[str, ...] | None:
        found = local_base_env(name)
        return found.env if found is not None else None

    result = subrequests.outline(dockerfile, build_args=parse_build_args(args.build_arg), target=args.target,
                                 base_env=base_env)
    if fmt == "json":
        json.dump(subrequests.outline_json(result), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(subrequests.render_outline(result))
    return 0
