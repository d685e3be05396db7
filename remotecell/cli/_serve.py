"""`remotecell serve`, `stop` and `run`: the control plane in the foreground, stopping
the embedded one, and a notebook run headlessly."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="State, blobs and logs (default: the user data dir, or REMOTECELL_DATA_DIR).",
)
@click.option(
    "--listen",
    multiple=True,
    help="Address to serve: unix:/path or 127.0.0.1:PORT (repeatable). Default: a Unix socket in the data dir.",
)
@click.option(
    "--scaledown-window",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds an idle runner stays warm.",
)
@click.option(
    "--session-idle-timeout",
    type=float,
    default=1800.0,
    show_default=True,
    help="Seconds a session's runner (session=...) stays after its last cell.",
)
@click.option(
    "--min-containers",
    type=int,
    default=0,
    show_default=True,
    help="Runners kept warm at all times.",
)
@click.option(
    "--max-runners", type=int, default=8, show_default=True, help="Runners at most, busy or idle."
)
@click.option(
    "--cancel-grace",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds a cancelled cell gets to stop before its runner is killed.",
)
@click.option(
    "--reconnect-grace",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds a running job waits for its runner to reconnect.",
)
@click.option(
    "--prewarm",
    type=int,
    default=0,
    show_default=True,
    help="Runners to start at once, before any job.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "docker"]),
    default="local",
    show_default=True,
    help="How runners start: local processes (images: uv venvs) or docker containers.",
)
@click.option(
    "--docker-base-image",
    default="",
    help="Base of debian_slim images for the docker builder "
    "(default remotecell-base:bookworm, made by scripts/docker_setup.sh).",
)
@click.option(
    "--http",
    default="127.0.0.1:0",
    show_default=True,
    help="HOST:PORT of the HTTP side (Prometheus text at /metrics, behind the token); "
    "port 0 picks a free one; 'off' turns it off.",
)
@click.option(
    "--gpu-price",
    "gpu_prices",
    multiple=True,
    metavar="TYPE=USD",
    help="Price of one GPU of TYPE for one second, e.g. H100=0.0011 (repeatable); "
    "the defaults are Modal's list prices.",
)
@click.option(
    "--metrics-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds of telemetry readings stored as one aggregate sample.",
)
@click.option(
    "--volume-store",
    default="",
    metavar="URL",
    help="Where volumes keep their files: a directory or an fsspec URL such as "
    "s3://bucket/prefix (default: DATA_DIR/volumes).",
)
@click.option(
    "--blob-ttl",
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="Delete stored values (blobs) unused for this long: 7d, 12h, 30m, 45s or seconds; "
    "0 keeps them for ever. A finished job's results can be fetched for that long.",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Run as the embedded default (started by %load_ext remotecell).",
)
def serve(
    data_dir: Path | None,
    listen: tuple[str, ...],
    scaledown_window: float,
    session_idle_timeout: float,
    min_containers: int,
    max_runners: int,
    cancel_grace: float,
    reconnect_grace: float,
    prewarm: int,
    executor: str,
    docker_base_image: str,
    http: str,
    gpu_prices: tuple[str, ...],
    metrics_interval: float,
    blob_ttl: str,
    volume_store: str,
    embedded: bool,
) -> None:
    """Run the control plane in the foreground."""
    from remotecell.backend.server import AlreadyRunning, CannotServe, ServerConfig, run
    from remotecell.client.config import data_dir as default_data_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(
        data_dir=(data_dir or default_data_dir()).resolve(),
        listen=list(listen),
        scaledown_window=scaledown_window,
        session_idle_timeout=session_idle_timeout,
        min_containers=min_containers,
        max_runners=max_runners,
        cancel_grace=cancel_grace,
        reconnect_grace=reconnect_grace,
        prewarm=prewarm or (1 if embedded else 0),
        executor=executor,
        docker_base_image=docker_base_image,
        http=_http_address(http),
        gpu_prices=_gpu_prices(gpu_prices),
        metrics_interval=metrics_interval,
        blob_ttl=_duration(blob_ttl, "--blob-ttl"),
        volume_url=volume_store,
    )

    def ready(addresses: list[str]) -> None:
        if not embedded:
            click.echo(f"remotecell control plane listening on {', '.join(addresses)}", err=True)
            click.echo(f"token: {config.data_dir / 'token'}", err=True)

    try:
        asyncio.run(run(config, ready))
    except (AlreadyRunning, CannotServe) as err:
        raise click.ClickException(str(err)) from None


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: str, option: str) -> float:
    """Seconds in "7d", "12h", "30m", "45s" or "90" (seconds)."""
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise click.BadParameter(
            f"{value!r}: expected a duration such as 7d, 12h, 30m, 45s or 90 (seconds)",
            param_hint=option,
        )
    return seconds


def _http_address(value: str) -> str:
    from remotecell.backend.server import parse_http

    try:
        parse_http(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--http") from None
    return value


def _gpu_prices(items: tuple[str, ...]) -> dict[str, float]:
    """``--gpu-price TYPE=USD`` values, by canonical type."""
    from remotecell.contract.errors import ConfigError
    from remotecell.contract.resources import ANY, parse_gpu

    prices: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not price >= 0 or ":" in name or name.strip().lower() == ANY:
            raise click.BadParameter(
                f"{item!r}: expected TYPE=USD_PER_SECOND, e.g. H100=0.0011",
                param_hint="--gpu-price",
            )
        try:
            request = parse_gpu(name.strip())
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint="--gpu-price") from None
        assert request is not None
        prices[request.choices[0].type] = price
    return prices


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
    help="Also write the executed notebook here.",
)
def run(notebook: Path, timeout: int, kernel: str, output: Path | None) -> None:
    """Execute NOTEBOOK headlessly and print its outputs."""
    from remotecell._notebook import execute

    ok = execute(notebook, timeout=timeout, kernel=kernel, output=output, echo=click.echo)
    sys.exit(0 if ok else 1)
