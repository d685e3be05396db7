"""Values travelling between a notebook and a runner, both ways.

Modules travel as their names (inside other values too). Everything else goes into one
pickle (protocol 5) of a ``{name: object}`` dict, so objects shared between names stay
shared on the other side:

* functions and classes defined in the notebook (``__module__ == "__main__"``) travel
  by value, since the other side has no ``__main__`` holding them. A function's code goes
  through dill and the globals it uses through the same pickle as everything else, so a
  function and the values beside it share objects (``isinstance(p, P)`` holds in ``f``).
  A class goes through dill, tagged with an id, so a class that comes back (with an
  instance made on the runner) is the notebook's own class again;
* large buffers leave the pickle stream as out-of-band buffers and travel as
  content-addressed blobs, so a buffer the control plane already has is never sent
  again: NumPy arrays anywhere in a value (and so pandas frames), PyTorch tensors (so a
  model's parameters and state dicts), and ``bytes`` and ``bytearray`` values bound to a
  name (pickle copies those in-band wherever else they are, and calls no hook of ours
  for them).

A tensor travels as its bytes (a NumPy view of them, no copy for a contiguous CPU
tensor), its dtype, shape and ``requires_grad``. A CUDA tensor is copied to the CPU to
travel and lands on the GPU again where the other side has CUDA (on the CPU where it
has none, as in a notebook without a GPU). As with torch's own pickling, a tensor
that requires grad arrives as a leaf that requires grad (its graph stays behind). Views
of one storage arrive as separate tensors; sparse, quantised and nested tensors pickle
as torch pickles them.

``pack`` returns the wire values and the blobs to upload; ``unpack`` takes a function
that returns a blob's bytes by hash.
"""

from __future__ import annotations

import builtins
import contextvars
import dis
import functools
import importlib
import io
import pickle
import sys
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dill
import xxhash

from remotecell._proto import pb
from remotecell.contract.errors import ClosureError

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


class _Pickler(pickle.Pickler):
    """The C pickler, with notebook-defined code by value and modules by name."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.FunctionType) and obj.__module__ == "__main__":
            return _reduce_function(obj)
        if isinstance(obj, type) and obj.__module__ == "__main__":
            return _load_class, (_class_id(obj), dill.dumps(obj, recurse=True, protocol=5))
        if isinstance(obj, functools._lru_cache_wrapper) and obj.__module__ == "__main__":
            # @functools.cache on a notebook function: pickle would look it up in __main__
            return _cached, (obj.__wrapped__, obj.cache_parameters())
        if isinstance(obj, types.CellType):  # a closure's variable, shared by its closures
            if not _is_filled(obj):
                return _new_cell, ()
            return _new_cell, (), obj.cell_contents, None, None, _set_cell
        if isinstance(obj, types.ModuleType):
            return importlib.import_module, (obj.__name__,)
        torch = sys.modules.get("torch")  # never imported here for a value that is no tensor
        if torch is not None and type(obj) is torch.Tensor:
            return _reduce_tensor(obj, torch)
        return NotImplemented


# -- torch tensors ---------------------------------------------------------------------


def _reduce_tensor(tensor: Any, torch: Any) -> Any:
    """A tensor as its bytes (out of band when large), or NotImplemented where torch's
    own pickling must do (see the module's docstring)."""
    if (
        tensor.layout != torch.strided
        or tensor.is_quantized
        or tensor.is_nested
        or tensor.device.type not in ("cpu", "cuda")
        or tensor.numel() * tensor.element_size() < OUT_OF_BAND_MIN
    ):
        return NotImplemented
    # A conjugate or negative view's bytes are its base's: resolve it to its values.
    data = tensor.detach().resolve_conj().resolve_neg()
    if data.device.type != "cpu":
        data = data.cpu()
    raw = data.contiguous().reshape(-1).view(torch.uint8).numpy()
    dtype = str(tensor.dtype).removeprefix("torch.")
    return _load_tensor, (raw, dtype, tuple(tensor.shape), tensor.requires_grad, tensor.device.type)


def _load_tensor(
    raw: Any, dtype: str, shape: tuple[int, ...], requires_grad: bool, device: str
) -> Any:
    import torch

    tensor = torch.from_numpy(raw).view(getattr(torch, dtype)).reshape(shape)
    if device == "cuda" and torch.cuda.is_available():
        tensor = tensor.cuda()
    return tensor.requires_grad_(requires_grad)


# -- notebook functions ----------------------------------------------------------------

#: The namespace that functions being unpacked get as their globals.
_TARGET: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "remotecell_unpack_target", default=None
)
_GLOBAL_OPS = frozenset(
    ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "STORE_NAME", "DELETE_NAME")
)


def _reduce_function(fn: types.FunctionType) -> tuple[Any, ...]:
    # Only the code needs dill. Its closure cells are made empty and filled later, and the
    # rest is state, saved after the function is memoised: so a function that refers to
    # itself (recursion, a closure over itself) works.
    state = {
        "globals": _used_globals(fn),
        "defaults": fn.__defaults__,
        "kwdefaults": fn.__kwdefaults__,
        "annotations": fn.__annotations__,
        "qualname": fn.__qualname__,
        "doc": fn.__doc__,
        "module": fn.__module__,
        "dict": fn.__dict__,
    }
    code = dill.dumps(fn.__code__, protocol=5)
    return (
        _new_function,
        (code, fn.__name__, fn.__closure__),
        state,
        None,
        None,
        _set_function_state,
    )


def _used_globals(fn: types.FunctionType) -> dict[str, Any]:
    """The globals ``fn``'s code uses, less those every namespace has as builtins
    (IPython puts ``get_ipython`` and ``display`` there, on both sides)."""
    out: dict[str, Any] = {}
    for name in _global_names(fn.__code__):
        value = fn.__globals__.get(name, _MISSING)
        builtin = getattr(builtins, name, _MISSING)
        if value is _MISSING or value is builtin:
            continue
        if isinstance(value, types.MethodType) and value == builtin:  # a new bound method
            continue
        out[name] = value
    return out


_MISSING = object()


def _global_names(code: types.CodeType) -> dict[str, None]:
    names = {i.argval: None for i in dis.get_instructions(code) if i.opname in _GLOBAL_OPS}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return names


def _is_filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


def _new_function(
    code: bytes, name: str, closure: tuple[types.CellType, ...] | None
) -> types.FunctionType:
    target = _TARGET.get()
    return types.FunctionType(
        dill.loads(code), target if target is not None else {}, name, None, closure
    )


def _new_cell() -> types.CellType:
    return types.CellType()


def _set_cell(cell: types.CellType, contents: Any) -> types.CellType:
    cell.cell_contents = contents
    return cell


def _set_function_state(fn: types.FunctionType, state: dict[str, Any]) -> types.FunctionType:
    # The globals the function used join its new globals, without overriding them: it
    # sees the namespace it is unpacked into, as it would had it been defined there.
    for key, value in state["globals"].items():
        fn.__globals__.setdefault(key, value)
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    fn.__annotations__ = state["annotations"]
    fn.__qualname__ = state["qualname"]
    fn.__doc__ = state["doc"]
    fn.__module__ = state["module"]
    fn.__dict__.update(state["dict"])
    return fn


def _cached(fn: Callable[..., Any], parameters: dict[str, Any]) -> Callable[..., Any]:
    return functools.lru_cache(maxsize=parameters["maxsize"], typed=parameters["typed"])(fn)


# -- notebook classes ------------------------------------------------------------------

# A class keeps its id both ways: the notebook's class P, sent to a runner and back with
# an instance made there, is P again, not a copy of it.
_CLASS_IDS: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
_CLASSES: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()


def _class_id(cls: type) -> str:
    class_id = _CLASS_IDS.get(cls)
    if class_id is None:
        class_id = _CLASS_IDS[cls] = uuid.uuid4().hex
        _CLASSES[class_id] = cls
    return class_id


def _load_class(class_id: str, payload: bytes) -> type:
    cls = _CLASSES.get(class_id)
    if cls is None:
        cls = dill.loads(payload)
        _CLASSES[class_id] = cls
        _CLASS_IDS[cls] = class_id
    return cls


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
        elif type(obj) in (bytes, bytearray) and len(obj) >= OUT_OF_BAND_MIN:
            picklable[name] = _OutOfBand(obj)
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
    value.type_name = ", ".join(f"{n}: {type_name(items[n])}" for n in picklable)[:200]
    value.size = len(stream) + sum(packed.blobs[h].nbytes for h in set(hashes))
    if len(stream) > INLINE_PICKLE_MAX:
        digest = content_hash(stream)
        packed.blobs[digest] = memoryview(stream)
        value.pickle_blob = digest
    else:
        value.pickle = stream
    packed.values.append(value)
    return packed


class _OutOfBand:
    """Pickles a ``bytes``/``bytearray`` through a PickleBuffer, so it leaves the stream."""

    def __init__(self, data: bytes | bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return type(self.data), (pickle.PickleBuffer(self.data),)


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

    Notebook-defined functions get ``namespace`` as their globals (one new dict for all
    of them when none is given), so they see that namespace as they would had they been
    defined there; the globals they used are added to it where it lacks them.

    Raises:
        ModuleNotFoundError: a module travelling by name is not installed here.
    """
    out: dict[str, Any] = {}
    token = _TARGET.set(namespace if namespace is not None else {})
    try:
        for value in values:
            if value.kind == pb.Value.MODULE:
                out[value.name] = importlib.import_module(value.module)
                continue
            stream = fetch(value.pickle_blob) if value.pickle_blob else value.pickle
            buffers = _writable([fetch(h) for h in value.buffers])
            loaded = pickle.loads(stream, buffers=buffers)
            if value.kind == pb.Value.NAMESPACE:
                out.update(loaded)
            else:
                out[value.name] = loaded
    finally:
        _TARGET.reset(token)
    return out


def _writable(buffers: list[Buffer]) -> list[Buffer]:
    """Buffers that arrays can be written through, none shared by two arrays: a read-only
    buffer (bytes from gRPC) is copied, and so is one that ``fetch`` handed out before."""
    seen: set[int] = set()
    out: list[Buffer] = []
    for buf in buffers:
        if memoryview(buf).readonly or id(buf) in seen:
            out.append(bytearray(buf))
        else:
            out.append(buf)
        seen.add(id(buf))
    return out
