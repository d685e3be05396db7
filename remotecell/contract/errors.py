"""The exceptions a remotecell user sees, and the one place gRPC status maps to them.

RemoteCellError
├── ConfigError          bad option or setting; says which and what is valid
├── CellSyntaxError      the cell is not valid Python (also a SyntaxError)
├── ClosureError         a variable the cell needs cannot be sent
├── ConnectionError      no control plane answers at the configured address
├── AuthError            the control plane refused the token
├── JobNotFoundError     no job with that id
├── SchedulingError      the job can never be placed
├── ImageBuildError      the job's image could not be built
├── VolumeNotFoundError  no volume of that name
├── VolumeFileNotFoundError  no file at that path in a volume (also a FileNotFoundError)
├── BlobNotFoundError    a value's stored bytes are gone (deleted after --blob-ttl unused)
├── BlobCorruptError     a value's stored bytes no longer match their hash (also a ValueError)
├── CallArgumentsError   a deployment's handler cannot take a call's arguments (also a TypeError)
├── EndpointUnavailableError  no replica of a deployment could take a call
├── CallTimeoutError     a deployment's call was not answered in its call timeout (also a TimeoutError)
└── RemoteError          the cell ran and failed: raised, timed out, was cancelled,
                         or its runner died; carries the remote type name and traceback

An exception the cell raised is raised in the notebook as a ``RemoteError`` of a class
made for its type (``remote_error``): named as the remote type, and also a subclass of
that type where the notebook has it, so ``except ValueError:`` catches it as locally.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

import grpc


class RemoteCellError(Exception):
    """Base class of every remotecell error."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback through remotecell's own frames:
        # the sentence says what is wrong and what to do.
        return [f"{type(self).__name__}: {self}"]


class ConfigError(RemoteCellError, ValueError):
    """An option or setting is invalid."""


class CellSyntaxError(RemoteCellError, SyntaxError):
    """The cell is not valid Python; found in the notebook, before anything is sent.

    A SyntaxError, as the same cell run locally raises, with its ``msg``, ``lineno``,
    ``offset`` and ``text`` at the notebook cell's lines (the ``%%remote`` line counts).
    IPython shows every SyntaxError with the frames that raised it, remotecell's own
    here; ``kernel_magics`` has it show ``lines`` instead, as Python shows the error.
    """

    def __init__(self, message: str, lines: list[str], error: SyntaxError | None = None) -> None:
        super().__init__(message)
        self.lines = lines
        if error is not None:
            self.msg, self.filename, self.lineno, self.offset = (
                error.msg,
                error.filename,
                error.lineno,
                error.offset,
            )
            self.text, self.end_lineno, self.end_offset = (
                error.text,
                error.end_lineno,
                error.end_offset,
            )

    def __str__(self) -> str:
        return str(self.args[0])

    def _render_traceback_(self) -> list[str]:
        return self.lines


class ClosureError(RemoteCellError):
    """A value the cell needs cannot be serialised and sent to the runner.

    Attributes:
        name: the variable that failed ("" when unknown).
        reason: why it failed, as the serialiser said.
    """

    name: str = ""
    reason: str = ""


class ConnectionError(RemoteCellError, builtins.ConnectionError):
    """No control plane answers at the configured address."""


class AuthError(RemoteCellError, PermissionError):
    """The control plane refused the request's token."""


class JobNotFoundError(RemoteCellError, LookupError):
    """No job with the given id exists."""


class SchedulingError(RemoteCellError):
    """The job can never be placed on a runner."""


class ImageBuildError(RemoteCellError):
    """The job's image failed to build."""


class VolumeNotFoundError(RemoteCellError, LookupError):
    """No volume of the given name exists."""


class VolumeFileNotFoundError(RemoteCellError, FileNotFoundError):
    """No file or directory at the given path in a volume."""


class BlobNotFoundError(RemoteCellError, LookupError):
    pass


class BlobCorruptError(RemoteCellError, ValueError):
    """A blob's bytes do not match its hash, so they are never used as a value.

    Attributes:
        digest: the blob's hash.
    """

    def __init__(self, message: str, digest: str) -> None:
        super().__init__(message)
        self.digest = digest


class CallArgumentsError(RemoteCellError, TypeError):
    """A deployment's call did not fit its handler: its arguments do not match the
    handler's parameters, or (over HTTP) its body is not a JSON object. The handler did
    not run; fix the call."""


class DeploymentNotFoundError(RemoteCellError, LookupError):
    """No deployment of the given name that the caller may use (``remotecell endpoint
    ls`` lists one's own)."""


class EndpointUnavailableError(RemoteCellError):
    """No replica of a deployment could take a call: its queue is full, its replicas'
    setup failed, or it is stopped. The handler did not run; the call may be tried again
    (after ``remotecell endpoint logs NAME`` says why)."""


class CallTimeoutError(RemoteCellError, TimeoutError):
    """A deployment's call was not answered within its ``call_timeout`` (or the caller's
    own timeout, ``FunctionCall.get(timeout=)``). It may still have run."""


class RemoteError(RemoteCellError):
    """The remote cell failed.

    Attributes:
        type_name: the remote exception's type, e.g. ``"ZeroDivisionError"``.
        message: ``str()`` of the remote exception, or what happened to the runner.
        traceback: the remote traceback, formatted lines (the cell's own line numbers).
        kind: ``"user_code"``, ``"runner_died"``, ``"timeout"``, ``"cancelled"``, ...
        job_id: the job that failed.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback: list[str] | None = None,
        *,
        kind: str = "user_code",
        job_id: str = "",
    ) -> None:
        # Not super(): a class made for the remote type (``remote_error``) must not run
        # that type's own __init__, whose arguments are the notebook's business.
        text = message if self._as_remote_type or not type_name else f"{type_name}: {message}"
        Exception.__init__(self, text)
        self.type_name = type_name
        self.message = message
        self.traceback = list(traceback or [])
        self.kind = kind
        self.job_id = job_id

    #: True in the classes ``remote_error`` makes per remote type: the error reads as the
    #: remote exception itself (``str()`` its message, its traceback the remote one).
    _as_remote_type = False

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def _render_traceback_(self) -> list[str]:
        """IPython shows the remote traceback instead of the local frames."""
        if self._as_remote_type:
            return self.traceback or [f"{type(self).__name__}: {self.message}"]
        where = f" (job {self.job_id})" if self.job_id else ""
        if self.traceback:
            return [f"RemoteError: the remote cell raised {self.type_name}{where}", *self.traceback]
        return [f"RemoteError{where}: {self}"]


def remote_error(
    type_name: str,
    message: str,
    traceback: list[str] | None = None,
    *,
    job_id: str = "",
    namespace: dict[str, Any] | None = None,
    exception: BaseException | None = None,
) -> RemoteError:
    """The error to raise in the notebook for an exception the remote cell raised.

    Its class is named as the remote type (``ValueError``; ``__main__.NotebookError`` ->
    ``NotebookError``) and is a ``RemoteError``; where the notebook has that type (a
    builtin, a class of a module the kernel has imported, a class of the notebook's own
    in ``namespace``), it is a subclass of it too, so the cell's ``except`` clauses match
    as locally. Its ``str()`` is the remote message, and IPython shows the remote
    traceback alone: the notebook saves the error a local run would.

    With ``exception`` (the remote exception itself, unpickled here, as a deployment's
    call sends it), its own class is the base and its attributes are copied over, so
    ``err.code`` and the like read as on the remote side.
    """
    base = _notebook_type(type_name, namespace)
    if isinstance(exception, Exception):
        base = type(exception)
    short = type_name.rpartition(".")[2] or "RemoteError"
    if base is not None:
        try:
            error = _typed_class(short, base)(type_name, message, traceback, job_id=job_id)
        except TypeError:  # a type that cannot be mixed in (its layout, its __new__)
            pass
        else:
            if isinstance(exception, Exception):
                _copy_attributes(exception, error)
            return error
    return _typed_class(short, None)(type_name, message, traceback, job_id=job_id)


def _copy_attributes(source: BaseException, error: RemoteError) -> None:
    own = {"type_name", "message", "traceback", "kind", "job_id"}
    for name, value in getattr(source, "__dict__", {}).items():
        if name not in own:
            try:
                setattr(error, name, value)
            except (AttributeError, TypeError):
                pass


_TYPED: dict[tuple[str, type | None], type[RemoteError]] = {}


def _typed_class(name: str, base: type | None) -> type[RemoteError]:
    cls = _TYPED.get((name, base))
    if cls is None:
        if base is None:
            cls = type(name, (RemoteError,), {"_as_remote_type": True})
        else:
            made: Any = base

            def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
                # The base's __new__ sees none of RemoteError's arguments (OSError's would
                # read them as errno and strerror).
                return made.__new__(cls)

            namespace = {"_as_remote_type": True, "__new__": __new__}
            cls = type(name, (RemoteError, base), namespace)
        _TYPED[(name, base)] = cls
    return cls


def _notebook_type(type_name: str, namespace: dict[str, Any] | None) -> type | None:
    """The exception class the notebook knows by ``type_name`` (None: it has none). A
    module the kernel has not imported is not imported for this: an ``except`` clause
    naming its class needs it imported already."""
    module, _, qualname = type_name.rpartition(".")
    found: Any = None
    if not module:
        found = getattr(builtins, type_name, None)
    elif module == "__main__" and namespace is not None:
        found = _attribute_path(namespace.get(qualname.split(".")[0]), qualname.split(".")[1:])
    else:
        # "package.module.Outer.Inner": the longest prefix the kernel has imported
        parts = type_name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            owner = sys.modules.get(".".join(parts[:cut]))
            if owner is not None:
                found = _attribute_path(owner, parts[cut:])
                break
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _attribute_path(obj: Any, path: list[str]) -> Any:
    for name in path:
        obj = getattr(obj, name, None)
    return obj


def _tls_hint(target: str) -> str:
    """What to try when a TCP control plane does not answer: the other side of TLS."""
    if target.startswith("https://"):
        return (
            "; if its certificate is self-signed, pin it with REMOTECELL_TLS_FINGERPRINT "
            "(`remotecell serve` prints it) or REMOTECELL_CA_FILE"
        )
    if target and not target.startswith(("unix:", "grpc://", "http://")):
        return f"; if it serves TLS, connect to https://{target}"
    return ""


def from_rpc_error(err: grpc.RpcError, target: str = "") -> RemoteCellError:
    """Maps a gRPC failure to the exception a user should see."""
    code: Any = err.code() if hasattr(err, "code") else None
    details = (err.details() if hasattr(err, "details") else "") or ""
    where = f" at {target}" if target else ""
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthError(
            f"the control plane{where} refused the token ({details}); "
            "set REMOTECELL_TOKEN to its token (the `token` file in its data directory)"
        )
    if code == grpc.StatusCode.PERMISSION_DENIED:  # a token that may not do this
        return AuthError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return JobNotFoundError(details or "not found")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return ConfigError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return SchedulingError(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ConnectionError(
            f"no remotecell control plane answers{where} ({details.splitlines()[0] if details else code.name}); "
            "start one with `remotecell serve`, or unset REMOTECELL_URL to use the embedded default"
            + _tls_hint(target)
        )
    return RemoteCellError(
        f"the control plane{where} failed: {code.name if code else 'error'}: {details}"
    )
