"""Comm messages between a remote cell and the notebook's front end (ipywidgets' and
anything else on the ``comm`` package), as ``pb.CommMessage``: the rules both sides share.

A message's data travels as JSON and its binary buffers as bytes, at most
``MAX_COMM_BYTES`` in all. An Output widget captures the output of the request its
kernel is handling (its ``msg_id``); the runner has no such request, so it names
``PARENT_MSG_ID`` instead, and the notebook puts its own current request's id there.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from remotecell._proto import pb

#: The most a comm message may carry, its data's JSON and its buffers together: with
#: its envelope, under the control plane's message limit (``wire.MAX_MESSAGE_BYTES``).
MAX_COMM_BYTES = 3 << 20
#: The ``msg_id`` an Output widget on the runner captures under: the notebook's request.
PARENT_MSG_ID = "remotecell-parent-request"

KINDS = {
    "comm_open": pb.CommMessage.OPEN,
    "comm_msg": pb.CommMessage.MSG,
    "comm_close": pb.CommMessage.CLOSE,
}


class CommTooLarge(ValueError):
    """A comm message over ``MAX_COMM_BYTES``."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_proto(
    msg_type: str,
    comm_id: str,
    data: dict | None = None,
    metadata: dict | None = None,
    buffers: Any = None,
    target_name: str = "",
    target_module: str = "",
) -> pb.CommMessage:
    """The message a comm's ``publish_msg`` (or a front end's ``comm_msg``) describes;
    raises CommTooLarge over the limit."""
    blobs = [bytes(b) for b in buffers or ()]
    data_json = json.dumps(data or {}, default=_json_default)
    size = len(data_json) + sum(len(b) for b in blobs)
    if size > MAX_COMM_BYTES:
        raise CommTooLarge(
            f"a widget message of {size / (1 << 20):.1f} MiB is over remotecell's "
            f"{MAX_COMM_BYTES >> 20} MiB limit and was not sent; the widget may show an "
            "older state"
        )
    return pb.CommMessage(
        kind=KINDS[msg_type],
        comm_id=comm_id,
        target_name=target_name or "",
        target_module=target_module or "",
        data_json=data_json,
        metadata_json=json.dumps(metadata or {}, default=_json_default),
        buffers=blobs,
    )


def size(message: pb.CommMessage) -> int:
    """How much ``message`` carries, as ``MAX_COMM_BYTES`` counts it."""
    return len(message.data_json) + len(message.metadata_json) + sum(map(len, message.buffers))


def over_limit(message: pb.CommMessage) -> str:
    """The sentence refusing ``message`` if it carries more than ``MAX_COMM_BYTES``, else ""."""
    if size(message) <= MAX_COMM_BYTES:
        return ""
    return (
        f"a widget message holds at most {MAX_COMM_BYTES >> 20} MiB, this one {size(message)} bytes"
    )


def data(message: pb.CommMessage) -> dict:
    """The message's data (an empty dict for none)."""
    loaded = json.loads(message.data_json or "{}")
    return loaded if isinstance(loaded, dict) else {}


def metadata(message: pb.CommMessage) -> dict:
    loaded = json.loads(message.metadata_json or "{}")
    return loaded if isinstance(loaded, dict) else {}
