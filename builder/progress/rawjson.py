"""``--progress rawjson``: BuildKit's ``SolveStatus`` events, one JSON object a line.

Each line is one event as buildx prints it (``client.SolveStatus`` marshalled by Go's
encoding/json), with the fields pybuild has:

- ``vertexes``: ``digest``, ``name`` (``[build 2/5] RUN make``), ``started``; when the step
  ends, again with ``completed`` and ``cached`` (a cache hit) or ``error`` (a canceled step's
  ends with ``context canceled``, as BuildKit's). The digest is unique in the build but is
  not an LLB digest: pybuild has no LLB.
- ``statuses``: a step's transfers (``id``: the blob's short digest; ``name``: what happens,
  ``Downloading``, ``Pull complete``; ``total``, ``current`` bytes, ``timestamp``, ``started``,
  ``completed``) and its notes (``Digest: sha256:...``, started and completed at once).
- ``logs``: a step's output as it came, ``data`` base64, ``stream`` 1, up to
  ``BUILDKIT_STEP_LOG_MAX_SIZE`` then BuildKit's ``[output clipped ...]`` line.
- ``warnings``: ``level`` 1 (0: a note), ``short`` base64, with no vertex.

Times are RFC 3339 in UTC with nanoseconds' places, as Go writes them. Not sent:
``inputs`` (the graph's edges) and ``progressGroup``.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.progress import StepHandle, StepStatus


def timestamp(wall: float) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros cut: ``2024-05-01T10:00:00.12345Z``."""
    whole = int(wall)
    nanos = round((wall - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def encode(event: dict[str, object]) -> str:
    """One line: compact JSON, as Go's encoder (which ends each value with a newline)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"


def vertex(handle: StepHandle, offset: float) -> dict[str, object]:
    """The step as a vertex; ``offset``: monotonic to wall clock."""
    item: dict[str, object] = {"digest": handle.digest, "name": handle.label,
                               "started": timestamp(handle.started + offset)}
    if handle.finished is not None:
        item["completed"] = timestamp(handle.finished + offset)
        if handle.state.value == "cached":
            item["cached"] = True
        if handle.error:
            item["error"] = handle.error
    return {"vertexes": [item]}


def status(handle: StepHandle, status: StepStatus, offset: float) -> dict[str, object]:
    item: dict[str, object] = {"id": status.id, "vertex": handle.digest}
    if status.label:
        item["name"] = status.label
    if status.total:
        item["total"] = status.total
    item["current"] = status.current
    item["timestamp"] = timestamp(time.monotonic() + offset)
    item["started"] = timestamp(status.started + offset)
    if status.completed is not None:
        item["completed"] = timestamp(status.completed + offset)
    return {"statuses": [item]}


def log(handle: StepHandle, data: bytes, offset: float) -> dict[str, object]:
    return {"logs": [{"vertex": handle.digest, "stream": 1, "data": base64.b64encode(data).decode(),
                      "timestamp": timestamp(time.monotonic() + offset)}]}


def warning(text: str, level: int = 1) -> dict[str, object]:
    item: dict[str, object] = {"short": base64.b64encode(text.encode()).decode()}
    if level:
        item["level"] = level
    return {"warnings": [item]}
