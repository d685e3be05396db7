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

import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from remotecell._proto import pb
from remotecell.client._image_local import (
    existing,
    kernel_distributions,
    load_toml,
    module_source,
    read_requirements,
    read_source,
)
from remotecell.contract.errors import ConfigError
from remotecell.contract.images import spec_id
from remotecell.contract.values import content_hash

__all__ = ["Image"]

_Blobs = dict[str, bytes | memoryview]

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
        file = existing(path, "Dockerfile", want_dir=False)
        return cls(base="dockerfile", dockerfile=file.read_text(), python=_python_version(python))

    @classmethod
    def from_local(
        cls,
        *,
        index_url: str | None = None,
        extra_index_url: str | None = None,
        find_links: str | None = None,
    ) -> Image:
        """An image that mirrors this kernel: its Python version, and every distribution the
        notebook has imported pinned to the version installed here.

        Which distributions: those providing a top-level module in ``sys.modules`` (the
        kernel's own, such as IPython, included: pinning them costs little and keeps the
        versions the notebook ran with), not the standard library. Distributions installed
        from a local directory (``pip install -e .``) have no version on any index; their
        imported top-level modules travel as source instead (``add_local_python_source``).
        remotecell itself is left out: the runner brings it.

        Args:
            index_url, extra_index_url, find_links: where to find versions PyPI lacks
                (``extra_index_url="https://download.pytorch.org/whl/cu121"`` for
                ``torch==2.3.0+cu121``).

        Example:
            >>> img = Image.from_local()
            >>> img.python == f"{sys.version_info.major}.{sys.version_info.minor}"
            True
        """
        pins, local_modules = kernel_distributions()
        image = cls.debian_slim(python=f"{sys.version_info.major}.{sys.version_info.minor}")
        image = image.pip_install(
            *pins, index_url=index_url, extra_index_url=extra_index_url, find_links=find_links
        )
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
        file = existing(path, "requirements file", want_dir=False)
        packages: list[str] = []
        options: dict[str, str] = {}
        read_requirements(file, packages, options, seen=set())
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
        file = existing(path, "pyproject.toml", want_dir=False)
        project = load_toml(file).get("project", {})
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
        file = existing(local_path, "local file", want_dir=False)
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
        directory = existing(local_path, "local directory", want_dir=True)
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
                _Step(pb.ImageStep.PYTHON_SOURCE, dest=module, source=str(module_source(module)))
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
                data = read_source(step.kind, step.source, step.ignore)
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
