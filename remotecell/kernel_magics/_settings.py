"""The notebook's process settings, kept per notebook and sent with each job
(``contract/process_settings.py``): the logging and warning settings the last remote
cell left (the runner reports them), and the kernel's own ``%config InlineBackend``."""

from __future__ import annotations

import json
from typing import Any

from remotecell.contract import process_settings
from remotecell.contract.process_settings import INLINE_TRAITS, ProcessSettings


def for_job(shell: Any, kept: ProcessSettings) -> str:
    """The JSON for ``JobSpec.process_settings``: ``kept`` with the notebook's InlineBackend."""
    return kept.with_inline(inline_config(shell)).to_json()


def reported(text: str, kept: ProcessSettings) -> ProcessSettings:
    """What to keep after a job reported ``text`` ("": nothing, ``kept`` stays)."""
    if not text:
        return kept
    try:
        return process_settings.parse(text)
    except ValueError:
        return kept


def inline_config(shell: Any) -> dict[str, Any]:
    """The InlineBackend traits the notebook set with ``%config`` (those JSON can carry)."""
    config = getattr(shell, "config", None)
    section = config.get("InlineBackend", {}) if config is not None else {}
    out: dict[str, Any] = {}
    for name, kind in INLINE_TRAITS.items():
        if name not in section:
            continue
        value = section[name]
        if name == "figure_formats":
            value = [value] if isinstance(value, str) else sorted(value)
        try:
            value = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            continue
        if isinstance(value, kind):
            out[name] = value
    return out
