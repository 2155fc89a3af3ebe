"""``pybuild build --dry-run``: find the Dockerfile, check it, print its parse and stage plan.

This was ``build`` until the engine landed; it is now its dry run. It resolves the
Dockerfile and context the way docker does (``-f``, ``PATH/Dockerfile``,
``-f -``, context ``-`` = a tar on stdin, or a Dockerfile on stdin with an
empty context), runs the build checks (``WARN: ...`` on stderr, as BuildKit
prints them), and prints the stages the target needs. It never claims that
an image was built.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path, PurePosixPath

from builder.errors import BuildContextError, BuildError, DockerfileError
from builder.frontend.instructions import Arg, Dockerfile, Instruction


def _from_stdin_context(data: bytes, file: str | None) -> tuple[bytes, str]:
    """Context ``-``: a tar (plain or compressed) holding the Dockerfile, or the Dockerfile itself."""
    wanted = PurePosixPath(file or "Dockerfile")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                if PurePosixPath(member.name.lstrip("/")) == wanted and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        return extracted.read(), str(wanted)
            raise DockerfileError(
                f"failed to read dockerfile: open {wanted}: no such file in the context tar"
            )
    except tarfile.TarError:
        if file:
            raise BuildContextError("-f names a file inside the context tar, but stdin is not a tar") from None
        return data, "Dockerfile"


def resolve_dockerfile(args: argparse.Namespace) -> tuple[bytes, str]:
    """The Dockerfile's bytes and display name for ``build``'s PATH and ``-f``."""
    from builder.cli.frontend import read_dockerfile

    if args.context == "-":
        if args.file == "-":
            raise BuildContextError("invalid argument: can't use stdin for both build context and dockerfile")
        return _from_stdin_context(sys.stdin.buffer.read(), args.file)
    context = Path(args.context)
    if not args.context or not context.is_dir():
        raise BuildError(f'unable to prepare context: path "{args.context}" not found')
    source = read_dockerfile(args.context, args.file)
    return source.data, source.name


def _render_instruction(ins: Instruction) -> str:
    first = ins.original.splitlines()[0] if ins.original else ins.name
    more = f" (to line {ins.end_line})" if ins.end_line > ins.start_line else ""
    return f"  {ins.start_line:>4}  {first.strip()}{more}"


def render_parse(dockerfile: Dockerfile) -> str:
    """The Dockerfile stage by stage, one instruction per line with its line number."""
    lines = [f"{dockerfile.file}: {len(dockerfile.stages)} stage(s)"]
    if dockerfile.meta_args:
        lines.append("global ARGs:")
        lines += [_render_instruction(a) for a in dockerfile.meta_args]
    for stage in dockerfile.stages:
        name = f' "{stage.name}"' if stage.name else ""
        lines.append(f"stage {stage.index}{name}:")
        lines.append(_render_instruction(stage.from_))
        lines += [_render_instruction(c) for c in stage.commands]
    return "\n".join(lines)


def run_build(args: argparse.Namespace) -> int:
    """Check and plan the build; print the parse and the stage plan. Builds nothing (yet)."""
    from builder.cli.frontend import context_ignore, parse_build_args, run_lint
    from builder.errors import DockerfileError
    from builder.frontend.checks import warnings_before_error
    from builder.frontend.expand import GlobalScope, PlatformArgs, unused_build_args
    from builder.frontend.instructions import parse_dockerfile
    from builder.frontend.parser import parse
    from builder.image.platform import Platform
    from builder.plan.stages import plan_stages

    data, name = resolve_dockerfile(args)
    parsed = parse(data, name)
    build_args = parse_build_args(getattr(args, "build_arg", []) or [])
    try:
        dockerfile = parse_dockerfile(parsed)
    except DockerfileError as err:  # as BuildKit: the warnings above the failing line first
        for warning in warnings_before_error(parsed, err, config=build_args.get("BUILDKIT_DOCKERFILE_CHECK")):
            print(f"WARN: {warning.short()}", file=sys.stderr)
        raise
    target = Platform.parse(args.platform) if getattr(args, "platform", None) else None
    platforms = PlatformArgs.host(target)
    scope = GlobalScope(dockerfile.meta_args, build_args, platforms=platforms,
                        escape=dockerfile.parsed.escape)
    plan = plan_stages(dockerfile, scope, target=getattr(args, "target", None))

    result = run_lint(dockerfile, build_args, stages=[s.index for s in plan.stages],
                      ignore=context_ignore(args.context, args.file))
    for warning in result.warnings:
        print(f"WARN: {warning.short()}", file=sys.stderr)
    error = result.error()
    if error is not None:
        raise error
    declared = [spec.key for arg in dockerfile.meta_args for spec in arg.args]
    declared += [
        spec.key for stage in dockerfile.stages for ins in stage.commands
        if isinstance(ins, Arg) for spec in ins.args
    ]
    for unused in unused_build_args(build_args, declared):
        print(f"WARN: build-arg {unused} was not consumed", file=sys.stderr)

    print(render_parse(dockerfile))
    print()
    print(plan.render())
    print()
    print("No image was built: this run parsed, checked and planned the build (--dry-run).")
    return 0
