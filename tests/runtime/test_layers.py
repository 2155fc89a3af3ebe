"""Overlay root file systems: 150 lower dirs in order, and a real Debian base with apt and dpkg."""

from __future__ import annotations

import os
import stat

import pytest

from tests.runtime.conftest import tree


@pytest.fixture(scope="module")
def many_layers(tmp_path_factory, busybox_rootfs):
    """busybox plus 149 layers; layer i writes /layers/i and overwrites /layers/top."""
    root = tmp_path_factory.mktemp("layers")
    lowers = [busybox_rootfs]
    for i in range(1, 150):
        # long directory names, as a store's snapshot paths are: together far beyond one page
        layer = root / f"snapshot-{i:03d}-{'x' * 64}" / "fs"
        (layer / "layers").mkdir(parents=True)
        (layer / "layers" / str(i)).write_text(str(i))
        (layer / "layers" / "top").write_text(str(i))
        lowers.append(layer)
    return lowers


def test_150_lower_dirs(run, many_layers):
    assert len(many_layers) == 150
    assert sum(len(str(p)) + 1 for p in many_layers) > 4096
    result = run("ls /layers | wc -l; cat /layers/top; echo; cat /layers/1; echo; rm /layers/7", lowers=many_layers)
    assert result.text.split() == ["150", "149", "1"]
    assert tree(result.upper) == ["layers", "layers/7"]  # a whiteout, and nothing else


def test_debian_bookworm_base(run, bookworm_rootfs):
    result = run("apt-get --version | head -1; dpkg -l | head -6 | tail -1 | cut -c1-3; id -nu _apt",
                 lowers=[bookworm_rootfs])
    assert result.code == 0, result.text
    apt, status, user = result.text.splitlines()
    assert apt.startswith("apt ")
    assert status == "ii "
    assert user == "_apt"
    assert tree(result.upper) == []


# clone(SIGCHLD | CLONE_NEWUSER) and keyctl(KEYCTL_GET_KEYRING_ID, session), by their
# numbers on this machine (a machine missing here fails the test: add its numbers)
SYSCALL_NUMBERS = {"x86_64": {"clone": 56, "keyctl": 250}, "aarch64": {"clone": 220, "keyctl": 219}}
SECCOMP_PROBE = r"""
unshare --user true; echo "unshare $?"
perl -e '$r = syscall({clone}, 0x10000011, 0, 0, 0, 0); exit 0 if $r == 0; print "clone $r $!\n"'
perl -e '$r = syscall({keyctl}, 0, -3); print "keyctl $r $!\n"'
seq 200000 | sort --parallel=4 -S 1M | tail -1
"""


def test_seccomp_refuses_what_docker_s_default_profile_refuses(run, bookworm_rootfs):
    """User namespaces, namespace clones and the (not namespaced) keyring are refused with EPERM;
    threads still start: clone3 answers ENOSYS and glibc falls back to clone."""
    probe = SECCOMP_PROBE.format(**SYSCALL_NUMBERS[os.uname().machine])
    result = run(probe, lowers=[bookworm_rootfs], user="nobody")
    assert result.text.splitlines() == [
        "unshare: unshare failed: Operation not permitted", "unshare 1",
        "clone -1 Operation not permitted", "keyctl -1 Operation not permitted", "99999",
    ], result.text


def test_debian_user_by_name(run, bookworm_rootfs):
    result = run('id; echo "$HOME"', lowers=[bookworm_rootfs], user="nobody")
    assert result.text == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n/nonexistent\n"


def test_whiteouts_and_opaque_dirs_in_lower_dirs_hide_what_is_below(run, busybox_rootfs, tmp_path):
    """Store snapshots keep deletions as overlay does: 0/0 character devices and opaque dirs."""
    base = tmp_path / "base"
    (base / "data" / "old").mkdir(parents=True)
    (base / "data" / "old" / "f").write_text("old")
    (base / "data" / "keep").write_text("keep")
    (base / "gone").write_text("gone")
    top = tmp_path / "top"
    (top / "data" / "old").mkdir(parents=True)
    os.setxattr(top / "data" / "old", "trusted.overlay.opaque", b"y")
    (top / "data" / "old" / "new").write_text("new")
    os.mknod(top / "gone", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    result = run("ls /data; ls /data/old; test -e /gone || echo no-gone", lowers=[busybox_rootfs, base, top])
    assert result.text.split() == ["keep", "old", "new", "no-gone"]
    assert tree(result.upper) == []


def test_renaming_a_lower_dir_copies_it_into_the_layer(run, busybox_rootfs, tmp_path):
    """redirect_dir is off: a rename leaves a whiteout and a full copy, which a tar layer can hold."""
    base = tmp_path / "base"
    (base / "dir" / "a" / "sub").mkdir(parents=True)
    (base / "dir" / "a" / "sub" / "file").write_text("content")
    result = run("mv /dir/a /dir/b && cat /dir/b/sub/file", lowers=[busybox_rootfs, base])
    assert result.text == "content"
    assert tree(result.upper) == ["dir", "dir/a", "dir/b", "dir/b/sub", "dir/b/sub/file"]
    assert stat.S_ISCHR(os.lstat(result.upper / "dir" / "a").st_mode)
    assert (result.upper / "dir" / "b" / "sub" / "file").read_text() == "content"
    for path in (result.upper / "dir" / "b", result.upper / "dir" / "b" / "sub"):
        assert "trusted.overlay.redirect" not in os.listxattr(path)


def test_metadata_change_copies_the_whole_file(run, busybox_rootfs):
    """metacopy is off: a chown or chmod puts the file's data in the layer, not just its inode."""
    result = run("chown 1000:1000 /bin/busybox && chmod 700 /bin/busybox")
    assert result.code == 0, result.text
    copied = result.upper / "bin" / "busybox"
    assert copied.read_bytes() == (busybox_rootfs / "bin" / "busybox").read_bytes()
    assert (copied.stat().st_uid, stat.S_IMODE(copied.stat().st_mode)) == (1000, 0o700)
    assert "trusted.overlay.metacopy" not in os.listxattr(copied)
