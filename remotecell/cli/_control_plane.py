"""How a command reaches the control plane: ``--url``/``--token`` (or
``REMOTECELL_TOKEN_FILE``), and ``connected``, the one place where a remotecell error
becomes the command's one-line error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from remotecell.client import Client

url_option = click.option(
    "--url",
    envvar="REMOTECELL_URL",
    default="",
    help="Control plane address (default: the embedded one).",
)
token_option = click.option(
    "--token", envvar="REMOTECELL_TOKEN", default="", help="Control plane token."
)


@contextlib.contextmanager
def one_sentence() -> Iterator[None]:
    """A remotecell error raised in the block ends the command with its sentence
    (``Error: ...`` on standard error, exit status 1) instead of a traceback."""
    from remotecell.contract.errors import RemoteCellError

    try:
        yield
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None


NOT_RUNNING = (
    "no remotecell control plane is running: start one with `remotecell serve` "
    "(or run a `%%remote` cell), or point --url / REMOTECELL_URL at one"
)


@contextlib.contextmanager
def connected(url: str, token: str, start: bool = True) -> Iterator[Client]:
    """A client of the control plane at ``url`` (empty: ``REMOTECELL_URL``, else the
    embedded one) for the block, closed however the block ends. Without ``start``, a
    command that only reads or cancels ends with ``NOT_RUNNING`` instead of
    starting the embedded control plane. An empty ``token`` is read from
    ``REMOTECELL_TOKEN_FILE`` when that is set. A remotecell error, such as no control
    plane answering or a refused token, ends the command with its sentence (see
    ``one_sentence``).
    """
    import os
    from pathlib import Path

    from remotecell.client import config, connect

    with one_sentence():
        if url and not token and os.environ.get(config.ENV_TOKEN_FILE):
            token = config.read_token(Path(os.environ[config.ENV_TOKEN_FILE]))
        client = connect(url, token) if url or start else _running_embedded()
        try:
            yield client
        finally:
            client.close()


def _running_embedded() -> Client:
    """A client of this user's embedded control plane if one runs (its advertised
    address answers), else the command ends with ``NOT_RUNNING``."""
    from remotecell.client import ConnectionError, config, connect

    found = config.read_endpoint_file(config.data_dir())
    if found is None:
        raise click.ClickException(NOT_RUNNING)
    endpoint = found[0]
    try:
        return connect(endpoint.url, endpoint.token)
    except ConnectionError:  # a control plane that died without removing its file
        raise click.ClickException(NOT_RUNNING) from None
