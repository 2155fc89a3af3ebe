"""A pull's layers are paired with their config's diff_ids unchecked (``Store.claim_layer``),
as skopeo and containerd pull; the claim is checked the first time pybuild reads the layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ImageError
from builder.image.descriptor import Descriptor
from builder.image.mediatypes import Compression
from builder.image.mutate import DerivedImage
from cache import Store
from cache.store import SIZE_UNKNOWN, content_size
from tests.store.imagegen import make_image, make_layer


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "root")
    yield s
    s.close()


def pulled(store: Store, image, name: str):  # type: ignore[no-untyped-def]
    """Put ``image`` into the store the way ``download_blobs`` + ``write_image`` do."""
    for layer in image.layers():
        with layer.compressed() as stream:
            store.blobs.write(stream, layer.digest(), layer.size())
        store.claim_layer(Descriptor(layer.media_type(), layer.digest(), layer.size()), layer.diff_id())
    store.write_image(image, [name])
    return store.resolve(name)


def liar_image(seed: str):  # type: ignore[no-untyped-def]
    """An image whose second layer blob holds other content than its config's diff_id."""
    good = make_image(seed)
    evil = make_layer({"evil": b"not what the config says"})
    layers = list(good.layers())
    liar = type(evil)(evil.blob, layers[1].tar, evil.mediatype)
    return DerivedImage([layers[0], liar], good.config_file()), layers[1].diff_id()


def verified(store: Store) -> list[int]:
    return [r[0] for r in store.db.query("SELECT verified FROM layers ORDER BY diff_id")]


def test_a_pull_records_claims_and_a_size_check_verifies_them(store: Store):
    image = make_image("claims")
    record = pulled(store, image, "pulled:1")
    assert verified(store) == [0, 0]
    assert record.size == SIZE_UNKNOWN
    expected = sum(content_size(layer.uncompressed()) for layer in image.layers())
    assert store.image_size(record) == expected
    assert verified(store) == [1, 1]
    assert store.resolve("pulled:1").size == expected  # remembered


def test_extracting_a_claimed_layer_checks_it_and_records_its_size(store: Store):
    image = make_image("extract")
    record = pulled(store, image, "pulled:1")
    store.snapshot(store.image("pulled:1"))
    assert verified(store) == [1, 1]
    # the sizes extraction recorded are the ones a full read computes
    for layer in image.layers():
        assert store.diff_size(layer.diff_id()) == content_size(layer.uncompressed())
    assert store.image_size(record) == sum(content_size(layer.uncompressed()) for layer in image.layers())


FIRST_READS = {
    "extraction": lambda store, record, diff_id: store.snapshot(store.image("liar:1")),
    "size": lambda store, record, diff_id: store.image_size(record),
    "recompression": lambda store, record, diff_id: store.layer_blob(diff_id, Compression.ZSTD),
    "blob lookup": lambda store, record, diff_id: store.layer_blob(diff_id, Compression.GZIP),
}


@pytest.mark.parametrize("first_read", FIRST_READS)
def test_a_false_claim_fails_on_first_read_and_is_forgotten(store: Store, first_read: str):
    image, lied_about = liar_image("liar")
    record = pulled(store, image, "liar:1")  # the blobs match the manifest: the pull succeeds
    with pytest.raises(ImageError, match="does not match the image config"):
        FIRST_READS[first_read](store, record, lied_about)
    assert len(list(store.snapshots)) == (1 if first_read == "extraction" else 0)
    # the false pairing is gone: nothing hands out the blob as that layer any more
    assert store.db.query("SELECT 1 FROM layers WHERE diff_id=?", (lied_about,)) == []
    assert store.check().clean


def test_a_false_claim_does_not_shadow_the_true_layer(store: Store):
    """An image pulled earlier may not make its blob the store's form of another image's layer."""
    image, lied_about = liar_image("shadow")
    pulled(store, image, "liar:1")
    true = make_image("shadow")  # the image whose layer the liar named
    store.write_image(true, ["true:1"])  # an import checks every new pairing
    desc = store.layer_blob(lied_about, Compression.GZIP)
    assert desc.digest == true.layers()[1].digest()
    assert [r[0] for r in store.db.query("SELECT blob_digest FROM layers WHERE diff_id=?", (lied_about,))
            ] == [true.layers()[1].digest()]


def test_checked_claims_cost_one_read(store: Store, monkeypatch):  # type: ignore[no-untyped-def]
    image = make_image("once")
    pulled(store, image, "once:1")
    reads: list[str] = []
    original = Store._verify_diff
    monkeypatch.setattr(Store, "_verify_diff", lambda self, d, i: reads.append(i) or original(self, d, i))
    for layer in image.layers():
        store.layer_blob(layer.diff_id(), Compression.GZIP)
        store.layer_blob(layer.diff_id(), Compression.GZIP)
        store.diff_size(layer.diff_id())
    assert reads == [layer.diff_id() for layer in image.layers()]
