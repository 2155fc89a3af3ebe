"""``pybuild run``: start a container from an image with the build's isolation, so users try what they built.

The container's writable layer is thrown away when it exits (``--rm`` is
accepted and is what always happens: pybuild keeps no containers).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import posixpath
import secrets
import sys
from collections.abc import Callable
from typing import BinaryIO

from builder.cli.build import add_container_flags, container_settings

ORDER = 20


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "run", parents=[common], help="run a command in a new container from an image",
        description="Run a command in a new container from an image (its ENTRYPOINT/CMD by default).",
        usage="pybuild run [OPTIONS] IMAGE [COMMAND] [ARG...]", add_help=False,
    )
    # docker run's -h is --hostname, not help: `pybuild run -h web img` printed help and ran nothing
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--hostname", metavar="NAME", help="the container's host name (default: 12 random hex digits)")
    p.add_argument("--rm", action="store_true", help="remove the container when it exits (always done)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (KEY alone takes it from your environment)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="USER[:GROUP]", help="user name or uid (and group)")
    p.add_argument("--network", choices=("host", "none"), default="host", help="network (default host)")
    p.add_argument("--entrypoint", metavar="CMD", help="override the image's ENTRYPOINT")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="give the process a pseudo-terminal")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="HOST:CONTAINER[:OPTS]",
                   help="bind mount a host directory or file (created as a directory when missing); "
                        "OPTS: ro or rw, and a propagation: [r]private (default), [r]shared, [r]slave")
    p.add_argument("--privileged", action="store_true",
                   help="every capability, no seccomp filter, /sys writable, and the devices of "
                        "BuildKit's insecure entitlement (not every host device)")
    p.add_argument("--isolation", choices=("auto", "runc", "crun", "chroot"), default="auto")
    p.add_argument("--pull", choices=("missing", "always", "never"), default="missing",
                   help="pull the image before running (default: when it is not in the store)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                   help="allow plain HTTP and unverified TLS for this registry (for the pull)")
    add_container_flags(p)
    p.add_argument("--cpus", metavar="N", help="number of CPUs, such as 1.5 (a CFS quota per 100ms period)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND")  # not "command": the sub-command's dest
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """The container's exit code, or docker run's own codes: 125 when pybuild fails (no such
    image, an unknown user, a bad flag), so a script tells that apart from the command's 1."""
    from builder.errors import ContainerStartError, OutputError, PybuildError

    try:
        return _run_container(args)
    except (ContainerStartError, OutputError):
        raise  # 125-127: the command could not be run; 1: its output could not be written
    except PybuildError as err:
        if err.exit_code == 1:
            err.exit_code = 125
        raise


def _run_container(args: argparse.Namespace) -> int:
    from builder.errors import ContainerStartError, UsageError
    from builder.interrupts import run_to_end
    from builder.runtime import ContainerSpec, Network, ProcessSpec, detect, recover
    from builder.runtime.spec import DEFAULT_PATH
    from cache.blobs import remove_tree, sweep_temp
    from cache.leases import Lease, hold
    from cache.snapshots import chain_ids
    from cache.store import Store

    if args.tty and args.interactive and not sys.stdin.isatty():
        raise UsageError("the input device is not a TTY (-t with -i wants a terminal on stdin; "
                         "leave out -t to pipe input)")
    store = Store()
    recover(store.root / "run")
    image = _image(args, store)
    store.touch(image.record)
    config = image.config_file().config
    entrypoint = list(config.entrypoint or ())
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    cmd = list(args.cmd) if args.cmd else list(config.cmd or ())
    if args.entrypoint is not None and not args.cmd:
        cmd = []
    argv = entrypoint + cmd
    if not argv:
        if args.entrypoint is not None:
            raise UsageError("No command specified: --entrypoint \"\" drops the image's ENTRYPOINT and CMD; "
                             "give a command after the image")
        raise UsageError(f"No command specified: image {args.image} has no ENTRYPOINT or CMD")
    # docker's order: its PATH and HOSTNAME, then the image's ENV and -e over them in place
    hostname = args.hostname if args.hostname is not None else secrets.token_hex(6)
    if not 0 < len(hostname.encode()) <= 64:
        raise UsageError(f"invalid hostname {hostname!r}: 1 to 64 bytes")
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    env.update(item.partition("=")[::2] for item in config.env)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f'invalid argument "{item}" for "-e, --env" flag: invalid environment variable: {item}')
        if not sep:
            if key not in os.environ:
                env.pop(key, None)  # docker: "KEY" alone, unset here, is unset in the container too
                continue
            value = os.environ[key]
        env[key] = value
    workdir = args.workdir or config.working_dir or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    from builder.execute.run import clean_cwd

    workdir = clean_cwd(workdir)
    settings = container_settings(args)
    volumes = tuple(parse_volume(v) for v in args.volume)
    targets = [posixpath.normpath(m.target) for m in volumes]
    for target in targets:
        if targets.count(target) > 1:
            raise UsageError(f"Duplicate mount point: {target}")
    runtime = detect(args.isolation, work_root=store.root / "run")
    with contextlib.ExitStack() as stack:
        # The store's lock only while the snapshots are made; a lease keeps them (and an
        # untagged image) from prune after that, which does not wait for the container.
        with store.gc_lock.shared():
            sweep_temp(store.tmp_dir)  # the writable layers of runs that were killed (SIGKILL, OOM)
            lowers = store.snapshot(image)
            stack.enter_context(hold(store.root, Lease(
                manifests=(str(image.record.manifest_digest),),
                chains=tuple(chain_ids(image.config_file().diff_ids)))))
        scratch = store.temp_path(".container")
        try:
            (scratch / "upper").mkdir(parents=True)
            spec = ContainerSpec(
                lowerdirs=lowers, upperdir=scratch / "upper",
                process=ProcessSpec(args=tuple(argv), env=tuple(f"{k}={v}" for k, v in env.items()),
                                    cwd=workdir,
                                    user=args.user or config.user,  # docker: -u "" is the image's USER
                                    terminal=args.tty),
                mounts=volumes, volumes=tuple(config.volumes),
                network=Network.NONE if args.network == "none" else Network.HOST, hostname=hostname,
                privileged=args.privileged, **settings.fields(),
            )
            try:
                # stderr apart from stdout, as docker run keeps them (with -t both are the terminal)
                return runtime.run(spec, stdout=_sink(sys.stdout.buffer, "stdout"),
                                   stderr=_sink(sys.stderr.buffer, "stderr"),
                                   stdin=sys.stdin.buffer if args.interactive else None,
                                   forward_signals=True)
            except ContainerStartError as err:
                err.exit_code = start_error_code(str(err))
                raise
        finally:
            run_to_end(lambda: remove_tree(scratch))  # a SIGTERM as the container ends: removed all the same


def _sink(stream: BinaryIO, name: str) -> Callable[[bytes], None]:
    """Hand the container's output on as it comes; a write our stream refuses is docker's one
    line ('write /dev/stdout: no space left on device'), not an internal error. A reader that
    left (``| head``) stays a broken pipe, which pybuild ends quietly."""
    from builder.errors import OutputError

    def write(data: bytes) -> None:
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputError(f"write /dev/{name}: {(err.strerror or str(err)).lower()}") from None

    return write


def _image(args: argparse.Namespace, store):
    """The image to run, pulled first as docker run does: when missing (``--pull missing``),
    every time (``always``) or never. An image ID is never pulled. Pull progress goes to
    stderr: stdout is the container's."""
    import re

    from builder.errors import ImageNotFoundError, StoreError
    from builder.image.reference import Reference
    from builder.registry.client import ClientOptions
    from builder.registry.progress import choose_progress
    from builder.registry.remote import pull_with_result

    is_id = re.fullmatch(r"(sha256:)?[0-9a-f]{64}", args.image) is not None
    if args.pull != "always" or is_id:
        try:
            return store.image(args.image)
        except ImageNotFoundError:
            if args.pull == "never" or is_id:
                raise
    ref = Reference.parse(args.image)  # first: docker reports a bad reference alone
    if args.pull != "always":
        print(f"Unable to find image '{args.image}' locally", file=sys.stderr, flush=True)
    options = ClientOptions(insecure_registries=frozenset(args.insecure_registry))
    try:
        pull_with_result(ref, store, options=options, progress=choose_progress(False, sys.stderr))
    except StoreError as err:
        raise StoreError(f"pulling {ref}: {err}") from None
    return store.image(str(ref))


def start_error_code(message: str) -> int:
    """docker run's code for a container that did not start (its CLI's runStartContainerErr):
    127 the command is not found, 126 it may not be run, 125 any other failure (a mount, a
    cgroup), which is pybuild's, not the command's. Case aside: chroot and crun word them so."""
    message = message.lower()
    if any(s in message for s in ("executable file not found", "no such file or directory",
                                  "executable file `")):
        return 127
    if any(s in message for s in ("permission denied", "is a directory", "open executable")):
        return 126
    return 125


# docker's -v options besides ro/rw and propagation that change nothing here: SELinux labels
# (none on these hosts), nocopy (binds copy nothing anyway), macOS consistency
IGNORED_VOLUME_OPTIONS = frozenset({"z", "Z", "nocopy", "consistent", "cached", "delegated"})


def parse_volume(text: str):
    """docker's ``-v /host:/container[:OPTIONS]`` bind (``ro`` or ``rw``, and the options docker
    accepts that change nothing here); a missing host directory is created, as docker does."""
    from pathlib import Path

    from builder.errors import UsageError
    from builder.runtime import Mount
    from builder.runtime.spec import PROPAGATIONS

    parts = text.split(":")
    options = parts.pop().split(",") if len(parts) == 3 else []
    if len(parts) != 2 or not parts[1].startswith("/"):
        raise UsageError(f"invalid volume specification {text!r}: expected /HOST:/CONTAINER[:ro|rw]")
    modes = [o for o in options if o in ("ro", "rw")]
    propagations = [o for o in options if o in PROPAGATIONS]
    for option in options:
        if option not in ("ro", "rw", *PROPAGATIONS) and option not in IGNORED_VOLUME_OPTIONS:
            raise UsageError(f"invalid volume specification {text!r}: unknown option {option!r} "
                             "(ro, rw, or a propagation: [r]private, [r]shared, [r]slave)")
    if len(modes) > 1 or len(propagations) > 1:
        raise UsageError(f"invalid volume specification {text!r}: invalid mode: {','.join(options)}")
    host, target = Path(parts[0]), parts[1]
    if not host.is_absolute():
        raise UsageError(f"invalid volume specification {text!r}: pybuild has no named volumes; give an "
                         "absolute host path")
    if posixpath.normpath(target) in ("/", "//"):
        raise UsageError(f"invalid volume specification {text!r}: destination can't be '/'")
    propagation = propagations[0] if propagations else "rprivate"
    if propagation.removeprefix("r") in ("shared", "slave"):
        check_propagation_source(host, propagation)
    if not host.exists():
        try:
            host.mkdir(parents=True)
        except OSError as err:
            raise UsageError(f"invalid volume specification {text!r}: cannot create the host directory "
                             f"{host}: {err.strerror}") from None
    return Mount.bind(host, target, readonly=modes == ["ro"], propagation=propagation)


def check_propagation_source(host, propagation: str) -> None:
    """A shared bind needs a shared source mount, a slave one a shared or slave source, else
    nothing would propagate: docker refuses such a bind with the same words."""
    from builder.errors import UsageError
    from builder.runtime.overlay import source_mount

    point, tags = source_mount(host)
    shared = any(t.startswith("shared:") for t in tags)
    if propagation.removeprefix("r") == "shared" and not shared:
        raise UsageError(f"path {host} is mounted on {point} but it is not a shared mount")
    if not shared and not any(t.startswith("master:") for t in tags):
        raise UsageError(f"path {host} is mounted on {point} but it is not a shared or slave mount")
