"""The blob RPCs of the control plane: content-addressed values, over the blob store.

The store checks hashes (a malformed one is a ``ValueError``, here INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from remotecell._proto import pb
from remotecell.backend.state.blobs import BlobStore
from remotecell.contract.blobs import blob_gone


class BlobServicer:
    """MissingBlobs, PutBlob, GetBlob over the blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    async def MissingBlobs(
        self, request: pb.MissingBlobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.MissingBlobsReply:
        try:
            return pb.MissingBlobsReply(missing=self.blobs.missing(request.hashes))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        raise AssertionError("unreachable")

    async def PutBlob(
        self, request_iterator: AsyncIterator[pb.BlobChunk], context: grpc.aio.ServicerContext
    ) -> pb.PutBlobReply:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.hash:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a blob upload must start with its hash"
            )
        assert first is not None
        chunks = [first.data]
        async for chunk in request_iterator:
            chunks.append(chunk.data)
        try:
            size = self.blobs.put(first.hash, chunks)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return pb.PutBlobReply(hash=first.hash, size=size)

    async def GetBlob(
        self, request: pb.GetBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.BlobChunk]:
        try:
            if not self.blobs.has(request.hash):
                await context.abort(grpc.StatusCode.NOT_FOUND, blob_gone(request.hash))
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        first = True
        for chunk in self.blobs.read(request.hash):
            yield pb.BlobChunk(hash=request.hash if first else "", data=chunk)
            first = False
        if first:
            yield pb.BlobChunk(hash=request.hash)
