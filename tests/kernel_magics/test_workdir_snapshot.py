"""The notebook directory's snapshot for runners on another filesystem: limits, the
ignore file, what is sent again (nothing that did not change), and the one-line notices.
Uploads go to a real control plane."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from remotecell._proto import pb
from remotecell.contract.values import content_hash
from remotecell.kernel_magics import _workdir


def names(snap: _workdir.Snapshot) -> list[str]:
    return [f.path for f in snap.files]


class ElsewhereClient:
    """A real client whose control plane says its runners are on another filesystem (the
    docker executor), recording what it uploads."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.uploaded: list[str] = []

    def health(self) -> pb.HealthReply:
        reply = self.client.health()
        reply.runners_share_filesystem = False
        return reply

    def missing_blobs(self, hashes: list[str]) -> list[str]:
        return self.client.missing_blobs(hashes)

    def upload(self, blobs: dict[str, bytes]) -> int:
        self.uploaded.extend(blobs)
        return self.client.upload(blobs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "run.sh").write_text("echo hi\n")
    (tmp_path / "run.sh").chmod(0o755)
    return tmp_path


def test_a_snapshot_holds_the_small_files_with_their_hashes_and_modes(tree):
    snap = _workdir.Snapshots().take(tree)
    assert snap.problem == ""
    assert names(snap) == ["data.csv", "run.sh", "images/x.png"]
    by_path = {f.path: f for f in snap.files}
    assert by_path["data.csv"].blob == content_hash(b"a,b\n1,2\n")
    assert by_path["data.csv"].size == 8
    assert by_path["run.sh"].executable and not by_path["data.csv"].executable


def test_version_control_caches_checkpoints_virtualenvs_and_dotenv_are_left_out(tree):
    for d in (".git", "__pycache__", ".ipynb_checkpoints", "node_modules", "myenv"):
        (tree / d).mkdir()
        (tree / d / "f").write_text("x")
    (tree / "myenv" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a venv by any name
    (tree / "mod.pyc").write_bytes(b"\0")
    (tree / ".env").write_text("TOKEN=secret\n")
    assert names(_workdir.Snapshots().take(tree)) == ["data.csv", "run.sh", "images/x.png"]


def test_the_ignore_file_leaves_out_what_it_names_and_can_take_back_a_default(tree):
    (tree / "cache").mkdir()
    (tree / "cache" / "big.bin").write_text("x")
    (tree / "notes.tmp").write_text("x")
    (tree / ".env").write_text("A=1\n")
    (tree / ".remotecellignore").write_text("# comments work\ncache/\n*.tmp\nimages/\n!.env\n")
    assert sorted(names(_workdir.Snapshots().take(tree))) == [
        ".env",
        ".remotecellignore",
        "data.csv",
        "run.sh",
    ]


def test_a_file_over_the_per_file_limit_is_left_out_and_named(tree):
    (tree / "model.bin").write_bytes(b"x" * 2000)
    snap = _workdir.Snapshots(max_file=1000).take(tree)
    assert snap.problem == ""
    assert snap.too_large == ["model.bin"]
    assert "model.bin" not in names(snap)


def test_a_directory_over_the_total_or_the_file_count_is_not_snapshotted(tree):
    assert "add up to more than 20 bytes" in _workdir.Snapshots(max_total=20).take(tree).problem
    assert _workdir.Snapshots(max_files=2).take(tree).problem == "it holds more than 2 files"


def test_unchanged_files_are_not_read_again_and_not_uploaded_again(tree, client):
    snapshots = _workdir.Snapshots()
    first = snapshots.take(tree)
    assert len(first.fresh) == 3  # read and hashed once
    again = snapshots.take(tree)
    assert again.fresh == {}  # the stat cache knew them all
    assert names(again) == names(first)
    (tree / "data.csv").write_text("a,b\n3,4\n")
    changed = snapshots.take(tree)
    assert list(changed.fresh) == [content_hash(b"a,b\n3,4\n")]

    elsewhere = ElsewhereClient(client)
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        spec = pb.JobSpec(code="1")
        assert _workdir.offer(spec, elsewhere, _workdir.Snapshots()) == ""
        assert spec.workdir.path == str(tree) and spec.workdir.snapshot
        assert len(elsewhere.uploaded) == 3
        assert client.missing_blobs([f.blob for f in spec.workdir.files]) == []
        # a second cell, another kernel's cache even: the control plane has every blob
        elsewhere.uploaded.clear()
        assert _workdir.offer(pb.JobSpec(code="1"), elsewhere, _workdir.Snapshots()) == ""
        assert elsewhere.uploaded == []
        # one file changed: only it travels
        (tree / "data.csv").write_text("changed\n")
        assert _workdir.offer(pb.JobSpec(code="1"), elsewhere, _workdir.Snapshots()) == ""
        assert elsewhere.uploaded == [content_hash(b"changed\n")]
    finally:
        os.chdir(cwd)


def test_each_way_the_files_do_not_reach_the_runner_is_one_line(tree, client):
    elsewhere = ElsewhereClient(client)
    (tree / "model.bin").write_bytes(b"x" * 2000)
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        spec = pb.JobSpec(code="1")
        line = _workdir.offer(spec, elsewhere, _workdir.Snapshots(max_file=1000))
        assert line.endswith("\n") and line.count("\n") == 1
        assert "1 file(s) over 1000 bytes are not copied" in line and "model.bin" in line
        assert spec.workdir.snapshot  # the rest still travels

        spec = pb.JobSpec(code="1")
        line = _workdir.offer(spec, elsewhere, _workdir.Snapshots(max_total=20))
        assert line.count("\n") == 1
        assert f"the notebook's directory {tree} is not copied to the runner" in line
        assert ".remotecellignore" in line
        assert not spec.HasField("workdir")  # the runner's own directory

        spec = pb.JobSpec(code="1")
        line = _workdir.offer(spec, elsewhere, _workdir.Snapshots(), snapshot_on=False)
        assert line.count("\n") == 1 and "cwd_snapshot is off" in line
        assert not spec.HasField("workdir")
    finally:
        os.chdir(cwd)


def test_runners_that_share_the_filesystem_get_the_path_alone(tree, client):
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        spec = pb.JobSpec(code="1")
        assert _workdir.offer(spec, client, _workdir.Snapshots()) == ""
        assert spec.workdir.path == str(tree)
        assert not spec.workdir.snapshot and not spec.workdir.files
        # an image that names its own working directory keeps it
        spec = pb.JobSpec(code="1")
        spec.image_spec.steps.add(kind=pb.ImageStep.WORKDIR, dest="/app")
        assert _workdir.offer(spec, client, _workdir.Snapshots()) == ""
        assert not spec.HasField("workdir")
    finally:
        os.chdir(cwd)
