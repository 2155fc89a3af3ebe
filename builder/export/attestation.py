"""Build attestations as buildx asks for them and BuildKit stores them: the flags, the SLSA
provenance statement, and the attestation manifest that sits beside the image in an index.

buildx's ``--provenance``/``--sbom``/``--attest`` each become ``type=KIND,...`` fields (a boolean
is ``disabled=`` its negation); BuildKit's provenance processor fills a SLSA v0.2 predicate, and
its image writer puts every in-toto statement of a platform into one manifest (platform
``unknown/unknown``) that names the image manifest it describes.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from builder.errors import UsageError
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest
from builder.image.manifest import Index, Manifest
from builder.image.mediatypes import MediaType
from builder.image.platform import Platform
from builder.image.reference import Reference

STATEMENT_TYPE = "https://in-toto.io/Statement/v0.1"
PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v0.2"
BUILD_TYPE = "https://mobyproject.org/buildkit@v1"
BUILDKIT_METADATA = "https://mobyproject.org/buildkit@v1#metadata"
INTOTO_MEDIA_TYPE = "application/vnd.in-toto+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
UNKNOWN_PLATFORM = Platform(os="unknown", architecture="unknown")

_BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
# BuildKit's provenance attributes (solver/llbsolver/proc/provenance.go and the solver's builder-id)
_PROVENANCE_KEYS = ("mode", "builder-id", "reproducible", "inline-only", "version")
_SBOM_KEYS = ("generator", "scan-context", "scan-stage")


@dataclass(frozen=True)
class ProvenanceRequest:
    """``--provenance mode=min|max[,builder-id=URI]``: what the predicate holds."""

    mode: str = "min"
    builder_id: str = ""
    reproducible: bool = False
    inline_only: bool = False  # only in image outputs (a push, an OCI archive), not local/tar files


@dataclass(frozen=True)
class AttestationRequest:
    """The attestations a build is to carry (none by default, as on docker's own builder)."""

    provenance: ProvenanceRequest | None = None
    sbom: bool = False  # an SPDX document of the installed packages (pybuild's own, see builder.export.sbom)

    @property
    def wanted(self) -> bool:
        return self.provenance is not None or self.sbom

    @classmethod
    def parse(cls, provenance: str | None = None, sbom: str | None = None,
              attest: Sequence[str] = ()) -> AttestationRequest:
        """buildx's flags: ``--provenance``/``--sbom`` VALUE (a boolean, or fields after
        ``type=KIND``), ``--attest type=KIND[,disabled=BOOL][,KEY=VALUE...]``; a type given
        twice is buildx's "duplicate attestation field" error."""
        given = [(f"--attest {value}", value) for value in attest]
        for kind, value in (("provenance", provenance), ("sbom", sbom)):
            if value is not None and value.strip():
                given.append((f"--{kind}={value}", _canonical(kind, value.strip())))
        by_type: dict[str, dict[str, str]] = {}
        for flag, text in given:
            fields = _fields(flag, text)
            kind = fields.pop("type", "")
            if not kind:
                raise UsageError(f"invalid {flag}: attestation type not specified (type=provenance or type=sbom)")
            if kind not in ("provenance", "sbom"):
                raise UsageError(f"invalid {flag}: unknown attestation type {kind!r} (expected provenance or sbom)")
            if kind in by_type:
                raise UsageError(f"invalid {flag}: duplicate attestation field {kind}")
            by_type[kind] = fields | {"_flag": flag}
        provenance_request: ProvenanceRequest | None = None
        sbom_wanted = False
        for kind, fields in by_type.items():
            flag = fields.pop("_flag")
            if _bool(flag, "disabled", fields.pop("disabled", "false")):
                continue
            if kind == "sbom":
                _check_keys(flag, fields, _SBOM_KEYS)
                if fields.get("generator"):
                    raise UsageError(
                        f"invalid {flag}: pybuild runs no scanner image ({fields['generator']}); without "
                        "generator= it writes its own SPDX SBOM from the image's package databases")
                if fields.get("scan-context") or fields.get("scan-stage"):
                    raise UsageError(f"invalid {flag}: pybuild's SBOM lists the final image's packages only "
                                     "(no scan-context or scan-stage)")
                sbom_wanted = True
                continue
            _check_keys(flag, fields, _PROVENANCE_KEYS)
            mode = fields.get("mode", "min")
            if mode == "full":  # BuildKit's old name for max
                mode = "max"
            if mode not in ("min", "max"):
                raise UsageError(f"invalid {flag}: invalid mode {mode!r} (expected min or max)")
            version = fields.get("version", "v0.2")
            if version != "v0.2":
                raise UsageError(f"invalid {flag}: pybuild writes SLSA provenance v0.2 only "
                                 f"(version={version} asked for)")
            provenance_request = ProvenanceRequest(
                mode=mode, builder_id=fields.get("builder-id", ""),
                reproducible=_bool(flag, "reproducible", fields.get("reproducible", "false")),
                inline_only=_bool(flag, "inline-only", fields.get("inline-only", "false")))
        return cls(provenance_request, sbom_wanted)


def _canonical(kind: str, value: str) -> str:
    """buildx's CanonicalizeAttest: ``true`` is ``type=KIND,disabled=false``, fields follow the type."""
    if value.lower() in _BOOLEANS:
        return f"type={kind},disabled={'false' if _BOOLEANS[value.lower()] else 'true'}"
    return f"type={kind},{value}"


def _fields(flag: str, text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in next(csv.reader([text]), []):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid {flag}: invalid value {part!r}, expected KEY=VALUE fields")
        fields[key.strip().lower()] = value.strip()
    return fields


def _bool(flag: str, key: str, value: str) -> bool:
    if value.lower() not in _BOOLEANS:
        raise UsageError(f"invalid {flag}: invalid value {value!r} for {key} (expected true or false)")
    return _BOOLEANS[value.lower()]


def _check_keys(flag: str, fields: Mapping[str, str], known: Sequence[str]) -> None:
    for key in fields:
        if key not in known:
            raise UsageError(f"invalid {flag}: unknown attestation option {key!r} (expected {', '.join(known)})")


# --- what the build tells the provenance ------------------------------------------------------

@dataclass(frozen=True)
class Material:
    """A base image the build read: its reference as written (normalized) and its digest."""

    reference: str
    digest: Digest
    platform: Platform | None = None

    def uri(self) -> str:
        return image_purl(self.reference, self.platform)


@dataclass(frozen=True)
class SourceMaterial:
    """A git repository (``REMOTE#REF`` by its commit, sha1) or a URL (by its content's digest)
    the build read, as BuildKit names them among the materials."""

    uri: str
    algorithm: str
    hex: str

    @classmethod
    def of(cls, uri: str, digest: Digest) -> SourceMaterial:
        return cls(uri, digest.algorithm, digest.hex)


@dataclass(frozen=True)
class Step:
    """A build step for mode=max's buildConfig: a source (FROM), an exec (RUN) or a file op."""

    op: dict[str, Any]
    inputs: tuple[int, ...] = ()
    lines: tuple[int, int] | None = None  # the Dockerfile lines it comes from


@dataclass(frozen=True)
class BuildRecord:
    """What the build did, as the provenance tells it. Secrets and SSH are IDs only."""

    started: datetime.datetime
    dockerfile_name: str
    dockerfile: bytes
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    materials: tuple[Material, ...] = ()
    sources: tuple[SourceMaterial, ...] = ()  # git repositories, then URLs (after the images)
    secrets: Mapping[str, bool] = field(default_factory=dict)  # ID -> optional, of the RUN mounts
    ssh: Mapping[str, bool] = field(default_factory=dict)
    named_contexts: Mapping[str, str] = field(default_factory=dict)  # --build-context NAME=VALUE
    remote_context: str | None = None  # a git or http context URL (its credentials are redacted)
    network: bool = True
    steps: tuple[Step, ...] = ()
    sbom: Mapping[str, Any] | None = None  # the SPDX document, when an SBOM was asked for


def image_purl(reference: str, platform: Platform | None = None) -> str:
    """BuildKit's RefToPURL: ``pkg:docker/NAMESPACE/NAME@TAG?digest=..&platform=os%2Farch``."""
    ref = Reference.parse(reference)
    name = ref.familiar_name
    namespace, _, short = name.rpartition("/")
    qualifiers = []
    if ref.digest is not None:
        qualifiers.append(("digest", str(ref.digest)))
    version = ref.tag or ("latest" if ref.digest is None else "")
    if platform is not None:
        qualifiers.append(("platform", str(platform)))
    path = "/".join(quote(part, safe=":") for part in (*namespace.split("/"), short) if part)
    out = f"pkg:docker/{path}"
    if version:
        out += f"@{quote(version, safe='')}"
    if qualifiers:
        out += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in sorted(qualifiers))
    return out


def _redacted(url: str) -> str:
    """A URL without its user and password (BuildKit's RedactCredentials)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


def _digest_set(digest: Digest) -> dict[str, str]:
    return {digest.algorithm: digest.hex}


def _timestamp(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def provenance_predicate(request: ProvenanceRequest, record: BuildRecord, platform: Platform,
                         finished: datetime.datetime) -> dict[str, Any]:
    """The SLSA v0.2 predicate BuildKit writes for a Dockerfile build (dockerfile.v0 frontend).

    min: no build-arg or label values (completeness.parameters false when there were some),
    no secret or SSH IDs. max: those too (secret values never: only their IDs), and the steps
    with the Dockerfile source as buildConfig and source metadata.
    """
    args: dict[str, str] = {}
    dropped = False
    for name, value in sorted(record.build_args.items()):
        if request.mode == "min":
            dropped = True
            continue
        args[f"build-arg:{name}"] = value
    for name, value in sorted(record.labels.items()):
        if request.mode == "min":
            dropped = True
            continue
        args[f"label:{name}"] = value
    local_contexts = []
    for name, value in record.named_contexts.items():
        if "://" in value:  # docker-image://, oci-layout://, a git or http URL: as buildx sends it
            args[f"context:{name}"] = _redacted(value)
        else:  # a directory: buildx sends it as a local source of that name
            args[f"context:{name}"] = f"local:{name}"
            local_contexts.append({"name": name})
    if record.target:
        args["target"] = record.target
    parameters: dict[str, Any] = {"frontend": "dockerfile.v0", "args": args}
    if request.mode == "max":
        if record.secrets:
            parameters["secrets"] = [{"id": k, "optional": v} for k, v in record.secrets.items()]
        if record.ssh:
            parameters["ssh"] = [{"id": k, "optional": v} for k, v in record.ssh.items()]
    locals_ = [] if record.remote_context else [{"name": "context"}, {"name": "dockerfile"}]
    locals_ += local_contexts
    if locals_:
        parameters["locals"] = locals_
    config_source: dict[str, Any] = {"entryPoint": record.dockerfile_name}
    if record.remote_context:
        from builder.execute.urls import redact_credentials

        # the context is among the sources read (by their URIs, credentials masked): its digest
        masked = redact_credentials(record.remote_context)
        pinned = [{m.algorithm: m.hex} for m in record.sources if m.uri == masked]
        config_source = {"uri": _redacted(record.remote_context), **({"digest": pinned[0]} if pinned else {}),
                         **config_source}
    incomplete = bool(locals_)  # a local context is a material BuildKit cannot name
    predicate: dict[str, Any] = {
        "builder": {"id": request.builder_id},
        "buildType": BUILD_TYPE,
        "materials": [{"uri": m.uri(), "digest": _digest_set(m.digest)} for m in record.materials]
        + [{"uri": m.uri, "digest": {m.algorithm: m.hex}} for m in record.sources],
        "invocation": {
            "configSource": config_source,
            "parameters": parameters,
            "environment": {"platform": str(platform)},
        },
    }
    metadata: dict[str, Any] = {
        "buildInvocationID": secrets.token_hex(13)[:25],
        "buildStartedOn": _timestamp(record.started),
        "buildFinishedOn": _timestamp(finished),
        "completeness": {"parameters": not dropped, "environment": True, "materials": not incomplete},
        "reproducible": request.reproducible,
    }
    if not incomplete and not record.network:  # BuildKit's field is omitted when false
        metadata["https://mobyproject.org/buildkit@v1#hermetic"] = True
    if request.mode == "max":
        predicate["buildConfig"] = {"llbDefinition": [_step_dict(i, s) for i, s in enumerate(record.steps)]}
        locations = {f"step{i}": {"locations": [{"ranges": [{"start": {"line": s.lines[0]},
                                                             "end": {"line": s.lines[1]}}]}]}
                     for i, s in enumerate(record.steps) if s.lines}
        metadata[BUILDKIT_METADATA] = {"source": {
            "locations": locations,
            "infos": [{"filename": record.dockerfile_name, "language": "Dockerfile",
                       "data": base64.b64encode(record.dockerfile).decode()}],
        }}
    predicate["metadata"] = metadata
    return predicate


def _step_dict(index: int, step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"step{index}", "op": {"Op": step.op}}
    if step.inputs:
        out["inputs"] = [f"step{i}:0" for i in step.inputs]
    return out


def statement(predicate_type: str, predicate: Mapping[str, Any], subjects: Sequence[Mapping[str, Any]]) -> bytes:
    """An in-toto statement, as BuildKit marshals it (indented, as its ContentFunc returns it)."""
    return json.dumps({"_type": STATEMENT_TYPE, "predicateType": predicate_type, "subject": list(subjects),
                       "predicate": predicate}, indent=2).encode()


def subjects(names: Sequence[str], manifest: Digest, platform: Platform) -> list[dict[str, Any]]:
    """One subject per image name (BuildKit's default subjects), each the manifest's digest."""
    return [{"name": image_purl(name, platform), "digest": _digest_set(manifest)} for name in names]


# --- storage ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttestationManifest:
    """The manifest holding one platform's statements, with its config and layer blobs."""

    raw: bytes
    descriptor: Descriptor  # annotated with the image manifest it describes; platform unknown/unknown
    blobs: tuple[tuple[Descriptor, bytes], ...]  # config first, then each statement


def attestation_manifest(statements: Sequence[tuple[str, bytes]], image: Digest) -> AttestationManifest:
    """BuildKit's commitAttestationsManifest: each statement a layer (``application/vnd.in-toto+json``,
    its predicate type annotated), a config of platform unknown/unknown with the layers as diff IDs."""
    layers = [Descriptor.of(INTOTO_MEDIA_TYPE, data, annotations={PREDICATE_ANNOTATION: kind})
              for kind, data in statements]
    config = canonical_json({"architecture": "unknown", "os": "unknown", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]}})
    config_desc = Descriptor.of(MediaType.OCI_CONFIG, config)
    manifest = Manifest(config=config_desc, layers=tuple(layers), media_type=MediaType.OCI_MANIFEST)
    raw = manifest.to_bytes()
    descriptor = Descriptor.of(MediaType.OCI_MANIFEST, raw, platform=UNKNOWN_PLATFORM,
                               annotations={REFERENCE_TYPE: ATTESTATION_MANIFEST, REFERENCE_DIGEST: str(image)})
    blobs = ((config_desc, config), *((d, data) for d, (_, data) in zip(layers, statements, strict=True)))
    return AttestationManifest(raw, descriptor, blobs)


def attested_index(image: Descriptor, attestation: AttestationManifest,
                   annotations: Mapping[str, str] | None = None) -> bytes:
    """The OCI index BuildKit writes: the image manifest (with its platform), then its attestations."""
    return Index(manifests=(image, attestation.descriptor), media_type=MediaType.OCI_INDEX,
                 annotations=dict(annotations) if annotations else None).to_bytes()


@dataclass(frozen=True)
class Attestor:
    """Makes a platform's attestation manifest once the image manifest's digest is known."""

    request: AttestationRequest
    record: BuildRecord

    def manifest_for(self, image: Digest, names: Sequence[str], platform: Platform) -> AttestationManifest:
        """The SBOM first, then the provenance (BuildKit adds provenance after the frontend's)."""
        from builder.export.sbom import SPDX_PREDICATE

        made: list[tuple[str, bytes]] = []
        subject = subjects(names, image, platform)
        if self.record.sbom is not None:
            made.append((SPDX_PREDICATE, statement(SPDX_PREDICATE, self.record.sbom, subject)))
        if self.request.provenance is not None:
            finished = datetime.datetime.now(datetime.UTC)
            predicate = provenance_predicate(self.request.provenance, self.record, platform, finished)
            made.append((PROVENANCE_PREDICATE, statement(PROVENANCE_PREDICATE, predicate, subject)))
        return attestation_manifest(made, image)

    def file_statements(self, files: Sequence[tuple[str, Digest]], platform: Platform) -> list[tuple[str, bytes]]:
        """BuildKit's local and tar exporters: each statement a file of the output
        (``sbom.spdx.json``, ``provenance.json``) whose subjects are the output's regular files."""
        from builder.export.sbom import SPDX_PREDICATE

        subject = [{"name": name, "digest": _digest_set(digest)} for name, digest in files]
        made: list[tuple[str, bytes]] = []
        if self.record.sbom is not None:
            made.append(("sbom.spdx.json", statement(SPDX_PREDICATE, self.record.sbom, subject)))
        if self.request.provenance is not None and not self.request.provenance.inline_only:
            finished = datetime.datetime.now(datetime.UTC)
            predicate = provenance_predicate(self.request.provenance, self.record, platform, finished)
            made.append(("provenance.json", statement(PROVENANCE_PREDICATE, predicate, subject)))
        return made


def mount_ids(stages: Sequence[Any]) -> tuple[dict[str, bool], dict[str, bool]]:
    """The secret and SSH IDs the RUN steps of ``stages`` mount, each with whether it is
    optional (BuildKit records the mounts its exec ops made, not the --secret flags given)."""
    from builder.frontend import instructions as ins

    found: dict[ins.MountType, dict[str, bool]] = {ins.MountType.SECRET: {}, ins.MountType.SSH: {}}
    for stage in stages:
        for command in stage.commands:
            for mount in getattr(command, "mounts", ()) if isinstance(command, ins.Run) else ():
                if mount.type is ins.MountType.SECRET:
                    sid = mount.id or (mount.target.rstrip("/").rpartition("/")[2] if mount.target else "")
                elif mount.type is ins.MountType.SSH:
                    sid = mount.id or "default"
                else:
                    continue
                if sid:
                    seen = found[mount.type]
                    seen[sid] = seen.get(sid, True) and not mount.required
    return found[ins.MountType.SECRET], found[ins.MountType.SSH]


def dockerfile_steps(stages: Sequence[tuple[int, str | int, Any]]) -> tuple[Step, ...]:
    """mode=max's steps from the stages built, in order: ``(index, base, stage)`` where base
    is an image identifier (``docker-image://REF@DIGEST``) or the index of the stage it builds on.
    FROM is a source, RUN an exec (through the stage's SHELL), COPY/ADD/WORKDIR file ops; the
    instructions that only set image config make no step, as in BuildKit's LLB."""
    from builder.frontend import instructions as ins

    steps: list[Step] = []
    last: dict[int, int] = {}  # stage index -> its last step
    for index, base, stage in stages:
        if isinstance(base, int) and base in last:
            current = last[base]
        else:
            loc = stage.from_.location
            steps.append(Step({"source": {"identifier": base if isinstance(base, str) else f"stage {base}"}},
                              lines=(loc.start_line, loc.end_line or loc.start_line)))
            current = len(steps) - 1
        shell: tuple[str, ...] = ("/bin/sh", "-c")
        for command in stage.commands:
            op: dict[str, Any] | None = None
            if isinstance(command, ins.Shell):
                shell = tuple(command.shell)
            elif isinstance(command, ins.Run):
                args = [*shell, " ".join(command.command)] if command.prepend_shell else list(command.command)
                op = {"exec": {"meta": {"args": args}}}
            elif isinstance(command, (ins.Copy, ins.Add)):
                copy: dict[str, Any] = {"src": list(command.sources), "dest": command.dest}
                if isinstance(command, ins.Copy) and command.from_:
                    copy["from"] = command.from_
                op = {"file": {"actions": [{"copy": copy}]}}
            elif isinstance(command, ins.Workdir):
                op = {"file": {"actions": [{"mkdir": {"path": command.path, "makeParents": True}}]}}
            if op is None:
                continue
            loc = command.location
            steps.append(Step(op, (current,), (loc.start_line, loc.end_line or loc.start_line)))
            current = len(steps) - 1
        last[index] = current
    return tuple(steps)
