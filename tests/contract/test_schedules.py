"""The rules for scheduled notebooks (``contract/schedules.py``): names, parameters, their
templates, how they enter a notebook, and which bytes are a notebook."""

from __future__ import annotations

import ast
from datetime import datetime
from zoneinfo import ZoneInfo

import nbformat
import pytest

from remotecell.contract import schedules
from remotecell.contract.errors import ConfigError
from remotecell.contract.schedules import (
    check_name,
    check_notebook,
    check_params,
    inject_parameters,
    render,
)

BERLIN = ZoneInfo("Europe/Berlin")


def due(*when: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(*when, tzinfo=tz).timestamp()  # type: ignore[misc]


# -- names and settings -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nightly", "report-v2", "a", "0", "a" * 63])
def test_a_valid_name_is_returned(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Nightly", "-x", "a_b", "a b", "a" * 64, "ü", None, 3])
def test_an_invalid_name_is_one_sentence_naming_the_rule(name):
    with pytest.raises(ConfigError, match="not a valid schedule name: use 1-63 lowercase"):
        check_name(name)


def test_the_settings_choices():
    assert schedules.KEEP_DEFAULT == 50
    assert schedules.KEEP_DEFAULT <= schedules.MAX_KEEP
    assert schedules.OVERLAP_CHOICES == ("skip", "queue", "allow")
    assert schedules.CATCH_UP_CHOICES == ("none", "once", "all")
    assert schedules.OVERLAP_DEFAULT in schedules.OVERLAP_CHOICES
    assert schedules.CATCH_UP_DEFAULT in schedules.CATCH_UP_CHOICES
    assert schedules.check_overlap("queue") == "queue"
    assert schedules.check_catch_up("all") == "all"
    assert schedules.check_keep(7) == 7
    with pytest.raises(ConfigError, match="overlap='wait' is not one of 'skip', 'queue'"):
        schedules.check_overlap("wait")
    with pytest.raises(ConfigError, match="catch_up=None is not one of"):
        schedules.check_catch_up(None)
    for keep in (0, -1, schedules.MAX_KEEP + 1, 2.0, True, "5"):
        with pytest.raises(ConfigError, match="keep="):
            schedules.check_keep(keep)


def test_a_time_zone_is_an_iana_name():
    assert schedules.check_timezone("Europe/Berlin") == BERLIN
    for tz in ("Mars/Olympus", "", "../etc/passwd", "/etc/localtime", None):
        with pytest.raises(ConfigError, match="is not a time zone: use an IANA name"):
            schedules.check_timezone(tz)


# -- parameters -----------------------------------------------------------------------


def test_json_params_come_back_as_plain_json():
    params = {"lr": 0.1, "n": 3, "on": True, "off": None, "tags": ("a", "b"), "cfg": {"k": [1]}}
    assert check_params(params) == {
        "lr": 0.1,
        "n": 3,
        "on": True,
        "off": None,
        "tags": ["a", "b"],  # a tuple travels as a JSON list
        "cfg": {"k": [1]},
    }
    assert check_params(None) == {}
    assert check_params({"path": "data/{{ ds }}.csv"}) == {"path": "data/{{ ds }}.csv"}


class Tokenizer:
    pass


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model": Tokenizer()},
            r"params\['model'\] is a Tokenizer, which is not JSON; pass strings, numbers",
        ),
        ({"s": {1, 2}}, r"params\['s'\] is a set, which is not JSON"),
        ({"cfg": {"layers": [1, b"x"]}}, r"params\['cfg'\]\['layers'\]\[1\] is a bytes"),
        ({"cfg": {1: "a"}}, r"params\['cfg'\] has the key 1, a int: JSON keys are strings"),
        ({"x": float("nan")}, r"params\['x'\] is nan, which is not JSON; pass a finite"),
        ({"x": float("inf")}, r"params\['x'\] is inf"),
        ({"my-key": 1}, r"params key 'my-key' is not a Python variable name"),
        ({"1st": 1}, r"params key '1st' is not a Python variable name"),
        ({"class": 1}, r"params key 'class' is not a Python variable name"),
        ({"x=1;import os;y": 1}, r"is not a Python variable name"),
        ({3: 1}, r"params key 3 is a int"),
        ([("a", 1)], r"params must be a dict of names to values, not a list"),
        ({"big": "x" * schedules.MAX_PARAMS_BYTES}, r"params are \d+ bytes as JSON, more than"),
    ],
)
def test_params_that_are_not_json_or_not_names_are_refused(params, message):
    with pytest.raises(ConfigError, match=message):
        check_params(params)


def test_params_nested_too_deep_are_refused():
    deep: list = []
    for _ in range(schedules.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ConfigError, match="nests lists or dicts more than"):
        check_params({"deep": deep})


# -- templates ------------------------------------------------------------------------


def test_templates_render_in_the_schedules_time_zone():
    params = {
        "day": "{{ ds }}",
        "stamp": "{{ts}}",
        "path": "s3://bucket/{{ ds_nodash }}/{{ run_id }}.parquet",
        "nested": [{"p": "{{ ds }}"}, 3, None, ["{{ run_id }}"]],
        "n": 5,
    }
    # 23:30 in Berlin on the 30th is the 30th there but the 30th/31st elsewhere.
    out = render(params, due=due(2024, 3, 30, 23, 30), tz="Europe/Berlin", run_id="run-7")
    assert out == {
        "day": "2024-03-30",
        "stamp": "2024-03-30T23:30:00+01:00",
        "path": "s3://bucket/20240330/run-7.parquet",
        "nested": [{"p": "2024-03-30"}, 3, None, ["run-7"]],
        "n": 5,
    }
    assert params["day"] == "{{ ds }}"  # not changed in place


def test_ts_carries_the_offset_of_its_date_across_dst():
    # Berlin leaves CET (+01:00) for CEST (+02:00) at 02:00 on 2024-03-31, and goes back
    # at 03:00 on 2024-10-27.
    def render_ts(t: float) -> dict:
        return render({"t": "{{ ts }}", "d": "{{ ds }}"}, due=t, tz="Europe/Berlin", run_id="r")

    before = due(2024, 3, 31, 1, 30)
    assert render_ts(before) == {"t": "2024-03-31T01:30:00+01:00", "d": "2024-03-31"}
    assert render_ts(before + 3600) == {"t": "2024-03-31T03:30:00+02:00", "d": "2024-03-31"}
    autumn = due(2024, 10, 27, 1, 30)
    assert render_ts(autumn)["t"] == "2024-10-27T01:30:00+02:00"
    assert render_ts(autumn + 2 * 3600)["t"] == "2024-10-27T02:30:00+01:00"
    # Midnight in Berlin is still the day before in UTC.
    midnight = due(2024, 7, 1, 0, 0)
    assert render({"d": "{{ ds }}"}, due=midnight, tz="Europe/Berlin", run_id="r") == {
        "d": "2024-07-01"
    }
    assert render({"d": "{{ ds }}"}, due=midnight, tz="UTC", run_id="r") == {"d": "2024-06-30"}


def test_an_unknown_template_is_named():
    with pytest.raises(ConfigError, match=r"params\['cfg'\]\['out'\] uses '\{\{ yesterday \}\}'"):
        render({"cfg": {"out": "{{ yesterday }}"}}, due=0.0, tz="UTC", run_id="r")
    with pytest.raises(ConfigError, match=r"use \{\{ ds \}\}, \{\{ ds_nodash \}\}, \{\{ ts \}\}"):
        render({"x": ["{{ds}}", "{{ DS }}"]}, due=0.0, tz="UTC", run_id="r")
    with pytest.raises(ConfigError, match="is not a time zone"):
        render({"x": "{{ ds }}"}, due=0.0, tz="Berlin", run_id="r")


def test_text_that_is_not_a_template_stays():
    out = render({"x": "{ ds } {{", "y": "}}{{ ds }}"}, due=0.0, tz="UTC", run_id="r")
    assert out == {"x": "{ ds } {{", "y": "}}1970-01-01"}


# -- parameters in the notebook -------------------------------------------------------


def notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def code(source: str, *tags: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})


def injected_values(cell: nbformat.NotebookNode) -> dict:
    tree = ast.parse(cell.source)
    return {
        node.targets[0].id: ast.literal_eval(node.value)  # type: ignore[attr-defined]
        for node in tree.body
        if isinstance(node, ast.Assign)
    }


def test_the_injected_cell_follows_the_parameters_cell():
    nb = notebook(
        nbformat.v4.new_markdown_cell("# Report"),
        code("import os"),
        code("lr = 0.01\nname = 'x'", "parameters"),
        code("print(lr)"),
    )
    out = inject_parameters(nb, {"lr": 0.5, "name": "run"})
    assert [c.source for c in out.cells[:3]] == [c.source for c in nb.cells[:3]]
    cell = out.cells[3]
    assert cell.cell_type == "code"
    assert cell.metadata.tags == ["injected-parameters"]
    assert cell.outputs == [] and cell.execution_count is None
    assert cell.source == "# Parameters\nlr = 0.5\nname = 'run'\n"
    assert out.cells[4].source == "print(lr)"
    assert len(nb.cells) == 4  # the input is not changed
    nbformat.validate(out)


def test_without_a_parameters_cell_the_injected_cell_comes_first():
    nb = notebook(code("print(1)"), code("x = 1", "other"))
    out = inject_parameters(nb, {"x": 2})
    assert out.cells[0].metadata.tags == ["injected-parameters"]
    assert injected_values(out.cells[0]) == {"x": 2}
    assert [c.source for c in out.cells[1:]] == ["print(1)", "x = 1"]


def test_an_old_injected_cell_is_replaced_where_it_was():
    nb = notebook(
        code("x = 1", "parameters"),
        code("print('between')"),
        code("# Parameters\nx = 5\n", "injected-parameters"),
        code("print(x)"),
        code("# Parameters\nx = 6\n", "injected-parameters"),
    )
    out = inject_parameters(nb, {"x": 7})
    assert [c.source for c in out.cells] == [
        "x = 1",
        "print('between')",
        "# Parameters\nx = 7\n",
        "print(x)",
    ]
    # Injecting again into the result replaces, it does not add.
    again = inject_parameters(out, {"x": 8})
    assert len(again.cells) == 4 and injected_values(again.cells[2]) == {"x": 8}


def test_values_are_python_literals_of_the_json_values():
    params = {
        "flags": [True, False, None],
        "cfg": {"layers": [64, 32], "act": "relu", "drop": 0.1, "extra": {"on": True}},
        "quote": 'it\'s "quoted"\nwith a newline',
        "uni": "grüße ✓",
        "big": 10**30,
        "empty": {},
        "t": ("a", 1),
    }
    out = inject_parameters(notebook(code("", "parameters")), params)
    cell = out.cells[1]
    assert "flags = [True, False, None]\n" in cell.source
    assert "true" not in cell.source and "null" not in cell.source
    values = injected_values(cell)
    assert values == {**params, "t": ["a", 1]}
    scope: dict = {}
    exec(cell.source, scope)  # what the kernel runs
    assert scope["cfg"] == params["cfg"] and scope["quote"] == params["quote"]


def test_injecting_checks_the_keys_since_they_become_code():
    with pytest.raises(ConfigError, match="not a Python variable name"):
        inject_parameters(notebook(), {"os.system('x'); y": 1})


def test_a_4_4_notebook_gets_a_cell_without_an_id():
    nb = notebook(code("x = 1", "parameters"))
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    out = inject_parameters(nb, {"x": 2})
    assert "id" not in out.cells[1]
    nbformat.validate(out)
    nb5 = inject_parameters(notebook(code("x = 1")), {"x": 2})
    assert nb5.cells[0].id and nb5.cells[0].id != nb5.cells[1].id


# -- which bytes are a notebook ------------------------------------------------------


def test_a_notebook_parses():
    nb = notebook(nbformat.v4.new_markdown_cell("hi"), code("x = 1", "parameters"))
    out = check_notebook(nbformat.writes(nb).encode())
    assert out.nbformat == 4
    assert [c.source for c in out.cells] == ["hi", "x = 1"]
    assert out.cells[1].metadata.tags == ["parameters"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe{", "not a notebook: an .ipynb file is UTF-8 JSON text"),
        (b"print('hello')", r"not a notebook: it is not JSON \(Expecting value"),
        (b"", r"not a notebook: it is not JSON"),
        (b"[1, 2]", "not a notebook: an .ipynb file is a JSON object with 'cells'"),
        (b'{"a": 1}', "not a notebook: an .ipynb file is a JSON object with 'cells'"),
        (
            b'{"nbformat": 3, "nbformat_minor": 0, "cells": [], "metadata": {}}',
            "the notebook is nbformat 3, not 4; open and save it in Jupyter",
        ),
        (
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {},'
            b' "cells": [{"cell_type": "code", "source": "x"}]}',
            "the notebook is not valid nbformat 4: ",
        ),
        (
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}',
            "the notebook is not valid nbformat 4: ",
        ),
    ],
)
def test_bytes_that_are_not_a_notebook_say_why(data, message):
    with pytest.raises(ConfigError, match=message):
        check_notebook(data)
