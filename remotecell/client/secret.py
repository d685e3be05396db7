"""Secrets: environment variables a cell gets on its runner, kept out of the notebook.

A stored secret lives on the control plane, encrypted (``remotecell secret create hf
HF_TOKEN=...``); a cell names it and its runner gets the variables::

    hf = remotecell.Secret.from_name("hf")

    %%remote secrets=[hf]
    download(token=os.environ["HF_TOKEN"])

``Secret.from_dict`` and ``Secret.from_dotenv`` make an ad-hoc secret for one notebook:
its values travel with each job that names it (on the authenticated channel) and are
never stored. The rules for names, keys and values are in ``remotecell.contract.secrets``,
shared by the client, the control plane and the command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.secrets import ENV_KEY, check_env, check_name


class Secret:
    """Environment variables for a cell's runner, named in ``%%remote secrets=[...]``.

    Make one with ``Secret.from_name``, ``Secret.from_dict`` or ``Secret.from_dotenv``.
    The runner sets the variables for that cell only, and masks their values (of 4
    characters or more) in what the cell prints, displays and raises. Its ``repr``
    shows keys, never values.
    """

    __slots__ = ("_env", "_label", "_name", "_required")
    _name: str
    _env: dict[str, str] | None  # an ad-hoc secret's values; None for a stored one
    _label: str
    _required: tuple[str, ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "make a Secret with Secret.from_name(name), Secret.from_dict({...}) or "
            "Secret.from_dotenv(path)"
        )

    @classmethod
    def _make(
        cls,
        name: str = "",
        env: dict[str, str] | None = None,
        label: str = "",
        required: tuple[str, ...] = (),
    ) -> Secret:
        secret = object.__new__(cls)
        secret._name = name
        secret._env = env
        secret._label = label
        secret._required = required
        return secret

    @classmethod
    def from_name(cls, name: str, required_keys: Iterable[str] = ()) -> Secret:
        """A secret stored on the control plane (``remotecell secret create``).

        Its values stay on the control plane; they are read as the cell's runner takes
        it. That it exists (and has ``required_keys``) is checked when a cell that names
        it is submitted, before the cell runs.

        Args:
            name: the stored secret's name.
            required_keys: keys it must have; a cell naming it fails at once otherwise.

        Example:
            >>> hf = Secret.from_name("hf", required_keys=["HF_TOKEN"])
            >>> hf
            Secret.from_name('hf')
        """
        keys = tuple(required_keys) if not isinstance(required_keys, str) else (required_keys,)
        for key in keys:
            if not isinstance(key, str) or not ENV_KEY.match(key):
                raise ConfigError(
                    f"required_keys must be environment variable names; {key!r} is not one"
                )
        return cls._make(name=check_name(name), required=keys)

    @classmethod
    def from_dict(cls, env: Mapping[str, str]) -> Secret:
        """An ad-hoc secret from a dict: sent with each cell that names it, never stored.

        Example:
            >>> token = Secret.from_dict({"API_TOKEN": "s3cr3t-value"})
            >>> token
            Secret.from_dict(keys=['API_TOKEN'])
        """
        return cls._make(env=check_env(env, "Secret.from_dict"), label="from_dict")

    @classmethod
    def from_dotenv(cls, path: str | os.PathLike[str] = ".env") -> Secret:
        """An ad-hoc secret from a dotenv file (``KEY=VALUE`` lines), read now.

        The file's syntax is python-dotenv's: comments, ``export``, quoting and
        ``${VAR}`` expansion. Like ``from_dict``, the values travel
        with each cell that names it and are never stored.

        Example:
            >>> creds = Secret.from_dotenv("creds.env")  # doctest: +SKIP
        """
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError(
                f"no dotenv file at {file}: give the path of a file of KEY=VALUE lines"
            )
        return cls._make(env=read_dotenv(file), label=f"from_dotenv({file.name})")

    @property
    def name(self) -> str:
        """The stored secret's name ("" for an ad-hoc one)."""
        return self._name

    @property
    def keys(self) -> list[str]:
        """An ad-hoc secret's keys (a stored one's are known to the control plane only)."""
        return sorted(self._env or {})

    def to_proto(self) -> pb.SecretRef:
        """The reference a job carries (with the values, for an ad-hoc secret)."""
        if self._env is not None:
            return pb.SecretRef(name=self._label, adhoc=True, env=self._env)
        return pb.SecretRef(name=self._name, required_keys=self._required)

    def __repr__(self) -> str:
        if self._env is not None:
            return f"Secret.{self._label.split('(')[0]}(keys={self.keys!r})"
        return f"Secret.from_name({self._name!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self._name, self._env, self._required) == (
            other._name,
            other._env,
            other._required,
        )

    def __hash__(self) -> int:
        return hash((self._name, tuple(sorted(self._env or {})), self._required))

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: Any) -> Secret:
        return self

    def __reduce_ex__(self, protocol: Any) -> Any:
        # An ad-hoc secret's values must not travel as a cell variable: pickled, they
        # would land in the blob store in clear.
        if self._env is not None:
            raise TypeError(
                "an ad-hoc Secret is not sent as a variable; name it in "
                "%%remote secrets=[...] and read os.environ in the cell"
            )
        return (Secret.from_name, (self._name, self._required))


def read_dotenv(file: Path | None = None, text: str | None = None) -> dict[str, str]:
    """The variables of a dotenv file (or of its ``text``), checked.

    Raises:
        ConfigError: a line is not ``KEY=VALUE`` (by number, never by content), or the
            variables break the rules of ``check_env``.
    """
    import io

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    where = str(file) if file is not None else "the input"
    if text is None:
        assert file is not None
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read the dotenv file {file}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"the dotenv file {file} is not UTF-8 text") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise ConfigError(
                f"line {binding.original.line} of {where} is not KEY=VALUE; fix or remove it"
            )
    values = dotenv_values(stream=io.StringIO(text), interpolate=True)
    bare = [k for k, v in values.items() if v is None]
    if bare:
        raise ConfigError(f"{bare[0]} in {where} has no value; write it as {bare[0]}=VALUE")
    return check_env({k: v for k, v in values.items() if v is not None}, where)
