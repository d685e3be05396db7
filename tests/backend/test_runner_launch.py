"""The runner's launch contract (remotecell.backend.runner.launch): what an executor
writes is what the runner reads."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from remotecell.backend.executors.base import RunnerLaunch
from remotecell.backend.runner import launch
from remotecell.backend.runner.launch import RunnerArgs
from remotecell.backend.volumes.mounts import LaunchVolume, RunnerMount
from remotecell.contract.resources import GPUChoice
from remotecell.contract.volumes import Mount

EVERYTHING = RunnerArgs(
    runner_id="r-1",
    control_url="unix:/tmp/cp.sock",
    token="s3cret",
    image="img-abc",
    session="sess",
    cpu=0.1234567,
    memory_mb=2048,
    gpu=GPUChoice("H100", 2),
    gpu_uuids=("GPU-a", "GPU-b"),
    mounts=(
        RunnerMount(Mount("/models", "weights", "v-1"), source="/tmp/copy/0", sync=True),
        RunnerMount(Mount("/data", "data", "v-2")),
    ),
    orphan_timeout=2.5,
)


@pytest.mark.parametrize(
    "args",
    [
        EVERYTHING,
        RunnerArgs("r-2", "127.0.0.1:7000", "t"),
        RunnerArgs("r-3", "127.0.0.1:7000", "t", gpu=GPUChoice("A100-80GB")),  # no UUIDs known
    ],
    ids=["everything", "the least", "a GPU type alone"],
)
def test_what_is_built_parses_back_as_it_was(args):
    argv, env = launch.build(args)
    environ = {"PATH": "/usr/bin", **env}
    assert launch.parse(argv, environ) == args
    # Read once: the cells the runner runs inherit neither its token nor its volumes.
    assert environ == {"PATH": "/usr/bin"}


def test_the_token_travels_in_the_environment_only():
    argv, env = launch.build(EVERYTHING)
    assert not any("s3cret" in arg for arg in argv)
    assert env[launch.TOKEN_ENV] == "s3cret"
    assert "s3cret" not in repr(EVERYTHING)


def test_a_runner_without_its_token_or_with_garbled_volumes_says_so():
    argv, env = launch.build(EVERYTHING)
    with pytest.raises(launch.LaunchError, match=launch.TOKEN_ENV):
        launch.parse(argv, {})
    with pytest.raises(launch.LaunchError, match=launch.VOLUMES_ENV):
        launch.parse(argv, {**env, launch.VOLUMES_ENV: '[{"name": 1, "bogus": 2}]'})


def test_the_command_line_names_the_runner_module():
    argv, _ = launch.build(EVERYTHING)
    line = launch.command("/venv/bin/python", argv)
    assert line[:3] == ["/venv/bin/python", "-m", "remotecell.backend.runner"]
    assert launch.arguments(line) == argv
    with pytest.raises(launch.LaunchError):
        launch.arguments(["python", "-m", "something.else", *argv])


def test_an_executors_launch_tells_the_runner_everything_it_holds():
    started = RunnerLaunch(
        runner_id="r-1",
        control_url="unix:/tmp/cp.sock",
        token="s3cret",
        image="img-abc",
        session="sess",
        env={"PIP_INDEX_URL": "http://pypi.local"},
        cpu=0.1234567,
        memory_mb=2048,
        gpu=GPUChoice("H100", 2),
        gpu_uuids=("GPU-a", "GPU-b"),
        volumes=(LaunchVolume(Mount("/models", "weights", "v-1")),),
    )
    told = started.runner(mounts=EVERYTHING.mounts)
    assert told == dataclasses.replace(EVERYTHING, orphan_timeout=launch.ORPHAN_TIMEOUT)
    assert started.runner("127.0.0.1:9").control_url == "127.0.0.1:9"


def test_the_runner_says_what_is_missing_and_exits_2():
    argv, _ = launch.build(RunnerArgs("r-1", "127.0.0.1:1", "t"))
    env = {k: v for k, v in os.environ.items() if k != launch.TOKEN_ENV}
    done = subprocess.run(
        launch.command(sys.executable, argv), env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert launch.TOKEN_ENV in done.stderr
