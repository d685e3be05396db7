"""`remotecell endpoint ls | logs | stop | scale | rollback`: deployed endpoints."""

from __future__ import annotations

import click

from remotecell.cli._control_plane import connected, one_sentence, token_option, url_option


@click.group()
def endpoint() -> None:
    """Endpoints: cells and functions deployed as services.

    Deploy one in a notebook with %%remote_deploy NAME, or remotecell.deploy(fn, name=...).
    """


@endpoint.command("ls")
@url_option
@token_option
def endpoint_ls(url: str, token: str) -> None:
    """List the deployments: version, replicas, calls, latency and URL."""
    from remotecell.client.listing import format_deployments

    with connected(url, token, start=False) as client:
        deployments = client.list_deployments()
        http_url = client.health().http_url
    click.echo(format_deployments(deployments, http_url))


@endpoint.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=click.IntRange(min=0), default=0, help="Only the last N lines.")
@url_option
@token_option
def endpoint_logs(name: str, follow: bool, tail: int, url: str, token: str) -> None:
    """Print deployment NAME's log: replicas starting and stopping, and its calls."""
    with connected(url, token, start=False) as client:
        try:
            for line in client.deployment_logs(name, follow=follow, tail=tail):
                click.echo(line)
        except KeyboardInterrupt:
            pass


@endpoint.command("stop")
@click.argument("name")
@url_option
@token_option
def endpoint_stop(name: str, url: str, token: str) -> None:
    """Stop deployment NAME: no new calls; its replicas drain and stop."""
    with connected(url, token, start=False) as client:
        info = client.stop_deployment(name)
    click.echo(f"stopped {info.name or name}")


@endpoint.command("scale")
@click.argument("name")
@click.option(
    "--min", "min_containers", type=click.IntRange(min=0), default=None, help="Replicas kept idle."
)
@click.option(
    "--max", "max_containers", type=click.IntRange(min=1), default=None, help="Most replicas."
)
@url_option
@token_option
def endpoint_scale(
    name: str, min_containers: int | None, max_containers: int | None, url: str, token: str
) -> None:
    """Change deployment NAME's min and max containers."""
    from remotecell.contract.deployments import Settings
    from remotecell.contract.errors import ConfigError

    with one_sentence():
        if min_containers is None and max_containers is None:
            raise ConfigError("give --min N, --max N or both")
        if min_containers is not None and max_containers is not None:
            Settings(min_containers=min_containers, max_containers=max_containers).checked()
    with connected(url, token, start=False) as client:
        info = client.scale_deployment(name, min_containers, max_containers)
    settings = info.settings
    click.echo(
        f"{info.name or name} v{info.version}: min_containers={settings.min_containers} "
        f"max_containers={settings.max_containers}"
    )


@endpoint.command("rollback")
@click.argument("name")
@url_option
@token_option
def endpoint_rollback(name: str, url: str, token: str) -> None:
    """Make deployment NAME's previous version current again."""
    with connected(url, token, start=False) as client:
        info = client.rollback_deployment(name)
    click.echo(f"{info.name or name} is at v{info.version} now")
