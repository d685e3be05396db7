"""The line language of a ``%%remote_image NAME`` cell, turned into an ``Image``.

One step per line; ``#`` starts a comment; a line ending in ``\\`` goes on on the next::

    python 3.11
    pip torch==2.13.0 transformers --index-url https://download.pytorch.org/whl/cu121
    pip -r requirements.txt
    apt ffmpeg
    env HF_HOME=/models TOKENIZERS_PARALLELISM=false
    run python -c "import torch"
    workdir app
    add model.py
    add data/ data --ignore *.tmp
    source mypkg

An error names the offending line: ``line 3: unknown step 'pipp'; valid steps: ...``.
"""

from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from remotecell.client.image import Image
from remotecell.contract.errors import ConfigError

__all__ = ["STEPS", "parse_image_cell"]

#: Each step word and what it takes, for error messages and help.
STEPS = {
    "from": "from REGISTRY_REF  (base image; docker builder only)",
    "python": "python VERSION",
    "pip": "pip PACKAGE... [--index-url URL] [--extra-index-url URL] [--find-links URL] | pip -r FILE",
    "apt": "apt PACKAGE...  (docker builder only)",
    "env": "env KEY=VALUE...",
    "run": "run SHELL COMMAND",
    "workdir": "workdir DIR",
    "add": "add LOCAL_PATH [REMOTE_PATH] [--ignore GLOB]...",
    "source": "source MODULE...  (local Python packages, importable by name)",
}

_PIP_OPTIONS = {
    "--index-url": "index_url",
    "-i": "index_url",
    "--extra-index-url": "extra_index_url",
    "--find-links": "find_links",
    "-f": "find_links",
}


def parse_image_cell(text: str, base_dir: str | os.PathLike[str] | None = None) -> Image:
    """Parses a ``%%remote_image`` cell into an ``Image``.

    Args:
        text: the cell body.
        base_dir: what relative local paths (``add``, ``pip -r``) are relative to;
            default: the current directory.

    Raises:
        ConfigError: a line is not a valid step; the message starts with ``line N:``.

    Example:
        >>> parse_image_cell("python 3.11\\npip requests\\nenv HF_HOME=/models")
        Image(debian_slim python=3.11, pip install requests, env HF_HOME=/models)
    """
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    base: tuple[str, int] | None = None
    python: tuple[str, int] | None = None
    steps: list[tuple[int, Callable[[Image], Image]]] = []

    for number, line in _logical_lines(text):
        word, *tail = line.split(None, 1)
        rest = tail[0].strip() if tail else ""
        if word not in STEPS:
            raise ConfigError(f"line {number}: {_unknown(word)}")
        try:
            if word in ("from", "python"):
                _expect_one(word, rest)
                earlier = base if word == "from" else python
                if earlier is not None:
                    raise ConfigError(f"{word} is given twice (first on line {earlier[1]})")
                if word == "from":
                    Image.from_registry(rest)  # checks the reference now
                    base = (rest, number)
                else:
                    Image.debian_slim(python=rest)  # checks the version now
                    python = (rest, number)
            elif word == "run":
                if not rest:
                    raise ConfigError("run needs a shell command")
                steps.append((number, _run(rest)))
            else:
                steps.append((number, _step(word, _split(rest), root)))
        except ConfigError as err:
            raise ConfigError(f"line {number}: {err}") from None

    version = python[0] if python else None
    image = Image.from_registry(base[0], python=version) if base else Image.debian_slim(version)
    for number, apply in steps:
        try:
            image = apply(image)
        except ConfigError as err:
            raise ConfigError(f"line {number}: {err}") from None
    return image


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank, comment-free lines with ``\\`` continuations joined, numbered by the
    line they start on (the first line of the cell is line 1)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending:
            start = number
            if not line or line.startswith("#"):
                continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        out.append((start, " ".join(p for p in pending if p)))
        pending = []
    if pending:
        out.append((start, " ".join(p for p in pending if p)))
    return out


def _unknown(word: str) -> str:
    valid = ", ".join(STEPS)
    close = difflib.get_close_matches(word, list(STEPS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown step {word!r}{hint}; valid steps: {valid}"


def _split(rest: str) -> list[str]:
    try:
        return shlex.split(rest, comments=True)
    except ValueError as err:  # "No closing quotation"
        raise ConfigError(f"{str(err).lower()} in {rest!r}") from None


def _expect_one(word: str, rest: str) -> None:
    parts = _split(rest)
    if len(parts) != 1:
        raise ConfigError(f"{word} takes exactly one value: {STEPS[word]}")


def _step(word: str, args: list[str], root: Path) -> Callable[[Image], Image]:
    """Checks a step's arguments now (so the error names its line) and returns how to
    apply it to an image."""
    if word == "pip":
        return _pip(args, root)
    if word == "apt":
        if not args:
            raise ConfigError(f"apt needs at least one package: {STEPS['apt']}")
        return lambda image: image.apt_install(*args)
    if word == "env":
        if not args:
            raise ConfigError(f"env needs at least one KEY=VALUE: {STEPS['env']}")
        variables: dict[str, str] = {}
        for arg in args:
            key, eq, value = arg.partition("=")
            if not eq or not key:
                raise ConfigError(f"env takes KEY=VALUE pairs; {arg!r} has no '='")
            variables[key] = value
        Image().env(variables)  # checks the names now
        return lambda image: image.env(variables)
    if word == "workdir":
        if len(args) != 1:
            raise ConfigError(f"workdir takes exactly one directory: {STEPS['workdir']}")
        return lambda image: image.workdir(args[0])
    if word == "add":
        return _add(args, root)
    if word == "source":
        if not args:
            raise ConfigError(f"source needs at least one module name: {STEPS['source']}")
        Image().add_local_python_source(*args)  # checks the modules exist now
        return lambda image: image.add_local_python_source(*args)
    raise AssertionError(word)


def _run(command: str) -> Callable[[Image], Image]:
    return lambda image: image.run_commands(command)


def _pip(args: list[str], root: Path) -> Callable[[Image], Image]:
    packages: list[str] = []
    options: dict[str, str] = {}
    requirements: list[Path] = []
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=")
        if arg.startswith("-"):
            if flag not in _PIP_OPTIONS and flag not in ("-r", "--requirement"):
                raise ConfigError(
                    f"pip option {flag} is not supported; use --index-url, --extra-index-url, "
                    "--find-links or -r"
                )
            value = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            if not value or (not eq and value.startswith("-")):
                raise ConfigError(f"pip {flag} needs a value")
            i += 1 if eq else 2
            if flag in ("-r", "--requirement"):
                requirements.append(root / value)
            else:
                options[_PIP_OPTIONS[flag]] = value
            continue
        packages.append(arg)
        i += 1
    if not packages and not requirements:
        raise ConfigError(f"pip needs at least one package: {STEPS['pip']}")
    checked = Image()
    for file in requirements:
        checked = checked.pip_install_from_requirements(file)  # missing file: error now

    def apply(image: Image) -> Image:
        for file in requirements:
            image = image.pip_install_from_requirements(file)
        return image.pip_install(*packages, **options) if packages else image

    return apply


def _add(args: list[str], root: Path) -> Callable[[Image], Image]:
    paths: list[str] = []
    ignore: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--ignore" or arg.startswith("--ignore="):
            value = (
                arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            )
            if not value:
                raise ConfigError("add --ignore needs a glob pattern")
            ignore.append(value)
            i += 1 if "=" in arg else 2
            continue
        if arg.startswith("-"):
            raise ConfigError(f"add option {arg} is not supported; only --ignore GLOB")
        paths.append(arg)
        i += 1
    if not 1 <= len(paths) <= 2:
        raise ConfigError(f"add takes a local path and optionally where it goes: {STEPS['add']}")
    local = root / Path(paths[0]).expanduser()
    remote = paths[1] if len(paths) == 2 else None
    if local.is_dir():
        Image().add_local_dir(local, remote, ignore=ignore)
        return lambda image: image.add_local_dir(local, remote, ignore=ignore)
    if ignore:
        raise ConfigError(f"add --ignore applies to directories; {local} is not one")
    Image().add_local_file(local, remote)  # missing file: error now
    return lambda image: image.add_local_file(local, remote)
