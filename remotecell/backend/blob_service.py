"""The blob RPCs of the control plane: content-addressed values, over the blob store.

Every hash a request names is checked as a blob id (``contract.blobs.check_blob_id``)
before the store sees it: a malformed one is INVALID_ARGUMENT, never a path. An upload
streams to a temporary file, hashed as it comes, and is kept only if it matches its hash
and stays within ``--max-blob-size``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from remotecell._proto import pb
from remotecell.backend.state.blobs import BlobStore
from remotecell.contract.blobs import blob_gone, check_blob_id
from remotecell.contract.errors import ConfigError
from remotecell.contract.wire import MAX_BLOB_BYTES

#: The most hashes one MissingBlobs may ask about.
MAX_HASHES = 100_000


async def _check_ids(context: grpc.aio.ServicerContext, hashes: list[str]) -> None:
    if len(hashes) > MAX_HASHES:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{len(hashes)} hashes in one request; ask about at most {MAX_HASHES} at a time",
        )
    try:
        for digest in hashes:
            check_blob_id(digest)
    except ConfigError as err:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


class BlobServicer:
    """MissingBlobs, PutBlob, GetBlob over the blob store."""

    def __init__(self, blobs: BlobStore, max_size: int = MAX_BLOB_BYTES) -> None:
        self.blobs = blobs
        #: The most bytes one upload may store (``--max-blob-size``).
        self.max_size = max_size

    async def MissingBlobs(
        self, request: pb.MissingBlobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.MissingBlobsReply:
        await _check_ids(context, list(request.hashes))
        return pb.MissingBlobsReply(missing=self.blobs.missing(request.hashes))

    async def PutBlob(
        self, request_iterator: AsyncIterator[pb.BlobChunk], context: grpc.aio.ServicerContext
    ) -> pb.PutBlobReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.hash:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a blob upload must start with its hash"
            )
        assert first is not None
        await _check_ids(context, [first.hash])
        if first.size > self.max_size:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"blob {first.hash} is {first.size} bytes, more than the {self.max_size} one "
                "upload may store (`remotecell serve --max-blob-size`)",
            )
        # Each chunk goes to a temporary file as it comes, hashed on the way: an upload
        # is never whole in memory, and one that fails or breaks leaves nothing behind.
        upload = self.blobs.upload(first.hash, self.max_size)
        try:
            await asyncio.to_thread(upload.write, first.data)
            async for chunk in request_iterator:
                await asyncio.to_thread(upload.write, chunk.data)
            size = await asyncio.to_thread(upload.commit)
        except ValueError as err:  # the wrong content, or too much of it
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        finally:
            # A cancelled upload too: the lock makes this wait for a write still running.
            await upload.discard()
        return pb.PutBlobReply(hash=first.hash, size=size)

    async def GetBlob(
        self, request: pb.GetBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BlobChunk]:
        await _check_ids(context, [request.hash])
        if not self.blobs.has(request.hash):
            await context.abort(grpc.StatusCode.NOT_FOUND, blob_gone(request.hash))
        first = True
        for chunk in self.blobs.read(request.hash):
            yield pb.BlobChunk(hash=request.hash if first else "", data=chunk)
            first = False
        if first:
            yield pb.BlobChunk(hash=request.hash)
