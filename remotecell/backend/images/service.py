"""The image RPCs of the control plane: what its image cache holds (`remotecell image`).

Every request field is checked before the cache is asked: an image is named by its id
or the start of one (1-64 hex digits), a removal names at most ``MAX_IDS`` images, and
a prune's ``days`` is a finite number of 0 or more. A bad field is INVALID_ARGUMENT, as
is a prefix that matches several images; an unknown image is NOT_FOUND; removing an
image while it is being built is FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import codecs
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, NoReturn

import grpc

from remotecell._proto import pb
from remotecell.backend import auth
from remotecell.backend.images.cache import ImageCache
from remotecell.backend.state.images import BUILDING, ImageRecord

#: At most this many images in one RemoveImages.
MAX_IDS = 100
#: An id is 32 hex digits today; twice that leaves room for a longer hash.
MAX_ID_LENGTH = 64
#: The days PruneImages keeps unused images for when the request does not say.
PRUNE_DAYS = 30.0
#: Build logs travel in pieces of this many bytes.
LOG_CHUNK = 256 * 1024

_HEX = re.compile(r"[0-9a-fA-F]+")


class ImageServicer:
    """ListImages, GetImageLog, RemoveImages, PruneImages over the image cache.

    A user's images are those their jobs used (``ImageStore.claim``): they list, read
    and remove those only; an image another user's jobs use too stays for them. Pruning
    removes anyone's unused images, so it takes an admin."""

    def __init__(self, cache: ImageCache) -> None:
        self.cache = cache

    async def ListImages(
        self, request: pb.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListImagesReply:
        mine = self._mine()
        return pb.ListImagesReply(
            images=[image_info(r) for r in self.cache.records() if r.id in mine]
        )

    def _mine(self) -> set[str]:
        """The caller's images: those their jobs used."""
        return self.cache.store.images_of(auth.caller().user)

    async def GetImageLog(
        self, request: pb.GetImageLogRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ImageLogChunk]:
        records = await self._find(request.image_id, context)
        logs = [(r, self.cache.log_path(r.id, r.builder)) for r in records]
        logs = [(r, path) for r, path in logs if path.exists()]
        if not logs:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no build log is kept for image {records[0].id[:12]}"
            )
        for record, path in logs:
            first = True
            async for text in _read_text(path):
                if first:
                    yield pb.ImageLogChunk(image=image_info(record), builds=len(records), text=text)
                    first = False
                else:
                    yield pb.ImageLogChunk(text=text)
            if first:  # the log went away, or is empty: the build is still named
                yield pb.ImageLogChunk(image=image_info(record), builds=len(records))

    async def RemoveImages(
        self, request: pb.RemoveImagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveImagesReply:
        if not request.image_ids:
            await _invalid(context, "name at least one image to remove")
        if len(request.image_ids) > MAX_IDS:
            await _invalid(
                context,
                f"{len(request.image_ids)} images in one request; remove at most {MAX_IDS} at a time",
            )
        chosen: dict[tuple[str, str], ImageRecord] = {}
        for image_id in request.image_ids:  # all of them found before anything goes
            for record in await self._find(image_id, context):
                chosen[(record.id, record.builder)] = record
        building = [r for r in chosen.values() if r.state == BUILDING]
        if building:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"image {building[0].id[:12]} ({building[0].builder}) is being built; "
                "wait for its build to end, then remove it",
            )
        removed = []
        user = auth.caller().user
        for record in chosen.values():
            others = [u for u in self.cache.store.users_of(record.id) if u != user]
            if others:  # another user's jobs use it too: it stays theirs
                note = f"kept for {len(others)} other user(s) whose jobs use it"
            else:
                note = await self.cache.remove(record)
            self.cache.store.unclaim(record.id, user)
            removed.append(pb.RemovedImage(image=image_info(record), note=note))
        return pb.RemoveImagesReply(removed=removed)

    async def PruneImages(
        self, request: pb.PruneImagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PruneImagesReply:
        if not auth.caller().admin:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "pruning the image cache removes every user's unused images: it takes an "
                "admin's token (`remotecell token create NAME --admin`)",
            )
        days = request.days if request.HasField("days") else PRUNE_DAYS
        if not math.isfinite(days) or days < 0:
            await _invalid(
                context, f"days must be a number of 0 or more (days unused to keep), not {days}"
            )
        notes: list[str] = []
        removed = await self.cache.prune(days, notes)
        return pb.PruneImagesReply(removed=removed, notes=notes)

    async def _find(self, image_id: str, context: grpc.aio.ServicerContext) -> list[ImageRecord]:
        """The builds of the one image ``image_id`` names, or the call ends saying why not."""
        prefix = image_id.strip()
        if not prefix:
            await _invalid(
                context, "no image '': give an image id, or its start (`remotecell image ls`)"
            )
        if len(prefix) > MAX_ID_LENGTH or not _HEX.fullmatch(prefix):
            shown = repr(prefix[:MAX_ID_LENGTH]) + ("..." if len(prefix) > MAX_ID_LENGTH else "")
            await _invalid(
                context,
                f"{shown} is not an image id: ids are up to {MAX_ID_LENGTH} hex digits "
                "(`remotecell image ls` lists them)",
            )
        mine = self._mine()
        try:
            return self.cache.find(prefix, mine)
        except LookupError as err:
            ambiguous = any(r.id in mine for r in self.cache.store.find(prefix))
            code = grpc.StatusCode.INVALID_ARGUMENT if ambiguous else grpc.StatusCode.NOT_FOUND
            await context.abort(code, str(err.args[0]))
        raise AssertionError("unreachable")


def image_info(record: ImageRecord) -> pb.ImageInfo:
    return pb.ImageInfo(
        image_id=record.id,
        builder=record.builder,
        state=record.state,
        created=record.created,
        finished=record.finished,
        last_used=record.last_used,
        size=max(record.size, 0),
    )


async def _invalid(context: grpc.aio.ServicerContext, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("unreachable")


async def _read_text(path: Path) -> AsyncIterator[str]:
    """A log file's text in pieces (undecodable bytes replaced), read off the event loop;
    nothing if the file went away meanwhile."""
    try:
        file: IO[bytes] = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        while data := await asyncio.to_thread(file.read, LOG_CHUNK):
            text = decoder.decode(data)
            if text:
                yield text
        rest = decoder.decode(b"", final=True)
        if rest:
            yield rest
    finally:
        file.close()
