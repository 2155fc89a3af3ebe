"""A registry as a source and a sink of images, like go-containerregistry's ``remote``.

Source: :func:`resolve` turns a reference into a :class:`RemoteImage` (a lazy
SourceImage whose blobs stream from the registry, resuming with ``Range``
after a broken connection); :func:`pull` copies one into the local store,
downloading blobs concurrently, each verified before the store keeps it.
Sink: :func:`push` uploads blobs the registry lacks (mounting them from another
repository when it can), then the manifest.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import logging
import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import requests
import urllib3

from builder.errors import (
    AuthError,
    DigestMismatchError,
    ImageError,
    RegistryError,
    RemoteImageNotFoundError,
)
from builder.fileio import open_binary
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest
from builder.image.image import Image, Layer, SourceImage
from builder.image.manifest import Index, Manifest, parse_manifest
from builder.image.mediatypes import (
    CONFIG_TYPES,
    Compression,
    MediaType,
    is_docker,
    layer_compression,
    layer_media_type,
)
from builder.image.platform import Platform
from builder.image.reference import Reference
from builder.interrupts import interrupts_noted, raise_noted
from builder.layers.compression import CHUNK, compress_stream
from builder.registry.client import (
    Call,
    ClientOptions,
    RegistryClient,
    TransferStop,
    TransferStopped,
    TransientRegistryError,
    add_query,
    current_stop,
    describe_exception,
    shut_down,
    stoppable,
)
from builder.registry.progress import NullProgress, Progress

if TYPE_CHECKING:
    from cache.blobsources import BlobSources
    from cache.store import Store

log = logging.getLogger("builder.registry")

MANIFEST_ACCEPT = (
    MediaType.OCI_INDEX.value, MediaType.DOCKER_MANIFEST_LIST.value,
    MediaType.OCI_MANIFEST.value, MediaType.DOCKER_MANIFEST.value,
)
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
DEFAULT_WORKERS = 4
INTERRUPT_POLL_SECONDS = 0.1  # how soon a noted Ctrl-C or SIGTERM stops the transfers
UPLOAD_CHUNK = 8 << 20
_STREAM_ERRORS = (urllib3.exceptions.HTTPError, requests.RequestException, http.client.HTTPException,
                  OSError)


def short(digest: str) -> str:
    """The 12-hex-digit key docker prints per layer."""
    return Digest(digest).short


# --- reading blobs ---------------------------------------------------------------------------

class BlobReader(io.RawIOBase):
    """A blob's bytes from the registry; a broken connection resumes where it stopped (Range).

    Yields exactly ``descriptor.size`` bytes or raises; the digest is checked by the
    VerifyingReader callers wrap around it.
    """

    def __init__(self, client: RegistryClient, repository: str, descriptor: Descriptor,
                 operation: str = "pull", progress: Progress | None = None,
                 stop: threading.Event | None = None) -> None:
        super().__init__()
        if stop is None:  # a transfer's (see run_transfers): its stop breaks this read too
            stop = current_stop()
        self._stop = stop  # set: the pull is stopping, read no more (TransferStopped)
        self._client = client
        self._repository = repository
        self._descriptor = descriptor
        self._operation = operation
        self._progress = progress or NullProgress()
        self._key = short(descriptor.digest)
        self._offset = 0
        self._response: requests.Response | None = None
        self._fp: http.client.HTTPResponse | None = None
        self._failures = 0
        self.resumes = 0
        if isinstance(stop, TransferStop):  # it breaks a read hanging on a stalled connection
            stop.when_set(self._abort)

    def readable(self) -> bool:
        return True

    def _abort(self) -> None:
        """Shut the connection down (from the thread that stops the pull): a blocked read returns."""
        response = self._response
        connection = response.raw.connection if response is not None else None
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            shut_down(sock)

    def _open(self) -> None:
        response = self._client.open_blob_response(
            self._repository, self._descriptor.digest, self._offset, self._operation,
            self._descriptor.urls or ())
        skip = 0
        if self._offset and response.status_code == 200:
            skip = self._offset  # the server ignored Range: drop what we already have
        elif response.status_code == 206:
            match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
            start = int(match[1]) if match else -1
            if start != self._offset:
                response.close()
                raise TransientRegistryError(
                    f"{self._operation} {self._client.registry}/{self._repository}: GET blob "
                    f"{self._descriptor.digest[:19]}: range answer starts at {start}, "
                    f"not {self._offset}")
        response.raw.decode_content = False
        direct = not skip
        while skip:
            dropped = response.raw.read(min(skip, CHUNK))
            if not dropped:
                response.close()
                raise OSError("connection ended while skipping to the resume offset")
            skip -= len(dropped)
        self._response = response
        # urllib3's readinto reads into a temporary bytes and copies it (twice, with http.client's
        # read); the http.client response under it fills our buffer straight from the socket.
        # Only when nothing was read through urllib3 (which may buffer).
        fp = getattr(response.raw, "_fp", None)
        self._fp = fp if direct and isinstance(fp, http.client.HTTPResponse) else None

    def readinto(self, buffer: Any) -> int:
        if len(buffer) == 0:
            return 0
        policy = self._client.options.retry
        while True:
            _check(self._stop)  # before each read, and before a retry after a broken one
            try:
                if self._response is None:
                    self._open()
                assert self._response is not None
                n = (self._response.raw if self._fp is None else self._fp).readinto(buffer)
                if n == 0 and self._offset < self._descriptor.size:
                    raise http.client.IncompleteRead(b"", self._descriptor.size - self._offset)
            except _STREAM_ERRORS as err:
                if isinstance(err, TransientRegistryError):
                    raise
                self._drop()
                _check(self._stop)  # broken by the stop (TransferStop): no retry
                self._failures += 1
                if self._failures >= policy.attempts:
                    raise TransientRegistryError(
                        f"{self._operation} {self._client.registry}/{self._repository}: GET blob "
                        f"{self._descriptor.digest[:19]}: {describe_exception(err)} after "
                        f"{self._failures} attempts (at byte {self._offset} of "
                        f"{self._descriptor.size})") from None
                self.resumes += 1
                self._client.pause(policy.delay(self._failures - 1))
                continue
            if n:
                self._failures = 0
                self._offset += n
                self._progress.advance(self._key, n)
            return n

    def _drop(self) -> None:
        self._fp = None
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
            self._response = None

    def close(self) -> None:
        if isinstance(self._stop, TransferStop):
            self._stop.forget(self._abort)
        self._drop()
        super().close()


class RemoteBlobSource:
    """One repository's blobs as a BlobSource (unverified streams, as the protocol says)."""

    def __init__(self, client: RegistryClient, repository: str, operation: str = "pull",
                 progress: Progress | None = None) -> None:
        self.client = client
        self.repository = repository
        self.operation = operation
        self.progress = progress

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the repository holds the blob (a HEAD, nothing downloaded)."""
        return self.client.blob_exists(self.repository, str(descriptor.digest), self.operation)

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        if descriptor.data is not None and Digest.of(descriptor.data) == descriptor.digest:
            return io.BytesIO(descriptor.data)
        reader = BlobReader(self.client, self.repository, descriptor, self.operation, self.progress)
        return io.BufferedReader(reader, CHUNK)


class RemoteImage(SourceImage):
    """An image in a registry: manifest in hand, config and layers fetched when read."""

    def __init__(self, source: RemoteBlobSource, raw_manifest: bytes, media_type: str | None,
                 reference: Reference, index_digest: Digest | None = None) -> None:
        super().__init__(source, raw_manifest, media_type)
        self.source = source
        self.reference = reference
        self.index_digest = index_digest

    @property
    def repository(self) -> str:
        return self.source.repository

    @property
    def registry(self) -> str:
        return self.source.client.registry

    def __repr__(self) -> str:
        return f"RemoteImage({self.reference}, {self.digest().short})"


# --- resolving a reference -------------------------------------------------------------------

def is_attestation(descriptor: Descriptor) -> bool:
    """BuildKit's provenance/SBOM entries (platform unknown/unknown) are not runnable images."""
    annotations = descriptor.annotations or {}
    if annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest":
        return True
    p = descriptor.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


def select_platform(index: Index, platform: Platform, where: str) -> Descriptor:
    """The index entry for ``platform`` (an exact variant beats one that leaves it open)."""
    candidates = [d for d in index.manifests if not is_attestation(d)]
    with_platform = [d for d in candidates if d.platform is not None]
    if not with_platform:
        images = [d for d in candidates if d.media_type in (MediaType.OCI_MANIFEST,
                                                            MediaType.DOCKER_MANIFEST)]
        if len(images) == 1:
            return images[0]
    matching = [d for d in with_platform if d.platform is not None and platform.matches(d.platform)]
    if not matching:
        available = ", ".join(sorted({str(d.platform) for d in with_platform})) or "none"
        raise RemoteImageNotFoundError(
            f"{where}: no matching manifest for {platform} in the manifest list entries "
            f"(available: {available})"
        )
    exact = [d for d in matching if d.platform is not None and d.platform.variant == platform.variant]
    return (exact or matching)[0]


def resolve(client: RegistryClient, reference: Reference, platform: Platform | None = None,
            operation: str = "pull", progress: Progress | None = None) -> RemoteImage:
    """Fetch the manifest for a reference and pick the image for ``platform`` (default: host)."""
    repository = reference.repository
    where = f"{operation} {reference.familiar}"
    raw, media_type = client.get_manifest(repository, reference.identifier, MANIFEST_ACCEPT, operation)
    if reference.digest is not None and Digest.of(raw) != reference.digest:
        raise DigestMismatchError(reference.digest, Digest.of(raw), f"manifest of {reference.familiar}")
    parsed = _parse(raw, media_type, where)
    index_digest = None
    while isinstance(parsed, Index):
        index_digest = Digest.of(raw)
        chosen = select_platform(parsed, platform or Platform.host(), where)
        raw, media_type = client.get_manifest(repository, chosen.digest, MANIFEST_ACCEPT, operation)
        if Digest.of(raw) != chosen.digest:
            raise DigestMismatchError(chosen.digest, Digest.of(raw), f"manifest of {reference.familiar}")
        parsed = _parse(raw, media_type or chosen.media_type, where)
    if parsed.config.media_type not in CONFIG_TYPES:
        # A Helm chart, a signature, an SBOM...: nothing to run or build on. Said before any
        # layer is downloaded (docker: "unsupported media type").
        raise ImageError(f"{where}: not a container image: unsupported config media type "
                         f"{parsed.config.media_type} (an OCI artifact, such as a Helm chart)")
    source = RemoteBlobSource(client, repository, operation, progress)
    return RemoteImage(source, raw, parsed.media_type, reference, index_digest)


SCHEMA1_TYPES = ("application/vnd.docker.distribution.manifest.v1+prettyjws",
                 "application/vnd.docker.distribution.manifest.v1+json")


def _parse(raw: bytes, media_type: str, where: str) -> Manifest | Index:
    """The manifest or index; the body's own ``mediaType`` (which the digest covers) wins over a
    Content-Type that disagrees with it."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"{where}: the registry sent no manifest but {len(raw)} bytes of "
                         f"{media_type or 'untyped data'} that are not JSON (a proxy's login or "
                         "error page?)") from None
    body_type = data.get("mediaType") if isinstance(data, dict) else None
    if media_type in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES \
            or (isinstance(data, dict) and data.get("schemaVersion") == 1):
        raise ImageError(
            f"{where}: the image is in Docker's schema 1 manifest format, which pybuild does not "
            "read (docker stopped reading it too): ask its author to push it again as Docker "
            "schema 2 or OCI")
    declared = body_type if body_type in MANIFEST_ACCEPT else media_type
    try:
        return parse_manifest(raw, declared if declared in MANIFEST_ACCEPT else None)
    except ImageError as err:
        raise ImageError(f"{where}: {err}") from None


# --- pulling into the store ------------------------------------------------------------------

def _check(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise TransferStopped


def _run_stoppable(stop: threading.Event, task: Callable[[], object]) -> None:
    with stoppable(stop):  # every request of the task: see RegistryClient
        task()


def run_transfers(tasks: Sequence[Callable[[], object]], workers: int, stop: threading.Event,
                  cancel: threading.Event | None = None) -> None:
    """Run tasks on a thread pool; the first failure cancels what has not started and is raised.

    ``stop``, which the tasks check between chunks, is set on a failure, on Ctrl-C, SIGTERM or
    SIGHUP (noted, never raised inside the pool's locks) and when ``cancel`` is set (a build
    that stops): running transfers end at their next chunk, their temp files removed, and the
    command stops at once, not when every layer is through; the signal (or TransferStopped,
    for a cancel) is raised once they have ended.
    """
    if not tasks:
        return
    with interrupts_noted() as interrupted, \
            ThreadPoolExecutor(max_workers=max(1, min(workers, len(tasks))),
                               thread_name_prefix="pybuild-transfer") as pool:
        futures: list[Future[None]] = [pool.submit(_run_stoppable, stop, task) for task in tasks]
        pending: set[Future[None]] = set(futures)
        while pending and not interrupted and not (cancel is not None and cancel.is_set()):
            done, pending = wait(pending, timeout=INTERRUPT_POLL_SECONDS, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                break
        if pending:
            stop.set()
            for future in pending:
                future.cancel()
            wait(pending)
    raise_noted(interrupted)
    for future in futures:
        if future.done() and not future.cancelled() and (err := future.exception()) is not None \
                and not isinstance(err, TransferStopped):
            raise err
    if stop.is_set():  # cancelled: some blobs are missing
        raise TransferStopped


def download_blobs(image: RemoteImage, store: Store, progress: Progress,
                   workers: int = DEFAULT_WORKERS, cancel: threading.Event | None = None) -> int:
    """Copy the image's config and layers the store lacks into it; returns bytes downloaded.

    Each layer streams into the store's verified write (temp file, hash, fsync,
    rename): a blob with the wrong digest or size never lands. The config is read
    once, verified, through the image (which keeps it for ``store.write_image``).
    """
    manifest = image.manifest()
    raw_config = image.raw_config()
    total = [len(raw_config)] if not store.blobs.exists(manifest.config.digest) else [0]
    seen: set[str] = {manifest.config.digest}
    tasks: list[Callable[[], None]] = []
    lock = threading.Lock()
    stop = TransferStop()
    diff_ids = dict(zip((d.digest for d in manifest.layers), image.config_file().diff_ids, strict=False))
    for descriptor in manifest.layers:
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        if store.blobs.exists(descriptor.digest):
            progress.done(short(descriptor.digest), "Already exists")
            continue

        def task(d: Descriptor = descriptor, quiet: bool = False) -> None:
            key = short(d.digest)
            if not quiet:
                progress.start(key, "Downloading", d.size)
            reader = BlobReader(image.source.client, image.repository, d, image.source.operation,
                                None if quiet else progress, stop)
            # The store's write hashes what it copies and installs the file only if the
            # digest and size match; our message names the image the blob belongs to.
            try:
                with reader:  # raw: the store's write reads into its own buffer, no extra copy
                    store.blobs.write(reader, d.digest, d.size)  # type: ignore[arg-type]  # a file-like reader, no typing.BinaryIO subclass
            except DigestMismatchError as err:
                raise DigestMismatchError(
                    d.digest, err.actual, f"blob {d.digest} of {image.reference.familiar} "
                    f"(from {image.registry}; the registry or the network altered it)") from None
            # The blob's digest is verified; the tar inside is checked against the config's
            # diff_id when pybuild first reads it (see Store.claim_layer), not here.
            if d.digest in diff_ids:
                store.claim_layer(d, diff_ids[d.digest])
            with lock:
                total[0] += d.size
            if not quiet:
                progress.done(key, "Pull complete")

        tasks.append(task)
    run_transfers(tasks, workers, stop, cancel)
    return total[0]


def record_pulled(image: RemoteImage, store: Store) -> None:
    """Remember that the image's repository holds its config and layers, for a later push to
    another repository of the registry to mount them (foreign layers, served from elsewhere,
    are not the registry's)."""
    from cache.blobsources import BlobSources

    manifest = image.manifest()
    digests = [manifest.config.digest] + [d.digest for d in manifest.layers if not d.urls]
    BlobSources(store.db).record(image.registry, image.repository, digests)


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    digest: Digest          # the manifest digest (the index's, when pulled through one)
    image_digest: Digest    # the platform image's manifest digest, as stored
    image_id: Digest        # the config digest
    downloaded: int


def pull(reference: Reference | str, store: Store, platform: Platform | str | None = None, *,
         client: RegistryClient | None = None, options: ClientOptions | None = None,
         progress: Progress | None = None, workers: int = DEFAULT_WORKERS,
         tag: bool = True, cancel: threading.Event | None = None) -> RemoteImage:
    """Pull an image into the local store and tag it; the single entry point ``FROM`` uses.

    Returns the RemoteImage; the store now holds its blobs, so ``store.image(str(ref))``
    (or by digest) reads it locally. ``cancel`` set (a build that stops) ends the transfers at
    their next chunk, with TransferStopped.
    """
    return pull_with_result(reference, store, platform, client=client, options=options,
                            progress=progress, workers=workers, tag=tag, cancel=cancel)[0]


def pull_with_result(reference: Reference | str, store: Store, platform: Platform | str | None = None,
                     *, client: RegistryClient | None = None, options: ClientOptions | None = None,
                     progress: Progress | None = None, workers: int = DEFAULT_WORKERS,
                     tag: bool = True, cancel: threading.Event | None = None) -> tuple[RemoteImage, PullResult]:
    ref = Reference.parse(reference) if isinstance(reference, str) else reference
    plat = Platform.parse(platform) if isinstance(platform, str) else platform
    progress = progress or NullProgress()
    own_client = client is None
    client = client or RegistryClient(ref.registry, options)
    try:
        # docker's words: the tag (or the whole digest reference) and the repository's path.
        pinned = replace(ref, tag=None).familiar if ref.digest else ref.tag
        progress.message(f"{pinned}: Pulling from {ref.repository}")
        image = resolve(client, ref, plat, "pull", progress)
        downloaded = download_blobs(image, store, progress, workers, cancel)
        # As docker: a digest wins over a tag given with it (the tag may have moved since),
        # so ``repo:tag@digest`` leaves the local tag alone.
        tags = [str(ref)] if tag and ref.tag and not ref.digest else []
        store.write_image(image, tags)
        record_pulled(image, store)
    finally:
        progress.close()
        if own_client:
            client.close()
    digest = image.index_digest or image.digest()
    shown = replace(ref, tag=None) if ref.digest else ref
    progress.message(f"Digest: {digest}")
    progress.message(f"Status: Downloaded newer image for {shown.familiar}" if downloaded
                     else f"Status: Image is up to date for {shown.familiar}")
    return image, PullResult(ref, digest, image.digest(), image.config_digest(), downloaded)


# --- pushing ---------------------------------------------------------------------------------

class _SizedBody:
    """A request body of known length that requests streams without buffering (no ``read``)."""

    def __init__(self, opener: Callable[[], BinaryIO], size: int, on_chunk: Callable[[int], None],
                 offset: int = 0, length: int | None = None, stop: threading.Event | None = None) -> None:
        self._stop = stop
        self._opener = opener
        self._size = size
        self._offset = offset
        self._length = size - offset if length is None else length
        self._on_chunk = on_chunk

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        with self._opener() as stream:
            if self._offset:
                _skip(stream, self._offset)
            remaining = self._length
            while remaining > 0:
                _check(self._stop)
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    raise ImageError(f"blob ended {remaining} bytes early while uploading")
                remaining -= len(chunk)
                self._on_chunk(len(chunk))
                yield chunk
            # Read to EOF so that a VerifyingReader checks the digest before the PUT ends.
            if self._offset + self._length == self._size and stream.read(1):
                raise ImageError("blob is longer than its descriptor says")


def _skip(stream: BinaryIO, n: int) -> None:
    if stream.seekable() if hasattr(stream, "seekable") else False:
        stream.seek(n)
        return
    while n:
        data = stream.read(min(CHUNK, n))
        if not data:
            raise ImageError("blob ended early")
        n -= len(data)


@dataclass(frozen=True)
class PushBlob:
    """A blob to push and how to open it (again, for a retry)."""

    descriptor: Descriptor
    opener: Callable[[], BinaryIO]
    label: str = "layer"


def upload_blob(client: RegistryClient, repository: str, blob: PushBlob, *,
                mount_from: Sequence[str] = (), chunk_size: int | None = None,
                progress: Progress | None = None, operation: str = "push",
                refused: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> str:
    """Make the registry hold a blob: skip if present, else mount, else upload.

    ``mount_from`` are repositories of the same registry to try in order; ``refused(source)`` hears
    of each that the registry says lacks the blob (it started an upload instead of mounting).
    Returns "exists", "mounted:<source repository>" or "uploaded". A failure part-way restarts the
    upload session (a registry may have kept half a PATCH), up to the retry policy. ``stop``
    set ends it at the next chunk (TransferStopped).
    """
    progress = progress or NullProgress()
    policy = client.options.retry
    digest = blob.descriptor.digest
    key = short(digest)
    for attempt in range(policy.attempts):
        try:
            return _upload_once(client, repository, blob, mount_from, chunk_size, progress,
                                operation, key, refused, stop)
        except TransientRegistryError:
            if attempt + 1 >= policy.attempts:
                raise
            client.pause(policy.delay(attempt))
    raise AssertionError("unreachable")


def _upload_once(client: RegistryClient, repository: str, blob: PushBlob, mount_from: Sequence[str],
                 chunk_size: int | None, progress: Progress, operation: str, key: str,
                 refused: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> str:
    digest = blob.descriptor.digest
    size = blob.descriptor.size
    push_actions = ("pull", "push")
    if client.blob_exists(repository, digest, operation, actions=push_actions):
        return "exists"
    what = f"blob {digest[:19]}"
    location: str | None = None
    sources = [s for s in dict.fromkeys(mount_from) if s != repository]
    for number, source in enumerate(sources, 1):
        call = Call(operation, repository, f"mount of {digest[:19]} from {source}")
        scopes = (f"repository:{repository}:pull,push", f"repository:{source}:pull")
        try:
            # Not retried: a mount only saves an upload, which is the fallback anyway.
            response = client.request("POST", f"/v2/{repository}/blobs/uploads/", call, scopes=scopes,
                                      params={"mount": digest, "from": source}, ok=(201, 202),
                                      retry=False)
        except RegistryError as err:
            # This login may not read the source (the registry refuses the whole request, not
            # just the mount), or the registry does not do mounts (a 400, a 405): upload
            # instead, as docker does. The upload says what is wrong if it fails too.
            log.debug("%s/%s: mount of %s from %s failed (%s): uploading instead",
                      client.registry, repository, digest[:19], source, err)
            continue
        response.close()
        if response.status_code == 201:
            return "mounted:" + source
        # 202: the source lacks the blob (or this login may not read it); the registry started
        # an upload instead. Another source may still hold it: end this session (as docker),
        # except after the last source, where the upload goes on in it.
        if refused is not None:
            refused(source)
        location = response.headers.get("Location")
        if number < len(sources):
            if location:
                _cancel_upload(client, call, _absolute(client, call, response.url, location))
            location = None
            continue
        break
    call = Call(operation, repository, what)
    if not location:
        location = _start_upload(client, call, repository)
    else:
        location = _absolute(client, call, response.url, location)
    progress.start(key, "Pushing", size)
    advance = _advancer(progress, key)
    if chunk_size and size > chunk_size:
        # ``failures`` counts failures in a row (an acknowledged chunk ends the row); ``restarts``
        # the sessions the registry dropped, which cost all that was sent: both are bounded.
        offset, failures, restarts = 0, 0, 0
        policy = client.options.retry
        while offset < size:
            length = min(chunk_size, size - offset)
            try:
                response = client.request(
                    "PATCH", location, call, actions=push_actions, retry=False, ok=(202,),
                    allow=(416,), headers={"Content-Type": "application/octet-stream",
                                           "Content-Range": f"{offset}-{offset + length - 1}"},
                    body=functools.partial(_SizedBody, blob.opener, size, advance, offset, length, stop),
                )
                if response.status_code == 416:
                    # The session holds other bytes than we thought (a chunk whose answer was
                    # lost landed after all): ask how many, as the 416 itself means.
                    response.close()
                    raise TransientRegistryError(f"{operation} {client.registry}/{repository}: "
                                                 f"PATCH {what}: 416 Range Not Satisfiable")
            except TransientRegistryError:
                # Ask the registry how much it kept and go on from there.
                failures += 1
                if failures >= policy.attempts:
                    raise
                client.pause(policy.delay(failures - 1))
                try:
                    offset, location = _upload_status(client, call, location)
                except UploadSessionLost as err:
                    # A chunk whose answer was lost landed after all: Distribution then holds
                    # more bytes than the session's signed state says and drops the session.
                    # Only a new session goes on; it does not cost another attempt.
                    restarts += 1
                    if restarts > 2 * policy.attempts:
                        # Not transient: starting the whole upload over would only repeat this.
                        raise RegistryError(f"{err}; the registry dropped the upload session "
                                            f"{restarts} times, giving up") from None
                    offset, location = 0, _start_upload(client, call, repository)
                progress.start(key, "Pushing", size)
                progress.advance(key, offset)
                continue
            response.close()
            received = parse_range_end(response.headers.get("Range", ""))
            if received is not None and received + 1 != offset + length:
                raise TransientRegistryError(
                    f"{operation} {client.registry}/{repository}: PATCH {what}: registry has "
                    f"{received + 1} bytes, expected {offset + length}")
            location = _absolute(client, call, response.url,
                                 response.headers.get("Location") or location)
            offset += length
            failures = 0
        response = client.request(
            "PUT", add_query(location, {"digest": digest}), call, actions=push_actions, retry=False,
            ok=(201, 204), headers={"Content-Type": "application/octet-stream"}, body=b"",
        )
    else:
        body = _SizedBody(blob.opener, size, advance, stop=stop)
        response = client.request(
            "PUT", add_query(location, {"digest": digest}), call, actions=push_actions, retry=False,
            ok=(201, 204), headers={"Content-Type": "application/octet-stream"},
            body=lambda: body,
        )
    response.close()
    return "uploaded"


def _cancel_upload(client: RegistryClient, call: Call, location: str) -> None:
    """End an upload session we will not use; a registry that cannot is left to expire it."""
    try:
        response = client.request("DELETE", location, call, actions=("pull", "push"), ok=(204,),
                                  allow=(404,), retry=False)
    except RegistryError:
        return
    response.close()


class UploadSessionLost(TransientRegistryError):
    """The registry no longer knows an upload session: what was sent in it is lost."""


def _start_upload(client: RegistryClient, call: Call, repository: str) -> str:
    """Open an upload session (``POST``) and return its absolute URL."""
    response = client.request("POST", f"/v2/{repository}/blobs/uploads/", call,
                              actions=("pull", "push"), ok=(202,))
    response.close()
    location = response.headers.get("Location")
    if not location:
        raise RegistryError(f"{call.operation} {client.registry}/{repository}: POST {call.what}: "
                            "registry gave no upload location")
    return _absolute(client, call, response.url, location)


def _upload_status(client: RegistryClient, call: Call, location: str) -> tuple[int, str]:
    """How many bytes an upload session holds (``GET`` on it: 204 with ``Range``), and its URL."""
    try:
        response = client.request("GET", location, call, actions=("pull", "push"), ok=(204,))
    except AuthError:
        raise
    except RegistryError as err:
        # The registry dropped the session (it does after a failed write): start over.
        raise UploadSessionLost(str(err)) from None
    response.close()
    end = parse_range_end(response.headers.get("Range", ""))
    return (end + 1 if end is not None else 0,
            _absolute(client, call, response.url, response.headers.get("Location") or location))


def _advancer(progress: Progress, key: str) -> Callable[[int], None]:
    return lambda n: progress.advance(key, n)


def _absolute(client: RegistryClient, call: Call, base: str | None, location: str) -> str:
    if location.startswith(("http://", "https://")):
        return location
    from urllib.parse import urljoin

    return urljoin(base or client.base_url(call) + "/", location)


def parse_range_end(header: str) -> int | None:
    """The last byte a registry says it holds: ``0-N`` or ``bytes=0-N`` (None if absent)."""
    match = re.match(r"^\s*(?:bytes=)?(\d+)-(\d+)\s*$", header)
    return int(match[2]) if match else None


def _pushable_layers(image: Image, store: Store | None, workdir: Path, compress: bool = True,
                     ) -> tuple[list[tuple[Descriptor, Callable[[], BinaryIO]]], bool]:
    """Each layer as it will be pushed; uncompressed layers become gzip (once, kept in the store)
    unless ``compress`` is off (an output's ``compression=uncompressed``)."""
    out: list[tuple[Descriptor, Callable[[], BinaryIO]]] = []
    changed = False
    manifest = image.manifest()
    docker = is_docker(manifest.media_type)
    for layer, desc in zip(image.layers(), manifest.layers, strict=True):
        if not compress or layer_compression(desc.media_type) is not Compression.NONE:
            out.append((desc, layer.compressed))
            continue
        changed = True
        if store is not None and hasattr(store, "layer_blob"):
            gz = store.layer_blob(layer.diff_id(), Compression.GZIP, docker=docker)
            out.append((gz, functools.partial(store.blobs.open, gz.digest, gz.size)))
            continue
        gz_desc, path = _gzip_to_file(layer, workdir, docker)
        out.append((gz_desc, functools.partial(open_binary, path)))
    return out, changed


def _gzip_to_file(layer: Layer, workdir: Path, docker: bool) -> tuple[Descriptor, Path]:
    fd, name = tempfile.mkstemp(prefix="layer-", suffix=".tar.gz", dir=workdir)
    path = Path(name)
    with os.fdopen(fd, "wb") as out:
        hashing = _HashingWriter(out)
        with layer.uncompressed() as raw:
            compress_stream(raw, hashing, Compression.GZIP)  # type: ignore[arg-type]  # a file-like reader, no typing.BinaryIO subclass
    media_type = layer_media_type(Compression.GZIP, docker=docker)
    return Descriptor(media_type, hashing.digest(), hashing.size), path


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        import hashlib

        self._out = out
        self._hasher = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._hasher.update(data)
        self.size += len(data)
        return self._out.write(data)

    def digest(self) -> Digest:
        return Digest.from_hasher(self._hasher)


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: Digest
    size: int
    uploaded: int
    mounted: int
    existing: int


def push(image: Image, reference: Reference | str, *, client: RegistryClient | None = None,
         options: ClientOptions | None = None, progress: Progress | None = None,
         workers: int = DEFAULT_WORKERS, mount_from: Sequence[str] = (),
         chunk_size: int | None = None, store: Store | None = None, compress: bool = True,
         tag: bool = True) -> PushResult:
    """Upload an image's blobs and then its manifest under ``reference``'s tag (or digest;
    with ``tag`` off, under its digest only: an index pushed next names it).

    Layers go in the compression they are held in; uncompressed ones are pushed
    as gzip (the manifest is rewritten to match), unless ``compress`` is off. A blob the registry
    lacks is mounted from another of its repositories that holds it (``mount_from``, the
    repository of a RemoteImage, then those the store recorded a pull from or a push to, as
    docker's distribution metadata) instead of uploaded; the store then records this one too.
    """
    ref = Reference.parse(reference) if isinstance(reference, str) else reference
    progress = progress or NullProgress()
    own_client = client is None
    client = client or RegistryClient(ref.registry, options)
    sources = list(mount_from)
    if isinstance(image, RemoteImage) and image.registry == client.registry:
        sources.insert(0, image.repository)
    try:
        with tempfile.TemporaryDirectory(prefix="pybuild-push-") as tmp:
            layers, changed = _pushable_layers(image, store, Path(tmp), compress)
            raw_manifest, media_type = image.raw_manifest(), image.manifest().media_type
            if changed:
                manifest = replace(image.manifest(), layers=tuple(d for d, _ in layers))
                raw_manifest = manifest.to_bytes()
            config_bytes = image.raw_config()
            config_desc = image.manifest().config
            blobs = [PushBlob(config_desc, lambda: io.BytesIO(config_bytes), "config")]
            blobs += [PushBlob(d, opener) for d, opener in layers]
            known = _known_sources(store)
            recorded = known.candidates(client.registry, [b.descriptor.digest for b in blobs],
                                        exclude=ref.repository) if known is not None else {}
            counts = {"uploaded": 0, "mounted": 0, "exists": 0}
            lock = threading.Lock()
            stop = TransferStop()
            seen: set[str] = set()
            tasks: list[Callable[[], None]] = []
            for blob in blobs:
                if blob.descriptor.digest in seen:
                    continue
                seen.add(blob.descriptor.digest)

                def task(b: PushBlob = blob) -> None:
                    key = short(b.descriptor.digest)
                    quiet = b.label == "config"
                    digest = b.descriptor.digest
                    refused = None if known is None else functools.partial(
                        known.forget, client.registry, digest=digest)
                    outcome = upload_blob(client, ref.repository, b,
                                          mount_from=sources + recorded.get(digest, []),
                                          chunk_size=chunk_size, refused=refused,
                                          progress=NullProgress() if quiet else progress, stop=stop)
                    kind = outcome.split(":", 1)[0]
                    with lock:
                        counts[kind] += 1
                    if quiet:
                        return
                    if kind == "exists":
                        progress.done(key, "Layer already exists")
                    elif kind == "mounted":
                        progress.done(key, f"Mounted from {outcome.split(':', 1)[1]}")
                    else:
                        progress.done(key, "Pushed")

                tasks.append(task)
            if ref.tag:
                progress.message(f"The push refers to repository [{ref.name}]")
            run_transfers(tasks, workers, stop)
            digest = Digest.of(raw_manifest)
            if ref.digest is not None and ref.digest != digest:
                raise DigestMismatchError(ref.digest, digest, f"manifest pushed as {ref.familiar}")
            identifier = (ref.tag if tag else None) or str(digest)
            answered = client.put_manifest(ref.repository, identifier, raw_manifest, media_type)
            if answered and answered != digest:
                raise DigestMismatchError(digest, answered, f"manifest stored by {client.registry}")
            if known is not None:
                known.record(client.registry, ref.repository, (b.descriptor.digest for b in blobs))
    finally:
        progress.close()
        if own_client:
            client.close()
    if tag:
        progress.message(f"{ref.tag or 'digest'}: digest: {digest} size: {len(raw_manifest)}")
    return PushResult(ref, digest, len(raw_manifest), counts["uploaded"], counts["mounted"],
                      counts["exists"])


def push_manifests(reference: Reference, blobs: Sequence[tuple[Descriptor, bytes]],
                   manifests: Sequence[tuple[bytes, str]], *, options: ClientOptions | None = None,
                   progress: Progress | None = None) -> Digest:
    """Upload small blobs, then each manifest by digest, the last under ``reference``'s tag:
    what an attested image adds after its own push (the attestation manifest, the index)."""
    client = RegistryClient(reference.registry, options)
    try:
        for descriptor, data in blobs:
            upload_blob(client, reference.repository,
                        PushBlob(descriptor, functools.partial(io.BytesIO, data), "attestation"))
        digest = Digest.of(b"")
        for i, (raw, media_type) in enumerate(manifests):
            digest = Digest.of(raw)
            last = i == len(manifests) - 1
            identifier = (reference.tag if last else None) or str(digest)
            answered = client.put_manifest(reference.repository, identifier, raw, media_type)
            if answered and answered != digest:
                raise DigestMismatchError(digest, answered, f"manifest stored by {client.registry}")
    finally:
        client.close()
    if progress is not None and manifests:
        progress.message(f"{reference.tag or 'digest'}: digest: {digest} size: {len(manifests[-1][0])}")
    return digest


def _known_sources(store: Store | None) -> BlobSources | None:
    """The store's records of where blobs live (none without a store)."""
    if store is None:
        return None
    from cache.blobsources import BlobSources

    return BlobSources(store.db)


def pull_manifest_digest(client: RegistryClient, reference: Reference) -> Digest | None:
    """The digest a tag points at (HEAD, no body), or None if absent."""
    head = client.head_manifest(reference.repository, reference.identifier, MANIFEST_ACCEPT)
    if head is None or not head[0]:
        return None
    return Digest(head[0])


