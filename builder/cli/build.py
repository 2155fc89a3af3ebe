"""``pybuild build`` (also the default command): the flags of ``docker build``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.runtime.spec import ContainerSettings

ORDER = 10
PROGRESS_MODES = ("auto", "plain", "tty", "rawjson", "quiet", "none")  # none: quiet without the image ID (buildx)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "build",
        parents=[common],
        help="build an image from a Dockerfile (the default command)",
        description="Build an image from a Dockerfile. PATH is the build context: a directory, "
        "a git or http(s) URL, or - to read a tar archive from stdin.",
        usage="pybuild build [OPTIONS] PATH | URL | -",
    )
    p.add_argument("context", metavar="PATH",
                   help="build context: a directory, a git or http(s) URL, or - for a tar on stdin")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name and optionally a tag (may be given several times)")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="name of the Dockerfile (default: PATH/Dockerfile; - reads stdin)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY[=VALUE]",
                   help="set a build-time variable (KEY alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build this stage and what it needs, not the last")
    p.add_argument("--no-cache", action="store_true", help="do not use the layer cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the cache for these stages")
    p.add_argument("--pull", action="store_true", help="always look for newer base images")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set metadata on the image")
    p.add_argument("--platform", metavar="OS/ARCH",
                   help="target platform, which must be the host's (local); default "
                        "$DOCKER_DEFAULT_PLATFORM, else the host's")
    p.add_argument("--network", choices=("host", "none", "default"), default="default",
                   help="networking for RUN steps (default host)")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE|env=VAR",
                   help="expose a secret to RUN --mount=type=secret")
    p.add_argument("--build-context", action="append", default=[], metavar="NAME=VALUE",
                   help="a named context for FROM / COPY --from / RUN --mount=from: a directory, "
                        "docker-image://REF or oci-layout://DIR[:TAG]")
    p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT[,ENTITLEMENT]",
                   help="allow security.insecure (RUN --security=insecure), device (RUN --device) or network.host")
    p.add_argument("--cdi-spec-dir", action="append", default=[], metavar="DIR",
                   help="read CDI device specs here (default: /etc/cdi, /var/run/cdi, /etc/buildkit/cdi)")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="forward an SSH agent or keys to RUN --mount=type=ssh (default: $SSH_AUTH_SOCK)")
    add_container_flags(p)
    p.add_argument("-o", "--output", action="append", default=[], metavar="type=TYPE[,dest=PATH]",
                   help="output: type=image|registry|oci|docker|tar|local|cacheonly[,dest=PATH][,push=true]"
                        "[,compression=gzip|zstd|uncompressed][,compression-level=N][,force-compression=true]"
                        "[,oci-mediatypes=true][,store=false][,annotation.KEY=VALUE]...")
    p.add_argument("--annotation", action="append", default=[], metavar="[TYPE:]KEY=VALUE",
                   help="an OCI annotation on the manifest (TYPE manifest, the default), or on an OCI "
                        "output's index (index) or its entry there (manifest-descriptor)")
    p.add_argument("--load", action="store_true",
                   help="keep the image in pybuild's store (what every build does; for docker buildx scripts)")
    p.add_argument("--push", action="store_true", help="push the image to its registry (-o type=image,push=true)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    p.add_argument("--metadata-file", metavar="FILE", help="write build result metadata (JSON) to FILE")
    p.add_argument("--progress", choices=PROGRESS_MODES,
                   help="progress output (plain: one line per step, for CI logs; tty: the live view; rawjson: "
                        "BuildKit's SolveStatus events, a JSON object a line; default $BUILDKIT_PROGRESS, "
                        "else auto)")
    p.add_argument("--jobs", type=int, metavar="N", help="steps to run at once (default: CPU count)")
    p.add_argument("--isolation", choices=("auto", "runc", "crun", "chroot", "default"), default="auto",
                   help="how RUN steps are isolated (default: the first of runc, crun, chroot found)")
    p.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=REF",
                   help="import build cache (type=registry,ref=REF, type=local,src=DIR, or an image REF "
                        "built with --cache-to type=inline)")
    p.add_argument("--cache-to", action="append", default=[], metavar="type=registry,ref=REF",
                   help="export build cache (type=registry,ref=REF, type=local,dest=DIR or type=inline)")
    p.add_argument("--explain", action="store_true", help="print why each step missed the cache, then stop")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP and unverified TLS for this registry")
    p.add_argument("--check", action="store_true",
                   help="run the build checks only, as `pybuild lint` (docker build --check)")
    p.add_argument("--call", metavar="build|check|outline|targets[,format=json]",
                   help="what to ask the frontend, as buildx: outline (the build args, secrets and SSH "
                        "the target takes), targets (the stages), check (as --check); build is the default")
    p.add_argument("--dry-run", action="store_true",
                   help="check the Dockerfile and print its parse and stage plan; build nothing")
    # buildx's attestations: none unless asked (as docker's own builder), BUILDX_NO_DEFAULT_ATTESTATIONS
    # is taken for that reason; written into pushes and OCI archives (builder.export.attestation)
    p.add_argument("--provenance", metavar="false|true|mode=min|max[,builder-id=URI]",
                   help="SLSA provenance attestation (shorthand for --attest type=provenance); pushed and "
                        "OCI outputs carry it in an index beside the image")
    p.add_argument("--sbom", metavar="false|true",
                   help="SPDX SBOM attestation of the packages dpkg and apk installed (pybuild's own: it "
                        "runs no scanner image)")
    p.add_argument("--attest", action="append", default=[], metavar="type=provenance|sbom[,disabled=true][,KEY=VALUE]",
                   help="an attestation as buildx takes it (may be given once per type)")
    # docker's classic-builder flags that mean nothing here, taken as buildx takes them: build
    # containers never outlive their step, the context is read in place (never sent), and no
    # image is verified by Notary
    for flag in ("--rm", "--force-rm", "--compress", "--disable-content-trust"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--security-opt", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def add_container_flags(p: argparse.ArgumentParser) -> None:
    """docker's flags for the containers of RUN steps (and of ``pybuild run``)."""
    p.add_argument("--add-host", action="append", default=[], metavar="NAME:IP",
                   help="add a host-to-IP mapping to /etc/hosts (IP host-gateway: the host)")
    p.add_argument("--shm-size", metavar="SIZE", help="size of /dev/shm (default 64m)")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="resource limit, such as nofile=1024:2048 (-1: unlimited)")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit, such as 512m")
    p.add_argument("--memory-swap", metavar="BYTES",
                   help="memory plus swap limit (-1: unlimited swap; default twice --memory)")
    p.add_argument("-c", "--cpu-shares", type=int, default=0, metavar="N", help="CPU shares (relative weight)")
    p.add_argument("--cpu-period", type=int, default=0, metavar="US", help="CPU CFS period, in microseconds")
    p.add_argument("--cpu-quota", type=int, default=0, metavar="US", help="CPU CFS quota, in microseconds")
    p.add_argument("--cpuset-cpus", default="", metavar="LIST", help="CPUs to run on (0-3, 0,1)")
    p.add_argument("--cpuset-mems", default="", metavar="LIST", help="memory nodes to use (0-3, 0,1)")
    p.add_argument("--cgroup-parent", default="", metavar="PATH",
                   help="parent cgroup of the containers (relative: under pybuild's own)")


def container_settings(args: argparse.Namespace) -> ContainerSettings:
    """The flags of :func:`add_container_flags`, checked."""
    from builder.runtime.cgroups import Resources
    from builder.runtime.spec import (
        SHM_SIZE,
        ContainerSettings,
        Ulimit,
        parse_extra_host,
        parse_size,
    )

    ulimits = {u.name: u for u in (Ulimit.parse(t) for t in args.ulimit)}  # the last of a name wins
    swap = args.memory_swap
    resources = Resources.parse(
        cpus=getattr(args, "cpus", None) or "",  # docker run's --cpus (docker build has none)
        # "" is a bad size, as docker's flags say, not the default
        memory=parse_size(args.memory, "-m, --memory") if args.memory is not None else 0,
        memory_swap=-1 if swap == "-1" else parse_size(swap, "--memory-swap") if swap is not None else 0,
        cpu_shares=args.cpu_shares, cpu_period=args.cpu_period, cpu_quota=args.cpu_quota,
        cpuset_cpus=args.cpuset_cpus, cpuset_mems=args.cpuset_mems, cgroup_parent=args.cgroup_parent,
    )
    return ContainerSettings(
        # buildx takes a comma list too (a string-slice flag); a host entry never has a comma
        extra_hosts=tuple(parse_extra_host(t) for t in _comma_list(args.add_host)),
        shm_size=parse_size(args.shm_size, "--shm-size") if args.shm_size is not None else SHM_SIZE,
        ulimits=tuple(ulimits.values()),
        resources=resources,
    )


def _call(text: str | None) -> tuple[str, str]:
    """``--call NAME[,format=text|json]``, as buildx reads it."""
    from builder.errors import UsageError

    if not text:
        return "build", "text"
    name, *options = [part.strip() for part in text.split(",")]
    name = name.lower()
    fmt = "text"
    for option in options:
        key, _, value = option.partition("=")
        if key != "format" or value not in ("text", "json"):
            raise UsageError(f"invalid --call {text!r}: the only option is format=text|json")
        fmt = value
    if name not in ("build", "check", "outline", "targets"):
        raise UsageError(f"invalid --call {text!r}: expected build, check, outline or targets")
    return name, fmt


def _environment_defaults(args: argparse.Namespace) -> None:
    """docker's environment defaults of build flags: ``BUILDKIT_PROGRESS`` for --progress and
    ``DOCKER_DEFAULT_PLATFORM`` for --platform; buildx's ``local`` platform is the host's."""
    import os

    from builder.errors import UsageError
    from builder.image.platform import Platform

    args.progress_from_env = args.progress is None and bool(os.environ.get("BUILDKIT_PROGRESS", "").strip())
    if args.progress is None:
        env = os.environ.get("BUILDKIT_PROGRESS", "").strip().lower()
        if env and env not in PROGRESS_MODES:
            raise UsageError(f"invalid BUILDKIT_PROGRESS {env!r} in the environment: expected "
                             f"{', '.join(PROGRESS_MODES)}")
        args.progress = env or "auto"
    if not args.platform:
        env = os.environ.get("DOCKER_DEFAULT_PLATFORM", "").strip()
        if env:
            host = Platform.host()
            if env != "local" and not all(host.matches(Platform.parse(p)) for p in env.split(",")):
                raise UsageError(f"DOCKER_DEFAULT_PLATFORM={env} in the environment asks for another platform "
                                 f"than the host's ({host}), which would need emulation: pybuild builds for "
                                 "the host platform only (unset it, or give --platform)")
            args.platform = env
    if args.platform == "local":
        args.platform = str(Platform.host())


def _run(args: argparse.Namespace) -> int:
    _check_not_a_command(args.context)
    _environment_defaults(args)
    attest = None  # most builds ask for none: their flags' parser (and its module) not loaded
    if args.provenance is not None or args.sbom is not None or args.attest:
        from builder.export.attestation import AttestationRequest

        attest = AttestationRequest.parse(args.provenance, args.sbom, args.attest)
    if args.security_opt:
        from builder.errors import UsageError

        raise UsageError("security options are not supported on build (as docker's builder refuses them): "
                         "use RUN --security=insecure with --allow security.insecure")
    if args.progress == "tty" and not args.quiet and sys.stderr is not None and not sys.stderr.isatty():
        from builder.errors import UsageError

        given = "BUILDKIT_PROGRESS=tty (in the environment)" if args.progress_from_env else "--progress=tty"
        raise UsageError(f"{given} needs a terminal on stderr (buildx refuses it too): "
                         "use --progress=plain for logs")
    call, fmt = _call(args.call)
    if call in ("outline", "targets"):
        from builder.cli.frontend import subrequest_command

        return subrequest_command(args, call, fmt)
    if args.check or call == "check":
        from builder.cli.frontend import lint_command

        return lint_command(argparse.Namespace(path=args.context, file=args.file, build_arg=args.build_arg,
                                               target=args.target, format=fmt, debug=args.debug,
                                               fail_on_warnings=True))
    if args.dry_run:
        from builder.cli._dryrun import run_build

        return run_build(args)
    from builder.engine import Build, BuildOptions, parse_labels

    options = BuildOptions(
        context=args.context, dockerfile=args.file, tags=tuple(args.tag),
        build_args=_with_proxies(args.build_arg), target=args.target, no_cache=args.no_cache,
        no_cache_filter=_comma_list(args.no_cache_filter), pull=args.pull, labels=parse_labels(args.label),
        platform=args.platform, network=args.network, secrets=tuple(args.secret), ssh=tuple(args.ssh),
        build_contexts=tuple(args.build_context), allow=_entitlements(args.allow),
        cdi_spec_dirs=tuple(args.cdi_spec_dir), annotations=tuple(args.annotation),
        outputs=tuple(args.output), push=args.push, quiet=args.quiet, iidfile=args.iidfile,
        metadata_file=args.metadata_file, progress=args.progress, jobs=args.jobs,
        isolation="auto" if args.isolation == "default" else args.isolation,  # docker's Linux value
        insecure_registries=tuple(args.insecure_registry),
        explain=args.explain, cache_from=tuple(args.cache_from), cache_to=tuple(args.cache_to),
        container=container_settings(args), attest=attest,
    )
    if args.jobs is not None and args.jobs < 1:
        from builder.errors import UsageError

        raise UsageError(f"invalid argument {args.jobs!r} for --jobs: must be at least 1")
    Build(options).run()
    return 0


def _comma_list(items: list[str]) -> tuple[str, ...]:
    """The values of a flag given several times, each maybe a comma list: ``--allow a,b``,
    ``--add-host a:IP,b:IP`` (buildx's string-slice flags), ``--no-cache-filter a,b`` (buildx
    joins the flags with commas and BuildKit's frontend splits them)."""
    return tuple(name.strip() for item in items for name in item.split(",") if name.strip())


ENTITLEMENTS = ("security.insecure", "network.host", "device")


def _entitlements(items: list[str]) -> tuple[str, ...]:
    from builder.errors import UsageError

    found = _comma_list(items)
    for name in found:
        if name not in ENTITLEMENTS:
            raise UsageError(f"invalid entitlement {name!r} for --allow: expected {', '.join(ENTITLEMENTS)}")
    return found


def _with_proxies(items: list[str]) -> dict[str, str]:
    """``--build-arg`` values, with the proxies of docker's config.json under the names a
    --build-arg does not give (even as a bare KEY): docker build passes them on so."""
    from builder.engine import parse_build_args
    from builder.errors import AuthError
    from builder.registry.auth import DockerConfig

    given = {item.partition("=")[0] for item in items}
    try:
        proxies = DockerConfig().proxy_build_args()
    except AuthError as err:  # as docker's CLI: a config it cannot load is a warning
        print(f"WARNING: Error loading config file: {err}", file=sys.stderr)
        proxies = {}
    except RuntimeError:  # no home directory to find ~/.docker in: no config
        proxies = {}
    return {**{k: v for k, v in proxies.items() if k not in given}, **parse_build_args(items)}


def _check_not_a_command(context: str) -> None:
    """``pybuild imags`` is a build of the path ``imags``: when there is no such path and it is
    close to a command's name, say so (docker: "'imags' is not a docker command")."""
    import os

    if "/" in context or context in ("-", ".") or os.path.exists(context):
        return
    import difflib

    from builder.cli import COMMAND_MODULES
    from builder.errors import UsageError

    close = difflib.get_close_matches(context, list(COMMAND_MODULES), n=1, cutoff=0.75)
    if close:
        raise UsageError(f"'{context}' is not a pybuild command, nor a build context path; "
                         f"did you mean `pybuild {close[0]}`? See 'pybuild --help'.")
