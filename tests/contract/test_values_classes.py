"""Classes that are not plain classes, both ways: enums, dataclasses, named tuples,
metaclasses, ``__slots__``, models, decorated functions.

A class defined in the notebook travels to a runner (another process here) and keeps
its identity there (``x is Color.RED``); one defined on the runner comes back as a class
the notebook can use and send again; the notebook's own class comes back as itself.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from test_values import BlobStore, in_another_process, notebook, round_trip

from remotecell._proto import pb
from remotecell.contract.values import unpack


def from_another_process(cell: str, *, errors: dict[str, Exception] | None = None) -> Any:
    """Runs ``cell`` in a new Python process, as a runner does, and unpacks the dict it
    leaves in ``result`` here (``errors`` collects the names that cannot be loaded)."""
    return _unpack_here(_run_elsewhere(cell), errors)


_RUNNER = """
import pickle, sys
from remotecell.contract.values import pack

ns = {"__name__": "__main__"}
exec(sys.stdin.read(), ns)
packed = pack(ns["result"])
pickle.dump({"values": [v.SerializeToString() for v in packed.values],
             "blobs": {k: bytes(v) for k, v in packed.blobs.items()}}, sys.stdout.buffer)
"""


def _run_elsewhere(cell: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER],
        input=textwrap.dedent(cell).encode(),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Warning" not in proc.stderr, proc.stderr.decode()
    sent: dict[str, Any] = pickle.loads(proc.stdout)
    return sent


def _unpack_here(sent: dict[str, Any], errors: dict[str, Exception] | None) -> dict[str, Any]:
    values = [pb.Value.FromString(v) for v in sent["values"]]
    ns: dict[str, Any] = {"__name__": "__main__"}
    ns.update(unpack(values, sent["blobs"].__getitem__, ns, errors=errors))
    return ns


# -- enums -----------------------------------------------------------------------------


def test_a_notebook_enum_reaches_the_runner_and_comes_back_as_itself() -> None:
    nb = notebook(
        """
        import enum
        class Color(enum.Enum):
            RED = 1
            GREEN = 2
            BLUE = enum.auto()
            CRIMSON = 1  # an alias
            def describe(self):
                return f"{self.name.lower()}={self.value}"
            @property
            def warm(self):
                return self is Color.RED
        c = Color.RED
        """
    )
    Color = nb["Color"]
    back = in_another_process(
        {"Color": Color, "c": nb["c"]},
        """
        result = {
            "identity": c is Color.RED and Color(1) is c and Color["CRIMSON"] is c,
            "isinstance": isinstance(c, Color),
            "members": [m.name for m in Color],
            "aliases": list(Color.__members__),
            "method": Color.GREEN.describe(),
            "property": [c.warm, Color.BLUE.warm],
            "module": Color.__module__,
            "made": Color(2),
            "cls": Color,
            "c": c,
        }
        """,
    )
    assert back["identity"] and back["isinstance"]
    assert back["members"] == ["RED", "GREEN", "BLUE"]
    assert back["aliases"] == ["RED", "GREEN", "BLUE", "CRIMSON"]
    assert back["method"] == "green=2"
    assert back["property"] == [True, False]
    assert back["module"] == "__main__"
    assert back["cls"] is Color
    assert back["c"] is Color.RED and back["made"] is Color.GREEN


def test_an_int_enum_and_a_flag_defined_remotely_come_back_and_can_go_again() -> None:
    back = from_another_process(
        """
        import enum
        class Level(enum.IntEnum):
            LOW = 1
            HIGH = 2
        class Perm(enum.Flag):
            R = 4
            W = 2
            X = 1
        class Mode(str, enum.Enum):
            FAST = "fast"
            SLOW = "slow"
        level = Level.HIGH
        rw = Perm.R | Perm.W
        result = {"Level": Level, "level": level, "Perm": Perm, "rw": rw, "Mode": Mode,
                  "mode": Mode.FAST}
        """
    )
    Level, Perm, Mode = back["Level"], back["Perm"], back["Mode"]
    assert back["level"] is Level.HIGH and back["level"] == 2 and back["level"] > Level.LOW
    assert isinstance(back["level"], Level) and isinstance(back["level"], int)
    assert Level(1) is Level.LOW and [m.name for m in Level] == ["LOW", "HIGH"]
    assert back["rw"] == Perm.R | Perm.W and Perm.W in back["rw"] and Perm.X not in back["rw"]
    assert back["mode"] is Mode.FAST and back["mode"] == "fast" and Mode("slow") is Mode.SLOW
    # usable in the next cell, local or remote: it travels again and comes back as itself
    again = in_another_process(
        {"Level": Level, "level": back["level"], "Perm": Perm},
        """
        result = {"ok": level is Level.HIGH and Level(2) is level, "low": Level.LOW,
                  "all": Perm.R | Perm.W | Perm.X}
        """,
    )
    assert again["ok"] and again["low"] is Level.LOW
    assert again["all"] == Perm.R | Perm.W | Perm.X


def test_enum_members_keep_what_their_init_gave_them() -> None:
    nb = notebook(
        """
        import enum
        class Planet(enum.Enum):
            MERCURY = (3.303e23, 2.4397e6)
            EARTH = (5.976e24, 6.37814e6)
            def __init__(self, mass, radius):
                self.mass = mass
                self.radius = radius
            @property
            def gravity(self):
                return 6.673e-11 * self.mass / (self.radius * self.radius)
        """
    )
    back = in_another_process(
        {"Planet": nb["Planet"]},
        "result = {'g': round(Planet.EARTH.gravity, 2), 'mass': Planet.MERCURY.mass,"
        " 'earth': Planet((5.976e24, 6.37814e6))}",
    )
    assert back == {"g": 9.8, "mass": 3.303e23, "earth": nb["Planet"].EARTH}


def test_an_enum_round_trip_in_one_process() -> None:
    nb = notebook("import enum\nclass Color(enum.Enum):\n    RED = 1\n")
    out, _, _ = round_trip({"Color": nb["Color"], "c": nb["Color"].RED})
    assert out["Color"] is nb["Color"] and out["c"] is nb["Color"].RED


# -- dataclasses -----------------------------------------------------------------------

_DATACLASSES = """
import dataclasses
from dataclasses import dataclass, field

@dataclass
class Config:
    lr: float
    tags: list = field(default_factory=list)
    steps: int = 10
    def scaled(self, k):
        return dataclasses.replace(self, lr=self.lr * k)

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0
"""


def test_notebook_dataclasses_work_on_the_runner_and_come_back_as_themselves() -> None:
    nb = notebook(_DATACLASSES + "cfg = Config(0.1, ['a'])\np = Point(1, 2)\n")
    Config, Point = nb["Config"], nb["Point"]
    back = in_another_process(
        {"Config": Config, "Point": Point, "cfg": nb["cfg"], "p": nb["p"]},
        """
        import dataclasses
        fresh = Config(1.0)
        fresh.tags.append("x")
        try:
            p.x = 5
            frozen = False
        except dataclasses.FrozenInstanceError:
            frozen = True
        result = {
            "isinstance": isinstance(cfg, Config) and isinstance(p, Point),
            "fields": [f.name for f in dataclasses.fields(cfg)],
            "asdict": dataclasses.asdict(cfg),
            "factory_is_fresh": Config(2.0).tags == [],
            "eq_hash": p == Point(1, 2) and hash(p) == hash(Point(1, 2)),
            "frozen": frozen,
            "scaled": cfg.scaled(10),
            "moved": dataclasses.replace(p, y=7),
            "Point": Point,
        }
        """,
    )
    assert back["isinstance"] and back["factory_is_fresh"] and back["eq_hash"] and back["frozen"]
    assert back["fields"] == ["lr", "tags", "steps"]
    assert back["asdict"] == {"lr": 0.1, "tags": ["a"], "steps": 10}
    assert type(back["scaled"]) is Config and back["scaled"] == Config(1.0, ["a"])
    assert type(back["moved"]) is Point and back["moved"] == Point(1, 7)
    assert back["Point"] is Point


def test_a_dataclass_defined_remotely_comes_back_usable() -> None:
    back = from_another_process(
        _DATACLASSES + "result = {'Config': Config, 'Point': Point, 'p': Point(3)}\n"
    )
    Config, Point = back["Config"], back["Point"]
    import dataclasses

    assert type(back["p"]) is Point and back["p"] == Point(3, 0)
    a, b = Config(0.5), Config(0.5)
    a.tags.append(1)
    assert b.tags == [] and a.steps == 10
    assert [f.name for f in dataclasses.fields(Config)] == ["lr", "tags", "steps"]
    assert a.scaled(2) == Config(1.0, [1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        back["p"].x = 1  # type: ignore[misc]
    assert in_another_process({"Point": Point}, "result = {'p': Point(4, 5)}")["p"] == Point(4, 5)


# -- named tuples ----------------------------------------------------------------------


def test_named_tuples_both_ways() -> None:
    source = """
        import collections
        from typing import NamedTuple
        class Pair(NamedTuple):
            left: int
            right: int = 0
            def total(self):
                return self.left + self.right
        Plain = collections.namedtuple("Plain", "a b", defaults=[2])
        """
    nb = notebook(source)
    Pair, Plain = nb["Pair"], nb["Plain"]
    back = in_another_process(
        {"Pair": Pair, "pair": Pair(1, 2), "Plain": Plain},
        """
        result = {"ok": isinstance(pair, Pair) and pair.total() == 3 and pair == (1, 2),
                  "made": Pair(5), "plain": Plain(1), "fields": Pair._fields}
        """,
    )
    assert back["ok"] and back["fields"] == ("left", "right")
    assert type(back["made"]) is Pair and back["made"].total() == 5
    assert type(back["plain"]) is Plain and back["plain"] == (1, 2)

    remote = from_another_process(source + "result = {'Pair': Pair, 'pair': Pair(4)}\n")
    assert type(remote["pair"]) is remote["Pair"] and remote["pair"].total() == 4
    assert remote["Pair"](1, 1)._replace(right=5) == (1, 5)


# -- metaclasses, __slots__, models ----------------------------------------------------

_MODEL = """
class ModelMeta(type):
    registry = {}
    def __new__(meta, name, bases, ns):
        fields = {}
        for base in bases:
            fields.update(getattr(base, "_fields", {}))
        for key in ns.get("__annotations__", {}):
            fields[key] = ns.pop(key, None)
        ns["_fields"] = fields
        cls = super().__new__(meta, name, bases, ns)
        meta.registry[name] = cls
        return cls

class Model(metaclass=ModelMeta):
    def __init__(self, **values):
        unknown = set(values) - set(self._fields)
        if unknown:
            raise TypeError(f"unknown fields: {sorted(unknown)}")
        for key, default in self._fields.items():
            setattr(self, key, values.get(key, default))
    def dump(self):
        return {key: getattr(self, key) for key in self._fields}

class User(Model):
    name: str
    age: int = 0

class Slotted:
    __slots__ = ("a", "b")
    def __init__(self, a, b):
        self.a, self.b = a, b
"""


def test_metaclass_models_and_slotted_classes_both_ways() -> None:
    nb = notebook(_MODEL)
    User, Slotted, ModelMeta = nb["User"], nb["Slotted"], nb["ModelMeta"]
    back = in_another_process(
        {"User": User, "u": User(name="ada", age=36), "s": Slotted(1, [2]), "Slotted": Slotted},
        """
        try:
            User(nope=1)
            rejected = False
        except TypeError:
            rejected = True
        result = {
            "meta": type(User).__name__, "dump": u.dump(), "rejected": rejected,
            "fields": dict(User._fields), "made": User(name="bob"),
            "slots": (s.a, s.b, hasattr(s, "__dict__"), isinstance(s, Slotted)),
            "slotted": Slotted(3, 4),
        }
        """,
    )
    assert back["meta"] == "ModelMeta" and back["rejected"]
    assert back["dump"] == {"name": "ada", "age": 36}
    assert back["fields"] == {"name": None, "age": 0}
    assert type(back["made"]) is User and back["made"].dump() == {"name": "bob", "age": 0}
    assert back["slots"] == (1, [2], False, True)
    assert type(back["slotted"]) is Slotted and back["slotted"].b == 4

    remote = from_another_process(_MODEL + "result = {'User': User, 'u': User(name='eve')}\n")
    RUser = remote["User"]
    assert type(remote["u"]) is RUser and type(RUser).__name__ == "ModelMeta"
    assert RUser(name="x", age=1).dump() == {"name": "x", "age": 1}
    with pytest.raises(TypeError, match="unknown fields"):
        RUser(nope=1)
    assert type(RUser).registry["User"] is not ModelMeta.registry["User"]


def test_pydantic_models_both_ways() -> None:
    pytest.importorskip("pydantic")
    source = """
        from pydantic import BaseModel, Field, field_validator
        class Item(BaseModel):
            name: str
            tags: list[str] = Field(default_factory=list)
            price: float = 0.0
            @field_validator("name")
            @classmethod
            def not_blank(cls, v):
                if not v.strip():
                    raise ValueError("blank name")
                return v
        """
    nb = notebook(source)
    Item = nb["Item"]
    back = in_another_process(
        {"Item": Item, "item": Item(name="pen", price=2)},
        """
        import pydantic
        try:
            Item(name=" ")
            rejected = False
        except pydantic.ValidationError:
            rejected = True
        result = {"ok": isinstance(item, Item), "dump": item.model_dump(), "rejected": rejected,
                  "made": Item.model_validate({"name": "cup", "price": "3.5"})}
        """,
    )
    assert back["ok"] and back["rejected"]
    assert back["dump"] == {"name": "pen", "tags": [], "price": 2.0}
    assert type(back["made"]) is Item and back["made"].price == 3.5

    remote = from_another_process(source + "result = {'Item': Item, 'item': Item(name='ink')}\n")
    RItem = remote["Item"]
    assert type(remote["item"]) is RItem and RItem(name="a", price="1").price == 1.0
    with pytest.raises(ValueError, match="blank name"):
        RItem(name=" ")


# -- decorated functions ---------------------------------------------------------------

_DECORATED = """
import functools

calls = []

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls.append(fn.__name__)
        return fn(*args, **kwargs)
    return wrapper

def repeat(times):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            return [fn(*args) for _ in range(times)]
        return wrapper
    return decorate

@logged
def add(a, b):
    "Adds."
    return a + b

@repeat(3)
def greet(name):
    return f"hi {name}"
"""


def test_functions_decorated_with_functools_wraps_both_ways() -> None:
    nb = notebook(_DECORATED)
    back = in_another_process(
        {"add": nb["add"], "greet": nb["greet"], "calls": nb["calls"], "logged": nb["logged"]},
        """
        @logged
        def mul(a, b):
            return a * b
        result = {"add": add(2, 3), "mul": mul(2, 3), "calls": list(calls),
                  "meta": (add.__name__, add.__doc__, add.__wrapped__(1, 1)),
                  "greet": greet("x"), "mul_fn": mul}
        """,
    )
    assert back["add"] == 5 and back["mul"] == 6 and back["calls"] == ["add", "mul"]
    assert back["meta"] == ("add", "Adds.", 2)
    assert back["greet"] == ["hi x"] * 3
    assert back["mul_fn"](4, 5) == 20 and back["mul_fn"].__name__ == "mul"

    remote = from_another_process(_DECORATED + "result = {'add': add, 'greet': greet}\n")
    assert remote["add"](1, 2) == 3 and remote["add"].__name__ == "add"
    assert remote["greet"]("y") == ["hi y"] * 3


# -- names that cannot be loaded -------------------------------------------------------


def test_a_name_that_cannot_be_loaded_is_named_and_the_others_arrive() -> None:
    errors: dict[str, Exception] = {}
    back = from_another_process(
        """
        import sys, types
        only_here = types.ModuleType("only_here")
        exec("class Thing:\\n    pass\\n", only_here.__dict__)
        sys.modules["only_here"] = only_here
        shared = [1, 2]
        def explode():
            raise ValueError("cannot be rebuilt here")
        class Fragile:
            def __reduce__(self):
                return explode, ()
        result = {"before": shared, "thing": only_here.Thing(), "fragile": Fragile(),
                  "after": shared, "n": 5}
        """,
        errors=errors,
    )
    assert set(errors) == {"thing", "fragile"}
    assert isinstance(errors["thing"], ModuleNotFoundError) and errors["thing"].name == "only_here"
    assert isinstance(errors["fragile"], ValueError)
    assert back["n"] == 5 and back["before"] == [1, 2] and back["before"] is back["after"]
    assert "thing" not in back and "fragile" not in back


def test_without_errors_unpack_raises_the_first_failure() -> None:
    sent = _run_elsewhere(
        """
        def explode():
            raise ValueError("cannot be rebuilt here")
        class Fragile:
            def __reduce__(self):
                return explode, ()
        result = {"fragile": Fragile(), "n": 5}
        """
    )
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        _unpack_here(sent, None)


def test_a_namespace_from_before_still_loads() -> None:
    # events stored by an earlier version hold one pickle of the whole dict
    value = pb.Value(
        kind=pb.Value.NAMESPACE, names=["a", "b"], pickle=pickle.dumps({"a": 1, "b": 2})
    )
    assert unpack([value], BlobStore().fetch) == {"a": 1, "b": 2}


def test_a_library_decorator_keeps_its_own_globals() -> None:
    # contextlib's wrapper is named after the notebook function (functools.wraps) but
    # reads contextlib's globals: it finds them there, and adds none to the namespace
    nb = notebook(
        """
        import contextlib
        @contextlib.contextmanager
        def opened(log):
            log.append("in")
            yield len(log)
            log.append("out")
        """
    )
    ns: dict[str, Any] = {"__name__": "__main__"}
    opened = round_trip({"opened": nb["opened"]}, ns)[0]["opened"]
    log: list[str] = []
    with opened(log) as n:
        assert n == 1
    assert log == ["in", "out"] and opened.__name__ == "opened"
    assert set(ns) == {"__name__"}
    back = in_another_process(
        {"opened": nb["opened"]},
        "log = []\nwith opened(log) as n:\n    pass\nresult = {'log': log}",
    )
    assert back == {"log": ["in", "out"]}
