"""``RUN --device`` with CDI specs (JSON and YAML) in a directory of the test (``--cdi-spec-dir``).

What a device brings reaches the step under runc, crun and chroot: environment,
device nodes (host /dev/null and /dev/zero under new names), a read-only bind
mount; hooks run under the OCI runtimes. BuildKit's rules: a device must be
allowed (``--allow device`` or the autoallow annotation), a missing required
device fails the step, a missing optional one is skipped with a warning.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import Builder

SPEC_YAML = """\
cdiVersion: "0.6.0"
kind: "vendor1.com/device"
containerEdits:
  env:
  - COMMON=yes
devices:
- name: foo
  containerEdits:
    env:
    - FOO=injected
    deviceNodes:
    - path: /dev/pybuild-null
      hostPath: /dev/null
    - path: /dev/sub/zero
      hostPath: /dev/zero
    mounts:
    - hostPath: {hostfile}
      containerPath: /opt/cdi/file
      options: [ro, bind]
annotations:
  org.mobyproject.buildkit.device.autoallow: true
"""


@pytest.fixture
def cdi_dir(tmp_path: Path) -> Path:
    specs = tmp_path / "cdi"
    specs.mkdir()
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("from the host\n")
    (specs / "vendor1.yaml").write_text(SPEC_YAML.format(hostfile=hostfile))
    hook_out = tmp_path / "hook-ran"
    (specs / "vendor2.json").write_text(json.dumps({
        "cdiVersion": "0.6.0", "kind": "vendor2.com/gpu",
        "devices": [{"name": "bar", "containerEdits": {"env": ["BAR=1"]}},
                    {"name": "hooked", "containerEdits": {"hooks": [
                        {"hookName": "createRuntime", "path": "/bin/sh",
                         "args": ["sh", "-c", f"cat > {hook_out}"]}]}}],
    }))
    return specs


def test_device_edits_reach_the_step(builder: Builder, cdi_dir: Path) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           "RUN --device=vendor1.com/device=foo (env | grep -E '^(FOO|COMMON)=' | sort; "
                           "echo x > /dev/pybuild-null && echo null-ok; head -c 4 /dev/sub/zero | wc -c; "
                           f"cat /opt/cdi/file; ls -l /dev/pybuild-null | cut -c1) > /out # {uuid.uuid4().hex}\n"
                           "RUN --device=vendor2.com/gpu env | grep BAR > /bar\n"
                           "RUN --device=vendor3.com/absent echo ran > /absent\n"}, "devices")
    for isolation in ("runc", "crun", "chroot"):
        p = builder.build(ctx, "--no-cache", "--isolation", isolation, "--allow", "device",
                          "--cdi-spec-dir", str(cdi_dir), "-t", f"cli-devices:{isolation}")
        assert b"optional device vendor3.com/absent is not on this machine" in p.stderr
        out = builder.run(f"cli-devices:{isolation}", "sh", "-c", "cat /out /bar /absent; ls /opt 2>&1; true")
        assert out.stdout.decode().splitlines() == [
            "COMMON=yes", "FOO=injected", "null-ok", "4", "from the host", "c", "BAR=1", "ran",
            "ls: /opt: No such file or directory"], isolation


def test_device_rules_as_buildkit(builder: Builder, cdi_dir: Path) -> None:
    not_allowed = builder.context({"Dockerfile": "FROM busybox:local\nRUN --device=vendor2.com/gpu=bar true\n"},
                                  "device-not-allowed")
    p = builder.build(not_allowed, "--cdi-spec-dir", str(cdi_dir), check=False)
    assert p.returncode == 1 and b"Dockerfile:2: device vendor2.com/gpu=bar is requested by the build but not " \
        b"allowed" in p.stderr
    required = builder.context({"Dockerfile": "FROM busybox:local\nRUN --device=vendor9.com/x=y,required true\n"},
                               "device-required")
    p = builder.build(required, "--cdi-spec-dir", str(cdi_dir), check=False)
    assert p.returncode == 1 and b"device vendor9.com/x=y is requested but no CDI spec describes it" in p.stderr
    assert b"Traceback" not in p.stderr


def test_device_hooks_run_under_oci_runtimes_only(builder: Builder, cdi_dir: Path, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN --device=vendor2.com/gpu=hooked true "
                           f"# {uuid.uuid4().hex}\n"}, "device-hooks")
    for isolation in ("runc", "crun"):
        (tmp_path / "hook-ran").unlink(missing_ok=True)
        builder.build(ctx, "--no-cache", "--isolation", isolation, "--allow", "device", "--cdi-spec-dir", str(cdi_dir))
        state = json.loads((tmp_path / "hook-ran").read_text())  # the OCI state the runtime hands the hook
        assert state["status"] in ("creating", "created") and state["id"].startswith("pybuild-"), isolation
    p = builder.build(ctx, "--no-cache", "--isolation", "chroot", "--allow", "device",
                      "--cdi-spec-dir", str(cdi_dir), check=False)
    assert p.returncode != 0 and b"--isolation runc or crun" in p.stderr and b"Traceback" not in p.stderr


def test_an_unreadable_spec_is_named_when_its_device_is_missing(builder: Builder, cdi_dir: Path) -> None:
    (cdi_dir / "broken.yaml").write_text("kind: [not, a, kind\n")
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN --device=vendor1.com/device=foo true\n"
                           "RUN --device=broken.com/x,required=true true\n"}, "device-broken")
    p = builder.build(ctx, "--cdi-spec-dir", str(cdi_dir), check=False)
    assert p.returncode == 1 and b"Dockerfile:3" in p.stderr and b"broken.yaml: cannot read it" in p.stderr
    assert b"Traceback" not in p.stderr
