"""Reference parsing against distribution/reference's normalisation cases."""

from __future__ import annotations

import pytest

from builder.errors import InvalidReferenceError, UsageError
from builder.image.reference import Reference, is_loopback_host

DIGEST = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"

VALID = [
    "docker/docker", "library/debian", "debian", "localhost/library/debian", "localhost/debian",
    "LOCAL.DOMAIN/library/debian", "LOCAL.DOMAIN/debian", "docker.io/docker/docker",
    "docker.io/library/debian", "docker.io/debian", "index.docker.io/docker/docker",
    "index.docker.io/library/debian", "index.docker.io/debian", "127.0.0.1:5000/docker/docker",
    "127.0.0.1:5000/library/debian", "127.0.0.1:5000/debian", "192.168.0.1", "192.168.0.1:80",
    "192.168.0.1:8/debian", "192.168.0.2:25000/debian",
    "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
    "[fc00::1]:5000/docker", "[fc00::1]:5000/docker/docker",
    "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
    "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "docker-rules/docker", "docker---rules/docker",
    "doc/docker", "d/docker", "jess/t", "dock__er/docker",
]

INVALID = [
    "https://github.com/docker/docker", "docker/Docker", "-docker", "-docker/docker",
    "-docker.io/docker/docker", "docker///docker", "docker.io/docker/Docker",
    "docker.io/docker///docker", "[fc00::1]", "[fc00::1]:5000", "fc00::1:5000/debian",
    "[fe80::1%eth0]:5000/debian", "[2001:db8:3:4::192.0.2.33]:5000/debian",
    "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
    "docker-/docker", "-docker-/docker", "____/____", "_docker/_docker", "dock..er/docker",
    "dock_.er/docker", "dock-.er/docker", "docker/", "", " ", "$$$", "::",
    "docker://quay.io/library/foo:bar", "busybox:-tag", "busybox:" + "a" * 129,
    "busybox@sha256:abc", "a/" * 130 + "b",
]


@pytest.mark.parametrize("text", VALID)
def test_valid_names_parse(text: str) -> None:
    ref = Reference.parse(text)
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("text", INVALID)
def test_invalid_names_are_a_usage_error(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as err:
        Reference.parse(text)
    assert isinstance(err.value, UsageError)
    assert "invalid" in str(err.value)


# (remote name, familiar name, full name, ambiguous spelling, domain) from normalize_test.go
REPOSITORY_INFO = [
    ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
    ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
    ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", None, "docker.io"),
    ("other/library", "other/library", "docker.io/other/library", None, "docker.io"),
    ("private/moonbase", "127.0.0.1:8000/private/moonbase", "127.0.0.1:8000/private/moonbase", None,
     "127.0.0.1:8000"),
    ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", None, "127.0.0.1:8000"),
    ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", None,
     "example.com"),
    ("privatebase", "example.com:8000/privatebase", "example.com:8000/privatebase", None,
     "example.com:8000"),
    ("library/ubuntu-12.04-base", "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base",
     "index.docker.io/library/ubuntu-12.04-base", "docker.io"),
    ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
    ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", None, "docker.io"),
    ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", None, "docker.io"),
    ("bar", "Fo.o/bar", "Fo.o/bar", None, "Fo.o"),
    ("bar", "FOO:5000/bar", "FOO:5000/bar", None, "FOO:5000"),
]


@pytest.mark.parametrize(("remote", "familiar", "full", "ambiguous", "domain"), REPOSITORY_INFO)
def test_repository_info(remote: str, familiar: str, full: str, ambiguous: str | None,
                         domain: str) -> None:
    for text in filter(None, (familiar, full, ambiguous)):
        ref = Reference.parse(text)
        assert ref.registry == domain
        assert ref.repository == remote
        assert ref.name == full
        assert ref.familiar_name == familiar
        assert ref.tag == "latest"


@pytest.mark.parametrize(("text", "domain", "path"), [
    ("test.com/foo", "test.com", "foo"),
    ("test_com/foo", "docker.io", "test_com/foo"),
    ("docker/migrator", "docker.io", "docker/migrator"),
    ("test.com:8080/foo", "test.com:8080", "foo"),
    ("test-com:8080/foo", "test-com:8080", "foo"),
    ("foo", "docker.io", "library/foo"),
    ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
    ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
    ("docker.io/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo", "docker.io", "library/foo"),
    ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
    ("localhost/foo", "localhost", "foo"),
    ("192.168.0.1:80", "docker.io", "library/192.168.0.1"),
])
def test_split_hostname(text: str, domain: str, path: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository) == (domain, path)


def test_tag_and_digest_are_both_kept() -> None:
    ref = Reference.parse(f"busybox:latest@{DIGEST}")
    assert str(ref) == f"docker.io/library/busybox:latest@{DIGEST}"
    assert ref.familiar == f"busybox:latest@{DIGEST}"
    assert ref.tag == "latest" and ref.digest == DIGEST
    assert ref.identifier == DIGEST


def test_digest_only_has_no_tag() -> None:
    ref = Reference.parse(f"redis@{DIGEST}")
    assert ref.tag is None
    assert str(ref) == f"docker.io/library/redis@{DIGEST}"
    assert ref.familiar == f"redis@{DIGEST}"


def test_defaults_and_display_forms() -> None:
    ref = Reference.parse("busybox")
    assert str(ref) == "docker.io/library/busybox:latest"
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar == "busybox:latest"
    assert ref.api_host == "registry-1.docker.io"
    assert ref.identifier == "latest"
    assert Reference.parse("myhost:5000/app:1").familiar == "myhost:5000/app:1"
    assert Reference.parse("myhost:5000/app:1").api_host == "myhost:5000"
    assert Reference.parse("user/app:v1.2_3").familiar == "user/app:v1.2_3"


def test_with_tag_and_with_digest() -> None:
    ref = Reference.parse("127.0.0.1:5000/app:1")
    assert str(ref.with_tag("2")) == "127.0.0.1:5000/app:2"
    pinned = ref.with_digest(DIGEST)
    assert str(pinned) == f"127.0.0.1:5000/app:1@{DIGEST}"
    assert pinned.with_tag("3").digest is None
    with pytest.raises(InvalidReferenceError, match="invalid tag format"):
        ref.with_tag("-foo")
    with pytest.raises(InvalidReferenceError, match="invalid digest format"):
        ref.with_digest("foo")


def test_uppercase_message_is_docker_s() -> None:
    with pytest.raises(InvalidReferenceError) as err:
        Reference.parse("docker.io/docker/Docker")
    assert str(err.value) == "invalid reference format: repository name (docker/Docker) must be lowercase"


@pytest.mark.parametrize("text", ["Foo/bar", "FOO/bar", "MyOrg/app:1", "MyOrg/team/app", "LOCALDOMAIN/debian",
                                  "Docker/docker", "DOCKER/docker"])
def test_upper_case_first_element_without_dot_or_port_is_refused_as_docker_refuses_it(text: str) -> None:
    """distribution's grammar reads `MyOrg/app` as registry `MyOrg`; docker's daemon (tag,
    build -t, FROM, pull, inspect) says the name must be lowercase: a typo, not a host."""
    with pytest.raises(InvalidReferenceError) as err:
        Reference.parse(text)
    assert str(err.value) == "invalid reference format: repository name must be lowercase"


def test_hex_identifier_is_refused_with_docker_s_message() -> None:
    with pytest.raises(InvalidReferenceError, match="cannot specify 64-byte hexadecimal strings"):
        Reference.parse("a" * 64)


def test_only_sha256_digests() -> None:
    with pytest.raises(InvalidReferenceError, match="only sha256"):
        Reference.parse("busybox@sha512:" + "a" * 128)


@pytest.mark.parametrize(("registry", "loopback"), [
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost", True), ("localhost:443", True),
    ("[::1]:5000", True), ("[::1]", True), ("docker.io", False), ("10.0.0.1:5000", False),
    ("example.com", False), ("127.0.0.1.example.com", False), ("[fc00::1]:5000", False),
])
def test_is_loopback(registry: str, loopback: bool) -> None:
    assert is_loopback_host(registry) is loopback
    assert Reference.parse(f"{registry}/app").is_loopback is loopback


def test_references_are_hashable_values() -> None:
    assert Reference.parse("busybox") == Reference.parse("docker.io/library/busybox:latest")
    assert len({Reference.parse("busybox"), Reference.parse("index.docker.io/busybox")}) == 1
