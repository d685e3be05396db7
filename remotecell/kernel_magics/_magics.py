"""The IPython magics. Each parses its line and delegates; the logic lives beside it."""

from __future__ import annotations

import sys
import threading
import traceback
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from traitlets import Bool, CaselessStrEnum, Unicode

from remotecell._proto import pb
from remotecell.client import Client, connect
from remotecell.client.image_cell import parse_image_cell
from remotecell.client.listing import state_name
from remotecell.client.spec import build_spec
from remotecell.contract import values
from remotecell.contract.deployments import defined_functions
from remotecell.contract.errors import CellSyntaxError, ConfigError, RemoteCellError
from remotecell.contract.process_settings import ProcessSettings
from remotecell.kernel_magics import (
    _closure,
    _monitor_view,
    _options,
    _settings,
    _workdir,
)
from remotecell.kernel_magics._execution import JobFollower
from remotecell.kernel_magics._job import RemoteJob


@magics_class
class RemoteMagics(Magics):
    """``%%remote``, ``%%remote_deploy``, ``%remote_endpoints``, ``%remote_jobs``,
    ``%remote_attach`` and ``%remote_cancel``."""

    url = Unicode(
        "",
        config=True,
        help="The control plane's address (unix:/path, host:port, or https://host:port "
        "for one served over TLS). "
        "Empty: REMOTECELL_URL, else this user's embedded control plane.",
    )
    token = Unicode("", config=True, help="The control plane's token (with `url`).")
    tls_fingerprint = Unicode(
        "",
        config=True,
        help="SHA-256 of the certificate an https:// `url` must present (as `remotecell "
        "serve` prints it). Empty: REMOTECELL_TLS_FINGERPRINT.",
    )
    ca_file = Unicode(
        "",
        config=True,
        help="PEM file of the CA (or the certificate) an https:// `url` is checked "
        "against. Empty: REMOTECELL_CA_FILE, else the system's CAs.",
    )
    monitor = CaselessStrEnum(
        _monitor_view.MODES,
        "full",
        config=True,
        help='The job monitor in each %%remote cell\'s output: "full" (a live widget), '
        '"compact" (one line of text) or "off" (nothing: the saved outputs are those of a '
        "local run). A cell's monitor= option overrides it.",
    )
    cwd_snapshot = Bool(
        True,
        config=True,
        help="Copy the notebook's directory (its small files) to runners that do not see "
        "it, so relative paths resolve as in the notebook (see .remotecellignore).",
    )

    shell: Any

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._client: Client | None = None
        self._connecting: Future[Client] | None = None
        self._lock = threading.Lock()
        self._snapshots = _workdir.Snapshots()
        #: The logging and warning settings the notebook's last remote cell left, sent
        #: with every later job (``_settings.py``).
        self.process_settings = ProcessSettings()
        from remotecell.kernel_magics._deploy import StatusLines

        #: The live status lines of the endpoints deployed from this notebook.
        self._status_lines = StatusLines()

    # -- the connection --------------------------------------------------------------

    def start_connecting(self) -> None:
        """Finds (or starts) the control plane in the background, so the first cell does
        not wait for what can happen while the user types it."""
        with self._lock:
            if self._client is not None or self._connecting is not None:
                return
            future: Future[Client] = Future()
            self._connecting = future

        def work() -> None:
            try:
                future.set_result(
                    connect(
                        self.url,
                        self.token,
                        tls_fingerprint=self.tls_fingerprint,
                        ca_file=self.ca_file,
                    )
                )
            except BaseException as err:
                future.set_exception(err)

        threading.Thread(target=work, name="remotecell-connect", daemon=True).start()

    @property
    def client(self) -> Client:
        if self._client is None:
            self.start_connecting()
            assert self._connecting is not None
            try:
                while True:  # a timed wait, so a kernel interrupt gets through
                    try:
                        self._client = self._connecting.result(timeout=0.1)
                        break
                    except FutureTimeout:
                        continue
            except RemoteCellError:
                self._connecting = None  # try again on the next cell
                raise
        return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client, self._connecting = self._client, None, None
        self._status_lines.stop_all()
        if client is not None:
            client.close()

    # -- magics ----------------------------------------------------------------------

    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run this cell on a remote runner: ``%%remote [key=value ...]``.

        Options (values are Python expressions): timeout=, retries=, pull=, detach=,
        session=, env=. Names the cell reads travel with it; names it assigns come back.
        """
        options = _options.parse(line, self.shell.user_ns)
        spec = self._spec(cell, options)
        client = self.client
        packed_blobs = spec[1]
        client.upload(packed_blobs)
        notice = _workdir.offer(spec[0], client, self._snapshots, self.cwd_snapshot)
        if notice:
            sys.stderr.write(notice)
        events = client.submit(spec[0])
        if "pylab" in cell:  # bound before the results come, which replace what they rebind
            from remotecell.kernel_magics import _pylab

            source = _closure.python_source(cell, self.shell)
            _pylab.bind(self.shell, _closure.analyse(source).pylab)
        if options.detach:
            first = next(events)
            events.close()
            return RemoteJob(first.job_id, client, self.shell.user_ns)
        return self._follow(client, events, options.monitor or self.monitor)

    def _follow(self, client: Client, events: Any, monitor: str, job_id: str = "") -> Any:
        """Follows a job in this cell; its value is the cell's Out as the runner formatted
        it (shown by the follower, so the magic returns None), else the value itself."""
        follower = JobFollower(client, self.shell.user_ns, shell=self.shell, monitor=monitor)
        follower.job_id = job_id
        try:
            value = follower.follow(events)
        finally:
            self.process_settings = _settings.reported(
                follower.process_settings, self.process_settings
            )
        return None if follower.output_shown else value

    def _spec(
        self, cell: str, options: _options.RemoteOptions, extra: dict[str, Any] | None = None
    ) -> tuple[pb.JobSpec, dict]:
        """The job's spec for ``cell`` run with ``options`` (``%%remote`` and
        ``%%remote_deploy``), and the blobs to upload first. ``extra``: names that travel
        with the cell besides those it reads."""
        source = _closure.python_source(cell, self.shell)
        try:
            names = _closure.analyse(source)
        except SyntaxError as err:
            raise _cell_syntax_error(err) from None
        captured = {**_closure.capture(names, self.shell.user_ns), **(extra or {})}
        packed = values.pack(captured)
        pull = (
            options.pull
            if options.pull is not None
            else [n for n in names.assigned if not _closure.is_ipython_name(n)]
            + ([values.PULL_STAR] if names.star else [])
        )
        return build_spec(
            cell,
            packed,
            image=options.image,
            force_build=options.force_build,
            gpu=options.gpu,
            cpu=options.cpu,
            memory=options.memory,
            secrets=options.secrets,
            volumes=options.volumes,
            env=options.env,
            timeout=options.timeout,
            retries=options.retries,
            session=options.session,
            pull=pull,
            process_settings=_settings.for_job(self.shell, self.process_settings),
        )

    @cell_magic
    def remote_deploy(self, line: str, cell: str) -> None:
        """Serve a function of this cell as an endpoint: ``%%remote_deploy NAME [key=value ...]``.

        The cell is each replica's setup (load the model here); its one top-level def
        (or ``handler=``) serves the calls; names it reads travel as with ``%%remote``.
        Options: gpu=, image=, secrets=, volumes=, env=, cpu=, memory=, handler=, and the
        deployment's settings (min_containers=, max_containers=, concurrency=, ...).
        Deploying NAME again makes a new version and rolls the replicas to it.
        """
        from remotecell.contract.deployments import serve_for
        from remotecell.kernel_magics import _deploy

        options = _options.parse_deploy(line, self.shell.user_ns)
        source = _closure.python_source(cell, self.shell)
        try:
            handler, params = _deploy.handler_of(source, options.handler)
        except SyntaxError as err:
            raise _cell_syntax_error(err) from None
        extra = {}
        if options.handler_function is not None and handler not in defined_functions(source):
            extra[handler] = options.handler_function
        replica = options.replica
        replica.pull = []  # a replica sends nothing back
        spec, blobs = self._spec(cell, replica, extra)
        spec.serve.CopyFrom(serve_for(options.name, 0, options.handler or "", options.settings))
        client = self.client
        client.upload(blobs)
        notice = _workdir.offer(spec, client, self._snapshots, self.cwd_snapshot)
        if notice:
            sys.stderr.write(notice)
        request = pb.DeployRequest(
            name=options.name, spec=spec, settings=options.settings.to_proto()
        )
        info = client.deploy(request)
        self._status_lines.show(client, info, handler, params)

    @line_magic
    def remote_endpoints(self, line: str) -> None:
        """The deployments of the control plane: ``%remote_endpoints``."""
        from remotecell.client.listing import format_deployments

        if line.strip():
            raise ConfigError("usage: %remote_endpoints (it takes no arguments)")
        client = self.client
        http_url = client.health().http_url
        print(format_deployments(client.list_deployments(), http_url))

    @cell_magic
    def remote_image(self, line: str, cell: str) -> None:
        """Define an image from a few lines: ``%%remote_image NAME``.

        Lines: ``python 3.11``, ``pip PKG ...``, ``apt PKG ...``, ``env K=V``,
        ``run COMMAND``, ``workdir DIR``, ``add LOCAL [REMOTE]``, ``from REF``.
        The cell defines NAME in the notebook as a ``remotecell.Image``.
        """
        name = line.strip()
        if not name.isidentifier():
            raise ConfigError(
                f"usage: %%remote_image NAME, with NAME a Python name (got {line.strip()!r})"
            )
        self.shell.user_ns[name] = parse_image_cell(cell, base_dir=Path.cwd())

    @line_magic
    def remote_jobs(self, line: str) -> None:
        """List recent remote jobs, with a cancel button for running ones: ``%remote_jobs [N]``."""
        from IPython.display import display

        from remotecell.widgets import JobTable

        limit = _positive_int(line, "%remote_jobs [N]", default=20)
        display(JobTable(self.client, limit))

    @line_magic
    def remote_gpus(self, line: str) -> None:
        """The control plane's GPUs: type, memory, and which runner and job hold each."""
        from IPython.display import display

        from remotecell.widgets import GPUInventory

        if line.strip():
            raise ConfigError("usage: %remote_gpus (it takes no arguments)")
        display(GPUInventory(self.client))

    @line_magic
    def remote_attach(self, line: str) -> Any:
        """Replay a job's output and bring its results back: ``%remote_attach JOB``."""
        job_id = _job_arg(line, "%remote_attach JOB")
        client = self.client
        return self._follow(client, client.attach(job_id), self.monitor, job_id)

    @line_magic
    def remote_cancel(self, line: str) -> None:
        """Cancel a job: ``%remote_cancel JOB``."""
        job_id = _job_arg(line, "%remote_cancel JOB")
        reply = self.client.cancel(job_id, "cancelled with %remote_cancel")
        print(f"{job_id}: {state_name(reply.state)}")


def _cell_syntax_error(err: SyntaxError) -> CellSyntaxError:
    """The error as Python shows a syntax error, at the notebook cell's line numbers
    (the %%remote line counts), without remotecell's frames."""
    lineno = (err.lineno or 0) + 1
    shown = SyntaxError(
        err.msg, ("<cell>", lineno, err.offset, err.text, (err.end_lineno or 0) + 1, err.end_offset)
    )
    lines = [line.rstrip("\n") for line in traceback.format_exception_only(SyntaxError, shown)]
    return CellSyntaxError(f"line {lineno} of the cell: {err.msg}; nothing was sent", lines, shown)


def show_cell_syntax_errors(shell: Any) -> None:
    """Has ``shell`` show a CellSyntaxError as Python shows a syntax error: IPython shows
    a SyntaxError raised while a cell runs with the frames that raised it (a magic's).
    Handlers set before stay in charge of their exceptions."""
    previous, previous_handler = shell.custom_exceptions, shell.CustomTB
    if CellSyntaxError in previous:
        return

    def handler(shell: Any, etype: type, value: Any, tb: Any, tb_offset: Any = None) -> Any:
        if not isinstance(value, CellSyntaxError):
            return previous_handler(etype, value, tb, tb_offset=tb_offset)
        stb = value._render_traceback_()
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((CellSyntaxError, *previous), handler)


def _job_arg(line: str, usage: str) -> str:
    parts = line.split()
    if len(parts) != 1:
        raise ConfigError(f"usage: {usage} (job ids are listed by %remote_jobs)")
    return parts[0]


def _positive_int(line: str, usage: str, default: int) -> int:
    text = line.strip()
    if not text:
        return default
    if not text.isdigit() or int(text) == 0:
        raise ConfigError(f"usage: {usage}, with N a positive number")
    return int(text)
