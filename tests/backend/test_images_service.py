"""The image RPCs (ListImages, GetImageLog, RemoveImages, PruneImages) against a real
`remotecell serve`, over image records written into its data directory.

No image is built here (tests/test_cli_image.py builds real ones): the records and logs
are what the image cache would have written, so every refusal can be reached.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import grpc
import pytest

from remotecell._proto import pb, pb_grpc
from remotecell.backend.images.builder import BuiltImage
from remotecell.backend.images.cache import images_dir
from remotecell.backend.server import local_user
from remotecell.backend.state.images import ImageStore
from remotecell.client import AsyncClient

READY = "ab12" + "0" * 28
FAILED = "ab34" + "0" * 28
BUILDING = "cd56" + "0" * 28


def _write_log(data_dir: Path, image_id: str, builder: str, text: str | bytes) -> None:
    path = images_dir(data_dir) / "logs" / f"{image_id}.{builder}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)


@pytest.fixture
def images(control_plane) -> Path:
    """Three images: one ready (venv, used 10 days ago), one failed as venv and as docker
    (both with logs), one being built. Returns the data directory."""
    data_dir = control_plane.data_dir
    store = ImageStore(data_dir / "state.sqlite3")
    try:
        venv = images_dir(data_dir) / "venv" / READY
        venv.mkdir(parents=True)
        store.building(READY, "venv")
        store.ready(BuiltImage(READY, "venv", python="/nowhere/python", ref=str(venv)))
        store.used(READY, "venv", time.time() - 10 * 86400)
        for builder in ("venv", "docker"):
            store.building(FAILED, builder)
            store.failed(FAILED, builder, "pip failed")
            _write_log(data_dir, FAILED, builder, f"[1/1] pip install nothing ({builder})\n")
        store.building(BUILDING, "venv")
        for image_id in (READY, FAILED, BUILDING):  # as jobs of the data dir's owner would
            store.claim(image_id, local_user())
    finally:
        store.close()
    return data_dir


def _stub_calls(control_plane, make_call, token: str | None = None):
    """Runs ``make_call(stub, metadata)`` on a fresh channel; returns (code, details)."""
    md = (("authorization", f"Bearer {token or control_plane.endpoint.token}"),)

    async def go():
        async with grpc.aio.insecure_channel(control_plane.endpoint.target) as channel:
            stub = pb_grpc.ControlPlaneStub(channel)
            try:
                result = make_call(stub, md)
                if hasattr(result, "__aiter__"):
                    async for _ in result:
                        pass
                else:
                    await result
            except grpc.aio.AioRpcError as err:
                return err.code(), err.details() or ""
            return grpc.StatusCode.OK, ""

    return asyncio.run(go())


def _ids(data_dir: Path) -> set[tuple[str, str]]:
    store = ImageStore(data_dir / "state.sqlite3")
    try:
        return {(r.id, r.builder) for r in store.all()}
    finally:
        store.close()


def test_list_and_logs(images, client):
    listed = client.list_images()
    assert {(i.image_id, i.builder, i.state) for i in listed} == {
        (READY, "venv", "ready"),
        (FAILED, "venv", "failed"),
        (FAILED, "docker", "failed"),
        (BUILDING, "venv", "building"),
    }
    ready = next(i for i in listed if i.image_id == READY)
    assert ready.last_used < time.time() - 9 * 86400 and ready.finished > 0

    # Both builds of FAILED have a log: each starts with a piece naming its build.
    chunks = list(client.image_log("ab34"))
    named = [c.image for c in chunks if c.HasField("image")]
    assert sorted(b.builder for b in named) == ["docker", "venv"]
    assert all(c.builds == 2 for c in chunks if c.HasField("image"))
    text = "".join(c.text for c in chunks)
    assert "(venv)" in text and "(docker)" in text


def test_a_long_log_comes_in_pieces_and_bad_bytes_are_replaced(images, client):
    body = ("é" * 300_000).encode()  # 600 kB of two-byte characters: pieces split them
    _write_log(images, READY, "venv", body + b"\xff end\n")
    chunks = list(client.image_log(READY))
    assert len(chunks) > 1 and chunks[0].image.image_id == READY
    assert "".join(c.text for c in chunks) == "é" * 300_000 + "\ufffd end\n"


@pytest.mark.parametrize(
    ("image_id", "says"),
    [
        ("", "no image ''"),
        ("   ", "no image ''"),
        ("xyz", "'xyz' is not an image id"),
        ("ab%", "is not an image id"),  # no LIKE wildcards reach SQLite
        ("a" * 65, "is not an image id"),
        ("f" * 1_000_000, "is not an image id"),
        ("ab", "'ab' matches 2 images"),
    ],
    ids=["empty", "blank", "not-hex", "wildcard", "too-long", "a-megabyte", "ambiguous"],
)
def test_get_image_log_refuses_a_bad_id(images, control_plane, image_id, says):
    code, details = _stub_calls(
        control_plane,
        lambda stub, md: stub.GetImageLog(pb.GetImageLogRequest(image_id=image_id), metadata=md),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert says in details and len(details) < 300


def test_unknown_images_and_missing_logs_are_not_found(images, control_plane):
    def log(image_id):
        return _stub_calls(
            control_plane,
            lambda stub, md: stub.GetImageLog(
                pb.GetImageLogRequest(image_id=image_id), metadata=md
            ),
        )

    assert log("0123") == (
        grpc.StatusCode.NOT_FOUND,
        "no image '0123'; `remotecell image ls` lists them",
    )
    assert log(BUILDING[:8]) == (
        grpc.StatusCode.NOT_FOUND,
        f"no build log is kept for image {BUILDING[:12]}",
    )


@pytest.mark.parametrize(
    ("image_ids", "code", "says"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "name at least one image"),
        (["ab12"] * 101, grpc.StatusCode.INVALID_ARGUMENT, "remove at most 100"),
        ([READY, "zz"], grpc.StatusCode.INVALID_ARGUMENT, "'zz' is not an image id"),
        ([READY, "0123"], grpc.StatusCode.NOT_FOUND, "no image '0123'"),
        ([READY, "ab"], grpc.StatusCode.INVALID_ARGUMENT, "matches 2 images"),
        ([READY, BUILDING], grpc.StatusCode.FAILED_PRECONDITION, "is being built"),
    ],
)
def test_remove_checks_every_id_before_removing_any(images, control_plane, image_ids, code, says):
    before = _ids(images)
    got, details = _stub_calls(
        control_plane,
        lambda stub, md: stub.RemoveImages(
            pb.RemoveImagesRequest(image_ids=image_ids), metadata=md
        ),
    )
    assert got == code and says in details
    assert _ids(images) == before
    assert (images_dir(images) / "venv" / READY).exists()


def test_remove_removes_each_build_once(images, client):
    removed = client.remove_images([FAILED[:6], FAILED, READY])
    assert sorted((r.image.image_id, r.image.builder) for r in removed) == [
        (READY, "venv"),
        (FAILED, "docker"),
        (FAILED, "venv"),
    ]
    assert _ids(images) == {(BUILDING, "venv")}
    assert not (images_dir(images) / "venv" / READY).exists()
    assert not list((images_dir(images) / "logs").glob(f"{FAILED}.*"))


@pytest.mark.parametrize("days", [-1.0, math.nan, math.inf, -math.inf])
def test_prune_refuses_days_that_are_not_a_count(images, control_plane, days):
    before = _ids(images)
    code, details = _stub_calls(
        control_plane,
        lambda stub, md: stub.PruneImages(pb.PruneImagesRequest(days=days), metadata=md),
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "days must be" in details
    assert _ids(images) == before


def test_prune_keeps_30_days_unless_told_and_says_what_it_kept(images, control_plane):
    async def prune(days):
        client = AsyncClient(control_plane.endpoint)
        try:
            return await client.prune_images(days)
        finally:
            await client.close()

    reply = asyncio.run(prune(None))  # unset: 30 days, so the ready image stays
    assert any(f"image {FAILED[:12]} (docker, failed)" in line for line in reply.removed)
    assert _ids(images) == {(READY, "venv"), (BUILDING, "venv")}
    # No Docker engine here: its builder's leftovers are kept and the reply says so,
    # the rest is pruned all the same (with an engine, there are no notes).
    assert all("docker builder" in note for note in reply.notes)

    reply = asyncio.run(prune(5.0))
    assert any(f"image {READY[:12]} (venv, ready)" in line for line in reply.removed)
    assert _ids(images) == {(BUILDING, "venv")}  # a build in progress is never pruned


def test_image_rpcs_refuse_a_wrong_token(images, control_plane):
    before = _ids(images)
    calls = [
        lambda stub, md: stub.ListImages(pb.ListImagesRequest(), metadata=md),
        lambda stub, md: stub.GetImageLog(pb.GetImageLogRequest(image_id=FAILED), metadata=md),
        lambda stub, md: stub.RemoveImages(pb.RemoveImagesRequest(image_ids=[READY]), metadata=md),
        lambda stub, md: stub.PruneImages(pb.PruneImagesRequest(days=0), metadata=md),
    ]
    codes = [_stub_calls(control_plane, call, token="wrong")[0] for call in calls]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 4
    assert _ids(images) == before
