"""Fixtures of the CLI tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    """A context that needs no base image (FROM scratch, COPY only), with a unique file."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY made /made\n")
    (ctx / "made").write_text(uuid.uuid4().hex)
    return ctx
