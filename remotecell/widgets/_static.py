"""The widgets' built front ends (``static/``, made from ``js/`` when the package is built)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"

_NOT_BUILT = """\
export default {
  render({ el }) {
    el.textContent =
      "remotecell: this widget's front end was not built (%s is missing). " +
      "Reinstall remotecell where Node.js is installed: pip install .";
  },
};
"""


def esm(name: str) -> Path | str:
    """The built module ``name``; where the package was installed without building its front
    ends, a module that says so in the cell instead of failing at import."""
    path = STATIC / name
    return path if path.is_file() else _NOT_BUILT % f"remotecell/widgets/static/{name}"


def css() -> Path | str:
    path = STATIC / "style.css"
    return path if path.is_file() else ""
