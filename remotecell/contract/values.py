"""Values travelling between a notebook and a runner, both ways.

Modules travel as their names (inside other values too). Everything else goes into one
namespace value: one pickle (protocol 5) per name, all made by one pickler, so objects
shared between names stay shared on the other side, and each loadable on its own, so a
name that cannot be loaded there (its class's module is not installed) does not keep the
others from arriving (``unpack(..., errors=)``):

* functions and classes defined in the notebook (``__module__ == "__main__"``) travel
  by value, since the other side has no ``__main__`` holding them, and so do functions
  pickle cannot find by name (a named tuple's methods). A function's code goes through
  dill and the globals it uses through the same pickle as everything else, so a
  function and the values beside it share objects (``isinstance(p, P)`` holds in ``f``);
  its globals are the namespace it arrives in, or the module's whose globals they were
  (the wrapper a library's decorator made). A class travels as a skeleton its metaclass
  makes (name, bases, ``__slots__``, annotations, an enum's members), then its
  attributes, so enums, dataclasses, named tuples, models made by metaclasses and
  classes with ``__slots__`` arrive working. It is tagged with an id, so a class that
  comes back (with an instance made on the runner) is the notebook's own class again,
  and one made on the runner stays one class in the notebook, whatever it is sent with;
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
import enum
import functools
import importlib
import io
import pickle
import pickletools
import struct
import sys
import types
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

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
        # Called for nearly every object: one lookup by type settles most of them.
        cls = type(obj)
        reduce = _REDUCERS.get(cls)
        if reduce is not None:
            return reduce(obj)
        if isinstance(obj, type):
            return _reduce_class(obj) if obj.__module__ == "__main__" else NotImplemented
        module = cls.__module__
        if module == "dataclasses" and (name := _dataclass_sentinel(obj)):
            return getattr, (sys.modules["dataclasses"], name)
        if module == "typing" and cls.__name__ == "ForwardRef":
            return _forward_ref, (obj.__forward_arg__, obj.__forward_module__)
        if module == "torch":  # never imported here for a value that is no tensor
            torch = sys.modules["torch"]
            return _reduce_tensor(obj, torch) if cls is torch.Tensor else NotImplemented
        if isinstance(obj, types.ModuleType):  # a lazy module's own type too
            return importlib.import_module, (obj.__name__,)
        if isinstance(obj, (property, staticmethod, classmethod)):  # a subclass of one
            return _REDUCERS[next(b for b in cls.__mro__ if b in _REDUCERS)](obj)
        return NotImplemented


def _reduce_any_function(fn: types.FunctionType) -> Any:
    return NotImplemented if _found_by_reference(fn) else _reduce_function(fn)


def _reduce_method(method: types.MethodType) -> Any:
    fn = method.__func__
    if isinstance(fn, types.FunctionType) and not _found_by_reference(fn):
        # pickle would look the method up by name on its object: a class being rebuilt
        # may not have it yet, a model's metaclass may have taken it out
        return _bound_method, (fn, method.__self__)
    return NotImplemented


def _reduce_cached(fn: Any) -> Any:
    if fn.__module__ != "__main__":
        return NotImplemented
    # @functools.cache on a notebook function: pickle would look it up in __main__
    return _cached, (fn.__wrapped__, fn.cache_parameters())


def _reduce_cell(cell: types.CellType) -> Any:
    # a closure's variable, shared by its closures: made empty, filled once memoised
    if not _is_filled(cell):
        return _new_cell, ()
    return _new_cell, (), cell.cell_contents, None, None, _set_cell


_REDUCERS: dict[type, Callable[[Any], Any]] = {
    types.FunctionType: _reduce_any_function,
    types.MethodType: _reduce_method,
    types.CellType: _reduce_cell,
    types.ModuleType: lambda m: (importlib.import_module, (m.__name__,)),
    functools._lru_cache_wrapper: _reduce_cached,
    # what the __dict__ of a class holds
    staticmethod: lambda m: (type(m), (m.__func__,)),
    classmethod: lambda m: (type(m), (m.__func__,)),
    property: lambda p: (type(p), (p.fget, p.fset, p.fdel, p.__doc__)),
    functools.cached_property: lambda p: (_cached_property, (p.func, p.attrname)),
    types.MappingProxyType: lambda m: (_mapping_proxy, (dict(m),)),  # a dataclass field's
}


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


def _found_by_reference(fn: types.FunctionType) -> bool:
    """Whether pickle finds ``fn`` by its module and qualified name: a notebook function
    is never found so, nor one a library made inside a function (``<locals>``, the
    methods of a named tuple)."""
    module = sys.modules.get(fn.__module__) if fn.__module__ != "__main__" else None
    found: Any = module
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is fn


def _reduce_function(fn: types.FunctionType) -> tuple[Any, ...]:
    # Only the code needs dill. Its closure cells are made empty and filled later, and the
    # rest is state, saved after the function is memoised: so a function that refers to
    # itself (recursion, a closure over itself) works.
    home = _home(fn)
    state = {
        "globals": _used_globals(fn) if home in ("__main__", None) else {},
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
        (code, fn.__name__, fn.__closure__, home),
        state,
        None,
        None,
        _set_function_state,
    )


def _home(fn: types.FunctionType) -> str | None:
    """Where ``fn`` finds its globals: ``"__main__"`` for the notebook (or the runner's
    namespace), the name of the module whose globals they are (the wrapper a library's
    decorator made, which ``functools.wraps`` names after a notebook function), or None
    for a namespace of its own (the ``__new__`` of a named tuple)."""
    name = fn.__globals__.get("__name__")
    if name == "__main__":
        return name
    module = sys.modules.get(name) if isinstance(name, str) else None
    return name if module is not None and vars(module) is fn.__globals__ else None


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
    code: bytes,
    name: str,
    closure: tuple[types.CellType, ...] | None,
    home: str | None = "__main__",
) -> types.FunctionType:
    globals_: dict[str, Any] | None = {}
    if home == "__main__":
        globals_ = _TARGET.get()
    elif home is not None:
        globals_ = vars(importlib.import_module(home))
    return types.FunctionType(
        dill.loads(code), globals_ if globals_ is not None else {}, name, None, closure
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


def _mapping_proxy(mapping: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(mapping)


def _forward_ref(arg: str, module: Any) -> Any:
    """A string annotation that typing made an object (a named tuple's fields under
    ``from __future__ import annotations``): its compiled code cannot be pickled."""
    import typing

    return typing.ForwardRef(arg, module=module)


def _bound_method(fn: Callable[..., Any], obj: Any) -> types.MethodType:
    return types.MethodType(fn, obj)


def _cached_property(fn: Callable[..., Any], attrname: str | None) -> Any:
    prop: Any = functools.cached_property(fn)
    prop.attrname = attrname  # what __set_name__ gave it in the class it came from
    return prop


# -- notebook classes ------------------------------------------------------------------

# A class travels as a skeleton made by its metaclass (name, bases, ``__slots__``,
# annotations; an enum's members too), memoised before its attributes, which are its
# state: so methods, class attributes holding instances and ``super()`` can refer back to
# the class. Its methods go as functions do, so they see the namespace they arrive in.
#
# A class keeps its id both ways: the notebook's class P, sent to a runner and back with
# an instance made there, is P again, not a copy of it.
_CLASS_IDS: weakref.WeakKeyDictionary[type, str] = weakref.WeakKeyDictionary()
_CLASSES: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()
#: Skeletons made by this process and waiting for their attributes.
_UNFINISHED: weakref.WeakSet[type] = weakref.WeakSet()
#: Made again by the skeleton's metaclass (``__weakref__``) or by hand (``_abc_impl``).
_NOT_STATE = frozenset(("__dict__", "__weakref__", "_abc_impl", "__module__", "__qualname__"))


def _class_id(cls: type) -> str:
    class_id = _CLASS_IDS.get(cls)
    if class_id is None:
        class_id = _CLASS_IDS[cls] = uuid.uuid4().hex
        _CLASSES[class_id] = cls
    return class_id


def _reduce_class(cls: type) -> tuple[Any, ...]:
    namespace = {k: cls.__dict__[k] for k in ("__slots__", "__annotations__") if k in cls.__dict__}
    namespace.update(__module__=cls.__module__, __qualname__=cls.__qualname__)
    members: dict[str, Any] = {}
    member_state: dict[str, dict[str, Any]] = {}
    made: frozenset[str] = frozenset()
    if isinstance(cls, enum.EnumMeta):
        by_name: dict[str, Any] = dict(cls.__members__)  # with aliases, in order
        members = {name: m._value_ for name, m in by_name.items()}
        enum_made, member_made = _made_by_enum()
        made = enum_made.union(members)
        member_state = {
            m._name_: {k: v for k, v in vars(m).items() if k not in member_made}
            for m in by_name.values()
        }
    attributes = {
        key: value
        for key, value in cls.__dict__.items()
        if key not in _NOT_STATE
        and key not in namespace
        and not isinstance(value, types.MemberDescriptorType)  # made again from __slots__
        and (key not in made or _defined_in(value, cls.__module__))
    }
    state = {"id": _class_id(cls), "attributes": attributes, "members": member_state}
    args = (_class_id(cls), type(cls), cls.__name__, cls.__bases__, namespace, members)
    return _new_class, args, state, None, None, _set_class_state


@functools.cache
def _made_by_enum() -> tuple[frozenset[str], frozenset[str]]:
    """What the enum machinery itself puts in an enum's ``__dict__`` and its members'
    (read from enums made here, as it differs between Python versions)."""
    kinds: list[Any] = [enum.Enum, enum.IntEnum, enum.Flag, enum.IntFlag]
    kinds.append(getattr(enum, "StrEnum", enum.Enum))
    made: set[str] = set()
    member_made: set[str] = set()
    for kind in kinds:
        sample = kind("Sample", {"A": "a" if kind.__name__ == "StrEnum" else 1})
        made.update(vars(sample))
        member_made.update(vars(sample.A))
    return frozenset(made - {"A", "__doc__"}), frozenset(member_made)


def _defined_in(value: Any, module: str) -> bool:
    """Whether a class attribute is code of ``module``'s (a method overriding one that the
    enum machinery would otherwise make)."""
    value = getattr(value, "__func__", value)
    return isinstance(value, types.FunctionType) and value.__module__ == module


def _new_class(
    class_id: str,
    metaclass: type,
    name: str,
    bases: tuple[type, ...],
    namespace: dict[str, Any],
    members: dict[str, Any],
) -> type:
    known = _CLASSES.get(class_id)
    if known is not None:
        return known

    def fill(ns: dict[str, Any]) -> None:
        ns.update(namespace)
        for member, value in members.items():  # in order: the first of equal values wins
            ns[member] = value

    cls = types.new_class(name, bases, {"metaclass": metaclass}, fill)
    _UNFINISHED.add(cls)
    return cls


def _set_class_state(cls: type, state: dict[str, Any]) -> type:
    if cls not in _UNFINISHED:  # a class this process has already: it stays as it is
        return cls
    for key, value in state["attributes"].items():
        setattr(cls, key, value)
    members: Any = cls  # an enum
    for member, attributes in state["members"].items():
        vars(members[member]).update(attributes)
    _UNFINISHED.discard(cls)
    # Known by its id only once complete: a class that failed to load is made anew.
    _CLASSES[state["id"]] = cls
    _CLASS_IDS[cls] = state["id"]
    return cls


@functools.cache
def _dataclass_sentinels() -> dict[int, str]:
    import dataclasses

    return {
        id(value): name
        for name, value in vars(dataclasses).items()
        if type(value).__module__ == "dataclasses" and not isinstance(value, type)
    }


def _dataclass_sentinel(obj: Any) -> str | None:
    """The name of ``obj`` when it is one of the markers the dataclasses module compares
    by identity (``MISSING``, a field's kind): it must arrive as that marker."""
    return _dataclass_sentinels().get(id(obj))


def _dumps(obj: Any, blobs: dict[str, memoryview], hashes: list[str]) -> bytes:
    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=_out_of_band(blobs, hashes)).dump(obj)
    return out.getvalue()


def _out_of_band(
    blobs: dict[str, memoryview], hashes: list[str]
) -> Callable[[pickle.PickleBuffer], bool]:
    """The pickler's buffer callback: a large buffer goes to ``blobs`` by its hash."""

    def keep_in_band(buf: pickle.PickleBuffer) -> bool:
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

    return keep_in_band


# A namespace travels as one pickle per name, dumped by one pickler (so objects shared
# between names stay shared) and loadable one by one (so a name that cannot be loaded
# does not keep the others from arriving): the magic, the count, where each pickle ends
# in the body, how many out-of-band buffers the pickles up to it used, then the body.
_NAMESPACE_MAGIC = b"RCNS"


def _dumps_namespace(
    items: dict[str, Any], blobs: dict[str, memoryview], hashes: list[str]
) -> bytes:
    body = io.BytesIO()
    pickler = _Pickler(body, protocol=5, buffer_callback=_out_of_band(blobs, hashes))
    ends: list[int] = []
    used: list[int] = []
    for obj in items.values():
        pickler.dump(obj)
        ends.append(body.tell())
        used.append(len(hashes))
    count = len(items)
    header = struct.pack(f"<4sI{count}Q{count}I", _NAMESPACE_MAGIC, count, *ends, *used)
    return header + body.getvalue()


def _memo_use(stream: memoryview) -> tuple[int, set[int]]:
    """How many entries the pickles in ``stream`` add to the memo, and which they read."""
    made = 0
    read: set[int] = set()
    file = io.BytesIO(stream)
    while file.tell() < len(stream):
        for op, arg, _ in pickletools.genops(file):
            if op.name == "MEMOIZE":
                made += 1
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                read.add(int(cast(int, arg)))
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):  # protocol 5 never writes them
                raise pickle.UnpicklingError("an explicitly numbered memo entry")
    return made, read


def _unpickler(
    file: io.BytesIO, buffers: list[Buffer], memo: dict[int, Any] | None
) -> Any:  # either unpickler: typeshed gives pickle._Unpickler no memo
    if memo is None:
        return pickle.Unpickler(file, buffers=iter(buffers))
    # The C unpickler's memo setter loses what it is given (CPython 3.11): Python's keeps it.
    unpickler: Any = pickle._Unpickler(file, buffers=iter(buffers))
    unpickler.memo = memo
    return unpickler


def _loads_namespace(
    stream: Buffer,
    buffers: list[Buffer],
    names: list[str],
    errors: dict[str, Exception] | None,
) -> dict[str, Any]:
    view = memoryview(stream)
    if view[:4] != _NAMESPACE_MAGIC:  # one pickle of the whole dict, from an earlier version
        loaded: dict[str, Any] = pickle.loads(stream, buffers=buffers)
        return loaded
    (count,) = struct.unpack_from("<I", view, 4)
    if count != len(names):
        raise pickle.UnpicklingError(f"{count} values for {len(names)} names")
    ends = struct.unpack_from(f"<{count}Q", view, 8)
    used = struct.unpack_from(f"<{count}I", view, 8 + 8 * count)
    base = 8 + 12 * count
    file = io.BytesIO(view)
    out: dict[str, Any] = {}
    unpickler: Any = None
    # After a name fails, the memo is tracked: its size as the pickler had it, and the
    # entries the failed pickles never made, which a later pickle must not read. A new
    # unpickler gets None in those, so that the later pickles' entries keep their numbers.
    size: int | None = None
    missing: set[int] = set()
    memo: dict[int, Any] = {}
    start, first = 0, 0
    for name, end, last in zip(names, ends, used, strict=True):
        made, read = 0, set[int]()
        if size is not None:
            made, read = _memo_use(view[base + start : base + end])
        if read & missing:
            assert errors is not None  # without, the first failure was raised
            errors[name] = ValueError("it shares an object with a name that failed to load")
            if unpickler is not None:
                memo, unpickler = unpickler.memo.copy(), None
            assert size is not None  # read is empty until a name has failed
            missing.update(range(size, size + made))
            size += made
            start, first = end, last
            continue
        if unpickler is None:
            file.seek(base + start)
            known = None if size is None else {i: memo.get(i) for i in range(size)}
            unpickler = _unpickler(file, buffers[first:], known)
        try:
            out[name] = unpickler.load()
            if file.tell() != base + end:
                raise pickle.UnpicklingError(f"the value of {name!r} does not end where it should")
        except Exception as err:
            if errors is None:
                raise
            errors[name] = err
            memo, unpickler = unpickler.memo.copy(), None
            if size is None:  # the first failure: what the pickles so far memoised
                made, size = _memo_use(view[base : base + end])[0], 0
            missing.update(i for i in range(size + made) if i not in memo)
        if size is not None:
            size += made
        start, first = end, last
    return out


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
        stream = _dumps_namespace(picklable, packed.blobs, hashes)
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
    *,
    errors: dict[str, Exception] | None = None,
) -> dict[str, Any]:
    """Turns wire values back into objects.

    Notebook-defined functions get ``namespace`` as their globals (one new dict for all
    of them when none is given), so they see that namespace as they would had they been
    defined there; the globals they used are added to it where it lacks them.

    With ``errors``, a name that cannot be loaded here (its module is not installed, its
    class cannot be rebuilt) is left out and its exception put in ``errors`` under its
    name; the other names still load. Without, the first such exception is raised.

    Raises:
        ModuleNotFoundError: a module travelling by name (or holding a value's class) is
            not installed here.
    """
    out: dict[str, Any] = {}
    token = _TARGET.set(namespace if namespace is not None else {})
    try:
        for value in values:
            if value.kind == pb.Value.MODULE:
                try:
                    out[value.name] = importlib.import_module(value.module)
                except ImportError as err:
                    if errors is None:
                        raise
                    errors[value.name] = err
                continue
            stream = fetch(value.pickle_blob) if value.pickle_blob else value.pickle
            buffers = _writable([fetch(h) for h in value.buffers])
            if value.kind == pb.Value.NAMESPACE:
                out.update(_loads_namespace(stream, buffers, list(value.names), errors))
                continue
            try:
                out[value.name] = pickle.loads(stream, buffers=buffers)
            except Exception as err:
                if errors is None:
                    raise
                errors[value.name] = err
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
