"""What a cell sends back to the notebook: the names it bound and its value, each that
cannot go named in one line (``Result.skipped``) while the others still arrive."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from remotecell._proto import pb
from remotecell.backend.secrets.masking import Masker
from remotecell.contract import values
from remotecell.contract.errors import ClosureError


def pulled(pull: Iterable[str], ns: dict[str, Any], before: dict[str, Any]) -> list[str]:
    """The names of ``pull`` that ``ns`` binds; with ``values.PULL_STAR``, also each public name
    the cell bound or rebound (``before`` is the namespace as the cell began)."""
    names = [n for n in pull if n != values.PULL_STAR and n in ns]
    if values.PULL_STAR in pull:
        seen = set(names)
        names += [
            n
            for n, v in ns.items()
            if n not in seen and not n.startswith("_") and before.get(n, _UNBOUND) is not v
        ]
    return names


_UNBOUND = object()


def result(
    items: dict[str, Any],
    masker: Masker,
    upload: Callable[[dict], int],
    has_output: bool = False,
    **out: str,
) -> pb.Result:
    """The Result carrying ``items`` (``""``: the cell's value), its blobs uploaded;
    values that cannot be sent, or that hold a secret's value, are named in ``skipped``;
    a closed file (``with open(...) as f``) is useless on either side and stays silently."""
    items = {name: obj for name, obj in items.items() if not _closed_io(obj)}
    packed, skipped = _pack_what_can_be_sent(items)
    if masker and _holds_secret(packed, masker):
        items, withheld = _without_secrets(items, masker)
        packed, skipped = _pack_what_can_be_sent(items)
        skipped = withheld + skipped
    upload(packed.blobs)
    return pb.Result(
        values=packed.values,
        has_output=has_output and "" in _names(packed),
        skipped=skipped,
        **out,
    )


def _label(name: str) -> str:
    return "the cell's result" if name == "" else f"`{name}`"


def _holds_secret(packed: values.Packed, masker: Masker) -> bool:
    return any(masker.found_in(v.pickle) for v in packed.values) or any(
        masker.found_in(blob, binary=True) for blob in packed.blobs.values()
    )


def _without_secrets(items: dict[str, Any], masker: Masker) -> tuple[dict[str, Any], list[str]]:
    """The values to send back without those that hold a secret's value: a pulled
    value would be stored with the job's events, and shown in the notebook."""
    kept: dict[str, Any] = {}
    withheld: list[str] = []
    for name, obj in items.items():
        try:
            holds = _holds_secret(values.pack({name: obj}), masker)
        except ClosureError:
            holds = False  # _pack_what_can_be_sent names it
        if holds:
            withheld.append(
                f"{_label(name)} ({values.type_name(obj)}): it holds a secret's value, and "
                "secret values stay on the runner"
            )
        else:
            kept[name] = obj
    return kept, withheld


def _closed_io(obj: Any) -> bool:
    return isinstance(obj, io.IOBase) and obj.closed


def _names(packed: values.Packed) -> set[str]:
    out: set[str] = set()
    for value in packed.values:
        out.update(value.names if value.kind == pb.Value.NAMESPACE else [value.name])
    return out


def _pack_what_can_be_sent(items: dict[str, Any]) -> tuple[values.Packed, list[str]]:
    """Packs the values to send back; one that cannot be serialised is left out and named.
    A widget goes by reference to its comm, and is the same live widget in the notebook."""
    skipped: list[str] = []
    try:
        return values.pack(items), skipped
    except ClosureError:
        pass
    good: dict[str, Any] = {}
    for name, obj in items.items():
        try:
            values.pack({name: obj})
            good[name] = obj
        except ClosureError as err:
            skipped.append(f"{_label(name)} ({values.type_name(obj)}): {err.reason}")
    return values.pack(good), skipped
