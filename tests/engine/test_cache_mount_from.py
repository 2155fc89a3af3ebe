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


def test_seeded_cache_keeps_the_stage_owners_and_a_private_copy_its_settings(builder: Builder) -> None:
    """The seed is BuildKit's snapshot of the directory: owners, modes and links as in the stage.
    A sharing=private mount that another step holds gets a new cache made the same way (uid,
    gid, mode), so a USER step can write to it, not a root-owned 0700 scratch directory."""
    import uuid

    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": (
        "FROM busybox:local AS seed\n"
        "RUN mkdir -p /s/sub && echo x > /s/sub/f && chown -R 123:456 /s && chmod 750 /s/sub "
        "&& ln -s sub/f /s/link && chown -h 77:88 /s/link\n"
        "FROM busybox:local AS holder\n"
        f"RUN --mount=type=cache,id=private-{marker},target=/c,sharing=private,uid=1000,mode=0700 "
        "touch /c/held && sleep 4\n"
        "FROM busybox:local AS user\n"
        "RUN sleep 1.5\n"  # the holder has the cache by then
        "USER app\n"
        f"RUN --mount=type=cache,id=private-{marker},target=/c,sharing=private,uid=1000,mode=0700 "
        "stat -c '%u %a' /c > /tmp/private && touch /c/mine && ls /c >> /tmp/private\n"
        "FROM busybox:local\n"
        f"RUN --mount=type=cache,id=seeded-{marker},target=/c,from=seed,source=/s "
        "stat -c '%n %u:%g %a' /c /c/sub /c/sub/f > /seeded && stat -c '%n %u:%g' /c/link >> /seeded\n"
        "COPY --from=holder /etc/passwd /holder-done\n"
        "COPY --from=user /tmp/private /private\n"
    )}, "seed-owners")
    builder.build(ctx, "--jobs", "3", "-t", "cache-from-seed:owners")
    out = builder.run("cache-from-seed:owners", "cat", "/seeded", "/private").stdout.decode().splitlines()
    assert out[:4] == ["/c 123:456 755", "/c/sub 123:456 750", "/c/sub/f 123:456 644", "/c/link 77:88"], out
    assert out[4:] == ["1000 700", "mine"], out  # the holder's cache is not this one: no "held"
