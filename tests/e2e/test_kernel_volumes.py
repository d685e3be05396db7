"""Volumes through a real Jupyter kernel, with the local executor: written in one cell,
read on another runner; a ``memory://`` store synced with commit and reload between two
running runners; path traversal; bad input."""

from __future__ import annotations

import contextlib
import os
import secrets

import pytest

pytestmark = pytest.mark.kernel


@pytest.fixture
def mount_point():
    """A mount path of this test's own. Local runners create it on the host (a bind
    mount needs a directory there); it is removed, empty, afterwards."""
    path = f"/mnt/remotecell-test-{secrets.token_hex(4)}"
    yield path
    with contextlib.suppress(OSError):
        os.rmdir(path)


@pytest.fixture
def second_mount():
    path = f"/mnt/remotecell-test-{secrets.token_hex(4)}"
    yield path
    with contextlib.suppress(OSError):
        os.rmdir(path)


def test_a_file_written_in_one_cell_is_read_on_another_runner(kernel, mount_point):
    kernel.ok(
        "import remotecell\nweights = remotecell.Volume.from_name('weights', create_if_missing=True)"
    )
    kernel.ok(
        f'%%remote volumes={{"{mount_point}": weights}} session="writer"\n'
        "import os\n"
        f"os.makedirs('{mount_point}/llama', exist_ok=True)\n"
        f"open('{mount_point}/llama/config.json', 'w').write('{{\"layers\": 32}}')\n"
        "writer_pid = os.getpid()"
    )
    # another session is another runner, started after the write
    run = kernel.ok(
        f'%%remote volumes={{"{mount_point}": weights}} session="reader"\n'
        "import os, json\n"
        "reader_pid = os.getpid()\n"
        f"json.load(open('{mount_point}/llama/config.json'))"
    )
    assert run.result == {"text/plain": "{'layers': 32}"}
    assert kernel.value("writer_pid") != kernel.value("reader_pid")
    # the notebook reads and writes the same volume
    assert kernel.value("[e.path for e in weights.listdir('/')]") == ["llama"]
    assert kernel.value("weights.read_file('/llama/config.json')") == b'{"layers": 32}'
    kernel.ok("weights.put_file(b'from the notebook', '/notes.txt')")
    run = kernel.ok(
        f'%%remote volumes={{"{mount_point}": weights}} pull=[]\n'
        f"open('{mount_point}/notes.txt').read()"
    )
    assert run.result == {"text/plain": "'from the notebook'"}
    kernel.ok("weights.remove('/llama', recursive=True)")
    assert kernel.value("[e.path for e in weights.listdir('/', recursive=True)]") == ["notes.txt"]
    # the mount is the runner's alone: the host's directory stays empty
    assert os.listdir(mount_point) == []


def test_symlinks_out_of_a_volume_and_dotdot_are_refused(kernel, mount_point):
    kernel.ok(
        "import remotecell\nvol = remotecell.Volume.from_name('links', create_if_missing=True)"
    )
    kernel.ok(
        f'%%remote volumes={{"{mount_point}": vol}} pull=[]\n'
        "import os\n"
        f"os.symlink('/etc', '{mount_point}/etc-link')\n"
        f"os.symlink('/etc/hostname', '{mount_point}/hostname-link')\n"
        f"open('{mount_point}/ok.txt', 'w').write('ok')"
    )
    for call in [
        "vol.read_file('etc-link/hostname')",
        "vol.read_file('hostname-link')",
        "vol.put_file(b'planted', 'etc-link/remotecell-planted')",
    ]:
        run = kernel.execute(call)
        assert run.error["ename"] == "ConfigError", call
        assert "symlink that points out of the volume" in run.error["evalue"]
    assert not os.path.exists("/etc/remotecell-planted")
    assert kernel.value("[e.path for e in vol.listdir('/')]") == ["ok.txt"]
    for call in ["vol.read_file('../../etc/passwd')", "vol.put_file(b'x', '/../escape')"]:
        run = kernel.execute(call)
        assert run.error["ename"] == "ConfigError", call
        assert "'..' would leave the volume" in run.error["evalue"]


def test_bad_volumes_are_refused_before_the_cell_runs(kernel, mount_point, second_mount):
    run = kernel.execute("import remotecell\nremotecell.Volume.from_name('never-made')")
    assert run.error["ename"] == "VolumeNotFoundError"
    assert (
        "create it with remotecell.Volume.from_name('never-made', create_if_missing=True)"
        in (run.error["evalue"])
    )
    run = kernel.execute("remotecell.Volume.from_name('no spaces', create_if_missing=True)")
    assert run.error["ename"] == "ConfigError" and "not a valid volume name" in run.error["evalue"]
    kernel.ok(
        "a = remotecell.Volume.from_name('a', create_if_missing=True)\n"
        "b = remotecell.Volume.from_name('b', create_if_missing=True)"
    )
    bad = {
        f'{{"{mount_point}": a, "{mount_point}/inner": b}}': "collide",
        f'{{"{mount_point}": a, "{second_mount}": a}}': "volume 'a' is mounted twice",
        '{"models": a}': "not an absolute path",
        '{"/": a}': "cannot be mounted at '/'",
        '{"/usr/share/models": a}': "the runner needs /usr",
        '{"/models": "a"}': "a dict of absolute paths to remotecell.Volume",
    }
    for value, message in bad.items():
        run = kernel.execute(f"%%remote volumes={value}\nprint('ran')")
        assert run.error["ename"] == "ConfigError", value
        assert message in run.error["evalue"], (value, run.error["evalue"])
        assert run.error["evalue"].startswith("bad value for %%remote option volumes=")
        assert "ran" not in run.stdout
    # the control plane checks too: here a volume deleted after it was looked up
    kernel.ok("remotecell.Volume.delete('b')")
    run = kernel.execute(f'%%remote volumes={{"{mount_point}": b}}\nprint("ran")')
    assert run.error["ename"] == "ConfigError"
    assert "no volume 'b': create it with" in run.error["evalue"]
    assert "ran" not in run.stdout
    # a session's runner keeps its volumes
    kernel.ok(f'%%remote session="s" volumes={{"{mount_point}": a}} pull=[]\n1')
    run = kernel.execute('%%remote session="s"\nprint("ran")')
    assert run.error["ename"] == "ConfigError"
    assert f"session 's' runs with volumes {mount_point}=a" in run.error["evalue"]
    assert "ran" not in run.stdout
    run = kernel.execute("a.read_file('/missing.txt')")
    assert run.error["ename"] == "VolumeFileNotFoundError"
    assert "no file or directory '/missing.txt' in volume 'a'" in run.error["evalue"]
    assert kernel.value("isinstance(__import__('sys').last_value, FileNotFoundError)") is True
    # nor may a mount hide what the runner needs: here the code it runs
    import remotecell

    source = os.path.dirname(os.path.dirname(os.path.abspath(remotecell.__file__)))
    run = kernel.execute(f'%%remote volumes={{"{source}": a}}\nprint("ran")')
    assert run.error["ename"] == "ConfigError"
    assert "it would hide" in run.error["evalue"] or "the runner needs" in run.error["evalue"]
    assert "ran" not in run.stdout


# -- a remote store: memory:// -----------------------------------------------------------


@pytest.fixture
def memory_kernel(make_control_plane, make_kernel):
    cp = make_control_plane(
        "--volume-store", f"memory://kernel-{secrets.token_hex(4)}", "--cancel-grace", "2"
    )
    kernel = make_kernel(cp.env())
    kernel.ok("%load_ext remotecell")
    kernel.ok(
        "import remotecell\n"
        "vol = remotecell.Volume.from_name('shared', create_if_missing=True)\n"
        "sig = remotecell.Volume.from_name('signals', create_if_missing=True)"
    )
    return kernel


WAIT_FOR = """
def wait_for(path, volume, timeout=30):
    import os, time
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert time.time() < deadline, f"{path} never came"
        time.sleep(0.05)
        volume.reload()
"""


def test_commit_and_reload_between_two_running_runners(memory_kernel, mount_point, second_mount):
    kernel = memory_kernel
    mounts = f'volumes={{"{mount_point}": vol, "{second_mount}": sig}}'
    kernel.ok(WAIT_FOR)
    for session in ("a", "b"):  # two runners, both started before anything is written
        kernel.ok(f'%%remote session="{session}" {mounts} pull=[]\nimport os')
    # b runs on its own, waiting for a's commit; it says it started through `sig`
    run = kernel.ok(
        f'%%remote session="b" {mounts} detach=True pull=["seen", "b_pid"]\n'
        f"open('{second_mount}/b-started', 'w').write('')\n"
        "sig.commit()\n"
        f"wait_for('{mount_point}/from-a.txt', vol)\n"
        f"seen = open('{mount_point}/from-a.txt').read()\n"
        "b_pid = os.getpid()"
    )
    assert run.result["text/plain"].startswith("<RemoteJob")
    kernel.ok("job_b = _")
    kernel.ok(
        f'%%remote session="a" {mounts} pull=["a_pid"]\n'
        f"wait_for('{second_mount}/b-started', sig)\n"
        f"open('{mount_point}/from-a.txt', 'w').write('hello from a')\n"
        "vol.commit()\n"
        "a_pid = os.getpid()"
    )
    kernel.ok("job_b.result()", timeout=60)
    assert kernel.value("seen") == "hello from a"
    assert kernel.value("a_pid") != kernel.value("b_pid")
    assert kernel.value("vol.read_file('from-a.txt')") == b"hello from a"
    # in the notebook, commit and reload have nothing to do
    kernel.ok("vol.commit(); vol.reload()")
    # a cell that does not mount a volume cannot commit it
    run = kernel.execute(f'%%remote volumes={{"{mount_point}": vol}}\nsig.commit()')
    assert run.error["ename"] == "ConfigError"
    assert "volume 'signals' is not mounted in this cell" in run.error["evalue"]


def test_concurrent_writers_the_last_commit_wins_per_file(memory_kernel, mount_point, second_mount):
    kernel = memory_kernel
    mounts = f'volumes={{"{mount_point}": vol, "{second_mount}": sig}}'
    data, signals = mount_point, second_mount
    kernel.ok(WAIT_FOR)
    for session in ("a", "b"):
        kernel.ok(f'%%remote session="{session}" {mounts} pull=[]\nimport os')
    # b changes `same.txt` first but commits last (when its cell ends)
    kernel.ok(
        f'%%remote session="b" {mounts} detach=True pull=["b_after_reload", "b_saw_only_a"]\n'
        f"open('{data}/same.txt', 'w').write('B')\n"
        f"open('{data}/only-b.txt', 'w').write('b')\n"
        f"open('{signals}/b-wrote', 'w').write('')\n"
        "sig.commit()\n"
        f"wait_for('{signals}/a-committed', sig)\n"
        "vol.reload()  # brings in a's commit, keeps b's uncommitted change\n"
        f"b_after_reload = open('{data}/same.txt').read()\n"
        f"b_saw_only_a = os.path.exists('{data}/only-a.txt')"
    )
    kernel.ok("job_b = _")
    kernel.ok(
        f'%%remote session="a" {mounts} pull=[]\n'
        f"wait_for('{signals}/b-wrote', sig)\n"
        f"open('{data}/same.txt', 'w').write('A')\n"
        f"open('{data}/only-a.txt', 'w').write('a')\n"
        "vol.commit()\n"
        f"open('{signals}/a-committed', 'w').write('')\n"
        "sig.commit()"
    )
    kernel.ok("job_b.result()", timeout=60)
    assert kernel.value("b_after_reload") == "B"
    assert kernel.value("b_saw_only_a") is True
    assert kernel.value("vol.read_file('same.txt')") == b"B"
    assert kernel.value("sorted(e.path for e in vol.listdir('/'))") == [
        "only-a.txt",
        "only-b.txt",
        "same.txt",
    ]
    # a's next cell starts from b's version
    run = kernel.ok(f'%%remote session="a" {mounts} pull=[]\nopen("{data}/same.txt").read()')
    assert run.result == {"text/plain": "'B'"}


def test_a_runner_that_dies_mid_write_leaves_the_last_committed_version(memory_kernel, mount_point):
    kernel = memory_kernel
    mounts = f'volumes={{"{mount_point}": vol}}'
    kernel.ok(f"%%remote {mounts} pull=[]\nopen('{mount_point}/model.bin', 'wb').write(b'v1')")
    run = kernel.execute(
        f"%%remote {mounts}\n"
        "import os, signal\n"
        f"f = open('{mount_point}/model.bin', 'wb')\n"
        "f.write(b'v2, half written')\n"
        "f.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    assert run.error["ename"] == "RemoteError"
    assert "died" in run.error["evalue"]
    assert kernel.value("vol.read_file('model.bin')") == b"v1"
    run = kernel.ok(f"%%remote {mounts} pull=[]\nopen('{mount_point}/model.bin', 'rb').read()")
    assert run.result == {"text/plain": "b'v1'"}


def test_a_mount_path_leading_through_a_symlink_is_refused(kernel, control_plane, mount_point):
    # On this machine, the harmless-looking mount path leads into the control plane's
    # data directory: mounted, the volume would hide the runner's own files.
    os.symlink(control_plane.data_dir, mount_point)
    try:
        kernel.ok("import remotecell\nv = remotecell.Volume.from_name('v', create_if_missing=True)")
        run = kernel.execute(f'%%remote volumes={{"{mount_point}/blobs": v}}\nprint("ran")')
        assert run.error["ename"] == "ConfigError"
        assert f"leads through a symlink to {control_plane.data_dir}" in run.error["evalue"]
        assert "mount the volume at a path with no symlink in it" in run.error["evalue"]
        assert "ran" not in run.stdout
    finally:
        os.unlink(mount_point)
