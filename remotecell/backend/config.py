"""What `remotecell serve` runs with: every setting declared once, with its flag.

``ServeConfig`` holds the control plane's settings; ``server.run`` takes it whole. Each
field's metadata is its ``serve`` flag (``Flag``: help, parser, choices), and the command
line builds its options from ``settings()`` (``cli/_serve.py``), so a default, a help
text or a check lives in one place. Defaults come from the code that owns them: the
runner policy (``scheduler/policy.py``, whose fields are flags too), the job lifecycle's
graces (``LifecycleConfig``), the blob TTL (``state/blobs.py``), the telemetry interval
(``telemetry/downsample.py``) and the docker base image (``images/docker.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from remotecell.backend.images.docker import DEFAULT_BASE_IMAGE
from remotecell.backend.scheduler.lifecycle_events import LifecycleConfig
from remotecell.backend.scheduler.policy import RunnerPolicy
from remotecell.backend.state.blobs import BLOB_TTL
from remotecell.backend.telemetry.downsample import DEFAULT_INTERVAL
from remotecell.contract.errors import ConfigError
from remotecell.contract.resources import ANY, parse_gpu
from remotecell.contract.wire import MAX_BLOB_BYTES

__all__ = [
    "EXECUTORS",
    "Flag",
    "ServeConfig",
    "Setting",
    "parse_http",
    "serve_config",
    "settings",
]

#: How runners can start, each with the image builder that suits it: local processes in
#: uv venvs, or docker containers.
EXECUTORS: dict[str, str] = {"local": "venv", "docker": "docker"}


# ----------------------------------------------------------------- parsers
# Each reads a flag's text and raises ValueError saying what it expected.


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"{text!r}: expected seconds, a number >= 0")
    return value


def count(text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValueError(f"{text!r}: expected a whole number >= {minimum}")
    return value


_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def duration(text: str) -> float:
    """Seconds in "7d", "12h", "30m", "45s" or "90" (seconds)."""
    lowered = text.strip().lower()
    number, unit = (lowered[:-1], lowered[-1]) if lowered[-1:] in _UNITS else (lowered, "s")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"{text!r}: expected a duration such as 7d, 12h, 30m, 45s or 90 (seconds)")
    return value


def show_duration(value: float) -> str:
    """``value`` seconds as ``duration`` reads them, in the largest whole unit."""
    for unit, size in _UNITS.items():
        if value and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


_SIZES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(text: str) -> int:
    """Bytes in "64G", "512M", "100K", "1T" (binary units) or "1048576" (bytes)."""
    lowered = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = (lowered[:-1], lowered[-1]) if lowered[-1:] in _SIZES else (lowered, "")
    try:
        value = float(number) * _SIZES.get(unit, 1)
    except ValueError:
        value = math.nan
    if not 1 <= value < math.inf:
        raise ValueError(f"{text!r}: expected a size such as 64G, 512M or 1048576 (bytes)")
    return int(value)


def show_size(value: int) -> str:
    """``value`` bytes as ``byte_size`` reads them, in the largest whole unit."""
    for unit, size in reversed(_SIZES.items()):
        if value % size == 0:
            return f"{value // size}{unit.upper()}"
    return str(value)


def parse_http(address: str) -> tuple[str, int] | None:
    """``--http``'s value as (host, port), or None for "off".

    Raises:
        ValueError: not HOST:PORT; the message says what is expected.
    """
    if address == "off":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r}: expected HOST:PORT (port 0 picks a free one) or off")
    return host.strip("[]"), int(port)


def _http(address: str) -> str:
    parse_http(address)
    return address


def _gpu_prices(items: tuple[str, ...]) -> dict[str, float]:
    """``--gpu-price TYPE=USD`` values, by canonical type."""
    prices: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not sep or not 0 <= price < math.inf or ":" in name or name.strip().lower() == ANY:
            raise ValueError(f"{item!r}: expected TYPE=USD_PER_SECOND, e.g. H100=0.0011")
        try:
            request = parse_gpu(name.strip())
        except ConfigError as err:
            raise ValueError(str(err)) from None
        assert request is not None
        prices[request.choices[0].type] = price
    return prices


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return ""  # a switch is off unless given
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int | str):
        return str(value)
    return ""  # None, (), {}: the help text says what happens without the flag


# ----------------------------------------------------------------- declaration


@dataclass(frozen=True)
class Flag:
    """How a setting is given to ``remotecell serve``."""

    help: str
    #: The option, e.g. "--volume-store"; empty: the field's name with dashes.
    name: str = ""
    #: Reads the flag's text (a tuple of texts where ``multiple``); raises ValueError.
    parse: Callable[[Any], Any] | None = None
    #: The default as ``parse`` reads it back, for ``--help``; "" shows none.
    show: Callable[[Any], str] = _show
    choices: tuple[str, ...] = ()
    metavar: str = ""
    multiple: bool = False  # repeatable
    is_flag: bool = False  # an on/off switch, off by default
    minimum: int = 0  # of a count


def _flag(help: str, **how: Any) -> dict[str, Flag]:
    return {"flag": Flag(help, **how)}


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path | None = field(
        default=None,
        metadata=_flag(
            "State, blobs and logs (default: the user data dir, or REMOTECELL_DATA_DIR).",
            parse=Path,
            metavar="DIR",
        ),
    )
    listen: tuple[str, ...] = field(
        default=(),
        metadata=_flag(
            "Address to serve: unix:/path or 127.0.0.1:PORT (repeatable). "
            "Default: a Unix socket in the data dir.",
            parse=tuple,
            metavar="ADDRESS",
            multiple=True,
        ),
    )
    http: str = field(
        default="127.0.0.1:0",
        metadata=_flag(
            "HOST:PORT of the HTTP side (Prometheus text at /metrics, behind the token); "
            "port 0 picks a free one; 'off' turns it off.",
            parse=_http,
            metavar="HOST:PORT",
        ),
    )
    tls: bool = field(
        default=False,
        metadata=_flag(
            "Serve --listen HOST:PORT and --http over TLS, on loopback too; without "
            "--tls-cert, with a self-signed certificate made once in the data dir. Needed "
            "(or --insecure) for an address other machines reach.",
            is_flag=True,
        ),
    )
    tls_cert: Path | None = field(
        default=None,
        metadata=_flag(
            "PEM certificate (chain) to serve TLS with, with --tls-key; implies --tls.",
            parse=Path,
            metavar="PATH",
        ),
    )
    tls_key: Path | None = field(
        default=None,
        metadata=_flag("PEM private key of --tls-cert.", parse=Path, metavar="PATH"),
    )
    insecure: bool = field(
        default=False,
        metadata=_flag(
            "Serve an address other machines reach in plaintext (token and cells readable "
            "on the network); a warning is logged.",
            is_flag=True,
        ),
    )
    executor: str = field(
        default="local",
        metadata=_flag(
            "How runners start: local processes (images: uv venvs) or docker containers.",
            choices=tuple(EXECUTORS),
        ),
    )
    docker_base_image: str = field(
        default=DEFAULT_BASE_IMAGE,
        metadata=_flag(
            "Base of debian_slim images for the docker builder "
            "(the default is made by scripts/docker_setup.sh).",
            metavar="IMAGE",
        ),
    )
    runners: RunnerPolicy = field(default_factory=RunnerPolicy)
    cancel_grace: float = field(
        default=LifecycleConfig.cancel_grace,
        metadata=_flag("Seconds a cancelled cell gets to stop before its runner is killed."),
    )
    reconnect_grace: float = field(
        default=LifecycleConfig.reconnect_grace,
        metadata=_flag("Seconds a running job waits for its runner to reconnect."),
    )
    retry_delay: float = field(
        default=LifecycleConfig.retry_delay,
        metadata=_flag(
            "Seconds before a failed job's first retry; each later retry waits twice as "
            "long. 0 retries at once."
        ),
    )
    gpu_prices: Mapping[str, float] = field(
        default_factory=dict,
        metadata=_flag(
            "Price of one GPU of TYPE for one second, e.g. H100=0.0011 (repeatable); "
            "the defaults are Modal's list prices.",
            name="--gpu-price",
            parse=_gpu_prices,
            metavar="TYPE=USD",
            multiple=True,
        ),
    )
    metrics_interval: float = field(
        default=DEFAULT_INTERVAL,
        metadata=_flag("Seconds of telemetry readings stored as one aggregate sample."),
    )
    blob_url: str = field(
        default="",
        metadata=_flag(
            "Where stored values (blobs) are kept: a directory or an fsspec URL "
            "(default: DATA_DIR/blobs).",
            name="--blob-store",
            metavar="URL",
        ),
    )
    blob_ttl: float = field(
        default=BLOB_TTL,
        metadata=_flag(
            "Delete stored values (blobs) unused for this long: 7d, 12h, 30m, 45s or "
            "seconds; 0 keeps them for ever. A finished job's results can be fetched for "
            "that long.",
            parse=duration,
            show=show_duration,
            metavar="DURATION",
        ),
    )
    max_blob_size: int = field(
        default=MAX_BLOB_BYTES,
        metadata=_flag(
            "The largest value (blob) one upload may store: 64G, 512M or bytes. A bigger "
            "upload is refused after this many bytes, and nothing of it is kept.",
            parse=byte_size,
            show=show_size,
            metavar="SIZE",
        ),
    )
    volume_url: str = field(
        default="",
        metadata=_flag(
            "Where volumes keep their files: a directory or an fsspec URL such as "
            "s3://bucket/prefix (default: DATA_DIR/volumes).",
            name="--volume-store",
            metavar="URL",
        ),
    )

    @property
    def builder(self) -> str:
        """The image builder that suits the executor."""
        return EXECUTORS[self.executor]

    @property
    def serves_tls(self) -> bool:
        """Whether TCP listeners are served over TLS (``--tls`` or a certificate given)."""
        return self.tls or self.tls_cert is not None or self.tls_key is not None


@dataclass(frozen=True)
class Setting:
    """One ``serve`` flag: the field it sets and how it is given."""

    #: Where the field is: ("retry_delay",) or ("runners", "max_runners").
    path: tuple[str, ...]
    flag: Flag
    default: Any

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def option(self) -> str:
        return self.flag.name or "--" + self.name.replace("_", "-")

    @property
    def metavar(self) -> str:
        if self.flag.is_flag:
            return ""
        if self.flag.metavar or self.flag.choices:
            return self.flag.metavar
        if isinstance(self.default, float) and self.flag.parse is None:
            return "SECONDS"
        return "N" if isinstance(self.default, int) else "TEXT"

    @property
    def help(self) -> str:
        """The flag's help, with its default as ``parse`` reads it, if it shows one."""
        shown = self.flag.show(self.default)
        return f"{self.flag.help}  [default: {shown}]" if shown else self.flag.help

    def parse(self, value: Any) -> Any:
        """The flag's value (its text, or a tuple of texts) as the field's.

        Raises:
            ValueError: a value the field cannot take; the message says what it expects.
        """
        if self.flag.parse is not None:
            return self.flag.parse(value)
        if self.flag.is_flag:
            return bool(value)
        if isinstance(self.default, float):
            return seconds(value)
        if isinstance(self.default, int):
            return count(value, self.flag.minimum)
        return value


def settings(of: type = ServeConfig, path: tuple[str, ...] = ()) -> list[Setting]:
    """Every flag of ``serve``, in declaration order: ``ServeConfig``'s fields and those of
    the runner policy, whose metadata give only ``help`` (and ``minimum``)."""
    found: list[Setting] = []
    defaults = of()
    for f in fields(of):
        default = getattr(defaults, f.name)
        if is_dataclass(default):
            found += settings(type(default), (*path, f.name))
            continue
        flag = f.metadata.get("flag") or Flag(
            f.metadata["help"], minimum=f.metadata.get("minimum", 0)
        )
        found.append(Setting((*path, f.name), flag, default))
    return found


def runner_log_dir(data_dir: Path) -> Path:
    """Where a control plane on ``data_dir`` keeps its runners' logs (and its template's)."""
    return data_dir / "logs" / "runners"


def serve_config(values: Mapping[str, Any]) -> ServeConfig:
    """The configuration with ``values`` (parsed, by setting name) over the defaults."""
    given = {s.path: values[s.name] for s in settings() if s.name in values}
    policy = {path[1]: value for path, value in given.items() if path[0] == "runners"}
    top = {path[0]: value for path, value in given.items() if len(path) == 1}
    return ServeConfig(**top, runners=RunnerPolicy(**policy))
