"""TLS: a listener other machines reach is served over TLS (or plaintext by --insecure
only), the control plane makes and keeps a self-signed certificate, and clients and
runners pin it. Every server here listens on 127.0.0.1 with TLS forced (``--tls``); the
refusal of other addresses is checked before anything is bound."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import stat
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ControlPlane, serve_fails, short_tmpdir

from remotecell._proto import pb
from remotecell.backend.tls import TLSRequired, listener_security
from remotecell.client import Client, ConnectionError, Endpoint

#: An address of the documentation range (RFC 5737): not this machine's, never bound.
ELSEWHERE = "192.0.2.1"


@dataclass
class TLSControlPlane(ControlPlane):
    """A `remotecell serve --tls` process on 127.0.0.1 (port 0), and its HTTP side."""

    @property
    def socket(self) -> str:
        return "127.0.0.1:0"

    @property
    def info(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "server.json").read_text())

    @property
    def fingerprint(self) -> str:
        return str(self.info["tls_fingerprint"])

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def token(self) -> str:
        assert self.endpoint is not None
        return self.endpoint.token


@pytest.fixture
def make_tls() -> Iterator[Any]:
    started: list[TLSControlPlane] = []

    def make(*args: str, data_dir: Path | None = None) -> TLSControlPlane:
        cp = TLSControlPlane(data_dir or short_tmpdir(), ["--tls", "--prewarm", "0", *args])
        started.append(cp)
        return cp.start()  # type: ignore[return-value]

    yield make
    for cp in started:
        cp.stop()
        shutil.rmtree(cp.data_dir, ignore_errors=True)


def run_job(client: Client, code: str) -> list[pb.JobEvent]:
    return list(client.submit(pb.JobSpec(code=code)))


# ----------------------------------------------------------------- the decision


@pytest.mark.parametrize(
    ("address", "tls", "insecure", "served"),
    [
        ("unix:/run/rc/cp.sock", False, False, "plaintext"),
        ("unix:/run/rc/cp.sock", True, False, "plaintext"),
        ("127.0.0.1:7433", False, False, "plaintext"),
        ("127.3.4.5:7433", False, False, "plaintext"),
        ("[::1]:7433", False, False, "plaintext"),
        ("localhost:7433", False, False, "plaintext"),
        ("127.0.0.1:7433", True, False, "tls"),
        ("0.0.0.0:7433", True, False, "tls"),
        ("[::]:7433", True, True, "tls"),
        ("0.0.0.0:7433", False, True, "insecure"),
        ("gpu-box.example:7433", False, True, "insecure"),
    ],
)
def test_which_listeners_are_served_over_tls(address, tls, insecure, served):
    assert listener_security(address, tls=tls, insecure=insecure) == served


@pytest.mark.parametrize("address", ["0.0.0.0:7433", "[::]:0", "10.1.2.3:80", "gpu-box:7433"])
def test_a_listener_other_machines_reach_needs_tls_or_insecure(address):
    with pytest.raises(TLSRequired) as refused:
        listener_security(address, tls=False, insecure=False)
    assert str(refused.value) == (
        f"--listen {address} is reachable from other machines, so it needs TLS: pass --tls "
        "(a self-signed certificate is made in the data directory), or --tls-cert PATH "
        "--tls-key PATH, or --insecure to serve it in plaintext"
    )


@pytest.mark.parametrize("flag", ["--listen", "--http"])
def test_serve_refuses_plaintext_elsewhere_in_one_sentence_before_binding(flag, tmp_path):
    said = serve_fails(tmp_path, "--prewarm", "0", flag, f"{ELSEWHERE}:0")
    errors = [line for line in said.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: {flag} {ELSEWHERE}:0 is reachable from other machines, so it needs TLS: "
        "pass --tls (a self-signed certificate is made in the data directory), or "
        "--tls-cert PATH --tls-key PATH, or --insecure to serve it in plaintext"
    ], said
    assert not (tmp_path / "tls").exists() and not (tmp_path / "server.json").exists()


# ----------------------------------------------------------------- clients and runners


def test_a_pinned_client_runs_a_job_through_a_runner_over_tls(make_tls):
    cp = make_tls()
    assert cp.url.startswith("https://127.0.0.1:")
    assert cp.fingerprint in cp.log.read_text()  # the start log names it
    # Pinned with colons and capitals, as people copy fingerprints.
    pin = ":".join(cp.fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()
    client = Client(Endpoint(cp.url, cp.token, tls_fingerprint=pin))
    try:
        events = run_job(client, "import os\nprint('answer', 6 * 7, os.getpid())")
    finally:
        client.close()
    out = "".join(e.stream.text for e in events if e.HasField("stream"))
    assert "answer 42" in out, events
    assert events[-1].finished.state == pb.SUCCEEDED, events[-1]
    # The runner that ran it is a separate process that reached the control plane over TLS.
    assert int(out.split()[-1]) != cp.proc.pid  # type: ignore[union-attr]


def test_a_runner_whose_first_certificate_check_fails_retries_it(make_tls, monkeypatch):
    # The runner checks its pin with a TLS handshake of its own. One that fails (the
    # control plane busy or restarting) is retried like any lost connection, off the
    # link's event loop; it once ended the link silently, and the runner then waited
    # for instructions forever with nothing in its log.
    from remotecell.backend.runner._link import Link
    from remotecell.backend.server import local_user
    from remotecell.backend.state.credentials import CredentialStore
    from remotecell.client import transport

    cp = make_tls()
    credentials = CredentialStore(cp.data_dir / "state.sqlite3")
    token = credentials.mint_runner("r-by-hand", local_user(), frozenset())
    credentials.close()
    real, failed, threads = ssl.get_server_certificate, [], []

    def flaky(address: tuple[str, int], **kwargs: Any) -> str:
        threads.append(threading.current_thread())
        if not failed:
            failed.append(address)
            raise TimeoutError("_ssl.c:989: The handshake operation timed out")
        return real(address, **kwargs)

    monkeypatch.setattr(transport.ssl, "get_server_certificate", flaky)
    monkeypatch.setattr(transport, "_pins", {})
    hello = pb.RunnerHello(runner_id="r-by-hand", pid=os.getpid(), hostname="by-hand")
    endpoint = Endpoint(cp.url, token, tls_fingerprint=cp.fingerprint)
    link = Link(endpoint, hello, lambda cancel: None)
    try:
        assert link.connected.wait(20), "the runner never connected"
        assert len(failed) == 1 and len(threads) == 2
        assert link._thread._thread not in threads  # never on the link's event loop
    finally:
        link.close()


def test_a_runner_whose_pin_does_not_match_exits(make_tls):
    from remotecell.backend.runner._link import Link

    cp = make_tls()
    endpoint = Endpoint(cp.url, "unused", tls_fingerprint="ab" * 32)
    link = Link(endpoint, pb.RunnerHello(runner_id="r-wrong-pin"), lambda cancel: None)
    try:
        assert link.instructions.get(timeout=20) is None  # the runner's main loop ends
        assert not link.connected.is_set()
    finally:
        link.close()


def test_a_wrong_fingerprint_is_one_sentence_naming_both(make_tls):
    cp = make_tls()
    wrong = "ab" * 32
    with pytest.raises(ConnectionError) as refused:
        Client(Endpoint(cp.url, cp.token, tls_fingerprint=wrong)).health(timeout=10)
    assert str(refused.value) == (
        f"the control plane at {cp.url} presents a certificate with SHA-256 fingerprint "
        f"{cp.fingerprint}, not the pinned {wrong} (REMOTECELL_TLS_FINGERPRINT): check the "
        "address, and pin the new fingerprint only if you know its certificate changed"
    )


def test_the_environment_pins_by_ca_file(make_tls, monkeypatch):
    cp = make_tls()
    monkeypatch.setenv("REMOTECELL_URL", cp.url.replace("127.0.0.1", "localhost"))
    monkeypatch.setenv("REMOTECELL_TOKEN", cp.token)
    monkeypatch.setenv("REMOTECELL_CA_FILE", str(cp.data_dir / "tls" / "cert.pem"))
    monkeypatch.delenv("REMOTECELL_TLS_FINGERPRINT", raising=False)
    from remotecell.client import connect

    client = connect(timeout=10)
    try:
        assert client.health(timeout=10).pid == cp.proc.pid  # type: ignore[union-attr]
    finally:
        client.close()


def test_an_unpinned_client_does_not_trust_a_self_signed_certificate(make_tls):
    cp = make_tls()
    client = Client(Endpoint(cp.url, cp.token))
    try:
        with pytest.raises(ConnectionError):
            client.health(timeout=5)
    finally:
        client.close()


def test_a_plaintext_client_fails_clearly_at_a_tls_control_plane(make_tls):
    cp = make_tls()
    plain = cp.url.removeprefix("https://")
    client = Client(Endpoint(plain, cp.token))
    try:
        with pytest.raises(ConnectionError) as refused:
            client.health(timeout=5)
    finally:
        client.close()
    said = str(refused.value)
    assert said.startswith(f"no remotecell control plane answers at {plain} ")
    assert f"if it serves TLS, connect to https://{plain}" in said, said


# ----------------------------------------------------------------- the HTTP side


def test_the_http_side_serves_metrics_over_tls_with_the_certificate(make_tls):
    cp = make_tls("--http", "127.0.0.1:0")
    http_url = cp.info["http_url"]
    assert http_url.startswith("https://127.0.0.1:")
    context = ssl.create_default_context(cafile=str(cp.data_dir / "tls" / "cert.pem"))
    request = urllib.request.Request(
        f"{http_url}/metrics", headers={"Authorization": f"Bearer {cp.token}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as reply:
        assert reply.status == 200
        assert "remotecell_runners" in reply.read().decode()
    plain = http_url.replace("https://", "http://")
    with pytest.raises((OSError, http.client.HTTPException)):
        urllib.request.urlopen(f"{plain}/metrics", timeout=10)


# ----------------------------------------------------------------- the certificate


def test_the_certificate_is_kept_private_and_reused_on_restart(make_tls):
    first = make_tls()
    fingerprint, data_dir = first.fingerprint, first.data_dir
    key = data_dir / "tls" / "key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((data_dir / "tls" / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    first.stop()
    second = make_tls(data_dir=data_dir)
    assert second.fingerprint == fingerprint
    assert fingerprint in second.log.read_text().split("stopping")[-1]  # logged again
    client = Client(Endpoint(second.url, second.token, tls_fingerprint=fingerprint))
    try:
        client.health(timeout=10)
    finally:
        client.close()


def test_a_certificate_of_ones_own(make_tls, tmp_path):
    from remotecell.backend.tls import self_signed

    own = self_signed(tmp_path, ["127.0.0.1"])
    cp = make_tls("--tls-cert", str(own.cert_path), "--tls-key", str(own.key_path))
    assert cp.fingerprint == own.fingerprint
    assert not (cp.data_dir / "tls").exists()  # none was made
    client = Client(Endpoint(cp.url, cp.token, ca_file=str(own.cert_path)))
    try:
        client.health(timeout=10)
    finally:
        client.close()


def test_a_certificate_without_its_key_is_refused(tmp_path):
    said = serve_fails(tmp_path, "--tls-cert", str(tmp_path / "cert.pem"), "--http", "off")
    assert "Error: --tls-cert and --tls-key go together: give both, or neither" in said
