"""A FROM image that exists nowhere: one clear error naming the Dockerfile line, no traceback."""

from tests.engine.conftest import Builder


def test_missing_base_image_names_the_line(builder: Builder, registry: str) -> None:
    ctx = builder.context({"Dockerfile": f"# base\nFROM {registry}/nothing/here:1\nRUN true\n"})
    proc = builder.build(ctx, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert f"Dockerfile:2: base image {registry}/nothing/here:1 is not in the local store" in err
    assert "not found" in err
    assert f"FROM {registry}/nothing/here:1" in err  # the line is quoted
