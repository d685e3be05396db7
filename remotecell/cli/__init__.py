"""The `remotecell` command line."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import click

from remotecell import __version__


def _client(url: str, token: str) -> Any:
    from remotecell.client import connect
    from remotecell.contract.errors import RemoteCellError

    try:
        return connect(url, token)
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotecell")
def main() -> None:
    """remotecell: run notebook cells on remote runners (`%%remote` in Jupyter)."""


_url = click.option(
    "--url",
    envvar="REMOTECELL_URL",
    default="",
    help="Control plane address (default: the embedded one).",
)
_token = click.option("--token", envvar="REMOTECELL_TOKEN", default="", help="Control plane token.")


@main.command()
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


@main.command()
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


@main.command()
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


@main.command()
@click.option("--limit", type=int, default=20, show_default=True)
@_url
@_token
def jobs(limit: int, url: str, token: str) -> None:
    """List recent jobs."""
    from remotecell.client._listing import format_jobs

    client = _client(url, token)
    try:
        click.echo(format_jobs(client.list_jobs(limit)))
    finally:
        client.close()


@main.command()
@_url
@_token
def gpus(url: str, token: str) -> None:
    """List the control plane's GPUs and the jobs holding them."""
    from remotecell.client._listing import format_gpus

    client = _client(url, token)
    try:
        click.echo(format_gpus(client.list_gpus()))
    finally:
        client.close()


@main.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep following until the job ends.")
@_url
@_token
def logs(job_id: str, follow: bool, url: str, token: str) -> None:
    """Print a job's output (stdout, stderr, errors)."""
    import json

    from remotecell._proto import pb
    from remotecell.contract.errors import RemoteCellError

    client = _client(url, token)
    try:
        info = client.get_job(job_id)
        if not follow and info.state in (pb.QUEUED, pb.RUNNING):
            events: Any = _stored_events(client, job_id, info.events)
        else:
            events = client.attach(job_id)
        for event in events:
            kind = event.WhichOneof("body")
            if kind == "stream":
                stream = sys.stdout if event.stream.name == pb.Stream.STDOUT else sys.stderr
                stream.write(event.stream.text)
                stream.flush()
            elif kind == "display":
                data = json.loads(event.display.data_json or "{}")
                if "text/plain" in data:
                    click.echo(data["text/plain"])
            elif kind == "error":
                click.echo(
                    "\n".join(event.error.traceback)
                    or f"{event.error.type_name}: {event.error.message}",
                    err=True,
                )
            elif kind == "status" and event.status.message:
                click.echo(f"[{event.status.message}]", err=True)
            elif kind == "finished":
                click.echo(
                    f"[{job_id} {pb.JobState.Name(event.finished.state).lower()}"
                    + (f": {event.finished.message}]" if event.finished.message else "]"),
                    err=True,
                )
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()


def _stored_events(client: Any, job_id: str, count: int) -> Any:
    """The events stored so far, without waiting for new ones."""
    stream = client.attach(job_id)
    try:
        for _ in range(count):
            event = stream.next(timeout=10)
            if event is None:
                return
            yield event
    finally:
        stream.close()


@main.command()
@click.argument("job_id")
@_url
@_token
def cancel(job_id: str, url: str, token: str) -> None:
    """Cancel a job."""
    from remotecell.client._listing import state_name
    from remotecell.contract.errors import RemoteCellError

    client = _client(url, token)
    try:
        reply = client.cancel(job_id, "cancelled with `remotecell cancel`")
        click.echo(f"{job_id}: {state_name(reply.state)}")
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()


# ---------------------------------------------------------------- images


@main.group()
def image() -> None:
    """Built images: list them, read build logs, remove them."""


_data_dir = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The control plane's data directory (default: the user data dir, or REMOTECELL_DATA_DIR).",
)


def _image_cache(data_dir: Path | None) -> Any:
    from remotecell.backend.images.cache import open_cache
    from remotecell.client.config import data_dir as default_data_dir

    return open_cache((data_dir or default_data_dir()).resolve())


def _find_image(cache: Any, image_id: str) -> Any:
    try:
        return cache.find(image_id)
    except LookupError as err:
        raise click.ClickException(str(err.args[0])) from None


@image.command("ls")
@_data_dir
def image_ls(data_dir: Path | None) -> None:
    """List built images (and failed or running builds)."""
    from remotecell.backend.images.cache import format_images

    cache = _image_cache(data_dir)
    try:
        click.echo(format_images(cache.records()))
    finally:
        asyncio.run(cache.close())


@image.command("logs")
@click.argument("image_id")
@_data_dir
def image_logs(image_id: str, data_dir: Path | None) -> None:
    """Print an image's build log (a failed build's log is kept)."""
    cache = _image_cache(data_dir)
    try:
        records = _find_image(cache, image_id)
        found = False
        for record in records:
            text = cache.log_text(record)
            if text is None:
                continue
            if len(records) > 1:
                click.echo(f"== {record.id} ({record.builder}, {record.state}) ==")
            click.echo(text, nl=False)
            found = True
        if not found:
            raise click.ClickException(f"no build log is kept for image {records[0].id[:12]}")
    finally:
        asyncio.run(cache.close())


@image.command("rm")
@click.argument("image_ids", nargs=-1, required=True)
@_data_dir
def image_rm(image_ids: tuple[str, ...], data_dir: Path | None) -> None:
    """Remove images: what was built, the record and the build log."""
    cache = _image_cache(data_dir)
    try:
        for image_id in image_ids:
            for record in _find_image(cache, image_id):
                note = asyncio.run(cache.remove(record))
                click.echo(f"removed {record.id[:12]} ({record.builder})")
                if note:
                    click.echo(f"  {note}", err=True)
    finally:
        asyncio.run(cache.close())


@image.command("prune")
@click.option(
    "--days",
    type=float,
    default=30.0,
    show_default=True,
    help="Remove images not used for this many days.",
)
@_data_dir
def image_prune(days: float, data_dir: Path | None) -> None:
    """Remove images not used for --days, failed builds and leftovers of interrupted builds."""
    cache = _image_cache(data_dir)
    try:
        removed = asyncio.run(cache.prune(days))
        for line in removed:
            click.echo(f"removed {line}")
        click.echo(f"{len(removed)} removed")
    finally:
        asyncio.run(cache.close())


# ---------------------------------------------------------------- secrets


@main.group()
def secret() -> None:
    """Secrets: environment variables for the cells that name them, stored encrypted."""


@secret.command("create")
@click.argument("name")
@click.argument("variables", nargs=-1, metavar="[KEY=VALUE | KEY]...")
@click.option(
    "--from-dotenv",
    "dotenv",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Also read KEY=VALUE lines from this file ('-': standard input).",
)
@click.option("--force", is_flag=True, help="Replace a secret of the same name.")
@_url
@_token
def secret_create(
    name: str, variables: tuple[str, ...], dotenv: Path | None, force: bool, url: str, token: str
) -> None:
    """Store secret NAME: the cells that name it get its variables.

    KEY=VALUE gives a value on the command line, where the shell's history keeps it. A
    bare KEY asks for its value without echoing it (from a pipe: one line per KEY);
    --from-dotenv reads a file of KEY=VALUE lines. Only names and keys are ever shown.

    In a notebook: %%remote secrets=[remotecell.Secret.from_name("NAME")]
    """
    from remotecell.client.secret import read_dotenv
    from remotecell.contract.errors import ConfigError, RemoteCellError
    from remotecell.contract.secrets import check_env, check_name, short_keys

    try:
        check_name(name)
        env: dict[str, str] = {}
        if dotenv is not None:
            if str(dotenv) == "-":
                env.update(read_dotenv(text=sys.stdin.read()))
            else:
                env.update(read_dotenv(dotenv))
        for item in variables:
            key, sep, value = item.partition("=")
            if not sep:
                if str(dotenv) == "-":
                    raise ConfigError(
                        f"{key} has no value, and standard input holds the dotenv file; "
                        f"give {key}=VALUE or put it in the file"
                    )
                value = _read_secret_value(key)
            if key in env:
                raise ConfigError(f"{key} is given twice; give each key once")
            env[key] = value
        env = check_env(env, f"secret {name!r}")
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    client = _client(url, token)
    try:
        reply = client.create_secret(name, env, overwrite=force)
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()
    verb = "replaced" if reply.replaced else "created"
    click.echo(f"{verb} secret {name!r} (keys: {', '.join(reply.secret.keys)})")
    short = short_keys(env)
    if short:
        click.echo(
            f"note: {', '.join(short)} {'has a value' if len(short) == 1 else 'have values'} "
            "shorter than 4 characters, which are not masked in cells' output",
            err=True,
        )


def _read_secret_value(key: str) -> str:
    stdin = sys.stdin  # one stream for every key: a fresh wrapper would lose what it buffered
    if stdin.isatty():
        return str(click.prompt(f"{key}", hide_input=True, prompt_suffix=": "))
    line = stdin.readline()
    if not line:
        from remotecell.contract.errors import ConfigError

        raise ConfigError(f"standard input ended before the value of {key}; give one per line")
    return line.rstrip("\r\n")


@secret.command("ls")
@_url
@_token
def secret_ls(url: str, token: str) -> None:
    """List secrets: names, keys and when they changed (never values)."""
    import time

    from remotecell.contract.errors import RemoteCellError

    client = _client(url, token)
    try:
        secrets = client.list_secrets()
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()
    if not secrets:
        click.echo("no secrets; create one with `remotecell secret create NAME KEY=VALUE`")
        return

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    rows = [("NAME", "UPDATED", "CREATED", "KEYS")]
    rows += [(s.name, when(s.updated), when(s.created), ", ".join(s.keys)) for s in secrets]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:3])) + "  " + r[3])


@secret.command("rm")
@click.argument("names", nargs=-1, required=True)
@_url
@_token
def secret_rm(names: tuple[str, ...], url: str, token: str) -> None:
    """Remove secrets. Jobs that name one and have not started yet will fail."""
    from remotecell.contract.errors import RemoteCellError

    client = _client(url, token)
    try:
        for name in names:
            client.delete_secret(name)
            click.echo(f"removed secret {name!r}")
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()


# ---------------------------------------------------------------- volumes


@main.group()
def volume() -> None:
    """Volumes: file trees that cells mount (%%remote volumes={"/models": vol})."""


def _on_volumes(url: str, token: str, work: Any) -> Any:
    """Runs ``work(client)``; a remotecell error ends the command with its sentence."""
    from remotecell.contract.errors import RemoteCellError

    client = _client(url, token)
    try:
        return work(client)
    except RemoteCellError as err:
        raise click.ClickException(str(err)) from None
    finally:
        client.close()


@volume.command("create")
@click.argument("name")
@_url
@_token
def volume_create(name: str, url: str, token: str) -> None:
    """Make an empty volume NAME."""
    from remotecell.client import _volume_rpc

    info = _on_volumes(url, token, lambda client: _volume_rpc.create(client, name))
    click.echo(f"created volume {info.name} ({info.url})")


@volume.command("ls")
@click.argument("name", required=False)
@click.argument("path", required=False, default="/")
@click.option("-r", "--recursive", is_flag=True, help="Every file below PATH.")
@_url
@_token
def volume_ls(name: str | None, path: str, recursive: bool, url: str, token: str) -> None:
    """List the volumes, or what volume NAME holds under PATH."""
    from remotecell.client import _volume_rpc
    from remotecell.client._volume_listing import format_files, format_volumes

    if name is None:
        click.echo(format_volumes(_on_volumes(url, token, _volume_rpc.list_volumes)))
        return
    files = _on_volumes(
        url, token, lambda client: _volume_rpc.list_files(client, name, path, recursive)
    )
    click.echo(format_files(files))


@volume.command("put")
@click.argument("name")
@click.argument("local", type=click.Path(exists=True, path_type=Path))
@click.argument("remote", required=False)
@_url
@_token
def volume_put(name: str, local: Path, remote: str | None, url: str, token: str) -> None:
    """Copy LOCAL (a file, or a directory and what it holds) into volume NAME at REMOTE.

    REMOTE defaults to /LOCAL's name; a REMOTE ending in / is a directory to put it in.
    """
    import os

    from remotecell.client import _volume_rpc

    target = remote or "/"
    if target.endswith("/"):
        target += local.resolve().name
    if local.is_dir():
        pairs = []
        for directory, _, files in os.walk(local):
            for file in sorted(files):
                path = Path(directory) / file
                if path.is_file() and not path.is_symlink():
                    relative = path.relative_to(local).as_posix()
                    pairs.append((path, f"{target.rstrip('/')}/{relative}"))
    else:
        pairs = [(local, target)]

    def put(client: Any) -> None:
        for path, destination in pairs:
            entry = _volume_rpc.write_file(client, name, destination, path)
            click.echo(f"{path} -> {name}:/{entry.path} ({entry.size} bytes)")

    _on_volumes(url, token, put)


@volume.command("get")
@click.argument("name")
@click.argument("remote")
@click.argument("local", required=False, type=click.Path(path_type=Path))
@_url
@_token
def volume_get(name: str, remote: str, local: Path | None, url: str, token: str) -> None:
    """Copy REMOTE (a file, or a directory and what it holds) out of volume NAME.

    LOCAL defaults to REMOTE's name in the current directory; an existing directory
    receives it; '-' writes a file to standard output.
    """
    from remotecell.client import _volume_rpc
    from remotecell.contract.volumes import volume_path

    def get(client: Any) -> None:
        rel = volume_path(remote, name)
        files = [f for f in _volume_rpc.list_files(client, name, rel, True) if not f.is_dir]
        single = len(files) == 1 and files[0].path == rel
        if str(local) == "-":
            if not single:
                raise click.ClickException(f"{remote!r} is a directory: give a LOCAL directory")
            _volume_rpc.read_into(client, name, rel, sys.stdout.buffer)
            return
        base = local or Path(rel.rpartition("/")[2] or name)
        if base.is_dir() and (single or local is not None):
            base = base / (rel.rpartition("/")[2] or name)
        for entry in files:
            destination = base if single else base / entry.path[len(rel) :].lstrip("/")
            # A remote store's listing is the store's word: a key with ".." in it must
            # not write outside LOCAL.
            if not single and (
                not entry.path.startswith(rel)
                or not destination.resolve().is_relative_to(base.resolve())
            ):
                raise click.ClickException(
                    f"volume {name!r} lists {entry.path!r}, which is not inside {remote!r}; "
                    "nothing more was written (check the volume store for that key)"
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            part = destination.with_name(f".{destination.name}.remotecell-part")
            try:
                with open(part, "wb") as out:
                    _volume_rpc.read_into(client, name, entry.path, out)
                part.replace(destination)
            finally:
                part.unlink(missing_ok=True)
            click.echo(f"{name}:/{entry.path} -> {destination} ({entry.size} bytes)")

    _on_volumes(url, token, get)


@volume.command("rm")
@click.argument("name")
@click.argument("path")
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory and what it holds.")
@_url
@_token
def volume_rm(name: str, path: str, recursive: bool, url: str, token: str) -> None:
    """Remove PATH from volume NAME."""
    from remotecell.client import _volume_rpc

    count = _on_volumes(
        url, token, lambda client: _volume_rpc.remove(client, name, path, recursive)
    )
    click.echo(f"removed {count} file(s) from {name}")


@volume.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_url
@_token
def volume_delete(name: str, yes: bool, url: str, token: str) -> None:
    """Delete volume NAME and every file in it."""
    from remotecell.client import _volume_rpc

    if not yes:
        click.confirm(f"delete volume {name} and every file in it?", abort=True)
    count = _on_volumes(url, token, lambda client: _volume_rpc.delete(client, name))
    click.echo(f"deleted volume {name} ({count} file(s))")


if __name__ == "__main__":
    main()
