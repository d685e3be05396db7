"""Classes that are not plain classes, through a real kernel and runner, both ways:
enums, dataclasses, named tuples, metaclasses, ``__slots__``, models and decorated
functions keep their identity, and a class made remotely is a notebook name after."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.kernel

_NOTEBOOK = """
import dataclasses, enum, functools
from dataclasses import dataclass, field
from typing import NamedTuple

class Color(enum.Enum):
    RED = 1
    GREEN = 2
    def describe(self):
        return f"{self.name.lower()}={self.value}"

@dataclass
class Config:
    lr: float
    tags: list = field(default_factory=list)

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 0

class Pair(NamedTuple):
    left: int
    right: int = 0
    def total(self):
        return self.left + self.right

class ModelMeta(type):
    def __new__(meta, name, bases, ns):
        fields = dict(getattr(bases[0], "_fields", {})) if bases else {}
        for key in ns.get("__annotations__", {}):
            fields[key] = ns.pop(key, None)
        ns["_fields"] = fields
        return super().__new__(meta, name, bases, ns)

class Model(metaclass=ModelMeta):
    def __init__(self, **values):
        if set(values) - set(self._fields):
            raise TypeError(f"unknown fields: {sorted(set(values) - set(self._fields))}")
        for key, default in self._fields.items():
            setattr(self, key, values.get(key, default))

class User(Model):
    name: str
    age: int = 0

class Slotted:
    __slots__ = ("a",)
    def __init__(self, a):
        self.a = a

calls = []

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        calls.append(fn.__name__)
        return fn(*args)
    return wrapper

@logged
def add(a, b):
    return a + b

color, cfg, point, pair = Color.RED, Config(0.1, ["a"]), Point(1, 2), Pair(3)
user, slotted = User(name="ada", age=36), Slotted(5)
"""


def test_notebook_classes_reach_the_runner_and_what_comes_back_is_theirs(kernel):
    kernel.ok(_NOTEBOOK)
    run = kernel.ok(
        """%%remote
ok = {
    "color": color is Color.RED and Color(2).describe() == "green=2",
    "cfg": isinstance(cfg, Config) and dataclasses.asdict(cfg) == {"lr": 0.1, "tags": ["a"]},
    "factory": Config(1.0).tags == [],
    "point": point == Point(1, 2) and hash(point) == hash(Point(1, 2)),
    "pair": isinstance(pair, Pair) and pair.total() == 3,
    "user": type(User).__name__ == "ModelMeta" and (user.name, user.age) == ("ada", 36),
    "slotted": slotted.a == 5 and not hasattr(slotted, "__dict__"),
    "add": add(2, 3) == 5 and add.__name__ == "add",
}
green = Color.GREEN
cfg2 = dataclasses.replace(cfg, lr=0.5)
moved = dataclasses.replace(point, y=9)
pair2 = Pair(1, 1)
user2 = User(name="bob")
slotted2 = Slotted(6)
add_back = add
"""
    )
    assert "Warning" not in run.stderr, run.stderr
    assert kernel.value("ok") == {k: True for k in kernel.value("list(ok)")}
    checks = kernel.value(
        """{
    "green": green is Color.GREEN,
    "cfg2": type(cfg2) is Config and cfg2 == Config(0.5, ["a"]),
    "moved": type(moved) is Point and moved == Point(1, 9),
    "pair2": type(pair2) is Pair and pair2.total() == 2,
    "user2": type(user2) is User and user2.age == 0,
    "slotted2": type(slotted2) is Slotted and slotted2.a == 6,
    "add": add_back(1, 2) == 3 and add_back.__wrapped__(1, 1) == 2,
}"""
    )
    assert checks == {k: True for k in checks}


def test_classes_defined_remotely_come_back_as_notebook_names(kernel):
    run = kernel.ok(
        """%%remote
import dataclasses, enum
from dataclasses import dataclass, field
from typing import NamedTuple

class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2

@dataclass(frozen=True)
class Spec:
    name: str
    sizes: list = field(default_factory=list)

class Row(NamedTuple):
    key: str
    value: int = 0

level = Level.HIGH
spec = Spec("a", [1])
row = Row("k")
"""
    )
    assert "Warning" not in run.stderr, run.stderr
    local = kernel.value(
        """{
    "level": level is Level.HIGH and isinstance(level, Level) and level == 2,
    "made_here": Level(1) is Level.LOW and Spec("b").sizes == [] and Row("x").value == 0,
    "spec": type(spec) is Spec and dataclasses.asdict(spec) == {"name": "a", "sizes": [1]},
    "row": type(row) is Row and row == ("k", 0),
}"""
    )
    assert local == {k: True for k in local}
    # usable in the next remote cell, and what comes back is still the notebook's class
    kernel.ok(
        """%%remote
same = level is Level.HIGH and type(spec) is Spec and type(row) is Row
low = Level.LOW
spec2 = dataclasses.replace(spec, name="z")
"""
    )
    assert kernel.value("same") is True
    assert kernel.value("low is Level.LOW and type(spec2) is Spec and spec2.name == 'z'") is True


@pytest.mark.skipif(importlib.util.find_spec("pydantic") is None, reason="pydantic not installed")
def test_a_pydantic_model_both_ways(kernel):
    kernel.ok(
        "from pydantic import BaseModel\n"
        "class Item(BaseModel):\n    name: str\n    price: float = 0.0\n"
        "item = Item(name='pen', price=2)"
    )
    kernel.ok(
        "%%remote\nimport pydantic\nok = isinstance(item, Item) and item.price == 2.0\n"
        "cup = Item.model_validate({'name': 'cup', 'price': '3.5'})\n"
        "class Order(pydantic.BaseModel):\n    items: list[Item]\n"
        "order = Order(items=[item, cup])"
    )
    assert kernel.value("ok") is True
    assert kernel.value("type(cup) is Item and cup.price == 3.5") is True
    assert kernel.value("[type(i) is Item for i in order.items]") == [True, True]
    assert kernel.value("Order(items=[{'name': 'x'}]).items[0].price") == 0.0


def test_a_pulled_name_that_cannot_be_loaded_is_named_and_the_others_arrive(kernel):
    run = kernel.ok(
        """%%remote
import sys, types
only_here = types.ModuleType("only_on_the_runner")
exec("class Thing:\\n    pass\\n", only_here.__dict__)
sys.modules["only_on_the_runner"] = only_here
thing = only_here.Thing()
kept = [1, 2]
class Fragile:
    def __reduce__(self):  # rebuilt by calling eval("1/0") where it is loaded
        return eval, ("1/0",)
fragile = Fragile()
del only_here, Fragile
"""
    )
    assert "not brought back: `thing`: module 'only_on_the_runner' is not installed" in run.stderr
    assert (
        "not brought back: `fragile`: it cannot be loaded in this kernel: "
        "ZeroDivisionError: division by zero"
    ) in run.stderr
    assert kernel.value("kept") == [1, 2]
    assert kernel.value("'thing' in dir() or 'fragile' in dir()") is False
