"""A recorded set of NVIDIA cards behind a ``pynvml``-compatible module object, for tests only.

This is the one place GPUs are faked (there is no GPU on CI): it replaces the ``pynvml``
module and nothing above it. It lives in the package so that processes a test starts (a
control plane, its runners) can use it too, through ``REMOTECELL_FAKE_NVML`` (see
:func:`remotecell.backend.gpus.inventory.load`); nothing else imports it. Names are the strings real cards return from
``nvmlDeviceGetName``; memory totals are what those cards report; readings are plausible
values for a card under load. Like NVML, every call before ``nvmlInit`` (or after the last
``nvmlShutdown``) raises ``NVMLError_Uninitialized``.

    nvml = FakeNVML([CARDS["NVIDIA H100 80GB HBM3"], CARDS["Tesla T4"]])
    inventory.load(nvml=nvml)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MiB = 1 << 20

# pynvml's error codes and the constants the inventory uses.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """As pynvml's: ``NVMLError(code)`` builds the subclass for that code."""

    _by_code: dict[int, type[NVMLError]] = {}
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._by_code.get(value, cls)
        err = Exception.__new__(cls)
        err.value = value
        return err

    def __init__(self, value: int) -> None:
        super().__init__(value)

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


def _subclass(name: str, code: int) -> type[NVMLError]:
    cls = type(name, (NVMLError,), {})
    NVMLError._by_code[code] = cls
    return cls


NVMLError_Uninitialized = _subclass("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _subclass("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _subclass("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_DriverNotLoaded = _subclass("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _subclass("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_GpuIsLost = _subclass("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)


@dataclass(frozen=True)
class RecordedCard:
    """One card as NVML reports it.

    ``unsupported`` names the ``nvmlDevice*`` functions that raise NotSupported on it;
    ``lost`` makes every call about it raise GpuIsLost.
    """

    name: str
    memory_total: int  # bytes
    uuid: str = ""
    memory_used: int = 0
    utilization: int = 0  # percent
    power_mw: int = 0
    temperature_c: int = 0
    sm_clock_mhz: int = 0
    unsupported: frozenset[str] = frozenset()
    lost: bool = False


def _card(
    name: str, memory_mib: int, used_mib: int, util: int, power_w: int, temp: int, sm: int
) -> RecordedCard:
    return RecordedCard(name, memory_mib * MiB, "", used_mib * MiB, util, power_w * 1000, temp, sm)


# Real nvmlDeviceGetName strings with the canonical type each maps to, and memory totals
# as the cards report them (nvidia-smi's "MiB" column).
RECORDED: tuple[tuple[RecordedCard, str], ...] = (
    (_card("NVIDIA H100 80GB HBM3", 81559, 40960, 97, 612, 61, 1980), "H100"),
    (_card("NVIDIA H100 PCIe", 81559, 2048, 35, 180, 44, 1755), "H100"),
    (_card("NVIDIA H100 NVL", 95830, 8192, 60, 300, 52, 1785), "H100"),
    (_card("NVIDIA H200", 143771, 70000, 88, 650, 63, 1980), "H200"),
    (_card("NVIDIA B200", 183359, 1024, 12, 250, 38, 1965), "B200"),
    (_card("NVIDIA A100-SXM4-40GB", 40960, 30000, 99, 380, 66, 1410), "A100-40GB"),
    (_card("NVIDIA A100-PCIE-40GB", 40960, 512, 0, 38, 33, 210), "A100-40GB"),
    (_card("NVIDIA A100-SXM4-80GB", 81920, 60000, 91, 401, 64, 1410), "A100-80GB"),
    (_card("NVIDIA A100 80GB PCIe", 81920, 1024, 5, 70, 40, 1410), "A100-80GB"),
    (_card("NVIDIA L40S", 46068, 20000, 75, 290, 55, 2520), "L40S"),
    (_card("NVIDIA L40", 46068, 0, 0, 35, 30, 210), "L40"),
    (_card("NVIDIA RTX A6000", 49140, 4000, 20, 120, 45, 1800), "RTX-A6000"),
    (_card("NVIDIA A10G", 23028, 10000, 80, 190, 58, 1710), "A10G"),
    (_card("NVIDIA A10", 23028, 500, 3, 60, 41, 1695), "A10"),
    (_card("NVIDIA GeForce RTX 4090", 24564, 12000, 85, 400, 67, 2520), "RTX-4090"),
    (_card("NVIDIA L4", 23034, 6000, 50, 55, 50, 2040), "L4"),
    (_card("Tesla T4", 15360, 3000, 45, 48, 52, 1590), "T4"),
    (_card("Tesla V100-SXM2-16GB", 16384, 8000, 70, 200, 49, 1530), "V100"),
    (_card("Tesla V100-SXM2-32GB", 32768, 8000, 70, 210, 50, 1530), "V100"),
    (_card("Tesla V100-PCIE-16GB", 16384, 0, 0, 25, 35, 135), "V100"),
    (_card("Tesla V100S-PCIE-32GB", 32768, 0, 0, 26, 34, 135), "V100"),
    (_card("NVIDIA GeForce GTX 1080 Ti", 11264, 700, 10, 60, 45, 1480), "unknown"),
    (_card("NVIDIA GH200 480GB", 97871, 0, 0, 90, 30, 1980), "unknown"),
    (_card("Quadro RTX 6000", 24576, 0, 0, 15, 30, 300), "unknown"),
)

CARDS: dict[str, RecordedCard] = {card.name: card for card, _ in RECORDED}


def machine(*names: str, **changes: Any) -> list[RecordedCard]:
    """Recorded cards by name, with UUIDs unique on this machine (``changes`` apply to all)."""
    return [
        dataclasses.replace(CARDS[n], uuid=f"GPU-{i:08x}-fa4e-4c1d-9a7b-{i:012x}", **changes)
        for i, n in enumerate(names)
    ]


class _Handle:
    def __init__(self, index: int) -> None:
        self.index = index


class FakeNVML:
    """A ``pynvml``-compatible module object over recorded cards.

    Args:
        cards: the machine's cards in NVML index order.
        init_error: a code nvmlInit fails with (no driver: ``NVML_ERROR_LIBRARY_NOT_FOUND``).
        bytes_names: return names and UUIDs as bytes, as older nvidia-ml-py releases do.

    Attributes:
        calls: every function called, in order, by name.
    """

    NVMLError = NVMLError
    NVMLError_Uninitialized = NVMLError_Uninitialized
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_NoPermission = NVMLError_NoPermission
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_GpuIsLost = NVMLError_GpuIsLost
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_GRAPHICS = NVML_CLOCK_GRAPHICS
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM

    def __init__(
        self,
        cards: Iterable[RecordedCard] = (),
        *,
        init_error: int | None = None,
        bytes_names: bool = False,
    ) -> None:
        self.cards = list(cards)
        self.init_error = init_error
        self.bytes_names = bytes_names
        self.calls: list[str] = []
        self.initialised = 0  # NVML counts nvmlInit calls; each nvmlShutdown undoes one

    @classmethod
    def no_driver(cls) -> FakeNVML:
        """A machine without the NVIDIA driver: NVML's library is not found."""
        return cls(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)

    # -------------------------------------------------------- library

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.cards):
            raise NVMLError(2)  # NVML_ERROR_INVALID_ARGUMENT
        return _Handle(index)

    # -------------------------------------------------------- device

    def nvmlDeviceGetName(self, handle: _Handle) -> str | bytes:
        card = self._device("nvmlDeviceGetName", handle)
        return card.name.encode() if self.bytes_names else card.name

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str | bytes:
        card = self._device("nvmlDeviceGetUUID", handle)
        return card.uuid.encode() if self.bytes_names else card.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        card = self._device("nvmlDeviceGetMemoryInfo", handle)
        return _Struct(
            total=card.memory_total,
            used=card.memory_used,
            free=card.memory_total - card.memory_used,
        )

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        card = self._device("nvmlDeviceGetUtilizationRates", handle)
        return _Struct(gpu=card.utilization, memory=card.utilization // 2)

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        card = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(2)
        return card.temperature_c

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock: int) -> int:
        card = self._device("nvmlDeviceGetClockInfo", handle)
        if clock != NVML_CLOCK_SM:
            raise NVMLError_NotSupported(NVML_ERROR_NOT_SUPPORTED)  # only the SM clock is recorded
        return card.sm_clock_mhz

    # -------------------------------------------------------- internals

    def _enter(self, function: str) -> None:
        self.calls.append(function)
        if self.initialised <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _device(self, function: str, handle: _Handle) -> RecordedCard:
        self._enter(function)
        card = self.cards[handle.index]
        if card.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if function in card.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return card


class _Struct:
    # pynvml returns ctypes structures; only attribute access matters.
    def __init__(self, **fields: int) -> None:
        self.__dict__.update(fields)
