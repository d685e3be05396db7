"""The venv builder and the image cache, with real uv and real package downloads.

The package installed is ``tabulate==0.9.0``: tiny, pure Python, and not installed in the
test environment (checked), so importing it proves the image has it.

remotecell's runtime (its dependencies, installed once per Python version) lives in one
directory shared by these tests and kept between runs, like uv's cache: it is keyed by
content, so a stale one is never used (``REMOTECELL_TEST_RUNTIMES`` moves it).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.images.cache import ImageCache
from remotecell.backend.images.venv import VenvBuilder
from remotecell.backend.state.images import FAILED, READY, ImageStore
from remotecell.client.image import Image
from remotecell.contract.errors import ConfigError, ImageBuildError

PACKAGE = "tabulate==0.9.0"
MISSING = "nosuchpackage-remotecell-xyz"

RUNTIMES = Path(
    os.environ.get("REMOTECELL_TEST_RUNTIMES")
    or Path(tempfile.gettempdir()) / "remotecell-test-runtimes"
)


def test_the_test_package_is_not_installed_here():
    assert importlib.util.find_spec("tabulate") is None


@pytest.fixture
def builder(tmp_path: Path) -> VenvBuilder:
    return VenvBuilder(tmp_path / "images", runtime_root=RUNTIMES)


@pytest.fixture
def cache(tmp_path: Path, builder: VenvBuilder):
    cache = ImageCache(ImageStore(tmp_path / "state.sqlite3"), tmp_path / "logs", {"venv": builder})
    yield cache
    asyncio.run(cache.close())


def build(builder: VenvBuilder, image: Image) -> tuple[BuiltImage, list[str]]:
    spec, blobs = image.to_spec()
    lines: list[str] = []
    built = asyncio.run(builder.build(spec, lambda h: bytes(blobs[h]), lines.append))
    return built, lines


def run_in(built: BuiltImage, code: str) -> str:
    out = subprocess.run(
        [built.python, "-c", code],
        env={**os.environ, **built.env},
        cwd=built.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_built_image_has_its_packages_files_and_the_runner(builder, tmp_path, monkeypatch):
    (tmp_path / "weights.txt").write_text("w = 1\n")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "a.txt").write_text("asset\n")
    (tmp_path / "assets" / "skip.tmp").write_text("")
    (tmp_path / "shipped_pkg_xyz").mkdir()
    (tmp_path / "shipped_pkg_xyz" / "__init__.py").write_text("ANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    image = (
        Image.debian_slim()
        .pip_install(PACKAGE)
        .env({"GREETING": "hello image"})
        .workdir("app")
        .run_commands('echo "$GREETING" > greeting.txt', "pip freeze > pip.txt")
        .add_local_file(tmp_path / "weights.txt", "conf/weights.txt")
        .add_local_dir(tmp_path / "assets", ignore=["*.tmp"])
        .add_local_python_source("shipped_pkg_xyz")
    )
    built, lines = build(builder, image)

    assert built.builder == "venv" and built.image_id == image.id
    assert Path(built.workdir) == Path(built.ref) / "root" / "app"
    assert built.env["GREETING"] == "hello image" and built.size_bytes > 0
    assert builder.exists(built)
    out = run_in(
        built,
        "import os, tabulate, shipped_pkg_xyz, remotecell.backend.runner._main\n"
        "print(tabulate.__version__, shipped_pkg_xyz.ANSWER, os.environ['GREETING'])\n"
        "print(open('greeting.txt').read().strip(), open('conf/weights.txt').read().strip())\n"
        "print(sorted(os.listdir('assets')))\n",
    )
    assert out.splitlines() == [
        "0.9.0 42 hello image",
        "hello image w = 1",
        "['a.txt']",
    ]
    # `pip` in a run step is uv's pip, into the image: never the machine's own pip
    assert (Path(built.workdir) / "pip.txt").read_text().splitlines() == ["tabulate==0.9.0"]
    # one progress line per step, then the tools' output
    steps = [line for line in lines if line.startswith("[")]
    assert [s.split()[0] for s in steps if not s.startswith(("[base]", "[runtime]"))] == [
        f"[{i}/7]" for i in range(1, 8)
    ]
    assert any("+ tabulate==0.9.0" in line for line in lines)


def test_an_unknown_package_fails_its_step_with_uvs_words(builder):
    image = Image.debian_slim().env({"A": "1"}).pip_install(MISSING)
    with pytest.raises(ImageBuildError) as info:
        build(builder, image)
    message = str(info.value)
    assert f"step 2 of 2, pip install {MISSING}: uv failed with exit code" in message
    assert "not found in the package registry" in message
    assert not (builder.root / image.id).exists()  # nothing half-built is left


def test_a_failing_run_step_names_the_command_and_shows_its_output(builder):
    image = Image.debian_slim().run_commands(
        "echo fine", "echo about to fail; exit 3", "echo never"
    )
    with pytest.raises(ImageBuildError) as info:
        build(builder, image)
    message = str(info.value)
    assert "step 1 of 1, run echo fine && echo about to fail; exit 3 && echo never" in message
    assert "`echo about to fail; exit 3` failed with exit code 3" in message
    assert message.splitlines()[-1] == "about to fail"


def test_a_step_that_hangs_is_stopped(tmp_path):
    builder = VenvBuilder(tmp_path / "images", runtime_root=RUNTIMES, step_timeout=3)
    pid_file = tmp_path / "sleeper.pid"
    image = Image.debian_slim().run_commands(f"echo $$ > {pid_file}; exec sleep 600")
    with pytest.raises(ImageBuildError, match="did not finish within 3 s and was stopped"):
        build(builder, image)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        # reaped by the builder: the whole process group got SIGKILL
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_apt_needs_the_docker_builder(builder):
    image = Image.debian_slim().pip_install(PACKAGE).apt_install("ffmpeg")
    with pytest.raises(ImageBuildError) as info:
        build(builder, image)
    assert "step 2 of 2, apt install ffmpeg: apt needs the docker builder" in str(info.value)
    assert not builder.root.exists()  # refused before anything was made


def test_what_a_venv_cannot_do_is_refused_up_front(builder, tmp_path):
    with pytest.raises(ImageBuildError, match="a registry base image needs the docker builder"):
        build(builder, Image.from_registry("python:3.11-slim"))
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ImageBuildError, match="a Dockerfile needs the docker builder"):
        build(builder, Image.from_dockerfile(tmp_path / "Dockerfile"))
    (tmp_path / "f.txt").write_text("")
    with pytest.raises(ImageBuildError, match=r"'/etc/f\.txt' must be a relative path"):
        build(builder, Image.debian_slim().add_local_file(tmp_path / "f.txt", "/etc/f.txt"))
    with pytest.raises(ImageBuildError, match=r"'\.\./up' must be a relative path"):
        build(builder, Image.debian_slim().workdir("../up"))
    assert not builder.root.exists()


def test_a_python_this_machine_lacks_is_a_clear_error(builder):
    with pytest.raises(ImageBuildError) as info:
        build(builder, Image.debian_slim(python="3.99").pip_install(PACKAGE))
    message = str(info.value)
    assert "base, debian_slim python 3.99: no Python 3.99 interpreter was found" in message
    assert "uv python install 3.99" in message


def test_a_blob_that_was_not_uploaded_fails_its_step(builder, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    spec, _ = Image.debian_slim().add_local_file(tmp_path / "f.txt").to_spec()

    def fetch(blob: str) -> bytes:
        raise KeyError(blob)

    with pytest.raises(ImageBuildError, match=r"step 1 of 1, add file f\.txt: its local content"):
        asyncio.run(builder.build(spec, fetch, lambda line: None))


# -- the cache -------------------------------------------------------------------


def get(
    cache: ImageCache, image: Image, *, force_build: bool = False
) -> tuple[BuiltImage, list[str]]:
    spec, blobs = image.to_spec(force_build=force_build)
    lines: list[str] = []
    built = asyncio.run(cache.get(spec, lambda h: bytes(blobs[h]), lines.append))
    return built, lines


def test_concurrent_requests_build_an_image_once(cache, tmp_path):
    image = Image.debian_slim().pip_install(PACKAGE)
    spec, blobs = image.to_spec()

    async def three() -> tuple[list[BuiltImage], list[list[str]]]:
        logs: list[list[str]] = [[], [], []]
        first = asyncio.ensure_future(cache.get(spec, blobs.__getitem__, logs[0].append))
        await asyncio.sleep(0)  # the first has started building when the others ask
        rest = [cache.get(spec, blobs.__getitem__, log.append) for log in logs[1:]]
        return list(await asyncio.gather(first, *rest)), logs

    built, logs = asyncio.run(three())
    assert built[0] == built[1] == built[2]
    log_file = (tmp_path / "logs" / f"{image.id}.venv.log").read_text().splitlines()
    assert sum(line.startswith("[base]") for line in log_file) == 1  # one build
    assert logs[0] == logs[1] == logs[2] == log_file  # each requester saw all of it
    assert cache.store.get(image.id, "venv").state == READY


def test_a_cached_image_is_not_rebuilt_and_force_build_rebuilds(cache):
    image = Image.debian_slim().pip_install(PACKAGE)
    built, lines = get(cache, image)
    assert lines
    marker = Path(built.ref) / "marker"
    marker.write_text("a rebuild would remove this")

    again, lines = get(cache, image)
    assert again == built and lines == [] and marker.exists()
    assert cache.lookup(image.id) == built

    rebuilt, lines = get(cache, image, force_build=True)
    assert any(line.startswith("[1/1] pip install") for line in lines)
    assert not marker.exists() and rebuilt.python == built.python
    assert "0.9.0" in run_in(rebuilt, "import tabulate; print(tabulate.__version__)")


def test_an_image_whose_files_are_gone_is_built_again(cache):
    image = Image.debian_slim().pip_install(PACKAGE)
    built, _ = get(cache, image)
    subprocess.run(["rm", "-rf", built.ref], check=True)
    assert cache.lookup(image.id) is None
    _, lines = get(cache, image)
    assert lines and Path(built.python).exists()


def test_a_failed_build_is_not_cached_and_its_log_is_kept(cache):
    image = Image.debian_slim().pip_install(MISSING)
    for _attempt in range(2):
        with pytest.raises(ImageBuildError, match="step 1 of 1, pip install"):
            get(cache, image)
        (record,) = cache.find(image.id[:8])
        assert record.state == FAILED and "not found in the package registry" in record.error
        log = cache.log_text(record)
        assert log is not None
        assert log.splitlines()[0] == "[base] debian_slim"  # each attempt builds from the start
        assert "not found in the package registry" in log
        assert log.splitlines()[-1].startswith("image build failed: image ")
        assert cache.lookup(image.id) is None


def test_a_spec_whose_id_does_not_match_is_refused(cache):
    spec, _ = Image.debian_slim().pip_install(PACKAGE).to_spec()
    spec.steps[0].args.append("sneaky")
    with pytest.raises(ConfigError, match="does not match its content"):
        asyncio.run(cache.get(spec, lambda h: b""))


def test_interrupted_builds_are_failed_at_start(cache):
    cache.store.building("deadbeef" * 4, "venv")
    assert cache.recover() == 1
    assert cache.store.get("deadbeef" * 4, "venv").state == FAILED


def test_rm_and_prune(cache, builder):
    old = Image.debian_slim().pip_install(PACKAGE).env({"WHICH": "old"})
    new = Image.debian_slim().pip_install(PACKAGE).env({"WHICH": "new"})
    old_built, _ = get(cache, old)
    new_built, _ = get(cache, new)
    with pytest.raises(ImageBuildError):
        get(cache, Image.debian_slim().pip_install(MISSING))
    cache.store.used(old.id, "venv", time.time() - 40 * 86400)
    cache.store.building("f" * 32, "venv")  # a build in progress elsewhere is kept
    leftover = builder.root / ("e" * 32)
    leftover.mkdir()  # what an interrupted build left
    stale_runtime = RUNTIMES / "runtime-py3.11-000000000000"
    stale_runtime.mkdir(parents=True, exist_ok=True)

    removed = asyncio.run(cache.prune(days=30))
    assert any(old.id[:12] in line for line in removed)
    assert any("failed" in line for line in removed)
    assert str(leftover) in removed and str(stale_runtime) in removed
    assert not Path(old_built.ref).exists() and Path(new_built.ref).exists()
    assert {r.id for r in cache.records()} == {new.id, "f" * 32}
    assert cache.lookup(new.id) == new_built  # the runtime in use was kept

    (record,) = cache.find(new.id[:6])
    assert asyncio.run(cache.remove(record)) == ""
    assert not Path(new_built.ref).exists() and cache.log_text(record) is None
    with pytest.raises(LookupError, match="no image"):
        cache.find(new.id)


def test_a_corrupt_blob_fails_its_step(builder, tmp_path):
    (tmp_path / "f.txt").write_text("the real content")
    spec, _ = Image.debian_slim().add_local_file(tmp_path / "f.txt").to_spec()
    with pytest.raises(ImageBuildError, match=r"step 1 of 1, add file f\.txt: .* is corrupt"):
        asyncio.run(builder.build(spec, lambda blob: b"something else", lambda line: None))
