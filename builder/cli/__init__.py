"""The ``pybuild`` command line: docker-compatible flags, build as the default command.

Each command group lives in its own module of this package with a
``register(subparsers, common)`` function that adds its sub-commands and sets
``func`` on them; modules are found automatically and listed in ``ORDER``
(default 50). ``COMMAND_MODULES`` names the module of each command so that a
run builds only its own command's parser (all of them cost ~20 ms, a tenth of
a cached build); a test holds it to what the modules register. Command modules
import heavy dependencies inside their handlers so that ``pybuild`` starts fast. ``main`` turns
every :class:`~builder.errors.PybuildError` into one message and a non-zero
exit; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from builder import __version__
from builder.errors import PybuildError, UsageError
from builder.interrupts import exit_status, signals_as_interrupt
from builder.interrupts import message as interrupt_message


class DockerStyleParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors read like docker's and exit 125."""

    _words: list[str] = []  # the words this parser was last given

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._words = list(args) if args is not None else []
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required: "):
            unknown = self._unknown_flag()
            if unknown:  # cobra reads the flags first: `build --nope` is the flag's error
                raise UsageError(_unknown_flag_message(unknown) + f"\nSee '{self.prog} --help'.")
            raise UsageError(self._arity_message() + f"\nSee '{self.prog} --help'.")
        raise UsageError(_docker_message(message, self.prog) + f"\nSee '{self.prog} --help'.")

    def _unknown_flag(self) -> str | None:
        """The first word that looks like a flag and is none of this parser's."""
        words = iter(self._words)
        for word in words:
            if word == "--":
                return None
            if not word.startswith("-") or word == "-" or self._negative_number_matcher.match(word):
                continue
            name = word.partition("=")[0] if word.startswith("--") else word[:2]
            action = self._option_string_actions.get(name)
            if action is None:
                return name if word.startswith("--") else word
            if action.nargs != 0 and word == name:  # its value is the next word: `--cpu-quota -1`
                next(words, None)
        return None

    def too_many_message(self) -> str:
        """cobra's words for extra arguments: ``"docker images" requires at most 1 argument.``"""
        positionals = [a for a in self._actions if not a.option_strings]
        if not positionals:
            return f'"{self.prog}" accepts no arguments.'
        if all(a.nargs is None or isinstance(a.nargs, int) for a in positionals):
            return self._arity_message()
        most = sum(a.nargs if isinstance(a.nargs, int) else 1 for a in positionals)
        return f'"{self.prog}" requires at most {most} argument{"" if most == 1 else "s"}.'

    def _arity_message(self) -> str:
        """cobra's wording: ``"docker tag" requires exactly 2 arguments.``"""
        positionals = [a for a in self._actions if not a.option_strings]
        required = [a for a in positionals if a.nargs not in ("?", "*", argparse.REMAINDER)]
        count = sum(a.nargs if isinstance(a.nargs, int) else 1 for a in required)
        exact = "exactly" if len(required) == len(positionals) and all(
            a.nargs in (None, 1) or isinstance(a.nargs, int) for a in required) else "at least"
        names = " ".join(a.metavar if isinstance(a.metavar, str) and a.metavar else a.dest.upper()
                         for a in required)
        plural = "argument" if count == 1 else "arguments"
        return f'"{self.prog}" requires {exact} {count} {plural} ({names}).'


def _docker_message(message: str, prog: str) -> str:
    """Rephrase argparse's wording in docker's ("unknown flag: --foo")."""
    if message.startswith("unrecognized arguments: "):
        extra = message.removeprefix("unrecognized arguments: ").split()
        flags = [a for a in extra if a.startswith("-")]
        if flags:
            return _unknown_flag_message(flags[0])
        return f"accepts at most the given arguments, received extra: {' '.join(extra)}"
    if message.startswith("the following arguments are required: "):
        names = message.removeprefix("the following arguments are required: ")
        return f'"{prog}" requires at least 1 argument ({names}).'
    if message.startswith("argument -") and ": ignored explicit argument '" in message:
        # `-qZ`: -q takes no value, and Z is no flag of ours; pflag names what is left ("-Z")
        rest = message.partition(": ignored explicit argument ")[2].strip("'")
        return f"unknown shorthand flag: '{rest[:1]}' in -{rest}"
    if message.startswith("argument ") and ": expected one argument" in message:
        flag = message.removeprefix("argument ").split(":")[0].split("/")[-1]
        return f"flag needs an argument: {flag}"
    return message


def _unknown_flag_message(flag: str) -> str:
    """pflag's words: ``unknown flag: --foo``, ``unknown shorthand flag: 'v' in -v``."""
    if flag.startswith("--") or len(flag) < 2:
        return f"unknown flag: {flag.partition('=')[0]}"
    return f"unknown shorthand flag: '{flag[1]}' in {flag}"


def _common_parent() -> argparse.ArgumentParser:
    """Options every sub-command accepts, wherever they are written."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show tracebacks and debug output",
    )
    return common


# command -> the module of this package that registers it
COMMAND_MODULES = {
    "build": "build", "run": "run",
    **dict.fromkeys(("load", "save", "images", "inspect", "history", "tag", "rmi", "prune", "store"), "images"),
    **dict.fromkeys(("pull", "push", "login", "logout", "search"), "registry"),
    **dict.fromkeys(("parse", "lint"), "frontend"),
    "cache": "cache",
}


def build_parser(only: str | None = None) -> DockerStyleParser:
    """The parser of every command, or of command ``only`` alone."""
    parser = DockerStyleParser(
        prog="pybuild",
        description="Build OCI images from Dockerfiles, without a daemon. "
        "With no command, `pybuild [OPTIONS] PATH` builds, like `pybuild build`.",
    )
    parser.add_argument("--version", action="version", version=f"pybuild version {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug output")
    parser.add_argument(
        "--root", metavar="DIR",
        help="store root (default $PYBUILD_ROOT, /var/lib/pybuild as root, "
        "~/.local/share/pybuild otherwise)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=DockerStyleParser)
    common = _common_parent()
    if only is not None:
        modules = [importlib.import_module(f"{__name__}.{COMMAND_MODULES[only]}")]
    else:
        modules = _command_modules()
    for module in modules:
        module.register(subparsers, common)
    return parser


def _command_modules() -> list:
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue  # private helpers of a command, imported by it when needed
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 50), m.__name__))


def _subparser(parser: argparse.ArgumentParser, names: list[str]) -> DockerStyleParser | None:
    """The parser of ``pybuild NAME [NAME...]`` (``cache du``), or None."""
    current = parser
    for name in names:
        found = None
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                found = action.choices.get(name)
        if found is None:
            return None
        current = found
    return current if isinstance(current, DockerStyleParser) else None


def _command_names(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _command_index(argv: list[str]) -> int:
    """Where the command is in ``argv``: after the global options."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug" or arg.startswith("--root="):
            i += 1
        elif arg == "--root":
            i += 2
        else:
            break
    return i


# docker's management commands for images (`docker image ls`): the command each one is here
IMAGE_SUBCOMMANDS = {
    "ls": "images", "list": "images", "rm": "rmi", "remove": "rmi", "inspect": "inspect",
    "history": "history", "tag": "tag", "prune": "prune", "save": "save", "load": "load",
    "pull": "pull", "push": "push", "build": "build",
}


def _insert_default_command(argv: list[str], commands: set[str] | dict[str, str]) -> list[str]:
    """``pybuild -t app:1 .`` means ``pybuild build -t app:1 .``; ``pybuild image ls`` means
    ``pybuild images`` (``pybuild image`` alone still builds a directory of that name)."""
    i = _command_index(argv)
    if i >= len(argv):
        return argv
    head = argv[i]
    if head == "image" and i + 1 < len(argv) and argv[i + 1] in IMAGE_SUBCOMMANDS:
        return [*argv[:i], IMAGE_SUBCOMMANDS[argv[i + 1]], *argv[i + 2:]]
    if head in commands or head in ("-h", "--help", "--version"):
        return argv
    return [*argv[:i], "build", *argv[i:]]


GO_BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def _explicit_booleans(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """docker's ``--pull=false`` / ``--no-cache=true`` (Go flags take a boolean's value after
    ``=``): ``--flag`` when true, nothing when false; argparse's on/off flags take no value."""
    flags: set[str] = set()
    valued: set[str] = set()  # options that take the next word as their value
    # booleans that default to true (`history -H`): an optional value, given only after '='
    # (`-H=false`); alone, the flag never takes the next word (`history -H IMAGE`)
    true_flags: set[str] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._StoreTrueAction):
                flags.update(o for o in action.option_strings if o.startswith("--"))
            elif action.option_strings and action.nargs == "?" and action.const == "true":
                true_flags.update(action.option_strings)
            elif isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif action.option_strings and action.nargs != 0:
                valued.update(action.option_strings)
    # `pybuild run IMAGE CMD...`: as docker's, flags end at the image; the command is the user's
    start = _command_index(argv) + 1
    stop_at_positional = argv[start - 1:start] == ["run"]
    out = argv[:start]
    words = iter(argv[start:])
    for arg in words:
        if arg == "--":
            out += [arg, *words]
            break
        name, sep, value = arg.partition("=")
        if name in true_flags:
            if sep and value.lower() not in GO_BOOLEANS:
                raise UsageError(f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: '
                                 f'parsing "{value}": invalid syntax')
            out.append(f"{name}={'true' if not sep or GO_BOOLEANS[value.lower()] else 'false'}")
            continue
        if not sep or name not in flags:
            out.append(arg)
            if arg in valued:
                following = next(words, None)
                if following is not None:
                    out.append(following)
            elif stop_at_positional and not arg.startswith("-"):
                out += list(words)
                break
            continue
        if value.lower() not in GO_BOOLEANS:
            raise UsageError(f'invalid argument "{value}" for "{name}" flag: strconv.ParseBool: '
                             f'parsing "{value}": invalid syntax')
        if GO_BOOLEANS[value.lower()]:
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PYBUILD_DEBUG") == "1"
    try:
        argv = _insert_default_command(argv, COMMAND_MODULES)
        i = _command_index(argv)
        parser = build_parser(argv[i] if i < len(argv) and argv[i] in COMMAND_MODULES else None)
        argv = _explicit_booleans(parser, argv)
        args, extra = parser.parse_known_args(argv)
        # now known from the parse: a `--debug` in a container's command is not pybuild's
        debug = bool(getattr(args, "debug", False)) or os.environ.get("PYBUILD_DEBUG") == "1"
        if extra:
            sub = f"pybuild {args.command}" if args.command else "pybuild"
            nested = getattr(args, f"{args.command}_command", None)  # `pybuild cache du --bad`
            if nested:
                sub += f" {nested}"
            command = _subparser(parser, sub.split()[1:])
            if command is not None and not any(a.startswith("-") for a in extra):
                raise UsageError(command.too_many_message() + f"\nSee '{sub} --help'.")
            raise UsageError(_docker_message(f"unrecognized arguments: {' '.join(extra)}", sub)
                             + f"\nSee '{sub} --help'.")
        if args.command is None:
            parser.print_help()
            return 0
        if args.root:
            os.environ["PYBUILD_ROOT"] = args.root
        with signals_as_interrupt():  # SIGTERM and SIGHUP clean up as Ctrl-C does
            return int(args.func(args) or 0)
    except PybuildError as err:
        if debug:
            import traceback

            traceback.print_exc()
        print(err.report(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # Ctrl-C, SIGTERM, SIGHUP: 130, 143, 129
        print(interrupt_message(err), file=sys.stderr)
        return exit_status(err)
    except BrokenPipeError:
        # `pybuild images | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
    except Exception as err:  # the last line of defence for the user
        if debug:
            raise
        damaged = _damaged_store(err)
        if damaged:
            print(f"ERROR: {damaged}", file=sys.stderr)
            return 1
        print(
            f"ERROR: internal error: {type(err).__name__}: {err}\n"
            "This is a bug in pybuild; run again with --debug for the traceback.",
            file=sys.stderr,
        )
        return 1


def _damaged_store(err: Exception) -> str | None:
    """The message for a meta.db SQLite finds damaged mid-command (a disk or a copy broke it):
    the user's data problem, not a bug in pybuild; None for any other error."""
    import sqlite3

    if not isinstance(err, sqlite3.DatabaseError) or isinstance(err, sqlite3.OperationalError):
        return None
    from cache.db import damaged_message
    from cache.store import default_root

    return damaged_message(default_root() / "meta.db", err)
