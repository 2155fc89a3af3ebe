"""Local image commands, as docker has them: load, save, images, inspect, history, tag, rmi,
prune, and ``store check``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from builder.errors import PybuildError, UsageError

if TYPE_CHECKING:
    from cache.store import ImageRecord, Store

ORDER = 30


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("load", parents=[common], help="load images from a tar archive or stdin",
                              description="Load images from an OCI layout or docker-archive tar "
                              "(plain, gzip or zstd), or from stdin.")
    p.add_argument("-i", "--input", metavar="FILE", help="read from a tar archive file, instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="suppress progress output (the loaded images are still named, as by docker)")
    p.add_argument("--platform", metavar="OS/ARCH",
                   help="from a multi-platform archive, load this platform's image (default: the host's)")
    p.set_defaults(func=_load)

    p = subparsers.add_parser("save", parents=[common], help="save images to a tar archive",
                              description="Save one or more images to a tar archive "
                              "(streamed to stdout by default).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", metavar="FILE", help="write to a file, instead of stdout")
    p.add_argument("--format", choices=("docker", "oci"), default="docker",
                   help="docker: OCI layout plus docker's manifest.json (default); oci: OCI layout only")
    p.set_defaults(func=_save)

    p = subparsers.add_parser("images", parents=[common], help="list images",
                              usage="pybuild images [OPTIONS] [REPOSITORY[:TAG]]")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--format", metavar="FORMAT",
                   help="'table' (default), 'json', 'table TEMPLATE' or a Go TEMPLATE like '{{.ID}}'")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="FILTER",
                   help="dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE")
    p.add_argument("-a", "--all", action="store_true", help="show all images (also untagged manifests of an ID a tag names)")
    p.set_defaults(func=_images)

    p = subparsers.add_parser("inspect", parents=[common], help="show details of images as JSON")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--format", metavar="FORMAT", help="'json' (default) or a Go TEMPLATE like '{{.Id}}'")
    p.add_argument("--type", metavar="TYPE", help="what to inspect: image (pybuild keeps nothing else)")
    p.set_defaults(func=_inspect)

    p = subparsers.add_parser("history", parents=[common], help="show the history of an image")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("--format", metavar="FORMAT",
                   help="'table' (default), 'json', 'table TEMPLATE' or a Go TEMPLATE like '{{.CreatedBy}}'")
    p.add_argument("-H", "--human", nargs="?", const="true", default="true", metavar="BOOL",
                   help="print sizes and dates in human readable format (default true)")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("--files", action="store_true",
                   help="per layer: files added, changed and deleted, and bytes later layers hide")
    p.set_defaults(func=_history)

    p = subparsers.add_parser("tag", parents=[common], help="create a tag TARGET that refers to SOURCE",
                              usage="pybuild tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=_tag)

    p = subparsers.add_parser("rmi", parents=[common], help="remove images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="force removal of the image")
    p.set_defaults(func=_rmi)

    p = subparsers.add_parser("prune", parents=[common], help="remove unused data from the store",
                              description="Remove blobs and snapshots no image needs. With "
                              "--keep-storage, remove least recently used data (then untagged "
                              "images) only until the store fits.")
    p.add_argument("-a", "--all", action="store_true",
                   help="also remove untagged images and every snapshot")
    p.add_argument("--keep-storage", metavar="SIZE", help="amount of disk space to keep (e.g. 10GB, 512MB)")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.set_defaults(func=_prune)

    p = subparsers.add_parser("store", parents=[common], help="manage the local store")
    sub = p.add_subparsers(dest="store_command", metavar="COMMAND")
    c = sub.add_parser("check", parents=[common], help="verify every blob and reference")
    c.add_argument("--repair", action="store_true", help="remove what is broken and say what was done")
    c.set_defaults(func=_store_check)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _open_store() -> Store:
    from cache.store import Store

    return Store()


# --- formatting, as docker's go-units does it ------------------------------------------------

def human_size(size: float, precision: int = 3) -> str:
    """docker's HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits (its
    HumanSize, as in ``images``' VirtualSize, has 4)."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_duration(seconds: float) -> str:
    """docker's HumanDuration (``About an hour``, ``3 days``, ``2 months``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """docker's RAMInBytes: ``10GB`` = 10 GiB, ``512m``, ``1024`` (binary units, as docker)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"invalid size: {text!r} (expected e.g. 10GB, 512MB, 1024)")
    number = float(match.group(1))
    power = " kmgtp".index(match.group(2).lower() or " ")
    return int(number * 1024 ** power)


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 time as images carry it (nanoseconds allowed)."""
    if not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def since(value: str | None, now: dt.datetime | None = None) -> str:
    created = parse_time(value)
    if created is None or created.year <= 1:
        return "N/A"
    now = now or dt.datetime.now(dt.UTC)
    return human_duration((now - created).total_seconds()) + " ago"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns as docker's tabwriter lays them out (min width 10, padding 3)."""
    if not rows:
        return ""
    widths = [max(10, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip())
    return "\n".join(lines) + "\n"


def _short(digest: str, no_trunc: bool) -> str:
    return digest if no_trunc else digest[7:19]


def _is_json(fmt: str | None) -> bool:
    return fmt in ("json", "{{json .}}")


# --- --format: docker's Go templates, the part scripts use -----------------------------------

_ACTION_RE = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)  # a table template's columns, for its header


def render(template: str, obj: dict[str, Any] | None) -> str:
    """``template`` for ``obj`` (None: only checked), as docker's Go templates render it."""
    from builder.cli._gotemplate import render as go_render

    return go_render(template, obj)


# docker's headers of the fields no default column shows
_EXTRA_HEADERS = {"VirtualSize": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
                  "Containers": "CONTAINERS", "Digest": "DIGEST", "CreatedAt": "CREATED AT"}


def emit(rows: Sequence[dict[str, Any]], fmt: str | None, columns: Sequence[tuple[str, str]]) -> None:
    """Rows as docker prints them: a table (default or ``table TEMPLATE``), JSON lines, or a template."""
    if fmt in (None, "", "table"):
        out = [tuple(header for header, _ in columns)]
        out += [tuple(str(row[field]) for _, field in columns) for row in rows]
        sys.stdout.write(table(out))
    elif _is_json(fmt):
        for row in rows:
            print(json.dumps(row, separators=(",", ":"), ensure_ascii=False))
    elif fmt.startswith("table "):
        template = fmt[len("table "):]
        render(template, None)
        headers = {**_EXTRA_HEADERS, **{field: header for header, field in columns}}
        header_line = _ACTION_RE.sub(
            lambda m: headers.get(m.group(1).lstrip("."), m.group(1).lstrip(".").upper()),
            template.replace("\\t", "\t"))
        lines = [header_line.split("\t")] + [render(template, row).split("\t") for row in rows]
        width = max(len(line) for line in lines)
        sys.stdout.write(table([line + [""] * (width - len(line)) for line in lines]))
    else:
        render(fmt, None)  # a bad template is an error even when there is nothing to show
        for row in rows:
            print(render(fmt, row))


# --- load / save ---------------------------------------------------------------------------

def _load(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.export.archive import open_archive, read_images
    from builder.image.platform import Platform
    from cache.store import familiar_name, normalize_name

    store = _open_store()
    spooled: Path | None = None
    try:
        if args.input:
            path = Path(args.input)
        else:
            if sys.stdin.isatty():
                raise UsageError("requested load from stdin, but stdin is empty (use -i FILE or redirect)")
            spooled = path = store.temp_path(".load.tar")
            with open(spooled, "wb") as out:
                while chunk := sys.stdin.buffer.read(1 << 20):
                    out.write(chunk)
            if spooled.stat().st_size == 0:
                raise UsageError("requested load from stdin, but stdin is empty")
        platform = Platform.parse(args.platform) if args.platform else None
        with open_archive(path, store.tmp_dir, "stdin" if spooled else None) as files:
            loaded = read_images(files, platform)
            if platform is not None:
                loaded = _for_platform(loaded, platform, "stdin" if spooled else str(path))
            lines = []
            for tagged in loaded:
                names = [normalize_name(n) for n in tagged.names]
                for name in names:  # docker says when a tag leaves another image (now <none>)
                    old = _tagged_id(store, name)
                    if old is not None and old != tagged.image.config_digest():
                        lines.append(f"The image {familiar_name(name)} already exists, renaming the old "
                                     f"one with ID {old} to empty string")
                store.write_image(tagged.image, names)
                if names:
                    lines += [f"Loaded image: {familiar_name(n)}" for n in names]
                else:
                    lines.append(f"Loaded image ID: {tagged.image.config_digest()}")
        # As docker's: -q hides progress (pybuild shows none), not what was loaded, which
        # scripts read (`load -q | sed 's/^Loaded image: //'`).
        print("\n".join(lines))
    finally:
        if spooled is not None:
            spooled.unlink(missing_ok=True)
        store.close()
    return 0


def _tagged_id(store: Store, name: str) -> str | None:
    """The ID of the image ``name`` tags, if any."""
    from builder.errors import ImageNotFoundError

    try:
        return store.resolve(name).config_digest
    except ImageNotFoundError:
        return None


def _for_platform(loaded: list, platform, shown: str) -> list:
    """``load --platform``: the archive's images of that platform; none is an error, as in docker."""
    from builder.errors import ImageNotFoundError
    from builder.image.platform import Platform

    kept, seen = [], []
    for tagged in loaded:
        config = tagged.image.config_file()
        own = Platform(config.os, config.architecture, config.variant or None)
        seen.append(str(own))
        if own.matches(platform):
            kept.append(tagged)
    if not kept:
        raise ImageNotFoundError(f"{shown} has no image for platform {platform} (it holds {', '.join(sorted(set(seen)))})")
    return kept


def _save(args: argparse.Namespace) -> int:
    from pathlib import Path

    from builder.export import TaggedImage
    from builder.export.archive import save
    from cache.store import normalize_name

    store = _open_store()
    # Held shared for the whole save: prune cannot collect what is being read, even if
    # another process removes the image meanwhile.
    try:
        with store.gc_lock.shared():
            chosen: dict[str, tuple[Any, list[str]]] = {}
            for arg in args.images:
                # As docker: a repository without a tag means every tag it has (`save app`
                # saves app:1 and app:2); one with no tag at all is looked up as an ID.
                tags = _repository_tags(store, arg)
                pairs: list[tuple[Any, str | None]]
                if tags:
                    pairs = [(store.image(tag), tag) for tag in tags]
                else:
                    try:
                        name: str | None = normalize_name(arg)
                    except PybuildError:
                        name = None
                    pairs = [(store.image(arg), name)]
                for image, name in pairs:
                    entry = chosen.setdefault(image.digest(), (image, []))
                    if name is not None and name in image.record.names and name not in entry[1]:
                        entry[1].append(name)
            images = [
                TaggedImage(store.docker_compatible(image) if args.format == "docker" else image, tuple(names))
                for image, names in chosen.values()
            ]
            if args.output and args.output != "-":
                save(images, Path(args.output), args.format)
            else:
                if sys.stdout.isatty():
                    raise UsageError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
                save(images, sys.stdout.buffer, args.format)
            for image, _ in chosen.values():
                store.touch(image.record)
    finally:
        store.close()
    return 0


def _repository_tags(store: Store, text: str) -> list[str]:
    """The stored names of repository ``text`` when it names no tag or digest (docker's
    IsNameOnly), sorted; empty otherwise."""
    from builder.image.reference import Reference

    ref = Reference.try_parse(text)
    if ref is None or ref.digest is not None or ":" in text.rpartition("/")[2]:
        return []
    return store.tags_of(ref.name)


# --- listing and inspecting --------------------------------------------------------------------

def _images(args: argparse.Namespace) -> int:
    from cache.store import split_familiar

    filters = _image_filters(args.filter)
    store = _open_store()
    try:
        records = store.images()
        sizes = {r.manifest_digest: store.image_size(r) for r in records}
    finally:
        store.close()
    want_repo = want_tag = None
    pattern = args.reference if args.reference and any(c in args.reference for c in "*?[") else None
    if args.reference and pattern is None:
        want_repo, sep, want_tag = args.reference.rpartition(":")
        if not sep or "/" in want_tag:  # no tag, or the colon was a registry's port
            want_repo, want_tag = args.reference, ""
    # docker lists an image ID once: an untagged manifest of an ID a tagged one has (a docker
    # manifest that a save/load round trip rewrote as OCI) is not a dangling image (-a shows it).
    # Two untagged manifests of one ID (an image loaded from both archive formats) are one
    # <none> row, the newest.
    tagged_ids = {r.config_digest for r in records if r.names}
    if not args.all:
        shown_ids = set(tagged_ids)
        kept = []
        for r in records:  # newest first
            if r.names or r.config_digest not in shown_ids:
                kept.append(r)
                shown_ids.add(r.config_digest)
        records = kept
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, str]] = []
    for record in sorted(records, key=lambda r: (parse_time(r.created) or dt.datetime.min.replace(tzinfo=dt.UTC)), reverse=True):
        pairs = [split_familiar(n) for n in record.names] or [("<none>", "<none>")]
        for repo, tag in pairs:
            if want_repo is not None and (repo != want_repo and repo != _familiar_repo(want_repo)):
                continue
            if want_tag and tag != want_tag:
                continue
            if pattern is not None and not _reference_matches(pattern, repo, tag):
                continue
            if not filters(record, repo, tag):
                continue
            size = sizes[record.manifest_digest]
            rows.append({
                "Containers": "N/A",
                "CreatedAt": _created_at(record.created),
                "CreatedSince": since(record.created, now),
                "Digest": record.manifest_digest if repo != "<none>" else "<none>",
                "ID": _short(record.id, args.no_trunc),
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": human_size(size),
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": human_size(size, 4),
            })
    if args.quiet:
        seen = dict.fromkeys(r["ID"] for r in rows)
        print("\n".join(seen) if seen else "", end="\n" if seen else "")
        return 0
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag")]
    if args.digests:
        columns.append(("DIGEST", "Digest"))
    columns += [("IMAGE ID", "ID"), ("CREATED", "CreatedSince"), ("SIZE", "Size"),
                ("CREATED AT", "CreatedAt")]
    emit(rows, args.format, columns if args.format and args.format.startswith("table ") else columns[:-1])
    return 0


def _image_filters(specs: Sequence[str]):
    """docker's ``images --filter``: every filter must hold (values of one key: any may)."""
    wanted: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or key not in ("dangling", "reference", "label", "before", "since"):
            raise UsageError(f"invalid filter {spec!r}: use dangling=, reference=, label=, before= or since=")
        if key == "dangling" and value not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid filter {spec!r}: dangling takes true or false")
        if key == "reference":
            from builder.frontend.dockerignore import PatternMatcher

            PatternMatcher.from_patterns([value])  # a bad pattern is an error even with no image
        wanted.setdefault(key, []).append(value)
    if not wanted:
        return lambda record, repo, tag: True
    store = _open_store() if ("before" in wanted or "since" in wanted or "label" in wanted) else None
    bounds: dict[str, list[float]] = {}
    labels: dict[str, dict[str, str]] = {}
    try:
        for key in ("before", "since"):
            bounds[key] = [_created_seconds(store.resolve(v)) for v in wanted.get(key, [])] if store is not None else []
        if "label" in wanted and store is not None:
            for record in store.images():
                try:
                    labels[record.manifest_digest] = dict(store.image_config(record).config.labels)
                except PybuildError:  # a damaged image (store check says which) has no labels to match
                    labels[record.manifest_digest] = {}
    finally:
        if store is not None:
            store.close()

    def keep(record, repo: str, tag: str) -> bool:
        if "dangling" in wanted:
            dangling = not record.names
            if any((v in ("true", "1")) != dangling for v in wanted["dangling"]):
                return False
        if "reference" in wanted and not any(_reference_matches(p, repo, tag) for p in wanted["reference"]):
            return False
        if "label" in wanted:
            have = labels.get(record.manifest_digest, {})
            for spec in wanted["label"]:
                k, sep, v = spec.partition("=")
                if k not in have or (sep and have[k] != v):
                    return False
        # As docker: by when the images were created (their config), not when they came here
        created = _created_seconds(record)
        if any(created >= b for b in bounds.get("before", [])):
            return False
        return not any(created <= b for b in bounds.get("since", []))

    return keep


def _created_seconds(record: ImageRecord) -> float:
    created = parse_time(record.created)
    return created.timestamp() if created is not None else float("-inf")


def _reference_matches(pattern: str, repo: str, tag: str) -> bool:
    """docker's reference filter (also what ``images REPO[:TAG]`` is): Go's path.Match of the
    pattern against ``repo:tag``, else against the repository alone. As there, ``*`` and
    ``?`` stop at a ``/`` (``'*'`` is the official images, not ``team/app``), and an untagged
    image has no reference to match."""
    from builder.frontend.dockerignore import PatternMatcher

    if repo == "<none>":
        return False
    rules = PatternMatcher.from_patterns([pattern]).rules
    if len(rules) != 1 or rules[0].exclusion:
        return False
    return rules[0].match(f"{repo}:{tag}") or rules[0].match(repo)


def _familiar_repo(text: str) -> str:
    from builder.image.reference import Reference

    ref = Reference.try_parse(text)
    return ref.familiar_name if ref else text


def _created_at(value: str | None) -> str:
    created = parse_time(value)
    if created is None:
        return ""
    return created.strftime("%Y-%m-%d %H:%M:%S %z ") + (created.tzname() or "UTC")


def _rfc3339(value: str | None) -> str:
    """Go's ``time.Unix(t, 0).Format(time.RFC3339)``: local time, to the second (docker history)."""
    created = parse_time(value)
    if created is None:
        return ""
    local = created.astimezone().replace(microsecond=0)
    offset = local.utcoffset()
    return local.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if not offset else local.strftime("%z")[:3] + ":" +
                                                  local.strftime("%z")[3:])


_DOCKER_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}


def inspect_image(store: Store, name: str) -> dict[str, Any]:
    """One object shaped like ``docker image inspect``'s."""
    from cache.store import familiar_name, split_familiar

    record = store.resolve(name)
    config = store.image_config(record)
    tag_rows = store.db.query(
        "SELECT MAX(created) AS t FROM images WHERE manifest_digest=?", (record.manifest_digest,))
    last_tag = tag_rows[0]["t"] if tag_rows and tag_rows[0]["t"] else None
    repos = list(dict.fromkeys(split_familiar(n)[0] for n in record.names))
    container = dict(_DOCKER_CONFIG_DEFAULTS)
    container.update(config.config.to_dict())
    out: dict[str, Any] = {
        "Id": str(record.id),
        "RepoTags": [familiar_name(n) for n in record.names],
        "RepoDigests": [f"{repo}@{record.manifest_digest}" for repo in repos],
        "Parent": "",
        "Comment": config.extra.get("comment", "") or "",
        "Created": config.created or "0001-01-01T00:00:00Z",
        "DockerVersion": config.extra.get("docker_version", "") or "",
        "Author": config.author or "",
        "Config": container,
        "Architecture": config.architecture,
    }
    if config.variant:
        out["Variant"] = config.variant
    out.update({
        "Os": config.os,
        "Size": store.image_size(record),
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in config.diff_ids]},
        "Metadata": {"LastTagTime": (
            dt.datetime.fromtimestamp(last_tag, dt.UTC).isoformat().replace("+00:00", "Z")
            if last_tag else "0001-01-01T00:00:00Z")},
        "Descriptor": {"mediaType": record.media_type, "digest": str(record.manifest_digest),
                       "size": store._blob_size(record.manifest_digest)},
    })
    return out


def _inspect(args: argparse.Namespace) -> int:
    from builder.errors import ImageNotFoundError

    if args.type not in (None, "image"):
        raise UsageError(f'"{args.type}" is not a valid value for --type: pybuild has images only '
                         "(no containers, networks, volumes)")
    store = _open_store()
    results, errors = [], []
    try:
        for name in args.images:  # as docker: the images found are shown, each other one an error
            try:
                results.append(inspect_image(store, name))
            except ImageNotFoundError:
                errors.append(f"No such image: {name}")
            except PybuildError as err:  # an ambiguous short ID, a damaged image
                errors.append(str(err))
    finally:
        store.close()
    if args.format and not _is_json(args.format):
        for result in results:
            print(render(args.format, result))
    else:
        print(json.dumps(results, indent=4))
    if errors:
        print("\n".join(f"Error: {e}" for e in errors), file=sys.stderr)
        return 1
    return 0


def _history(args: argparse.Namespace) -> int:
    as_json = _is_json(args.format)
    if args.files and args.format and not as_json:
        raise UsageError("history --files supports --format json only")
    human = str(args.human).lower() not in ("false", "0", "no")
    store = _open_store()
    try:
        record = store.resolve(args.image)
        config = store.image_config(record)
        if args.files:
            return _history_files(store, args.image, human, as_json)
        entries = []
        for index, (entry, layer) in enumerate(config.layer_history()):
            size = 0
            if layer is not None:
                size = store.diff_size(config.diff_ids[layer]) or 0
            entries.append((index, entry, size))
        if not config.history:  # images without history: one row per layer, as docker shows
            from builder.image.config import History

            entries = [(i, History(), store.diff_size(d) or 0) for i, d in enumerate(config.diff_ids)]
    finally:
        store.close()
    now = dt.datetime.now(dt.UTC)
    rows = []
    last = len(entries) - 1
    for index, entry, size in reversed(entries):
        image_id = _short(record.id, args.no_trunc) if index == last else "<missing>"
        created_by = (entry.created_by or "").replace("\t", " ")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append({
            "Comment": entry.comment or "",
            "CreatedAt": _rfc3339(entry.created),
            "CreatedBy": created_by,
            "CreatedSince": since(entry.created, now) if human else _rfc3339(entry.created),
            "ID": image_id,
            "Size": human_size(size) if human else str(size),
        })
    if args.quiet:
        print("\n".join(r["ID"] for r in rows))
        return 0
    columns = [("IMAGE", "ID"), ("CREATED", "CreatedSince"), ("CREATED BY", "CreatedBy"),
               ("SIZE", "Size"), ("COMMENT", "Comment"), ("CREATED AT", "CreatedAt")]
    if args.format and args.format.startswith("table "):
        emit(rows, args.format, columns)
    else:  # docker's default table; with -H=false its CREATED AT column replaces CREATED
        shown = columns[:-1] if human else [columns[0], columns[-1], *columns[2:-1]]
        emit(rows, args.format, shown)
    return 0


def _history_files(store: Store, name: str, human: bool, as_json: bool) -> int:
    """Per layer: what it adds, changes and deletes, and what later layers hide of it."""
    from builder.layers.changes import layer_changes

    image = store.image(name)
    config = image.config_file()
    created_by = {layer: entry.created_by or "" for entry, layer in config.layer_history() if layer is not None}
    layers = image.layers()
    report = layer_changes([layer.compressed for layer in layers])
    size = human_size if human else str
    total = len(report)
    for layer in report:
        diff_id = str(config.diff_ids[layer.index])
        if as_json:
            print(json.dumps({
                "Layer": layer.index + 1, "DiffID": diff_id, "CreatedBy": created_by.get(layer.index, ""),
                "Size": layer.size, "Added": layer.added, "Modified": layer.modified,
                "Deleted": layer.deleted, "OverwrittenBytes": layer.overwritten_bytes,
                "DeletedBytes": layer.deleted_bytes,
            }, separators=(",", ":"), ensure_ascii=False))
            continue
        print(f"LAYER {layer.index + 1}/{total}  {diff_id[7:19]}  {size(layer.size)}  "
              f"{created_by.get(layer.index, '')}".rstrip())
        print(f"  {len(layer.added)} added, {len(layer.modified)} modified, {len(layer.deleted)} deleted; "
              f"later layers overwrite {size(layer.overwritten_bytes)} and delete "
              f"{size(layer.deleted_bytes)} of it")
        for change in layer.changes:
            print(f"  {change.kind.value} /{change.path}" + (f"  {size(change.size)}" if change.size else ""))
    if not as_json and report:
        shipped = sum(layer.size for layer in report)
        wasted = sum(layer.wasted_bytes for layer in report)
        share = f" ({100 * wasted / shipped:.1f}%)" if shipped else ""
        print(f"TOTAL  {size(shipped)} in {total} layer(s); {size(wasted)}{share} "
              "overwritten or deleted by later layers")
    return 0


# --- tags, removal, maintenance --------------------------------------------------------------

def _tag(args: argparse.Namespace) -> int:
    store = _open_store()
    try:
        store.tag(args.source, args.target)
    finally:
        store.close()
    return 0


def _as_daemon_names(name: str) -> str:
    """A missing image as docker's daemon names it in rmi's error: ``nosuch`` is ``nosuch:latest``."""
    from builder.image.reference import Reference

    ref = Reference.try_parse(name)
    if ref is None or ref.digest is not None or ":" in name.rpartition("/")[2]:
        return name
    return f"{name}:latest"


def _rmi(args: argparse.Namespace) -> int:
    from builder.errors import ImageNotFoundError

    store = _open_store()
    failed: list[str] = []
    try:
        for name in args.images:
            try:
                for event in store.rmi(name, force=args.force):
                    print(event)
            except ImageNotFoundError:
                if not args.force:
                    failed.append(f"Error response from daemon: No such image: {_as_daemon_names(name)}")
            except PybuildError as err:
                failed.append(f"Error response from daemon: {err}")
    finally:
        store.close()
    if failed:
        print("\n".join(failed), file=sys.stderr)
        return 1
    return 0


def _prune(args: argparse.Namespace) -> int:
    keep = parse_size(args.keep_storage) if args.keep_storage else None
    if not args.force:
        what = "all untagged images, all snapshots and all unused blobs" if args.all else "all unused blobs and snapshots"
        sys.stderr.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    store = _open_store()
    try:
        from builder.runtime import recover

        recover(store.root / "run")  # first what killed builds left: mounts over snapshots, temp dirs
        report = store.prune(keep, remove_all=args.all)
    finally:
        store.close()
    if report.recovered:
        print(f"Recorded again {len(report.recovered)} whole image(s) whose records were lost "
              "(untagged: `pybuild tag ID NAME` names one again)")
        print()
    if report.images:
        print("Deleted Images:")
        for digest in report.images:
            print(f"deleted: {digest}")
        print()
    if report.blobs or report.snapshots:
        print(f"Deleted {len(report.blobs)} blob(s) and {len(report.snapshots)} snapshot(s)")
        print()
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0


def _store_check(args: argparse.Namespace) -> int:
    store = _open_store()
    try:
        report = store.check(repair=args.repair)
        for action in report.repaired:
            print(f"repaired: {action}")
        if args.repair and report.problems:
            report = store.check(repair=False)
    finally:
        store.close()
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"problem: {problem}")
    status = "clean" if report.clean else f"{len(report.problems)} problem(s)"
    print(f"checked {report.blobs_checked} blob(s), {report.snapshots_checked} snapshot(s): {status}")
    if not report.clean:
        hint = "" if args.repair else " (run `pybuild store check --repair`)"
        print(f"ERROR: the store has {len(report.problems)} problem(s){hint}", file=sys.stderr)
        return 1
    return 0
