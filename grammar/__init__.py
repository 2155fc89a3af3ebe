"""The Lark grammar of the Dockerfile language, shipped as package data."""

from importlib.resources import files


def load(name: str = "dockerfile.lark") -> str:
    """Return the grammar text from inside the installed package (not the source tree)."""
    return files(__name__).joinpath(name).read_text(encoding="utf-8")
