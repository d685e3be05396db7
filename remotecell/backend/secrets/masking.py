"""Replacing secret values with ``********`` in text a job produces.

What is masked: each value of 4 characters or more, each line (of 4 or more) of a
multi-line value (a line-by-line ``print`` of a PEM key), and the escaped forms a
value takes in a ``repr`` or in JSON (a value with quotes, backslashes or non-ASCII
characters in ``print(os.environ)`` or in a display bundle). Occurrences that overlap
are masked together. Not masked: shorter values, and values transformed any other
way (encoded, reversed, split by the program itself). ``found_in`` (a pulled value that
holds a secret stays on the runner) looks for raw UTF-8 values in pickle streams, and
only for values of 8 bytes or more in raw binary buffers.

``StreamMasker`` masks text that arrives in chunks: a chunk whose end could be the
beginning of a value keeps that end back until the next chunk (or ``flush()``), so a
value written in two pieces is still masked. The cost is that such an end shows a
little later, when more output comes or the stream ends. ``Masker.log_cut`` does the
same for the undecoded output a runner writes to its log between cells.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from remotecell.contract.secrets import MIN_MASKED_LENGTH

MASK = "********"
#: Values shorter than this are not looked for in binary buffers (``Masker.found_in``).
MIN_BINARY_LENGTH = 8


def _forms(value: str) -> set[str]:
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1]}
    if "\n" in value or "\r" in value:
        forms.update(line.strip("\r") for line in value.splitlines())
    return {f for f in forms if len(f) >= MIN_MASKED_LENGTH}


class Masker:
    """Masks the given secret values (and their forms, above) in text and bytes."""

    def __init__(self, values: Iterable[str]) -> None:
        values = list(values)
        needles: set[str] = set()
        for value in values:
            needles |= _forms(value)
        #: Longest first, for the hold-back search.
        self.needles = sorted(needles, key=len, reverse=True)
        self._firsts = {n[0] for n in self.needles}
        self._longest = len(self.needles[0]) if self.needles else 0
        raw = sorted(
            {v.encode("utf-8", "surrogatepass") for v in values if len(v) >= MIN_MASKED_LENGTH},
            key=len,
            reverse=True,
        )
        self._raw = raw
        self._bytes = re.compile(b"|".join(re.escape(n) for n in raw)) if raw else None
        long = [n for n in raw if len(n) >= MIN_BINARY_LENGTH]
        self._long_bytes = re.compile(b"|".join(re.escape(n) for n in long)) if long else None

    def __bool__(self) -> bool:
        return bool(self.needles)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """The merged spans of every occurrence of every needle, in order."""
        spans: list[tuple[int, int]] = []
        for needle in self.needles:
            at = text.find(needle)
            while at >= 0:
                spans.append((at, at + len(needle)))
                at = text.find(needle, at + 1)
        if not spans:
            return spans
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            if start < merged[-1][1]:  # overlapping; adjacent ones stay apart
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def mask(self, text: str) -> str:
        return self._cut(text, len(text))[0]

    def _cut(self, text: str, cut: int) -> tuple[str, int]:
        """``text[:cut]`` masked, with ``cut`` moved back to the start of an occurrence
        that it would split; returns that text and the final cut."""
        if not self.needles:
            return text[:cut], cut
        out: list[str] = []
        pos = 0
        for start, end in self._spans(text):
            if start >= cut:
                break
            if end > cut:
                cut = start
                break
            out.append(text[pos:start])
            out.append(MASK)
            pos = end
        out.append(text[pos:cut])
        return "".join(out), cut

    def held_back(self, text: str) -> int:
        """How many characters at the end of ``text`` could begin a value."""
        tail = text[-(self._longest - 1) :] if self._longest > 1 else ""
        for i, char in enumerate(tail):
            if char not in self._firsts:
                continue
            rest = tail[i:]
            if any(len(n) > len(rest) and n.startswith(rest) for n in self.needles):
                return len(rest)
        return 0

    def mask_bytes(self, data: bytes) -> bytes:
        """Raw (UTF-8) occurrences masked, for output that is not decoded (a log)."""
        if self._bytes is None:
            return data
        return self._bytes.sub(MASK.encode(), data)

    def log_cut(self, data: bytes) -> int:
        """Where undecoded output (a log's) may be cut to write what comes before now:
        before an end that could begin a value, and never inside a value."""
        if self._bytes is None:
            return len(data)
        cut = len(data)
        tail = data[-(len(self._raw[0]) - 1) :] if len(self._raw[0]) > 1 else b""
        for i in range(len(tail)):
            rest = tail[i:]
            if any(len(n) > len(rest) and n.startswith(rest) for n in self._raw):
                cut = len(data) - len(rest)
                break
        for match in self._bytes.finditer(data):
            if match.start() < cut < match.end():
                return match.start()
        return cut

    def found_in(self, data: bytes | bytearray | memoryview, binary: bool = False) -> bool:
        """Whether a value's UTF-8 bytes occur in ``data`` (a pickle stream; with
        ``binary``, a raw buffer such as an array's, where only values of
        ``MIN_BINARY_LENGTH`` bytes or more are looked for: a short one would turn up
        in large arrays by chance)."""
        pattern = self._long_bytes if binary else self._bytes
        if pattern is None:
            return False
        view = memoryview(data)
        if view.ndim != 1 or view.format not in ("B", "b", "c"):
            try:
                view = view.cast("B")
            except TypeError:  # not contiguous: copy it
                view = memoryview(view.tobytes())
        return pattern.search(view) is not None

    def stream(self) -> StreamMasker:
        return StreamMasker(self)


class StreamMasker:
    """Masks one stream's chunks, holding back an end that could begin a value."""

    def __init__(self, masker: Masker) -> None:
        self.masker = masker
        self._pending = ""

    def feed(self, text: str) -> str:
        """The part of what was fed so far that can be shown now, masked."""
        data = self._pending + text
        if not self.masker:
            self._pending = ""
            return data
        out, cut = self.masker._cut(data, len(data) - self.masker.held_back(data))
        self._pending = data[cut:]
        return out

    def flush(self) -> str:
        """Whatever was held back, masked."""
        data, self._pending = self._pending, ""
        return self.masker.mask(data)
