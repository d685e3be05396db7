"""Where the notebook side finds its control plane.

In order: ``REMOTECELL_URL`` (with ``REMOTECELL_TOKEN`` or ``REMOTECELL_TOKEN_FILE``),
the traitlets options ``RemoteMagics.url`` / ``RemoteMagics.token`` (see
``remotecell.kernel_magics``), else the embedded default: this user's local control
plane under the data directory, started in the background when none runs.

A URL ``https://HOST:PORT`` is served over TLS: the client pins its certificate by
``REMOTECELL_TLS_FINGERPRINT`` (SHA-256, hex, colons optional) or ``REMOTECELL_CA_FILE``
(``RemoteMagics.tls_fingerprint`` / ``ca_file``), else trusts the system's CAs.
``unix:/path`` and ``HOST:PORT`` are plaintext.
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
ENV_TLS_FINGERPRINT = "REMOTECELL_TLS_FINGERPRINT"
ENV_CA_FILE = "REMOTECELL_CA_FILE"
TLS_PREFIX = "https://"

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
    """A control plane's address and the token it expects; for a TLS one
    (``https://HOST:PORT``), the certificate to pin: its SHA-256 or a CA file."""

    url: str
    token: str
    tls_fingerprint: str = ""
    ca_file: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tls_fingerprint", normal_fingerprint(self.tls_fingerprint))

    @property
    def tls(self) -> bool:
        """Whether the control plane is reached over TLS (an ``https://`` URL)."""
        return self.url.startswith(TLS_PREFIX)

    @property
    def target(self) -> str:
        """The gRPC target: ``unix:/path``, ``host:port`` (a ``grpc://`` prefix is dropped)."""
        url = self.url
        for prefix in ("grpc://", "http://", TLS_PREFIX):
            if url.startswith(prefix):
                return url[len(prefix) :].rstrip("/")
        return url


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as lowercase hex without colons ("" stays "").

    Raises:
        ConfigError: not 64 hex digits.
    """
    digits = text.strip().replace(":", "").lower()
    if digits and (len(digits) != 64 or not all(c in "0123456789abcdef" for c in digits)):
        raise ConfigError(
            f"{text!r} is no SHA-256 fingerprint: expected 64 hex digits (colons optional), "
            "as `remotecell serve` prints it"
        )
    return digits


def tls_pins(fingerprint: str = "", ca_file: str = "") -> dict[str, str]:
    """The certificate pins given, else those in the environment, as ``Endpoint`` takes them."""
    if not fingerprint and not ca_file:
        fingerprint = os.environ.get(ENV_TLS_FINGERPRINT, "")
        ca_file = os.environ.get(ENV_CA_FILE, "")
    return {"tls_fingerprint": fingerprint.strip(), "ca_file": ca_file.strip()}


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
    return Endpoint(url, token, **tls_pins())


def read_endpoint_file(directory: Path) -> tuple[Endpoint, int] | None:
    """The endpoint a control plane advertised in ``directory`` and its pid, if any."""
    try:
        info = json.loads((directory / ENDPOINT_FILE).read_text())
        token = read_token(Path(info["token_file"]))
        fingerprint = info.get("tls_fingerprint", "")
        return Endpoint(info["url"], token, tls_fingerprint=fingerprint), int(info["pid"])
    except (OSError, ValueError, KeyError, ConfigError):
        return None
