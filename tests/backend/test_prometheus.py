"""The control plane's HTTP side: Prometheus text at /metrics, behind the token, and the
GPU prices jobs are costed at."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import serve_fails, wait_until

from remotecell._proto import pb
from remotecell.backend.gpus._recorded import machine

H100 = "NVIDIA H100 80GB HBM3"


def scrape(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(f"{url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> dict[str, list]:
    """Metric name -> samples, parsed by prometheus_client's own parser."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


@pytest.fixture
def gpu_control_plane(make_control_plane, monkeypatch):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", f"{H100},{H100}")
    return make_control_plane("--gpu-price", "h100=0.5")


def test_metrics_need_the_token(gpu_control_plane):
    client = gpu_control_plane.client()
    try:
        url = client.health().http_url
    finally:
        client.close()
    assert url.startswith("http://127.0.0.1:")
    for token in (None, "wrong"):
        status, body = scrape(url, token)
        assert status == 401
        assert "Authorization: Bearer TOKEN" in body
        assert "remotecell_gpu" not in body


def test_a_running_gpu_job_shows_in_parseable_exposition_text(gpu_control_plane):
    cards = machine(H100, H100)
    client = gpu_control_plane.client()
    token = gpu_control_plane.endpoint.token
    try:
        url = client.health().http_url
        idle = samples(scrape(url, token)[1])
        assert {s.labels["uuid"] for s in idle["remotecell_gpu_info"]} == {c.uuid for c in cards}
        assert [s.value for s in idle["remotecell_gpu_busy"]] == [0.0, 0.0]
        assert idle["remotecell_jobs"][0].value == 0

        spec = pb.JobSpec(
            code="import time\ntime.sleep(30)",
            resources=pb.Resources(gpu=[pb.GPUChoice(type="H100", count=1)]),
        )
        stream = client.submit(spec)
        events: list[pb.JobEvent] = []
        reader = threading.Thread(target=lambda: events.extend(stream), daemon=True)
        reader.start()

        def busy() -> dict[str, list] | None:
            found = samples(scrape(url, token)[1])
            ready = found.get("remotecell_gpu_utilization_percent") and found.get(
                "remotecell_job_ram_used_bytes"
            )
            return found if ready else None

        found = wait_until(busy, 30, what="a running job's telemetry in /metrics")
        job_id = events[0].job_id
        (held,) = [s for s in found["remotecell_gpu_busy"] if s.value == 1.0]
        assert held.labels["job"] == job_id and held.labels["type"] == "H100"
        (util,) = found["remotecell_gpu_utilization_percent"]
        assert util.labels["uuid"] == held.labels["uuid"]
        card = next(c for c in cards if c.uuid == held.labels["uuid"])
        assert util.value == card.utilization
        (clock,) = found["remotecell_gpu_sm_clock_hertz"]
        assert clock.value == card.sm_clock_mhz * 1e6
        (gpus,) = found["remotecell_job_gpus"]
        assert (gpus.labels["job"], gpus.value) == (job_id, 1)
        (cost,) = found["remotecell_job_cost_usd"]
        (seconds,) = found["remotecell_job_running_seconds"]
        assert cost.value == pytest.approx(0.5 * seconds.value, rel=0.2)  # --gpu-price h100=0.5
        running = next(e for e in events if e.status.state == pb.RUNNING)
        assert (running.status.gpu_type, running.status.gpu_count) == ("H100", 1)
        assert running.status.price_per_second == 0.5
        info = client.get_job(job_id)
        assert (info.gpu_type, info.gpu_count, info.price_per_second) == ("H100", 1, 0.5)
        listing = client.list_gpus()
        assert [g.price_per_second for g in listing.gpus] == [0.5, 0.5]
        client.cancel(job_id)
        reader.join(30)
    finally:
        client.close()


def test_a_cpu_job_costs_nothing_and_a_gpu_job_says_what_it_asked_for_and_costs(
    make_control_plane, monkeypatch
):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", "Tesla T4,Tesla T4")
    control_plane = make_control_plane()
    client = control_plane.client()
    try:
        events = list(client.submit(pb.JobSpec(code="1")))
        running = next(e for e in events if e.status.state == pb.RUNNING)
        assert running.status.gpu_count == 0
        assert running.status.price_per_second == 0.0
        # The GPU job's listing names what it asked for, and it is priced (by default).
        spec = pb.JobSpec(code="1", resources=pb.Resources(gpu=[pb.GPUChoice(type="T4", count=2)]))
        events = list(client.submit(spec))
        info = client.get_job(events[0].job_id)
        assert (info.gpu_type, info.gpu_count) == ("T4", 2)
        assert info.price_per_second > 0
    finally:
        client.close()


@pytest.mark.parametrize(
    ("price", "says"),
    [
        ("H100", "expected TYPE=USD_PER_SECOND"),
        ("H100=-1", "expected TYPE=USD_PER_SECOND"),
        ("H900=0.1", 'unknown GPU type "H900"'),
        ("any=0.1", "expected TYPE=USD_PER_SECOND"),
    ],
)
def test_a_bad_gpu_price_is_one_clear_sentence(price, says, tmp_path):
    assert says in serve_fails(tmp_path, "--gpu-price", price)


def test_a_bad_or_busy_http_address_is_one_clear_sentence(tmp_path):
    assert "expected HOST:PORT" in serve_fails(tmp_path, "--http", "9464")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        said = serve_fails(tmp_path, "--http", f"127.0.0.1:{port}")
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in said
    assert "--http off" in said


def test_http_off_serves_no_http(make_control_plane):
    control_plane = make_control_plane("--http", "off")
    client = control_plane.client()
    try:
        assert client.health().http_url == ""
    finally:
        client.close()
