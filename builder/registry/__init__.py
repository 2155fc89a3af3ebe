"""The registry client: pull and push over the OCI distribution API.

``pull(ref, store, platform)`` is the one entry point the build engine's
``FROM`` uses; ``push(image, ref)`` the one ``--push`` uses. Both create a
:class:`RegistryClient` for the reference's registry unless given one.
"""

from builder.registry.client import ClientOptions, RegistryClient, RetryPolicy
from builder.registry.remote import PullResult, PushResult, RemoteImage, pull, push, resolve

__all__ = ["ClientOptions", "PullResult", "PushResult", "RegistryClient", "RemoteImage",
           "RetryPolicy", "pull", "push", "resolve"]
