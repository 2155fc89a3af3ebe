"""``pybuild cache ls|du|prune``: the build cache's entries, what it costs, and removing it."""

from __future__ import annotations

import argparse
import json
import sys
import time

ORDER = 70


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("cache", parents=[common], help="inspect and prune the build cache")
    sub = p.add_subparsers(dest="cache_command", metavar="COMMAND")
    ls = sub.add_parser("ls", parents=[common], help="list cache entries (steps and cache mounts), most recently used first")
    ls.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    ls.add_argument("--no-trunc", action="store_true", help="show full keys")
    ls.set_defaults(func=_ls)
    du = sub.add_parser("du", parents=[common], help="show the disk space the build cache uses")
    du.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    du.set_defaults(func=_du)
    pr = sub.add_parser("prune", parents=[common],
                        help="remove build cache (records, their layers no image uses, cache mounts, git checkouts)")
    pr.add_argument("-a", "--all", action="store_true", help="remove all build cache (the default)")
    pr.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    pr.add_argument("--keep-storage", metavar="SIZE",
                    help="remove least recently used cache until the store uses at most SIZE")
    pr.set_defaults(func=_prune)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _store():
    from cache.store import Store

    return Store()


def _ago(t: float) -> str:
    from builder.cli.images import human_duration

    return human_duration(max(0.0, time.time() - t)) + " ago"


def _ls(args: argparse.Namespace) -> int:
    from builder.cli.images import human_size
    from cache.usage import entries

    store = _store()
    try:
        found = entries(store)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps([e.to_json() for e in found], indent=2))
        return 0
    rows = [("KEY", "SIZE", "LAST USED", "INSTRUCTION")]
    for e in found:
        key = e.key if args.no_trunc else e.key.removeprefix("sha256:")[:12]
        if e.type == "cache mount":
            size = human_size(e.size or 0)
        elif e.diff_id is None:
            size = "0B"
        elif not e.held:
            size = "(pruned)"
        else:
            size = human_size(e.size or 0) + (" (image)" if e.in_image else "")
        text = f"[{e.stage}] {e.instruction}" if e.stage else e.instruction
        text = text if args.no_trunc or len(text) <= 70 else text[:67] + "..."
        rows.append((key, size, _ago(e.last_used), text))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "   " + r[3])
    return 0


def _du(args: argparse.Namespace) -> int:
    from builder.cli.images import human_size
    from cache.usage import usage

    store = _store()
    try:
        u = usage(store)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps({
            "records": u.records, "metadata": u.metadata, "layers": u.layers, "layer_bytes": u.layer_bytes,
            "shared_with_images": u.shared_bytes, "cache_mounts": len(u.mounts),
            "cache_mount_bytes": u.mount_bytes, "git_checkouts": len(u.checkouts),
            "git_checkout_bytes": u.checkout_bytes, "total": u.total, "reclaimable": u.reclaimable,
        }, indent=2))
        return 0
    lines = [
        ("Cache records:", f"{u.records}", human_size(u.metadata)),
        ("Layers:", f"{u.layers}", human_size(u.layer_bytes)
         + (f" ({human_size(u.shared_bytes)} also in images)" if u.shared_bytes else "")),
        ("Cache mounts:", f"{len(u.mounts)}", human_size(u.mount_bytes)),
        ("Git checkouts:", f"{len(u.checkouts)}", human_size(u.checkout_bytes)),
        ("Total:", "", human_size(u.total)),
        ("Reclaimable:", "", human_size(u.reclaimable)),
    ]
    for label, count, size in lines:
        print(f"{label:<15}{count:>8}   {size}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from builder.cli.images import human_size, parse_size
    from cache.usage import prune_cache

    keep = parse_size(args.keep_storage) if args.keep_storage else None
    if not args.force:
        sys.stderr.write("WARNING! This will remove build cache (images are kept).\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    store = _store()
    try:
        report = prune_cache(store, keep)
    finally:
        store.close()
    print(f"Deleted {report.records} cache record(s), {report.mounts} cache mount(s), "
          f"{report.checkouts} git checkout(s), {report.blobs} blob(s)")
    print(f"Total reclaimed space: {human_size(report.reclaimed)}")
    return 0
