"""RUN --mount=type=cache,from=STAGE,source=DIR: an empty cache starts as a copy of that directory."""

from tests.engine.conftest import Builder


def test_cache_mount_seeded_from_a_stage(builder: Builder) -> None:
    ctx = builder.context({"Dockerfile": (
        "FROM busybox:local AS seed\n"
        "RUN mkdir -p /pkgs && echo seeded > /pkgs/s.txt\n"
        "FROM busybox:local\n"
        "RUN --mount=type=cache,id=seed-test-1,target=/c,from=seed,source=/pkgs "
        "cat /c/s.txt > /got && echo more >> /c/s.txt\n"
    )})
    builder.build(ctx, "-t", "cache-from-seed:1")
    assert builder.run("cache-from-seed:1", "cat", "/got").stdout == b"seeded\n"
    # The cache now exists: a later build sees what the first one wrote, not a fresh seed.
    ctx2 = builder.context({"Dockerfile": (
        "FROM busybox:local AS seed\n"
        "RUN mkdir -p /pkgs && echo seeded > /pkgs/s.txt\n"
        "FROM busybox:local\n"
        "RUN --mount=type=cache,id=seed-test-1,target=/c,from=seed,source=/pkgs cat /c/s.txt > /got2\n"
    )}, name="ctx2")
    builder.build(ctx2, "-t", "cache-from-seed:2")
    assert builder.run("cache-from-seed:2", "cat", "/got2").stdout == b"seeded\nmore\n"
