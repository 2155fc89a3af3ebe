"""A terminal for the process (``pybuild run -t``), with the owner under a controlling terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers.leftovers import ISOLATIONS, assert_nothing_left
from tests.helpers.tools import REPO

TERMINAL_OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from builder.runtime import ContainerSpec, ProcessSpec, detect

    isolation, work_root, lower, upper = sys.argv[1:]
    runtime = detect(isolation, work_root=Path(work_root))
    spec = ContainerSpec([Path(lower)], Path(upper),
                         ProcessSpec(("sh", "-c", "tty; echo err >&2; exit 3"), terminal=True))
    code = runtime.run(spec, stdout=sys.stdout.buffer.write, stdin=sys.stdin.buffer)
    sys.stdout.buffer.flush()
    print(f"EXIT {{code}}")
""")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_terminal_under_a_controlling_terminal(isolation, tmp_path, busybox_rootfs):
    """``pybuild run -t`` as from a shell: util-linux script(1) gives the owner a terminal."""
    script = tmp_path / "owner.py"
    script.write_text(TERMINAL_OWNER.format(repo=str(REPO)))
    command = (f"{sys.executable} {script} {isolation} {tmp_path / 'run'}"
               f" {busybox_rootfs} {tmp_path / 'upper'}")
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    # runc and crun leave a NUL on the terminal, which it echoes as ^@
    lines = proc.stdout.decode().replace("\r", "").replace("^@", "").splitlines()
    assert lines == ["/dev/pts/0", "err", "EXIT 3"], proc.stdout  # one terminal: no stderr pipe
    assert_nothing_left(tmp_path / "run", "no-such-process-marker")
