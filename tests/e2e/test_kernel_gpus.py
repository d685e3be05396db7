"""``gpu=`` through a real kernel and control plane, on a machine of recorded cards.

The control plane is started with ``REMOTECELL_FAKE_NVML`` (tests only): NVML is the one
thing replaced; placement, the runner's launch and ``CUDA_VISIBLE_DEVICES`` are the real ones.
"""

from __future__ import annotations

import pytest

from remotecell.backend.gpus._recorded import machine

pytestmark = pytest.mark.kernel

H100 = "NVIDIA H100 80GB HBM3"
H100_UUID = machine(H100)[0].uuid


@pytest.fixture
def gpu_plane(make_control_plane, monkeypatch):
    monkeypatch.setenv("REMOTECELL_FAKE_NVML", H100)
    return make_control_plane()


@pytest.fixture
def gpu_kernel(gpu_plane, make_kernel):
    k = make_kernel(gpu_plane.env())
    k.ok("%load_ext remotecell")
    return k


def test_a_gpu_cell_runs_with_only_its_gpu_visible(gpu_kernel):
    run = gpu_kernel.ok('%%remote gpu="H100"\nimport os\nos.environ["CUDA_VISIBLE_DEVICES"]')
    assert run.result == {"text/plain": repr(H100_UUID)}


def test_a_type_the_machine_lacks_is_refused_once_and_no_job_is_recorded(gpu_kernel, gpu_plane):
    run = gpu_kernel.execute('%%remote gpu="T4"\n1')
    assert run.reply["status"] == "error"
    assert run.error["ename"] == "ConfigError"
    sentence = 'gpu="T4" can never run here: this machine has 1 H100'
    shown = run.error["evalue"] + run.stdout + run.stderr + run.displayed
    assert shown.count(sentence) == 1, shown
    client = gpu_plane.client()
    try:
        assert list(client.list_jobs()) == []
    finally:
        client.close()


def test_fallbacks_run_on_the_first_type_the_machine_has(gpu_kernel):
    run = gpu_kernel.ok(
        '%%remote gpu=["T4", "H100"]\nimport os\nos.environ["CUDA_VISIBLE_DEVICES"]'
    )
    assert run.result == {"text/plain": repr(H100_UUID)}


def test_an_unknown_type_is_one_sentence_before_anything_is_sent(gpu_kernel):
    run = gpu_kernel.execute('%%remote gpu="H1000"\n1')
    assert run.reply["status"] == "error"
    assert run.error["ename"] == "ConfigError"
    assert 'unknown GPU type "H1000"; known types: B200' in run.error["evalue"]


def test_a_cpu_cell_sees_no_gpu(gpu_kernel):
    run = gpu_kernel.ok('%%remote\nimport os\nos.environ["CUDA_VISIBLE_DEVICES"]')
    assert run.result == {"text/plain": "''"}


def test_remote_gpus_shows_the_inventory_and_who_holds_each(
    gpu_kernel, make_control_plane, monkeypatch
):
    listing = gpu_kernel.ok("%remote_gpus").displayed.splitlines()
    assert listing[0].split() == ["GPU", "TYPE", "MEMORY", "NAME", "RUNNER", "JOB"]
    assert listing[1].split()[:3] == ["0", "H100", "80"]
    assert H100 in listing[1] and listing[1].split()[-2:] == ["free", "-"]
    run = gpu_kernel.ok('%%remote gpu="H100" detach=True\nimport time\ntime.sleep(30)')
    job_id = run.result["text/plain"].split()[1]

    def busy():
        row = gpu_kernel.ok("%remote_gpus").displayed.splitlines()[1]
        return row if job_id in row else None

    from support import wait_until

    row = wait_until(busy, 30, interval=0.2, what="the GPU to be held by the job")
    assert " r-" in row
    gpu_kernel.ok(f"%remote_cancel {job_id}")
    # a machine without NVML says so plainly
    monkeypatch.delenv("REMOTECELL_FAKE_NVML")
    client = make_control_plane().client()
    try:
        from remotecell.client.listing import format_gpus

        assert format_gpus(client.list_gpus()).startswith("no GPUs: no NVIDIA driver (NVML)")
    finally:
        client.close()
