"""The `remotecell` command line: the ``main`` group, and one module per command group.

``_serve`` (serve, stop, run), ``_jobs`` (jobs, logs, cancel, gpus), ``_image``,
``_secret``, ``_token``, ``_volume`` and ``_endpoint``. Commands that call the control plane take ``--url`` and
``--token`` and run their calls in ``_control_plane.connected``, which turns a
remotecell error into the command's one-line error and closes the client.
"""

from __future__ import annotations

import click

from remotecell import __version__
from remotecell.cli._endpoint import endpoint
from remotecell.cli._image import image
from remotecell.cli._jobs import cancel, gpus, jobs, logs
from remotecell.cli._secret import secret
from remotecell.cli._serve import run, serve, stop
from remotecell.cli._token import token
from remotecell.cli._volume import volume

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotecell")
def main() -> None:
    """remotecell: run notebook cells on remote runners (`%%remote` in Jupyter)."""


for _command in (
    serve,
    stop,
    run,
    jobs,
    logs,
    cancel,
    gpus,
    image,
    secret,
    token,
    volume,
    endpoint,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
