"""What ``%%remote_deploy`` shows: the endpoint's URL, a curl line for it, and a live
status line that a daemon thread keeps current from ``GetDeployment``."""

from __future__ import annotations

import json
import shlex
import threading
import time
from typing import Any

from remotecell._proto import pb
from remotecell.client.listing import deployment_status, endpoint_url
from remotecell.contract.deployments import defined_functions
from remotecell.contract.errors import RemoteCellError

#: How often the status line is refreshed, and for how long.
REFRESH_S = 1.0
FOLLOW_FOR_S = 600.0


def handler_of(source: str, handler: str | None) -> tuple[str, list[str]]:
    """The handler a cell serves, as far as its text tells, and its parameters: ``handler``
    or the cell's one top-level def ("" and none when it is neither, such as an ASGI app
    or a function from the notebook). Raises SyntaxError as Python would."""
    defs = defined_functions(source)
    name = handler if handler is not None else (next(iter(defs)) if len(defs) == 1 else "")
    node = defs.get(name)
    if node is None:
        return name, []
    params = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    return name, params


def curl_line(url: str, params: list[str], asgi: bool = False) -> str:
    """A curl command that calls the endpoint, its JSON body naming the handler's
    parameters."""
    auth = '-H "Authorization: Bearer $REMOTECELL_TOKEN"'
    if asgi:
        return f"curl {shlex.quote(url + '/')} {auth}"
    body = json.dumps({p: "..." for p in params} or {"text": "..."})
    return (
        f"curl -X POST {shlex.quote(url)} {auth} -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )


class StatusLines:
    """The live status lines of a notebook's endpoints: one updater thread per name (a
    new deploy of the name replaces the old line's updater)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}

    def show(self, client: Any, info: pb.DeploymentInfo, handler: str, params: list[str]) -> None:
        """Prints the endpoint's URL and a curl line, then shows its status line, kept
        current for ``FOLLOW_FOR_S`` or until it stops."""
        from IPython.display import display

        try:
            http_url = client.health().http_url
        except RemoteCellError:
            http_url = ""
        url = endpoint_url(http_url, info)
        shown = handler or info.handler
        print(f"deployed {info.name} v{info.version}" + (f" (handler {shown})" if shown else ""))
        if url:
            print(f"endpoint: {url}")
            print(curl_line(url, params, asgi=not shown and info.kind == "asgi"))
        else:
            print(
                "the control plane serves no HTTP (start it with `remotecell serve --http "
                "HOST:PORT`); call it from Python: remotecell.Deployment.from_name("
                f"{info.name!r}).remote(...)"
            )
        handle = display({"text/plain": deployment_status(info)}, raw=True, display_id=True)
        stop = threading.Event()
        with self._lock:
            previous = self._stops.pop(info.name, None)
            self._stops[info.name] = stop
        if previous is not None:
            previous.set()
        if handle is None:  # no display publisher (a plain shell): nothing to update
            return
        threading.Thread(
            target=self._follow,
            args=(client, info.name, handle, stop),
            name=f"remotecell-endpoint-{info.name}",
            daemon=True,
        ).start()

    def _follow(self, client: Any, name: str, handle: Any, stop: threading.Event) -> None:
        deadline = time.monotonic() + FOLLOW_FOR_S
        last = ""
        while not stop.wait(REFRESH_S) and time.monotonic() < deadline:
            try:
                info = client.get_deployment(name)
                text = deployment_status(info)
                if text != last:
                    handle.update({"text/plain": text}, raw=True)
                    last = text
                if info.stopped:
                    break
            except Exception:  # gone, or the connection closed: the line stays as it was
                break
        with self._lock:
            if self._stops.get(name) is stop:
                del self._stops[name]

    def stop_all(self) -> None:
        with self._lock:
            stops, self._stops = list(self._stops.values()), {}
        for stop in stops:
            stop.set()
