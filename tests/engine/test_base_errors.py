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


def test_a_pulled_base_whose_layer_is_not_its_config_s_fails_before_any_step(builder: Builder,
                                                                            registry: str) -> None:
    """A pull checks blob digests; the layers' diff_ids are checked as the build unpacks them."""
    from builder.image.mutate import DerivedImage
    from builder.registry import push
    from tests.registry.images import make_image, make_layer, random_name

    honest = make_image(2, 1000, seed=random_name())
    evil = make_layer({"evil": b"not what the config says"})
    liar = type(evil)(evil.blob, honest.layers()[1].tar, evil.mediatype)
    ref = f"{registry}/{random_name('liar')}/app:1"
    push(DerivedImage([honest.layers()[0], liar], honest.config_file()), ref)
    ctx = builder.context({"Dockerfile": f"FROM {ref}\nRUN echo ran\n"})
    proc = builder.build(ctx, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert f"layer {honest.layers()[1].diff_id()} does not match the image config" in err
    assert "ran\n" not in proc.stdout.decode()
