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
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from builder.errors import StepFailedError
from builder.execute.run import (
    RunResources,
    Secret,
    container_spec,
    failure_message,
    history_text,
    network_for,
    prepared_mounts,
    quote_argv,
    shell_command,
)
from builder.frontend import instructions as ins_
from builder.frontend.expand import Scope
from builder.image.config import ContainerConfig, Healthcheck, History
from builder.image.image import Image, Layer
from builder.image.mutate import DerivedImage
from builder.layers.tarwriter import write_layer
from builder.progress import Progress, StepHandle
from builder.scheduler import Cancelled
from cache.snapshots import chain_ids
from cache.store import BuildLayers, Store

DEFAULT_SHELL = ("/bin/sh", "-c")


@dataclass
class BuildEnv:
    """What every stage of one build shares."""

    store: Store
    layers: BuildLayers
    progress: Progress
    runtime_factory: Callable[[], object]
    context_root: Path | None
    secrets: Mapping[str, Secret]
    network: str = "default"
    source_date_epoch: int | None = None
    copy_context: object = None  # builder.execute.context.BuildContext (COPY/ADD sources)
    dockerfile_name: str = "Dockerfile"
    _runtime: object = None
    _runtime_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = self.runtime_factory()
            return self._runtime

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


class StageRunner:
    """Executes the instructions of one stage on top of a base image."""

    def __init__(self, env: BuildEnv, *, label: str, base: Image, scope: Scope,
                 stage_lookup: Callable[[str], StageResult | Image], cancel: threading.Event,
                 total: int) -> None:
        self.env = env
        self.label = label
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
        self.changed = False
        self._lowers_cache: tuple[int, list[Path]] | None = None

    # -- the image value

    def image(self) -> DerivedImage:
        config = replace(
            self.file_config, config=self.config, history=tuple(self.history),
            author=self.author, created=self.env.created() if self.changed else self.file_config.created,
        )
        return DerivedImage(self.layers, config)

    def lowers(self) -> list[Path]:
        """Snapshot dirs of the current layers, base first (extracting what is missing)."""
        if self._lowers_cache is not None and self._lowers_cache[0] == len(self.layers):
            return self._lowers_cache[1]
        paths = self.env.store.snapshot(DerivedImage(self.layers, self.file_config))
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
        for ins in (*triggers, *commands):
            if self.cancel.is_set():
                raise Cancelled("build cancelled")
            self.step += 1
            self.execute(ins)

    def execute(self, ins: ins_.Instruction) -> None:
        expanded = self.scope.apply(ins)
        handle = self.env.progress.start(f"[{self.label} {self.step}/{self.total}] {_summary(ins)}")
        try:
            self._dispatch(expanded, handle)
        except BaseException as err:
            self.env.progress.failed(handle, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        self.env.progress.done(handle)

    def _dispatch(self, ins: ins_.Instruction, handle: StepHandle) -> None:
        method = getattr(self, f"_do_{ins.keyword}", None)
        if method is None:
            raise ins.error(f"{ins.name} is not a build instruction")
        method(ins, handle)

    # -- metadata instructions

    def _do_env(self, ins: ins_.Env, handle: StepHandle) -> None:
        self._sync_env()
        self._nop("ENV " + " ".join(f"{p.key}={p.value}" for p in ins.pairs))

    def _do_arg(self, ins: ins_.Arg, handle: StepHandle) -> None:
        text = " ".join(a.key if a.default is None else f"{a.key}={a.default}" for a in ins.args)
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
        for port in ins.ports:
            spec = port if "/" in port else f"{port}/tcp"
            spec = spec.lower()
            added.append(spec)
            if spec not in ports:
                ports.append(spec)
        self.config = replace(self.config, exposed_ports=tuple(sorted(ports)))
        self._nop("EXPOSE " + " ".join(sorted(added)))

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
        changes: dict[str, object] = {"entrypoint": entrypoint}
        if not self.cmd_set:
            changes["cmd"] = None  # docker: an ENTRYPOINT resets a CMD inherited from the base
        self.config = replace(self.config, **changes)  # type: ignore[arg-type]
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
        self._nop(
            "HEALTHCHECK &{" + _go_list(health.test) + " " + " ".join(
                f'"{_go_duration(v)}"' for v in (health.interval, health.timeout, health.start_period,
                                                 health.start_interval)
            ) + f" '\\x{health.retries:02x}'" + "}"
        )

    # -- instructions that make layers

    def _do_workdir(self, ins: ins_.Workdir, handle: StepHandle) -> None:
        path = ins.path
        if not path.startswith("/"):
            path = os.path.join(self.config.working_dir or "/", path)
        path = os.path.normpath(path)
        if path.startswith("//"):
            path = path[1:]
        self.config = replace(self.config, working_dir=path)
        created_by = f"{' '.join(self._shell())} #(nop) WORKDIR {path}"
        layer = self._mkdir_layer(path)
        self._commit(created_by, layer)

    def _mkdir_layer(self, path: str) -> Layer | None:
        """docker creates a missing WORKDIR (0755, owned by root); an existing one needs no layer."""
        from builder.execute.rootfs import RootfsView

        view = RootfsView(self.lowers())
        if view.is_dir(path):
            return None
        missing: list[str] = []
        current = path
        while current not in ("/", "") and not view.is_dir(current):
            missing.append(current.lstrip("/"))
            current = os.path.dirname(current)
        return self._layer_from_entries(sorted(missing))

    def _layer_from_entries(self, dirs: Sequence[str]) -> Layer:
        from builder.layers.tarwriter import EntryType, TarEntry, TarStreamWriter

        tmp = self.env.store.temp_path(".layer.tar")
        with open(tmp, "wb") as out:
            writer = TarStreamWriter(out, source_date_epoch=self.env.source_date_epoch)
            mtime = self.env.source_date_epoch if self.env.source_date_epoch is not None else int(time.time())
            for d in dirs:
                writer.add(TarEntry(name=d, type=EntryType.DIR, mode=0o755, uid=0, gid=0, mtime=mtime))
            stats = writer.close()
        return self.env.layers.add_tar(tmp, stats.diff_id, stats.size)

    def _do_run(self, ins: ins_.Run, handle: StepHandle) -> None:
        from builder.runtime import Runtime

        runtime: Runtime = self.env.runtime  # type: ignore[assignment]
        argv, pipes = shell_command(ins, self._shell())
        env = self.scope.run_env()
        lowers = self.lowers()
        upper_root = self.env.store.temp_path(".run")
        upper_root.mkdir(mode=0o755)
        upper = upper_root / "upper"
        upper.mkdir(mode=0o755)
        res = RunResources(
            store_root=self.env.store.root, work_root=self.env.store.root / "run",
            context_root=self.env.context_root, secrets=self.env.secrets,
            lowers_of=self._lowers_of,
        )
        keep_upper = False
        try:
            with prepared_mounts(ins, res, env, pipes) as mounts:
                spec = container_spec(
                    lowers=lowers, upper=upper, argv=argv, env=env,
                    cwd=self.config.working_dir or "/", user=self.config.user, mounts=mounts,
                    network=network_for(ins, self.env.network),
                )
                code = runtime.run(spec, stdout=lambda data: self.env.progress.output(handle, data))
            if code != 0:
                location = f"{self.env.dockerfile_name}:{ins.start_line}"
                raise StepFailedError(
                    failure_message(f"[{self.label} {self.step}/{self.total}] RUN", location,
                                    quote_argv(argv), code, list(handle.tail)),
                    exit_code=code,
                )
            created_by = history_text(ins, self._shell(), self._history_args())
            tar = self.env.store.temp_path(".layer.tar")
            with open(tar, "wb") as out:
                stats = write_layer(upper, out, source_date_epoch=self.env.source_date_epoch,
                                    overlay_upper=True)
            layer = self.env.layers.add_tar(tar, stats.diff_id, stats.size)
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

    def _history_args(self) -> dict[str, str | None]:
        from builder.frontend.expand import FRONTEND_ARGS, PROXY_ARGS

        return {k: v for k, v in self.scope.visible_args().items()
                if k not in PROXY_ARGS and k not in FRONTEND_ARGS}

    def _lowers_of(self, name: str) -> Sequence[Path]:
        found = self.stage_lookup(name)
        if isinstance(found, StageResult):
            return found.lowers()
        return self.env.store.snapshot(found)

    def _do_copy(self, ins: ins_.Copy, handle: StepHandle) -> None:
        self._copy(ins, handle, is_add=False)

    def _do_add(self, ins: ins_.Add, handle: StepHandle) -> None:
        self._copy(ins, handle, is_add=True)

    def _copy(self, ins: ins_.Copy | ins_.Add, handle: StepHandle, *, is_add: bool) -> None:
        from builder.execute.copy import CopySpec, copy_layer
        from builder.execute.rootfs import RootfsView

        # Heredoc bodies were expanded with the instruction (Scope.apply): no expand here.
        spec = CopySpec.from_instruction(ins, workdir=self.config.working_dir or "/")
        source: object = self.env.copy_context
        from_ = getattr(ins, "from_", None)
        if from_:
            source = RootfsView(list(self._lowers_of(from_)))
        layer_tar = self.env.store.temp_path(".layer.tar")
        try:
            with open(layer_tar, "wb") as out:
                stats = copy_layer(spec, source=source, dest_view=RootfsView(self.lowers()), out=out,  # type: ignore[arg-type]
                                   source_date_epoch=self.env.source_date_epoch,
                                   workdir=self.env.store.tmp_dir)
            layer = self.env.layers.add_tar(layer_tar, stats.diff_id, stats.size)
        finally:
            layer_tar.unlink(missing_ok=True)
        kind = "file" if len(ins.sources) + len(ins.contents) == 1 else "multi"
        self._commit(
            f"{' '.join(self._shell())} #(nop) {ins.name} {kind}:{stats.diff_id.hex} in {ins.dest} ", layer)


def _summary(ins: ins_.Instruction) -> str:
    text = " ".join(ins.original.split()) if ins.original else ins.name
    return text if len(text) <= 100 else text[:97] + "..."


def _go_list(items: Sequence[str]) -> str:
    """Go's ``%q`` of a string slice, as docker prints CMD/ENTRYPOINT in history."""
    return "[" + " ".join(json.dumps(i, ensure_ascii=False) for i in items) + "]"


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    seconds = ns / 1e9
    if seconds >= 60 and seconds == int(seconds):
        m, s = divmod(int(seconds), 60)
        h, m = divmod(m, 60)
        return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{s}s"
    return f"{seconds:g}s"

