"""Secret values masked in everything a task sends back (see backend/secrets/masking.py).

``MaskedEmit`` sits between the cell and the link: stream text (``print``, ``!cmd``,
and what reaches fds 1 and 2 from subprocesses and C code) goes through one
``StreamMasker`` per stream, so a value written in pieces is masked too; display
bundles are masked string by string before they are encoded again (a value's JSON
form included), except binary data (base64 images, audio, video), which masking would
corrupt; errors, tracebacks and the final messages are masked whole. Before any
other event, the streams' held-back ends are flushed, so the order of output is kept.

A runner masks every secret value it has been given, in every later task as well: a
thread or a session namespace of an earlier cell may still hold a value and print it.
Values are never written to the runner's own log: output that reaches it between cells
is masked too, a value written in two pieces included (see ``FdCapture.log_masker``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from remotecell._proto import pb
from remotecell.backend.secrets.masking import Masker, StreamMasker
from remotecell.contract.events import Body

Emit = Callable[[Body], None]


class MaskedEmit:
    def __init__(self, emit: Emit, masker: Masker) -> None:
        self._emit = emit
        self.masker = masker
        self._lock = threading.Lock()
        self._streams: dict[int, StreamMasker] = {}

    def __call__(self, body: Body) -> None:
        with self._lock:
            if isinstance(body, pb.Stream):
                masker = self._streams.get(body.name)
                if masker is None:
                    masker = self._streams[body.name] = self.masker.stream()
                text = masker.feed(body.text)
                if text:
                    self._emit(pb.Stream(name=body.name, text=text))
                return
            self._flush_streams()
            self._emit(self._masked(body))

    def flush(self) -> None:
        with self._lock:
            self._flush_streams()

    def _flush_streams(self) -> None:
        for name, masker in self._streams.items():
            text = masker.flush()
            if text:
                self._emit(pb.Stream(name=name, text=text))  # type: ignore[arg-type]

    def _masked(self, part: Body) -> Body:
        mask = self.masker.mask
        if isinstance(part, pb.Display) and not part.clear:
            data = {
                mime: content if _is_binary(mime) else _masked_json(content, mask)
                for mime, content in json.loads(part.data_json or "{}").items()
            }
            return pb.Display(
                data_json=json.dumps(data),
                metadata_json=json.dumps(
                    _masked_json(json.loads(part.metadata_json or "{}"), mask)
                ),
                display_id=mask(part.display_id),
                update=part.update,
            )
        if isinstance(part, pb.Error):
            return pb.Error(
                kind=part.kind,
                type_name=mask(part.type_name),
                message=mask(part.message),
                traceback=[mask(line) for line in part.traceback],
            )
        if isinstance(part, pb.Finished):
            return pb.Finished(state=part.state, message=mask(part.message))
        if isinstance(part, pb.InputRequest):
            return pb.InputRequest(prompt=mask(part.prompt), password=part.password)
        if isinstance(part, pb.CommMessage) and part.data_json:  # a widget's state, its text
            masked_comm = pb.CommMessage()
            masked_comm.CopyFrom(part)
            masked_comm.data_json = json.dumps(_masked_json(json.loads(part.data_json), mask))
            return masked_comm
        if isinstance(part, pb.Result):
            masked = pb.Result()
            masked.CopyFrom(part)
            del masked.skipped[:]
            masked.skipped.extend(mask(line) for line in part.skipped)
            return masked
        return part


def _is_binary(mime: str) -> bool:
    """Base64 of binary data (a PNG): masking would corrupt it, and no value shows in it."""
    return mime.startswith(("image/", "audio/", "video/")) and not mime.endswith(("+xml", "svg"))


def _masked_json(value: Any, mask: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked_json(v, mask) for v in value]
    if isinstance(value, dict):
        return {mask(k): _masked_json(v, mask) for k, v in value.items()}
    return value
