"""How notebook code travels by value inside ``values``' pickles: functions (their code
through dill, their globals through the same pickle), notebook classes (a skeleton made by
their metaclass, then their attributes, with an id that keeps them one class both ways),
and the pieces found in class dictionaries; and PyTorch tensors as their bytes.

``values._Pickler`` asks ``REDUCERS`` (by exact type) and the functions here; the loaders
named in a pickle (``_new_function``, ``_new_class``, ...) live here too.
"""

from __future__ import annotations

import builtins
import contextvars
import dis
import enum
import functools
import importlib
import sys
import types
import uuid
import weakref
from collections.abc import Callable
from typing import Any

import dill

#: Buffers at least this large leave the pickle stream and travel as blobs.
OUT_OF_BAND_MIN = 64 * 1024


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


REDUCERS: dict[type, Callable[[Any], Any]] = {
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


def reduce_tensor(tensor: Any, torch: Any) -> Any:
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
TARGET: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
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
        globals_ = TARGET.get()
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


def forward_ref(arg: str, module: Any) -> Any:
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


def reduce_class(cls: type) -> tuple[Any, ...]:
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


def dataclass_sentinel(obj: Any) -> str | None:
    """The name of ``obj`` when it is one of the markers the dataclasses module compares
    by identity (``MISSING``, a field's kind): it must arrive as that marker."""
    return _dataclass_sentinels().get(id(obj))
