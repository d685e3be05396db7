"""Volumes with the docker executor, through a real kernel: runners in containers see
a directory-store volume through a bind mount, and a ``memory://`` volume as a synced
copy; a file written in one container is read in another."""

from __future__ import annotations

import secrets

import pytest
from docker_engine import require_engine

pytestmark = pytest.mark.kernel

WRITE = (
    "import os\n"
    "os.makedirs('/models/llama', exist_ok=True)\n"
    "open('/models/llama/config.json', 'w').write('written in ' + os.uname().nodename)\n"
    "writer = (os.path.exists('/.dockerenv'), open('/proc/self/cgroup').read())"
)
READ = (
    "import os\n"
    "reader = (os.path.exists('/.dockerenv'), open('/proc/self/cgroup').read())\n"
    "open('/models/llama/config.json').read().startswith('written in ')"
)


@pytest.fixture(params=["directory", "memory"])
def docker_plane(request, make_control_plane):
    engine = require_engine()
    engine.close()
    args = ["--executor", "docker", "--cancel-grace", "2"]
    if request.param == "memory":
        args += ["--volume-store", f"memory://docker-{secrets.token_hex(4)}"]
    return make_control_plane(*args)


def test_a_file_written_in_one_container_is_read_in_another(make_kernel, docker_plane):
    kernel = make_kernel(docker_plane.env())
    kernel.ok("%load_ext remotecell")
    kernel.ok(
        "import remotecell\nvol = remotecell.Volume.from_name('models', create_if_missing=True)"
    )
    kernel.ok(f'%%remote session="w" volumes={{"/models": vol}}\n{WRITE}', timeout=600)
    run = kernel.ok(f'%%remote session="r" volumes={{"/models": vol}}\n{READ}', timeout=300)
    assert run.result == {"text/plain": "True"}
    writer_in_container, writer_cgroup = kernel.value("writer")
    reader_in_container, reader_cgroup = kernel.value("reader")
    assert writer_in_container and reader_in_container
    assert writer_cgroup != reader_cgroup  # two containers
    assert kernel.value("vol.read_file('/llama/config.json')").startswith(b"written in ")
    # and the other way: a file put from the notebook shows in a running runner's next cell
    kernel.ok("vol.put_file(b'from the notebook', '/notes.txt')")
    run = kernel.ok(
        '%%remote session="w" volumes={"/models": vol} pull=[]\nopen("/models/notes.txt").read()'
    )
    assert run.result == {"text/plain": "'from the notebook'"}
