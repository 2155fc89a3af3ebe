"""A real-world build: Debian bookworm (the debootstrap minbase of tests/setup.sh), apt-get
install over the host network, and ``pybuild run`` of the result.

The base is built by pybuild itself: ``FROM scratch`` + ``ADD bookworm-minbase.tar /``
(auto-extraction of a 128 MB archive). The apt step talks to Debian's mirror, the only
non-loopback traffic of the suite, as issue 4 asks.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import run_pybuild

APP = """\
FROM bookworm:engine-test
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends jq \\
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1500 worker
COPY --chown=worker:worker data.json /home/worker/data.json
USER worker
WORKDIR /home/worker
CMD ["jq", "--version"]
"""


@pytest.mark.slow
def test_apt_get_install_and_run(bookworm_base: str, builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": APP, "data.json": '{"answer": 42, "list": [1, 2]}\n'})
    p = builder.build(ctx, "-t", "realworld-jq:1")
    assert b"Setting up jq" in p.stderr or b"CACHED" in p.stderr or b"cache hit" in p.stderr.lower()

    assert builder.run("realworld-jq:1").stdout.startswith(b"jq-1.")
    out = builder.run("realworld-jq:1", "jq", "-c", ".answer, .list", "data.json")
    assert out.stdout == b"42\n[1,2]\n"
    who = builder.run("realworld-jq:1", "sh", "-c", "id -un; pwd; stat -c %U /home/worker/data.json")
    assert who.stdout == b"worker\n/home/worker\nworker\n"
    status = builder.run("realworld-jq:1", "dpkg-query", "-W", "-f=${Status}", "jq")
    assert status.stdout == b"install ok installed"

    # The RUN layers hold what apt changed, never the /etc files the container was given.
    saved = tmp_path / "jq.tar"
    run_pybuild("save", "-o", str(saved), "realworld-jq:1", root=builder.root, check=True)
    with tarfile.open(saved) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        layers = manifest["Layers"]
        apt_layer = tf.extractfile(layers[1])
        assert apt_layer is not None
        with tarfile.open(fileobj=apt_layer, mode="r:*") as layer:
            names = set(layer.getnames())
    assert "usr/bin/jq" in names
    assert not names & {"etc/hosts", "etc/resolv.conf", "etc/hostname", ".dockerenv"}
    assert not any(n.startswith(("proc/", "sys/", "dev/")) for n in names)
    # rm -rf of the lists in the same RUN: at most whiteouts of the base's entries are left
    lists = [n for n in names if n.startswith("var/lib/apt/lists/")]
    assert all(n.rsplit("/", 1)[-1].startswith(".wh.") for n in lists), lists
    config = json.loads(run_pybuild("inspect", "realworld-jq:1", root=builder.root, check=True).stdout)[0]
    assert config["Config"]["User"] == "worker"
    assert "DEBIAN_FRONTEND=noninteractive" in config["Config"]["Env"]
