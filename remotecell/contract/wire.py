"""How large one gRPC message may be, so that no call makes the control plane hold more
than a few MiB before it has checked who sent it.

gRPC receives a whole message before any handler (the token check included) sees it,
so the control plane's receive limit is what bounds the memory an unauthenticated
caller can make it use. Everything bigger travels in pieces: content (blobs, volume
files) in chunks of ``CHUNK_BYTES``, a large pickle stream as a blob
(``values.INLINE_PICKLE_MAX``), long output as several events.
"""

from __future__ import annotations

from google.protobuf.message import Message

from remotecell.contract.errors import ConfigError

#: The largest message the control plane receives (and a client or runner sends).
MAX_MESSAGE_BYTES = 4 << 20
#: Content travels in messages carrying this many bytes, well under the limit.
CHUNK_BYTES = 1 << 20
#: Room in a message for what is not content (field tags, names, an event's header).
ENVELOPE_BYTES = 64 << 10
#: The most one blob upload (``PutBlob``) may hold unless ``--max-blob-size`` says otherwise.
MAX_BLOB_BYTES = 64 << 30
#: The most one volume file upload (``VolumeWrite``) may declare.
MAX_VOLUME_FILE_BYTES = 1 << 40


def check_size(message: Message, what: str) -> None:
    """Refuses a message the control plane would not take, before it is sent.

    Raises:
        ConfigError: ``message`` is over ``MAX_MESSAGE_BYTES``; the sentence names ``what``.
    """
    size = message.ByteSize()
    if size > MAX_MESSAGE_BYTES:
        raise ConfigError(
            f"{what} is {size / 2**20:.1f} MiB, over the {MAX_MESSAGE_BYTES >> 20} MiB one "
            "message to the control plane may hold; move large data out of it (into a "
            "variable the cell reads, or a volume)"
        )
