"""Values travelling between a notebook and a runner, both ways.

Modules travel as their names. Everything else goes into one pickle (protocol 5) of a
``{name: object}`` dict, so objects shared between names stay shared on the other side:

* functions and classes defined in the notebook (``__module__ == "__main__"``) are
  pickled by value with dill, since the other side has no ``__main__`` holding them;
* large buffers (NumPy arrays, bytes, pandas and torch CPU tensors) leave the pickle
  stream as out-of-band buffers and travel as content-addressed blobs, so a buffer the
  control plane already has is never sent again.

``pack`` returns the wire values and the blobs to upload; ``unpack`` takes a function
that returns a blob's bytes by hash.
"""

from __future__ import annotations

import importlib
import io
import pickle
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dill
import xxhash

from remotecell._proto import pb
from remotecell.client.errors import ClosureError

#: Buffers at least this large leave the pickle stream and travel as blobs.
OUT_OF_BAND_MIN = 64 * 1024
#: A pickle stream larger than this is stored as a blob instead of inline in the spec.
INLINE_PICKLE_MAX = 1024 * 1024

Buffer = bytes | bytearray | memoryview


def content_hash(data: Buffer) -> str:
    """The blob id of ``data``: xxh3-128, fast enough to rehash 100 MiB per cell (~10 ms)."""
    return xxhash.xxh3_128_hexdigest(data)


@dataclass
class Packed:
    values: list[pb.Value]
    blobs: dict[str, memoryview] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(v.size for v in self.values)


def type_name(obj: Any) -> str:
    cls = type(obj)
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )


def _is_notebook_code(obj: Any) -> bool:
    return (
        isinstance(obj, (types.FunctionType, type))
        and getattr(obj, "__module__", None) == "__main__"
    )


class _Pickler(pickle.Pickler):
    """The C pickler, with notebook-defined code pickled by value through dill."""

    def reducer_override(self, obj: Any) -> Any:
        if _is_notebook_code(obj):
            return dill.loads, (dill.dumps(obj, recurse=True, protocol=5),)
        return NotImplemented


def _dumps(obj: Any, blobs: dict[str, memoryview], hashes: list[str]) -> bytes:
    def keep_out_of_band(buf: pickle.PickleBuffer) -> bool:
        try:
            view = buf.raw()
        except BufferError:  # not contiguous: let pickle copy it in-band
            return True
        if view.nbytes < OUT_OF_BAND_MIN:
            return True
        digest = content_hash(view)
        blobs.setdefault(digest, view)
        hashes.append(digest)
        return False

    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=keep_out_of_band).dump(obj)
    return out.getvalue()


def pack(items: Mapping[str, Any]) -> Packed:
    """Serialises named values for the wire.

    Raises:
        ClosureError: a value cannot be serialised; the message names it and its type.
    """
    packed = Packed(values=[])
    picklable: dict[str, Any] = {}
    for name, obj in items.items():
        if isinstance(obj, types.ModuleType):
            packed.values.append(
                pb.Value(name=name, kind=pb.Value.MODULE, module=obj.__name__, type_name="module")
            )
        else:
            picklable[name] = obj
    if not picklable:
        return packed
    hashes: list[str] = []
    try:
        stream = _dumps(picklable, packed.blobs, hashes)
    except Exception as err:
        raise _closure_error(picklable, err) from None
    value = pb.Value(kind=pb.Value.NAMESPACE, names=list(picklable), buffers=hashes)
    value.type_name = ", ".join(f"{n}: {type_name(o)}" for n, o in picklable.items())[:200]
    value.size = len(stream) + sum(packed.blobs[h].nbytes for h in set(hashes))
    if len(stream) > INLINE_PICKLE_MAX:
        digest = content_hash(stream)
        packed.blobs[digest] = memoryview(stream)
        value.pickle_blob = digest
    else:
        value.pickle = stream
    packed.values.append(value)
    return packed


def _closure_error(items: Mapping[str, Any], err: Exception) -> ClosureError:
    """Finds which value failed, so the message can name it."""
    for name, obj in items.items():
        try:
            _dumps(obj, {}, [])
        except Exception as one:
            error = ClosureError(
                f"cannot send `{name}` ({type_name(obj)}) to the runner: {one}. "
                f"Create it inside the cell instead, or leave `{name}` out of the cell."
            )
            error.name, error.reason = name, str(one)
            return error
    error = ClosureError(f"cannot send the cell's variables to the runner: {err}")
    error.reason = str(err)
    return error


def unpack(
    values: Iterable[pb.Value],
    fetch: Callable[[str], Buffer],
    namespace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Turns wire values back into objects.

    Notebook-defined functions are rebound to ``namespace`` when one is given, so
    they see that namespace as their globals, as they would had they been defined there.

    Raises:
        ModuleNotFoundError: a module travelling by name is not installed here.
    """
    out: dict[str, Any] = {}
    for value in values:
        if value.kind == pb.Value.MODULE:
            out[value.name] = importlib.import_module(value.module)
            continue
        stream = fetch(value.pickle_blob) if value.pickle_blob else value.pickle
        buffers = [fetch(h) for h in value.buffers]
        loaded = pickle.loads(stream, buffers=buffers)
        if value.kind == pb.Value.NAMESPACE:
            out.update(loaded)
        else:
            out[value.name] = loaded
    if namespace is not None:
        for name, obj in out.items():
            if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
                out[name] = _rebind(obj, namespace)
    return out


def _rebind(fn: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    # dill gave the function a private globals dict holding what it referenced; move
    # those into the namespace (without overriding it) and make it the function's globals.
    if fn.__globals__ is namespace:
        return fn
    for key, val in fn.__globals__.items():
        if not key.startswith("__"):
            namespace.setdefault(key, val)
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__doc__ = fn.__doc__
    new.__dict__.update(fn.__dict__)
    new.__annotations__ = fn.__annotations__
    new.__module__ = fn.__module__
    return new
