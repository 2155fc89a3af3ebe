"""pybuild: a daemonless Dockerfile build engine."""

__version__ = "0.1.0"


def console() -> int:
    """The ``pybuild`` command: :func:`builder.cli.main`, imported here so that a Ctrl-C while
    Python loads the CLI (its first tenth of a second) is the same one message and exit 130 as
    a Ctrl-C later, not a traceback of an import."""
    import sys

    try:
        from builder.cli import main
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    return main()
