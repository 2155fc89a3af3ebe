"""A flaky network and a lying proxy: transfers survive the first, and refuse the second."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import DigestMismatchError, RegistryError
from builder.registry import ClientOptions, RegistryClient, RetryPolicy, pull, push
from cache.store import Store
from tests.registry.conftest import Faults
from tests.registry.images import make_image, random_name

FAST = RetryPolicy(attempts=5, base_delay=0.05, max_delay=0.5, max_retry_after=1.0)
# The product tries 5 times; under 20% resets per request a test run must not be a lottery.
PATIENT = RetryPolicy(attempts=8, base_delay=0.05, max_delay=0.5, max_retry_after=1.0)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as s:
        yield s


def test_flaky_network_pull_and_push_succeed(registry: str, fault_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    faults = Faults(reset=0.2, stall=0.05, unavailable=0.1, stall_seconds=1.5, retry_after="0.2")
    proxy = fault_proxy(faults)
    options = ClientOptions(retry=PATIENT, read_timeout=0.75, connect_timeout=2)
    image = make_image(6, 400_000, seed=random_name())
    ref = f"{proxy.address}/{random_name('flaky')}/app:1"
    result = push(image, ref, client=RegistryClient(proxy.address, options), chunk_size=256 * 1024)
    assert result.digest == image.digest()
    pulled = pull(ref, store, client=RegistryClient(proxy.address, options))
    assert pulled.digest() == image.digest()
    stored = store.image(ref)
    assert [layer.digest() for layer in stored.layers()] == [layer.digest() for layer in image.layers()]
    for layer in stored.layers():
        with layer.compressed() as blob:
            blob.read()  # reading to the end verifies the digest
    assert store.check().clean
    assert faults.counts.get("reset", 0) >= 3, faults.counts
    assert faults.counts.get("unavailable", 0) >= 1, faults.counts


def test_resets_mid_blob_resume_with_range(registry: str, fault_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    image = make_image(2, 1_000_000, seed=random_name())
    ref_path = f"{random_name('resume')}/app:1"
    push(image, f"{registry}/{ref_path}")
    faults = Faults(reset=0.35, seed=3)
    proxy = fault_proxy(faults)
    options = ClientOptions(retry=RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.05))
    assert pull(f"{proxy.address}/{ref_path}", store,
                client=RegistryClient(proxy.address, options)).digest() == image.digest()
    assert faults.counts.get("reset", 0) >= 2
    assert store.check().clean


def test_byte_flipping_proxy_fails_the_pull_and_stores_nothing(registry: str, fault_proxy,  # type: ignore[no-untyped-def]
                                                               store: Store) -> None:
    image = make_image(2, 50_000, seed=random_name())
    ref_path = f"{random_name('flip')}/app:1"
    push(image, f"{registry}/{ref_path}")
    proxy = fault_proxy(Faults(flip_blob_bytes=True))
    with pytest.raises(DigestMismatchError) as err:
        pull(f"{proxy.address}/{ref_path}", store, client=RegistryClient(proxy.address))
    assert "digest mismatch" in str(err.value)
    for layer in image.layers():
        assert not store.blobs.exists(layer.digest())
    assert not store.blobs.exists(image.config_digest())
    assert list(store.tmp_dir.iterdir()) == []
    assert store.check().clean
    assert store.images() == []


def test_retries_run_out_with_a_clear_message(registry: str, fault_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    proxy = fault_proxy(Faults(unavailable=1.0, retry_after="0"))
    with pytest.raises(RegistryError) as err:
        pull(f"{proxy.address}/app:1.0", store,
             client=RegistryClient(proxy.address, ClientOptions(retry=FAST)))
    # The registry's /v2/ answered 503: the message names that request, not the manifest.
    assert str(err.value) == (f"pull {proxy.address}/app: GET /v2/: "
                              "503 Service Unavailable after 5 attempts")


def test_retry_after_is_honoured(registry: str, fault_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    proxy = fault_proxy(Faults(unavailable=1.0, retry_after="3"))
    slept: list[float] = []
    client = RegistryClient(proxy.address, ClientOptions(retry=RetryPolicy(attempts=3)),
                            sleep=slept.append)
    with pytest.raises(RegistryError, match="after 3 attempts"):
        pull(f"{proxy.address}/app:1", store, client=client)
    assert slept == [3.0, 3.0]


def test_stalled_blob_bodies_time_out_and_resume(registry: str, fault_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    image = make_image(3, 300_000, seed=random_name())
    ref_path = f"{random_name('stall')}/app:1"
    push(image, f"{registry}/{ref_path}")
    # Two stalls for sure: with dice, the order in which concurrent blob GETs drew them could
    # leave none (the test then proved nothing and failed). A read timeout well above a loaded
    # machine's slowest answer, the stalls well above it.
    faults = Faults(stall_first_bodies=2, stall_seconds=3)
    proxy = fault_proxy(faults)
    options = ClientOptions(retry=PATIENT, read_timeout=1)
    assert pull(f"{proxy.address}/{ref_path}", store,
                client=RegistryClient(proxy.address, options)).digest() == image.digest()
    assert faults.counts.get("stall_body", 0) == 2
    assert store.check().clean


@pytest.mark.parametrize("where", ["body", "head"])
def test_a_stop_breaks_reads_hanging_on_stalled_connections(registry: str, fault_proxy,  # type: ignore[no-untyped-def]
                                                            store: Store, where: str) -> None:
    """Ctrl-C, SIGTERM or a failed build stage stop a pull at its transfers' next chunk; a read
    hanging on a stalled connection used to see the stop only at its read timeout (a minute,
    here an hour), and the command waited for it: half-way through a body, or before the answer
    starts (a pull-through cache fetching a big layer upstream first). The stop now shuts those
    connections down: the pull ends with TransferStopped, no retry, no temp file left, the
    store clean."""
    import threading
    import time

    from builder.registry.remote import TransferStopped

    image = make_image(3, 300_000, seed=random_name())
    ref_path = f"{random_name('hang')}/app:1"
    push(image, f"{registry}/{ref_path}")
    # Every layer stops half-way, or before its answer (the config, read before them, does not).
    faults = Faults(stall_first_bodies=3 if where == "body" else 0,
                    stall_first_heads=3 if where == "head" else 0,
                    stall_min_bytes=100_000, stall_seconds=600)
    stall = f"stall_{where}"
    proxy = fault_proxy(faults)
    client = RegistryClient(proxy.address, ClientOptions(retry=PATIENT, read_timeout=3600))
    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def pulling() -> None:
        try:
            pull(f"{proxy.address}/{ref_path}", store, client=client, cancel=cancel)
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=pulling, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while faults.counts.get(stall, 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert faults.counts.get(stall, 0) == 3, "the layers' reads did not all stall"
    time.sleep(0.2)  # the proxy counts a stall as it begins: let the reads reach their wait
    requests = proxy.requests
    cancel.set()
    thread.join(timeout=120)  # far below the read timeout: a hanging read would still be there
    assert not thread.is_alive(), "the pull still waits on reads of stalled connections"
    assert len(outcome) == 1 and isinstance(outcome[0], TransferStopped), outcome
    assert proxy.requests == requests, "a stopped transfer tried again"
    assert list((store.root / "tmp").iterdir()) == []
    assert store.check().clean


def test_a_failed_upload_stops_the_push_of_uploads_waiting_for_an_answer(  # type: ignore[no-untyped-def]
        registry: str, fault_proxy) -> None:
    """One blob fails while the registry holds the answers to the others back (verifying big
    blobs): the push fails at once with that blob's error, as on Ctrl-C, and does not wait out
    the others' read timeouts (here an hour) or try them again."""
    import time

    image = make_image(2, 300_000, seed=random_name())
    faults = Faults(stall_first_uploads=2, refuse_small_uploads=True, stall_min_bytes=100_000,
                    stall_seconds=600)
    proxy = fault_proxy(faults)
    client = RegistryClient(proxy.address, ClientOptions(retry=FAST, read_timeout=3600))
    started = time.monotonic()
    with pytest.raises(RegistryError, match="400 Bad Request"):
        push(image, f"{proxy.address}/{random_name('held')}/app:1", client=client)
    assert time.monotonic() - started < 60
    assert faults.counts.get("stall_upload", 0) == 2


def test_a_registry_that_never_answers_bounds_a_cache_import(tmp_path: Path) -> None:
    """A registry that took the connection and never answered held --cache-from for more than
    five minutes (five attempts of a 60 s read, for the ping and again for the manifest). Each
    request now gives up at the client's deadline (a cache import's: 60 s) with a message that
    says so; the build then runs without that cache. Short timeouts keep this test fast."""
    import socket
    import threading
    import time

    from builder.registry.client import TransientRegistryError
    from cache.remote import CacheSpec, ImportedCache, load_imports

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # takes every connection, never says a word
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    ref = f"127.0.0.1:{server.getsockname()[1]}/silent/cache:1"
    options = ClientOptions(retry=FAST, read_timeout=0.5, connect_timeout=1, deadline=2)
    try:
        with Store(tmp_path / "store") as store:
            started = time.monotonic()
            with pytest.raises(TransientRegistryError) as caught:
                ImportedCache(store).load(CacheSpec.parse(f"type=registry,ref={ref}", export=False), options=options)
            assert time.monotonic() - started < 10
            message = str(caught.value)
            assert message.startswith(f"pull {ref.rsplit(':', 1)[0]}: GET /v2/: timed out: no answer within 2s ("), message
            started = time.monotonic()
            cache = load_imports([f"type=registry,ref={ref}"], store, options=options)  # a warning, no records
            assert cache.records == {} and time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_ctrl_c_stops_a_cache_import_stalled_on_a_layer_at_once(registry: str, fault_proxy,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    """A build whose layers come from --cache-from fetches them at its end, all at once; a SIGTERM
    (or Ctrl-C) there waited for every download to finish, a stalled one for minutes (its read
    timeouts and retries). The transfers now stop as a pull's do: exit 143 within seconds, no temp
    file left, and the next build of that store works."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.tools import run_pybuild

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "big").write_bytes(os.urandom(3_000_000))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big /big\n")
    ref = f"{random_name('cache')}/app:cache"
    run_pybuild("build", "--cache-to", f"type=registry,ref={registry}/{ref},mode=max", str(ctx),
                root=tmp_path / "a", check=True)
    faults = Faults(stall_first_bodies=1, stall_min_bytes=1_000_000, stall_seconds=600)
    proxy = fault_proxy(faults)
    root = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--cache-from",
                             f"type=registry,ref={proxy.address}/{ref}", str(ctx)],
                            env={**os.environ, "PYBUILD_ROOT": str(root)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while faults.counts.get("stall_body", 0) < 1 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert faults.counts.get("stall_body", 0) == 1, proc.communicate(timeout=60)
        time.sleep(0.3)  # the download reaches its wait on the stalled connection
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert took < 15, f"the build took {took:.1f} s to stop"
    assert err.strip().endswith(b"ERROR: interrupted by SIGTERM"), err
    assert list((root / "tmp").iterdir()) == []
    run_pybuild("build", str(ctx), root=root, check=True)
