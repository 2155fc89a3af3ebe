"""USER resolution: docker's rules from the image's passwd and group, checked against docker itself."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest

from builder.errors import UserNotFoundError
from builder.runtime import ContainerSpec, ExecUser, ProcessSpec, detect, resolve_user
from tests.helpers.tools import docker_tag

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
dup:x:1000:7:first entry wins:/dup:/bin/sh
nohome:x:1001:1001:::/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:root
wheel:x:10:root,app
app:x:1000:
staff:x:50:app,nohome
nogroup:x:65534:
"""


@pytest.mark.parametrize(("spec", "expected"), [
    ("", ExecUser(0, 0, (0, 10), "/root")),
    ("root", ExecUser(0, 0, (0, 10), "/root")),
    ("app", ExecUser(1000, 1000, (10, 50), "/home/app")),
    ("1000", ExecUser(1000, 1000, (10, 50), "/home/app")),  # first passwd match wins
    ("app:staff", ExecUser(1000, 50, (), "/home/app")),
    ("app:50", ExecUser(1000, 50, (), "/home/app")),
    ("app:999", ExecUser(1000, 999, (), "/home/app")),
    ("nohome", ExecUser(1001, 1001, (50,), "")),  # docker gives an empty HOME
    ("4242", ExecUser(4242, 0, (), "/")),
    ("4242:staff", ExecUser(4242, 50, (), "/")),
    ("4242:4343", ExecUser(4242, 4343, (), "/")),
])
def test_docker_rules(spec, expected):
    assert resolve_user(spec, PASSWD, GROUP) == expected


def test_without_passwd_or_group_files():
    assert resolve_user("", None, None) == ExecUser(0, 0, (), "/")
    assert resolve_user("123:456", None, None) == ExecUser(123, 456, (), "/")
    with pytest.raises(UserNotFoundError, match=r"^unable to find user app: no matching entries in passwd file$"):
        resolve_user("app", None, None)


@pytest.mark.parametrize(("spec", "message"), [
    ("ghost", "unable to find user ghost: no matching entries in passwd file"),
    ("app:ghosts", "unable to find group ghosts: no matching entries in group file"),
    ("-1", "uids and gids must be in range 0-2147483647"),
    ("1:2147483648", "uids and gids must be in range 0-2147483647"),
])
def test_errors(spec, message):
    with pytest.raises(UserNotFoundError) as info:
        resolve_user(spec, PASSWD, GROUP)
    assert str(info.value) == message


@pytest.fixture(scope="module")
def docker_image(docker, busybox_rootfs):
    """The busybox rootfs with the passwd and group above, imported into docker."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(busybox_rootfs, arcname=".",
                filter=lambda info: None if info.name in ("./etc/passwd", "./etc/group") else info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    tag = docker_tag("pybuild-test/runtime-users")
    subprocess.run([docker, "import", "-", tag], input=buf.getvalue(), check=True, capture_output=True)
    yield tag
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


COMMAND = 'echo $(id -u) $(id -g) $(id -G) "$HOME"'


@pytest.mark.docker
def test_same_identity_as_docker_run(docker, docker_image, busybox_rootfs, tmp_path):
    etc = tmp_path / "etc-layer" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    runtime = detect("auto", work_root=tmp_path / "run")
    for n, spec in enumerate(("", "app", "1000", "app:staff", "nohome", "4242", "4242:staff", "ghost")):
        ref = subprocess.run([docker, "run", "--rm", "--network", "none", "-u", spec, docker_image,
                              "sh", "-c", COMMAND], capture_output=True, text=True)
        chunks: list[bytes] = []
        try:
            runtime.run(ContainerSpec([busybox_rootfs, etc.parent], tmp_path / f"u{n}",
                                      ProcessSpec(("sh", "-c", COMMAND), user=spec)), stdout=chunks.append)
        except UserNotFoundError as err:
            assert ref.returncode != 0 and str(err) in ref.stderr, (spec, ref.stderr)
            continue
        assert b"".join(chunks).decode() == ref.stdout, spec
