"""Issue 5's farm: two stores share one cache (a registry, or a shared directory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cache.conftest import CountingProxy, Machine, ran, steps, write_context
from tests.registry.conftest import scripted_proxy  # noqa: F401 - the fixture, shared

DOCKERFILE = """\
FROM busybox:local AS builder
WORKDIR /src
COPY a.txt .
RUN --mount=type=cache,id=pkgs,target=/var/cache/pkgs \\
    cat /var/cache/pkgs/marker 2>/dev/null || echo "cache mount empty"; \\
    cat a.txt > out.txt && echo built >> out.txt && \\
    echo "package cache of $(cat a.txt)" > /var/cache/pkgs/marker && date +%s%N > /src/stamp
RUN echo intermediate > /src/tmp.txt && head -c 50000 /dev/urandom > /src/noise

FROM busybox:local
COPY --from=builder /src/out.txt /out.txt
RUN cat /out.txt > /final.txt && date +%s%N >> /final.txt
ENV GREETING=hello
CMD ["cat", "/final.txt"]
"""


def _inspect(machine: Machine, image: str) -> dict:
    out = machine.run("inspect", image, check=True).stdout
    data = json.loads(out)
    return data[0] if isinstance(data, list) else data


def push_digest(machine: Machine, image: str, ref: str) -> str:
    """Push (layers gzip, compressed once) and return the manifest digest the registry holds."""
    import re

    machine.run("tag", image, ref, check=True)
    out = machine.run("push", ref, check=True)
    found = re.search(rb"digest: (sha256:[0-9a-f]{64})", out.stdout + out.stderr)
    assert found, out
    return found[1].decode()


def manifest_of(registry: str, repo: str, digest: str) -> dict:
    import requests

    r = requests.get(f"http://{registry}/v2/{repo}/manifests/{digest}",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                              "application/vnd.docker.distribution.manifest.v2+json"}, timeout=30)
    r.raise_for_status()
    return r.json()


def _farm(machines, tmp_path: Path, cache_to: str, cache_from: str):  # type: ignore[no-untyped-def]
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    built_a = a.build(ctx, "-t", "app:1", "--cache-to", cache_to)
    assert steps(built_a.stdout + built_a.stderr)["cached"] == 0
    built_b = b.build(ctx, "-t", "app:1", "--cache-from", cache_from)
    log = built_b.stdout + built_b.stderr
    counts = steps(log)
    assert counts["done"] == 0 or ran(log) == [], log.decode()
    # The final stage's two steps (COPY, RUN: ENV and CMD show none); the builder stage, needed
    # only by that stage's cached COPY --from (for its key, which a dry run computes), is
    # skipped, as BuildKit skips it.
    assert counts["cached"] == 2 and b"[builder" not in log, log.decode()
    # The RUN with a cache mount writes on the host (the store's cachemounts/): on B it never ran.
    assert any((a.root / "cachemounts").iterdir())
    assert not (b.root / "cachemounts").exists() or not any((b.root / "cachemounts").iterdir())
    assert "clean" in b.run("store", "check", check=True).stdout.decode()
    ia, ib = _inspect(a, "app:1"), _inspect(b, "app:1")
    assert ia["Id"] == ib["Id"]
    assert ia["RootFS"]["Layers"] == ib["RootFS"]["Layers"]
    assert ia["Config"]["Env"] == ib["Config"]["Env"]
    return a, b


def test_registry_farm_reuses_everything_and_fetches_only_final_layers(
        machines, tmp_path: Path, registry: str, proxy: CountingProxy) -> None:
    a, b = _farm(machines, tmp_path, f"type=registry,ref={registry}/farm/cache:1,mode=max",
                           f"type=registry,ref={proxy.address}/farm/cache:1")
    ia = _inspect(a, "app:1")
    base = _inspect(b, "busybox:local")["RootFS"]["Layers"]
    final_layers = [d for d in ia["RootFS"]["Layers"] if d not in base]
    # B fetched the cache config, then only the final image's own layers (not the builder stage's).
    fetched = proxy.blob_gets()
    # Pushed, both give the same manifest: the same gzip blobs (deterministic, compressed once).
    da = push_digest(a, "app:1", f"{registry}/farm/app-a:1")
    db = push_digest(b, "app:1", f"{registry}/farm/app-b:1")
    assert da == db
    manifest = manifest_of(registry, "farm/app-a", da)
    wanted = {layer["digest"] for layer in manifest["layers"][len(base):]}
    layer_gets = [d for d in fetched if d in wanted]
    assert sorted(layer_gets) == sorted(wanted), fetched
    assert len(fetched) == len(wanted) + 1, fetched  # + the cache config
    assert len(final_layers) == len(wanted) == 2


def test_local_farm(machines, tmp_path: Path) -> None:
    shared = tmp_path / "shared-cache"
    _farm(machines, tmp_path, f"type=local,dest={shared},mode=max", f"type=local,src={shared}")
    index = json.loads((shared / "index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == ["latest"]
    assert (shared / "oci-layout").is_file()


def test_mode_min_exports_only_the_final_chain(machines, tmp_path: Path) -> None:
    shared = tmp_path / "min-cache"
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(ctx, "-t", "app:1", "--cache-to", f"type=local,dest={shared}")
    built = b.build(ctx, "-t", "app:1", "--cache-from", f"type=local,src={shared}")
    log = (built.stdout + built.stderr).decode()
    # The final stage hits (its COPY --from keys on the builder's key, which a dry run computes):
    # the builder stage, which only the final stage needs, is skipped, as BuildKit skips it.
    assert ran(built.stdout + built.stderr) == [], log
    assert "[builder" not in log and steps(built.stdout + built.stderr)["cached"] == 2, log
    assert _inspect(a, "app:1")["Id"] == _inspect(b, "app:1")["Id"]
    assert b.run("run", "--rm", "app:1", check=True).stdout.startswith(b"one\nbuilt\n")
    # A change the builder stage sees: it runs, and so does what follows in the final stage.
    (ctx / "a.txt").write_text("two\n")
    changed = b.build(ctx, "-t", "app:2", "--cache-from", f"type=local,src={shared}")
    assert len(ran(changed.stdout + changed.stderr)) == 6, changed.stderr.decode()
    assert b.run("run", "--rm", "app:2", check=True).stdout.startswith(b"two\nbuilt\n")


def test_cache_mounts_travel(machines, tmp_path: Path, registry: str) -> None:
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    ref = f"{registry}/farm/mounts:1"
    first = a.build(ctx, "--cache-to", f"type=registry,ref={ref},mode=max,cache-mounts=true")
    assert b"cache mount empty" in first.stdout + first.stderr
    # B's input differs, so its RUN runs: with A's package cache already in place.
    (ctx / "a.txt").write_text("two\n")
    second = b.build(ctx, "--cache-from", f"type=registry,ref={ref}")
    log = (second.stdout + second.stderr).decode()
    assert "package cache of one" in log, log
    assert "cache mount empty" not in log
    # Without cache-mounts=true the mount stays home.
    c = machines()
    a.build(ctx, "--cache-to", f"type=registry,ref={registry}/farm/nomounts:1,mode=max")
    third = c.build(ctx, "--no-cache-filter", "builder", "--cache-from", f"type=registry,ref={registry}/farm/nomounts:1")
    assert b"cache mount empty" in third.stdout + third.stderr


@pytest.mark.parametrize("spec", [
    "type=s3,ref=x", "type=registry", "type=local", "type=registry,ref=r/x:1,mode=huge",
    "type=registry,ref=r/x:1,compression=lz4", "type=registry,ref=r/x:1,bogus=1", "", "r/X:1",
    "type=registry,ref=r/x@sha256:" + "0" * 64,
])
def test_bad_cache_specs_are_one_clear_error(machines, tmp_path: Path, spec: str) -> None:
    m = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN true\n"})
    result = m.build(ctx, "--cache-to", spec, check=False)
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "--cache-to" in err and "Traceback" not in err, err
    if "=" not in spec:  # a bare ref: quoted as typed, not in its type=registry,ref= form
        assert f"--cache-to value {spec!r}" in err, err
    assert b"#2 DONE" not in result.stdout + result.stderr  # refused before building


def test_missing_cache_from_is_a_warning(machines, tmp_path: Path, registry: str) -> None:
    m = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN true\n"})
    result = m.build(ctx, "--cache-from", f"type=registry,ref={registry}/nothing/here:1",
                     "--cache-from", f"type=local,src={tmp_path / 'none'}")
    assert b"not found" in result.stdout + result.stderr


def test_unreachable_caches(machines, tmp_path: Path) -> None:
    from tests.helpers.tools import closed_port

    m = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo x > /x\n"})
    with closed_port() as port:
        dead = f"127.0.0.1:{port}/nobody/cache:1"
        # Importing is best effort (the build runs without that cache), as BuildKit does.
        built = m.build(ctx, "--cache-from", f"type=registry,ref={dead}")
        assert b"cannot import cache " + dead.encode() in built.stdout + built.stderr
        # Exporting is not, unless ignore-error=true.
        out = tmp_path / "image.tar"
        failed = m.build(ctx, "--cache-to", f"type=registry,ref={dead}", "-o", f"type=oci,dest={out}", check=False)
        err = failed.stderr.decode()
        assert failed.returncode != 0 and "connection refused" in err and "Traceback" not in err, err
        assert f"ERROR: cannot write cache {dead}: " in err, err  # the cache's export, not a push of the image
        # As BuildKit, the image's outputs are written before the cache: a dead cache loses no image.
        assert out.stat().st_size > 0
        ok = m.build(ctx, "--cache-to", f"type=registry,ref={dead},ignore-error=true")
        assert b"cache export to " + dead.encode() + b" failed" in ok.stdout + ok.stderr


def test_the_cache_is_an_oci_artifact_that_skopeo_copies_both_ways(machines, tmp_path: Path, registry: str) -> None:
    """Registry -> skopeo -> layout -> pybuild, and layout -> skopeo -> registry -> pybuild."""
    import subprocess

    from tests.helpers.tools import require_tool

    skopeo = require_tool("skopeo")
    a = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={registry}/farm/sk:1,mode=max")
    layout = tmp_path / "copied"
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{registry}/farm/sk:1",
                    f"oci:{layout}:c1"], check=True, capture_output=True)
    b = machines()
    built = b.build(ctx, "-t", "app:1", "--cache-from", f"type=local,src={layout},tag=c1")
    assert steps(built.stdout + built.stderr)["cached"] == 2  # the final stage; the builder stage is skipped
    a.build(ctx, "--cache-to", f"type=local,dest={tmp_path / 'local'},mode=max,tag=l1")
    subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'local'}:l1",
                    f"docker://{registry}/farm/sk:2"], check=True, capture_output=True)
    c = machines()
    built = c.build(ctx, "-t", "app:1", "--cache-from", f"type=registry,ref={registry}/farm/sk:2")
    assert steps(built.stdout + built.stderr)["cached"] == 2
    assert _inspect(a, "app:1")["Id"] == _inspect(b, "app:1")["Id"] == _inspect(c, "app:1")["Id"]


def test_an_unwritable_local_cache_is_one_clear_error(machines, tmp_path: Path) -> None:
    m = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo x > /x\n"})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failed = m.build(ctx, "--cache-to", f"type=local,dest={blocker}/cache", check=False)
    err = failed.stderr.decode()
    assert failed.returncode != 0 and f"cannot write cache {blocker}/cache" in err, err
    assert "Traceback" not in err and "internal error" not in err


def test_a_skipped_stage_never_pulls_its_base(machines, tmp_path: Path, registry: str) -> None:
    """The dry run reads a base's manifest and config only: B never downloads the builder's base."""
    a, b, pusher = machines(), machines(), machines()
    base = f"{registry}/farm/builder-base:1"
    pusher.run("tag", "busybox:local", base, check=True)
    pusher.run("push", base, check=True)  # A pulls it as a farm machine would
    dockerfile = DOCKERFILE.replace("FROM busybox:local AS builder", f"FROM {base} AS builder")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "a.txt": "one\n"})
    a.build(ctx, "-t", "app:1", "--cache-to", f"type=registry,ref={registry}/farm/skip:1")
    built = b.build(ctx, "-t", "app:1", "--cache-from", f"type=registry,ref={registry}/farm/skip:1")
    assert ran(built.stdout + built.stderr) == [], built.stderr.decode()
    listed = b.run("images", "--format", "json", check=True).stdout.decode()
    assert "builder-base" not in listed
    assert _inspect(a, "app:1")["Id"] == _inspect(b, "app:1")["Id"]


def test_pushes_mount_the_layers_the_shared_cache_holds(machines, tmp_path: Path, scripted_proxy) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """A farm pushing to the registry its cache lives in sends each built layer once: A's cache
    export mounts the layers its image push just uploaded, B's push those it imported from the cache."""
    import re
    from collections import Counter

    proxy = scripted_proxy(lambda proxy, request: None)  # counts what reaches the registry
    registry = proxy.address
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nCOPY a.txt /a.txt\n"
                                           "COPY b.txt /b.txt\n", "a.txt": "one\n", "b.txt": "two\n"})
    cache = f"type=registry,ref={registry}/mountfarm/cache:1,mode=max"
    pushed = re.compile(rb"pushing \S+ done \((\d+) blobs uploaded, (\d+) mounted, 0 already there\)")
    a.build(ctx, "--cache-to", cache, "--push", "-t", f"{registry}/mountfarm/app-a:1")
    built = b.build(ctx, "--cache-from", cache, "--push", "-t", f"{registry}/mountfarm/app-b:1")
    found = pushed.search(built.stdout + built.stderr)
    assert found and int(found[2]) == 2, built.stderr.decode()  # the two COPY layers, from the cache
    manifest = manifest_of(registry, "mountfarm/app-a", "1")
    assert manifest == manifest_of(registry, "mountfarm/app-b", "1")
    # an upload ends with a PUT naming its digest; a mount has none
    uploads = Counter(re.findall(r"digest=sha256(?::|%3A)([0-9a-f]{64})", " ".join(
        r.path for r in proxy.seen if r.method == "PUT" and "/blobs/uploads/" in r.path)))
    built = [layer["digest"].split(":")[1] for layer in manifest["layers"][1:]]  # the two COPY layers
    assert [uploads[d] for d in built] == [1, 1], uploads


def test_a_cached_rebuild_exports_the_cache_mounts_it_would_use(machines, tmp_path: Path, registry: str) -> None:
    """A farm's every build imports and exports one ref: a build whose RUN hits (on the machine
    that made the mount, or on one that imported it and never ran the step) keeps the ref's mounts."""
    a, b, c = machines(), machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    ref = f"type=registry,ref={registry}/farm/mounts-kept:1"
    to = f"{ref},mode=max,cache-mounts=true"
    assert b"1 cache mount(s)" in a.build(ctx, "--cache-to", to).stderr
    again = a.build(ctx, "--cache-from", ref, "--cache-to", to)  # all hits on A
    assert ran(again.stdout + again.stderr) == [] and b"1 cache mount(s)" in again.stderr, again.stderr.decode()
    alone = a.build(ctx, "--cache-to", to)  # all hits, no --cache-from: A's own mount goes
    assert ran(alone.stdout + alone.stderr) == [] and b"1 cache mount(s)" in alone.stderr, alone.stderr.decode()
    passed = b.build(ctx, "--cache-from", ref, "--cache-to", to)  # all hits on B, which has no mount
    assert ran(passed.stdout + passed.stderr) == [] and b"1 cache mount(s)" in passed.stderr, passed.stderr.decode()
    (ctx / "a.txt").write_text("two\n")
    third = c.build(ctx, "--cache-from", ref)
    log = (third.stdout + third.stderr).decode()
    assert "package cache of one" in log and "cache mount empty" not in log, log


def test_a_cache_mount_gone_from_the_imported_cache_is_not_passed_on(machines, tmp_path: Path) -> None:
    """A cached rebuild passes on the imported cache mounts; one whose blob has gone from that
    cache since (garbage-collected, pruned by hand) is left out, and the export succeeds."""
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    first, second = tmp_path / "first", tmp_path / "second"
    a.build(ctx, "--cache-to", f"type=local,dest={first},mode=max,cache-mounts=true")
    index = json.loads((first / "index.json").read_text())
    manifest = json.loads((first / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    (mount,) = [d for d in manifest["layers"] if d["mediaType"] == "application/vnd.pybuild.cache.mount.v1.tar+gzip"]
    (first / "blobs" / "sha256" / mount["digest"][7:]).unlink()
    built = b.build(ctx, "--cache-from", f"type=local,src={first}",
                    "--cache-to", f"type=local,dest={second},mode=max,cache-mounts=true")
    assert ran(built.stdout + built.stderr) == [], built.stderr.decode()
    assert b"0 cache mount(s)" in built.stderr, built.stderr.decode()


def test_a_cache_mount_one_cache_lost_is_seeded_from_the_next(machines, tmp_path: Path) -> None:
    """Several --cache-from carrying one cache mount: when the first has lost its blob, the next
    one's content seeds the mount (warned about the first), not an empty one."""
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    branch, main = tmp_path / "branch", tmp_path / "main"
    a.build(ctx, "--cache-to", f"type=local,dest={branch},mode=max,cache-mounts=true",
            "--cache-to", f"type=local,dest={main},mode=max,cache-mounts=true")
    index = json.loads((branch / "index.json").read_text())
    manifest = json.loads((branch / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    (mount,) = [d for d in manifest["layers"] if d["mediaType"] == "application/vnd.pybuild.cache.mount.v1.tar+gzip"]
    (branch / "blobs" / "sha256" / mount["digest"][7:]).unlink()
    (ctx / "a.txt").write_text("two\n")  # B's RUN runs
    built = b.build(ctx, "--cache-from", f"type=local,src={branch}", "--cache-from", f"type=local,src={main}")
    log = (built.stdout + built.stderr).decode()
    assert "package cache of one" in log and "cache mount empty" not in log, log
    assert f"cache mount pkgs from {branch}:latest not used" in log, log


def test_a_shared_cache_directory_with_planted_links_is_one_clear_error(machines, tmp_path: Path) -> None:
    """A shared cache directory is written by many: a symlinked blobs/ or blobs/sha256 there
    must not send blobs out of it, and an index.json that is a link to /dev/zero, a FIFO or a
    huge file must not hang or eat the memory of every build that exports or imports."""
    import os

    m = machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo x > /x\n"})
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = {"blobs": lambda p: p.symlink_to(outside), "blobs/sha256": lambda p: p.symlink_to(outside),
             "index.json": lambda p: p.symlink_to("/dev/zero"), "index.json ": lambda p: os.mkfifo(p),
             "index.json  ": lambda p: p.write_bytes(b" " * (17 << 20))}
    for name, plant in cases.items():
        shared = tmp_path / f"shared-{len(name)}-{name.strip().replace('/', '-')}"
        (shared / name.strip()).parent.mkdir(parents=True, exist_ok=True)
        plant(shared / name.strip())
        failed = m.build(ctx, "--cache-to", f"type=local,dest={shared}", check=False, timeout=60)
        err = failed.stderr.decode()
        assert failed.returncode == 1 and f"cache {shared}" in err, err
        assert (f"{name} is a symbolic link" if name.startswith("blobs") else "index.json") in err, err
        assert "Traceback" not in err and err.count("ERROR") == 1, err
        assert list(outside.iterdir()) == []
        if name.startswith("index.json"):
            imported = m.build(ctx, "--cache-from", f"type=local,src={shared}", timeout=60)
            assert b"index.json" in imported.stdout + imported.stderr  # a warning, as any unreadable cache


def test_a_shared_cache_blob_that_is_a_fifo_or_device_does_not_hang_the_import(machines, tmp_path: Path) -> None:
    """Blobs are read by digest, whatever their path holds: a FIFO planted at the manifest's
    or a layer's place would block every build that imports the cache, and a link to a device
    leads out of the cache directory; it is a warning (the cache is unusable), and the build
    runs its steps."""
    import json
    import os

    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo x > /x\n"})
    shared = tmp_path / "shared"
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    index = json.loads((shared / "index.json").read_text())
    manifest_blob = shared / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    layer = json.loads(manifest_blob.read_bytes())["layers"][0]["digest"].split(":")[1]
    for planted, how, said in ((shared / "blobs" / "sha256" / layer, "fifo", "is missing: its step runs"),
                               (manifest_blob, "fifo", "not a regular file"),
                               (manifest_blob, "device", "leads out of the directory")):
        planted.unlink()
        if how == "fifo":
            os.mkfifo(planted)
        else:
            planted.symlink_to("/dev/zero")
        built = b.build(ctx, "--cache-from", f"type=local,src={shared}", timeout=60)
        log = (built.stdout + built.stderr).decode()
        assert said in log and "Traceback" not in log, log
