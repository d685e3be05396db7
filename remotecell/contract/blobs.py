"""How content-addressed blobs are named, by the control plane's store and by a process
that shares its blob directory, how their bytes are checked when read, and the sentences
for one that is gone or corrupt.

A blob is stored under its ``content_hash`` (``remotecell.contract.values``), as
``<first two hex digits>/<hash>`` below the store's root. A local root holds ``ID_FILE``,
whose id the control plane announces (``HealthReply.blob_dir_id``): a process that reads
the same id back shares the directory and may read and write blobs there directly.

Every read checks the bytes against the hash (``verify``): a blob changed on disk is an
error, never a wrong value. xxh3 hashes 100 MiB in about 10 ms, so it is always done.
"""

from __future__ import annotations

import xxhash

from remotecell.contract.errors import BlobCorruptError, ConfigError
from remotecell.contract.values import HASH_CHARS, content_hash, is_content_hash

ID_FILE = ".remotecell-blob-dir-id"


def check_blob_id(digest: object, what: str = "a blob id") -> str:
    """``digest`` if it is a blob id (a ``content_hash``): the one check, made before a
    blob id reaches a path, by the client and the control plane.

    Raises:
        ConfigError: (a ``ValueError``) it is not 32 lowercase hex digits.
    """
    if not is_content_hash(digest):
        if isinstance(digest, str):
            shown = repr(digest[:40]) + ("..." if len(digest) > 40 else "")
        else:
            shown = f"a {type(digest).__name__}"
        raise ConfigError(
            f"{what} {shown} is not a blob hash ({HASH_CHARS} lowercase hex digits, xxh3-128); "
            "send the hash remotecell computed for the content"
        )
    assert isinstance(digest, str)
    return digest


def blob_relpath(digest: str) -> str:
    """Where the blob ``digest`` lives, relative to the store's root.

    Raises:
        ConfigError: (a ``ValueError``) ``digest`` is not a blob id (so it never names
            a path outside the store, or one too long for it).
    """
    check_blob_id(digest)
    return f"{digest[:2]}/{digest}"


def blob_gone(digest: str) -> str:
    """Why a blob cannot be read, in a sentence."""
    return (
        f"blob {digest} is not stored: it was never uploaded, or the control plane deleted it "
        "after it went unused for longer than its --blob-ttl (a finished job's results "
        "last that long); run the cell again"
    )


def blob_corrupt(digest: str, job_id: str = "") -> str:
    """Why a blob's bytes are not used, in a sentence (naming its job where known)."""
    of_job = f" of job {job_id}" if job_id else ""
    return (
        f"blob {digest}{of_job} is corrupt: its content does not match its hash; run the cell again"
    )


def verify(digest: str, data: bytes | bytearray | memoryview, job_id: str = "") -> None:
    """Checks that ``data`` is the blob ``digest``.

    Raises:
        BlobCorruptError: it is not (the stored bytes changed).
    """
    if content_hash(data) != digest and xxhash.xxh3_128_hexdigest(data) != digest:
        # (the second: a large blob stored before content_hash hashed leaves)
        raise BlobCorruptError(blob_corrupt(digest, job_id), digest)
