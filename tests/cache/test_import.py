"""Importing a shared cache: only what is read travels; a damaged or hostile cache cannot harm."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from tests.cache.conftest import CountingProxy, ran, steps, write_context
from tests.cache.test_farm import DOCKERFILE, _inspect
from tests.layers.malicious import Member, build_tar

FINAL_CHANGE = DOCKERFILE.replace(
    "ENV GREETING=hello", "COPY late.txt /late.txt\nRUN cat /late.txt /final.txt > /both.txt\nENV GREETING=hello")


def _layout(shared: Path) -> tuple[dict, dict, Path]:
    index = json.loads((shared / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((shared / "blobs" / "sha256" / digest).read_bytes())
    config_path = shared / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    return manifest, json.loads(config_path.read_bytes()), shared


def _rewrite(shared: Path, manifest: dict, config: dict, layers: list[dict] | None = None) -> None:
    """Point the cache's ref at a new manifest with this config (and these layers)."""
    from builder.image.descriptor import Descriptor, canonical_json
    from cache.remote import LocalTarget

    raw = canonical_json(config)
    desc = Descriptor.of(manifest["config"]["mediaType"], raw)
    target = LocalTarget(shared)
    target.put_blob(desc, lambda: io.BytesIO(raw))
    manifest = dict(manifest, config=desc.to_dict(), layers=layers if layers is not None else manifest["layers"])
    target.put_manifest(canonical_json(manifest))


def test_a_later_miss_fetches_its_lower_layers_only(machines, tmp_path: Path, registry: str,
                                                    proxy: CountingProxy) -> None:
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n", "late.txt": "late\n"})
    a.build(ctx, "--cache-to", f"type=registry,ref={registry}/imp/lower:1,mode=max")
    (ctx / "Dockerfile").write_text(FINAL_CHANGE)
    built = b.build(ctx, "-t", "app:1", "--cache-from", f"type=registry,ref={proxy.address}/imp/lower:1")
    log = built.stdout + built.stderr
    assert [t.split("] ", 1)[1][:8] for t in ran(log)] == ["COPY lat", "RUN cat "]
    # The new RUN needed the final stage's two layers as lower dirs: fetched once each, and
    # nothing of the builder stage (5 more layers in the cache) was.
    layer_gets = [d for d in proxy.blob_gets()]
    assert len(layer_gets) == 1 + 2, layer_gets  # the cache config + two layers
    assert len(set(layer_gets)) == len(layer_gets)
    check = b.run("store", "check", check=True).stdout.decode()
    assert "clean" in check


def test_zstd_cache_and_several_cache_froms(machines, tmp_path: Path) -> None:
    a, b = machines(), machines()
    one = write_context(tmp_path / "one", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"})
    two = write_context(tmp_path / "two", {"Dockerfile": "FROM busybox:local\nRUN echo two > /two\n"})
    a.build(one, "--cache-to", f"type=local,dest={tmp_path / 'c1'},compression=zstd")
    a.build(two, "--cache-to", f"type=local,dest={tmp_path / 'c2'},tag=other")
    manifest, _, _ = _layout(tmp_path / "c1")
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"]
    assert manifest["artifactType"] == manifest["config"]["mediaType"] == "application/vnd.pybuild.cache.config.v1+json"
    froms = ("--cache-from", f"type=local,src={tmp_path / 'c1'}",
             "--cache-from", f"type=local,src={tmp_path / 'c2'},tag=other")
    for ctx in (one, two):
        built = b.build(ctx, "-t", f"{ctx.name}:1", *froms)
        assert steps(built.stdout + built.stderr) == {"cached": 1, "done": 1}
        assert _inspect(a, "sha256:" + _inspect(b, f"{ctx.name}:1")["Id"].split(":")[1])["Id"]
    assert "clean" in b.run("store", "check", check=True).stdout.decode()


def test_a_record_whose_layer_is_not_its_diff_id_fails_clearly(machines, tmp_path: Path) -> None:
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"
                                                         "RUN echo two > /two\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, config, _ = _layout(shared)
    first, second = config["records"][0], config["records"][1]
    first["layer"], second["layer"] = second["layer"], first["layer"]  # each names the other's blob
    _rewrite(shared, manifest, config)
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}", check=False)
    err = (built.stdout + built.stderr).decode()
    assert built.returncode != 0
    assert "not the diff_id" in err and "Traceback" not in err, err
    assert "clean" in b.run("store", "check", check=True).stdout.decode()
    # Without the bad cache the build is fine.
    b.build(ctx, "-t", "x:1")


def test_a_hit_whose_layer_is_gone_from_the_cache_reruns_its_step(machines, tmp_path: Path) -> None:
    """A cache's blob removed (pruned by hand, a registry's garbage collection): its step runs
    again, warned, and the build succeeds; the steps whose layers are there stay hits."""
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"
                                                         "RUN echo two > /two\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, _, _ = _layout(shared)
    gone = manifest["layers"][0]["digest"]
    (shared / "blobs" / "sha256" / gone.split(":")[1]).unlink()
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}", check=False)
    log = (built.stdout + built.stderr).decode()
    assert built.returncode == 0, log
    assert f"WARN: cache {shared}:latest: layer {gone} is missing: its step runs" in log, log
    assert [t.split("] ", 1)[1] for t in ran(built.stdout + built.stderr)] == ["RUN echo one > /one"]
    assert f"cache miss: its layer is missing from the cache {shared}:latest" in log, log
    assert b.run("run", "--rm", "x:1", "cat", "/one", "/two", check=True).stdout == b"one\ntwo\n"
    assert "clean" in b.run("store", "check", check=True).stdout.decode()


def test_a_damaged_cache_layer_names_the_cache(machines, tmp_path: Path) -> None:
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, config, _ = _layout(shared)
    blob = shared / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    good = blob.read_bytes()
    blob.write_bytes(good[:-8] + bytes(8))  # a damaged disk: not the digest the manifest names
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}", check=False)
    err = (built.stdout + built.stderr).decode()
    assert built.returncode != 0 and "Traceback" not in err, err
    assert f"ERROR: cache {shared}:latest: layer {manifest['layers'][0]['digest']}: digest mismatch" in err, err
    # A blob of the right digest that is no gzip stream (a writer's bug): the same, named.
    garbage = b"not a gzip stream"
    from builder.image.digest import Digest

    blob.write_bytes(good)
    layers = [dict(manifest["layers"][0], digest=str(Digest.of(garbage)), size=len(garbage))]
    (shared / "blobs" / "sha256" / Digest.of(garbage).hex).write_bytes(garbage)
    config["records"][0]["layer"] = layers[0]["digest"]
    _rewrite(shared, manifest, config, layers)
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}", check=False)
    err = (built.stdout + built.stderr).decode()
    assert built.returncode != 0 and "Traceback" not in err, err
    assert f"ERROR: cache {shared}:latest: layer {layers[0]['digest']}: corrupt gzip layer" in err, err
    # Nothing of it stays in the store; without the cache the build is fine.
    assert "clean" in b.run("store", "check", check=True).stdout.decode()
    assert not (b.root / "blobs" / "sha256" / Digest.of(garbage).hex).exists()
    b.build(ctx, "-t", "x:1")


def test_a_hostile_cache_mount_is_refused_and_the_mount_starts_empty(machines, tmp_path: Path) -> None:
    from builder.image.digest import Digest

    a, b = machines(), machines()
    shared = tmp_path / "shared"
    dockerfile = ("FROM busybox:local\nCOPY v.txt /v.txt\n"
                  "RUN --mount=type=cache,id=pkgs,target=/pkgs ls /pkgs; touch /pkgs/mine\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "v.txt": "1\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared},cache-mounts=true")
    manifest, config, _ = _layout(shared)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in ("ok.txt", "../../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    evil = gzip.compress(buf.getvalue(), mtime=0)
    digest = Digest.of(evil)
    (shared / "blobs" / "sha256" / digest.hex).write_bytes(evil)
    layers = [dict(layer, digest=str(digest), size=len(evil)) if "cache.mount" in layer["mediaType"] else layer
              for layer in manifest["layers"]]
    _rewrite(shared, manifest, config, layers)
    (ctx / "v.txt").write_text("2\n")  # so that the RUN runs on B
    built = b.build(ctx, "--cache-from", f"type=local,src={shared}")
    log = (built.stdout + built.stderr).decode()
    assert "cache mount pkgs from" in log and "not used" in log, log
    assert not (b.root.parent / "escaped.txt").exists() and not (b.root / "escaped.txt").exists()
    assert not list(b.root.rglob("escaped.txt"))


def test_garbage_or_foreign_caches_only_warn(machines, tmp_path: Path, registry: str) -> None:
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, config, _ = _layout(shared)
    config["records"][0]["result"] = "garbage"
    _rewrite(shared, manifest, config)
    built = b.build(ctx, "--cache-from", f"type=local,src={shared}")
    assert b"invalid record" in built.stdout + built.stderr
    # An image built without --cache-to type=inline holds no cache.
    a.run("tag", "busybox:local", f"{registry}/imp/plain:1", check=True)
    a.run("push", f"{registry}/imp/plain:1", check=True)
    built = b.build(ctx, "--cache-from", f"type=registry,ref={registry}/imp/plain:1")
    assert b"carries no build cache" in built.stdout + built.stderr


def test_a_seeded_cache_mount_keeps_its_owner_and_mode(machines, tmp_path: Path) -> None:
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    dockerfile = ("FROM busybox:local\nCOPY v.txt /v.txt\n"
                  "RUN --mount=type=cache,id=owned,target=/pkgs,uid=1000,gid=1001,mode=0700 "
                  "echo \"mount: $(stat -c '%u:%g %a' /pkgs) $(cat /pkgs/f 2>/dev/null)\"; "
                  "echo from-a > /pkgs/f; chown 1000 /pkgs/f\n")
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": dockerfile, "v.txt": "1\n"})
    first = a.build(ctx, "--cache-to", f"type=local,dest={shared},cache-mounts=true")
    assert b"mount: 1000:1001 700 \n" in first.stdout + first.stderr
    (ctx / "v.txt").write_text("2\n")
    second = b.build(ctx, "--cache-from", f"type=local,src={shared}")
    assert b"mount: 1000:1001 700 from-a" in second.stdout + second.stderr, second.stdout.decode()


def test_a_machine_passes_on_what_it_imported_without_fetching_it(machines, tmp_path: Path) -> None:
    a, b, c = machines(), machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(ctx, "-t", "app:1", "--cache-to", f"type=local,dest={tmp_path / 'c1'},mode=max")
    # B hits everything and re-exports: the builder stage's layers it never fetched go from c1 to c2.
    b.build(ctx, "--cache-from", f"type=local,src={tmp_path / 'c1'}",
            "--cache-to", f"type=local,dest={tmp_path / 'c2'},mode=max")
    held = {e["diff_id"] for e in json.loads(b.run("cache", "ls", "--format", "json", check=True).stdout)
            if e["held"] and e["diff_id"]}
    m1, config1, _ = _layout(tmp_path / "c1")
    m2, config2, _ = _layout(tmp_path / "c2")
    assert len(held) < len(m1["layers"])  # B did not fetch the builder stage's layers...
    assert sorted(r["key"] for r in config1["records"]) == sorted(r["key"] for r in config2["records"])
    assert sorted(layer["digest"] for layer in m1["layers"]) == sorted(layer["digest"] for layer in m2["layers"])
    built = c.build(ctx, "-t", "app:1", "--cache-from", f"type=local,src={tmp_path / 'c2'}")
    assert steps(built.stdout + built.stderr)["cached"] == 2  # ...and C builds from c2 (the final stage; its builder stage is skipped)
    assert _inspect(a, "app:1")["Id"] == _inspect(c, "app:1")["Id"]


def test_after_an_imported_build_misses_are_explained(machines, tmp_path: Path) -> None:
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    a_ctx = write_context(tmp_path / "a-checkout", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    b_ctx = write_context(tmp_path / "b-checkout", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(a_ctx, "--cache-to", f"type=local,dest={shared},mode=max")
    built = b.build(b_ctx, "--cache-from", f"type=local,src={shared}")
    assert steps(built.stdout + built.stderr)["cached"] == 2  # the builder stage is skipped; its records are kept all the same
    (b_ctx / "a.txt").write_text("two\n")
    text = b.run("build", "--explain", str(b_ctx), check=True).stdout.decode()
    assert "COPY a.txt .: cache miss: file changed (content): a.txt" in text, text


def test_a_miss_is_explained_by_the_imported_build(machines, tmp_path: Path) -> None:
    """A CI machine that built nothing itself, from another checkout directory: its miss is
    explained against the cache it imported, and only the step that changed says so."""
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    a_ctx = write_context(tmp_path / "a-checkout", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    b_ctx = write_context(tmp_path / "b-checkout", {"Dockerfile": DOCKERFILE, "a.txt": "two\n"})
    a.build(a_ctx, "--cache-to", f"type=local,dest={shared},mode=max")
    built = b.build(b_ctx, "--cache-from", f"type=local,src={shared}")
    log = (built.stdout + built.stderr).decode()
    misses = [line for line in log.splitlines() if "cache miss" in line]
    assert len(misses) == 2, log
    assert misses[0].endswith("cache miss: file changed (content): a.txt"), log
    assert misses[1].endswith("cache miss: stage builder changed (--from)"), log
    # A store that never saw this Dockerfile: the first step of each chain is new, the rest follow.
    c = machines()
    text = c.run("build", "--explain", str(a_ctx), check=True).stdout.decode()
    assert text.splitlines() == ["[builder 2/5] WORKDIR /src: cache miss: not built before",
                                 "[stage-1 2/5] COPY --from=builder /src/out.txt /out.txt: "
                                 "cache miss: not built before"], text


def test_a_local_cache_imports_an_older_version_by_digest(machines, tmp_path: Path) -> None:
    """BuildKit's cache versioning: index.json names the newest export; an older manifest,
    still among the blobs, is imported with digest= (a missing one only warns)."""
    shared = tmp_path / "versions"
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": DOCKERFILE, "a.txt": "one\n"})
    a.build(ctx, "-t", "app:1", "--cache-to", f"type=local,dest={shared},mode=max")
    old = json.loads((shared / "index.json").read_text())["manifests"][0]["digest"]
    (ctx / "a.txt").write_text("two\n")
    a.build(ctx, "-t", "app:2", "--cache-to", f"type=local,dest={shared},mode=max")
    assert json.loads((shared / "index.json").read_text())["manifests"][0]["digest"] != old
    (ctx / "a.txt").write_text("one\n")
    built = b.build(ctx, "-t", "app:1", "--cache-from", f"type=local,src={shared},digest={old}")
    assert ran(built.stdout + built.stderr) == [], built.stderr.decode()
    assert _inspect(a, "app:1")["Id"] == _inspect(b, "app:1")["Id"]
    gone = "sha256:" + "0" * 64
    missing = b.build(ctx, "--cache-from", f"type=local,src={shared},digest={gone}")
    assert f"cache {shared}@{gone} not found: building without it" in missing.stderr.decode()


def test_a_hit_whose_layer_one_cache_lost_is_taken_from_the_next(machines, tmp_path: Path) -> None:
    """Several --cache-from naming one step (a branch's cache, then main's): when the first has
    lost the layer's blob, the next one that holds it gives the hit; nothing runs."""
    a, b = machines(), machines()
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"
                                                         "RUN echo two > /two\n"})
    branch, main = tmp_path / "branch", tmp_path / "main"
    a.build(ctx, "-t", "x:1", "--cache-to", f"type=local,dest={branch}", "--cache-to", f"type=local,dest={main}")
    manifest, _, _ = _layout(branch)
    gone = manifest["layers"][0]["digest"]
    (branch / "blobs" / "sha256" / gone.split(":")[1]).unlink()
    again = tmp_path / "again"  # what B passes on without fetching it comes from main's cache
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={branch}",
                    "--cache-from", f"type=local,src={main}", "--cache-to", f"type=local,dest={again}")
    log = (built.stdout + built.stderr).decode()
    assert ran(built.stdout + built.stderr) == [] and "is missing" not in log, log
    assert (again / "blobs" / "sha256" / gone.split(":")[1]).is_file()
    assert _inspect(a, "x:1")["Id"] == _inspect(b, "x:1")["Id"]
    assert b.run("run", "--rm", "x:1", "cat", "/one", "/two", check=True).stdout == b"one\ntwo\n"


def test_a_cut_short_cache_blob_reruns_its_step(machines, tmp_path: Path) -> None:
    """A shared directory copied with a copy cut short (or on a full disk): a layer blob
    shorter than its manifest says is damaged; its step runs, warned, instead of the build
    failing, and the export after it leaves a cache that serves whole again."""
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"
                                                         "RUN echo two > /two\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, _, _ = _layout(shared)
    layer = manifest["layers"][0]
    blob = shared / "blobs" / "sha256" / layer["digest"].split(":")[1]
    good = blob.read_bytes()
    blob.write_bytes(good[: len(good) // 2])
    built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}",
                    "--cache-to", f"type=local,dest={shared}")
    log = (built.stdout + built.stderr).decode()
    assert (f"WARN: cache {shared}:latest: layer {layer['digest']} is damaged (its blob is "
            f"{len(good) // 2} bytes, not {layer['size']}): its step runs") in log, log
    assert [t.split("] ", 1)[1] for t in ran(built.stdout + built.stderr)] == ["RUN echo one > /one"]
    assert b.run("run", "--rm", "x:1", "cat", "/one", "/two", check=True).stdout == b"one\ntwo\n"
    assert "clean" in b.run("store", "check", check=True).stdout.decode()
    c = machines()  # B's export replaced the damaged record: the cache serves whole again
    again = c.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}")
    assert ran(again.stdout + again.stderr) == [] and b"WARN" not in again.stderr, again.stderr.decode()


def test_a_damaged_blob_of_a_shared_directory_fails_one_build_not_every_one(machines, tmp_path: Path) -> None:
    """A layer blob whose bytes do not hash to its name (damage that kept its size): the build
    that reads it fails, naming it, and removes it from the directory; the next build runs
    that step (warned) instead of failing the same way, and its export heals the cache."""
    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    manifest, _, _ = _layout(shared)
    digest = manifest["layers"][0]["digest"]
    blob = shared / "blobs" / "sha256" / digest.split(":")[1]
    good = blob.read_bytes()
    blob.write_bytes(good[:-8] + bytes(8))
    froms = ("--cache-from", f"type=local,src={shared}", "--cache-to", f"type=local,dest={shared}")
    failed = b.build(ctx, "-t", "x:1", *froms, check=False)
    err = failed.stderr.decode()
    assert failed.returncode != 0 and "Traceback" not in err, err
    assert f"layer {digest}: digest mismatch" in err and "the damaged blob is removed from the cache" in err, err
    assert not blob.exists()
    built = b.build(ctx, "-t", "x:1", *froms)
    log = (built.stdout + built.stderr).decode()
    assert f"layer {digest} is missing: its step runs" in log, log
    assert b.run("run", "--rm", "x:1", "cat", "/one", check=True).stdout == b"one\n"
    again = machines().build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}")
    assert ran(again.stdout + again.stderr) == [] and b"WARN" not in again.stderr, again.stderr.decode()


def test_a_consistent_hostile_cache_layer_cannot_write_outside_the_image(machines, tmp_path: Path) -> None:
    """A cache whose record, manifest and blob all agree on a layer that climbs out (``..``,
    a symlink then a file through it): a step that runs on it is refused where the layer is
    unpacked, with one message naming the entry, and nothing lands outside the store."""
    from builder.image.digest import Digest

    a, b = machines(), machines()
    shared = tmp_path / "shared"
    ctx = write_context(tmp_path / "ctx", {"Dockerfile": "FROM busybox:local\nRUN echo one > /one\n"
                                                         "COPY v.txt /v.txt\nRUN cat /v.txt\n", "v.txt": "1"})
    a.build(ctx, "--cache-to", f"type=local,dest={shared}")
    (ctx / "v.txt").write_text("2")  # B reuses the first RUN, and runs the last on top of it
    manifest, config, _ = _layout(shared)
    victim = tmp_path / "victim"
    victim.mkdir()
    (record,) = [r for r in config["records"] if r["inputs"]["display"] == "RUN echo one > /one"]
    for members in ([("../../../../../../../../" + str(victim).lstrip("/") + "/dotdot", None)],
                    [("link", str(victim)), ("link/through", None)]):
        plain = build_tar([Member(name, data=b"pwn") if target is None
                           else Member(name, tarfile.SYMTYPE, linkname=target) for name, target in members])
        evil = gzip.compress(plain, mtime=0)
        (shared / "blobs" / "sha256" / Digest.of(evil).hex).write_bytes(evil)
        layers = [dict(layer, digest=str(Digest.of(evil)), size=len(evil)) if layer["digest"] == record["layer"]
                  else layer for layer in manifest["layers"]]
        record["layer"] = str(Digest.of(evil))
        record["result"]["diff_id"] = str(Digest.of(plain))
        _rewrite(shared, manifest, config, layers)
        manifest = dict(manifest, layers=layers)
        built = b.build(ctx, "-t", "x:1", "--cache-from", f"type=local,src={shared}", check=False)
        err = (built.stdout + built.stderr).decode()
        assert built.returncode != 0 and "Traceback" not in err, err
        assert err.count("\nERROR:") == 1 and "refusing" in err, err
        assert list(victim.iterdir()) == [], err
        assert not list(b.root.rglob("through")) and not list(b.root.rglob("dotdot"))
        assert "clean" in b.run("store", "check", check=True).stdout.decode()


def test_a_cache_record_cannot_claim_a_layer_of_another_image_of_the_store(machines, tmp_path: Path) -> None:
    """A hostile cache whose record for a public step names the layer of a private image of
    the importing machine (its diff_id seen in a log), with no blob, or with a blob that is
    not that layer: the layer is never taken from the store on that claim (it would have
    gone into the public image, and out with its push)."""
    from builder.image.digest import Digest

    a = machines()
    private = write_context(tmp_path / "private", {"Dockerfile": "FROM busybox:local\nRUN echo PRIVATE > /secret\n"})
    public = write_context(tmp_path / "public", {"Dockerfile": "FROM busybox:local\nRUN echo public > /public\n"})
    shared = tmp_path / "shared"
    a.build(public, "--cache-to", f"type=local,dest={shared}")
    manifest, config, _ = _layout(shared)
    (record,) = config["records"]
    other = gzip.compress(b"\0" * 1024, mtime=0)  # a blob the cache holds, claimed to be that layer
    (shared / "blobs" / "sha256" / Digest.of(other).hex).write_bytes(other)
    for claimed in ("the layer itself", "another blob"):
        b = machines()  # a fresh machine each time: its own runs of the step would be hits
        b.build(private, "-t", "private:1")
        diff_id = json.loads(b.run("inspect", "private:1", check=True).stdout)[0]["RootFS"]["Layers"][-1]
        blob, size = (diff_id, 2048) if claimed == "the layer itself" else (str(Digest.of(other)), len(other))
        layers = [dict(layer, digest=blob, size=size) if layer["digest"] == record["layer"] else layer
                  for layer in manifest["layers"]]
        record["layer"], record["result"]["diff_id"] = blob, diff_id
        _rewrite(shared, manifest, config, layers)
        manifest = dict(manifest, layers=layers)
        built = b.build(public, "-t", "public:1", "--cache-from", f"type=local,src={shared}", check=False)
        log = (built.stdout + built.stderr).decode()
        assert "Traceback" not in log, log
        if claimed == "the layer itself":
            assert built.returncode == 0 and "is missing: its step runs" in log, log
            shown = b.run("run", "--rm", "public:1", "sh", "-c", "cat /public; ls /secret", check=False)
            assert shown.stdout == b"public\n" and b"No such file" in shown.stderr
        else:
            assert built.returncode == 1 and f"not the diff_id {diff_id}" in log, log
