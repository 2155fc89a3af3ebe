"""TLS for registries: system CAs plus docker's ``certs.d`` layout, and client certificates.

``/etc/docker/certs.d/HOST[:PORT]/`` (or ``$PYBUILD_CERTS_D``) holds ``*.crt``
CA certificates added to the system ones for that registry, and
``NAME.cert``/``NAME.key`` client certificate pairs, exactly as docker reads them.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from builder.errors import RegistryError

DEFAULT_CERTS_D = Path("/etc/docker/certs.d")


def certs_root() -> Path:
    env = os.environ.get("PYBUILD_CERTS_D")
    return Path(env) if env else DEFAULT_CERTS_D


@dataclass(frozen=True)
class RegistryTLS:
    """What certs.d says about one registry."""

    registry: str
    ca_files: tuple[Path, ...] = ()
    client_pairs: tuple[tuple[Path, Path], ...] = ()

    @classmethod
    def for_registry(cls, registry: str, root: Path | None = None) -> RegistryTLS:
        directory = (root or certs_root()) / registry
        if not directory.is_dir():
            return cls(registry)
        cas = tuple(sorted(directory.glob("*.crt")))
        pairs = []
        for cert in sorted(directory.glob("*.cert")):
            key = cert.with_suffix(".key")
            if not key.is_file():
                raise RegistryError(f"missing key {key.name} for client certificate {cert}")
            pairs.append((cert, key))
        for key in sorted(directory.glob("*.key")):
            if not key.with_suffix(".cert").is_file():
                raise RegistryError(f"missing client certificate {key.stem}.cert for key {key}")
        return cls(registry, cas, tuple(pairs))

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying context trusting the system CAs and this registry's extra ones."""
        context = ssl.create_default_context()
        try:
            for ca in self.ca_files:
                context.load_verify_locations(cafile=str(ca))
            for cert, key in self.client_pairs[:1]:
                context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as err:
            raise RegistryError(f"bad TLS certificate in certs.d for {self.registry}: {err}") from None
        return context
