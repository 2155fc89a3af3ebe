"""``pybuild search``: the catalog API and tag lists, or Docker Hub's search API for docker.io."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from builder.errors import AuthError, RegistryError, RemoteImageNotFoundError
from builder.image.reference import DOCKER_HUB
from builder.registry.client import Call, RegistryClient

HUB_SEARCH_URL = "https://index.docker.io/v1/search"


@dataclass(frozen=True)
class SearchResult:
    name: str
    tags: tuple[str, ...] = ()
    description: str = ""
    stars: int = 0
    official: bool = False


def search(client: RegistryClient, term: str, limit: int = 25, with_tags: bool = True) -> list[SearchResult]:
    """Repositories whose name contains ``term`` (case-insensitive), with their tags."""
    if client.registry == DOCKER_HUB:
        return search_hub(client, term, limit)
    needle = term.lower()
    results = []
    for repository in _catalog(client):
        if needle and needle not in repository.lower():
            continue
        tags: tuple[str, ...] = ()
        if with_tags:
            try:
                tags = tuple(sorted(client.tags(repository)))
            except (RemoteImageNotFoundError, AuthError):
                # The catalog lists repositories with no tag left (an interrupted push, deleted
                # tags: the registry answers 404) and ones this login may not read: the search
                # goes on and shows them without tags.
                tags = ()
        results.append(SearchResult(f"{client.registry}/{repository}", tags))
        if len(results) >= limit:
            break
    return results


def _catalog(client: RegistryClient) -> Iterator[str]:
    """The catalog's repositories; a registry without one (404) is named as such."""
    try:
        yield from client.catalog()
    except RemoteImageNotFoundError as err:
        answer = str(err).split(": GET catalog: ", 1)[-1]
        raise RegistryError(f"search {client.registry}: the registry offers no catalog to search "
                            f"(GET /v2/_catalog: {answer})") from None


def search_hub(client: RegistryClient, term: str, limit: int) -> list[SearchResult]:
    """Docker Hub's v1 search API (the registry API has no catalog there)."""
    call = Call("search", None, f"search {term!r}")
    response = client.request("GET", HUB_SEARCH_URL, call, scopes=(),
                              params={"q": term, "n": str(limit)})
    try:
        data = response.json()
    except ValueError:
        raise RegistryError(f"search {DOCKER_HUB}: invalid answer from the search API") from None
    return [
        SearchResult(r.get("name", ""), (), r.get("description") or "", int(r.get("star_count") or 0),
                     bool(r.get("is_official")))
        for r in (data.get("results") or [])[:limit]
    ]
