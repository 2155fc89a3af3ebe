"""Registry commands, as docker has them: pull, push, login, logout, search."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from typing import TYPE_CHECKING

from builder.errors import ImageNotFoundError, StoreError, UsageError

if TYPE_CHECKING:
    from builder.registry.client import ClientOptions

ORDER = 40
DEFAULT_SERVER = "docker.io"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    insecure = argparse.ArgumentParser(add_help=False)
    insecure.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                          help="allow plain HTTP and unverified TLS for this registry")

    p = subparsers.add_parser("pull", parents=[common, insecure], help="download an image from a registry",
                              usage="pybuild pull [OPTIONS] NAME[:TAG|@DIGEST]")
    p.add_argument("reference", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="pull this platform from a multi-platform image (default: the host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.set_defaults(func=_pull)

    p = subparsers.add_parser("push", parents=[common, insecure], help="upload an image to a registry",
                              usage="pybuild push [OPTIONS] NAME[:TAG]")
    p.add_argument("reference", metavar="NAME[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.set_defaults(func=_push)

    p = subparsers.add_parser("login", parents=[common, insecure], help="log in to a registry",
                              usage="pybuild login [OPTIONS] [SERVER]")
    p.add_argument("server", nargs="?", metavar="SERVER",
                   help="registry host[:port] (default: Docker Hub)")
    p.add_argument("-u", "--username", metavar="USER")
    p.add_argument("-p", "--password", metavar="PASSWORD",
                   help="password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    p.set_defaults(func=_login)

    p = subparsers.add_parser("logout", parents=[common], help="log out from a registry",
                              usage="pybuild logout [SERVER]")
    p.add_argument("server", nargs="?", metavar="SERVER")
    p.set_defaults(func=_logout)

    p = subparsers.add_parser("search", parents=[common, insecure], help="search a registry for images",
                              usage="pybuild search [OPTIONS] TERM")
    p.add_argument("term", metavar="TERM")
    p.add_argument("--registry", metavar="HOST[:PORT]", default=DEFAULT_SERVER,
                   help="registry to search (default: Docker Hub)")
    p.add_argument("--limit", type=int, default=25, metavar="N", help="at most N results (default 25)")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.set_defaults(func=_search)


def _options(args: argparse.Namespace) -> ClientOptions:
    from builder.registry.client import ClientOptions

    if getattr(args, "debug", False) or os.environ.get("PYBUILD_DEBUG") == "1":
        logger = logging.getLogger("builder.registry")
        if not logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("DEBU[registry] %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    return ClientOptions(insecure_registries=frozenset(getattr(args, "insecure_registry", []) or ()))


def _server(text: str | None) -> str:
    """``https://host:5000/v1/`` or ``host:5000`` -> ``host:5000``; Docker Hub's aliases -> docker.io."""
    server = (text or DEFAULT_SERVER).strip()
    for prefix in ("https://", "http://"):
        server = server.removeprefix(prefix)
    server = server.split("/", 1)[0]
    if "@" in server:
        # user:password@host would send the password to the address and quote it in
        # every message; never echo it back.
        raise UsageError(f"invalid registry address {'…@' + server.rpartition('@')[2]!r}: "
                         "give the username with -u and the password with --password-stdin")
    if server in ("index.docker.io", "registry-1.docker.io"):
        server = DEFAULT_SERVER
    if not server or " " in server:
        raise UsageError(f"invalid registry address {text!r}")
    return server


def _pull(args: argparse.Namespace) -> int:
    from builder.image.reference import Reference
    from builder.registry.progress import choose_progress
    from builder.registry.remote import pull_with_result
    from cache.store import open_store

    ref = Reference.parse(args.reference)
    with open_store() as store:
        progress = choose_progress(args.quiet)
        try:
            pull_with_result(ref, store, args.platform, options=_options(args), progress=progress)
        except StoreError as err:  # the disk, not the registry: say which pull it stopped
            raise StoreError(f"pulling {ref}: {err}") from None
    print(str(ref))
    return 0


def _push(args: argparse.Namespace) -> int:
    from builder.image.reference import Reference
    from builder.registry.progress import choose_progress
    from builder.registry.remote import push
    from cache.store import open_store

    ref = Reference.parse(args.reference)
    if ref.digest is not None:
        raise UsageError(f"cannot push a digest reference: {args.reference} (push a tag)")
    with open_store() as store:
        try:
            image = store.image(str(ref))
        except ImageNotFoundError:
            raise ImageNotFoundError(
                f"An image does not exist locally with the tag: {ref.familiar_name}"
                + ("" if ref.tag == "latest" else f":{ref.tag}")
            ) from None
        try:
            push(image, ref, options=_options(args), progress=choose_progress(args.quiet), store=store)
        except StoreError as err:  # a blob the store lost: say which push it stopped
            raise StoreError(f"pushing {ref}: {err}") from None
    if args.quiet:
        print(str(ref))
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        if args.password is not None:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not args.username:
            raise UsageError("Must provide --username with --password-stdin")
        return sys.stdin.read().rstrip("\r\n")
    if args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
              file=sys.stderr)
        return args.password
    return None


def _login(args: argparse.Namespace) -> int:
    from builder.registry.auth import Credentials, DockerConfig
    from builder.registry.client import RegistryClient

    server = _server(args.server)
    password = _read_password(args)
    username = args.username
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive:
            raise UsageError("Cannot perform an interactive login from a non TTY device")
        username = input("Username: ").strip()
    if password is None:
        if not interactive:
            raise UsageError("Cannot perform an interactive login from a non TTY device")
        password = getpass.getpass("Password: ")
    if not username:
        raise UsageError("Non-null Username Required")
    if not password:
        raise UsageError("Non-null Password Required")
    credentials = Credentials(username, password)
    with RegistryClient(server, _options(args), credentials=credentials) as client:
        client.check_login()
    where = DockerConfig().store(server, credentials)
    if not where.startswith("docker-credential-"):
        print(f"WARNING! Your password will be stored unencrypted in {where}.", file=sys.stderr)
    print("Login Succeeded")
    return 0


def _logout(args: argparse.Namespace) -> int:
    from builder.registry.auth import DockerConfig

    server = _server(args.server)
    if DockerConfig().erase(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from builder.registry.client import RegistryClient
    from builder.registry.search import search

    if args.limit < 1 or args.limit > 100:
        raise UsageError(f"invalid limit {args.limit}: must be between 1 and 100")
    server = _server(args.registry)
    with RegistryClient(server, _options(args)) as client:
        results = search(client, args.term, args.limit)
    rows: list[tuple[str, ...]]
    if server == DEFAULT_SERVER:
        rows = [("NAME", "DESCRIPTION", "STARS", "OFFICIAL")]
        for r in results:
            desc = r.description if args.no_trunc or len(r.description) <= 45 else r.description[:44] + "…"
            rows.append((r.name, desc, str(r.stars), "[OK]" if r.official else ""))
    else:
        rows = [("NAME", "TAGS")]
        for r in results:
            tags = ", ".join(r.tags)
            if not args.no_trunc and len(tags) > 60:
                tags = tags[:59] + "…"
            rows.append((r.name, tags))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
