"""What a user reads while a build runs: RUN output in plain logs, the tty view, the last lines."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.engine.conftest import BASE, Builder
from tests.helpers.screen import Terminal
from tests.helpers.tools import run_pybuild


def _step_lines(stderr: bytes, number: int) -> list[str]:
    """The output lines of step ``#number`` (its timestamp cut off), as a CI log shows them."""
    pattern = re.compile(rf"^#{number} \d+\.\d+ (.*)$")
    return [m.group(1) for line in stderr.decode().splitlines() if (m := pattern.match(line))]


def test_utf8_split_between_two_writes_stays_one_character(builder: Builder) -> None:
    """``é`` written as two halves (a chunk boundary) is ``é``, not two replacement characters;
    bytes that are not UTF-8 are replaced, and the build goes on."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\n"
                           'RUN printf "caf\\303"; sleep 0.3; printf "\\251 ok\\n"; printf "bad \\377 byte\\n"\n'})
    proc = builder.build(ctx, "--no-cache")
    assert _step_lines(proc.stderr, 2) == ["café ok", "bad \ufffd byte"]


def test_carriage_return_progress_bar_is_one_line_per_redraw(builder: Builder) -> None:
    """A ``\\r`` progress bar (curl, pip) shows each redraw as a line as it comes, not one giant
    line with raw ``\\r`` at the end; ``\\r\\n`` line ends are plain line ends."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\n"
                           "RUN for p in 0 50 100; do printf '\\r%s%%' $p; sleep 0.2; done; "
                           "printf '\\ndos line\\r\\n\\nafter blank\\n'\n"})
    proc = builder.build(ctx, "--no-cache")
    assert b"\r" not in proc.stderr
    assert _step_lines(proc.stderr, 2) == ["0%", "50%", "100%", "dos line", "", "after blank"]


def test_last_line_without_newline_is_in_the_log_and_the_error(builder: Builder) -> None:
    """A failing tool's last words often have no newline: they are in the plain log and in the
    error's last lines."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo first; printf 'fatal: no newline'; exit 2\n"})
    proc = builder.build(ctx, "--no-cache", check=False)
    assert proc.returncode == 1
    assert _step_lines(proc.stderr, 2) == ["first", "fatal: no newline"]
    block = proc.stderr.decode().split("\n------\n", 1)[1].split("\n------\n")[0].splitlines()
    assert [re.sub(r"^\d+\.\d+ ", "", line) for line in block[1:]] == ["first", "fatal: no newline"]


def test_a_canceled_steps_last_words_are_in_the_log(builder: Builder) -> None:
    """A stage stopped because another failed still shows what it had printed (no newline yet)."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE} AS a\nRUN printf 'working on it'; sleep 30\n"
                           f"FROM {BASE} AS b\nRUN sleep 3; exit 1\n"
                           f"FROM {BASE}\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n"})
    proc = builder.build(ctx, "--no-cache", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.decode().splitlines()
    said = next(i for i, line in enumerate(lines) if line.endswith(" working on it"))
    step = lines[said].split()[0]  # the stages start in either order: #2 or #4
    assert f"{step} CANCELED" in lines[said + 1:], lines


def test_step_log_is_clipped_at_buildkits_limit_but_the_error_shows_the_end(builder: Builder) -> None:
    """A step printing megabytes is clipped at BUILDKIT_STEP_LOG_MAX_SIZE (2 MiB) with BuildKit's
    message, quickly; the error still shows the real last lines; -1 prints everything."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\n"
                           "RUN yes 0123456789abcdef | head -c 8000000; "
                           "head -c 3000000 /dev/zero | tr '\\000' x; echo; echo the real error; exit 3\n"})
    proc = builder.build(ctx, "--no-cache", check=False, timeout=120)
    assert proc.returncode == 1
    lines = _step_lines(proc.stderr, 2)
    assert lines[-1] == "[output clipped, log limit 2MiB reached]"
    assert 2_000_000 < sum(len(line) + 1 for line in lines) <= 2 * 1024 * 1024 + 100
    assert re.search(r"^\d+\.\d+ the real error\n------\n", proc.stderr.decode(), re.M)

    small = builder.build(ctx, "--no-cache", check=False, env={"BUILDKIT_STEP_LOG_MAX_SIZE": "1024"})
    assert _step_lines(small.stderr, 2)[-1] == "[output clipped, log limit 1KiB reached]"

    ctx2 = builder.context({"Dockerfile": f"FROM {BASE}\n"
                            "RUN head -c 100000 /dev/zero | tr '\\000' y; echo; yes line | head -n 200000\n"},
                           name="ctx2")
    full = builder.build(ctx2, "--no-cache", env={"BUILDKIT_STEP_LOG_MAX_SIZE": "-1"})
    lines = _step_lines(full.stderr, 2)
    # a line with no end for 100,000 characters is cut in pieces, nothing lost
    assert "".join(lines[:-200000]) == "y" * 100000 and len(lines[0]) < 100000
    assert lines[-200000:] == ["line"] * 200000


def _tty_build(builder: Builder, ctx: Path, *args: str) -> tuple[int, str]:
    """``pybuild build --progress tty`` on a 100x24 pseudo-terminal (stdout and stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "PYBUILD_ROOT": str(builder.root)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "tty", *args, str(ctx)],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=120), out.decode(errors="replace")


def test_tty_view_keeps_step_output_tame_and_ends_before_the_image_id(builder: Builder) -> None:
    """In the tty view a step's ``\\r`` and colour codes do not move the cursor or colour the
    view, and the image ID comes on its own line once the view is closed."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\n"
                           "RUN printf 'one\\rtwo\\r'; sleep 0.3; printf '\\033[31mred\\033[0m\\n'; sleep 0.3\n"})
    code, raw = _tty_build(builder, ctx, "--no-cache", "-t", "progress-tty:1")
    assert code == 0, raw
    assert "\x1b[31m" not in raw and "one\rtwo" not in raw
    term = Terminal().feed(raw)
    assert any(" => => # red" in frame for frame in term.frames), term.frames
    image_id = builder.build(ctx, "-q", "-t", "progress-tty:1").stdout.decode().strip()
    screen = term.screen()
    assert screen[-1] == image_id  # alone on its line, after the view
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(3/3\) FINISHED", screen[0]), screen


def test_final_lines_say_where_each_output_went(builder: Builder, tmp_path: Path) -> None:
    """After the build, a line per -o output names where the result went, as BuildKit's
    "exporting to ..." steps do; the image ID stays last (stdout) and -q prints nothing else."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo made > /made\n"})
    oci, local = tmp_path / "img.tar", tmp_path / "files"
    proc = builder.build(ctx, "-o", f"type=oci,dest={oci}", "-o", f"type=local,dest={local}")
    err = proc.stderr.decode()
    assert re.search(rf"^exporting to oci image format {oci} done \(\d+\.\ds\)$", err, re.M), err
    assert re.search(rf"^exporting to client directory {local} done \(\d+\.\ds\)$", err, re.M), err
    to_stdout = builder.build(ctx, "-o", "type=tar,dest=-")
    assert re.search(r"^exporting to client tarball stdout done", to_stdout.stderr.decode(), re.M)
    quiet = builder.build(ctx, "-q", "-o", f"type=oci,dest={oci}")
    assert quiet.stderr == b"" and quiet.stdout.decode().startswith("sha256:")


def test_a_pull_by_from_and_a_push_show_their_blobs(builder: Builder, registry: str,
                                                            tmp_path: Path) -> None:
    """FROM pulling a base from a registry (and --push) said nothing until it was done; now the
    blobs are lines of the step (docker's words, BuildKit's sizes), and -q stays silent."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN head -c 300000 /dev/urandom > /blob\n"}, name="base")
    ref = f"{registry}/progress/base:1"
    pushed = builder.build(ctx, "-t", ref, "--push").stderr.decode().splitlines()
    # the push is a step of its own too: its blobs are its lines, not a silence
    assert "#4 pushing " + ref in pushed and "#4 DONE" in " ".join(pushed), pushed
    assert any(re.fullmatch(r"#4 [0-9a-f]{12}: Pushed \d+\.\d\d[kMG]B \d+\.\ds", line) for line in pushed), pushed
    app = builder.context({"Dockerfile": f"FROM {ref}\nRUN test -s /blob\n"}, name="app")
    fresh = tmp_path / "fresh-store"
    proc = run_pybuild("build", "--progress", "plain", str(app), root=fresh, check=True)
    lines = proc.stderr.decode().splitlines()
    assert lines[:2] == [f"#1 [1/2] FROM {ref}", "#1 1: Pulling from progress/base"], lines
    pulled = [line for line in lines if re.fullmatch(r"#1 [0-9a-f]{12}: Pull complete \d+\.\d\d[kMG]B \d+\.\ds", line)]
    assert len(pulled) == 2, lines
    assert any(line.startswith("#1 Digest: sha256:") for line in lines)
    again = run_pybuild("build", "--pull", "--progress", "plain", str(app), root=fresh, check=True)
    assert len(re.findall(r"^#1 [0-9a-f]{12}: Already exists$", again.stderr.decode(), re.M)) == 2
    quiet = run_pybuild("build", "-q", "--pull", str(app), root=tmp_path / "quiet-store", check=True)
    assert quiet.stderr == b""


def test_tty_clock_runs_while_a_step_prints_nothing(builder: Builder) -> None:
    """A silent step (a long compile, a sleep) does not freeze its timer in the tty view,
    which looked like a hang."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN sleep 3\n"})
    code, raw = _tty_build(builder, ctx, "--no-cache")
    assert code == 0, raw
    frames = Terminal().feed(raw).frames
    assert any(re.search(r"RUN sleep 3 +2\.\ds$", line) for frame in frames for line in frame), frames


def test_tty_view_is_one_view_when_a_cache_import_skips_stages(builder: Builder, tmp_path: Path) -> None:
    """With --cache-from, a build that finds stages it can skip recounts its steps: the view
    shows the new count in its one header, no second view under a stale first one."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE} AS a\nRUN echo a > /a\nFROM {BASE} AS b\nRUN echo b > /b\n"
                           f"FROM {BASE}\nCOPY --from=a /a /a\n"})
    cache = tmp_path / "cache"
    builder.build(ctx, "--cache-to", f"type=local,dest={cache},mode=max")
    code, raw = _tty_build(builder, ctx, "--cache-from", f"type=local,src={cache}")
    assert code == 0, raw
    screen = Terminal().feed(raw).screen()
    headers = [line for line in screen if line.startswith("[+] Building")]
    assert len(headers) == 1 and headers[0].endswith(" FINISHED"), screen
    assert any("CACHED [stage-2 2/2] COPY --from=a /a /a" in line for line in screen), screen


def test_tty_view_shows_parallel_stages_each_on_its_own_line(builder: Builder) -> None:
    """As BuildKit's view: every running step has its line and timer, with its last output
    lines under it, while finished ones take one line each; the last frame lists every step
    and the export, FINISHED."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE} AS a\n"
                           "RUN for i in 1 2 3 4 5 6 7 8; do echo a-line-$i; sleep 0.25; done\n"
                           f"FROM {BASE} AS b\n"
                           "RUN for i in 1 2 3 4 5 6 7 8; do echo b-line-$i; sleep 0.25; done\n"
                           f"FROM {BASE}\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\n"})
    code, raw = _tty_build(builder, ctx, "--no-cache", "-t", "progress-par:1")
    assert code == 0, raw
    term = Terminal().feed(raw)
    step = re.compile(r" => \[(a|b) 2/2\] RUN for i in .* +(\d+\.\d)s$")

    def both_running(frame: list[str]) -> bool:
        # a frame may end at a step's line (drawn before its first output line came)
        running = [i for i, line in enumerate(frame) if step.match(line) and i + 1 < len(frame)]
        return (len(running) == 2 and all(frame[i + 1].startswith(" => => # ") for i in running)
                and {frame[i + 1][9] for i in running} == {"a", "b"})

    assert any(both_running(frame) for frame in term.frames), term.frames
    for frame in term.frames:
        assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(\d+/\d+\)( FINISHED)?", frame[0]), frame
        assert all(len(line) < 100 for line in frame), frame  # no line wraps the 100 columns
    final = term.screen()
    assert final[0].endswith("(8/8) FINISHED"), final
    assert not any(line.startswith(" => => # ") for line in final), final  # collapsed
    steps = [line for line in final if line.startswith(" => [")]
    assert len(steps) == 7 and all(re.search(r" \d+\.\ds$", line) for line in steps), final
    assert any(line.startswith(" => exporting to image ") for line in final), final
    # a line longer than the terminal is cut, as BuildKit cuts it (the ID's end here)
    assert any(re.match(r" => => writing image sha256:[0-9a-f]{50}", line) for line in final), final
    assert any(line.startswith(" => => naming to docker.io/library/progress-par:1 done") for line in final), final


def test_tty_view_redraws_at_most_ten_times_a_second(builder: Builder) -> None:
    """A step printing 100,000 lines as fast as it can costs a frame per tick, not one a line:
    the terminal gets a few hundred kilobytes, and the step's last lines are on the screen."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN seq 1 100000; sleep 1\n"})
    started = time.monotonic()
    code, raw = _tty_build(builder, ctx, "--no-cache")
    seconds = time.monotonic() - started
    assert code == 0, raw
    frames = raw.count("\x1b[?25h")
    assert frames <= seconds / 0.1 + 5, (frames, seconds)
    assert len(raw) < 1_000_000, len(raw)
    tails = [frame for frame in Terminal().feed(raw).frames if " => => # 100000" in frame]
    assert tails, "the step's last line was never shown"


def test_progress_none_prints_errors_only(builder: Builder) -> None:
    """buildx's ``--progress none`` (or BUILDKIT_PROGRESS=none): nothing but errors, not even
    the image ID that ``quiet`` prints."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo hidden\n"})
    shown = builder.build(ctx, "--progress", "none", "--no-cache")
    assert (shown.stdout, shown.stderr) == (b"", b"")
    from_env = run_pybuild("build", str(ctx), root=builder.root, env={"BUILDKIT_PROGRESS": "none"}, check=True)
    assert (from_env.stdout, from_env.stderr) == (b"", b"")
    bad = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo why; exit 4\n"}, name="bad")
    failed = builder.build(bad, "--progress", "none", check=False)
    assert failed.returncode == 1 and failed.stdout == b""
    shown = failed.stderr.decode()
    assert shown.startswith("------\n > [2/2] RUN echo why; exit 4:\n") and " why\n------\n" in shown
    assert shown.endswith('ERROR: failed to solve: process "/bin/sh -c echo why; exit 4" did not complete '
                          "successfully: exit code: 4\n")


def _events(stderr: bytes) -> list[dict]:
    """The rawjson events: every line of stderr is one JSON object, up to a failure's report."""
    lines = stderr.decode().splitlines()
    if "------" in lines:
        lines = lines[:lines.index("------")]
    return [json.loads(line) for line in lines]


def test_rawjson_is_buildkits_solve_status_one_object_a_line(builder: Builder) -> None:
    """``--progress rawjson`` (buildx's) prints BuildKit's SolveStatus events, which a tool
    reads line by line: each step a vertex (started, then completed, cached or with its
    error), its output as base64 logs, Go's RFC 3339 times; the image ID stays on stdout."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo out-line; echo second\nRUN exit 3\n"})
    failed = builder.build(ctx, "--no-cache", "--progress", "rawjson", check=False)
    assert failed.returncode == 1
    events = _events(failed.stderr)
    assert events and all(set(e) <= {"vertexes", "statuses", "logs", "warnings"} for e in events), events
    vertexes = [v for e in events for v in e.get("vertexes", [])]
    by_name: dict[str, list[dict]] = {}
    for v in vertexes:
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", v["digest"]), v
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", v["started"]), v
        by_name.setdefault(v["name"], []).append(v)
    run = by_name["[2/3] RUN echo out-line; echo second"]
    assert len(run) == 2 and "completed" not in run[0] and run[1]["completed"] >= run[1]["started"]
    logs = b"".join(base64.b64decode(log["data"]) for e in events for log in e.get("logs", [])
                    if log["vertex"] == run[0]["digest"])
    assert logs == b"out-line\nsecond\n"
    bad = by_name["[3/3] RUN exit 3"][-1]
    assert "exit 3" in bad["error"] and bad["completed"]
    assert failed.stderr.decode().splitlines()[-1].startswith("ERROR: failed to solve: process ")

    ok = builder.context({"Dockerfile": f"FROM {BASE}\nRUN echo cached-one > /c\n"}, name="ok")
    builder.build(ok)
    again = builder.build(ok, "--progress", "rawjson", "-t", "progress-json:1")
    done = [v for e in _events(again.stderr) for v in e.get("vertexes", []) if "completed" in v]
    assert {"name": "[2/2] RUN echo cached-one > /c", "cached": True}.items() <= done[1].items()
    statuses = [s for e in _events(again.stderr) for s in e.get("statuses", [])]
    assert any(s["id"] == "naming to docker.io/library/progress-json:1 done" for s in statuses), statuses
    assert again.stdout.decode().startswith("sha256:")


def test_copy_from_a_registry_image_shows_its_pull(builder: Builder, registry: str, tmp_path: Path) -> None:
    """``COPY --from=<image>`` pulling an image said nothing while it downloaded: the step now
    shows its blobs as FROM's pull does, in plain lines and in the tty view."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE}\nRUN head -c 400000 /dev/urandom > /blob\n"}, name="src")
    ref = f"{registry}/progress/copy-src:1"
    builder.build(ctx, "-t", ref, "--push")
    app = builder.context({"Dockerfile": f"FROM scratch\nCOPY --from={ref} /blob /blob\n"}, name="app")
    plain = run_pybuild("build", "--progress", "plain", str(app), root=tmp_path / "plain", check=True)
    lines = plain.stderr.decode().splitlines()
    start = lines.index(f"#1 [1/1] COPY --from={ref} /blob /blob")  # FROM scratch is no step
    pulled = [line for line in lines[start:] if re.fullmatch(r"#1 [0-9a-f]{12}: Pull complete \d+\.\d\d[kMG]B "
                                                              r"\d+\.\ds", line)]
    assert len(pulled) == 2, lines  # busybox's layer and the blob's
    assert any(line.startswith("#1 Digest: sha256:") for line in lines), lines

    fresh = Builder(tmp_path / "tty", tmp_path)
    code, raw = _tty_build(fresh, app)
    assert code == 0, raw
    screen = Terminal().feed(raw).screen()
    step = screen.index(next(line for line in screen if f"[1/1] COPY --from={ref}" in line))
    blobs = [line for line in screen[step:] if re.match(r" => => [0-9a-f]{12} Pull complete +\d", line)]
    assert len(blobs) == 2, screen
    assert all(re.search(r"(\d+\.\d\d[kM]B) / \1 +\d+\.\ds$", line) for line in blobs), screen


def test_steps_are_named_and_numbered_as_buildkit_does(builder: Builder) -> None:
    """As BuildKit names its vertexes: only FROM (of an image), RUN, COPY, ADD and WORKDIR are
    steps (ENV, LABEL, ... none); a FROM on a stage or scratch is none; the stage name only
    in a Dockerfile of several stages; the number padded to the total's width; the image by
    its full name; a blank line between two steps' lines."""
    ctx = builder.context({"Dockerfile": f"FROM {BASE} AS build\nENV X=1\nWORKDIR /src\nRUN echo built > /out\n"
                           "FROM scratch AS empty\nCOPY --from=build /out /out\n"
                           "FROM build\nLABEL a=b\nRUN echo child\n"})
    lines = builder.build(ctx, "--no-cache").stderr.decode().splitlines()
    headers = [line for line in lines if re.match(r"#\d+ (\[|exporting)", line)]
    assert headers[:4] == [f"#1 [build 1/3] FROM docker.io/library/{BASE}", "#2 [build 2/3] WORKDIR /src",
                           "#3 [build 3/3] RUN echo built > /out", "#4 [stage-2 1/1] RUN echo child"], lines
    assert headers[4:] == ["#5 exporting to image"], lines
    assert lines[lines.index("#2 [build 2/3] WORKDIR /src") - 1] == "", lines
    many = builder.context({"Dockerfile": f"FROM {BASE}\n" + "".join(f"RUN echo {i}\n" for i in range(10))},
                           name="many")
    lines = builder.build(many, "--no-cache").stderr.decode().splitlines()
    assert f"#1 [ 1/11] FROM docker.io/library/{BASE}" in lines and "#11 [11/11] RUN echo 9" in lines, lines
