"""The GPU inventory and sampler over recorded cards; NVML itself is the only thing faked."""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest
from gpu_fake import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    RECORDED,
    FakeNVML,
    MiB,
    NVMLError_GpuIsLost,
    machine,
)

from remotecell.backend.gpus.inventory import (
    GPU,
    GPUSample,
    NVMLUnavailable,
    gpu_type_from_name,
    list_gpus,
    load,
    sample,
)
from remotecell.contract.resources import GPU_TYPES, parse_gpu

NO_GPUS = "no NVIDIA driver (NVML) on this machine: no GPUs"


@pytest.mark.parametrize(("name", "gpu_type"), [(c.name, t) for c, t in RECORDED])
def test_each_recorded_nvml_name_maps_to_its_canonical_type(name: str, gpu_type: str) -> None:
    (gpu,) = list_gpus(FakeNVML(machine(name)))
    assert gpu.type == gpu_type
    assert gpu.name == name  # the raw name is kept
    assert gpu_type_from_name(name) == gpu_type


def test_every_canonical_type_has_a_recorded_card_and_a_request_for_it_accepts_it() -> None:
    recorded = {t for _, t in RECORDED}
    assert set(GPU_TYPES) <= recorded
    for card, gpu_type in RECORDED:
        request = parse_gpu(gpu_type) if gpu_type != "unknown" else parse_gpu("any")
        assert request is not None
        assert request.choices[0].accepts(gpu_from(card.name).type)


def gpu_from(name: str) -> GPU:
    (gpu,) = list_gpus(FakeNVML(machine(name)))
    return gpu


def test_a100_without_size_in_its_name_is_told_apart_by_memory() -> None:
    assert gpu_type_from_name("NVIDIA A100-SXM4", 81920 * MiB) == "A100-80GB"
    assert gpu_type_from_name("NVIDIA A100-SXM4", 40960 * MiB) == "A100-40GB"
    assert gpu_type_from_name("NVIDIA A100-SXM4") == "unknown"


def test_inventory_lists_the_machine_in_nvml_order_with_uuid_and_memory() -> None:
    nvml = FakeNVML(machine("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "Tesla T4"))
    with load(nvml=nvml) as inventory:
        assert inventory.gpus == [
            GPU(0, "GPU-00000000-fa4e-4c1d-9a7b-000000000000", "NVIDIA H100 80GB HBM3", "H100",
                81559 * MiB),
            GPU(1, "GPU-00000001-fa4e-4c1d-9a7b-000000000001", "NVIDIA A100-SXM4-40GB",
                "A100-40GB", 40960 * MiB),
            GPU(2, "GPU-00000002-fa4e-4c1d-9a7b-000000000002", "Tesla T4", "T4", 15360 * MiB),
        ]  # fmt: skip
        assert inventory.skipped == []
        assert nvml.initialised == 1
    assert nvml.initialised == 0  # closing shuts NVML down
    assert nvml.calls[0] == "nvmlInit"
    assert nvml.calls[-1] == "nvmlShutdown"


def test_bytes_names_from_older_nvidia_ml_py_are_decoded() -> None:
    (gpu,) = list_gpus(FakeNVML(machine("NVIDIA L40S"), bytes_names=True))
    assert (gpu.name, gpu.type, gpu.uuid[:4]) == ("NVIDIA L40S", "L40S", "GPU-")


def test_unknown_card_keeps_its_raw_name_and_says_so() -> None:
    (gpu,) = list_gpus(FakeNVML(machine("NVIDIA GeForce GTX 1080 Ti")))
    assert gpu.type == "unknown"
    assert gpu.describe() == (
        "GPU 0: NVIDIA GeForce GTX 1080 Ti, 11 GiB "
        "(type unknown: no canonical GPU type matches this name)"
    )
    assert gpu_from("NVIDIA H100 80GB HBM3").describe() == (
        "GPU 0: H100 (NVIDIA H100 80GB HBM3), 80 GiB"
    )


def test_no_driver_is_said_plainly_and_lists_no_gpus() -> None:
    nvml = FakeNVML.no_driver()
    with pytest.raises(NVMLUnavailable) as e:
        load(nvml=nvml)
    assert str(e.value) == f"{NO_GPUS} (NVML Shared Library Not Found)"
    assert list_gpus(nvml) == []
    assert nvml.calls == ["nvmlInit", "nvmlInit"]  # nothing asked of a library that is absent


def test_driver_not_loaded_is_no_gpus_too() -> None:
    nvml = FakeNVML(machine("NVIDIA H100 PCIe"), init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(NVMLUnavailable, match=r"^no NVIDIA driver \(NVML\) on this machine: no "):
        load(nvml=nvml)
    assert list_gpus(nvml) == []


def test_no_nvidia_ml_py_is_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(NVMLUnavailable) as e:
        load()
    assert str(e.value) == (
        f"{NO_GPUS} (the nvidia-ml-py package is not installed; pip install nvidia-ml-py)"
    )
    assert list_gpus() == []


def test_real_nvml_on_this_machine_lists_exactly_what_nvml_counts() -> None:
    # No fake: on a machine without a driver this must be "no GPUs", never an invented one;
    # on a GPU machine, every GPU NVML counts.
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is a dependency")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        with pytest.raises(NVMLUnavailable, match=f"^{re.escape(NO_GPUS)}"):
            load()
        assert list_gpus() == [], str(e)
        return
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    assert len(list_gpus()) == count


def test_a_gpu_nvml_cannot_read_is_left_out_and_said_not_invented() -> None:
    cards = machine("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    cards[0] = dataclasses.replace(cards[0], lost=True)
    with load(nvml=FakeNVML(cards)) as inventory:
        assert [g.index for g in inventory.gpus] == [1]
        assert inventory.skipped == ["GPU 0 is not listed: NVML cannot read it (GPU is lost)"]


def test_sampler_reads_every_field_in_its_unit() -> None:
    nvml = FakeNVML(machine("NVIDIA H100 80GB HBM3", "Tesla T4"))
    with load(nvml=nvml) as inventory:
        samples = sample(inventory.handles())
    uuid0, uuid1 = (c.uuid for c in nvml.cards)
    assert samples == [
        GPUSample(0, uuid0, 97, 40960 * MiB, 81559 * MiB, 612.0, 61, 1980),
        GPUSample(1, uuid1, 45, 3000 * MiB, 15360 * MiB, 48.0, 52, 1590),
    ]


def test_sampler_takes_the_runners_gpus_by_uuid_in_the_order_given() -> None:
    nvml = FakeNVML(machine("NVIDIA A100-SXM4-80GB", "NVIDIA L4", "NVIDIA A10G"))
    with load(nvml=nvml) as inventory:
        uuids = [nvml.cards[2].uuid, nvml.cards[0].uuid]
        samples = sample(inventory.handles(uuids))
        assert [(s.index, s.utilization) for s in samples] == [(2, 80), (0, 91)]
        with pytest.raises(KeyError, match="no GPU with UUID GPU-nope on this machine"):
            inventory.handles(["GPU-nope"])


def test_readings_a_card_does_not_support_are_none() -> None:
    unsupported = frozenset(
        {
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetTemperature",
            "nvmlDeviceGetClockInfo",
            "nvmlDeviceGetUtilizationRates",
        }
    )
    nvml = FakeNVML(machine("NVIDIA A10G", unsupported=unsupported))
    with load(nvml=nvml) as inventory:
        (s,) = sample(inventory.handles())
    assert (s.utilization, s.power_w, s.temperature_c, s.sm_clock_mhz) == (None, None, None, None)
    assert (s.memory_used, s.memory_total) == (10000 * MiB, 23028 * MiB)


def test_memory_info_not_supported_leaves_memory_none_in_samples() -> None:
    nvml = FakeNVML(machine("NVIDIA L4"))
    with load(nvml=nvml) as inventory:
        nvml.cards[0] = dataclasses.replace(
            nvml.cards[0], unsupported=frozenset({"nvmlDeviceGetMemoryInfo"})
        )
        (s,) = sample(inventory.handles())
    assert (s.memory_used, s.memory_total, s.utilization) == (None, None, 50)


def test_other_nvml_failures_while_sampling_reach_the_caller() -> None:
    nvml = FakeNVML(machine("NVIDIA H200"))
    with load(nvml=nvml) as inventory:
        handles = inventory.handles()
        nvml.cards[0] = dataclasses.replace(nvml.cards[0], lost=True)
        with pytest.raises(NVMLError_GpuIsLost) as e:
            sample(handles)
    assert e.value.value == NVML_ERROR_GPU_IS_LOST


def test_close_is_idempotent_and_sampling_after_close_fails() -> None:
    nvml = FakeNVML(machine("NVIDIA H200"))
    inventory = load(nvml=nvml)
    handles = inventory.handles()
    inventory.close()
    inventory.close()
    assert nvml.initialised == 0
    with pytest.raises(nvml.NVMLError_Uninitialized):
        sample(handles)
