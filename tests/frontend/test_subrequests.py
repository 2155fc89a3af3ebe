"""``build --call targets|outline``: BuildKit's frontend subrequests, as buildx prints them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.tools import run_pybuild

DOCKERFILE = """\
# syntax=docker/dockerfile:1
# GO_VERSION sets the Go toolchain
ARG GO_VERSION=1.22
ARG ALPINE=3.19
ARG UNUSED=1
ARG TAG=v${GO_VERSION}

# base prepares the toolchain
FROM golang:${GO_VERSION}-alpine AS base
# MODE chooses the build mode
ARG MODE=release
RUN --mount=type=secret,id=npmrc,required=true --mount=type=ssh echo

# Build compiles the app
FROM base AS Build
ARG VERSION
ARG GO_VERSION
RUN --mount=type=secret,target=/run/secrets/token --mount=type=ssh,id=github,required echo

FROM alpine:${ALPINE} AS other
ARG OTHER=x
ARG MODE

FROM scratch AS final
COPY --from=Build /app /app
"""


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    return tmp_path


def _call(context: Path, *args: str) -> str:
    return run_pybuild("build", *args, str(context), root=context / "store", check=True).stdout.decode()


def test_targets(context: Path) -> None:
    assert _call(context, "--call", "targets") == (
        "TARGET          DESCRIPTION\n"
        "base            prepares the toolchain\n"
        "Build           compiles the app\n"
        "other           \n"
        "final (default) \n"
    )
    listed = json.loads(_call(context, "--call", "targets,format=json"))["targets"]
    assert [t.get("name") for t in listed] == ["base", "Build", "other", "final"]
    assert listed[-1]["default"] is True and listed[0]["base"] == "golang:${GO_VERSION}-alpine"


def test_outline_of_the_default_target(context: Path) -> None:
    """Used ARGs only (UNUSED and TAG are not), from the stages the target reaches (not 'other');
    a stage ARG without default that a global ARG gives keeps the global's line and comment."""
    assert _call(context, "--call", "outline") == (
        "TARGET: final\n"
        "\n"
        "BUILD ARG    VALUE     DESCRIPTION\n"
        "GO_VERSION   1.22      sets the Go toolchain\n"
        "MODE         release   chooses the build mode\n"
        "VERSION                \n"
        "\n"
        "SECRET   REQUIRED\n"
        "npmrc    true\n"
        "token    \n"
        "\n"
        "SSH       REQUIRED\n"
        "default   \n"
        "github    true\n"
        "\n"
    )


def test_outline_with_build_args_and_another_target(context: Path) -> None:
    assert _call(context, "--call", "outline", "--target", "other", "--build-arg", "OTHER=y",
                 "--build-arg", "MODE=debug") == (
        "TARGET: other\n"
        "\n"
        "BUILD ARG   VALUE   DESCRIPTION\n"
        "ALPINE      3.19    \n"
        "OTHER       y       \n"
        "MODE        debug   \n"
        "\n"
    )
    described = json.loads(_call(context, "--call", "outline,format=json", "--target", "base"))
    assert described["name"] == "base" and described["description"] == "prepares the toolchain"
    assert [a["name"] for a in described["args"]] == ["GO_VERSION", "MODE"]
    assert described["secrets"] == [{"name": "npmrc", "required": True,
                                     "location": {"ranges": [{"start": {"line": 12}, "end": {"line": 12}}]}}]


def test_bad_call(context: Path) -> None:
    p = run_pybuild("build", "--call", "dump", str(context), root=context / "store")
    assert p.returncode == 125 and b"expected build, check, outline or targets" in p.stderr
    p = run_pybuild("build", "--call", "outline,format=yaml", str(context), root=context / "store")
    assert p.returncode == 125 and b"format=text|json" in p.stderr
