"""The build: Dockerfile + context in, an image in the store (and the requested outputs) out.

parse -> typed instructions -> stage plan -> stages run as a DAG (independent
stages at once) -> the target's image written to the store, tagged, exported.
Everything a build creates on the machine (mounts, containers, temp dirs) is
removed on every exit path; what a SIGKILLed build left is removed by the
next build's :func:`builder.runtime.recover`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.errors import (
    BuildContextError,
    BuildError,
    DockerfileError,
    ImageNotFoundError,
    InstructionError,
    InvalidReferenceError,
    PybuildError,
    RegistryError,
    StepFailedError,
    UsageError,
)
from builder.execute.base import BaseResolver
from builder.execute.fetch import UrlFetches
from builder.execute.stage import (
    BuildEnv,
    NoCache,
    StageResult,
    StageRunner,
    is_shown_step,
    step_bracket,
)
from builder.fileio import read_limited
from builder.frontend import instructions as ins_
from builder.frontend.checks import BaseImage
from builder.image.digest import Digest
from builder.image.image import Image
from builder.image.mutate import DerivedImage
from builder.image.platform import Platform
from builder.image.reference import Reference
from builder.progress import Progress, ProgressMode, StepTransfers, step_log_limit
from builder.runtime.spec import ContainerSettings
from builder.scheduler import run_dag
from cache.keys import base_key
from cache.records import CacheRecords
from cache.statcache import StatCache
from cache.store import BuildLayers, Store

MAX_DOCKERFILE = 32 << 20  # a Dockerfile is read whole: one larger is an attack, or the wrong file

if TYPE_CHECKING:
    from builder.execute.context import BuildContext
    from builder.execute.gitsource import GitSources
    from builder.execute.named import NamedContext
    from builder.execute.run import Secret
    from builder.execute.ssh import SshAgents
    from builder.export.attestation import AttestationRequest, Attestor
    from builder.export.outputs import Exported
    from builder.runtime import Runtime
    from cache.remote import ImportedCache


@dataclass
class BuildOptions:
    """What a build is asked to do: the flags of ``pybuild build``."""

    context: str
    dockerfile: str | None = None
    tags: Sequence[str] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    no_cache_filter: Sequence[str] = ()
    pull: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    platform: str | None = None
    network: str = "default"
    secrets: Sequence[str] = ()
    ssh: Sequence[str] = ()  # --ssh default|ID[=SOCKET|KEY[,KEY...]]
    build_contexts: Sequence[str] = ()  # --build-context NAME=VALUE
    allow: Sequence[str] = ()  # --allow security.insecure|network.host|device
    annotations: Sequence[str] = ()  # --annotation [TYPE:]KEY=VALUE
    cdi_spec_dirs: Sequence[str] = ()  # --cdi-spec-dir
    container: ContainerSettings = field(default_factory=ContainerSettings)  # --add-host, --shm-size, --ulimit
    outputs: Sequence[str] = ()
    push: bool = False
    quiet: bool = False
    iidfile: str | None = None
    metadata_file: str | None = None
    progress: str = "auto"
    jobs: int | None = None
    isolation: str = "auto"
    insecure_registries: Sequence[str] = ()
    explain: bool = False  # print why steps miss the cache; build nothing
    cache_from: Sequence[str] = ()
    cache_to: Sequence[str] = ()
    stdin: BinaryIO | None = None  # a binary stream for `-` context or `-f -`
    attest: AttestationRequest | None = None  # --provenance / --attest: what the outputs carry


@dataclass(frozen=True)
class BuildResult:
    """What a build made: the image, its IDs and names, and what it pushed."""

    image_id: Digest  # the config digest, as docker shows it
    manifest_digest: Digest
    tags: tuple[str, ...]
    image: Image
    seconds: float
    pushed: tuple = ()  # builder.registry.PushResult of each push
    manifests: tuple = ()  # the manifest Descriptor each image output holds, pushes first


def parse_build_args(items: Sequence[str]) -> dict[str, str]:
    """``--build-arg K=V``; a bare ``K`` takes the value from the environment (skipped if unset)."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise UsageError(f'invalid argument "{item}" for "--build-arg" flag: invalid environment '
                             f"variable: {item} (expected KEY=VALUE)")
        if sep:
            result[key] = value
        elif key in os.environ:
            result[key] = os.environ[key]
    return result


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f'invalid argument "{item}" for "--label" flag: invalid label '
                             f"'{item}': empty name (expected KEY=VALUE)")
        result[key] = value
    return result


def _source_date_epoch(build_args: Mapping[str, str]) -> int | None:
    """BuildKit's SOURCE_DATE_EPOCH build arg, else the environment's (buildx passes it on as one)."""
    text = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH must be a number of seconds, got {text!r}") from None


class Build:
    """One build; create, call :meth:`run`, read the result."""

    def __init__(self, options: BuildOptions, store: Store | None = None) -> None:
        self.options = options
        self.store = store or Store()
        quiet = options.quiet or options.explain or options.progress == "none"
        self.progress = Progress(ProgressMode.QUIET if quiet else ProgressMode(options.progress),
                                 log_limit=step_log_limit(os.environ.get("BUILDKIT_STEP_LOG_MAX_SIZE")))
        self.started = time.monotonic()
        import datetime

        self.started_on = datetime.datetime.now(datetime.UTC)  # provenance's buildStartedOn
        from builder.export.destination import check_output_file
        from builder.export.outputs import Annotations, check_outputs
        from cache.store import new_tag_name

        self.annotations = Annotations.parse(options.annotations, str(Platform.host()))
        self._git: GitSources | None = None
        self._urls: UrlFetches | None = None
        # What the build would only find wrong at its end fails now: outputs, tags, ID files.
        outputs = check_outputs(options.outputs, stdout=sys.stdout, tags=options.tags, push=options.push,
                                id_files={"--iidfile": options.iidfile, "--metadata-file": options.metadata_file})
        self._output_names = tuple(name for out in outputs if out.type == "image" for name in out.names)
        # an archive on stdout is the whole of stdout: the image ID goes to stderr then
        self._id_stream = sys.stderr if any(out.to_stdout for out in outputs) else sys.stdout
        # an archive's names are tags too: docker load refuses a RepoTags entry with a digest
        archive_names = [name for out in outputs if out.type in ("oci", "docker") for name in out.names]
        for tag in options.tags:
            try:
                new_tag_name(tag)
            except InvalidReferenceError as err:  # docker's words for a flag's bad value
                raise InvalidReferenceError(f'invalid argument "{tag}" for "-t, --tag" flag: {err}') from None
        for tag in (*self._output_names, *archive_names):
            new_tag_name(tag)
        for path in (options.iidfile, options.metadata_file):
            if path:
                check_output_file(path, devices=True)

    def run(self) -> BuildResult | None:
        from builder.export.destination import remove_stale_output
        from builder.interrupts import signals_as_interrupt
        from builder.runtime import recover

        recover(self.store.root / "run")
        for path in (self.options.iidfile, self.options.metadata_file):
            if path:
                remove_stale_output(path)
        with contextlib.ExitStack() as stack:
            stack.enter_context(signals_as_interrupt())
            stack.callback(self.progress.close)
            stack.enter_context(self.store.gc_lock.shared(notice=self.progress.message))
            context, dockerfile_text, dockerfile_name = self._load_context(stack)
            return self._build(context, dockerfile_text, dockerfile_name)

    # -- inputs

    def _load_context(self, stack: contextlib.ExitStack) -> tuple[BuildContext, bytes, str]:
        """The context and the Dockerfile; what cannot be read is docker's "unable to prepare
        context" error, exit status 1 (not 125: the flags were well formed)."""
        from builder.execute.context import BuildContext
        from builder.execute.named import is_remote_context

        opts = self.options
        stdin = opts.stdin if opts.stdin is not None else sys.stdin.buffer
        dockerfile_bytes: bytes | None = None
        if opts.dockerfile == "-":
            if opts.context == "-":
                raise BuildContextError("invalid argument: can't use stdin for both build context and dockerfile")
            dockerfile_bytes = stdin.read()
        if opts.context == "-":
            context, stdin_dockerfile = self._stdin_context(stdin, stack)
            if stdin_dockerfile is not None:
                dockerfile_bytes = stdin_dockerfile
        elif is_remote_context(opts.context):
            context, remote_dockerfile = self._remote_context(stack)
            if remote_dockerfile is not None and dockerfile_bytes is None:
                dockerfile_bytes = remote_dockerfile
        else:
            root = Path(opts.context)
            if root.exists() and not root.is_dir():
                raise BuildContextError(f"unable to prepare context: context must be a directory: {opts.context}")
            if not opts.context or not root.is_dir():  # "" is no path (Path("") would be ".")
                raise BuildContextError(f'unable to prepare context: path "{opts.context}" not found')
            dockerfile_path = None
            if opts.dockerfile and opts.dockerfile != "-":
                dockerfile_path = Path(opts.dockerfile)
                if not dockerfile_path.is_absolute() and not dockerfile_path.exists():
                    dockerfile_path = root / opts.dockerfile
            context = BuildContext.from_dir(root, dockerfile_path)
        stack.callback(context.close)
        if dockerfile_bytes is None:
            # A tar context found its Dockerfile inside itself (symlinks resolved in the context);
            # never look it up on the host through the extracted tree.
            if opts.context == "-" and context.dockerfile is None:
                raise BuildContextError(f"the Dockerfile '{opts.dockerfile or 'Dockerfile'}' is not in the "
                                 "build context tar")
            path = context.dockerfile or (context.root / (opts.dockerfile or "Dockerfile"))
            try:
                dockerfile_bytes = read_limited(path, MAX_DOCKERFILE)
            except ValueError as err:
                raise BuildContextError(f"failed to read dockerfile {path}: {err}") from None
            except FileNotFoundError:
                raise BuildContextError(
                    f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                    f"lstat {path}: no such file or directory"
                ) from None
            except IsADirectoryError:
                raise BuildContextError(f"failed to read dockerfile: {path} is a directory") from None
            except OSError as err:
                raise BuildContextError(f"failed to read dockerfile {path}: {err.strerror}") from None
            name = path.name
        else:
            name = "Dockerfile"
        return context, dockerfile_bytes, name

    def _remote_context(self, stack: contextlib.ExitStack) -> tuple[BuildContext, bytes | None]:
        """``pybuild build URL``, as docker: a git repository (``#ref:subdir``) or an archive over
        http(s) is the context; a plain file there is the Dockerfile, with an empty context."""
        from builder.execute.context import BuildContext
        from builder.execute.named import fetch_url
        from builder.execute.urls import redact_credentials
        from builder.runtime.cleanup import temp_dir

        scratch = temp_dir(self.store.root / "run", "context")
        stack.callback(shutil.rmtree, scratch, True)
        keep = self.options.build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR", "").lower() in ("1", "true")

        root, single = fetch_url(self.options.context, scratch, f"build context {self.options.context}",
                                 self.git_sources(), keep_git_dir=keep, fetches=self.user_urls())
        if single is not None:
            try:
                data = read_limited(single, MAX_DOCKERFILE)
            except ValueError as err:  # a server's 10 GB "Dockerfile" is not read into memory
                raise BuildContextError(f"failed to read dockerfile {redact_credentials(self.options.context)}: "
                                        f"{err}") from None
            single.unlink()
            return BuildContext.from_dir(root, None), data
        name = self.options.dockerfile if self.options.dockerfile not in (None, "-") else None
        return BuildContext.from_tree(root, name, f"build context {redact_credentials(self.options.context)}"), None

    def _stdin_context(self, stdin: BinaryIO, stack: contextlib.ExitStack) -> tuple[BuildContext, bytes | None]:
        """``pybuild build -``: a tar (plain, gzip, zstd) is the context; anything else is the
        Dockerfile itself with an empty context, as docker does."""
        from builder.execute.context import BuildContext
        from builder.layers.compression import ARCHIVE_MAGICS
        from builder.runtime.cleanup import temp_dir

        # Named by the pid: what a killed build spooled (a context can be gigabytes) goes
        # with the next build's recover().
        spool = temp_dir(self.store.root / "run", "stdin")
        stack.callback(shutil.rmtree, spool, True)
        data_path = spool / "stdin"
        with open(data_path, "wb") as out:
            shutil.copyfileobj(stdin, out, 1 << 20)
        with open(data_path, "rb") as f:
            head = f.read(6)
        if head.startswith(ARCHIVE_MAGICS) or _is_tar(data_path):
            with open(data_path, "rb") as f:
                return BuildContext.from_tar(f, spool, dockerfile_name=self.options.dockerfile), None
        empty = spool / "context"
        empty.mkdir()
        try:
            return BuildContext.from_dir(empty, None), read_limited(data_path, MAX_DOCKERFILE)
        except ValueError as err:
            raise BuildContextError(f"failed to read the dockerfile from stdin: {err}") from None

    # -- the build

    def _build(self, context: BuildContext, dockerfile_bytes: bytes, dockerfile_name: str) -> BuildResult | None:
        from builder.execute.gitsource import GitCredentials, GitSources
        from builder.frontend.checks import run_checks, warnings_before_error
        from builder.frontend.expand import GlobalScope, PlatformArgs, unused_build_args
        from builder.frontend.instructions import parse_dockerfile
        from builder.frontend.parsecache import parse_cached
        from builder.plan.stages import plan_stages

        opts = self.options
        host = Platform.host()
        if opts.platform:
            wanted = Platform.parse(opts.platform)
            if not host.matches(wanted):
                raise UsageError(
                    f"pybuild builds for the host platform {host} only; --platform {opts.platform} "
                    "would need emulation, which pybuild does not do"
                )
        parsed = parse_cached(dockerfile_bytes, file=dockerfile_name)
        build_args = dict(opts.build_args)
        try:
            dockerfile = parse_dockerfile(parsed)
        except DockerfileError as err:  # as BuildKit: the warnings above the failing line first
            for warning in warnings_before_error(parsed, err, config=build_args.get("BUILDKIT_DOCKERFILE_CHECK")):
                self.progress.warning(str(warning))
            raise
        global_scope = GlobalScope(dockerfile.meta_args, build_args,
                                   platforms=PlatformArgs.host(), escape=parsed.escape)
        named = self._named_contexts()
        resolver = BaseResolver(self.store, host, pull=opts.pull,
                                insecure_registries=tuple(opts.insecure_registries), named=named,
                                source_date_epoch=_source_date_epoch(build_args), git=self.git_sources(),
                                urls=self.user_urls())
        # The look-aheads below (ONBUILD triggers, the checks' base env, the cache probe) read a
        # base not in the store once, through this one probe, which keeps what it read.
        probe = replace(resolver, metadata_only=True)
        # A base image's ONBUILD triggers may copy from stages of this Dockerfile: with more than
        # one stage, the plan looks at them (metadata only) to order those stages first.
        triggers = (partial(_image_triggers, probe, dockerfile_name)
                    if len(dockerfile.stages) > 1 else None)
        plan = plan_stages(dockerfile, global_scope, target=opts.target, build_args=build_args,
                           is_named_context=_named_predicate(named), image_triggers=triggers)
        # As lint: BUILDKIT_DOCKERFILE_CHECK overrides # check=, and .dockerignore feeds CopyIgnoredFile.
        # Base images are read (config only) before the checks, as BuildKit resolves them first:
        # the first build of a Dockerfile reports UndefinedVar as the next ones do.
        checks = run_checks(dockerfile, build_args=build_args,
                            base_env=partial(_base_env, probe),
                            stages=[p.index for p in plan.stages],
                            config=build_args.get("BUILDKIT_DOCKERFILE_CHECK"),
                            ignore=context.ignore)
        for warning in checks.warnings:
            self.progress.warning(str(warning))
        if (note := _foreign_syntax(parsed)) is not None:
            self.progress.warning(note)
        if (failure := checks.error()) is not None:
            raise failure
        imported = self._import_cache()
        secrets = self._secrets()
        statcache, records = StatCache(self.store.db), CacheRecords(self.store.db)
        urls = UrlFetches(lambda: self.store.temp_path("-urls"))
        env = BuildEnv(
            store=self.store, layers=BuildLayers(self.store), progress=self.progress,
            runtime_factory=self._runtime, context_root=context.root, secrets=secrets,
            network=opts.network, source_date_epoch=resolver.source_date_epoch,
            hostname=build_args.get("BUILDKIT_SANDBOX_HOSTNAME") or "buildkitsandbox",
            cache_namespace=build_args.get("BUILDKIT_CACHE_MOUNT_NS", ""),
            copy_context=context, dockerfile_name=dockerfile_name, container=opts.container,
            allow=frozenset(opts.allow),
            cdi_spec_dirs=tuple(Path(d) for d in opts.cdi_spec_dirs) or None,
            records=records, statcache=statcache,
            no_cache=NoCache(opts.no_cache, frozenset(n.lower() for n in opts.no_cache_filter)),
            explain_misses=opts.explain or self.progress.mode is ProgressMode.PLAIN,
            dry_run=opts.explain,
            lineage_prefix=f"{context.root}\0{dockerfile_name}",
            imported=imported, urls=urls,
        )
        stages = {s.index: s for s in dockerfile.stages}
        needed = {p.index: p for p in plan.stages}
        bases: dict[int, tuple[str, Image]] = {}  # the images FROM read, by stage (provenance)

        def shown_steps(indexes: Iterable[int]) -> int:
            """The steps the progress shows, as BuildKit counts its vertexes."""
            return sum(_from_shown(needed[i].base_stage, global_scope.expand_from(stages[i].from_).base_name)
                       + sum(map(is_shown_step, stages[i].commands)) for i in indexes)

        self.progress.set_total(shown_steps(needed))
        declared: set[str] = set(global_scope.declared)

        def work_for(env_: BuildEnv, probed: Mapping[int, StageResult],
                     resolver: BaseResolver = resolver):
            """The stage work of one pass; ``probed``: a probe's results, for stages this pass skips."""

            def stage_lookup_for(current: int, results: Mapping[int, StageResult]):
                def lookup(name: str, transfers: StepTransfers | None = None) -> StageResult | Image:
                    index = None if resolver.named_context(name) else _stage_index(dockerfile.stages, name, current)
                    if index is not None:
                        found = results.get(index) or probed.get(index)
                        if found is None:
                            raise BuildError(f"stage {name} is not built yet (internal planning error)")
                        return found
                    try:
                        return resolver.resolve(name, transfers)
                    except (RegistryError, ImageNotFoundError, InvalidReferenceError) as err:
                        raise ImageNotFoundError(f"{name} is not a stage of this Dockerfile nor an image in "
                                                 f"the local store, and pulling it failed: {err}") from None
                return lookup

            def work(index: int, results: Mapping[int, StageResult], cancel: threading.Event) -> StageResult:
                stage = stages[index]
                planned = needed[index]
                from_ = global_scope.expand_from(stage.from_)
                if from_.platform:
                    try:
                        wanted = Platform.parse(from_.platform)
                    except UsageError as err:
                        raise from_.error(f"FROM --platform: {err}", InstructionError) from None
                    if not host.matches(wanted):
                        raise from_.error(
                            f"FROM --platform={from_.platform}: pybuild builds for the host platform "
                            f"{host} only", InstructionError)
                label = planned.display_name()
                prefix = "" if len(dockerfile.stages) == 1 else f"{label} "  # BuildKit's names
                from_shown = _from_shown(planned.base_stage, from_.base_name)
                shown_total = from_shown + sum(map(is_shown_step, stage.commands))
                shown_base = from_.base_name
                if resolver.named_context(shown_base) is None and (ref := Reference.try_parse(shown_base)):
                    shown_base = str(ref)  # BuildKit's full name: docker.io/library/busybox:latest
                handle = env_.progress.start(f"{step_bracket(prefix, 1, shown_total)} FROM {shown_base}",
                                             visible=from_shown)
                if planned.base_stage is not None:
                    parent = results.get(planned.base_stage) or probed[planned.base_stage]
                    base_image, scope = parent.image, parent.scope.child()
                    key, base_text = parent.key, f"stage {parent.key}"
                else:
                    base_image = self._resolve_base(resolver, from_, StepTransfers(env_.progress, handle), cancel)
                    bases[index] = (from_.base_name, base_image)
                    scope = global_scope.stage_scope(base_image.config_file().config.env)
                    digest = "" if from_.base_name == "scratch" else str(base_image.digest())
                    key = base_key(from_.base_name, digest)
                    base_text = f"{from_.base_name}@{digest}" if digest else "scratch"
                env_.progress.done(handle)
                triggers = _triggers(base_image, dockerfile_name, from_)
                runner = StageRunner(env_, label=label, base=base_image, scope=scope,
                                     stage_lookup=stage_lookup_for(index, results), cancel=cancel,
                                     total=len(stage.commands) + len(triggers) + 1, key=key,
                                     stage_index=index, shown_prefix=prefix, shown_step=int(from_shown),
                                     shown_total=shown_total + sum(map(is_shown_step, triggers)))
                runner.first_step_sources = {"base": base_text}
                if planned.base_stage is not None:
                    runner.first_step_stage_names = {"base": from_.base_name}
                runner.step = 1
                runner.run(stage.commands, triggers=triggers)
                declared.update(scope.visible_args())
                return StageResult(image=runner.image(), scope=runner.scope, lowers=runner.lowers,
                                   key=runner.key, complete=runner.would_run == 0)
            return work

        deps = {p.index: tuple(d for d in p.deps if d in needed) for p in plan.stages}
        jobs = opts.jobs or os.cpu_count() or 1
        env.ssh = self._ssh_agents()
        # The Dockerfile's ADD <git> signs in only with what this build passes (as BuildKit),
        # never with the user's git credentials that a git context (typed by the user) uses.
        env.git = GitSources(self.store.root, GitCredentials(
            secrets=secrets, ssh_agent=env.ssh.socket() if env.ssh is not None else None))
        try:
            probed: dict[int, StageResult] = {}
            if imported is not None and len(needed) > 1 and not opts.explain:
                # A shared cache may hold only the final image's steps (mode=min, inline): find,
                # with a dry run, the stages that a fully cached stage makes unnecessary, and skip
                # them, as BuildKit does.
                probe_env = replace(env, dry_run=True, explain_misses=False, used_keys=[], explained=[],
                                    missed_keys=set(), progress=Progress(ProgressMode.QUIET))
                probed = run_dag(deps, work_for(probe_env, {}, probe), jobs=jobs)
                env.used_keys.extend(probe_env.used_keys)  # skipped stages' hits still go to mode=max
                forced = [p.index for p in plan.stages if env.no_cache(p.display_name())]  # --no-cache-filter
                deps = _required_stages(deps, probed, {p.index: p.base_stage for p in plan.stages},
                                        [plan.target, *forced])
                self.progress.set_total(shown_steps(deps))
            results = run_dag(deps, work_for(env, probed), jobs=jobs,
                              on_cancel=lambda: _stop_containers(self.store.root / "run"))
            # the URLs' digests, for the provenance, before their downloads are removed
            url_pins = {}
            if opts.attest is not None and opts.attest.wanted and not opts.explain:
                url_pins = {**self.user_urls().pins(), **urls.pins()}
        except StepFailedError as err:  # the error shows the Dockerfile around the step
            err.source = dockerfile_bytes.decode("utf-8", errors="replace")
            raise
        finally:
            urls.close()
            statcache.flush()
            records.flush()
            if env.ssh is not None:
                env.ssh.close()
        if opts.explain:
            for line in env.explained or ["every step is cached"]:
                print(line)
            return None
        final = results[plan.target].image
        if opts.labels:
            config = final.config_file()
            labels = {**config.config.labels, **opts.labels}
            final = DerivedImage(list(final.layers()), replace(config, config=replace(config.config, labels=labels)))
        for name in unused_build_args(build_args, declared):
            self.progress.warning(f"build-arg {name} was not consumed")
        final = self._inline_cache(final, env, results[plan.target].key, imported, build_args)
        if self.annotations.manifest:
            final = DerivedImage(list(final.layers()), final.config_file(),
                                 annotations={**(final.manifest().annotations or {}), **self.annotations.manifest})
        tags = tuple(opts.tags)
        if imported is not None:
            imported.prefetch(final.layers())  # the final image's cached layers, concurrently
        manifest_digest, stored = self._write_image(final, tags)
        # The image's outputs first, then the cache, as BuildKit: a cache that cannot be written
        # fails the build but costs no image (a push done, an archive written).
        attestor = None
        if opts.attest is not None and opts.attest.wanted:
            order = [p.index for p in plan.stages if p.index in results]
            git_pins = {**(self._git.pins() if self._git is not None else {}),
                        **(env.git.pins() if isinstance(env.git, GitSources) else {})}
            attestor = self._attestor(dockerfile_bytes, dockerfile_name, build_args, order, needed, stages,
                                      {i: bases[i] for i in order if i in bases}, resolver,
                                      results[plan.target].lowers, git_pins, url_pins)
        exported = self._outputs(stored, tags, _source_date_epoch(build_args), attestor)
        self._export_cache(env, results[plan.target].key, imported)
        result = BuildResult(
            image_id=stored.config_digest(), manifest_digest=manifest_digest, tags=tags,
            image=stored, seconds=time.monotonic() - self.started, pushed=exported.pushed,
            manifests=exported.manifests,
        )
        self._report(result)
        return result

    def _write_image(self, final: Image, tags: tuple[str, ...]) -> tuple[Digest, Image]:
        """The image into the store, as BuildKit's ``exporting to image`` step: its lines say
        the image ID and each name, fully qualified (``naming to docker.io/library/app:1``)."""
        from builder.export.outputs import stores_names

        named = stores_names(self.options.outputs)  # -o type=image,store=false: pushed, not named here
        exporting = self.progress.start("exporting to image", counted=False)
        try:
            # held untagged with store=false, as the cache holds it
            manifest_digest = self.store.write_image(final, tags if named else ())
            stored = self.store.image(str(manifest_digest))
        except BaseException as err:
            self.progress.failed(exporting, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        self.progress.status(exporting, f"writing image {stored.config_digest()} done")
        for tag in tags if named else ():
            ref = Reference.try_parse(tag)
            self.progress.status(exporting, f"naming to {ref if ref is not None else tag} done")
        self.progress.done(exporting)
        return manifest_digest, stored

    def git_sources(self) -> GitSources:
        """The git sources the user typed (the git context, --build-context): commits listed once,
        checkouts kept; fetched with the user's git credentials, as docker's CLI does."""
        if self._git is None:
            from builder.execute.gitsource import GitCredentials, GitSources

            self._git = GitSources(self.store.root, GitCredentials(host=True))
        return self._git

    def user_urls(self) -> UrlFetches:
        """The http(s) URLs the user typed (the context, --build-context): their downloads'
        digests, for the provenance."""
        if self._urls is None:
            self._urls = UrlFetches(lambda: self.store.temp_path("-urls"))
        return self._urls

    def _named_contexts(self) -> dict[str, NamedContext]:
        if not self.options.build_contexts:
            return {}
        from builder.execute.named import NamedContext

        return {c.name: c for c in (NamedContext.parse(t) for t in self.options.build_contexts)}

    def _secrets(self) -> dict[str, Secret]:
        if not self.options.secrets:
            return {}
        from builder.execute.run import Secret

        secrets = {s.id: s for s in (Secret.parse(t) for t in self.options.secrets)}
        for secret in secrets.values():  # as buildx: a missing file fails the build before it starts
            if secret.src is not None and not os.access(secret.src, os.R_OK):
                raise UsageError(f"--secret id={secret.id}: cannot read {secret.src}: "
                                 f"{'no such file' if not secret.src.exists() else 'permission denied'}")
        return secrets

    def _ssh_agents(self) -> SshAgents | None:
        if not self.options.ssh:
            return None
        from builder.execute.ssh import SshAgents, SshSource

        sources = {s.id: s for s in (SshSource.parse(t) for t in self.options.ssh)}
        return SshAgents(sources, self.store.root / "run")

    def _import_cache(self) -> ImportedCache | None:
        """--cache-from: read each cache's records (not its layers) before any lookup."""
        if not self.options.cache_to and not self.options.cache_from:
            return None
        from cache.remote import CacheSpec, load_imports

        for text in self.options.cache_to:  # a bad --cache-to fails now, not after the build
            CacheSpec.parse(text, export=True)
        for text in self.options.cache_from:  # a bad --cache-from too, even with --no-cache
            CacheSpec.parse(text, export=False)
        if not self.options.cache_from or self.options.no_cache:
            return None

        return load_imports(self.options.cache_from, self.store, self.progress,
                            tuple(self.options.insecure_registries))

    def _inline_cache(self, final: Image, env: BuildEnv, final_key: str, imported: ImportedCache | None,
                      build_args: Mapping[str, str]) -> Image:
        """``--cache-to type=inline`` (or BuildKit's BUILDKIT_INLINE_CACHE=1): the final image's step
        records in its config. A base image's inline cache is never inherited."""
        from cache.records import INLINE_KEY

        config = final.config_file()
        asked = build_args.get("BUILDKIT_INLINE_CACHE", "").lower() in ("1", "true")
        if not asked and not self.options.cache_to and INLINE_KEY not in config.extra:
            return final
        from cache.remote import CacheMode, CacheSpec, CacheType, inline_cache, select_keys

        wanted = asked or any(CacheSpec.parse(t, export=True).type is CacheType.INLINE
                              for t in self.options.cache_to)
        extra = {k: v for k, v in config.extra.items() if k != INLINE_KEY}
        if wanted:
            assert env.records is not None  # _build always gives its env records
            keys = select_keys(env.records, env.used_keys, final_key, CacheMode.MIN)
            extra[INLINE_KEY] = inline_cache(env.records, imported, keys,
                                             [str(layer.diff_id()) for layer in final.layers()])
        elif INLINE_KEY not in config.extra:
            return final
        return DerivedImage(list(final.layers()), replace(config, extra=extra))

    def _export_cache(self, env: BuildEnv, final_key: str, imported: ImportedCache | None) -> None:
        """--cache-to: write the records (and their layers) of this build's steps."""
        if not self.options.cache_to:
            return
        from cache.remote import CacheSpec, CacheType, export_cache, select_keys

        for text in self.options.cache_to:
            spec = CacheSpec.parse(text, export=True)
            if spec.type is CacheType.INLINE:
                continue  # written with the image
            assert env.records is not None  # _build always gives its env records
            keys = select_keys(env.records, env.used_keys, final_key, spec.mode)
            try:
                export_cache(spec, self.store, env.records, keys, imported=imported,
                             mount_ids=env.cache_mount_ids, cached_mount_ids=env.cached_mount_ids,
                             progress=self.progress,
                             insecure_registries=tuple(self.options.insecure_registries))
            except PybuildError as err:
                if not spec.ignore_error:
                    raise
                self.progress.warning(f"cache export to {spec.description} failed: {err}")

    @staticmethod
    def _resolve_base(resolver: BaseResolver, from_: ins_.From, transfers: StepTransfers | None = None,
                      cancel: threading.Event | None = None) -> Image:
        """The FROM image; a failure names the Dockerfile line and what was tried; a pull stops
        when ``cancel`` is set (Ctrl-C, SIGTERM, a failed stage), not when its layers are through."""
        try:
            return resolver.resolve(from_.base_name, transfers, cancel)
        except InvalidReferenceError as err:
            raise from_.error(f"base image {from_.base_name!r}: {err}", InstructionError) from None
        except (RegistryError, ImageNotFoundError) as err:
            where = "" if from_.base_name.startswith(("oci-layout://", "docker-archive://")) else (
                " is not in the local store (see `pybuild images`), and pulling it failed")
            raise from_.error(f"base image {from_.base_name}{where}: {err}", InstructionError) from None

    def _runtime(self) -> Runtime:
        from builder.runtime import detect

        return detect(self.options.isolation, work_root=self.store.root / "run")

    # -- results

    def _outputs(self, image: Image, tags: tuple[str, ...], source_date_epoch: int | None,
                 attestor: Attestor | None = None) -> Exported:
        from builder.export.outputs import export_outputs

        return export_outputs(self.options.outputs, image, tags, store=self.store, push=self.options.push,
                       insecure_registries=tuple(self.options.insecure_registries),
                       progress=self.progress, annotations=self.annotations, platform=str(Platform.host()),
                       source_date_epoch=source_date_epoch, attestor=attestor)

    def _attestor(self, dockerfile: bytes, dockerfile_name: str, build_args: Mapping[str, str],
                  order: Sequence[int], planned: Mapping, stages: Mapping[int, ins_.Stage],
                  bases: Mapping[int, tuple[str, Image]], resolver: BaseResolver,
                  lowers: Callable[[], Sequence[Path]], git_pins: Mapping[str, str],
                  url_pins: Mapping[str, str]) -> Attestor:
        """What the provenance tells of this build: its inputs (a secret's ID, never its value), the
        base images read (a named context or a layout is not a registry image: left out, as
        BuildKit lists those as local sources), the git repositories (by commit) and URLs (by the
        digest of their content) it read, and for mode=max its steps."""
        from builder.execute.named import is_remote_context
        from builder.execute.urls import redact_credentials
        from builder.export.attestation import (
            Attestor,
            BuildRecord,
            Material,
            SourceMaterial,
            dockerfile_steps,
            mount_ids,
        )
        from builder.image.reference import Reference

        opts = self.options
        host = Platform.host()
        materials: dict[str, Material] = {}
        step_bases: list[tuple[int, str | int, ins_.Stage]] = []
        for index in order:
            base_stage = planned[index].base_stage
            if base_stage is not None:
                step_bases.append((index, base_stage, stages[index]))
                continue
            if index not in bases:
                continue
            name, image = bases[index]
            identifier = f"docker-image://{name}"
            ref = Reference.try_parse(name) if name != "scratch" and "://" not in name else None
            if ref is not None and not resolver.named_context(name):
                materials.setdefault(str(ref), Material(str(ref), image.digest(), host))
                identifier = f"docker-image://{ref}@{image.digest()}"
            step_bases.append((index, identifier, stages[index]))
        secret_ids, ssh_ids = mount_ids([stages[i] for i in order])
        if opts.attest is not None and opts.attest.provenance is not None and opts.attest.provenance.mode == "max":
            from builder.frontend.checks import looks_secret

            for name in sorted(n for n in build_args if looks_secret(n)):
                self.progress.warning(f"provenance mode=max records the value of build-arg {name}, whose name "
                                      "reads as a secret's (BuildKit records it too): pass secrets with --secret")
        # a URL's user and password stay out, as BuildKit redacts them (BuildRecord's job)
        remote = opts.context if is_remote_context(opts.context) else None
        record = BuildRecord(
            started=self.started_on, dockerfile_name=os.path.basename(dockerfile_name) or "Dockerfile",
            dockerfile=dockerfile, build_args=dict(build_args), labels=dict(opts.labels), target=opts.target,
            materials=tuple(materials.values()), secrets=secret_ids, ssh=ssh_ids,
            # as BuildKit orders them: git repositories, then URLs, each by URI
            sources=tuple([SourceMaterial(uri, "sha1", commit) for uri, commit in sorted(git_pins.items())]
                          + [SourceMaterial.of(redact_credentials(url), Digest(digest))
                             for url, digest in sorted(url_pins.items())]),
            named_contexts=dict(c.partition("=")[::2] for c in opts.build_contexts),
            remote_context=remote, network=opts.network != "none",
            steps=dockerfile_steps(step_bases),
        )
        assert opts.attest is not None
        if opts.attest.sbom:
            from builder.execute.rootfs import RootfsView
            from builder.export.sbom import spdx_document

            name = opts.tags[0] if opts.tags else "sbom"
            record = replace(record, sbom=spdx_document(RootfsView(lowers()), name, self.started_on))
        return Attestor(opts.attest, record)

    def _report(self, result: BuildResult) -> None:
        from builder.export.destination import write_output

        opts = self.options
        if opts.iidfile:
            write_output(opts.iidfile, str(result.image_id).encode())
        if opts.metadata_file:
            # buildx's keys; once pushed or archived, the manifest the registry or archive holds
            # (its layers may have been compressed on the way, which changes its digest)
            manifest = result.image.manifest()
            descriptor = {"mediaType": manifest.media_type, "digest": str(result.manifest_digest),
                          "size": len(result.image.raw_manifest())}
            if result.manifests:
                descriptor = result.manifests[0].to_dict()
            data = {
                "containerimage.config.digest": str(result.image_id),
                "containerimage.descriptor": descriptor,
                "containerimage.digest": descriptor["digest"],
            }
            # every name the image was given: -t and -o type=image,name=..; buildx leaves the key
            # out of an unnamed image's metadata
            names = dict.fromkeys([*result.tags, *self._output_names]) or [str(p.reference) for p in result.pushed]
            if names:
                data["image.name"] = ",".join(names)
            write_output(opts.metadata_file, json.dumps(data, indent=2).encode())
        if opts.progress == "none" and not opts.quiet:  # buildx's none: errors only, no image ID
            return
        if opts.quiet:
            print(result.image_id, file=self._id_stream)
            return
        for pushed in result.pushed:
            # What --push sent: a base mounted from another repository of the registry cost
            # nothing to upload (docker push says "Mounted from" per layer).
            self.progress.message(
                f"pushing {pushed.reference}@{pushed.digest} done ({pushed.uploaded} blobs "
                f"uploaded, {pushed.mounted} mounted, {pushed.existing} already there)")
        self.progress.close()  # the tty view ends before the ID: not printed into its last line
        print(result.image_id, file=self._id_stream)


def _from_shown(base_stage: int | None, base_name: str) -> bool:
    """Whether a FROM is a step of its own, as in BuildKit: not on scratch nor on a stage."""
    return base_stage is None and base_name != "scratch"


def _required_stages(deps: Mapping[int, Sequence[int]], probed: Mapping[int, StageResult],
                     bases: Mapping[int, int | None], wanted: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """The stages a build needs after a probe: the ``wanted`` ones (the target, those of
    --no-cache-filter), and what a stage with a miss depends on. A fully cached stage needs
    its sources' keys only (the probe has them), but its base stage in full when that one
    is not fully cached (the probe's image of it is partial)."""
    required: set[int] = set()

    def need(index: int) -> None:
        if index in required:
            return
        required.add(index)
        for dep in deps[index]:
            if not probed[index].complete or (dep == bases.get(index) and not probed[dep].complete):
                need(dep)

    for index in wanted:
        need(index)
    return {i: tuple(d for d in deps[i] if d in required) for i in deps if i in required}


def _named_predicate(named: Mapping[str, object]) -> Callable[[str], bool] | None:
    if not named:
        return None
    from builder.execute.named import context_key

    return lambda name: context_key(name) in named


def _stage_index(stages: Sequence[ins_.Stage], name: str, before: int) -> int | None:
    if name.isdigit():
        index = int(name)
        return index if index < len(stages) else None
    found = None
    for stage in stages:
        if stage.index >= before:
            break
        if stage.name is not None and stage.name == name.lower():
            found = stage.index
    return found


def _base_env(probe: BaseResolver, name: str) -> BaseImage | None:
    """A base image's config for the checks: from the store, else its manifest and config read
    from the registry; None (the checks that need it stay quiet) when it cannot be read yet, and
    its FROM step then reports why."""
    try:
        return BaseImage.of(probe.resolve(name).config_file())
    except Exception:  # a best-effort look ahead, as _image_triggers
        return None


def _image_triggers(resolver: BaseResolver, dockerfile_name: str, stage: ins_.Stage, name: str,
                    ) -> list[ins_.Instruction]:
    """A base image's ONBUILD triggers for planning (what stages they copy from); none when the
    image cannot be read yet: its FROM step then reports why, with the Dockerfile line."""
    try:
        image = resolver.resolve(name)
        if not image.config_file().config.on_build:
            return []
        return _triggers(image, dockerfile_name, replace(stage.from_, base_name=name))
    except Exception:  # a best-effort look ahead: the FROM step resolves it again and reports why
        return []


def _triggers(base: Image, dockerfile_name: str, from_: ins_.From) -> list[ins_.Instruction]:
    """The base image's ONBUILD triggers, parsed as instructions of this Dockerfile."""
    from builder.frontend.instructions import parse_instruction
    from builder.frontend.parser import parse

    result = []
    for expression in base.config_file().config.on_build:
        parsed = parse(expression.encode(), file=f"{dockerfile_name} (ONBUILD of {from_.base_name})")
        for node in parsed.nodes:
            ins = parse_instruction(node, parsed)
            if isinstance(ins, ins_.From | ins_.Onbuild) or ins.keyword == "maintainer":
                raise from_.error(f"{ins.name} isn't allowed as an ONBUILD trigger", InstructionError)
            result.append(replace(ins, location=from_.location))
    return result


def _foreign_syntax(parsed) -> str | None:
    """A ``# syntax=`` naming another frontend than docker/dockerfile: BuildKit would run that
    image; pybuild has its own frontend (docker/dockerfile's language), so it says it ignores it."""
    syntax = parsed.directive("syntax")
    if not syntax:
        return None
    name = syntax.split("@", 1)[0].rsplit(":", 1)[0] if "/" in syntax else syntax
    name = name.removeprefix("docker.io/")
    if name in ("docker/dockerfile", "docker/dockerfile-upstream"):
        return None
    line = next((d.line for d in parsed.directives if d.name == "syntax"), 1)
    return (f"{parsed.file}:{line}: the syntax directive names the frontend {syntax}; pybuild reads "
            "Dockerfiles with its own (the docker/dockerfile syntax) and does not run other frontends")


def _is_tar(path: Path) -> bool:
    import tarfile

    try:
        return tarfile.is_tarfile(path)
    except (tarfile.TarError, EOFError, OSError):
        return False


def _stop_containers(work_root: Path) -> None:
    """Kill the processes of this process's running containers (Ctrl-C, a failed stage).

    Only the processes: each stage's own clean-up then unmounts and removes
    what its container made, as on any other exit path.
    """
    from builder.runtime.cleanup import stop_containers

    stop_containers(work_root)

