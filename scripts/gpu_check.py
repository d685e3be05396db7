"""The GPU check, for a machine with an NVIDIA GPU (and torch with CUDA installed).

    python scripts/gpu_check.py [--gpu TYPE] [--seconds 10]

It prints the machine's GPU inventory, starts a control plane, and runs a
``%%remote gpu="TYPE"`` cell with a torch matmul loop through a real Jupyter kernel. Then
it prints the metric samples the job sent and the job's summary, and, halfway through the
loop, the control plane's Prometheus gauges for the GPU and the job (``/metrics``). It
exits 0 only when the cell ran on the GPU and the samples show utilisation above 0 during
the loop; it exits 2 on a machine with no GPU. Everything it starts, it stops.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CELL = """%%remote gpu={gpu!r} detach=True pull=[]
import time, torch
x = torch.randn(8192, 8192, device="cuda")
start, n = time.time(), 0
while time.time() - start < {seconds}:
    y = x @ x
    torch.cuda.synchronize()
    n += 1
print(torch.cuda.get_device_name(0), n, "matmuls of 8192x8192 in", {seconds}, "s")
"""

REPORT = """job = _
job.result()
import json
m = job.metrics
print("REPORT " + json.dumps({
    "samples": m.samples,
    "peak_ram_used": m.peak_ram_used,
    "gpus": {u: {"peak_memory_used": g.peak_memory_used, "memory_total": g.memory_total,
                 "mean_utilization": g.mean_utilization} for u, g in m.gpus.items()},
}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", default="", help="GPU type to ask for (default: the first GPU's)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the matmul loop")
    args = parser.parse_args()

    from remotecell.backend.gpus.inventory import NVMLUnavailable, load

    try:
        with load() as inventory:
            gpus = list(inventory.gpus)
    except NVMLUnavailable as err:
        print(f"gpu check: {err}")
        return 2
    print("inventory:")
    for gpu in gpus:
        print("  " + gpu.describe())
    if not gpus:
        print("gpu check: NVML sees no GPU on this machine")
        return 2
    gpu_type = args.gpu or gpus[0].type

    data_dir = Path(tempfile.mkdtemp(prefix="rcgpu-", dir="/tmp"))
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    socket = f"unix:{data_dir / 'run' / 'cp.sock'}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "remotecell",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            socket,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    kernel = None
    try:
        deadline = time.monotonic() + 30
        while not (data_dir / "server.json").exists():
            if server.poll() is not None or time.monotonic() > deadline:
                print("gpu check: the control plane did not start; see", data_dir / "serve.log")
                return 1
            time.sleep(0.05)
        token = (data_dir / "token").read_text().strip()
        from jupyter_client.manager import KernelManager

        kernel = KernelManager(kernel_name="python3")
        kernel.start_kernel(
            env={**os.environ, "REMOTECELL_URL": socket, "REMOTECELL_TOKEN": token},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = kernel.client()
        client.start_channels()
        client.wait_for_ready(timeout=60)
        ok = True
        for code in (
            "%load_ext remotecell",
            CELL.format(gpu=gpu_type, seconds=args.seconds),
            REPORT,
        ):
            out, error = _execute(client, code, timeout=args.seconds + 300)
            if code.startswith("%%remote"):  # detached: the loop runs now
                time.sleep(min(args.seconds / 2, 10))
                _print_gauges(data_dir, token)
            for line in out.splitlines():
                if line.startswith("REPORT "):
                    report = json.loads(line[len("REPORT ") :])
                    print(f"metric samples received: {report['samples']}")
                    print(f"peak RAM of the runner: {report['peak_ram_used'] / 2**20:.0f} MiB")
                    for uuid, gpu in report["gpus"].items():
                        util = gpu["mean_utilization"]
                        print(
                            f"  {uuid}: peak memory {gpu['peak_memory_used'] / 2**20:.0f} of "
                            f"{gpu['memory_total'] / 2**20:.0f} MiB, mean utilisation "
                            f"{'n/a' if util is None else f'{util:.0f}%'}"
                        )
                    busy = [g for g in report["gpus"].values() if (g["mean_utilization"] or 0) > 0]
                    ok = ok and report["samples"] > 0 and bool(busy)
                else:
                    print(line)
            if error:
                print("gpu check: the cell failed:\n" + error)
                return 1
        print("gpu check: PASS" if ok else "gpu check: FAIL (no GPU utilisation in the samples)")
        return 0 if ok else 1
    finally:
        if kernel is not None:
            with contextlib.suppress(Exception):
                kernel.shutdown_kernel(now=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(15)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        _kill_runners(str(data_dir))
        log.close()


def _print_gauges(data_dir: Path, token: str) -> None:
    """The control plane's GPU and job gauges, as Prometheus would scrape them."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    url = json.loads((data_dir / "server.json").read_text()).get("http_url", "")
    if not url:
        print("prometheus: the control plane serves no /metrics")
        return
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    print("prometheus gauges during the loop:")
    for family in text_string_to_metric_families(text):
        if (
            family.name.startswith(("remotecell_gpu_", "remotecell_job_"))
            and family.name != "remotecell_gpu"
        ):
            for sample in family.samples:
                labels = ",".join(
                    f"{k}={v}" for k, v in sample.labels.items() if k in ("uuid", "job")
                )
                print(f"  {sample.name}{{{labels}}} {sample.value:g}")


def _execute(client: object, code: str, timeout: float) -> tuple[str, str]:
    """Runs a cell; returns its stdout+stderr text and its error text ("" if none)."""
    msg_id = client.execute(code)  # type: ignore[attr-defined]
    out: list[str] = []
    error = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = client.get_iopub_msg(timeout=1)  # type: ignore[attr-defined]
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = "\n".join(content["traceback"]) or f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out), error
    return "".join(out), f"no answer within {timeout:.0f} s"


def _kill_runners(marker: str) -> None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "remotecell.backend.runner" in cmd and any(marker in part for part in cmd):
            with contextlib.suppress(psutil.Error):
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
