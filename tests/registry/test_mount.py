"""Cross-repository mounts from what the store remembers (docker's distribution metadata).

A base pulled from (or pushed to) one repository of a registry is not uploaded again when an
image built on it is pushed to another repository there: the registry mounts it. The registry
sits behind a pass-through proxy that counts what was sent.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from builder.image.config import History
from builder.image.mutate import Addendum, DerivedImage, append
from builder.registry import ClientOptions, RegistryClient, pull, push
from builder.registry.auth import DockerConfig
from builder.registry.progress import LineProgress
from cache.blobsources import BlobSources
from cache.store import Store
from tests.helpers.tools import require_tool, run_pybuild
from tests.registry.conftest import ScriptedProxy, Seen, TokenRegistry
from tests.registry.images import make_image, make_layer, random_name
from tests.registry.test_auth import write_config


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as s:
        yield s


def uploaded_bytes(seen: list[Seen]) -> int:
    """What reached the registry as blob content (the PATCH and PUT bodies of uploads)."""
    return sum(len(r.body) for r in seen if r.method in ("PATCH", "PUT") and "/blobs/uploads/" in r.path)


def mounts(seen: list[Seen]) -> list[tuple[str, str]]:
    """(digest, source repository) of each mount request."""
    out = []
    for r in seen:
        query = parse_qs(urlsplit(r.path).query)
        if r.method == "POST" and "mount" in query:
            out.append((query["mount"][0], query.get("from", [""])[0]))
    return out


def built_on(base, seed: str) -> DerivedImage:  # type: ignore[no-untyped-def]
    """The base with one more layer, as a build's RUN adds it."""
    layer = make_layer({"app/bin": seed.encode() * 1000})
    return append(base, [Addendum(History(created_by=f"RUN make {seed}"), layer)])


def test_a_pulled_base_is_mounted_into_the_pushed_repository(registry: str, scripted_proxy, store: Store,  # type: ignore[no-untyped-def]
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    proxy: ScriptedProxy = scripted_proxy(lambda proxy, request: None)
    base_image = make_image(2, 300_000, seed=random_name())
    library = f"{random_name('library')}/busybox"
    push(base_image, f"{proxy.address}/{library}:1")
    base = pull(f"{proxy.address}/{library}:1", store)
    app = built_on(store.image(f"{proxy.address}/{library}:1"), random_name())
    team = f"{random_name('team')}/app"
    proxy.seen.clear()
    capsys.readouterr()
    result = push(app, f"{proxy.address}/{team}:1", store=store, progress=LineProgress())
    # The two base layers mounted; the new layer and the config uploaded, nothing else.
    base_layers = [d.digest for d in base.manifest().layers]
    assert (result.mounted, result.uploaded) == (2, 2)
    assert sorted(mounts(proxy.seen)) == sorted((d, library) for d in base_layers)
    new = app.manifest().layers[-1]
    assert uploaded_bytes(proxy.seen) == new.size + app.manifest().config.size
    out = capsys.readouterr().out
    for digest in base_layers:
        assert f"{digest.short}: Mounted from {library}" in out
    assert f"{new.digest.short}: Pushed" in out
    # What was pushed is a whole image to another client (straight to the registry: the test
    # proxy keeps one of skopeo's several Accept headers).
    raw = subprocess.run([require_tool("skopeo"), "inspect", "--tls-verify=false",
                          f"docker://{registry}/{team}:1"], capture_output=True)
    assert raw.returncode == 0, raw.stderr.decode()
    assert json.loads(raw.stdout)["Layers"] == [d.digest for d in app.manifest().layers]
    # The push is remembered too: a third repository mounts every layer from the newest source.
    known = BlobSources(store.db).candidates(proxy.address, [new.digest, base_layers[0]], exclude="x")
    assert known == {new.digest: [team], base_layers[0]: [team, library]}
    proxy.seen.clear()
    again = push(app, f"{proxy.address}/{random_name('other')}/app:1", store=store)
    assert (again.mounted, again.uploaded) == (4, 0)
    assert uploaded_bytes(proxy.seen) == 0


def test_a_registry_that_refuses_mounts_gets_the_blobs_uploaded(scripted_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    """A registry that ignores ``mount`` (answers 202, an upload session) is sent the blobs; the
    sources it refused are forgotten, so the next push does not ask again."""

    def no_mounts(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.method == "POST" and "mount=" in request.path:
            return proxy.forward(request, path=urlsplit(request.path).path)
        return None

    proxy = scripted_proxy(no_mounts)
    library = f"{random_name('library')}/base"
    push(make_image(2, 100_000, seed=random_name()), f"{proxy.address}/{library}:1")
    pull(f"{proxy.address}/{library}:1", store)
    app = built_on(store.image(f"{proxy.address}/{library}:1"), random_name())
    proxy.seen.clear()
    team = f"{random_name('team')}/app"
    result = push(app, f"{proxy.address}/{team}:1", store=store)
    assert (result.mounted, result.uploaded) == (0, 4)
    assert len(mounts(proxy.seen)) == 2  # each base layer, once
    assert uploaded_bytes(proxy.seen) == sum(d.size for d in app.manifest().layers) + app.manifest().config.size
    base_layers = [d.digest for d in app.manifest().layers[:2]]
    assert BlobSources(store.db).candidates(proxy.address, base_layers, exclude=team) == {}
    assert pull(f"{proxy.address}/{team}:1", Store(store.root / "other")).digest() == app.digest()


@pytest.mark.parametrize("status", [400, 405, 500])
def test_a_registry_that_fails_mount_requests_gets_the_blobs_uploaded(scripted_proxy, store: Store,  # type: ignore[no-untyped-def]
                                                                      status: int) -> None:
    """A registry (or a proxy in front of it) that errs on ``?mount=`` costs the mount, never the
    push: as docker, the blob is uploaded."""
    error = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "no mounts here"}]}).encode()

    def broken_mounts(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.method == "POST" and "mount=" in request.path:
            return status, {"Content-Type": "application/json"}, error
        return None

    proxy = scripted_proxy(broken_mounts)
    library = f"{random_name('library')}/base"
    push(make_image(1, 10_000, seed=random_name()), f"{proxy.address}/{library}:1")
    pull(f"{proxy.address}/{library}:1", store)
    app = built_on(store.image(f"{proxy.address}/{library}:1"), random_name())
    team = f"{random_name('team')}/app"
    proxy.seen.clear()
    result = push(app, f"{proxy.address}/{team}:1", store=store)
    assert (result.mounted, result.uploaded) == (0, 3)
    assert len(mounts(proxy.seen)) == 1  # the base layer, once: a mount is not worth retrying
    assert pull(f"{proxy.address}/{team}:1", Store(store.root / "other")).digest() == app.digest()


def test_a_source_that_lost_the_blob_is_passed_over_for_the_next(registry: str, scripted_proxy,  # type: ignore[no-untyped-def]
                                                                  store: Store) -> None:
    """The newest record names a repository that no longer holds the blob: its upload session is
    ended and the next recorded repository mounts it, as docker tries its candidates in turn."""
    proxy = scripted_proxy(lambda proxy, request: None)
    library = f"{random_name('library')}/base"
    image = make_image(1, 50_000, seed=random_name())
    push(image, f"{proxy.address}/{library}:1")
    pull(f"{proxy.address}/{library}:1", store)
    layer = image.manifest().layers[0].digest
    gone = f"{random_name('gone')}/base"
    BlobSources(store.db).record(proxy.address, gone, [layer])  # newest
    proxy.seen.clear()
    result = push(store.image(f"{proxy.address}/{library}:1"), f"{proxy.address}/{random_name('t')}/app:1",
                  store=store)
    assert (result.mounted, result.uploaded) == (2, 0)
    assert [m for m in mounts(proxy.seen) if m[0] == layer] == [(layer, gone), (layer, library)]
    cancelled = [r for r in proxy.seen if r.method == "DELETE" and "/blobs/uploads/" in r.path]
    assert len(cancelled) == 1
    assert uploaded_bytes(proxy.seen) == 0
    assert BlobSources(store.db).candidates(proxy.address, [layer], exclude="x")[layer][-1] == library
    assert gone not in BlobSources(store.db).candidates(proxy.address, [layer], exclude="x")[layer]


def test_records_of_one_registry_are_never_offered_to_another(registry: str, scripted_proxy,  # type: ignore[no-untyped-def]
                                                              store: Store) -> None:
    """The same blobs pulled from registry A give no mount source for a push to registry B:
    a mount names a repository of the registry it is sent to."""
    proxy = scripted_proxy(lambda proxy, request: None)
    library = f"{random_name('library')}/base"
    image = make_image(1, 10_000, seed=random_name())
    push(image, f"{registry}/{library}:1")
    pull(f"{registry}/{library}:1", store)
    result = push(store.image(f"{registry}/{library}:1"), f"{proxy.address}/{random_name('t')}/app:1",
                  store=store)
    assert (result.mounted, result.uploaded) == (0, 2)
    assert mounts(proxy.seen) == []


def test_a_token_for_a_mount_covers_both_repositories(token_registry: TokenRegistry, tmp_path: Path,
                                                      store: Store) -> None:
    """As docker: the mount's token asks for push on the target and pull on the source. A token
    server that refuses pull on the source costs the mount, not the push: the blobs are uploaded."""
    options = ClientOptions(docker_config=DockerConfig(write_config(tmp_path / "d", token_registry.address)))
    address = token_registry.address
    library = f"{random_name('library')}/base"
    push(make_image(2, 20_000, seed=random_name()), f"{address}/{library}:1", options=options)
    pull(f"{address}/{library}:1", store, options=options)
    app = built_on(store.image(f"{address}/{library}:1"), random_name())
    team = f"{random_name('team')}/app"
    before = len(token_registry.tokens.requests)
    result = push(app, f"{address}/{team}:1", options=options, store=store)
    assert (result.mounted, result.uploaded) == (2, 2)
    asked = [r["scope"] for r in token_registry.tokens.requests[before:]]
    assert [f"repository:{team}:pull,push", f"repository:{library}:pull"] in asked
    # Another machine knows only the library; its token server now refuses it that repository
    # (a login that lost access): the registry answers the mount 401, the blobs are uploaded.
    with Store(tmp_path / "second") as second:
        pull(f"{address}/{library}:1", second, options=options)
        tokens = token_registry.tokens
        denied = tokens.denied
        tokens.denied = (*denied, library)
        elsewhere = f"{random_name('team')}/app"
        try:
            refused = push(app, f"{address}/{elsewhere}:1", options=options, store=second)
        finally:
            tokens.denied = denied
        assert (refused.mounted, refused.uploaded) == (0, 4)
        # The login, not the registry, said no: the source stays recorded.
        layer = app.manifest().layers[0].digest
        assert library in BlobSources(second.db).candidates(address, [layer], exclude=elsewhere)[layer]
    with RegistryClient(address, options) as client, Store(tmp_path / "third") as third:
        assert pull(f"{address}/{elsewhere}:1", third, client=client).digest() == app.digest()


def test_build_push_mounts_the_base_it_pulled(scripted_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``pybuild build --push`` FROM an image of the same registry mounts the base's layers."""
    proxy = scripted_proxy(lambda proxy, request: None)
    library = f"{random_name('library')}/base"
    base = make_image(2, 200_000, seed=random_name())
    push(base, f"{proxy.address}/{library}:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {proxy.address}/{library}:1\nCOPY app /app\n")
    (ctx / "app").write_text(random_name())
    proxy.seen.clear()
    team = f"{random_name('team')}/app"
    proc = run_pybuild("build", "--push", "-t", f"{proxy.address}/{team}:1", str(ctx),
                       root=tmp_path / "root", check=True)
    base_layers = [d.digest for d in base.manifest().layers]
    assert sorted(d for d, source in mounts(proxy.seen) if source == library) == sorted(base_layers)
    assert uploaded_bytes(proxy.seen) < 10_000  # the COPY layer and the config, not the base
    out = proc.stdout.decode() + proc.stderr.decode()
    assert f"pushing {proxy.address}/{team}:1@sha256:" in out
    assert "done (2 blobs uploaded, 2 mounted, 0 already there)" in out, out
