"""FROM: where a stage's base image comes from.

In order: ``scratch``; another stage (handled by the stage runner); a file
reference (``oci-layout://DIR[:tag]``, ``docker-archive://FILE``) imported
into the store; the local store; the registry. ``--pull`` skips the local
store for registry references. Concurrent stages asking for the same image
pull it once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ImageNotFoundError, UsageError
from builder.image import mutate
from builder.image.image import Image
from builder.image.platform import Platform
from cache.store import Store

OCI_LAYOUT = "oci-layout://"
DOCKER_ARCHIVE = "docker-archive://"


@dataclass
class BaseResolver:
    store: Store
    platform: Platform
    pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    quiet: bool = False
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _pulled: set[str] = field(default_factory=set)

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def resolve(self, name: str) -> Image:
        """The base image for ``FROM name`` (already expanded)."""
        if name == "scratch":
            return mutate.empty(self.platform)
        if name.startswith(OCI_LAYOUT):
            return self._from_file(name, name[len(OCI_LAYOUT):], layout=True)
        if name.startswith(DOCKER_ARCHIVE):
            return self._from_file(name, name[len(DOCKER_ARCHIVE):], layout=False)
        from builder.image.reference import Reference

        ref = Reference.parse(name)
        with self._lock(str(ref)):
            if not (self.pull and str(ref) not in self._pulled):
                try:
                    return self.store.image(str(ref))
                except ImageNotFoundError:
                    pass
            return self._pull(ref)

    def _pull(self, ref) -> Image:  # type: ignore[no-untyped-def]
        from builder.registry import ClientOptions, pull

        options = ClientOptions(insecure_registries=frozenset(self.insecure_registries))
        image = pull(ref, self.store, self.platform, options=options)
        self._pulled.add(str(ref))
        try:
            return self.store.image(str(ref))
        except ImageNotFoundError:
            return self.store.image(str(image.digest()))

    def _from_file(self, name: str, spec: str, *, layout: bool) -> Image:
        from builder.export.archive import open_archive, read_images

        path_text, tag = spec, None
        if layout and ":" in Path(spec).name:
            path_text, _, tag = spec.rpartition(":")
        path = Path(path_text)
        if not path.exists():
            raise UsageError(f"FROM {name}: {path} does not exist")
        with self._lock(name), open_archive(path, self.store.tmp_dir) as files:
            images = read_images(files)
            if not images:
                raise ImageNotFoundError(f"FROM {name}: no image in {path}")
            chosen = images[0]
            if tag is not None:
                matches = [t for t in images if any(n == tag or n.endswith(":" + tag) for n in t.names)]
                if not matches:
                    raise ImageNotFoundError(f"FROM {name}: no image tagged {tag!r} in {path}")
                chosen = matches[0]
            self.store.write_image(chosen.image)
        return self.store.image(str(chosen.image.config_digest()))
