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
* objects that stand for the process they are in (its IPython shell, display publisher
  and hook, ``sys.stdout``/``sys.stderr``) travel by reference and load as the other
  side's own, and a display handle travels as its display id (``_process``);
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

import importlib
import io
import os
import pickle
import pickletools
import struct
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import xxhash

from remotecell._proto import pb
from remotecell.contract._by_value import (
    OUT_OF_BAND_MIN,
    REDUCERS,
    TARGET,
    dataclass_sentinel,
    forward_ref,
    reduce_class,
    reduce_tensor,
)
from remotecell.contract._process import (  # ProcessStream: what a runner's streams pickle as
    ProcessStream,  # noqa: F401
    known_objects,
    process_object,
    type_reducers,
)
from remotecell.contract._widgets import reduce_widget, widget_class
from remotecell.contract.errors import ClosureError

#: A pickle stream larger than this is stored as a blob instead of inline in the spec.
INLINE_PICKLE_MAX = 1024 * 1024
#: In a spec's ``pull``: also every public name that the cell's star imports bind, which
#: no reading of its source can list (``from pylab import *``).
PULL_STAR = "*"

Buffer = bytes | bytearray | memoryview


#: Data larger than this is hashed as leaves of this size, in parallel (``content_hash``).
LEAF_BYTES = 8 * 1024 * 1024
_TREE = b"remotecell-tree\0"
_pool: tuple[int, ThreadPoolExecutor] | None = None


def content_hash(data: Buffer) -> str:
    """The blob id of ``data``, as 32 hex digits.

    Up to ``LEAF_BYTES``: its xxh3-128. Larger: the xxh3-128 of a prefix, its length and
    the xxh3-128 of each ``LEAF_BYTES`` piece, the pieces hashed in threads (xxhash
    releases the GIL), so 100 MiB takes about 2 ms on two cores instead of 4: the
    notebook hashes every buffer of every cell, and a runner checks what it reads.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    if view.nbytes <= LEAF_BYTES:
        return xxhash.xxh3_128_hexdigest(view)
    pieces = [view[i : i + LEAF_BYTES] for i in range(0, view.nbytes, LEAF_BYTES)]
    return _root(view.nbytes, _threads().map(xxhash.xxh3_128_digest, pieces))


def _root(size: int, leaves: Iterable[bytes]) -> str:
    root = xxhash.xxh3_128(_TREE)
    root.update(size.to_bytes(8, "little"))
    for leaf in leaves:
        root.update(leaf)
    return root.hexdigest()


def _threads() -> ThreadPoolExecutor:
    """The hashing threads of this process (a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(min(4, os.cpu_count() or 1), "rc-hash"))
    return _pool[1]


class ContentHasher:
    """``content_hash`` of data that arrives in pieces of any size (an upload)."""

    def __init__(self) -> None:
        self._leaves: list[bytes] = []
        self._leaf = xxhash.xxh3_128()
        self._in_leaf = 0
        self.size = 0

    def update(self, data: Buffer) -> None:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        while view.nbytes:
            if self._in_leaf == LEAF_BYTES:  # a full leaf, and more comes: the next one
                self._leaves.append(self._leaf.digest())
                self._leaf, self._in_leaf = xxhash.xxh3_128(), 0
            take = min(view.nbytes, LEAF_BYTES - self._in_leaf)
            self._leaf.update(view[:take])
            self._in_leaf += take
            self.size += take
            view = view[take:]

    def hexdigest(self) -> str:
        if self.size <= LEAF_BYTES:
            return self._leaf.hexdigest()
        return _root(self.size, [*self._leaves, self._leaf.digest()])


#: A content hash's length: xxh3-128 as lowercase hex.
HASH_CHARS = 32


def value_refs(values: Iterable[pb.Value]) -> list[str]:
    """The blobs wire values name: large pickle streams and out-of-band buffers."""
    refs: list[str] = []
    for value in values:
        refs.extend(value.buffers)
        if value.pickle_blob:
            refs.append(value.pickle_blob)
    return refs


def is_content_hash(text: object) -> bool:
    """Whether ``text`` has the form of a :func:`content_hash` (32 lowercase hex digits)."""
    return (
        isinstance(text, str)
        and len(text) == HASH_CHARS
        and all(c in "0123456789abcdef" for c in text)
    )


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
    """The C pickler, with notebook-defined code by value, modules by name, and this
    process's shell and streams by reference (``_process``)."""

    def __init__(self, file: io.BytesIO, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._reducers = {**REDUCERS, **type_reducers()}
        self._known = known_objects()
        self._widget = widget_class()  # ipywidgets travel by reference to their comm

    def reducer_override(self, obj: Any) -> Any:
        # Called for nearly every object: one lookup by type settles most of them.
        cls = type(obj)
        reduce = self._reducers.get(cls)
        if reduce is not None:
            reduced = reduce(obj)
            if reduced is NotImplemented and id(obj) in self._known:  # get_ipython, bound
                return process_object, (self._known[id(obj)],)
            return reduced
        if isinstance(obj, type):
            return reduce_class(obj) if obj.__module__ == "__main__" else NotImplemented
        module = cls.__module__
        if module == "dataclasses" and (name := dataclass_sentinel(obj)):
            return getattr, (sys.modules["dataclasses"], name)
        if module == "typing" and cls.__name__ == "ForwardRef":
            return forward_ref, (obj.__forward_arg__, obj.__forward_module__)
        if module == "torch":  # never imported here for a value that is no tensor
            torch = sys.modules["torch"]
            return reduce_tensor(obj, torch) if cls is torch.Tensor else NotImplemented
        if isinstance(obj, types.ModuleType):  # a lazy module's own type too
            return importlib.import_module, (obj.__name__,)
        if isinstance(obj, (property, staticmethod, classmethod)):  # a subclass of one
            return REDUCERS[next(b for b in cls.__mro__ if b in REDUCERS)](obj)
        name = self._known.get(id(obj))
        if name is None:
            widget = self._widget is not None and isinstance(obj, self._widget)
            return reduce_widget(obj) if widget else NotImplemented
        return process_object, (name,)


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
    token = TARGET.set(namespace if namespace is not None else {})
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
        TARGET.reset(token)
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
