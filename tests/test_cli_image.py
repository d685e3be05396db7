"""`remotecell image ls | logs | rm | prune` against a control plane whose image cache has
real builds in it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ControlPlane, short_tmpdir

from remotecell.backend.images.cache import images_dir, open_cache
from remotecell.backend.images.venv import VenvBuilder
from remotecell.backend.server import local_user
from remotecell.client.image import Image
from remotecell.contract.errors import ImageBuildError

# The runtime is shared with tests/backend/test_venv_builder.py (see there).
RUNTIMES = Path(
    os.environ.get("REMOTECELL_TEST_RUNTIMES")
    or Path(tempfile.gettempdir()) / "remotecell-test-runtimes"
)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotecell", "image", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory with one image built and one failed build."""
    directory = short_tmpdir()  # the control plane's socket goes in it
    builders = {"venv": VenvBuilder(images_dir(directory) / "venv", runtime_root=RUNTIMES)}

    async def fill() -> None:
        cache = open_cache(directory, builders)
        try:
            for image in (
                Image.debian_slim().pip_install("tabulate==0.9.0"),
                Image.debian_slim().pip_install("nosuchpackage-remotecell-xyz"),
            ):
                spec, blobs = image.to_spec()
                try:
                    await cache.get(spec, blobs.__getitem__)
                except ImageBuildError:
                    pass
        finally:
            await cache.close()

    asyncio.run(fill())
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def env(data_dir: Path) -> Iterator[dict[str, str]]:
    """How the CLI finds the control plane serving ``data_dir``."""
    control_plane = ControlPlane(data_dir).start()
    try:
        yield control_plane.env()
    finally:
        control_plane.stop()


def ids(data_dir: Path) -> dict[str, str]:
    """image id -> state, from the records."""
    cache = open_cache(data_dir, {})
    try:
        return {r.id: r.state for r in cache.records()}
    finally:
        asyncio.run(cache.close())


def test_ls_lists_builds_and_their_state(data_dir, env):
    records = ids(data_dir)
    out = cli("ls", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "BUILDER", "STATE", "SIZE", "BUILT", "LAST", "USED"]
    for image_id, state in records.items():
        assert any(line.startswith(image_id[:12]) and f" {state} " in line for line in lines)
    assert sorted(records.values()) == ["failed", "ready"]
    # --url and --token work as for the other commands
    options = cli("ls", "--url", env["REMOTECELL_URL"], "--token", env["REMOTECELL_TOKEN"], env={})
    assert options.stdout == out.stdout


def test_logs_prints_a_build_log_even_of_a_failed_build(data_dir, env):
    failed = next(i for i, s in ids(data_dir).items() if s == "failed")
    out = cli("logs", failed[:10], env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        "[base] debian_slim\n[1/1] pip install nosuchpackage-remotecell-xyz"
    )
    assert "not found in the package registry" in out.stdout

    missing = cli("logs", "0123456789", env=env)
    assert missing.returncode != 0
    assert "no image '0123456789'; `remotecell image ls` lists them" in missing.stderr


def test_rm_removes_the_image_its_record_and_log(data_dir, env):
    ready = next(i for i, s in ids(data_dir).items() if s == "ready")
    image_dir = images_dir(data_dir) / "venv" / ready
    assert image_dir.exists()
    out = cli("rm", ready[:12], env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"removed {ready[:12]} (venv)\n"
    assert not image_dir.exists() and ready not in ids(data_dir)
    assert cli("logs", ready, env=env).returncode != 0


def test_an_ambiguous_prefix_is_refused(data_dir, env):
    cache = open_cache(data_dir, {})
    for image_id in ("abc1" + "0" * 28, "abc2" + "0" * 28):
        cache.store.building(image_id, "venv")
        cache.store.claim(image_id, local_user())  # as a job of the data dir's owner would
    asyncio.run(cache.close())
    before = ids(data_dir)
    out = cli("rm", "abc", env=env)
    assert out.returncode != 0
    assert "'abc' matches 2 images (abc100000000, abc200000000); give more of the id" in out.stderr
    assert ids(data_dir) == before  # nothing removed
    out = cli("rm", "", env=env)
    assert out.returncode != 0 and "no image ''" in out.stderr


def test_prune_removes_failed_and_unused_images(data_dir, env):
    ready = next(i for i, s in ids(data_dir).items() if s == "ready")
    out = cli("prune", env=env)
    assert out.returncode == 0, out.stderr
    assert "(venv, failed)" in out.stdout and ids(data_dir) == {ready: "ready"}

    cache = open_cache(data_dir, {})
    cache.store.used(ready, "venv", time.time() - 3 * 86400)
    asyncio.run(cache.close())
    assert ready in ids(data_dir)
    out = cli("prune", "--days", "2", env=env)
    assert out.returncode == 0, out.stderr
    assert f"removed image {ready[:12]} (venv, ready)" in out.stdout
    assert ids(data_dir) == {} and not (images_dir(data_dir) / "venv" / ready).exists()
