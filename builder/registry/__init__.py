"""The registry client: pull and push over the OCI distribution API.

``pull(ref, store, platform)`` is the one entry point the build engine's
``FROM`` uses; ``push(image, ref)`` the one ``--push`` uses. Both create a
:class:`RegistryClient` for the reference's registry unless given one.

The client and its HTTP stack (requests, urllib3, ssl) load on first use: a
build that reads only credentials or proxies (:mod:`builder.registry.auth`)
never talks to a registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from builder.registry.client import ClientOptions, RegistryClient, RetryPolicy
    from builder.registry.remote import PullResult, PushResult, RemoteImage, pull, push, resolve

_MODULES = {
    "ClientOptions": "client", "RegistryClient": "client", "RetryPolicy": "client",
    "PullResult": "remote", "PushResult": "remote", "RemoteImage": "remote",
    "pull": "remote", "push": "remote", "resolve": "remote",
}

__all__ = ["ClientOptions", "PullResult", "PushResult", "RegistryClient", "RemoteImage",
           "RetryPolicy", "pull", "push", "resolve"]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
