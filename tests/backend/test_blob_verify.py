"""Blobs are checked against their hash whenever they are read: a blob changed on disk is
one sentence naming it and its job, never a wrong value, on the runner (a closure's
blobs), in the notebook (a result's blobs) and over gRPC."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from remotecell._proto import pb
from remotecell.backend.state.blobs import BlobStore
from remotecell.client import AsyncClient
from remotecell.contract import values
from remotecell.contract.blobs import blob_corrupt, blob_relpath
from remotecell.contract.errors import BlobCorruptError
from remotecell.contract.values import content_hash


def corrupt(path: Path) -> None:
    """Flips bytes in the middle of a stored blob, keeping its size."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))


def test_a_closure_blob_corrupted_on_disk_fails_the_job_in_one_sentence(control_plane) -> None:
    packed = values.pack({"arr": np.arange(1 << 18, dtype=np.float64)})  # 2 MiB: a blob
    client = control_plane.client()
    try:
        client.upload(packed.blobs)
        (digest,) = packed.values[0].buffers
        corrupt(control_plane.data_dir / "blobs" / blob_relpath(digest))
        spec = pb.JobSpec(code="total = float(arr.sum())", closure=packed.values, pull=["total"])
        events = list(client.submit(spec))
    finally:
        client.close()
    job_id = events[0].job_id
    said = blob_corrupt(digest, job_id)
    assert said == (
        f"blob {digest} of job {job_id} is corrupt: its content does not match its hash; "
        "run the cell again"
    )
    assert [e.error.message for e in events if e.HasField("error")] == [said]
    assert not [e for e in events if e.HasField("result")]
    assert events[-1].finished.state == pb.FAILED
    assert events[-1].finished.message == said


def test_a_blob_corrupted_on_disk_is_refused_over_grpc_and_from_the_shared_directory(
    control_plane,
) -> None:
    data = bytes(range(256)) * 40_000  # several gRPC chunks
    digest = content_hash(data)

    async def scenario() -> None:
        client = AsyncClient(control_plane.endpoint)
        try:
            await client.put_blob(digest, data)
            corrupt(control_plane.data_dir / "blobs" / blob_relpath(digest))
            with pytest.raises(BlobCorruptError, match=f"blob {digest} is corrupt") as err:
                await client.get_blob(digest)
            assert err.value.digest == digest
            with pytest.raises(BlobCorruptError, match=f"blob {digest} is corrupt"):
                await client.fetch(digest)  # this process shares the blob directory
        finally:
            await client.close()

    asyncio.run(scenario())


def test_the_control_plane_checks_a_blob_it_reads_for_itself(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    data = b"a local file of an image" * 1000
    digest = content_hash(data)
    store.put(digest, [data])
    assert store.get(digest) == data
    corrupt(tmp_path / blob_relpath(digest))
    with pytest.raises(BlobCorruptError, match="does not match its hash; run the cell again"):
        store.get(digest)


@pytest.mark.kernel
def test_a_result_blob_corrupted_on_disk_is_not_pulled_into_the_notebook(
    control_plane, make_kernel
) -> None:
    blobs = control_plane.data_dir / "blobs"
    kernel = make_kernel(control_plane.env())
    kernel.ok("%load_ext remotecell\nimport numpy as np\narr = np.arange(1 << 18, dtype=float)")
    kernel.ok("%%remote detach=True\nback = arr * 2")
    kernel.ok("job = _")
    kernel.ok("job.result()")
    assert kernel.value("bool((back == arr * 2).all())") is True
    job_id = kernel.value("job.id")
    for path in blobs.glob("??/*"):
        corrupt(path)
    kernel.ok("del back")
    run = kernel.execute(f"%remote_attach {job_id}")
    assert run.error is None, run.error
    assert "could not load back: blob " in run.stderr
    assert f"of job {job_id} is corrupt: its content does not match its hash" in run.stderr
    assert kernel.value("'back' in globals()") is False


def test_a_blob_read_again_unchanged_is_not_hashed_again_but_a_changed_one_is(
    tmp_path: Path, monkeypatch
) -> None:
    from remotecell.client import _blobs

    data = b"x" * 100_000
    digest = content_hash(data)
    path = tmp_path / blob_relpath(digest)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    time.sleep(3 * _blobs.Verified._settled_ns / 1e9)  # its change time has settled
    hashed: list[str] = []
    real = _blobs.verify
    monkeypatch.setattr(_blobs, "verify", lambda d, b, *a: (hashed.append(d), real(d, b, *a)))
    verified = _blobs.Verified()
    for _ in range(3):
        view, state = _blobs.local_read(tmp_path, digest)
        verified.check(digest, view, state)
    assert hashed == [digest]  # once: the file did not change

    with open(path, "r+b") as f:  # corrupted in place, its times put back
        before = path.stat()
        f.write(b"y")
    import os

    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    view, state = _blobs.local_read(tmp_path, digest)
    with pytest.raises(BlobCorruptError, match=f"blob {digest}"):
        verified.check(digest, view, state)
