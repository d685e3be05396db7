"""The recorded GPUs tests use; they live in the package (see its docstring for why)."""

from remotecell.backend.gpus._recorded import (
    CARDS,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    RECORDED,
    FakeNVML,
    MiB,
    NVMLError_GpuIsLost,
    machine,
)

__all__ = [
    "CARDS",
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_GPU_IS_LOST",
    "RECORDED",
    "FakeNVML",
    "MiB",
    "NVMLError_GpuIsLost",
    "machine",
]
