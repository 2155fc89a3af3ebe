"""The Dockerfile frontend: parse -> typed instructions -> variable expansion -> checks."""

from builder.frontend.dump import dump_buildkit
from builder.frontend.parser import Parser, parse

__all__ = ["Parser", "dump_buildkit", "parse"]
