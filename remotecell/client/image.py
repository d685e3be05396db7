"""``remotecell.Image``: the environment a cell runs in, declared in the notebook.

An image is a base (a plain Python environment, a registry image or a Dockerfile) and a
list of steps, each one layer: pip and apt installs, shell commands, environment
variables, a working directory, local files. ``Image`` is immutable; every method returns
a new one, so images can be built on each other::

    base = remotecell.Image.debian_slim(python="3.11").pip_install("numpy")
    torch_img = base.pip_install("torch==2.13.0").env({"HF_HOME": "/models"})

An image's id is the hash of its base, its steps and the content of the local files it
adds, so an unchanged image is never built twice and a changed local file makes a new one.
Local files are read when the image is sent (``to_spec``), not when it is declared: edit
``model.py``, rerun the cell, and the runner gets the new one.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shlex
import sys
import tarfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from remotecell._proto import pb
from remotecell.client.errors import ConfigError
from remotecell.client.values import content_hash

__all__ = ["Image", "spec_id"]

_Blobs = dict[str, bytes | memoryview]

#: Bumped when the canonical form below changes, so old ids never collide with new ones.
_ID_FORMAT = "remotecell-image-v1"

#: What add_local_python_source never ships: compiled files differ between machines.
_PYTHON_SOURCE_IGNORE = ("__pycache__", "*.pyc", "*.pyo")

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class _Step:
    kind: int
    args: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    dest: str = ""
    #: a local file or directory (LOCAL_FILE, LOCAL_DIR, PYTHON_SOURCE), read in to_spec
    source: str = ""
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Image:
    """A container image or environment that remote cells run in.

    Start from a base (``debian_slim``, ``from_registry``, ``from_dockerfile``,
    ``from_local``) and chain steps; each call returns a new ``Image``.

    Example:
        >>> img = (Image.debian_slim(python="3.11")
        ...        .pip_install("requests==2.32.3")
        ...        .env({"HF_HOME": "/models"}))
        >>> img.python
        '3.11'

    Attributes:
        base: ``"debian_slim"``, ``"registry"`` or ``"dockerfile"``.
        python: the Python version (``"3.11"``); empty: the control plane's own.
        base_ref: the registry image reference (``from_registry``).
        dockerfile: the Dockerfile's text (``from_dockerfile``).
    """

    base: str = "debian_slim"
    python: str = ""
    base_ref: str = ""
    dockerfile: str = ""
    _steps: tuple[_Step, ...] = field(default=(), repr=False)

    # -- bases ----------------------------------------------------------------

    @classmethod
    def debian_slim(cls, python: str | None = None) -> Image:
        """A plain environment with Python and nothing else installed.

        With the venv builder it is a uv virtual environment; with the docker builder, a
        slim Debian image.

        Args:
            python: the Python version, ``"3.11"``; None: the control plane's own.

        Example:
            >>> Image.debian_slim(python="3.12").python
            '3.12'
        """
        return cls(python=_python_version(python))

    @classmethod
    def from_registry(cls, ref: str, python: str | None = None) -> Image:
        """An image from a container registry, such as ``"nvcr.io/nvidia/pytorch:24.01-py3"``.

        Only the docker builder can build it. The image needs a Python of its own.

        Example:
            >>> Image.from_registry("python:3.11-slim").base_ref
            'python:3.11-slim'
        """
        if not ref or any(c.isspace() for c in ref):
            raise ConfigError(
                f"{ref!r} is not an image reference; give one like 'python:3.11-slim'"
            )
        return cls(base="registry", base_ref=ref, python=_python_version(python))

    @classmethod
    def from_dockerfile(cls, path: str | os.PathLike[str], python: str | None = None) -> Image:
        """An image built from a Dockerfile (its text becomes part of the image's id).

        Only the docker builder can build it.

        Example:
            >>> Image.from_dockerfile("Dockerfile")  # doctest: +SKIP
        """
        file = _existing(path, "Dockerfile", want_dir=False)
        return cls(base="dockerfile", dockerfile=file.read_text(), python=_python_version(python))

    @classmethod
    def from_local(cls) -> Image:
        """An image that mirrors this kernel: its Python version, and every distribution the
        notebook has imported pinned to the version installed here.

        Distributions installed from a local directory (``pip install -e .``) cannot be
        pinned by version; their imported top-level modules travel as source instead
        (``add_local_python_source``). remotecell itself is left out: the runner brings it.

        Example:
            >>> import json
            >>> img = Image.from_local()
            >>> img.python == f"{sys.version_info.major}.{sys.version_info.minor}"
            True
        """
        pins, local_modules = _kernel_distributions()
        image = cls.debian_slim(python=f"{sys.version_info.major}.{sys.version_info.minor}")
        image = image.pip_install(*pins)
        for module in local_modules:
            try:
                image = image.add_local_python_source(module)
            except ConfigError as err:
                warnings.warn(f"Image.from_local() leaves out {module!r}: {err}", stacklevel=2)
        return image

    # -- steps ----------------------------------------------------------------

    def pip_install(
        self,
        *packages: str | Iterable[str],
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
    ) -> Image:
        """Installs Python packages (requirement specifiers, as pip takes them).

        Example:
            >>> Image.debian_slim().pip_install("numpy>=2", ["pandas"], index_url=None)  # doctest: +ELLIPSIS
            Image(debian_slim, pip install 'numpy>=2' pandas)
        """
        names = _flatten(packages, "pip_install")
        if not names:
            return self
        options = {
            "index_url": index_url,
            "extra_index_url": extra_index_url,
            "find_links": find_links,
        }
        return self._add(
            _Step(
                pb.ImageStep.PIP,
                args=tuple(names),
                options=tuple(sorted((k, v) for k, v in options.items() if v)),
            )
        )

    def pip_install_from_requirements(self, path: str | os.PathLike[str]) -> Image:
        """Installs what a requirements file lists (``-r``, ``--index-url``,
        ``--extra-index-url`` and ``--find-links`` lines included).

        Example:
            >>> Image.debian_slim().pip_install_from_requirements("requirements.txt")  # doctest: +SKIP
        """
        file = _existing(path, "requirements file", want_dir=False)
        packages: list[str] = []
        options: dict[str, str] = {}
        _read_requirements(file, packages, options, seen=set())
        if not packages:
            return self
        return self.pip_install(*packages, **options)

    def pip_install_from_pyproject(
        self, path: str | os.PathLike[str], optional_dependencies: Iterable[str] = ()
    ) -> Image:
        """Installs a project's dependencies (``[project] dependencies`` of a
        pyproject.toml), and those of the optional groups named.

        Example:
            >>> Image.debian_slim().pip_install_from_pyproject(
            ...     "pyproject.toml", optional_dependencies=["gpu"])  # doctest: +SKIP
        """
        file = _existing(path, "pyproject.toml", want_dir=False)
        project = _load_toml(file).get("project", {})
        packages = list(project.get("dependencies", []))
        groups = project.get("optional-dependencies", {})
        for name in (
            [optional_dependencies]
            if isinstance(optional_dependencies, str)
            else optional_dependencies
        ):
            if name not in groups:
                valid = ", ".join(sorted(groups)) or "none"
                raise ConfigError(f"{file} has no optional dependencies {name!r}; it has: {valid}")
            packages.extend(groups[name])
        return self.pip_install(*packages)

    def apt_install(self, *packages: str | Iterable[str]) -> Image:
        """Installs Debian packages (docker builder only).

        Example:
            >>> Image.debian_slim().apt_install("ffmpeg", "git")
            Image(debian_slim, apt install ffmpeg git)
        """
        names = _flatten(packages, "apt_install")
        return self._add(_Step(pb.ImageStep.APT, args=tuple(names))) if names else self

    def run_commands(self, *commands: str | Iterable[str]) -> Image:
        """Runs shell commands, in order, in one layer; the first that fails fails the build.

        Example:
            >>> Image.debian_slim().run_commands("python -c 'import this'")
            Image(debian_slim, run python -c 'import this')
        """
        cmds = _flatten(commands, "run_commands")
        return self._add(_Step(pb.ImageStep.RUN, args=tuple(cmds))) if cmds else self

    def env(self, variables: Mapping[str, str]) -> Image:
        """Sets environment variables for later steps and for the cells that run in the image.

        Example:
            >>> Image.debian_slim().env({"HF_HOME": "/models"})
            Image(debian_slim, env HF_HOME=/models)
        """
        pairs: list[tuple[str, str]] = []
        for key, value in variables.items():
            if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
                raise ConfigError(f"{key!r} is not an environment variable name")
            if not isinstance(value, str):
                raise ConfigError(
                    f"environment variable {key} must be a string, not {type(value).__name__}"
                )
            pairs.append((key, value))
        return self._add(_Step(pb.ImageStep.ENV, env=tuple(sorted(pairs)))) if pairs else self

    def workdir(self, path: str | os.PathLike[str]) -> Image:
        """Sets the working directory of later steps and of the cells.

        Example:
            >>> Image.debian_slim().workdir("app")
            Image(debian_slim, workdir app)
        """
        dest = _posix(path)
        if not dest:
            raise ConfigError("workdir needs a directory")
        return self._add(_Step(pb.ImageStep.WORKDIR, dest=dest))

    def add_local_file(
        self, local_path: str | os.PathLike[str], remote_path: str | os.PathLike[str] | None = None
    ) -> Image:
        """Copies a local file into the image.

        Args:
            local_path: the file on this machine.
            remote_path: where it goes; relative paths are relative to the working
                directory. Default: its file name, in the working directory.

        Example:
            >>> Image.debian_slim().add_local_file("model.py")  # doctest: +SKIP
        """
        file = _existing(local_path, "local file", want_dir=False)
        dest = _posix(remote_path) if remote_path is not None else file.name
        return self._add(_Step(pb.ImageStep.LOCAL_FILE, dest=dest, source=str(file)))

    def add_local_dir(
        self,
        local_path: str | os.PathLike[str],
        remote_path: str | os.PathLike[str] | None = None,
        ignore: Iterable[str] = (),
    ) -> Image:
        """Copies a local directory into the image.

        Args:
            local_path: the directory on this machine.
            remote_path: where it goes (relative: to the working directory). Default:
                its name, in the working directory.
            ignore: glob patterns of what to leave out. A pattern matches a path relative
                to ``local_path`` (``"data/*.csv"``) or any one name in it (``".git"``,
                ``"*.pyc"``); a directory that matches is left out whole.

        Example:
            >>> Image.debian_slim().add_local_dir("src", "src", ignore=[".git", "*.pyc"])  # doctest: +SKIP
        """
        directory = _existing(local_path, "local directory", want_dir=True)
        patterns = (ignore,) if isinstance(ignore, str) else tuple(ignore)
        dest = _posix(remote_path) if remote_path is not None else directory.name
        return self._add(
            _Step(pb.ImageStep.LOCAL_DIR, dest=dest, source=str(directory), ignore=patterns)
        )

    def add_local_python_source(self, *modules: str) -> Image:
        """Ships local Python modules or packages, importable by name in the image.

        Only top-level names (``"mypkg"``, not ``"mypkg.sub"``); ``__pycache__`` is left out.

        Example:
            >>> Image.debian_slim().add_local_python_source("mypkg")  # doctest: +SKIP
        """
        image = self
        for module in modules:
            image = image._add(
                _Step(pb.ImageStep.PYTHON_SOURCE, dest=module, source=str(_module_source(module)))
            )
        return image

    # -- wire form ------------------------------------------------------------

    def to_spec(self, *, force_build: bool = False) -> tuple[pb.ImageSpec, _Blobs]:
        """The image as the control plane takes it, and the blobs (local files) to upload.

        Local files are read now; their content hashes are in the steps and the id.

        Raises:
            ConfigError: a local file or directory the image adds is gone.
        """
        blobs: _Blobs = {}
        spec = pb.ImageSpec(
            base=_BASES[self.base],
            python=self.python,
            base_ref=self.base_ref,
            dockerfile=self.dockerfile,
        )
        for step in self._steps:
            message = pb.ImageStep(kind=step.kind, args=step.args, dest=step.dest)  # type: ignore[arg-type]
            message.options.update(step.options)
            message.env.update(step.env)
            if step.source:
                data = _read_source(step)
                blob = content_hash(data)
                blobs[blob] = data
                message.blob = blob
            spec.steps.append(message)
        spec.id = spec_id(spec)
        spec.force_build = force_build
        return spec, blobs

    @property
    def id(self) -> str:
        """The image's content hash (reads the local files it adds)."""
        return self.to_spec()[0].id

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps, one short line each."""
        return tuple(_describe(step) for step in self._steps)

    def __repr__(self) -> str:
        base = {"registry": f"from {self.base_ref}", "dockerfile": "from a Dockerfile"}.get(
            self.base, "debian_slim"
        )
        if self.python:
            base += f" python={self.python}"
        shown = [_describe(step, limit=48) for step in self._steps[:3]]
        if len(self._steps) > 3:
            shown.append(f"... {len(self._steps) - 3} more")
        return f"Image({', '.join([base, *shown])})"

    def _add(self, step: _Step) -> Image:
        return replace(self, _steps=(*self._steps, step))


_BASES = {
    "debian_slim": pb.ImageSpec.DEBIAN_SLIM,
    "registry": pb.ImageSpec.REGISTRY,
    "dockerfile": pb.ImageSpec.DOCKERFILE,
}


def spec_id(spec: pb.ImageSpec) -> str:
    """An image's id: the hash of a canonical JSON form of its base and steps.

    Local files count by their blob hashes, so the id covers their content. ``force_build``
    and the ``id`` field itself do not count.
    """
    canonical = [
        _ID_FORMAT,
        int(spec.base),
        spec.python,
        spec.base_ref,
        spec.dockerfile,
        [
            [
                int(step.kind),
                list(step.args),
                sorted(step.options.items()),
                sorted(step.env.items()),
                step.blob,
                step.dest,
            ]
            for step in spec.steps
        ],
    ]
    return content_hash(json.dumps(canonical, separators=(",", ":")).encode())


# -- helpers -------------------------------------------------------------------


def _python_version(python: str | None) -> str:
    if python is None or python == "":
        return ""
    python = str(python).strip()
    parts = python.split(".")
    if not (2 <= len(parts) <= 3 and all(p.isdigit() for p in parts) and parts[0] == "3"):
        raise ConfigError(f"python={python!r} is not a Python version; give one like '3.11'")
    return python


def _flatten(items: Iterable[str | Iterable[str]], where: str) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            if item.strip():
                out.append(item.strip())
        elif isinstance(item, Iterable):
            out.extend(_flatten(item, where))
        else:
            raise ConfigError(f"{where} takes strings, not {type(item).__name__}")
    return out


def _existing(path: str | os.PathLike[str], what: str, *, want_dir: bool) -> Path:
    file = Path(path).expanduser().absolute()
    if want_dir and not file.is_dir():
        problem = "is not a directory" if file.exists() else "does not exist"
        raise ConfigError(f"{what} {file} {problem}; give the path of an existing directory")
    if not want_dir and not file.is_file():
        problem = "is a directory" if file.is_dir() else "does not exist"
        raise ConfigError(f"{what} {file} {problem}; give the path of an existing file")
    return file


def _posix(path: str | os.PathLike[str] | None) -> str:
    return str(PurePosixPath(os.fspath(path))) if path not in (None, "") else ""  # type: ignore[arg-type]


def _describe(step: _Step, limit: int = 0) -> str:
    kind = step.kind
    if kind == pb.ImageStep.PIP:
        text = "pip install " + shlex.join(step.args)
        text += "".join(f" --{k.replace('_', '-')} {v}" for k, v in step.options)
    elif kind == pb.ImageStep.APT:
        text = "apt install " + shlex.join(step.args)
    elif kind == pb.ImageStep.RUN:
        text = "run " + " && ".join(step.args)
    elif kind == pb.ImageStep.ENV:
        text = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env)
    elif kind == pb.ImageStep.WORKDIR:
        text = f"workdir {step.dest}"
    elif kind == pb.ImageStep.PYTHON_SOURCE:
        text = f"add python source {step.dest}"
    else:
        text = f"add {step.source} -> {step.dest}"
    if limit and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _read_source(step: _Step) -> bytes:
    """A local file's bytes, or a deterministic tar of a directory or Python module."""
    path = Path(step.source)
    if step.kind == pb.ImageStep.LOCAL_FILE:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"local file {path} no longer exists; the image adds it") from None
        except OSError as err:
            raise ConfigError(f"cannot read local file {path}: {err.strerror}") from None
    if not path.exists():
        raise ConfigError(f"local path {path} no longer exists; the image adds it")
    if step.kind == pb.ImageStep.PYTHON_SOURCE:
        # A package travels as `name/...`, a single module as `name.py`.
        return deterministic_tar(path, path.name, _PYTHON_SOURCE_IGNORE)
    return deterministic_tar(path, ".", step.ignore)


def deterministic_tar(path: Path, arcname: str, ignore: Iterable[str] = ()) -> bytes:
    """A tar of ``path`` (a file or directory) under ``arcname`` whose bytes depend only on
    the names, content, modes and links inside: same tree, same hash.

    Owners and times are zeroed; entries are sorted. ``ignore`` as in ``Image.add_local_dir``.
    """
    patterns = tuple(ignore)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if path.is_dir() and not path.is_symlink():
            _add_tree(tar, path, PurePosixPath(), arcname, patterns)
        else:
            _add_entry(tar, path, arcname)
    return buffer.getvalue()


def _ignored(relative: PurePosixPath, patterns: tuple[str, ...]) -> bool:
    text = str(relative)
    return any(
        fnmatch.fnmatchcase(text, pattern)
        or any(fnmatch.fnmatchcase(p, pattern) for p in relative.parts)
        for pattern in patterns
    )


def _add_tree(
    tar: tarfile.TarFile,
    root: Path,
    relative: PurePosixPath,
    arcname: str,
    patterns: tuple[str, ...],
) -> None:
    directory = root / relative
    try:
        names = sorted(os.listdir(directory))
    except OSError as err:
        raise ConfigError(f"cannot read local directory {directory}: {err.strerror}") from None
    if str(relative) != "." or arcname != ".":
        _add_entry(tar, directory, str(PurePosixPath(arcname) / relative))
    for name in names:
        child = relative / name
        if _ignored(child, patterns):
            continue
        full = root / child
        if full.is_dir() and not full.is_symlink():
            _add_tree(tar, root, child, arcname, patterns)
        else:
            _add_entry(tar, full, str(PurePosixPath(arcname) / child))


def _add_entry(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    info = tar.gettarinfo(str(path), arcname=arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isfile():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    elif info.isdir():
        info.mode = 0o755
    if info.isfile():
        with path.open("rb") as f:
            tar.addfile(info, f)
    elif info.isdir() or info.issym():
        tar.addfile(info)
    # sockets, fifos and devices are left out: they cannot be copied


def _module_source(module: str) -> Path:
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


def _read_requirements(
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
            nested = _existing(file.parent / value, "requirements file", want_dir=False)
            _read_requirements(nested, packages, options, seen)
        elif flag in option_names and value:
            options[option_names[flag]] = value
        else:
            raise ConfigError(
                f"{file}, line {number}: {flag} is not supported in an image's requirements; "
                "use requirement specifiers, -r, --index-url, --extra-index-url or --find-links"
            )


def _load_toml(file: Path) -> dict:
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


def _kernel_distributions() -> tuple[list[str], list[str]]:
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
