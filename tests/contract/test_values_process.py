"""Objects that stand for their process travel by reference, both ways: the IPython shell
(and ``get_ipython``, bound to it), its display publisher and hook, ``sys.stdout`` and
``sys.stderr`` load as the other process's own; a display handle travels as its id.

Each side is a new Python process with an IPython shell of its own, as a notebook
kernel and a runner are: a cell runs there with ``run_cell`` and what it leaves in
``result`` is packed after the cell, as the runner packs what a cell assigned.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import subprocess
import sys
import textwrap
from typing import Any

from test_values import round_trip

from remotecell._proto import pb
from remotecell.contract.values import ProcessStream, unpack

_SIDE = """
import os, pickle, sys
reply = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)  # what the cell displays goes to stderr, the reply alone to stdout
from remotecell._proto import pb
from remotecell.contract.values import pack, unpack

sent = pickle.load(sys.stdin.buffer)
if sent["shell"]:
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    ns = shell.user_ns
else:
    ns = {"__name__": "__main__"}
values = [pb.Value.FromString(v) for v in sent["values"]]
ns.update(unpack(values, sent["blobs"].__getitem__, ns))
if sent["shell"]:
    ran = shell.run_cell(sent["cell"])
    assert ran.success, ran.error_in_exec or ran.error_before_exec
else:
    exec(sent["cell"], ns)
packed = pack(ns["result"])
pickle.dump({"values": [v.SerializeToString() for v in packed.values],
             "blobs": {k: bytes(v) for k, v in packed.blobs.items()}}, reply)
reply.close()
"""


def run_side(cell: str, sent: dict[str, Any] | None = None, shell: bool = True) -> dict[str, Any]:
    """Unpacks ``sent`` (what another side packed) in a new process, runs ``cell`` there
    (in an IPython shell of its own, with ``shell``) and returns what it packed."""
    message = {"values": [], "blobs": {}, **(sent or {})}
    message.update(cell=textwrap.dedent(cell), shell=shell)
    proc = subprocess.run(
        [sys.executable, "-c", _SIDE], input=pickle.dumps(message), capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode()
    loaded: dict[str, Any] = pickle.loads(proc.stdout)
    return loaded


def here(sent: dict[str, Any], errors: dict[str, Exception] | None = None) -> dict[str, Any]:
    values = [pb.Value.FromString(v) for v in sent["values"]]
    return unpack(values, sent["blobs"].__getitem__, errors=errors)


_MADE_ON_ONE_SIDE = """
import sys
from IPython.display import display

def shell_of():
    return get_ipython()

def say(text, out=sys.stdout, err=sys.stderr):
    print(text, file=out)
    print(text.upper(), file=err)

shell = get_ipython()
h = display("first", display_id=True)
result = {
    "shell_of": shell_of, "say": say, "shell": shell, "get": get_ipython, "exit": exit,
    "pub": shell.display_pub, "hook": shell.displayhook, "h": h, "h_id": h.display_id,
}
"""

_USED_ON_THE_OTHER = """
import contextlib, io, sys
from IPython.display import DisplayHandle

own = get_ipython()
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    say("hello")
result = {
    "shell_of": shell_of() is own,
    "shell": shell is own,
    "get": get() is own,
    "exit": exit._ip is own,
    "pub": pub is own.display_pub,
    "hook": hook is own.displayhook,
    "say": (out.getvalue(), err.getvalue()),
    "h": isinstance(h, DisplayHandle) and h.display_id == h_id,
    "back": (shell_of, say, shell, pub, h),
}
"""


def test_the_shell_and_streams_load_as_the_other_sides_own() -> None:
    made = run_side(_MADE_ON_ONE_SIDE)
    checks = here(run_side(f"{_USED_ON_THE_OTHER}\nresult.pop('back')", made))
    assert checks == {
        "shell_of": True,
        "shell": True,
        "get": True,
        "exit": True,
        "pub": True,
        "hook": True,
        "say": ("hello\n", "HELLO\n"),
        "h": True,
    }


def test_what_went_over_and_back_is_the_first_sides_own_again() -> None:
    made = run_side(_MADE_ON_ONE_SIDE)
    used = run_side(f"{_USED_ON_THE_OTHER}\nresult = {{'back': result['back']}}", made)
    check = """
    own = get_ipython()
    shell_of, say, shell, pub, h = back
    result = {"same": [shell_of() is own, shell is own, pub is own.display_pub], "id": h.display_id}
    """
    assert here(run_side(check, used)) == {"same": [True] * 3, "id": here(made, errors={})["h_id"]}


def test_without_an_ipython_shell_the_shell_loads_as_none() -> None:
    made = run_side(_MADE_ON_ONE_SIDE)
    check = """
    import sys
    result = {"got": [shell, pub, shell_of(), type(say.__defaults__[0]).__name__]}
    """
    assert here(run_side(check, made, shell=False))["got"] == [None, None, None, "ProcessStream"]


def test_a_stream_writes_to_the_process_stream_of_the_moment() -> None:
    loaded, _, _ = round_trip({"out": sys.stdout, "err": sys.stderr})
    out, err = loaded["out"], loaded["err"]
    assert isinstance(out, ProcessStream) and isinstance(err, ProcessStream)
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        print("one", file=out)
    with contextlib.redirect_stdout(second):
        print("two", file=out)
        out.flush()
    assert (first.getvalue(), second.getvalue()) == ("one\n", "two\n")
    with contextlib.redirect_stderr(first):
        err.write("three\n")
    assert first.getvalue() == "one\nthree\n"
    again, _, _ = round_trip({"out": out})
    assert isinstance(again["out"], ProcessStream) and again["out"].name == "stdout"


def test_a_display_handle_travels_as_its_display_id() -> None:
    from IPython.display import DisplayHandle

    loaded, packed, _ = round_trip({"h": DisplayHandle("abc123")})
    assert type(loaded["h"]) is DisplayHandle
    assert loaded["h"].display_id == "abc123"
    assert packed.size < 300
