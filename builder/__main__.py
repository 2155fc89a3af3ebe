"""``python -m builder`` and the ``pybuild`` script.

The command line is imported inside ``run`` so that a Ctrl-C while it loads (the first
tenth of a second of every command) ends as one ``ERROR: interrupted`` line, as later.
"""

import sys


def run() -> int:
    try:
        from builder.cli import main
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
