"""What an ``Image`` reads from this machine: local files, directories and modules (as
deterministic tars), requirements files, pyproject.toml, and the distributions this
process has imported (``Image.from_local``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.images import deterministic_tar

#: What add_local_python_source never ships: compiled files differ between machines.
PYTHON_SOURCE_IGNORE = ("__pycache__", "*.pyc", "*.pyo")


def existing(path: str | os.PathLike[str], what: str, *, want_dir: bool) -> Path:
    file = Path(path).expanduser().absolute()
    if want_dir and not file.is_dir():
        problem = "is not a directory" if file.exists() else "does not exist"
        raise ConfigError(f"{what} {file} {problem}; give the path of an existing directory")
    if not want_dir and not file.is_file():
        problem = "is a directory" if file.is_dir() else "does not exist"
        raise ConfigError(f"{what} {file} {problem}; give the path of an existing file")
    return file


def read_source(kind: int, source: str, ignore: tuple[str, ...] = ()) -> bytes:
    """A local file's bytes, or a deterministic tar of a directory or Python module."""
    path = Path(source)
    if kind == pb.ImageStep.LOCAL_FILE:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"local file {path} no longer exists; the image adds it") from None
        except OSError as err:
            raise ConfigError(f"cannot read local file {path}: {err.strerror}") from None
    if not path.exists():
        raise ConfigError(f"local path {path} no longer exists; the image adds it")
    if kind == pb.ImageStep.PYTHON_SOURCE:
        # A package travels as `name/...`, a single module as `name.py`.
        return deterministic_tar(path, path.name, PYTHON_SOURCE_IGNORE)
    return deterministic_tar(path, ".", ignore)


def module_source(module: str) -> Path:
    if not module or "." in module or not module.isidentifier():
        raise ConfigError(
            f"add_local_python_source takes a top-level module name like 'mypkg', not {module!r}"
        )
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None or (
        found.origin in (None, "built-in", "frozen") and not found.submodule_search_locations
    ):
        raise ConfigError(f"no module {module!r} is importable here; check the name and sys.path")
    if found.submodule_search_locations:
        locations = list(found.submodule_search_locations)
        if len(locations) != 1:
            raise ConfigError(
                f"{module!r} is a namespace package spread over {len(locations)} directories; "
                "add each directory with add_local_dir instead"
            )
        return Path(locations[0])
    origin = Path(found.origin or "")
    if origin.suffix != ".py":
        raise ConfigError(
            f"{module!r} is a compiled module ({origin.name}), not Python source; "
            "install it with pip_install instead"
        )
    return origin


def read_requirements(
    file: Path, packages: list[str], options: dict[str, str], seen: set[Path]
) -> None:
    if file in seen:
        return
    seen.add(file)
    option_names = {
        "-i": "index_url",
        "--index-url": "index_url",
        "--extra-index-url": "extra_index_url",
        "-f": "find_links",
        "--find-links": "find_links",
    }
    for number, raw in enumerate(file.read_text().splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("-"):
            packages.append(line)
            continue
        flag, _, value = line.replace("=", " ", 1).partition(" ")
        value = value.strip()
        if flag in ("-r", "--requirement"):
            nested = existing(file.parent / value, "requirements file", want_dir=False)
            read_requirements(nested, packages, options, seen)
        elif flag in option_names and value:
            options[option_names[flag]] = value
        else:
            raise ConfigError(
                f"{file}, line {number}: {flag} is not supported in an image's requirements; "
                "use requirement specifiers, -r, --index-url, --extra-index-url or --find-links"
            )


def load_toml(file: Path) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ConfigError(
                "reading pyproject.toml needs Python 3.11 or the tomli package"
            ) from None
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file} is not valid TOML: {err}") from None


# -- from_local ----------------------------------------------------------------


def kernel_distributions() -> tuple[list[str], list[str]]:
    """``name==version`` for each installed distribution that provides a module this process
    has imported, and the imported top-level modules of distributions installed from a
    local directory (which no index has)."""
    imported = {name.partition(".")[0] for name in list(sys.modules)}
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    providers = importlib.metadata.packages_distributions()
    # Namespace packages (`google`) are shared by several distributions: keep only those
    # that provide an imported submodule.
    submodules: dict[str, set[str]] = {}
    for name in list(sys.modules):
        top, _, rest = name.partition(".")
        if rest:
            submodules.setdefault(top, set()).add(rest.partition(".")[0])
    pins: dict[str, str] = {}
    local: set[str] = set()
    for top in sorted(imported - stdlib):
        for dist_name in providers.get(top, []):
            key = _normalise(dist_name)
            if key == "remotecell" or key in pins:
                continue
            try:
                dist = importlib.metadata.distribution(dist_name)
            except importlib.metadata.PackageNotFoundError:
                continue
            if len(providers[top]) > 1 and not _provides_any(dist, top, submodules.get(top, set())):
                continue
            if _installed_from_local_dir(dist):
                local.add(top)
            else:
                pins[key] = f"{dist.metadata['Name']}=={dist.version}"
    return sorted(pins.values(), key=str.lower), sorted(local)


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _provides_any(dist: importlib.metadata.Distribution, top: str, subs: set[str]) -> bool:
    files = dist.files or []
    prefixes = tuple(f"{top}/{sub}" for sub in subs)
    return any(str(f).startswith(prefixes) for f in files) if prefixes else True


def _installed_from_local_dir(dist: importlib.metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        info = json.loads(text)
    except ValueError:
        return False
    return "dir_info" in info
