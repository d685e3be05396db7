"""How content-addressed blobs are named, by the control plane's store and by a process
that shares its blob directory, and the sentence for one that is gone.

A blob is stored under its ``content_hash`` (``remotecell.contract.values``), as
``<first two hex digits>/<hash>`` below the store's root. A local root holds ``ID_FILE``,
whose id the control plane announces (``HealthReply.blob_dir_id``): a process that reads
the same id back shares the directory and may read and write blobs there directly.
"""

from __future__ import annotations

ID_FILE = ".remotecell-blob-dir-id"


def blob_relpath(digest: str) -> str:
    """Where the blob ``digest`` lives, relative to the store's root.

    Raises:
        ValueError: ``digest`` is not a lowercase hex hash (so it never names a path
            outside the store).
    """
    if len(digest) < 8 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a blob hash: {digest!r}")
    return f"{digest[:2]}/{digest}"


def blob_gone(digest: str) -> str:
    """Why a blob cannot be read, in a sentence."""
    return (
        f"blob {digest} is not stored: it was never uploaded, or the control plane deleted it "
        "after it went unused for longer than its --blob-ttl (a finished job's results "
        "last that long); run the cell again"
    )
