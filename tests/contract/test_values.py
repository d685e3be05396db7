"""Round trips of notebook values through ``pack`` and ``unpack``, blobs in a dict."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from remotecell._proto import pb
from remotecell.contract.errors import ClosureError
from remotecell.contract.values import (
    INLINE_PICKLE_MAX,
    OUT_OF_BAND_MIN,
    Packed,
    content_hash,
    pack,
    unpack,
)


class BlobStore(dict[str, bytes]):
    """What the control plane's blob store is to pack and unpack: bytes by hash."""

    def upload(self, packed: Packed) -> None:
        for digest, view in packed.blobs.items():
            self[digest] = bytes(view)

    def fetch(self, digest: str) -> bytes:
        return self[digest]


def round_trip(
    items: dict[str, Any], namespace: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Packed, BlobStore]:
    packed = pack(items)
    # over the wire: the values are protobuf messages, the blobs bytes
    wire = [pb.Value.FromString(v.SerializeToString()) for v in packed.values]
    store = BlobStore()
    store.upload(packed)
    return unpack(wire, store.fetch, namespace), packed, store


_RUNNER = """
import pickle, sys
from remotecell._proto import pb
from remotecell.contract.values import pack, unpack

sent = pickle.load(sys.stdin.buffer)
ns = {"__name__": "__main__"}
values = [pb.Value.FromString(v) for v in sent["values"]]
ns.update(unpack(values, sent["blobs"].__getitem__, ns))
exec(sent["cell"], ns)
packed = pack(ns["result"])
blobs = {k: bytes(v) for k, v in packed.blobs.items()}
pickle.dump({"values": [v.SerializeToString() for v in packed.values], "blobs": blobs},
            sys.stdout.buffer)
"""


def in_another_process(items: dict[str, Any], cell: str) -> dict[str, Any]:
    """Unpacks ``items`` in a new Python process, as a runner does, runs ``cell`` there
    and brings back the dict it leaves in ``result``."""
    packed = pack(items)
    sent = {
        "values": [v.SerializeToString() for v in packed.values],
        "blobs": {k: bytes(v) for k, v in packed.blobs.items()},
        "cell": textwrap.dedent(cell),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER], input=pickle.dumps(sent), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()
    back = pickle.loads(proc.stdout)
    values = [pb.Value.FromString(v) for v in back["values"]]
    return unpack(values, back["blobs"].__getitem__)


def notebook(source: str) -> dict[str, Any]:
    """Runs ``source`` as a notebook cell: what it defines has ``__module__ == "__main__"``."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<notebook>", "exec"), ns)
    return ns


# -- notebook code ---------------------------------------------------------------------


def test_notebook_function_travels_by_value() -> None:
    nb = notebook(
        """
        import math
        SCALE = 3
        def f(x):
            return math.sqrt(x) * SCALE
        """
    )
    assert nb["f"].__module__ == "__main__"
    out, _, _ = round_trip({"f": nb["f"]})
    f = out["f"]
    assert f is not nb["f"]
    assert f(16) == 12.0
    assert f.__name__ == "f" and f.__module__ == "__main__"


def test_function_metadata_survives() -> None:
    nb = notebook(
        '''
        def f(a, b=2, *, c=3) -> int:
            """Adds."""
            return a + b + c
        f.tag = "mine"
        '''
    )
    f = round_trip({"f": nb["f"]})[0]["f"]
    assert f(1) == 6 and f(1, c=10) == 13
    assert f.__doc__ == "Adds."
    assert f.__defaults__ == (2,) and f.__kwdefaults__ == {"c": 3}
    assert f.__annotations__ == {"return": "int"} or f.__annotations__ == {"return": int}
    assert f.tag == "mine"


def test_nested_function_and_closure() -> None:
    nb = notebook(
        """
        OFFSET = 100
        def outer(a):
            b = a * 2
            def inner(c):
                return a + b + c + OFFSET
            return inner
        add = outer(1)
        """
    )
    out, _, _ = round_trip({"outer": nb["outer"], "add": nb["add"]})
    assert out["add"](3) == 1 + 2 + 3 + 100
    assert out["outer"](2)(0) == 2 + 4 + 100


def test_closure_mutation_is_shared_between_closures() -> None:
    nb = notebook(
        """
        def counter():
            n = 0
            def bump():
                nonlocal n
                n += 1
                return n
            def read():
                return n
            return bump, read
        bump, read = counter()
        bump()
        """
    )
    out, _, _ = round_trip({"bump": nb["bump"], "read": nb["read"]})
    assert out["bump"]() == 2
    assert out["read"]() == 2


def test_lambda() -> None:
    nb = notebook("K = 5\nscale = lambda v: v * K\n")
    assert round_trip({"scale": nb["scale"]})[0]["scale"](2) == 10


def test_recursive_and_mutually_recursive_functions() -> None:
    nb = notebook(
        """
        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)
        def even(n):
            return n == 0 or odd(n - 1)
        def odd(n):
            return n != 0 and even(n - 1)
        """
    )
    out, _, _ = round_trip({"fact": nb["fact"], "even": nb["even"]})
    assert out["fact"](6) == 720
    assert out["even"](10) is True and out["even"](7) is False


def test_closure_over_itself() -> None:
    nb = notebook(
        """
        def make():
            def walk(n):
                return 0 if n == 0 else 1 + walk(n - 1)
            return walk
        walk = make()
        """
    )
    assert round_trip({"walk": nb["walk"]})[0]["walk"](5) == 5


def test_notebook_class_and_instance_stay_related() -> None:
    nb = notebook(
        """
        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def norm2(self):
                return self.x ** 2 + self.y ** 2
            def moved(self, dx):
                return Point(self.x + dx, self.y)
        p = Point(3, 4)
        """
    )
    back = in_another_process(
        {"Point": nb["Point"], "p": nb["p"]},
        """
        result = {
            "same_type": type(p) is Point,
            "isinstance": isinstance(p, Point),
            "norm2": p.norm2(),
            "moved_same_type": type(p.moved(1)) is Point,
            "module": Point.__module__,
        }
        """,
    )
    assert back == {
        "same_type": True,
        "isinstance": True,
        "norm2": 25,
        "moved_same_type": True,
        "module": "__main__",
    }


def test_function_using_a_notebook_class_sees_the_same_class_as_the_instances() -> None:
    nb = notebook(
        """
        class Model:
            pass
        def is_model(obj):
            return isinstance(obj, Model)
        def make():
            return Model()
        m = Model()
        """
    )
    back = in_another_process(
        {"m": nb["m"], "is_model": nb["is_model"], "make": nb["make"]},
        "result = {'is_model': is_model(m), 'made': type(make()) is type(m)}",
    )
    assert back == {"is_model": True, "made": True}


def test_a_notebook_class_comes_back_as_itself() -> None:
    # the runner has a copy of the class; an instance it makes comes back as the original's
    nb = notebook("class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    Thing = nb["Thing"]
    back = in_another_process(
        {"Thing": Thing},
        """
        class Other:
            pass
        result = {"made": Thing(7), "other": Other(), "cls": Thing}
        """,
    )
    assert type(back["made"]) is Thing and back["made"].v == 7
    assert back["cls"] is Thing
    assert type(back["other"]).__name__ == "Other"


def test_in_one_process_a_class_unpacks_to_itself() -> None:
    nb = notebook("class Thing:\n    pass\nt = Thing()\n")
    out, _, _ = round_trip({"t": nb["t"]})
    assert type(out["t"]) is nb["Thing"]


def test_instance_only_brings_its_class() -> None:
    nb = notebook(
        """
        from dataclasses import dataclass
        @dataclass
        class Config:
            lr: float
            steps: int = 10
        cfg = Config(0.1)
        """
    )
    cfg = round_trip({"cfg": nb["cfg"]})[0]["cfg"]
    assert cfg.lr == 0.1 and cfg.steps == 10
    assert cfg == type(cfg)(0.1, 10)


def test_functions_in_containers_and_partials() -> None:
    nb = notebook(
        """
        import functools
        def power(x, n):
            return x ** n
        square = functools.partial(power, n=2)
        table = {"cube": lambda x: power(x, 3)}
        """
    )
    out, _, _ = round_trip({"square": nb["square"], "table": nb["table"]})
    assert out["square"](4) == 16
    assert out["table"]["cube"](2) == 8


def test_cached_notebook_function() -> None:
    nb = notebook(
        """
        import functools
        @functools.lru_cache(maxsize=32)
        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)
        fib(20)
        """
    )
    runner_ns: dict[str, Any] = {}
    out, _, _ = round_trip({"fib": nb["fib"]}, runner_ns)
    fib = out["fib"]
    assert fib(30) == 832040
    assert fib.cache_parameters() == {"maxsize": 32, "typed": False}
    assert runner_ns["fib"] is fib  # its recursive calls go through the cache
    assert fib.cache_info().hits > 0


def test_library_functions_and_classes_travel_by_reference() -> None:
    out, _, _ = round_trip({"dumps": pickle.dumps, "Thread": threading.Thread})
    assert out["dumps"] is pickle.dumps
    assert out["Thread"] is threading.Thread


def test_a_function_referring_to_an_unsendable_global_fails_with_its_name() -> None:
    nb = notebook(
        """
        import threading
        guard = threading.Lock()
        def locked():
            with guard:
                return 1
        """
    )
    with pytest.raises(ClosureError) as err:
        pack({"locked": nb["locked"]})
    assert err.value.name == "locked"
    assert "lock" in err.value.reason


def test_a_function_ignores_globals_it_does_not_use() -> None:
    nb = notebook(
        """
        import threading
        guard = threading.Lock()
        def f(obj):
            return obj.guard
        """
    )
    # `guard` here is an attribute, not the notebook's lock
    f = round_trip({"f": nb["f"]})[0]["f"]
    assert f(types.SimpleNamespace(guard=1)) == 1


# -- rebinding to the namespace unpacked into ------------------------------------------


def test_function_sees_the_namespace_it_is_unpacked_into() -> None:
    nb = notebook(
        """
        LIMIT = 3
        def clip(v):
            return min(v, LIMIT)
        def uses_later(v):
            return v + defined_on_the_runner
        """
    )
    runner_ns: dict[str, Any] = {"LIMIT": 10, "defined_on_the_runner": 1}
    out, _, _ = round_trip({"clip": nb["clip"], "uses_later": nb["uses_later"]}, runner_ns)
    runner_ns.update(out)
    assert runner_ns["clip"].__globals__ is runner_ns
    assert runner_ns["clip"](50) == 10  # the namespace's LIMIT wins
    assert runner_ns["uses_later"](1) == 2
    runner_ns["LIMIT"] = 20
    assert runner_ns["clip"](50) == 20


def test_globals_a_function_used_join_the_namespace_without_overriding_it() -> None:
    nb = notebook(
        """
        import math
        FACTOR = 2
        def f(v):
            return math.floor(v * FACTOR)
        """
    )
    runner_ns: dict[str, Any] = {"FACTOR": 5}
    out, _, _ = round_trip({"f": nb["f"]}, runner_ns)
    assert runner_ns["math"] is sys.modules["math"]
    assert runner_ns["FACTOR"] == 5
    assert out["f"](1.5) == 7


def test_global_statement_writes_the_namespace() -> None:
    nb = notebook(
        """
        calls = 0
        def bump():
            global calls
            calls += 1
        """
    )
    runner_ns: dict[str, Any] = {}
    out, _, _ = round_trip({"bump": nb["bump"]}, runner_ns)
    out["bump"]()
    out["bump"]()
    assert runner_ns["calls"] == 2
    assert nb["calls"] == 0


def test_rebinding_keeps_shared_functions_shared() -> None:
    nb = notebook("def f():\n    return 1\n")
    f = nb["f"]
    out, _, _ = round_trip({"f": f, "g": f, "hooks": [f]}, {})
    assert out["f"] is out["g"] is out["hooks"][0]


def test_functions_in_containers_are_rebound_too() -> None:
    nb = notebook("def read():\n    return SETTING\nhooks = [read]\n")
    nb["SETTING"] = "notebook"
    runner_ns = {"SETTING": "runner"}
    out, _, _ = round_trip({"hooks": nb["hooks"]}, runner_ns)
    assert out["hooks"][0]() == "runner"


def test_without_a_namespace_functions_share_one_private_one() -> None:
    nb = notebook(
        """
        total = 0
        def add(v):
            global total
            total += v
        def get():
            return total
        """
    )
    out, _, _ = round_trip({"add": nb["add"], "get": nb["get"]})
    out["add"](5)
    assert out["get"]() == 5
    assert out["add"].__globals__ is out["get"].__globals__


# -- sharing and data ------------------------------------------------------------------


def test_objects_shared_between_names_stay_shared() -> None:
    shared = {"k": [1, 2]}
    out, _, _ = round_trip({"a": shared, "b": shared, "c": [shared]})
    assert out["a"] is out["b"] is out["c"][0]
    out["a"]["k"].append(3)
    assert out["b"]["k"] == [1, 2, 3]


def test_plain_values_round_trip() -> None:
    items = {
        "i": 7,
        "s": "text",
        "none": None,
        "nested": {"t": (1, 2.5, b"raw"), "set": {1, 2}},
        "big_list": list(range(10_000)),
    }
    out, packed, store = round_trip(items)
    assert out == items
    assert store == {}
    assert [v.kind for v in packed.values] == [pb.Value.NAMESPACE]
    assert list(packed.values[0].names) == list(items)
    assert "i: int" in packed.values[0].type_name


def test_large_array_travels_out_of_band_and_comes_back_writable() -> None:
    arr = np.arange(OUT_OF_BAND_MIN // 8 * 4, dtype=np.float64)  # 256 KiB
    out, packed, store = round_trip({"arr": arr})
    (value,) = packed.values
    assert len(value.buffers) == 1
    digest = value.buffers[0]
    assert digest == content_hash(arr.tobytes())
    assert store[digest] == arr.tobytes()
    assert len(value.pickle) < 1024  # the data is not in the pickle
    back = out["arr"]
    np.testing.assert_array_equal(back, arr)
    assert back.dtype == arr.dtype
    assert back.flags.writeable
    back[0] = -1.0
    assert arr[0] == 0.0


def test_identical_arrays_share_one_blob_but_not_memory() -> None:
    a = np.ones((300, 300))
    b = a.copy()
    out, packed, store = round_trip({"a": a, "b": b, "also_a": a})
    assert len(store) == 1
    assert list(packed.values[0].buffers) == [content_hash(a.tobytes())] * 2
    assert out["a"] is out["also_a"]
    assert out["a"] is not out["b"]
    out["a"][0, 0] = 5.0
    assert out["b"][0, 0] == 1.0


def test_fetch_handing_out_one_buffer_twice_does_not_alias_arrays() -> None:
    a = np.zeros(OUT_OF_BAND_MIN)
    packed = pack({"a": a, "b": a.copy()})
    data = bytearray(bytes(next(iter(packed.blobs.values()))))
    out = unpack(packed.values, lambda digest: data)
    out["a"][0] = 1.0
    assert out["b"][0] == 0.0


def test_large_bytes_and_bytearray_values_travel_out_of_band() -> None:
    data = bytes(range(256)) * (OUT_OF_BAND_MIN // 256 * 2)
    mutable = bytearray(data[::-1])
    small = b"tiny"
    out, packed, _ = round_trip({"data": data, "mutable": mutable, "small": small})
    assert set(packed.blobs) == {content_hash(data), content_hash(bytes(mutable))}
    assert out == {"data": data, "mutable": mutable, "small": small}
    assert type(out["data"]) is bytes and type(out["mutable"]) is bytearray
    assert len(packed.values[0].pickle) < 200  # neither is copied into the stream


def test_small_array_stays_in_band() -> None:
    small = np.arange(100)
    out, packed, store = round_trip({"small": small})
    assert store == {} and not packed.values[0].buffers
    np.testing.assert_array_equal(out["small"], small)
    assert out["small"].flags.writeable


def test_non_contiguous_array_is_copied_in_band() -> None:
    arr = np.arange(OUT_OF_BAND_MIN, dtype=np.int64)[::2]
    out, _, _ = round_trip({"view": arr})
    np.testing.assert_array_equal(out["view"], arr)


def test_huge_pickle_stream_goes_as_a_blob() -> None:
    text = "x" * (INLINE_PICKLE_MAX + 10)
    out, packed, store = round_trip({"text": text})
    (value,) = packed.values
    assert value.pickle_blob in store and not value.pickle
    assert out["text"] == text


def test_size_counts_the_stream_and_each_blob_once() -> None:
    a = np.ones(OUT_OF_BAND_MIN)
    packed = pack({"a": a, "b": a.copy()})
    (value,) = packed.values
    assert a.nbytes < value.size < 2 * a.nbytes
    assert packed.size == value.size


def test_dataframe_round_trip() -> None:
    df = pd.DataFrame(
        {
            "x": np.arange(50_000, dtype=np.float64),
            "label": ["a", "b"] * 25_000,
            "when": pd.date_range("2024-01-01", periods=50_000, freq="s"),
        }
    )
    out, _, store = round_trip({"df": df})
    pd.testing.assert_frame_equal(out["df"], df)
    assert store, "the float column should travel as a blob"
    out["df"].loc[0, "x"] = 99.0
    assert out["df"].loc[0, "x"] == 99.0 and df.loc[0, "x"] == 0.0


# -- modules ---------------------------------------------------------------------------


def test_modules_travel_by_name() -> None:
    import os.path

    out, packed, store = round_trip({"np": np, "osp": os.path})
    assert out["np"] is np and out["osp"] is os.path
    assert [(v.kind, v.name, v.module) for v in packed.values] == [
        (pb.Value.MODULE, "np", "numpy"),
        (pb.Value.MODULE, "osp", os.path.__name__),
    ]
    assert store == {}


def test_modules_inside_values_travel_by_name() -> None:
    out, _, _ = round_trip({"tools": {"np": np}})
    assert out["tools"]["np"] is np


def test_missing_module_raises_on_unpack() -> None:
    fake = types.ModuleType("remotecell_no_such_module")
    packed = pack({"fake": fake})
    with pytest.raises(ModuleNotFoundError) as err:
        unpack(packed.values, BlobStore().fetch)
    assert err.value.name == "remotecell_no_such_module"


# -- what cannot travel ----------------------------------------------------------------


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    s = socket.socket()
    yield s
    s.close()


@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda: threading.Lock(), "_thread.lock"),
        (lambda: (i for i in range(3)), "generator"),
    ],
)
def test_unsendable_value_names_the_variable_and_type(make: Any, type_name: str) -> None:
    with pytest.raises(ClosureError) as err:
        pack({"fine": 1, "trouble": make(), "also_fine": [2]})
    message = str(err.value)
    assert "`trouble`" in message and type_name in message
    assert "fine" not in message.replace("`trouble`", "")
    assert err.value.name == "trouble"
    assert err.value.reason


def test_open_socket_is_unsendable(sock: socket.socket) -> None:
    with pytest.raises(ClosureError, match=r"`conn` \(socket\.socket\)") as err:
        pack({"conn": sock})
    assert err.value.name == "conn"


def test_unsendable_value_nested_in_a_container() -> None:
    with pytest.raises(ClosureError, match=r"`state` \(dict\)") as err:
        pack({"state": {"lock": threading.Lock()}})
    assert err.value.name == "state"
    assert "lock" in err.value.reason
