"""Local runners' mounts: a private mount namespace and bind mounts, as root and (where the
kernel allows unprivileged user namespaces) as another user. Each case runs in a child
process, since a namespace cannot be left again."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from remotecell.backend.volumes import namespace

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mount namespaces are Linux's")


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "store" / "weights", tmp_path / "mnt" / "models"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    return source, target


def test_a_bind_mount_is_seen_by_the_runner_and_its_children_only(dirs):
    source, target = dirs
    done = run_child(
        f"""
        import os, subprocess
        from remotecell.backend.volumes import namespace
        namespace.enter_private_namespace()
        namespace.bind({str(source)!r}, {str(target)!r})
        open({str(target / "written.txt")!r}, "w").write("from the runner")
        print(sorted(os.listdir({str(target)!r})))
        print(subprocess.run(["ls", {str(target)!r}], capture_output=True, text=True).stdout.split())
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "['config.json', 'written.txt']",
        "['config.json', 'written.txt']",  # a process the cell starts sees it too
    ]
    # the mount point was made on the host, and nothing is mounted on it here
    assert target.is_dir() and os.listdir(target) == []
    assert (source / "written.txt").read_text() == "from the runner"


@pytest.mark.skipif(os.geteuid() != 0, reason="drops from root to another user to try it")
def test_another_user_mounts_in_a_user_namespace_or_is_told_what_to_do():
    # Not under pytest's tmp_path: its root is root's alone.
    top = Path(tempfile.mkdtemp(prefix="rc-userns-", dir="/tmp"))
    try:
        _as_another_user(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _as_another_user(top: Path) -> None:
    top.chmod(0o755)
    source, target = top / "weights", top / "mnt" / "models"
    source.mkdir()
    (source / "config.json").write_text("{}")
    target.parent.mkdir()
    for path in (source, target.parent, source / "config.json"):
        os.chown(path, 65534, 65534)
    done = run_child(
        f"""
        import ctypes, os
        from remotecell.backend.volumes import namespace
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)
        # as a process that started as this user would be (setuid makes it undumpable)
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
        try:
            namespace.enter_private_namespace()
            namespace.bind({str(source)!r}, {str(target)!r})
        except namespace.MountUnavailable as err:
            print("refused:", err)
        else:
            open({str(target / "written.txt")!r}, "w").write("x")
            print("mounted:", sorted(os.listdir({str(target)!r})), os.getuid())
        """
    )
    assert done.returncode == 0, done.stderr
    if done.stdout.startswith("refused:"):
        assert "`remotecell serve --executor docker`" in done.stdout
    else:
        assert done.stdout.strip() == "mounted: ['config.json', 'written.txt'] 65534"
        assert (source / "written.txt").stat().st_uid == 65534  # still that user's file
        assert os.listdir(target) == []


def test_a_mount_point_that_cannot_be_made_is_one_clear_sentence(dirs, tmp_path: Path):
    source, _ = dirs
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_child(
        f"""
        from remotecell.backend.volumes import namespace
        namespace.enter_private_namespace()
        try:
            namespace.bind({str(source)!r}, {str(blocker / "models")!r})
        except namespace.MountUnavailable as err:
            print(err)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"cannot create the mount point {blocker / 'models'} for a volume"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, a mount namespace is always possible")
def test_the_probe_finds_mounts_possible_as_root():
    assert namespace.probe() == ""
