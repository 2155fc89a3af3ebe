"""pybuild: a daemonless Dockerfile build engine."""

__version__ = "0.1.0"


def console() -> int:
    """The ``pybuild`` command: :func:`builder.cli.main`, imported here so that a Ctrl-C or a
    SIGTERM while Python loads the CLI (its first tenth of a second) is the same one message
    and exit status as later, not a traceback of an import or a silent death."""
    import sys

    try:
        from builder.interrupts import (
            exit_status,
            ignore_stop_signals,
            message,
            signals_as_interrupt,
        )
    except KeyboardInterrupt:  # a Ctrl-C as the very first module loads
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    try:
        with signals_as_interrupt():
            from builder.cli import main

            status = main()
            ignore_stop_signals()  # done: a SIGTERM as the process exits changes nothing
            return status
    except KeyboardInterrupt as err:  # before main's own handling, or as its handlers go
        ignore_stop_signals()
        print(message(err), file=sys.stderr)
        return exit_status(err)
