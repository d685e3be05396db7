"""Blob garbage collection: blobs unused for --blob-ttl are deleted, except those that
active jobs name; a job's results outlive it by the ttl, then say they are gone."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from support import serve_fails, wait_until

from remotecell.backend.state.blobs import BlobStore
from remotecell.client import AsyncClient
from remotecell.contract.blobs import blob_relpath
from remotecell.contract.errors import BlobNotFoundError
from remotecell.contract.values import content_hash

pytestmark = pytest.mark.kernel


def stored(store: BlobStore, data: bytes) -> str:
    digest = content_hash(data)
    store.put(digest, [data])
    return digest


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_collect_deletes_what_went_unused_and_keeps_what_is_named_or_fresh(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    old, named, fresh, touched = (stored(store, bytes([n]) * 1000) for n in range(4))
    for digest in (old, named, touched):
        age(tmp_path / blob_relpath(digest), 3600)
    store.touch([touched])  # used again just now
    (tmp_path / "tmp").mkdir(exist_ok=True)
    abandoned, uploading = tmp_path / "tmp" / f"{old}.dead", tmp_path / "tmp" / f"{old}.live"
    abandoned.write_bytes(b"x")
    uploading.write_bytes(b"x")
    age(abandoned, 2 * 3600)

    assert store.collect(ttl=600, keep=[named]) == (1, 1000)
    assert store.missing([old, named, fresh, touched]) == [old]
    assert not abandoned.exists() and uploading.exists()
    assert store.collect(ttl=600, keep=[named]) == (0, 0)


def test_a_store_that_is_no_local_directory_is_left_alone() -> None:
    store = BlobStore("memory://rc-gc-test")
    digest = stored(store, b"kept" * 100)
    store.touch([digest])
    assert store.collect(ttl=0.0, now=time.time() + 10) == (0, 0)
    assert store.has(digest)


def test_a_missing_blob_is_one_sentence_over_grpc(control_plane) -> None:
    async def scenario() -> None:
        client = AsyncClient(control_plane.endpoint)
        try:
            with pytest.raises(BlobNotFoundError, match=r"--blob-ttl .*run the cell again"):
                await client.get_blob("ab" * 16)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_results_outlive_their_job_by_the_ttl_and_then_say_they_are_gone(
    make_control_plane, make_kernel
):
    control_plane = make_control_plane("--blob-ttl", "2s")
    blobs = control_plane.data_dir / "blobs"
    kernel = make_kernel(control_plane.env())
    kernel.ok("%load_ext remotecell\nimport numpy as np\narr = np.arange(1 << 18)")  # 2 MiB
    # The second job waits for the session's runner longer than the ttl: as a queued job,
    # it keeps its closure's blob from being collected.
    kernel.ok('%%remote session="gc" detach=True\nimport time\ntime.sleep(5)')
    kernel.ok('%%remote session="gc" detach=True\ntotal = int(arr.sum())\nback = arr * 2')
    kernel.ok("job = _")
    kernel.ok("job.result()")
    assert kernel.value("total") == sum(range(1 << 18))
    assert kernel.value("bool((back == arr * 2).all())") is True
    job_id = kernel.value("job.id")

    def blob_files() -> list[Path]:
        return [p for p in blobs.glob("??/*") if p.is_file()]

    wait_until(lambda: not blob_files(), 20, what="the unused blobs to be deleted")
    kernel.ok("del back")
    run = kernel.execute(f"%remote_attach {job_id}")
    assert run.error is None, run.error
    assert "could not load total, back: blob" in run.stderr  # one pickle holds both
    assert "run the cell again" in run.stderr
    assert kernel.value("'back' in globals()") is False
    # The same value again is simply uploaded again.
    kernel.ok("%%remote\nagain = int(arr.sum())")
    assert kernel.value("again") == sum(range(1 << 18))


@pytest.mark.parametrize("ttl", ["soon", "-1d", "7w"])
def test_a_bad_blob_ttl_is_one_clear_sentence(ttl: str, tmp_path: Path) -> None:
    said = serve_fails(tmp_path, "--blob-ttl", ttl)
    assert "expected a duration such as 7d, 12h, 30m, 45s" in said
