"""Random sequences of store operations against a model of what docker would hold:
after every step the store checks clean, every tag names the image the model expects,
and nothing an image needs has been pruned."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from builder.errors import ImageError, ImageNotFoundError
from builder.image.mediatypes import Compression
from cache import Store
from tests.store.imagegen import image_of, noise

# Four images; the last two share a base layer, as images built FROM one base do.
_BASE = {"base/file": noise("base", 3000)}
IMAGES = [
    image_of([{"a": noise("a", 2000)}], compression=Compression.GZIP),
    image_of([{"b": noise("b", 2000)}, {"b2": b"x"}], compression=Compression.ZSTD, docker=True),
    image_of([_BASE, {"c": b"c"}], compression=Compression.NONE),
    image_of([_BASE, {"d": b"d"}], compression=Compression.GZIP),
]
NAMES = ["one:1", "one:2", "two:1", "reg.example:5000/three:1"]


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.store = Store(self.dir / "root")
        self.tags: dict[str, int] = {}  # name -> image index
        self.held: set[int] = set()  # images held (tagged or dangling)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(i=st.integers(0, 3), name=st.sampled_from(NAMES) | st.none())
    def write(self, i: int, name: str | None) -> None:
        self.store.write_image(IMAGES[i], [name] if name else [])
        self.held.add(i)
        if name:
            self.tags[name] = i

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def tag(self, src: str, dst: str) -> None:
        if src not in self.tags:
            try:
                self.store.tag(src, dst)
            except ImageNotFoundError:
                return
            raise AssertionError(f"tag of missing {src} succeeded")
        self.store.tag(src, dst)
        self.tags[dst] = self.tags[src]

    @rule(name=st.sampled_from(NAMES))
    def untag(self, name: str) -> None:
        assert self.store.untag(name) == (name in self.tags)
        self.tags.pop(name, None)

    @rule(name=st.sampled_from(NAMES), force=st.booleans())
    def rmi_by_name(self, name: str, force: bool) -> None:
        if name not in self.tags:
            return
        i = self.tags.pop(name)
        self.store.rmi(name, force=force)
        if i not in self.tags.values():
            self.held.discard(i)

    @rule(i=st.integers(0, 3), force=st.booleans())
    def rmi_by_id(self, i: int, force: bool) -> None:
        if i not in self.held:
            return
        names = [n for n, j in self.tags.items() if j == i]
        repos = {n.rsplit(":", 1)[0] for n in names}
        try:
            self.store.rmi(IMAGES[i].config_digest().hex[:12], force=force)
        except ImageError as err:
            assert len(repos) > 1 and not force and "must be forced" in str(err)
            return
        for n in names:
            del self.tags[n]
        self.held.discard(i)

    @rule(remove_all=st.booleans(), budget=st.none() | st.integers(0, 30_000))
    def prune(self, remove_all: bool, budget: int | None) -> None:
        self.store.prune(budget, remove_all=remove_all)
        tagged = set(self.tags.values())
        if remove_all or budget is not None:
            # Dangling images may go; tagged ones never.
            kept = {i for i in self.held if i in tagged or self._present(i)}
            self.held = kept

    @rule(i=st.integers(0, 3))
    def recompress(self, i: int) -> None:
        if i in self.held:
            self.store.layer_blob(IMAGES[i].layers()[0].diff_id(), Compression.ZSTD)

    def _present(self, i: int) -> bool:
        try:
            return self.store.resolve(str(IMAGES[i].config_digest())).config_digest == IMAGES[i].config_digest()
        except ImageNotFoundError:
            return False

    @invariant()
    def consistent(self) -> None:
        report = self.store.check()
        assert report.clean, report.problems
        for name, i in self.tags.items():
            image = self.store.image(name)
            assert image.config_digest() == IMAGES[i].config_digest()
            for layer in image.layers():
                with layer.compressed() as f:
                    while f.read(1 << 16):
                        pass
        held = {r.config_digest for r in self.store.images()}
        assert held == {IMAGES[i].config_digest() for i in self.held}


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(
    max_examples=40, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
