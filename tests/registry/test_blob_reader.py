"""BlobReader against a real registry: exact bytes whatever the reader's buffer sizes."""

from __future__ import annotations

import io

import pytest

from builder.image.reference import Reference
from builder.registry import RegistryClient, push, resolve
from builder.registry.remote import BlobReader
from tests.registry.images import make_image, random_name


@pytest.mark.parametrize("buffer_size", [1, 4099, 1 << 20, 8 << 20])
def test_blob_reader_yields_the_blob_exactly(registry: str, buffer_size: int) -> None:
    image = make_image(1, 3 << 20, seed=random_name())
    ref = f"{registry}/{random_name('br')}/app:1"
    push(image, ref)
    expected = image.layers()[0].compressed().read()
    descriptor = image.manifest().layers[0]
    with RegistryClient(registry) as client:
        remote = resolve(client, Reference.parse(ref))
        got = bytearray()
        with BlobReader(client, remote.repository, descriptor) as reader:
            buffer = memoryview(bytearray(buffer_size))
            limit = 64 if buffer_size == 1 else None  # a byte at a time: only the start
            while limit is None or len(got) < limit:
                n = reader.readinto(buffer)
                if not n:
                    break
                got += buffer[:n]
            if limit is None:
                assert reader.readinto(buffer) == 0
        assert bytes(got) == (expected if limit is None else expected[:limit])
        # The buffered form other readers use gives the same bytes.
        with io.BufferedReader(BlobReader(client, remote.repository, descriptor), 1 << 16) as stream:
            assert stream.read() == expected
