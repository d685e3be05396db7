"""Deployed endpoints from Python: ``Deployment`` (a deployment by name), ``deploy`` (a
function or an ASGI app as a deployment), and ``function`` (a decorator whose
``.map``/``.remote`` fan out to an ephemeral deployment made on first use).

Calls go through the default client, the one ``%%remote`` uses in a kernel with the
extension loaded (``client.context``); many calls share one stream.

Example:
    >>> import remotecell
    >>> @remotecell.function(gpu="any", max_containers=8)    # doctest: +SKIP
    ... def embed(text):
    ...     return len(text)
    >>> embed.map(["a", "bb", "ccc"])                        # doctest: +SKIP
    [1, 2, 3]
"""

from __future__ import annotations

import inspect
import re
import secrets as _secrets
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from remotecell._proto import pb
from remotecell.client import context
from remotecell.client.invoke import WINDOW, PendingCall
from remotecell.client.listing import endpoint_url
from remotecell.client.spec import (
    build_spec,
    env_option,
    image_option,
    secrets_option,
    volumes_option,
)
from remotecell.contract import values
from remotecell.contract.deployments import Settings, check_name, serve_for
from remotecell.contract.errors import ConfigError
from remotecell.contract.resources import parse_gpu

if TYPE_CHECKING:
    from remotecell.client._blocking import Client

__all__ = ["Deployment", "Function", "FunctionCall", "deploy", "function"]


class FunctionCall:
    """A call started with ``spawn``: ``get()`` waits for its value.

    Example:
        >>> call = Deployment.from_name("embed").spawn("hello")   # doctest: +SKIP
        >>> call.get(timeout=30)                                  # doctest: +SKIP
    """

    def __init__(self, pending: PendingCall) -> None:
        self._pending = pending

    @property
    def call_id(self) -> str:
        return self._pending.call_id

    def get(self, timeout: float | None = None) -> Any:
        """The call's value, waiting at most ``timeout`` seconds (None: as long as it takes).

        Raises:
            CallTimeoutError: no answer within ``timeout`` (the call goes on; ``get`` again).
            RemoteError: the handler raised (as its own exception type where it loads).
        """
        return self._pending.result(timeout)

    def done(self) -> bool:
        """Whether the answer is all here, without waiting."""
        return self._pending.poll()

    def __repr__(self) -> str:
        return f"<FunctionCall {self.call_id}{' done' if self._pending.done else ''}>"


class Deployment:
    """A deployed endpoint, by name: call it from Python, see how it does, scale it.

    Example:
        >>> d = Deployment.from_name("embed")         # doctest: +SKIP
        >>> d.remote("hello")                          # doctest: +SKIP
        [0.1, 0.3, ...]
        >>> list(d.map(["a", "b", "c"]))               # doctest: +SKIP
        >>> d.scale(max_containers=8)                  # doctest: +SKIP
    """

    def __init__(self, name: str, *, client: Client | None = None) -> None:
        self.name = check_name(name)
        self._client = client

    @classmethod
    def from_name(cls, name: str, *, client: Client | None = None) -> Deployment:
        """The deployment called ``name`` (nothing is asked until it is used).

        Args:
            name: its name, as ``%%remote_deploy NAME`` or ``deploy(..., name=)`` gave it.
            client: the client to call through; None: the notebook's (``%%remote``'s).
        """
        return cls(name, client=client)

    @property
    def client(self) -> Client:
        return self._client if self._client is not None else context.client()

    def __repr__(self) -> str:
        return f"Deployment({self.name!r})"

    # -- calls ---------------------------------------------------------------------

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the handler on a replica and returns its value.

        Raises:
            RemoteError: the handler raised (as its own exception type where it loads).
            CallArgumentsError: the arguments do not fit the handler.
            EndpointUnavailableError: no replica could take the call.
            CallTimeoutError: not answered within the deployment's call timeout.

        Example:
            >>> Deployment.from_name("embed").remote("hello")   # doctest: +SKIP
        """
        return self.client.call(self.name, args, kwargs)

    def remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Calls a generator handler; its items as they come.

        Example:
            >>> for token in Deployment.from_name("llm").remote_gen("Hi"):  # doctest: +SKIP
            ...     print(token, end="")
        """
        return self.client.call_stream(self.name, args, kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Starts a call and returns at once; ``.get()`` waits for its value.

        Example:
            >>> calls = [d.spawn(x) for x in range(10)]   # doctest: +SKIP
            >>> [c.get() for c in calls]                   # doctest: +SKIP
        """
        return FunctionCall(self.client._spawn(self.name, args, kwargs))

    def map(
        self,
        *iterables: Iterable[Any],
        kwargs: Mapping[str, Any] | None = None,
        return_exceptions: bool = False,
        order_outputs: bool = True,
        window: int = WINDOW,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Calls the handler once per item of ``iterables`` (zipped into positional
        arguments, each call also given ``kwargs``), many calls at once (at most
        ``window`` outstanding); yields their values in order (``order_outputs=False``: as
        they end).

        Args:
            return_exceptions: a failed call's exception is yielded in its place; without,
                the first failure raises and the calls still outstanding are dropped.
            progress: a tqdm bar (when tqdm is installed); None: in a notebook only.

        Example:
            >>> list(Deployment.from_name("add").map([1, 2], [10, 20]))   # doctest: +SKIP
            [11, 22]
        """
        if not iterables:
            raise TypeError("map() needs at least one iterable of arguments")
        arguments = zip(*iterables, strict=False)
        total = _length(iterables)
        results = self.client.call_many(
            self.name, arguments, kwargs, window, return_exceptions, order_outputs
        )
        return _with_progress(results, total, self.name, progress)

    # -- the deployment ------------------------------------------------------------

    def info(self) -> pb.DeploymentInfo:
        """Its state now: version, settings, replicas, calls in flight, p50, rate."""
        return self.client.get_deployment(self.name)

    @property
    def url(self) -> str:
        """Its HTTP URL ("" when the control plane serves no HTTP)."""
        client = self.client
        return endpoint_url(client.health().http_url, client.get_deployment(self.name))

    def stop(self) -> pb.DeploymentInfo:
        """Stops it: no new calls; its replicas drain and stop."""
        return self.client.stop_deployment(self.name)

    def scale(
        self, min_containers: int | None = None, max_containers: int | None = None
    ) -> pb.DeploymentInfo:
        """Changes its min and max containers (None: unchanged).

        Example:
            >>> Deployment.from_name("embed").scale(min_containers=1, max_containers=8)  # doctest: +SKIP
        """
        if min_containers is not None and max_containers is not None:
            Settings(min_containers=min_containers, max_containers=max_containers).checked()
        return self.client.scale_deployment(self.name, min_containers, max_containers)

    def rollback(self) -> pb.DeploymentInfo:
        """Makes the version before the current one current again."""
        return self.client.rollback_deployment(self.name)


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    ip = get() if get is not None else None
    return ip is not None and getattr(ip, "kernel", None) is not None


def _with_progress(
    results: Iterator[Any], total: int | None, name: str, progress: bool | None
) -> Iterator[Any]:
    if progress is None:
        progress = _in_notebook()
    if not progress:
        return results
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return results
    return iter(tqdm(results, total=total, desc=name, unit="call"))


# -- deploy --------------------------------------------------------------------------------


def deployment_request(
    fn_or_app: Any,
    *,
    name: str,
    gpu: Any = None,
    image: Any = None,
    secrets: Any = (),
    volumes: Any = None,
    env: Any = None,
    handler: str | None = None,
    ephemeral: bool = False,
    **settings: Any,
) -> tuple[pb.DeployRequest, dict[str, Any]]:
    """The request ``deploy`` sends, and the blobs to upload first (see ``deploy``).

    Raises:
        ConfigError: a bad name, option or setting (one sentence naming it).
    """
    check_name(name)
    checked = Settings.from_options(settings)
    if _is_function(fn_or_app):
        served = handler or fn_or_app.__name__
        if not served.isidentifier():
            raise ConfigError(
                f"deploy(): {fn_or_app!r} has no usable name ({served!r}); "
                "give one with handler='predict'"
            )
        closure = values.pack({served: fn_or_app})
    elif callable(fn_or_app):  # an ASGI app (FastAPI, Starlette, ...)
        if handler:
            raise ConfigError("deploy(): handler= names a function; an ASGI app is served whole")
        served = ""
        closure = values.pack({"app": fn_or_app})
    else:
        raise ConfigError(
            f"deploy() takes a function or an ASGI app, not a {type(fn_or_app).__name__}"
        )
    spec, blobs = build_spec(
        "",
        closure,
        image=image_option(image, "deploy(image=...)"),
        gpu=parse_gpu(gpu),
        secrets=secrets_option(secrets, "deploy(secrets=...)") if secrets else [],
        volumes=volumes_option(
            volumes,
            "deploy(volumes=...)",
            'a dict of absolute paths to remotecell.Volume, such as {"/models": weights}',
        )
        if volumes
        else (),
        env=env_option(env, "deploy(env=...)") if env else None,
    )
    spec.serve.CopyFrom(serve_for(name, 0, served, checked))
    request = pb.DeployRequest(
        name=name, spec=spec, settings=checked.to_proto(), ephemeral=ephemeral
    )
    return request, blobs


def _is_function(obj: Any) -> bool:
    return inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isbuiltin(obj)


def deploy(
    fn_or_app: Any,
    *,
    name: str,
    gpu: Any = None,
    image: Any = None,
    secrets: Any = (),
    volumes: Any = None,
    env: Any = None,
    handler: str | None = None,
    client: Client | None = None,
    **settings: Any,
) -> Deployment:
    """Deploys a function (each call runs it) or an ASGI app (HTTP requests go to it) as
    the endpoint ``name``; deploying the name again makes a new version.

    The function travels by value, as with ``%%remote``: what it uses from the notebook
    goes with it.

    Args:
        fn_or_app: a function (sync, async or a generator) or an ASGI app object.
        name: the endpoint's name (1-63 lowercase letters, digits or '-').
        gpu, image, secrets, volumes, env: as ``%%remote``'s options.
        handler: the name the function is served under (default: its own).
        client: the client to deploy through; None: the notebook's.
        **settings: the deployment's settings (``contract.deployments.Settings``):
            min_containers, max_containers, concurrency, scaledown_window, batch_size,
            call_timeout, public, ...

    Raises:
        ConfigError: a bad name, option or setting.

    Example:
        >>> def predict(text: str) -> int:
        ...     return len(text)
        >>> d = remotecell.deploy(predict, name="predict", max_containers=4)  # doctest: +SKIP
        >>> d.remote("hello")                                                  # doctest: +SKIP
        5
    """
    request, blobs = deployment_request(
        fn_or_app,
        name=name,
        gpu=gpu,
        image=image,
        secrets=secrets,
        volumes=volumes,
        env=env,
        handler=handler,
        **settings,
    )
    return _send(request, blobs, client)


def _send(request: pb.DeployRequest, blobs: dict[str, Any], client: Client | None) -> Deployment:
    c = client if client is not None else context.client()
    c.upload(blobs)
    c.deploy(request)
    return Deployment(request.name, client=client)


# -- function ------------------------------------------------------------------------------


def ephemeral_name(fn: Callable[..., Any]) -> str:
    """``fn-<the function's name, sanitised, at most 40>-<6 hex>``."""
    base = re.sub(r"[^a-z0-9]+", "-", getattr(fn, "__name__", "fn").lower()).strip("-")[:40]
    return f"fn-{base.strip('-') or 'fn'}-{_secrets.token_hex(3)}"


def _stop_quietly(client: Client, name: str) -> None:
    try:
        client.stop_deployment(name)
    except Exception:  # the control plane or the connection went first: it forgets it
        pass


class Function:
    """A function that runs locally when called, and on replicas with ``.remote``,
    ``.map``, ``.spawn`` and ``.remote_gen``: an ephemeral deployment made on first use
    and stopped when this object goes or the kernel exits.

    Example:
        >>> @remotecell.function(gpu="any", max_containers=8)   # doctest: +SKIP
        ... def square(x):
        ...     return x * x
        >>> list(square.map(range(4)))                          # doctest: +SKIP
        [0, 1, 4, 9]
    """

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self._options = options
        self._client: Client | None = options.pop("client", None)
        self._lock = threading.Lock()
        self._deployment: Deployment | None = None
        #: The client the deployment was made through, which stops it.
        self._stopper: Client | None = None
        # checked now, so a bad option fails at the decorator, not at the first call
        self._request, self._blobs = deployment_request(
            fn, name=ephemeral_name(fn), ephemeral=True, **options
        )
        self.__wrapped__ = fn
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            try:
                setattr(self, attr, getattr(fn, attr))
            except AttributeError:
                pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the function here, as if undecorated."""
        return self.fn(*args, **kwargs)

    @property
    def name(self) -> str:
        """The ephemeral deployment's name."""
        return self._request.name

    @property
    def deployment(self) -> Deployment:
        """The ephemeral deployment, made on first use."""
        with self._lock:
            if self._deployment is None:
                deployment = _send(self._request, self._blobs, self._client)
                # Stopped through the client that made it: at exit, resolving the default
                # client anew could connect elsewhere (or start a control plane).
                weakref.finalize(self, _stop_quietly, deployment.client, self.name)
                self._stopper = deployment.client
                self._deployment = deployment
            return self._deployment

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Runs one call on a replica (see ``Deployment.remote``)."""
        return self.deployment.remote(*args, **kwargs)

    def remote_gen(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """A generator's items from a replica (see ``Deployment.remote_gen``)."""
        return self.deployment.remote_gen(*args, **kwargs)

    def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Starts a call on a replica (see ``Deployment.spawn``)."""
        return self.deployment.spawn(*args, **kwargs)

    def map(
        self,
        *iterables: Iterable[Any],
        kwargs: Mapping[str, Any] | None = None,
        return_exceptions: bool = False,
        order_outputs: bool = True,
        window: int = WINDOW,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Fans the calls out over the replicas (see ``Deployment.map``); a progress bar
        in a notebook where tqdm is installed."""
        return self.deployment.map(
            *iterables,
            kwargs=kwargs,
            return_exceptions=return_exceptions,
            order_outputs=order_outputs,
            window=window,
            progress=progress,
        )

    def stop(self) -> None:
        """Stops the ephemeral deployment now (a later call makes a new one)."""
        with self._lock:
            deployment, self._deployment = self._deployment, None
        if deployment is not None:
            _stop_quietly(self._stopper or deployment.client, deployment.name)
            self._request.name = ephemeral_name(self.fn)
            self._request.spec.serve.deployment = self._request.name

    def __repr__(self) -> str:
        return f"<remotecell.Function {getattr(self.fn, '__qualname__', self.fn)!r}>"


def function(
    fn: Callable[..., Any] | None = None,
    *,
    gpu: Any = None,
    image: Any = None,
    max_containers: int = 8,
    concurrency: int = 1,
    min_containers: int = 0,
    scaledown_window: float = 60.0,
    secrets: Any = (),
    volumes: Any = None,
    env: Any = None,
    client: Client | None = None,
    **settings: Any,
) -> Any:
    """Makes a function callable on replicas: ``@remotecell.function(gpu="any")``.

    Calling the result runs the function here; ``.remote(...)``, ``.map(...)``,
    ``.spawn(...)`` and ``.remote_gen(...)`` run it on an ephemeral deployment
    (``fn-NAME-XXXXXX``) made on first use, gone with the kernel.

    Args:
        gpu, image, secrets, volumes, env: as ``%%remote``'s options.
        max_containers, concurrency, min_containers, scaledown_window, **settings: the
            deployment's settings (``contract.deployments.Settings``).
        client: the client to deploy and call through; None: the notebook's.

    Raises:
        ConfigError: a bad option or setting, at decoration.

    Example:
        >>> @remotecell.function(max_containers=16)     # doctest: +SKIP
        ... def score(x):
        ...     return x ** 2
        >>> sum(score.map(range(1000)))                  # doctest: +SKIP
    """
    options: dict[str, Any] = dict(
        gpu=gpu,
        image=image,
        max_containers=max_containers,
        concurrency=concurrency,
        min_containers=min_containers,
        scaledown_window=scaledown_window,
        secrets=secrets,
        volumes=volumes,
        env=env,
        client=client,
        **settings,
    )
    if fn is not None:
        return Function(fn, options)

    def decorate(f: Callable[..., Any]) -> Function:
        return Function(f, dict(options))

    return decorate
