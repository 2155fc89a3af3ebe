"""Runs one stage: its base, its ONBUILD triggers, then each instruction in order.

The stage's state is an image value (layers + config + history) that every
instruction replaces with a new one, as docker's builder commits after each
step. Metadata instructions change only the config and add an empty_layer
history entry; RUN, COPY, ADD and WORKDIR (when it creates the directory) add
a layer. Config and history follow docker's classic builder, the reference
for the differential tests: ENTRYPOINT clears an inherited CMD, the default
PATH joins the env, ``created_by`` reads ``/bin/sh -c #(nop)  ENV A=1``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import stat as stat_
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from builder.errors import (
    ContainerError,
    ContainerStartError,
    DockerfileError,
    ImageError,
    ImageNotFoundError,
    InstructionError,
    RegistryError,
    SourceLocation,
    StepFailedError,
    StoreError,
    UserNotFoundError,
)
from builder.execute.urls import is_git_source, redact_credentials
from builder.frontend import instructions as ins_
from builder.frontend.dump import go_quote, go_quote_rune
from builder.frontend.expand import Scope
from builder.image.config import ContainerConfig, Healthcheck, History
from builder.image.image import Image, Layer
from builder.image.mutate import DerivedImage
from builder.progress import Progress, StepHandle, StepTransfers
from builder.runtime.spec import ContainerSettings
from builder.scheduler import Cancelled
from cache.keys import StepInputs
from cache.records import CacheRecords, StepResult
from cache.snapshots import chain_ids
from cache.statcache import StatCache
from cache.store import BuildLayers, Store

if TYPE_CHECKING:
    from builder.execute.context import BuildContext
    from builder.execute.copy import CopySpec, SourceItem
    from builder.execute.fetch import UrlFetches
    from builder.execute.gitsource import GitSources
    from builder.execute.rootfs import RootfsView
    from builder.execute.run import Secret
    from builder.execute.ssh import SshAgents
    from builder.layers.tarwriter import TarEntry
    from builder.runtime import Runtime
    from builder.runtime.cdi import Edits, Registry
    from cache.remote import ImportedCache

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass(frozen=True)
class NoCache:
    """--no-cache and --no-cache-filter: which stages skip the cache, and the flag that says so
    (a miss they cause is explained by the flag, not by a comparison with an earlier build)."""

    every_stage: bool = False
    stages: frozenset[str] = frozenset()  # lower-cased stage names

    def __call__(self, stage: str) -> bool:
        return self.reason(stage) is not None

    def reason(self, stage: str) -> str | None:
        if self.every_stage:
            return "--no-cache"
        if stage.lower() in self.stages:
            return f"--no-cache-filter {stage}"
        return None


@dataclass
class BuildEnv:
    """What every stage of one build shares."""

    store: Store
    layers: BuildLayers
    progress: Progress
    runtime_factory: Callable[[], Runtime]
    context_root: Path | None
    secrets: Mapping[str, Secret]
    urls: UrlFetches  # ADD URLs that keying downloaded, for the step that then misses
    ssh: SshAgents | None = None  # of --ssh
    container: ContainerSettings = field(default_factory=ContainerSettings)  # --add-host, --shm-size, --ulimit
    allow: frozenset[str] = frozenset()  # --allow entitlements: security.insecure
    network: str = "default"
    source_date_epoch: int | None = None
    copy_context: BuildContext | None = None  # COPY/ADD sources
    dockerfile_name: str = "Dockerfile"
    records: CacheRecords | None = None  # None: the cache is not used at all
    statcache: StatCache | None = None
    no_cache: NoCache = field(default_factory=NoCache)  # --no-cache / --no-cache-filter
    explain_misses: bool = False  # say why each miss missed (--progress plain, --explain)
    dry_run: bool = False  # --explain: compute keys and explain misses, run nothing
    lineage_prefix: str = ""  # identifies the Dockerfile, for finding a step's earlier builds
    explained: list[str] = field(default_factory=list)
    missed_keys: set[str] = field(default_factory=set)  # steps of this build that missed (explained)
    imported: ImportedCache | None = None  # of --cache-from, asked after a local miss
    used_keys: list[str] = field(default_factory=list)  # every step key of this build (--cache-to)
    cache_mount_ids: set[str] = field(default_factory=set)  # RUN cache mounts used (--cache-to)
    cached_mount_ids: set[str] = field(default_factory=set)  # those of RUN steps that hit instead
    cdi_spec_dirs: tuple[Path, ...] | None = None  # --cdi-spec-dir; None: CDI's usual directories
    git: GitSources | None = None  # ADD <git>'s commits and checkouts
    hostname: str = "buildkitsandbox"  # of RUN steps (BUILDKIT_SANDBOX_HOSTNAME)
    cache_namespace: str = ""  # of RUN cache mount ids (BUILDKIT_CACHE_MOUNT_NS)
    _runtime: Runtime | None = None
    _runtime_lock: threading.Lock = field(default_factory=threading.Lock)
    _cdi: Registry | None = None

    @property
    def runtime(self) -> Runtime:
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = self.runtime_factory()
            return self._runtime

    def cdi(self) -> Registry:
        """The CDI devices of this machine, read when a step first asks for one."""
        from builder.runtime.cdi import Registry

        with self._runtime_lock:
            if self._cdi is None:
                self._cdi = Registry.load(self.cdi_dirs())
            return self._cdi

    def cdi_dirs(self) -> tuple[Path, ...]:
        from builder.runtime.cdi import DEFAULT_SPEC_DIRS

        return self.cdi_spec_dirs or DEFAULT_SPEC_DIRS

    def created(self) -> str:
        if self.source_date_epoch is not None:
            moment = datetime.datetime.fromtimestamp(self.source_date_epoch, datetime.UTC)
        else:
            moment = datetime.datetime.now(datetime.UTC)
        return moment.isoformat().replace("+00:00", "Z")


@dataclass
class StageResult:
    """A finished stage: its image and its final variables (for stages built FROM it)."""

    image: Image
    scope: Scope
    lowers: Callable[[], Sequence[Path]]
    key: str = ""  # the cache key of the stage's last step
    complete: bool = True  # False: a dry run (a probe) found steps that would run


class StageRunner:
    """Executes the instructions of one stage on top of a base image."""

    def __init__(self, env: BuildEnv, *, label: str, base: Image, scope: Scope,
                 stage_lookup: Callable[[str, StepTransfers | None], StageResult | Image],
                 cancel: threading.Event,
                 total: int, key: str = "", stage_index: int = 0, shown_prefix: str | None = None,
                 shown_total: int | None = None, shown_step: int = 0) -> None:
        self.env = env
        self.label = label
        # The step as BuildKit names it: ``[build 2/5] RUN make``; no stage name in a Dockerfile
        # of one stage, and only the steps BuildKit makes vertices of counted (FROM, RUN, COPY,
        # ADD, WORKDIR). ``step``/``total`` count every instruction (keys, --explain).
        self.shown_prefix = f"{label} " if shown_prefix is None else shown_prefix
        self.shown_total = total if shown_total is None else shown_total
        self.shown_step = shown_step
        self.key = key
        self.stage_index = stage_index
        self.first_step_sources: dict[str, str] = {}
        self.first_step_stage_names: dict[str, str] = {}  # "base" -> the stage FROM names, if one
        self._later: Sequence[ins_.Instruction] = ()  # the stage's steps after this one (to explain a miss)
        self.scope = scope
        self.stage_lookup = stage_lookup
        self.cancel = cancel
        self.total = total
        self.step = 0
        base_config = base.config_file()
        self.file_config = base_config
        self.layers: list[Layer] = list(base.layers())
        self.history: list[History] = list(base_config.history)
        self.config: ContainerConfig = base_config.config
        self.author = base_config.author
        self.cmd_set = False
        self._arg_text = ""  # the ARG being run, as declared (for its history entry)
        self._bind_items: dict[str, list[SourceItem]] = {}  # the sources a RUN binds, as keyed
        self._keyed_stats: list[tuple[str | Path, tuple[int, ...]]] = []  # context files the key read
        self._gone_from = ""  # the --cache-from whose hit of this step has lost its layer
        self.changed = False
        self.would_run = 0  # dry run: the steps that missed
        self._lowers_cache: tuple[int, list[Path]] | None = None
        self._handle: StepHandle | None = None  # the step running: an image its --from pulls shows there
        self._carried_miss = ""  # why a step that shows no line (ENV, ARG, ...) missed the cache

    # -- the image value

    def image(self) -> DerivedImage:
        # A derived image drops the base's other top-level fields (comment, container,
        # container_config, docker_version): they described the base's own making, and
        # docker's builder and BuildKit both leave them out of a child.
        config = replace(
            self.file_config, config=self.config, history=tuple(self.history),
            author=self.author,
            created=self.history[-1].created if self.changed and self.history else self.file_config.created,
            extra=self.file_config.extra if not self.changed else {},
        )
        return DerivedImage(self.layers, config)

    def lowers(self) -> list[Path]:
        """Snapshot dirs of the current layers, base first (extracting what is missing)."""
        if self._lowers_cache is not None and self._lowers_cache[0] == len(self.layers):
            return self._lowers_cache[1]
        paths = self.env.store.snapshot(DerivedImage(self.layers, self.file_config), self._check_cancel)
        self._lowers_cache = (len(self.layers), paths)
        return paths

    def _shell(self) -> tuple[str, ...]:
        return self.config.shell or DEFAULT_SHELL

    def _nop(self, text: str, *, two_spaces: bool = True) -> None:
        gap = "  " if two_spaces else " "
        self._commit(f"{' '.join(self._shell())} #(nop){gap}{text}", layer=None)

    def _commit(self, created_by: str, layer: Layer | None) -> None:
        self.changed = True
        self.history.append(History(created=self.env.created(), created_by=created_by,
                                    empty_layer=layer is None))
        if layer is not None:
            self.layers.append(layer)

    def _sync_env(self) -> None:
        """The config env follows the scope's (ENV lines, plus PATH when the base had none)."""
        self.config = replace(self.config, env=tuple(f"{k}={v}" for k, v in self.scope.config_env.items()))

    # -- running

    def run(self, commands: Sequence[ins_.Instruction], *, triggers: Sequence[ins_.Instruction] = ()) -> None:
        if commands or triggers:
            self._sync_env()
            self.changed = True
        if triggers:
            self.config = replace(self.config, on_build=())
        steps = (*triggers, *commands)
        for i, ins in enumerate(steps):
            if self.cancel.is_set():
                raise Cancelled("build cancelled")
            self.step += 1
            self._later = steps[i + 1:]
            self.execute(ins)

    def execute(self, ins: ins_.Instruction) -> None:
        if isinstance(ins, ins_.Arg):
            self._arg_text = self._declared_arg_text(ins)
        expanded = self.scope.apply(ins)
        visible = is_shown_step(ins)
        self.shown_step += visible
        handle = self._handle = self.env.progress.start(f"{self._bracket()} {_summary(ins)}", visible=visible)
        try:
            records = self.env.records
            inputs = self._inputs(expanded, ins) if records is not None else None
            key = inputs.key() if inputs is not None else ""
            if records is not None and inputs is not None and not self.env.no_cache(self.label):
                record = records.get(key)
                if record is not None and self._replay(record.result):
                    self.key = key
                    self.env.used_keys.append(key)
                    records.touch(key)
                    self._note_cache_mounts(expanded, ran=False)
                    self.env.progress.done(handle, cached=True)
                    return
                if self._replay_imported(key, inputs):
                    self.key = key
                    self.env.used_keys.append(key)
                    self._note_cache_mounts(expanded, ran=False)
                    self.env.progress.done(handle, cached=True)
                    return
            if inputs is not None and self.env.explain_misses:
                self._explain(handle, inputs, key)
                self.env.missed_keys.add(key)
                if handle.visible and self._carried_miss:
                    self.env.progress.message(f"#{handle.number} cache miss: {self._carried_miss}")
                    self._carried_miss = ""
            if self.env.dry_run:
                self.key = key
                self.would_run += 1
                self.env.progress.done(handle, note="would run")
                return
            layers_before = len(self.layers)
            self._dispatch(expanded, handle)
            if inputs is not None and (moved := self._keyed_files_changed()):
                # The step read files other than those its key holds: a record would give this
                # result to a later build of the old files. Nothing after it is kept either
                # (a key no build can compute again).
                self.env.progress.warning(
                    f"{moved} changed while {self._bracket()} {_summary(ins)} ran: "
                    "its result is not cached; build again for a cached result")
                self.key = "sha256:" + hashlib.sha256(f"{key}\0changed\0{os.urandom(16).hex()}".encode()).hexdigest()
            elif records is not None and inputs is not None:
                made = self.layers[-1].diff_id() if len(self.layers) > layers_before else None
                result = StepResult(made, self.config, self.author, self.history[-1])
                kept = {**inputs.to_json(), "stage": self.label}  # the stage: for `pybuild cache ls`
                records.put(key, inputs.parent, self._lineage(), result, kept)
                self.key = key
                self.env.used_keys.append(key)
        except (ImageNotFoundError, RegistryError) as err:  # --from= or a mount's from=: name the line
            located = err if isinstance(err, DockerfileError) else ins.error(str(err), InstructionError)
            self.env.progress.failed(handle, str(located).splitlines()[0])
            raise located from None
        except BaseException as err:
            if self.cancel.is_set():  # killed by the cancel, as BuildKit shows it
                self.env.progress.canceled(handle)
            elif isinstance(err, StepFailedError) and err.solve:  # BuildKit's words, as the end says
                self.env.progress.failed(handle, err.solve)
            else:
                self.env.progress.failed(handle, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        self.env.progress.done(handle)

    # -- the cache

    def _lineage(self) -> str:
        text = f"{self.env.lineage_prefix}\0{self.stage_index}\0{self.step}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _replay_imported(self, key: str, inputs: StepInputs) -> bool:
        """A hit in a --cache-from cache: replay it with a layer fetched only if read; keep the
        record (with this build's inputs: the same key means the same inputs)."""
        imported, records = self.env.imported, self.env.records
        self._gone_from = ""
        found = imported.get(key) if imported is not None else None
        if imported is None or records is None or found is None:
            return False
        usable = imported.usable(key)
        if usable is None:
            self._gone_from = found.origin  # the miss says so, not "not built before"
            return False
        found = usable
        layer = imported.layer(found) if found.result.diff_id is not None else None
        self._replay(found.result, layer=layer)
        kept = {**inputs.to_json(), "stage": self.label}
        records.put(key, found.parent, self._lineage(), found.result, kept)
        return True

    def _replay(self, result: StepResult, layer: Layer | None = None) -> bool:
        """Apply a cached step's result; False when its layer is no longer held (then it reruns)."""
        from builder.errors import ImageNotFoundError

        if result.diff_id is not None and layer is None:
            try:
                layer = self.env.layers.layer(result.diff_id)
            except ImageNotFoundError:
                return False
        self.config = result.config
        self.author = result.author
        self.history.append(result.history)
        if layer is not None:
            self.layers.append(layer)
        self.changed = True
        return True

    def _explain(self, handle: StepHandle, inputs: StepInputs, key: str) -> None:
        from cache.keys import explain

        records, imported = self.env.records, self.env.imported
        forced = self.env.no_cache.reason(self.label)
        earlier: tuple[str, Mapping[str, Any]] | None = None  # the build to compare with: key, inputs
        if records is not None and not forced:
            found = records.closest(self._lineage(), key, inputs.parent)
            earlier = (found.key, found.inputs) if found is not None else records.sibling(
                inputs.parent, self.label, key, inputs.display)
            if earlier is None and imported is not None:
                earlier = imported.sibling(inputs.parent, self.label, key, inputs.display)
        old_key, old = earlier if earlier is not None else ("", None)
        if old is None and not forced and inputs.parent in self.env.missed_keys:
            return  # never built on: its parent step (or stage) missed here, and said why
        gone, self._gone_from = self._gone_from, ""
        reason = forced or (f"its layer is missing from the cache {gone}" if gone else None) or (
            explain(old, inputs) if old is not None else "not built before")
        if old is not None and not forced and old.get("parent") == inputs.parent and \
                old.get("display") != inputs.display:  # an edit, or a step added or removed here
            if any(_summary(later) == old.get("display") for later in self._later):
                reason = f"new step before `{old.get('display')}`"
            elif self._built_on(old_key, inputs.display):
                reason = f"step `{old.get('display')}` removed"
        if reason == "an earlier step changed":
            return
        text = f"[{self.label} {self.step}/{self.total}] {_summary_inputs(inputs)}: cache miss: {reason}"
        self.env.explained.append(text)
        if handle.visible:
            self.env.progress.message(f"#{handle.number} cache miss: {reason}")
        elif not self._carried_miss:  # ENV, ARG, ... show no step: the next step says why
            self._carried_miss = reason

    def _built_on(self, parent: str, display: str) -> bool:
        """Whether this stage's step ``display`` was built on ``parent`` before (here or in an
        imported cache): then the step between was removed."""
        records, imported = self.env.records, self.env.imported
        return bool(parent) and (
            (records is not None and records.sibling(parent, self.label, "", display, same_display=True) is not None)
            or (imported is not None and imported.follows(parent, self.label, display)))

    def _inputs(self, ins: ins_.Instruction, written: ins_.Instruction) -> StepInputs:
        from builder.frontend.expand import FRONTEND_ARGS, PROXY_ARGS
        from cache.keys import instruction_text, visible_args

        # Build args count where they reach the result beyond the expanded text: a RUN's env
        # and history line, and COPY's heredoc bodies; elsewhere the expansion holds them.
        self._keyed_stats = []
        args: dict[str, str] = {}
        if isinstance(ins, ins_.Run) or (isinstance(ins, ins_.Copy | ins_.Add) and ins.contents):
            args = visible_args(self.scope.visible_args(), PROXY_ARGS | FRONTEND_ARGS)
        if isinstance(ins, ins_.Run):
            env, history = self.scope.run_env(proxies=False), self._history_args()
            args = {k: v for k, v in args.items() if env.get(k) == v or k in history}
        # An ARG step makes its history line from the declaration, never the value passed: the
        # value counts where it is used (above), so steps between do not rerun for it.
        text = f"ARG {self._arg_text}" if isinstance(ins, ins_.Arg) else instruction_text(ins)
        inputs = StepInputs(parent=self.key, instruction=text, display=_summary(written), args=args)
        if self.first_step_sources:
            inputs.sources.update(self.first_step_sources)
            inputs.stage_names.update(self.first_step_stage_names)
            self.first_step_sources, self.first_step_stage_names = {}, {}
        if self.env.source_date_epoch is not None:  # it sets layer mtimes and history times
            inputs.sources["SOURCE_DATE_EPOCH"] = str(self.env.source_date_epoch)
        if isinstance(ins, ins_.Copy | ins_.Add):
            self._copy_inputs(ins, inputs)
        elif isinstance(ins, ins_.Run):
            self._run_inputs(ins, inputs)
        return inputs

    def _add_source(self, inputs: StepInputs, source: str, name: str) -> None:
        """A stage's key or an image's digest, for ``--from`` or a mount's ``from=``."""
        found = self.stage_lookup(name, self._transfers())
        if isinstance(found, StageResult):
            inputs.sources[source] = f"stage {found.key}"
            inputs.stage_names[source] = name
        else:
            inputs.sources[source] = f"image {found.digest()}"

    def _copy_inputs(self, ins: ins_.Copy | ins_.Add, inputs: StepInputs) -> None:
        from builder.execute.copy import CopySpec

        from_ = getattr(ins, "from_", None)
        if from_:
            self._add_source(inputs, "from", from_)
            return
        spec = CopySpec.from_instruction(ins, workdir=self.config.working_dir or "/")
        inputs.files.extend(self._context_files(spec))
        for src in ins.sources:
            if isinstance(ins, ins_.Add) and is_git_source(src):
                inputs.sources[f"git {src}"] = self._git_commit(src, spec)
            elif src.startswith(("http://", "https://")) and not getattr(ins, "checksum", None):
                inputs.sources[f"url {src}"] = self.env.urls.validator(src)

    def _git_commit(self, url: str, spec: CopySpec) -> str:
        """What an ADD of a git source is keyed on: the commit its ref names now, as BuildKit (a
        branch that moved is fetched again); the URL alone when the server cannot say."""
        from builder.execute.add import parse_git_ref
        from builder.execute.gitsource import GitSources

        ref = parse_git_ref(url, spec)
        git = self.env.git if isinstance(self.env.git, GitSources) else GitSources()
        commit = git.commit(ref, spec)
        if commit is None:
            self.env.progress.warning(f"{self.env.dockerfile_name}: cannot list the refs of "
                                      f"{redact_credentials(ref.remote)}; its ADD is cached by URL alone")
            return "unresolved"
        return commit

    def _context_files(self, spec: CopySpec, prefix: str = "", items: list[SourceItem] | None = None,
                       ) -> list[list[str]]:
        from builder.execute.copy import SourceKind, select_sources
        from cache.keys import file_line
        from cache.statcache import xattrs_digest

        files: list[list[str]] = []
        if items is None:
            items = select_sources(spec, self.env.copy_context)
        for item in items:
            if item.kind in (SourceKind.URL, SourceKind.GIT):
                continue
            first_of: dict[tuple[int, int], str] = {}  # hardlinks within one source, as the layer keeps them
            for f in item.files:
                st = f.stat
                xattrs = ""
                if f.data is not None:
                    import xxhash

                    content = xxhash.xxh3_128_hexdigest(f.data)
                elif f.host is not None and stat_.S_ISREG(st.st_mode):
                    assert self.env.statcache is not None  # set with the records that need keys
                    try:
                        content, xattrs = self.env.statcache.file_digest(f.host, st)
                    except PermissionError:
                        # docker's client refuses it too ("no permission to read from '...'")
                        context = self.env.copy_context
                        shown = os.path.relpath(f.host, context.root) if context else f.host
                        raise spec.error(f"cannot read {shown} in the build context: "
                                         "permission denied") from None
                else:
                    content = "-"
                    if f.host is not None and not stat_.S_ISLNK(st.st_mode):
                        xattrs = xattrs_digest(f.host)
                path = f"{item.path}/{f.rel}".rstrip("/") if f.rel else item.path
                path = prefix + (path[2:] if path.startswith("./") else path)
                linked = ""
                if f.host is not None and stat_.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    linked = first_of.setdefault((st.st_dev, st.st_ino), path)
                    linked = "" if linked == path else linked
                if f.host is not None:
                    self._keyed_stats.append((f.host, _stat_signature(st)))
                # a bind mount shows the step the files' owners too; COPY makes them root's
                owner = f"{st.st_uid}:{st.st_gid}" if prefix else ""
                files.append([path, file_line(st.st_mode, st.st_size, f.link, content, owner, rdev=st.st_rdev,
                                              xattrs=xattrs, hardlink_to=linked)])
        return files

    def _keyed_files_changed(self) -> str:
        """A context file the step's key holds that changed since it was keyed (an editor's save
        during a long RUN over a bind mount, or between hashing and copying), else ""."""
        for host, signature in self._keyed_stats:
            try:
                now = _stat_signature(os.lstat(host))
            except OSError:
                now = ()
            if now != signature:
                root = self.env.context_root
                try:
                    return str(Path(host).relative_to(root)) if root is not None else str(host)
                except ValueError:
                    return str(host)
        return ""

    def _bind_files(self):
        """For context bind mounts: the files below a path that .dockerignore leaves (None when it
        hides nothing, so the mount can show the directory itself)."""
        context = self.env.copy_context
        if context is None or not getattr(context, "ignore", None) or not context.ignore.rules:
            return None

        def files(source: str) -> list[tuple[str, Path, os.stat_result, str]]:
            from builder.execute.copy import CopySpec, select_sources

            items = self._bind_items.get(source)  # selected once, for the key, when there is one
            if items is None:
                items = select_sources(CopySpec(sources=(source,), dest="/"), context)
            out = []
            for item in items:
                out += [(f.rel, Path(f.host), f.stat, f.link) for f in item.files if f.host is not None]
            return out

        return files

    def _run_inputs(self, ins: ins_.Run, inputs: StepInputs) -> None:
        from builder.execute.copy import CopySpec, select_sources

        self._bind_items = {}
        for mount in ins.mounts:
            if mount.type is ins_.MountType.BIND:
                if mount.from_:
                    self._add_source(inputs, f"mount {mount.target}", mount.from_)
                elif self.env.copy_context is not None:
                    source = mount.source or "."
                    spec = CopySpec(sources=(source,), dest="/", location=ins.location,
                                    label="RUN --mount=type=bind")
                    items = self._bind_items[source] = select_sources(spec, self.env.copy_context)
                    inputs.files.extend(self._context_files(spec, prefix=f"mount:{mount.target}:", items=items))
            elif mount.type is ins_.MountType.CACHE and mount.from_:
                self._add_source(inputs, f"cache {mount.target}", mount.from_)
        inputs.sources.update(self.env.container.key_sources())
        if self.env.hostname != "buildkitsandbox":  # part of BuildKit's exec op, as the network is
            inputs.sources["hostname"] = self.env.hostname
        if self.env.network == "none":
            inputs.sources["network"] = "none"

    def _dispatch(self, ins: ins_.Instruction, handle: StepHandle) -> None:
        method = getattr(self, f"_do_{ins.keyword}", None)
        if method is None:
            raise ins.error(f"{ins.name} is not a build instruction")
        try:
            method(ins, handle)
        except (ContainerError, ImageError, StoreError) as err:
            # The machine failing a RUN (a full disk under its snapshots, container or layer):
            # name the step, as for its own failures. COPY and ADD name theirs already.
            if not isinstance(ins, ins_.Run) or isinstance(err, (ImageNotFoundError, DockerfileError)):
                raise
            raise StepFailedError(f"{self.env.dockerfile_name}:{ins.start_line}: "
                                  f"{self._bracket()} RUN: {err}") from None

    # -- metadata instructions

    def _do_env(self, ins: ins_.Env, handle: StepHandle) -> None:
        self._sync_env()
        self._nop("ENV " + " ".join(f"{p.key}={p.value}" for p in ins.pairs))

    def _declared_arg_text(self, ins: ins_.Arg) -> str:
        """``A=default`` as declared (default expanded), never the --build-arg value: docker's history."""
        words = []
        for spec in ins.args:
            try:
                expand = self.scope.expander(ins).word
                key = expand(spec.key)
                words.append(key if spec.default is None else f"{key}={expand(spec.default)}")
            except Exception:  # the same expansion fails in Scope.apply, with the real error
                words.append(spec.key if spec.default is None else f"{spec.key}={spec.default}")
        return " ".join(words)

    def _do_arg(self, ins: ins_.Arg, handle: StepHandle) -> None:
        text = self._arg_text or " ".join(
            a.key if a.default is None else f"{a.key}={a.default}" for a in ins.args)
        self._nop(f"ARG {text}")

    def _do_label(self, ins: ins_.Label, handle: StepHandle) -> None:
        labels = dict(self.config.labels)
        for pair in ins.pairs:
            labels[pair.key] = pair.value
        self.config = replace(self.config, labels=labels)
        self._nop("LABEL " + " ".join(f"{p.key}={p.value}" for p in ins.pairs))

    def _do_maintainer(self, ins: ins_.Maintainer, handle: StepHandle) -> None:
        self.author = ins.maintainer
        self._nop(f"MAINTAINER {ins.maintainer}")

    def _do_expose(self, ins: ins_.Expose, handle: StepHandle) -> None:
        ports = list(self.config.exposed_ports)
        added = []
        try:
            specs = [s for port in ins.ports for s in _port_specs(port)]
        except ValueError as err:
            raise ins.error(str(err)) from None
        for spec in specs:
            added.append(spec)
            if spec not in ports:
                ports.append(spec)
        self.config = replace(self.config, exposed_ports=tuple(sorted(ports)))
        self._nop("EXPOSE " + " ".join(sorted(ins.ports)))  # docker: the ports as written

    def _do_volume(self, ins: ins_.Volume, handle: StepHandle) -> None:
        volumes = list(self.config.volumes)
        for v in ins.volumes:
            if not v.strip():
                raise ins.error("VOLUME specified can not be an empty string")
            if v not in volumes:
                volumes.append(v)
        self.config = replace(self.config, volumes=tuple(volumes))
        self._nop("VOLUME [" + " ".join(ins.volumes) + "]")

    def _do_user(self, ins: ins_.User, handle: StepHandle) -> None:
        self.config = replace(self.config, user=ins.user)
        self._nop(f"USER {ins.user}")

    def _do_stopsignal(self, ins: ins_.StopSignal, handle: StepHandle) -> None:
        if not _valid_signal(ins.signal):
            raise ins.error(f"Invalid signal: {ins.signal}")
        self.config = replace(self.config, stop_signal=ins.signal)
        self._nop(f"STOPSIGNAL {ins.signal}")

    def _do_shell(self, ins: ins_.Shell, handle: StepHandle) -> None:
        self.config = replace(self.config, shell=tuple(ins.shell))
        self._nop("SHELL [" + " ".join(ins.shell) + "]")

    def _do_onbuild(self, ins: ins_.Onbuild, handle: StepHandle) -> None:
        self.config = replace(self.config, on_build=(*self.config.on_build, ins.expression))
        self._nop(f"ONBUILD {ins.expression}")

    def _command(self, command: tuple[str, ...] | None, prepend_shell: bool) -> tuple[str, ...] | None:
        if command is None:
            return None
        if prepend_shell:
            return (*self._shell(), command[0]) if command else tuple(self._shell())
        return tuple(command)

    def _do_cmd(self, ins: ins_.Cmd, handle: StepHandle) -> None:
        cmd = self._command(ins.command, ins.prepend_shell)
        self.config = replace(self.config, cmd=cmd)
        self.cmd_set = True
        self._nop("CMD " + _go_list(cmd or ()))

    def _do_entrypoint(self, ins: ins_.Entrypoint, handle: StepHandle) -> None:
        entrypoint = self._command(ins.command, ins.prepend_shell)
        if self.cmd_set:
            self.config = replace(self.config, entrypoint=entrypoint)
        else:  # docker: an ENTRYPOINT resets a CMD inherited from the base
            self.config = replace(self.config, entrypoint=entrypoint, cmd=None)
        self._nop("ENTRYPOINT " + _go_list(entrypoint or ()))

    def _do_healthcheck(self, ins: ins_.Healthcheck, handle: StepHandle) -> None:
        h = ins.health
        if h.test and h.test[0] == "NONE":
            health = Healthcheck(test=("NONE",))
        else:
            health = Healthcheck(test=tuple(h.test), interval=h.interval, timeout=h.timeout,
                                 start_period=h.start_period, start_interval=h.start_interval,
                                 retries=h.retries)
        self.config = replace(self.config, healthcheck=health)
        # docker's classic builder prints three durations; --start-interval is BuildKit's only
        durations = [health.interval, health.timeout, health.start_period]
        if health.start_interval:
            durations.append(health.start_interval)
        self._nop(
            "HEALTHCHECK &{" + _go_list(health.test) + " " + " ".join(
                f'"{_go_duration(v)}"' for v in durations
            ) + " " + go_quote_rune(health.retries) + "}"
        )

    # -- instructions that make layers

    def _do_workdir(self, ins: ins_.Workdir, handle: StepHandle) -> None:
        path = ins.path
        if not path.startswith("/"):  # docker's normalizeWorkdir: relative joined and cleaned, absolute as written
            path = os.path.normpath(os.path.join(self.config.working_dir or "/", path))
            if path.startswith("//"):
                path = path[1:]
        self.config = replace(self.config, working_dir=path)
        created_by = f"{' '.join(self._shell())} #(nop) WORKDIR {path}"
        layer = self._mkdir_layer(ins, path)
        self._commit(created_by, layer)

    def _mkdir_layer(self, ins: ins_.Workdir, path: str) -> Layer | None:
        """docker creates a missing WORKDIR (0755, owned by root, setgid under a setgid directory
        as mkdir(2) makes it there); an existing one needs no layer.

        The path is cleaned (docker's SetupWorkingDirectory) and resolved through the image's
        symlinks (inside the image), as docker does: ``WORKDIR /lnk/sub`` with ``/lnk -> /real``
        makes ``/real/sub``. The layer also holds the existing directories above, as they are
        (docker's overlay copies them up): without them, the directories this layer implies
        would hide their modes and owners from later steps.
        """
        from builder.execute.rootfs import RootfsView, path_too_long, split_path
        from builder.layers.tarwriter import EntryType, TarEntry

        view = RootfsView(self.lowers())
        target = view.resolve(os.path.normpath(path)).path
        problem = path_too_long(split_path(target))
        if problem is not None:
            raise ins.error(f"WORKDIR {path}: {problem}")
        if view.is_dir(target):
            return None
        missing: list[str] = []
        current = target
        while current not in ("/", "") and not view.is_dir(current):
            if view.exists(current):
                raise ins.error(f"WORKDIR {path}: mkdir {current}: not a directory")
            missing.append(current.lstrip("/"))
            current = os.path.dirname(current)
        now = self.env.source_date_epoch if self.env.source_date_epoch is not None else int(time.time())
        entries: list[TarEntry] = []
        parts = split_path(current)
        for i in range(1, len(parts) + 1):
            found = view.entry(parts[:i])
            if found is not None:
                st = found.stat
                entries.append(TarEntry("/".join(parts[:i]), EntryType.DIR, stat_.S_IMODE(st.st_mode), st.st_uid,
                                        st.st_gid, 0, st.st_mtime_ns // 1_000_000_000))
        setgid = bool(entries) and bool(entries[-1].mode & stat_.S_ISGID)
        entries += [TarEntry(d, EntryType.DIR, 0o2755 if setgid else 0o755, 0, 0, 0, now) for d in sorted(missing)]
        return self._layer_from_entries(entries)

    def _layer_from_entries(self, entries: Sequence[TarEntry]) -> Layer:
        from builder.layers.tarwriter import TarStreamWriter

        tmp = self.env.store.temp_path(".layer.tar")
        try:
            with open(tmp, "wb") as out:
                writer = TarStreamWriter(out, source_date_epoch=self.env.source_date_epoch)
                for entry in entries:
                    writer.add(entry)
                stats = writer.close()
            return self.env.layers.add_tar(tmp, stats)
        finally:
            tmp.unlink(missing_ok=True)  # renamed into blobs/ on success; a failure leaves no temp

    def _do_run(self, ins: ins_.Run, handle: StepHandle) -> None:
        from builder.execute.run import (
            RunResources,
            clean_cwd,
            container_spec,
            failure_message,
            history_text,
            network_for,
            prepared_mounts,
            quote_argv,
            shell_command,
            solve_message,
        )
        from builder.layers.tarwriter import write_layer

        runtime = self.env.runtime
        privileged = ins.security is ins_.SecurityMode.INSECURE
        if privileged and "security.insecure" not in self.env.allow:
            raise ins.error("RUN --security=insecure runs the step with every privilege: "
                            "allow it with --allow security.insecure")
        devices = self._device_edits(ins)
        self._cache_mounts(ins)
        argv, pipes = shell_command(ins, self._shell())
        env = self.scope.run_env()
        for item in devices.env:
            key, _, value = item.partition("=")
            env[key] = value
        lowers = self.lowers()
        upper_root = self.env.store.temp_path(".run")
        upper_root.mkdir(mode=0o755)
        upper = upper_root / "upper"
        upper.mkdir(mode=0o755)
        res = RunResources(
            store_root=self.env.store.root, work_root=self.env.store.root / "run",
            context_root=self.env.context_root, secrets=self.env.secrets,
            lowers_of=self._lowers_of, ssh=self.env.ssh,
            cache_namespace=self.env.cache_namespace, context_files=self._bind_files(), cancel=self.cancel,
            workdir=clean_cwd(self.config.working_dir),
        )
        keep_upper = False
        try:
            with prepared_mounts(ins, res, env, pipes) as mounts:
                spec = container_spec(
                    lowers=lowers, upper=upper, argv=argv, env=env,
                    cwd=self.config.working_dir or "/", user=self.config.user,
                    mounts=[*mounts, *devices.bind_mounts()], network=network_for(ins, self.env.network),
                    hostname=self.env.hostname,
                    settings={**self.env.container.fields(), "privileged": privileged,
                              "devices": devices.nodes, "hooks": devices.hooks},
                )
                self._check_cancel()  # not a container started after Ctrl-C or a failed stage
                try:
                    code = runtime.run(spec, stdout=lambda data: self.env.progress.output(handle, data))
                except (ContainerStartError, UserNotFoundError) as err:  # the step's own: no exec, no user
                    raise StepFailedError(f"{self.env.dockerfile_name}:{ins.start_line}: "
                                          f"{self._bracket()} RUN: {err}") from None
            self.env.progress.end_output(handle)  # a last line with no newline is in the error too
            if code != 0:
                location = f"{self.env.dockerfile_name}:{ins.start_line}"
                memory = self.env.container.resources.memory
                raise StepFailedError(
                    failure_message(f"{self._bracket()} RUN", location,
                                    quote_argv(argv), code, list(handle.tail), memory=memory),
                    exit_code=code, step=handle.label, solve=solve_message(argv, code, memory),
                    location=SourceLocation(self.env.dockerfile_name, ins.start_line, ins.end_line),
                    logs=tuple(handle.stamped),
                )
            created_by = history_text(ins, self._shell(), self._history_args())
            tar = self.env.store.temp_path(".layer.tar")
            try:
                with open(tar, "wb") as f:
                    out = cast(BinaryIO, _UntilCancelled(f, self.cancel))  # a big layer stops at Ctrl-C
                    stats = write_layer(upper, out, source_date_epoch=self.env.source_date_epoch,
                                        overlay_upper=True)
                layer = self.env.layers.add_tar(tar, stats)
            finally:
                tar.unlink(missing_ok=True)  # renamed into blobs/ on success; a failure leaves no temp
            diff_ids = [*(x.diff_id() for x in self.layers), stats.diff_id]
            chains = chain_ids(diff_ids)
            parent = chains[-2] if len(chains) > 1 else None
            snapshot = self.env.layers.adopt_snapshot(chains[-1], stats.diff_id, parent, upper, stats.size)
            keep_upper = True
            self._commit(created_by, layer)
            self._lowers_cache = (len(self.layers), [*lowers, snapshot])
        finally:
            if not keep_upper:
                shutil.rmtree(upper, ignore_errors=True)
            shutil.rmtree(upper_root, ignore_errors=True)

    def _device_edits(self, ins: ins_.Run) -> Edits:
        """What ``RUN --device`` requests add to the container (CDI edits), checked as BuildKit does."""
        from builder.runtime.cdi import Edits

        edits = Edits()
        for request in ins.devices:
            registry = self.env.cdi()
            found = registry.resolve(request.name)
            if not found:
                if request.required:
                    unread = "".join(f"; {e}" for e in registry.errors)
                    raise ins.error(f"device {request.name} is requested but no CDI spec describes it "
                                    "(looked in " + ", ".join(str(d) for d in self.env.cdi_dirs()) + f"){unread}")
                self.env.progress.warning(f"{self.env.dockerfile_name}:{ins.start_line}: optional device "
                                          f"{request.name} is not on this machine; the step runs without it")
                continue
            for device in found:
                if not device.autoallow and "device" not in self.env.allow:
                    raise ins.error(f"device {device.name} is requested by the build but not allowed: "
                                    "allow it with --allow device, or annotate its CDI spec "
                                    "org.mobyproject.buildkit.device.autoallow: true")
                edits += device.edits
        return edits

    def _cache_mounts(self, ins: ins_.Run) -> None:
        """Note the RUN's cache mounts (for --cache-to); seed new ones from --cache-from."""
        for mount, cache_id in self._note_cache_mounts(ins, ran=True):
            if self.env.imported is not None:
                self.env.imported.seed_mount(cache_id, mode=mount.mode, uid=mount.uid, gid=mount.gid)

    def _note_cache_mounts(self, ins: ins_.Instruction, *, ran: bool) -> list[tuple[ins_.Mount, str]]:
        """Note a RUN's cache mounts for --cache-to, the step run or a hit: a cached rebuild
        exporting to a farm's ref keeps the mounts there (the ref's manifest is replaced)."""
        if not isinstance(ins, ins_.Run):
            return []
        found = []
        for mount in ins.mounts:
            if mount.type is not ins_.MountType.CACHE or mount.from_:
                continue
            # Imported only here: a cached rebuild without cache mounts loads little.
            from builder.execute.run import cache_mount_id

            cache_id = cache_mount_id(mount, mount.target or "", self.env.cache_namespace)
            (self.env.cache_mount_ids if ran else self.env.cached_mount_ids).add(cache_id)
            found.append((mount, cache_id))
        return found

    def _history_args(self) -> dict[str, str | None]:
        from builder.frontend.expand import FRONTEND_ARGS

        # Declared ARGs appear in history, proxy ones too once declared (BuildKit keeps them then);
        # not those an ENV of the same name hides (docker's BuildArgs.FilterAllowed).
        return {k: v for k, v in self.scope.visible_args().items()
                if k not in FRONTEND_ARGS and k not in self.scope.config_env}

    def _bracket(self) -> str:
        """``[build 2/5]``: the step being run, as BuildKit numbers it."""
        return step_bracket(self.shown_prefix, self.shown_step, self.shown_total)

    def _transfers(self) -> StepTransfers | None:
        """Where an image that ``--from`` pulls shows its blobs: the step that needs it."""
        return StepTransfers(self.env.progress, self._handle) if self._handle is not None else None

    def _lowers_of(self, name: str) -> Sequence[Path]:
        found = self.stage_lookup(name, self._transfers())
        if isinstance(found, StageResult):
            return found.lowers()
        return self.env.store.snapshot(found, self._check_cancel)

    def _check_cancel(self) -> None:
        """Raise Cancelled once the build is cancelled: long work in a stage thread (extracting
        a big layer, starting a container) stops there, as no signal reaches this thread."""
        if self.cancel.is_set():
            raise Cancelled("build cancelled")

    def _do_copy(self, ins: ins_.Copy, handle: StepHandle) -> None:
        self._copy(ins, handle, is_add=False)

    def _do_add(self, ins: ins_.Add, handle: StepHandle) -> None:
        self._copy(ins, handle, is_add=True)

    def _copy(self, ins: ins_.Copy | ins_.Add, handle: StepHandle, *, is_add: bool) -> None:
        from builder.execute.copy import CopySpec, copy_layer
        from builder.execute.rootfs import RootfsView

        # Heredoc bodies were expanded with the instruction (Scope.apply): no expand here.
        spec = CopySpec.from_instruction(ins, workdir=self.config.working_dir or "/")
        source: BuildContext | RootfsView | None = self.env.copy_context
        from_ = getattr(ins, "from_", None)
        if from_:
            source = RootfsView(list(self._lowers_of(from_)))
        layer_tar = self.env.store.temp_path(".layer.tar")
        try:
            with open(layer_tar, "wb") as f:
                out = cast(BinaryIO, _UntilCancelled(f, self.cancel))
                stats = copy_layer(spec, source=source, dest_view=RootfsView(self.lowers()), out=out,
                                   source_date_epoch=self.env.source_date_epoch,
                                   workdir=self.env.store.tmp_dir, git=self.env.git,
                                   fetches=self.env.urls, check=self._check_cancel)
            layer = self.env.layers.add_tar(layer_tar, stats)
        finally:
            layer_tar.unlink(missing_ok=True)
        kind = _history_kind(spec, ins, source)
        chown = f"--chown={ins.chown}" if ins.chown else ""  # docker writes it with no space after
        what = f"{kind}:{stats.diff_id.hex}" if kind else stats.diff_id.hex  # a URL: the hash alone
        self._commit(f"{' '.join(self._shell())} #(nop) {ins.name} {chown}{what} in {ins.dest} ", layer)


class _UntilCancelled:
    """A layer file (COPY/ADD, a RUN's changes) that refuses writes once the build is cancelled:
    Ctrl-C (or a failed sibling stage) stops writing a big layer at once, not at its end."""

    def __init__(self, out: BinaryIO, cancel: threading.Event) -> None:
        self.out = out
        self.cancel = cancel
        self.name = out.name

    def write(self, data: bytes | memoryview) -> int:
        if self.cancel.is_set():
            raise Cancelled("build cancelled")
        return self.out.write(data)


def _history_kind(spec: CopySpec, ins: ins_.Copy | ins_.Add,
                  source: BuildContext | RootfsView | None) -> str:
    """docker's ``file``/``dir``/``multi`` for a COPY's history: one file, one directory, or more
    (nothing for a URL)."""
    from builder.execute.copy import SourceKind, select_sources
    from builder.execute.rootfs import RootfsView

    several = len(ins.sources) + len(ins.contents) != 1
    if ins.contents or any(s.startswith(("http://", "https://")) for s in ins.sources):
        return "multi" if several else "file" if ins.contents else ""
    # With a wildcard, what matched decides (a top-level glob): docker counts the sources
    # found, so "nomatch* a.txt" is one file.
    if any(c in src for src in ins.sources for c in "*?["):
        try:
            items = select_sources(spec, source)
        except Exception:  # the copy itself succeeded; the history word is not worth failing for
            return "multi"
        if len(items) != 1:
            return "multi"
        return "dir" if items[0].kind is SourceKind.DIR else "file"
    if several:
        return "multi"
    src = ins.sources[0]
    view = source if isinstance(source, RootfsView) else getattr(source, "view", None)
    if isinstance(view, RootfsView) and "://" not in src and view.is_dir(src):
        return "dir"
    return "file"


def _stat_signature(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written, replaced, chmodded or chowned (not ctime: where overlay
    is refused, a filtered bind mount's view hardlinks the files it shows, which changes theirs)."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)


def _summary_inputs(inputs: StepInputs) -> str:
    return inputs.display


def _port_specs(port: str) -> list[str]:
    """``8000-8002/udp`` -> one spec per port, as docker's nat.ParsePortSpecs expands a range
    (``[ip:]hostport:port`` exposes the container port); ValueError with docker's words."""
    number, *protos = port.lower().split("/")  # nat.SplitProtoPort: the second part, if any
    number = number.rsplit(":", 1)[-1]
    proto = protos[0] if protos and protos[0] else "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"Invalid proto: {proto}")
    start, sep, end = number.partition("-")
    if not _valid_port(start) or (sep and not _valid_port(end)):
        raise ValueError(f"Invalid containerPort: {number}")
    if sep:
        if int(end) < int(start):
            raise ValueError(f"Invalid range specified for containerPort: {number}")
        return [f"{n}/{proto}" for n in range(int(start), int(end) + 1)]
    return [f"{int(start)}/{proto}"]


def _valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= 65535


def _valid_signal(text: str) -> bool:
    """docker's (and BuildKit's) signal.ParseSignal: any number but 0 (strconv.Atoi: a sign and
    ASCII digits, in int64), or a name, with or without SIG."""
    import signal

    digits = text[1:] if text[:1] in ("+", "-") else text
    if digits.isascii() and digits.isdigit():
        return int(text) != 0 and -(1 << 63) <= int(text) < 1 << 63
    name = text.upper().removeprefix("SIG")
    if name in signal.Signals.__members__ or f"SIG{name}" in signal.Signals.__members__:
        return True
    for base, sign in (("RTMIN", "+"), ("RTMAX", "-")):
        offset = name.removeprefix(base).removeprefix(sign)
        if name.startswith(base) and (offset == "" or (offset.isdigit() and int(offset) <= 15)):
            return True
    return False


def is_shown_step(ins: ins_.Instruction) -> bool:
    """A step BuildKit shows (a vertex of the build graph): RUN, COPY, ADD, WORKDIR; the others
    only change the image config."""
    return isinstance(ins, ins_.Run | ins_.Copy | ins_.Add | ins_.Workdir)


def step_bracket(prefix: str, step: int, total: int) -> str:
    """BuildKit's ``[build 2/5]``, the number padded to the total's width (``[ 2/12]``)."""
    width = len(str(total)) if total > 0 else 1
    return f"[{prefix}{step:>{width}}/{total}]"


def _summary(ins: ins_.Instruction) -> str:
    text = " ".join(ins.original.split()) if ins.original else ins.name
    return text if len(text) <= 100 else text[:97] + "..."


def _go_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a string slice, as docker prints CMD/ENTRYPOINT in history."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


def _go_duration(ns: int) -> str:
    """Go's time.Duration.String(): ``1m30.5s``, ``100ms``, ``1.5µs``, ``1h0m0s``."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)

    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{frac(ns, 1_000)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{frac(ns, 1_000_000)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{sign}{text}{frac(rest, 1_000_000_000)}s"
