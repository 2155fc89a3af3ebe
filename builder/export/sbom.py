"""An SPDX 2.3 SBOM of an image's file system, read from its package databases.

BuildKit makes its SBOM by running a scanner image (syft) over the result; pybuild runs no
image of that kind (and has no network to fetch one), so it lists what the package managers
recorded: dpkg's ``/var/lib/dpkg/status`` and apk's ``/lib/apk/db/installed``. Files no package
manager installed (a static binary, a pip install) are not listed: the document says so.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

SPDX_PREDICATE = "https://spdx.dev/Document"
DPKG_STATUS = "/var/lib/dpkg/status"
APK_INSTALLED = "/lib/apk/db/installed"


class FileReader(Protocol):
    def read_text(self, path: str) -> str | None: ...


@dataclass(frozen=True)
class Package:
    """One installed package as its manager recorded it."""

    kind: str  # deb | apk
    name: str
    version: str
    arch: str = ""
    supplier: str = ""
    license: str = ""
    source: str = ""

    def purl(self, distro: str) -> str:
        out = f"pkg:{self.kind}/{quote(distro or self.kind, safe='')}/{quote(self.name, safe='')}@{quote(self.version, safe='')}"
        qualifiers = [("arch", self.arch)] if self.arch else []
        if self.source and self.source != self.name:
            qualifiers.append(("upstream", self.source))
        if qualifiers:
            out += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in qualifiers)
        return out


def _paragraphs(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs (continuation lines folded away: only single-line fields are read)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if fields:
        yield fields


def dpkg_packages(text: str) -> list[Package]:
    out = []
    for p in _paragraphs(text):
        if not p.get("Status", "").endswith(" installed") or "Package" not in p:
            continue
        source = p.get("Source", "").split(" ")[0]
        out.append(Package("deb", p["Package"], p.get("Version", ""), p.get("Architecture", ""),
                           p.get("Maintainer", ""), source=source))
    return out


def apk_packages(text: str) -> list[Package]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                fields.setdefault(line[0], line[2:])
        if "P" in fields:
            out.append(Package("apk", fields["P"], fields.get("V", ""), fields.get("A", ""),
                               fields.get("m", ""), fields.get("L", ""), fields.get("o", "")))
    return out


def _os_release(rootfs: FileReader) -> str:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = rootfs.read_text(path)
        if text:
            for line in text.splitlines():
                if line.startswith("ID="):
                    return line[3:].strip().strip('"')
    return ""


def installed_packages(rootfs: FileReader) -> list[Package]:
    packages: list[Package] = []
    dpkg = rootfs.read_text(DPKG_STATUS)
    if dpkg:
        packages += dpkg_packages(dpkg)
    apk = rootfs.read_text(APK_INSTALLED)
    if apk:
        packages += apk_packages(apk)
    return packages


def spdx_document(rootfs: FileReader, name: str, created: datetime.datetime) -> dict[str, Any]:
    """The SPDX 2.3 JSON document of ``rootfs``'s installed packages."""
    distro = _os_release(rootfs)
    packages = []
    for pkg in installed_packages(rootfs):
        ident = hashlib.sha256(f"{pkg.kind}/{pkg.name}@{pkg.version}/{pkg.arch}".encode()).hexdigest()[:16]
        entry: dict[str, Any] = {
            "name": pkg.name,
            "SPDXID": f"SPDXRef-Package-{pkg.kind}-{_spdx_id(pkg.name)}-{ident}",
            "versionInfo": pkg.version,
            "supplier": f"Organization: {pkg.supplier}" if pkg.supplier else "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": pkg.purl(distro)}],
        }
        if pkg.license:  # apk's license field: kept as written, not claimed a valid SPDX expression
            entry["comment"] = f"license (as the package declares it): {pkg.license}"
        packages.append(entry)
    when = created.astimezone(datetime.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": f"urn:uuid:{uuid.uuid4()}",
        "creationInfo": {"created": when, "creators": ["Tool: pybuild"],
                         "comment": "packages recorded by dpkg and apk in the image's file system; "
                                    "files installed otherwise are not listed"},
        "packages": packages,
        "relationships": [{"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
                           "relatedSpdxElement": p["SPDXID"]} for p in packages],
    }


def _spdx_id(name: str) -> str:
    """SPDX IDs take letters, digits, ``.`` and ``-`` only."""
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in name)
