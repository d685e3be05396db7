"""The rules for scheduled notebooks, shared by the client, the control plane and the
runner: a schedule's name and settings, its parameters (JSON values, with ``{{ ds }}``-style
templates rendered for each run), and how the parameters enter the notebook (papermill's
convention: a code cell tagged ``injected-parameters`` after the cell tagged
``parameters``).

A run's parameters are checked once when the schedule is made (:func:`check_params`),
rendered for each run from its due time (:func:`render`), and written into the notebook
the runner executes (:func:`inject_parameters`).
"""

from __future__ import annotations

import copy
import json
import keyword
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import nbformat

from remotecell.contract.errors import ConfigError
from remotecell.contract.slugs import check_slug

#: Runs (their notebooks, HTML and logs) a schedule keeps unless told otherwise.
KEEP_DEFAULT = 50
MAX_KEEP = 1000
#: When a run is due while the previous one still runs: skip the new one, queue it
#: until the previous ends, or allow both at once.
OVERLAP_CHOICES = ("skip", "queue", "allow")
OVERLAP_DEFAULT = "skip"
#: Runs that fell due while the control plane was down: none of them, the latest once,
#: or every one of them.
CATCH_UP_CHOICES = ("none", "once", "all")
CATCH_UP_DEFAULT = "once"
#: The tag of the cell that holds a notebook's default parameters.
PARAMETERS_TAG = "parameters"
#: The tag of the cell that binds a run's parameters (it follows the ``parameters`` cell).
INJECTED_TAG = "injected-parameters"
#: The parameters as JSON, at most (they travel in the schedule's spec and each run's).
MAX_PARAMS_BYTES = 64 * 1024
#: Lists and dicts inside a parameter, at most this deep.
MAX_DEPTH = 32
#: The templates a string parameter may use, e.g. ``"data/{{ ds }}.parquet"``.
TEMPLATES = ("ds", "ds_nodash", "ts", "run_id")
_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ALLOWED = "strings, numbers, True/False, None, lists or dicts"


def check_name(name: Any) -> str:
    """A schedule's name, checked (the same rule as a deployment's).

    Raises:
        ConfigError: not 1-63 lowercase letters, digits or '-', starting with a letter
            or digit.
    """
    return check_slug(name, "schedule", "`nightly` or `report-v2`")


def check_keep(keep: Any) -> int:
    """How many runs a schedule keeps, checked.

    Raises:
        ConfigError: not a whole number from 1 to MAX_KEEP.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP:
        raise ConfigError(f"keep={keep!r} must be a whole number from 1 to {MAX_KEEP}")
    return keep


def check_overlap(overlap: Any) -> str:
    """What a run that falls due while the last still runs does, checked.

    Raises:
        ConfigError: not one of OVERLAP_CHOICES.
    """
    return _choice("overlap", overlap, OVERLAP_CHOICES)


def check_catch_up(catch_up: Any) -> str:
    """Which missed runs are made up for, checked.

    Raises:
        ConfigError: not one of CATCH_UP_CHOICES.
    """
    return _choice("catch_up", catch_up, CATCH_UP_CHOICES)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        listed = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name}={value!r} is not one of {listed}")
    return value


def check_timezone(tz: Any) -> ZoneInfo:
    """An IANA time zone name (``Europe/Berlin``, ``UTC``), as a zone.

    Raises:
        ConfigError: there is no such time zone.
    """
    if isinstance(tz, str) and tz and not tz.startswith(("/", ".")) and ".." not in tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    shown = repr(tz)[:80] if isinstance(tz, str) else f"a {type(tz).__name__}"
    raise ConfigError(
        f"{shown} is not a time zone: use an IANA name such as 'UTC' or 'Europe/Berlin'"
    )


def check_params(params: Any) -> dict[str, Any]:
    """A run's parameters, checked: each key a Python identifier (it becomes a variable
    in the notebook), each value JSON (a string, number, True/False, None, or a list or
    dict of them). Strings may hold templates (see :func:`render`).

    Returns:
        A copy as plain dicts and lists (tuples become lists, as JSON has them).

    Raises:
        ConfigError: one sentence naming the key, and what is wrong with it.
    """
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"params must be a dict of names to values, not a {type(params).__name__}"
        )
    checked: dict[str, Any] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"params key {key!r} is a {type(key).__name__}; keys are the notebook's "
                "variable names, as strings"
            )
        if not key.isidentifier() or keyword.iskeyword(key):
            raise ConfigError(
                f"params key {key[:80]!r} is not a Python variable name: each key is bound "
                "as a variable in the notebook (use letters, digits and '_', not starting "
                "with a digit)"
            )
        checked[key] = _json_value(value, f"params[{key!r}]", 0)
    size = len(json.dumps(checked, ensure_ascii=False).encode())
    if size > MAX_PARAMS_BYTES:
        raise ConfigError(
            f"params are {size} bytes as JSON, more than {MAX_PARAMS_BYTES}; pass paths or "
            "names of data instead of the data"
        )
    return checked


def _json_value(value: Any, where: str, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where} is {value!r}, which is not JSON; pass a finite number")
        return value
    if depth >= MAX_DEPTH:
        raise ConfigError(f"{where} nests lists or dicts more than {MAX_DEPTH} deep")
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(
                    f"{where} has the key {k!r}, a {type(k).__name__}: JSON keys are strings"
                )
            out[k] = _json_value(v, f"{where}[{k!r}]", depth + 1)
        return out
    raise ConfigError(f"{where} is a {type(value).__name__}, which is not JSON; pass {_ALLOWED}")


def render(params: Mapping[str, Any], *, due: float, tz: str, run_id: str) -> dict[str, Any]:
    """The parameters of one run: every ``{{ name }}`` in a string (in lists and dicts
    too) replaced by the run's value.

    ``{{ ds }}`` is the due date in ``tz`` (``2024-03-31``), ``{{ ds_nodash }}`` the same
    without dashes (``20240331``), ``{{ ts }}`` the due time in ISO 8601 with its offset
    in ``tz`` (``2024-03-31T03:00:00+02:00``), ``{{ run_id }}`` the run's id.

    Args:
        due: the time the run fell due, in seconds since the epoch.

    Raises:
        ConfigError: a string uses a template other than these, or ``tz`` is no time zone.

    Example:
        >>> render({"path": "s3://b/{{ ds }}/x"}, due=0.0, tz="UTC", run_id="r1")
        {'path': 's3://b/1970-01-01/x'}
    """
    when = datetime.fromtimestamp(due, check_timezone(tz))
    values = {
        "ds": when.strftime("%Y-%m-%d"),
        "ds_nodash": when.strftime("%Y%m%d"),
        "ts": when.isoformat(timespec="seconds"),
        "run_id": run_id,
    }

    def sub(text: str, where: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                known = ", ".join("{{ " + t + " }}" for t in TEMPLATES)
                raise ConfigError(
                    f"{where} uses {match.group(0)[:80]!r}, which is not a template; use {known}"
                )
            return values[name]

        return _TEMPLATE.sub(one, text)

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):
            return sub(value, where)
        if isinstance(value, list | tuple):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return {k: walk(v, f"{where}[{k!r}]") for k, v in value.items()}
        return value

    return {key: walk(value, f"params[{key!r}]") for key, value in params.items()}


def inject_parameters(
    nb: nbformat.NotebookNode, params: Mapping[str, Any]
) -> nbformat.NotebookNode:
    """A copy of the notebook with a code cell binding ``params``, as papermill does.

    The new cell is tagged ``injected-parameters`` and holds one ``name = value`` line
    per parameter, each value a Python literal. It replaces an existing injected cell
    (any others are removed), else follows the first cell tagged ``parameters``, else
    comes first. ``nb`` is not changed.

    Raises:
        ConfigError: ``params`` fail :func:`check_params` (their keys become code).
    """
    checked = check_params(params)
    lines = ["# Parameters"]
    for key, value in checked.items():
        # Through JSON, as the run's parameters travel: true/false/null load as
        # True/False/None, whose repr is the Python literal.
        lines.append(f"{key} = {json.loads(json.dumps(value))!r}")
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    out = copy.deepcopy(nb)
    if (out.get("nbformat", 4), out.get("nbformat_minor", 0)) < (4, 5):
        cell.pop("id", None)  # cell ids came with nbformat 4.5; 4.4 does not allow them
    cells = list(out.cells)
    injected = [i for i, c in enumerate(cells) if INJECTED_TAG in _tags(c)]
    if injected:
        at = injected[0]
        cells = [c for i, c in enumerate(cells) if i not in injected[1:]]
        cells[at] = cell
    else:
        tagged = [i for i, c in enumerate(cells) if PARAMETERS_TAG in _tags(c)]
        cells.insert(tagged[0] + 1 if tagged else 0, cell)
    out.cells = cells
    return out


def _tags(cell: Any) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def check_notebook(data: bytes) -> nbformat.NotebookNode:
    """An ``.ipynb`` file's bytes, parsed as an nbformat 4 notebook.

    Raises:
        ConfigError: one sentence saying why the bytes are not a notebook.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("this is not a notebook: an .ipynb file is UTF-8 JSON text") from None
    try:
        raw = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"this is not a notebook: it is not JSON ({err})") from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise ConfigError(
            "this is not a notebook: an .ipynb file is a JSON object with 'cells' and 'nbformat'"
        )
    if raw["nbformat"] != 4:
        raise ConfigError(
            f"the notebook is nbformat {raw['nbformat']!r}, not 4; open and save it in "
            "Jupyter to convert it"
        )
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # nbformat's and jsonschema's errors have no common base
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"the notebook is not valid nbformat 4: {message[:200]}") from None
    return nb
