"""`remotecell volume create | ls | put | get | rm | delete` against a real control plane."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def cli(control_plane):
    def run(*args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "remotecell", "volume", *args],
            env={**os.environ, **control_plane.env()},
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
        )
        if ok:
            assert done.returncode == 0, done.stderr.decode()
        return done

    return run


def test_volume_round_trip(cli, tmp_path: Path):
    assert "no volumes" in cli("ls").stdout.decode()
    assert cli("create", "weights").stdout.decode().startswith("created volume weights (")
    lines = cli("ls").stdout.decode().splitlines()
    assert lines[0].split()[:4] == ["VOLUME", "OWNER", "CREATED", "MOUNTED"]
    assert lines[1].startswith("weights ") and "shared dir" in lines[1]

    # a file, to a default path and to an explicit one, and a directory tree
    (tmp_path / "config.json").write_text('{"layers": 32}')
    tree = tmp_path / "shards"
    (tree / "sub").mkdir(parents=True)
    (tree / "part-0").write_bytes(b"\x00" * 5000)
    (tree / "sub" / "part-1").write_bytes(b"\x01" * 10)
    out = cli("put", "weights", str(tmp_path / "config.json")).stdout.decode()
    assert out.strip().endswith("-> weights:/config.json (14 bytes)")
    cli("put", "weights", str(tmp_path / "config.json"), "/llama/")
    cli("put", "weights", str(tree), "/llama/shards")
    listing = cli("ls", "weights").stdout.decode().splitlines()
    assert listing[0].split() == ["TYPE", "SIZE", "MODIFIED", "PATH"]
    assert [line.split()[-1] for line in listing[1:]] == ["config.json", "llama/"]
    recursive = cli("ls", "weights", "/llama", "-r").stdout.decode().splitlines()
    assert [line.split()[-1] for line in recursive[1:]] == [
        "llama/config.json",
        "llama/shards/part-0",
        "llama/shards/sub/part-1",
    ]
    assert "4.9 KiB" in recursive[2]

    # back out: a file to stdout, to a path, into a directory; a directory tree
    assert cli("get", "weights", "/llama/config.json", "-").stdout == b'{"layers": 32}'
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cli("get", "weights", "config.json", str(out_dir / "renamed.json"))
    assert (out_dir / "renamed.json").read_text() == '{"layers": 32}'
    cli("get", "weights", "/llama/shards", str(out_dir))
    assert (out_dir / "shards" / "part-0").read_bytes() == b"\x00" * 5000
    assert (out_dir / "shards" / "sub" / "part-1").read_bytes() == b"\x01" * 10
    cli("get", "weights", "config.json", cwd=out_dir)
    assert (out_dir / "config.json").exists()
    assert not list(out_dir.rglob("*.remotecell-part"))

    # remove a file, a directory; then the volume
    assert (
        cli("rm", "weights", "/config.json").stdout.decode().strip()
        == "removed 1 file(s) from weights"
    )
    refused = cli("rm", "weights", "/llama", ok=False)
    assert refused.returncode == 1
    assert b"is a directory; remove it with recursive=True" in refused.stderr
    assert b"3 file(s)" in cli("rm", "weights", "/llama", "-r").stdout
    assert cli("ls", "weights").stdout.decode().strip() == "(empty)"
    cli("put", "weights", str(tmp_path / "config.json"))
    assert cli("delete", "weights", "--yes").stdout.decode().strip() == (
        "deleted volume weights (1 file(s))"
    )
    assert "no volumes" in cli("ls").stdout.decode()


def test_volume_commands_fail_with_one_clear_sentence(cli, control_plane):
    cases = [
        (("ls", "nope"), "no volume 'nope': create it with"),
        (("create", "bad/name"), "not a valid volume name"),
        (("get", "nope", "x"), "no volume 'nope'"),
    ]
    cli("create", "v")
    cases += [
        (("create", "v"), "volume 'v' exists already"),
        (("get", "v", "/missing.bin"), "no file or directory '/missing.bin' in volume 'v'"),
        (("rm", "v", "/missing.bin"), "no file or directory '/missing.bin'"),
        (("get", "v", "../../etc/passwd"), "'..' would leave the volume"),
        (("ls", "v", "/a/../.."), "'..' would leave the volume"),
    ]
    for args, message in cases:
        done = cli(*args, ok=False)
        assert done.returncode == 1, args
        err = done.stderr.decode()
        assert err.startswith("Error: ") and message in err, (args, err)
        assert "Traceback" not in err
    # delete asks first; "no" keeps the volume
    done = subprocess.run(
        [sys.executable, "-m", "remotecell", "volume", "delete", "v"],
        env={**os.environ, **control_plane.env()},
        input=b"n\n",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1 and b"Aborted" in done.stderr
    assert cli("ls").stdout.decode().splitlines()[1].split()[0] == "v"


def test_get_never_writes_outside_local_whatever_the_store_lists(
    control_plane, tmp_path: Path, monkeypatch
):
    # A remote store (S3, say) may hold a key such as "dir/../../escape"; the control
    # plane lists what the store holds, so `get` checks each path itself. Such a store
    # is stood in for by its listing alone.
    from click.testing import CliRunner

    from remotecell._proto import pb
    from remotecell.cli import main
    from remotecell.client import Client

    listed = [
        pb.VolumeFile(path="dir/fine.txt", size=2),
        pb.VolumeFile(path="dir/../../escape.txt", size=2),
    ]
    monkeypatch.setattr(Client, "list_volume_files", lambda *a, **k: listed)
    monkeypatch.setattr(
        Client, "read_volume_file_into", lambda c, n, p, out: out.write(b"hi") and "v1"
    )
    for key, value in control_plane.env().items():
        monkeypatch.setenv(key, value)
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    result = CliRunner().invoke(main, ["volume", "get", "vol", "dir", str(target)])
    assert result.exit_code == 1
    assert "lists 'dir/../../escape.txt', which is not inside 'dir'" in result.output
    assert (target / "dir" / "fine.txt").read_bytes() == b"hi"
    assert not list(tmp_path.rglob("escape.txt"))
