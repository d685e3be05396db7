"""The rules for deployments, shared by the client, the control plane, the gateway and
the runner: a deployment's name, its settings (each with its default and bounds), and
how a call's arguments and answers travel.

A setting is one :class:`Settings` value from the magic's line (or ``deploy(...)``'s
keywords) to the autoscaler; :func:`Settings.to_proto` and :func:`Settings.from_proto`
convert it at the wire, and :func:`Settings.checked` is the one check, run by the client
for an early error and again by the control plane.
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
from typing import Any

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError
from remotecell.contract.slugs import check_slug
from remotecell.contract.wire import MAX_MESSAGE_BYTES

#: The HTTP path of a deployment's calls.
PATH_PREFIX = "/endpoints/"
#: Below the wire's bound, with room for the call's other fields.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
MAX_CONTAINERS = 256
MAX_CONCURRENCY = 1000
MAX_BATCH = 1024
MAX_QUEUE = 100_000
MAX_WINDOW_S = 7 * 24 * 3600.0
MAX_CALL_TIMEOUT_S = 24 * 3600.0
#: A client's call id, and a request id the gateway makes.
MAX_CALL_ID_CHARS = 64
#: What a replica serves: a plain (or ``async def``) function, a generator (its items
#: stream), or an ASGI app.
HANDLER_KINDS = ("function", "generator", "asgi")


def check_name(name: Any) -> str:
    """A deployment's name, checked: it is the last part of its URL.

    Raises:
        ConfigError: not 1-63 lowercase letters, digits or '-', starting with a letter
            or digit.
    """
    return check_slug(name, "deployment", "`embed` or `llm-v2`")


@dataclass(frozen=True)
class Settings:
    """A deployment's scaling and calling settings, with their defaults.

    Example:
        >>> Settings(max_containers=8, concurrency=4).checked().max_containers
        8
    """

    #: Replicas kept even with no calls (0: it scales to zero).
    min_containers: int = 0
    max_containers: int = 4
    #: Replicas started beyond what the calls in flight need, while there are calls.
    buffer_containers: int = 0
    #: Calls a replica takes at once.
    concurrency: int = 1
    #: How long a replica stays without calls before it stops (down to min_containers).
    scaledown_window: float = 60.0
    #: > 1: calls are gathered into lists of up to this many for one handler call.
    batch_size: int = 0
    batch_wait_ms: float = 10.0
    #: A call not answered in this long fails (HTTP 504).
    call_timeout: float = 300.0
    #: Calls that may wait for a replica; one more is refused (HTTP 503).
    max_queue: int = 1000
    #: HTTP calls need no credential.
    public: bool = False
    #: A failed HTTP call's response holds the remote traceback.
    debug: bool = False
    max_body_bytes: int = 1 << 20

    def checked(self) -> Settings:
        """These settings, checked.

        Raises:
            ConfigError: one sentence naming the setting that is out of its bounds.
        """
        _count("min_containers", self.min_containers, 0, MAX_CONTAINERS)
        _count("max_containers", self.max_containers, 1, MAX_CONTAINERS)
        if self.min_containers > self.max_containers:
            raise ConfigError(
                f"min_containers={self.min_containers} is above max_containers="
                f"{self.max_containers}; raise max_containers or lower min_containers"
            )
        _count("buffer_containers", self.buffer_containers, 0, MAX_CONTAINERS)
        _count("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _count("batch_size", self.batch_size, 0, MAX_BATCH)
        _count("max_queue", self.max_queue, 1, MAX_QUEUE)
        _count("max_body_bytes", self.max_body_bytes, 1, MAX_BODY_BYTES)
        _seconds("scaledown_window", self.scaledown_window, 0.0, MAX_WINDOW_S)
        _seconds("batch_wait_ms", self.batch_wait_ms, 0.0, 60_000.0)
        _seconds("call_timeout", self.call_timeout, 0.001, MAX_CALL_TIMEOUT_S)
        for name in ("public", "debug"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}= must be True or False")
        return self

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_proto(self) -> pb.DeploymentSettings:
        return pb.DeploymentSettings(
            min_containers=self.min_containers,
            max_containers=self.max_containers,
            buffer_containers=self.buffer_containers,
            concurrency=self.concurrency,
            scaledown_window_s=self.scaledown_window,
            batch_size=self.batch_size,
            batch_wait_ms=self.batch_wait_ms,
            call_timeout_s=self.call_timeout,
            max_queue=self.max_queue,
            public=self.public,
            debug=self.debug,
            max_body_bytes=self.max_body_bytes,
        )

    @classmethod
    def from_proto(cls, msg: pb.DeploymentSettings) -> Settings:
        """The settings a message holds; a field left at 0 takes its default where 0 is
        not a value it may have."""
        d = cls()
        return cls(
            min_containers=msg.min_containers,
            max_containers=msg.max_containers or d.max_containers,
            buffer_containers=msg.buffer_containers,
            concurrency=msg.concurrency or d.concurrency,
            scaledown_window=msg.scaledown_window_s,
            batch_size=msg.batch_size,
            batch_wait_ms=msg.batch_wait_ms,
            call_timeout=msg.call_timeout_s or d.call_timeout,
            max_queue=msg.max_queue or d.max_queue,
            public=msg.public,
            debug=msg.debug,
            max_body_bytes=msg.max_body_bytes or d.max_body_bytes,
        )

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Settings:
        """Settings from keyword options (the magic's line, ``deploy(...)``), by their
        names here; ``scaledown_window``, ``call_timeout`` in seconds.

        Raises:
            ConfigError: an option that is not a setting, or a value out of bounds.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(
                f"{unknown[0]}= is not a deployment setting; the settings are "
                + ", ".join(sorted(names))
            )
        return cls(**options).checked()


def _count(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is not a whole number from {low} to {high}")


def _seconds(name: str, value: Any, low: float, high: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not low <= float(value) <= high  # also refuses NaN
    ):
        raise ConfigError(f"{name}={value!r} is not a number from {low:g} to {high:g}")


def defined_functions(source: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The functions a cell's ``source`` defines at its top level, by name, in order of
    their first definition (the last one of a name wins, as it does when the cell runs):
    which one a replica serves when no ``handler=`` names one.

    Raises:
        SyntaxError: the source is not Python.
    """
    return {
        node.name: node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def check_serve(serve: pb.Serve) -> None:
    """A replica's ``JobSpec.serve``, checked as the control plane receives it.

    Raises:
        ConfigError: a handler name that is not a Python name, or counts out of bounds.
    """
    if serve.handler and not serve.handler.isidentifier():
        raise ConfigError(
            f"handler={serve.handler[:80]!r} is not a Python name; name the cell's "
            "function, such as handler='predict'"
        )
    _count("concurrency", serve.concurrency or 1, 1, MAX_CONCURRENCY)
    _count("batch_size", serve.batch_size, 0, MAX_BATCH)
    _seconds("batch_wait_ms", serve.batch_wait_ms, 0.0, 60_000.0)


def serve_for(name: str, version: int, handler: str, settings: Settings) -> pb.Serve:
    """What a replica of version ``version`` is told about serving."""
    return pb.Serve(
        deployment=name,
        version=version,
        handler=handler,
        concurrency=settings.concurrency,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
    )


def check_call_id(call_id: Any) -> str:
    """A call's id, as a client gives it on its stream.

    Raises:
        ConfigError: empty, too long, or not printable ASCII.
    """
    if (
        not isinstance(call_id, str)
        or not 0 < len(call_id) <= MAX_CALL_ID_CHARS
        or not call_id.isascii()
        or not call_id.isprintable()
    ):
        raise ConfigError(
            f"call id {str(call_id)[:80]!r} is not 1-{MAX_CALL_ID_CHARS} printable ASCII characters"
        )
    return call_id


#: HTTP status for each way a call fails.
HTTP_STATUS = {
    pb.CallError.RAISED: 500,
    pb.CallError.ARGUMENTS: 422,
    pb.CallError.BAD_REQUEST: 400,
    pb.CallError.RESULT: 500,
    pb.CallError.UNAVAILABLE: 503,
    pb.CallError.TIMEOUT: 504,
    pb.CallError.NOT_FOUND: 404,
}


def call_error(
    kind: int, message: str, type_name: str = "", traceback: str = "", call_id: str = ""
) -> pb.CallResult:
    """A failed call's last piece (``call_id``: "" where the caller sets it later)."""
    return pb.CallResult(
        call_id=call_id,
        done=True,
        error=pb.CallError(
            kind=kind,  # type: ignore[arg-type]
            type_name=type_name,
            message=message,
            traceback=traceback,
        ),
    )
