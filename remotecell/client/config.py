"""Where the notebook side finds its control plane.

In order: ``REMOTECELL_URL`` (with ``REMOTECELL_TOKEN`` or ``REMOTECELL_TOKEN_FILE``),
the traitlets options ``RemoteMagics.url`` / ``RemoteMagics.token`` (see
``remotecell.kernel_magics``), else the embedded default: this user's local control
plane under the data directory, started in the background when none runs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from remotecell.contract.errors import ConfigError

ENV_URL = "REMOTECELL_URL"
ENV_TOKEN = "REMOTECELL_TOKEN"
ENV_TOKEN_FILE = "REMOTECELL_TOKEN_FILE"
ENV_DATA_DIR = "REMOTECELL_DATA_DIR"

ENDPOINT_FILE = "server.json"
TOKEN_FILE = "token"


def data_dir() -> Path:
    """This user's remotecell directory (``REMOTECELL_DATA_DIR`` overrides it)."""
    override = os.environ.get(ENV_DATA_DIR)
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("remotecell", appauthor=False))


@dataclass(frozen=True)
class Endpoint:
    """A control plane's address and the token it expects."""

    url: str
    token: str

    @property
    def target(self) -> str:
        """The gRPC target: ``unix:/path``, ``host:port`` (a ``grpc://`` prefix is dropped)."""
        url = self.url
        for prefix in ("grpc://", "http://"):
            if url.startswith(prefix):
                return url[len(prefix) :]
        return url


def read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as err:
        raise ConfigError(f"cannot read the remotecell token from {path}: {err.strerror}") from None


def from_environment() -> Endpoint | None:
    """The endpoint ``REMOTECELL_URL`` names, or None when it is unset."""
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        return None
    token = os.environ.get(ENV_TOKEN, "").strip()
    if not token and os.environ.get(ENV_TOKEN_FILE):
        token = read_token(Path(os.environ[ENV_TOKEN_FILE]))
    if not token:
        raise ConfigError(
            f"{ENV_URL} is set to {url!r} but no token is: set {ENV_TOKEN} "
            f"(or {ENV_TOKEN_FILE}) to the control plane's token"
        )
    return Endpoint(url, token)


def read_endpoint_file(directory: Path) -> tuple[Endpoint, int] | None:
    """The endpoint a control plane advertised in ``directory`` and its pid, if any."""
    try:
        info = json.loads((directory / ENDPOINT_FILE).read_text())
        token = read_token(Path(info["token_file"]))
        return Endpoint(info["url"], token), int(info["pid"])
    except (OSError, ValueError, KeyError, ConfigError):
        return None
