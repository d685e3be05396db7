"""The ``volumes=`` option of ``%%remote`` (``_options.parse``), and how a ``Volume``
travels into a cell (by name)."""

from __future__ import annotations

import pickle

import pytest

from remotecell.client.volume import Volume
from remotecell.contract.errors import ConfigError
from remotecell.contract.volumes import Mount
from remotecell.kernel_magics._options import OPTIONS, parse

weights, data = Volume("weights"), Volume("data")


def error(line: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse(line, {"weights": weights, "data": data})
    message = str(err.value)
    assert "\n" not in message, message
    return message


def test_volumes_are_mount_paths_to_volume_objects() -> None:
    ns = {"weights": weights, "data": data, "where": "/srv/data/"}
    options = parse('volumes={"/models": weights, where: data} timeout=5', ns)
    assert options.volumes == (Mount("/models", "weights"), Mount("/srv/data", "data"))
    assert parse("volumes={}", ns).volumes == ()
    assert parse("", ns).volumes == ()
    assert "volumes" in OPTIONS


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"/models": "weights"}', "expected volumes to mount: a dict of absolute paths"),
        ('["/models"]', "expected volumes to mount"),
        ("weights", "expected volumes to mount"),
        ('{"models": weights}', "'models' is not an absolute path"),
        ('{"/": weights}', "cannot be mounted at '/'"),
        ('{"/etc/models": weights}', "the runner needs /etc"),
        ('{"/models": weights, "/models/sub": data}', "'/models' and '/models/sub' collide"),
        ('{"/models": weights, "/models/": data}', "collide"),
        ('{"/a": weights, "/b": weights}', "volume 'weights' is mounted twice"),
        ("{1: weights}", "is not an absolute path"),
    ],
)
def test_bad_volumes_say_what_is_wrong_and_what_is_valid(value: str, message: str) -> None:
    text = error(f"volumes={value}")
    assert text.startswith(f"bad value for %%remote option volumes={value}")
    assert message in text


def test_a_volume_travels_by_name() -> None:
    copy = pickle.loads(pickle.dumps(weights))
    assert copy == weights and copy.name == "weights" and repr(copy) == "Volume('weights')"
    with pytest.raises(ConfigError, match="not a valid volume name"):
        Volume("../x")
