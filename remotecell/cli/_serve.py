"""`remotecell serve`, `stop` and `run`: the control plane in the foreground, stopping
the embedded one, and a notebook run headlessly.

``serve``'s options are the control plane's settings as ``backend/config.py`` declares
them (flag, help, default, check); only ``--embedded`` is the command's own."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from remotecell.backend.config import Setting


class _ServeCommand(click.Command):
    """``serve``, whose options are the control plane's settings (``backend/config.py``),
    added when the command is first parsed or shown, so that the other commands do not
    import the back end: its flag, help and shown default come from the declaration, and
    an option not given is left out, so the declared default applies."""

    _with_settings = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._with_settings:
            from remotecell.backend.config import settings

            self.params[:0] = [_option(setting) for setting in settings()]
            self._with_settings = True
        return super().get_params(ctx)


def _option(setting: Setting) -> click.Option:
    choices = setting.flag.choices
    if setting.flag.is_flag:  # not given: None, so the declared default applies
        return click.Option(
            [setting.option, setting.name],
            is_flag=True,
            flag_value=True,
            default=None,
            help=setting.help,
            callback=_parsed(setting),
        )
    return click.Option(
        [setting.option, setting.name],
        type=click.Choice(choices) if choices else None,
        multiple=setting.flag.multiple,
        default=None,
        metavar=setting.metavar or None,
        help=setting.help,
        callback=_parsed(setting),
    )


def _parsed(setting: Setting) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or value == ():
            return None
        try:
            return setting.parse(value)
        except ValueError as err:
            raise click.BadParameter(str(err), ctx, param) from None

    return parse


@click.command(cls=_ServeCommand)
@click.option(
    "--embedded",
    is_flag=True,
    help="Run as the embedded default (started by %load_ext remotecell): one runner "
    "prewarmed unless --prewarm says otherwise.",
)
def serve(embedded: bool, **options: Any) -> None:
    """Run the control plane in the foreground."""
    from remotecell.backend.config import runner_log_dir, serve_config
    from remotecell.backend.executors import _forkserver
    from remotecell.client.config import data_dir as default_data_dir

    given = {name: value for name, value in options.items() if value is not None}
    if embedded:
        given.setdefault("prewarm", 1)
    data_dir = (given.get("data_dir") or default_data_dir()).resolve()
    config = serve_config({**given, "data_dir": data_dir})
    if config.executor == "local":
        # The runner template imports while the control plane does (the first runner is
        # ready sooner); the local executor takes it, and it is stopped if nobody does.
        _forkserver.start_early(runner_log_dir(data_dir))
    try:
        _serve(config, data_dir, embedded)
    finally:
        _forkserver.discard_early()


def _serve(config: Any, data_dir: Path, embedded: bool) -> None:
    from remotecell.backend.server import AlreadyRunning, CannotServe, run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def ready(addresses: list[str]) -> None:
        if not embedded:
            click.echo(f"remotecell control plane listening on {', '.join(addresses)}", err=True)
            click.echo(f"token: {data_dir / 'token'}", err=True)

    try:
        asyncio.run(run(config, ready))
    except (AlreadyRunning, CannotServe) as err:
        raise click.ClickException(str(err)) from None


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def stop(data_dir: Path | None) -> None:
    """Stop the embedded control plane of this user (or of --data-dir)."""
    from remotecell.client._embedded import stop as stop_server
    from remotecell.client.config import data_dir as default_data_dir

    directory = (data_dir or default_data_dir()).resolve()
    if stop_server(directory):
        click.echo(f"stopped the control plane of {directory}")
    else:
        click.echo(f"no control plane runs for {directory}")


@click.command()
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", type=int, default=600, show_default=True, help="Seconds per cell.")
@click.option("--kernel", default="python3", show_default=True, help="Kernel name.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the executed notebook, outputs included, here.",
)
@click.option(
    "--allow-errors",
    is_flag=True,
    help="Run every cell even when some raise, and exit 0 as `jupyter nbconvert "
    "--allow-errors` does; the cells that failed are still listed.",
)
def run(notebook: Path, timeout: int, kernel: str, output: Path | None, allow_errors: bool) -> None:
    """Execute NOTEBOOK headlessly and print its outputs.

    Stops at the first cell that raises (a cell tagged raises-exception may raise), names it
    and exits 1.
    """
    from remotecell._notebook import execute
    from remotecell.contract.errors import ConfigError

    try:
        done = execute(
            notebook,
            timeout=timeout,
            kernel=kernel,
            output=output,
            allow_errors=allow_errors,
            echo=click.echo,
        )
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    if not done.ok:
        click.echo(done.summary(), err=True)
    sys.exit(0 if done.ok or allow_errors else 1)
