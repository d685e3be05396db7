"""A mount (``contract.volumes.Mount``): through the wire and back, and its one check."""

from __future__ import annotations

import pytest

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import Mount, check_mounts


def test_a_mount_round_trips_through_the_wire() -> None:
    mount = Mount("/models", "weights", "v-1")
    wire = pb.JobSpec(volumes=[mount.to_proto()])
    arrived = pb.JobSpec.FromString(wire.SerializeToString())
    assert [Mount.from_proto(m) for m in arrived.volumes] == [mount]
    assert Mount.from_proto(pb.VolumeMount(path="/data", name="d")) == Mount("/data", "d")


def test_the_check_normalises_sorts_by_path_and_keeps_the_volume_id() -> None:
    checked = check_mounts([Mount("/models/", "weights", "v-1"), Mount("/data//x", "data")])
    assert checked == (Mount("/data/x", "data"), Mount("/models", "weights", "v-1"))


@pytest.mark.parametrize(
    ("mounts", "sentence"),
    [
        (
            [Mount("/models", "a"), Mount("/models/llama", "b")],
            "volume mount paths '/models' and '/models/llama' collide (one is in the other, "
            "or they are the same); give each volume a directory of its own",
        ),
        (
            [Mount("/models", "a"), Mount("/data", "a")],
            "volume 'a' is mounted twice ('/models' and '/data'); mount it once",
        ),
        (
            [Mount("models", "a")],
            "volume mount path 'models' is not an absolute path: give one such as '/models'",
        ),
    ],
)
def test_a_bad_mount_gets_the_same_sentence_as_typed_or_off_the_wire(
    mounts: list[Mount], sentence: str
) -> None:
    with pytest.raises(ConfigError) as typed:
        check_mounts(mounts)
    wire = [m.to_proto() for m in mounts]
    with pytest.raises(ConfigError) as off_the_wire:
        check_mounts(Mount.from_proto(m) for m in wire)
    assert str(typed.value) == str(off_the_wire.value) == sentence
