"""FROM: where a stage's base image comes from.

In order: a named context (``--build-context``); ``scratch``; another stage
(handled by the stage runner); a file reference (``oci-layout://DIR[:tag]``,
``docker-archive://FILE``) imported into the store; the local store; the registry. ``--pull`` skips the local
store for registry references. Concurrent stages asking for the same image
pull it once.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import ImageNotFoundError, UsageError
from builder.image import mutate
from builder.image.image import Image
from builder.image.platform import Platform
from cache.store import Store

if TYPE_CHECKING:
    from builder.execute.fetch import UrlFetches
    from builder.execute.gitsource import GitSources
    from builder.execute.named import NamedContext
    from builder.registry.progress import Progress as TransferProgress

OCI_LAYOUT = "oci-layout://"
DOCKER_ARCHIVE = "docker-archive://"


@dataclass
class BaseResolver:
    """Finds the image a FROM names: a named context, the store, or a registry (pulled, or read only as a probe)."""

    store: Store
    platform: Platform
    pull: bool = False
    insecure_registries: tuple[str, ...] = ()
    quiet: bool = False
    named: Mapping[str, NamedContext] = field(default_factory=dict)  # --build-context, by context_key
    source_date_epoch: int | None = None  # clamps the mtimes of a directory context's layer
    metadata_only: bool = False  # a probe: a registry image not in the store is read, not pulled
    git: GitSources | None = None  # the build's, for git named contexts
    urls: UrlFetches | None = None  # notes the digests of http(s) named contexts, for the provenance
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _pulled: set[str] = field(default_factory=set)
    _contexts: dict[str, Image] = field(default_factory=dict)
    _probed: dict[str, Image] = field(default_factory=dict)  # what a probe read of a registry

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def named_context(self, name: str) -> NamedContext | None:
        if not self.named:
            return None
        from builder.execute.named import context_key

        return self.named.get(context_key(name))

    def resolve(self, name: str, transfers: TransferProgress | None = None,
                cancel: threading.Event | None = None) -> Image:
        """The base image for ``FROM name`` (already expanded), or for ``COPY --from=name``;
        a pull reports its blobs to ``transfers``, and stops when ``cancel`` is set (Ctrl-C, a
        failed stage)."""
        named = self.named_context(name)
        if named is not None:
            if named.image is not None:
                return self._resolve(named.image, transfers, cancel)
            with self._lock(f"context {named.name}"):
                if named.name not in self._contexts:
                    self._contexts[named.name] = self._directory_image(named)
                return self._contexts[named.name]
        return self._resolve(name, transfers, cancel)

    def _resolve(self, name: str, transfers: TransferProgress | None = None,
                 cancel: threading.Event | None = None) -> Image:
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
            if self.metadata_only:
                if str(ref) not in self._probed:  # under the ref's lock: read once per build
                    self._probed[str(ref)] = self._metadata(ref)
                return self._probed[str(ref)]
            return self._pull(ref, transfers, cancel)

    def _metadata(self, ref) -> Image:
        """The manifest and config of a registry image, no layers: all a probe reads of a base
        (its digest and config), so a stage the build skips never downloads its base."""
        from builder.registry import ClientOptions
        from builder.registry.client import RegistryClient
        from builder.registry.remote import resolve

        client = RegistryClient(ref.registry, ClientOptions(insecure_registries=frozenset(self.insecure_registries)))
        try:
            image = resolve(client, ref, self.platform, "pull")
            image.config_file()  # read now, while the client is open
        finally:
            client.close()
        return image

    def _pull(self, ref, transfers: TransferProgress | None = None,
              cancel: threading.Event | None = None) -> Image:
        from builder.registry import ClientOptions, pull

        options = ClientOptions(insecure_registries=frozenset(self.insecure_registries))
        image = pull(ref, self.store, self.platform, options=options, progress=transfers, cancel=cancel)
        self._pulled.add(str(ref))
        try:
            return self.store.image(str(ref))
        except ImageNotFoundError:
            return self.store.image(str(image.digest()))

    def _directory_image(self, named: NamedContext) -> Image:
        """A directory context as BuildKit's local source: its files in one layer, no config."""
        from builder.execute.context import BuildContext
        from builder.execute.copy import CopySpec, copy_layer
        from builder.execute.rootfs import RootfsView
        from builder.image.config import History
        from cache.store import BuildLayers

        scratch = None
        if named.url is not None:
            from builder.execute.named import fetch
            from builder.runtime.cleanup import temp_dir

            scratch = temp_dir(self.store.root / "run", "context")
            try:
                root = fetch(named, scratch, self.git, self.urls)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
        else:
            assert named.path is not None
            root = named.path
        context = BuildContext.from_dir(root)
        tar = self.store.temp_path(".layer.tar")
        try:
            with open(tar, "wb") as out:
                stats = copy_layer(CopySpec(sources=(".",), dest="/"), source=context, dest_view=RootfsView([]),
                                   out=out, source_date_epoch=self.source_date_epoch, workdir=self.store.tmp_dir)
            layer = BuildLayers(self.store).add_tar(tar, stats)
        finally:
            tar.unlink(missing_ok=True)
            context.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        # No time in the history: the same files give the same image on every machine.
        image = mutate.append(mutate.empty(self.platform),
                              [mutate.Addendum(History(created_by=named.describe()), layer)])
        return self.store.image(str(self.store.write_image(image)))

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
