"""The bench harness's builders keep their bookkeeping per instance (a missing @dataclass once
left docker's image IDs a class-level ``Field`` and stopped ``make bench`` at its first reset)."""

from pathlib import Path

from bench.builders import all_builders


def test_each_builder_has_its_own_sets(tmp_path: Path) -> None:
    builders = all_builders(tmp_path)
    assert [b.name for b in builders] == ["pybuild", "docker", "buildah"]
    for b in builders:
        for value in vars(b).values():
            if isinstance(value, set):
                value.add("x")
    again = all_builders(tmp_path)
    for b in again:
        assert all(not v for v in vars(b).values() if isinstance(v, set))
    docker = again[1]
    assert isinstance(docker.image_ids, set) and isinstance(docker.built, set)
