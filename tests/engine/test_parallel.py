"""Independent stages run at once (issue 4's figure), and a failing stage stops its siblings."""

from __future__ import annotations

import time
import uuid

from tests.engine.conftest import Builder

FOUR_SLEEPERS = "".join(
    f"FROM busybox:local AS s{i}\nRUN sleep 2 && echo {i} > /out{i}  # {{marker}}\n" for i in range(4)
) + "FROM busybox:local\n" + "".join(f"COPY --from=s{i} /out{i} /out{i}\n" for i in range(4))


def test_four_sleeping_stages_take_one_sleep(builder: Builder) -> None:
    """Issue 4: four independent stages that each sleep 2 s finish in under 4 s of wall time.

    A timed assertion because the issue demands this figure; measured around the
    whole CLI call (interpreter start and imports, context, four containers, the
    final stage). The machine is shared and noisy (DESIGN.md): the best of up to
    two fresh builds counts, each with new instructions so that nothing is cached.
    """
    times = []
    for attempt in range(2):
        ctx = builder.context({"Dockerfile": FOUR_SLEEPERS.replace("{marker}", uuid.uuid4().hex)},
                              f"ctx{attempt}")
        started = time.monotonic()
        builder.build(ctx, "--no-cache", "--jobs", "4", "-t", "parallel:1")
        times.append(time.monotonic() - started)
        if times[-1] < 4.0:
            break
    figures = ", ".join(f"{t:.2f}" for t in times)
    print(f"four 2 s stages, --jobs 4: {figures} s")  # the figure, with pytest -s
    assert min(times) < 4.0, f"four 2 s stages took {figures} s with --jobs 4"
    out = builder.run("parallel:1", "cat", "/out0", "/out1", "/out2", "/out3")
    assert out.stdout == b"0\n1\n2\n3\n"


def test_jobs_one_runs_them_one_after_another(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": FOUR_SLEEPERS.replace("sleep 2", "sleep 0.5").replace(
        "{marker}", uuid.uuid4().hex)})
    started = time.monotonic()
    builder.build(ctx, "--no-cache", "--jobs", "1")
    assert time.monotonic() - started > 2.0


def test_failing_stage_stops_the_others(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": f"FROM busybox:local AS slow\nRUN sleep 60 # {uuid.uuid4().hex}\n"
                           "FROM busybox:local AS bad\nRUN sleep 0.5; exit 4\n"
                           "FROM busybox:local\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n"})
    started = time.monotonic()
    p = builder.build(ctx, "--no-cache", "--jobs", "2", check=False)
    err = p.stderr.decode()
    assert p.returncode == 1 and "exit code: 4" in err and "Traceback" not in err
    assert time.monotonic() - started < 30, "the sibling's sleep 60 should have been stopped"


def test_a_stage_waiting_for_a_job_does_not_start_after_a_failure(builder: Builder) -> None:
    """With --jobs 1 the second stage waits for the first; when the first fails, the second never
    starts (no FROM resolved or pulled, no step), as BuildKit cancels what has not run."""
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": f"FROM busybox:local AS bad\nRUN exit 4 # {marker}\n"
                           f"FROM busybox:local AS later\nRUN echo later-{marker}\n"
                           "FROM busybox:local\nCOPY --from=bad /etc/passwd /a\nCOPY --from=later /etc/passwd /b\n"},
                          "queued")
    p = builder.build(ctx, "--no-cache", "--jobs", "1", check=False)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1 and "exit code: 4" in out and "Traceback" not in out, out
    assert "[later " not in out, out
