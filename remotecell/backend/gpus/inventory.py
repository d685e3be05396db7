"""The GPUs of this machine, as NVML (nvidia-ml-py) reports them, and samples of their state.

NVML is the only source: no NVML means no GPUs, said plainly, and a GPU is never invented.
The ``pynvml`` module is imported lazily and can be passed in (``load(nvml=...)``): that
module boundary is the one seam tests replace, with a recorded device set.

    with load() as inventory:
        for gpu in inventory.gpus:
            print(gpu.index, gpu.type, gpu.name, gpu.uuid)
        samples = sample(inventory.handles())
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from remotecell.contract.resources import UNKNOWN

__all__ = [
    "GPU",
    "GPUHandle",
    "GPUSample",
    "Inventory",
    "NVMLUnavailable",
    "gpu_type_from_name",
    "list_gpus",
    "load",
    "sample",
]

#: For tests only: recorded cards to stand in for NVML (see :func:`load`).
FAKE_NVML_ENV = "REMOTECELL_FAKE_NVML"
NO_NVML = "no NVIDIA driver (NVML) on this machine: no GPUs"


class NVMLUnavailable(RuntimeError):
    """NVML cannot be loaded or initialised here, so this machine offers no GPUs."""


# NVML names of real cards -> canonical type. Order matters: the first match wins.
_NAME_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), gpu_type)
    for pattern, gpu_type in (
        (r"\bB200\b", "B200"),
        (r"\bH200\b", "H200"),  # "NVIDIA H200", "NVIDIA H200 NVL"; not "NVIDIA GH200 480GB"
        (r"\bH100\b", "H100"),  # "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"
        (r"\bA100\b.*\b80\s*GB\b", "A100-80GB"),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"
        (r"\bA100\b.*\b40\s*GB\b", "A100-40GB"),  # "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"
        (r"\bL40S\b", "L40S"),
        (r"\bL40\b", "L40"),
        (r"\bRTX A6000\b", "RTX-A6000"),
        (r"\bA10G\b", "A10G"),
        (r"\bA10\b", "A10"),
        (r"\bRTX 4090\b", "RTX-4090"),  # "NVIDIA GeForce RTX 4090"
        (r"\bL4\b", "L4"),
        (r"\bV100S?\b", "V100"),  # "Tesla V100-SXM2-16GB", "Tesla V100S-PCIE-32GB"
        (r"\bT4\b", "T4"),  # "Tesla T4"
    )
)
_A100 = re.compile(r"\bA100\b", re.IGNORECASE)
_GIB = 1 << 30


def gpu_type_from_name(name: str, memory_total: int | None = None) -> str:
    """The canonical type of a card from its NVML name, or ``"unknown"``.

    ``memory_total`` (bytes) settles only an A100 whose name does not say 40GB or 80GB.

    Example:
        >>> gpu_type_from_name("NVIDIA A100-SXM4-80GB")
        'A100-80GB'
    """
    for pattern, gpu_type in _NAME_PATTERNS:
        if pattern.search(name):
            return gpu_type
    if _A100.search(name) and memory_total:
        return "A100-80GB" if memory_total > 60 * _GIB else "A100-40GB"
    return UNKNOWN


@dataclass(frozen=True)
class GPU:
    """One GPU of this machine.

    Attributes:
        index: NVML's index (not necessarily CUDA's order; place by ``uuid``).
        uuid: ``"GPU-..."``, what ``CUDA_VISIBLE_DEVICES`` and docker device requests take.
        name: the raw NVML name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        type: the canonical type (``"H100"``), or ``"unknown"`` when the name matches none.
        memory_total: bytes.
    """

    index: int
    uuid: str
    name: str
    type: str
    memory_total: int

    def describe(self) -> str:
        """One line for people, e.g. ``GPU 0: H100 (NVIDIA H100 80GB HBM3), 80 GiB``."""
        gib = f"{self.memory_total / _GIB:.0f} GiB"
        if self.type == UNKNOWN:
            return (
                f"GPU {self.index}: {self.name}, {gib} "
                "(type unknown: no canonical GPU type matches this name)"
            )
        return f"GPU {self.index}: {self.type} ({self.name}), {gib}"


@dataclass(frozen=True)
class GPUHandle:
    """An open NVML handle to one GPU, for :func:`sample`."""

    gpu: GPU
    nvml: Any
    handle: Any


@dataclass(frozen=True)
class GPUSample:
    """One reading of one GPU. A field is None where the card does not report it.

    Attributes:
        uuid: the GPU's UUID; ``index`` is NVML's index.
        utilization: percent of time a kernel ran over NVML's last sample period.
        memory_used, memory_total: bytes.
        power_w: watts drawn.
        temperature_c: GPU core temperature, degrees Celsius.
        sm_clock_mhz: current SM clock.
    """

    index: int
    uuid: str
    utilization: int | None
    memory_used: int | None
    memory_total: int | None
    power_w: float | None
    temperature_c: int | None
    sm_clock_mhz: int | None


class Inventory:
    """The GPUs NVML reports, with NVML initialised until :meth:`close`.

    Attributes:
        nvml: the NVML module in use; a sampler catches its ``NVMLError``.
        gpus: the GPUs NVML could read, in NVML index order.
        skipped: one sentence per GPU NVML counted but could not read (it is not listed).
    """

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self._handles: list[GPUHandle] = []
        self.skipped: list[str] = []
        self._closed = False
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(nvml.nvmlDeviceGetName(handle))
                memory_total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
                gpu = GPU(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=name,
                    type=gpu_type_from_name(name, memory_total),
                    memory_total=memory_total,
                )
            except nvml.NVMLError as e:
                self.skipped.append(f"GPU {index} is not listed: NVML cannot read it ({e})")
                continue
            self._handles.append(GPUHandle(gpu, nvml, handle))
        self.gpus: list[GPU] = [h.gpu for h in self._handles]

    def handles(self, uuids: Iterable[str] | None = None) -> list[GPUHandle]:
        """Handles for sampling: all GPUs, or those with the given UUIDs, in the order given.

        Raises:
            KeyError: a UUID is not a GPU of this machine.
        """
        if uuids is None:
            return list(self._handles)
        by_uuid = {h.gpu.uuid: h for h in self._handles}
        missing = [u for u in uuids if u not in by_uuid]
        if missing:
            raise KeyError(f"no GPU with UUID {', '.join(missing)} on this machine")
        return [by_uuid[u] for u in uuids]

    def close(self) -> None:
        """Shuts NVML down (once); handles from this inventory are unusable afterwards."""
        if not self._closed:
            self._closed = True
            try:
                self.nvml.nvmlShutdown()
            except self.nvml.NVMLError:
                pass  # nothing to release when NVML is already gone

    def __enter__(self) -> Inventory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def load(nvml: Any = None) -> Inventory:
    """Initialises NVML and reads this machine's GPUs.

    Args:
        nvml: a ``pynvml``-compatible module; None imports nvidia-ml-py's ``pynvml``.

    ``REMOTECELL_FAKE_NVML`` exists for tests only: where it is set (to NVML names of recorded
    cards, comma-separated, e.g. ``"NVIDIA H100 80GB HBM3"``), the recorded fake stands in for
    ``pynvml`` so that a control plane and its runners started by a test see those cards.

    Raises:
        NVMLUnavailable: NVML cannot be loaded or initialised (no driver, no library).
    """
    if nvml is None and os.environ.get(FAKE_NVML_ENV):
        from remotecell.backend.gpus import _recorded

        names = [n.strip() for n in os.environ[FAKE_NVML_ENV].split(",") if n.strip()]
        nvml = _recorded.FakeNVML(_recorded.machine(*names))
    if nvml is None:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            raise NVMLUnavailable(
                f"{NO_NVML} (the nvidia-ml-py package is not installed; pip install nvidia-ml-py)"
            )
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise NVMLUnavailable(f"{NO_NVML} ({e})")
    try:
        return Inventory(nvml)
    except nvml.NVMLError as e:
        nvml.nvmlShutdown()
        raise NVMLUnavailable(f"NVML failed to list this machine's GPUs ({e}): no GPUs")


def list_gpus(nvml: Any = None) -> list[GPU]:
    """This machine's GPUs; an empty list where there is no NVML (see :func:`load`)."""
    try:
        with load(nvml) as inventory:
            return inventory.gpus
    except NVMLUnavailable:
        return []


def sample(handles: Sequence[GPUHandle]) -> list[GPUSample]:
    """Reads each GPU's utilisation, memory, power, temperature and SM clock, once.

    A reading the card does not support (NVML's NotSupported) is None.

    Raises:
        NVMLError: of the handle's module, for any other NVML failure (a GPU fallen off
            the bus, a driver gone): the caller decides whether to stop sampling.
    """
    samples = []
    for h in handles:
        nvml, handle = h.nvml, h.handle
        memory = _optional(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        samples.append(
            GPUSample(
                index=h.gpu.index,
                uuid=h.gpu.uuid,
                utilization=None if utilization is None else int(utilization.gpu),
                memory_used=None if memory is None else int(memory.used),
                memory_total=None if memory is None else int(memory.total),
                power_w=None if power_mw is None else power_mw / 1000.0,
                temperature_c=_optional(
                    nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
                ),
                sm_clock_mhz=_optional(
                    nvml, nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM
                ),
            )
        )
    return samples


def _optional(nvml: Any, read: Any, *args: Any) -> Any:
    try:
        return read(*args)
    except nvml.NVMLError_NotSupported:
        return None


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value
