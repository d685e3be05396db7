"""What a job asks for: GPUs (type, count, ordered fallbacks), CPU cores and memory.

The one place a ``gpu=`` value is parsed and checked. Types are strict: ``"H100"`` means an
H100, never another card; a job that accepts more than one type says so with a list of
fallbacks.

A request is a :class:`GPURequest` from the magic to the scheduler, and what a runner holds
is one :class:`GPUChoice` from the scheduler to the runner; each turns into the wire's
``GPUChoice`` messages and back only through its own ``to_proto``/``from_proto``. The kernel
checks a ``gpu=`` value and the control plane checks what arrives, both with
:func:`check_gpu`, so a bad request gets the same sentence on either side.

    >>> parse_gpu("h100:2")
    GPURequest(choices=(GPUChoice(type='H100', count=2),))
    >>> str(parse_gpu(["H100", "A100-80GB"]))
    'H100, A100-80GB'
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from remotecell._proto import pb
from remotecell.contract.errors import ConfigError

__all__ = [
    "ANY",
    "GPU_TYPES",
    "UNKNOWN",
    "GPUChoice",
    "GPURequest",
    "GPUType",
    "Resources",
    "check_gpu",
    "cost_usd",
    "parse_gpu",
    "parse_resources",
    "price_per_second",
]

ANY = "any"
"""A ``gpu=`` type that accepts whatever GPU a worker has."""

UNKNOWN = "unknown"
"""The type of a GPU whose NVML name matches no canonical type; no request names it."""


@dataclass(frozen=True)
class GPUType:
    """A canonical GPU type.

    Attributes:
        name: the canonical name a user writes, e.g. ``"A100-80GB"``.
        memory_gib: the card's memory (the smallest variant where NVIDIA sells several).
        per_second_usd: default price of one GPU for one second, or None where no public
            per-second price exists to copy; configuration overrides it.
    """

    name: str
    memory_gib: int
    per_second_usd: float | None


# Default prices are Modal's public list prices (https://modal.com/pricing), per GPU-second.
# H100, A100-80GB, L40S, L4 and T4 were checked against a copy of that page dated 2026-05-07;
# H200, B200, A100-40GB and A10G (Modal sells it as "A10") are as Modal listed them in 2025,
# not re-checked. Modal does not sell the types with None: their cost is shown as unknown
# until configuration gives a price.
_TYPES = (
    GPUType("B200", 180, 0.001736),
    GPUType("H200", 141, 0.001261),
    GPUType("H100", 80, 0.001097),
    GPUType("A100-80GB", 80, 0.000694),
    GPUType("A100-40GB", 40, 0.000583),
    GPUType("L40S", 48, 0.000542),
    GPUType("L40", 48, None),
    GPUType("RTX-A6000", 48, None),
    GPUType("A10G", 24, 0.000306),
    GPUType("A10", 24, None),
    GPUType("RTX-4090", 24, None),
    GPUType("L4", 24, 0.000222),
    GPUType("V100", 16, None),
    GPUType("T4", 16, 0.000164),
)

GPU_TYPES: Mapping[str, GPUType] = {t.name: t for t in _TYPES}
"""Canonical GPU types by name, most capable first."""


def _key(name: str) -> str:
    # "a100_80gb", "A100 80GB" and "A100-80GB" are one type; "H100" and "H200" stay two.
    return re.sub(r"[\s_-]+", "", name).upper()


_BY_KEY = {_key(name): name for name in GPU_TYPES}
_AMBIGUOUS = {"A100": ("A100-40GB", "A100-80GB")}


@dataclass(frozen=True)
class GPUChoice:
    """One acceptable way to run: ``count`` GPUs of ``type`` (a canonical name or ``"any"``).

    What a runner holds is one too: ``count`` GPUs of the type the inventory names, which
    may be :data:`UNKNOWN`.
    """

    type: str
    count: int = 1

    def accepts(self, gpu_type: str) -> bool:
        """Whether a GPU of ``gpu_type`` (as the inventory names it) serves this choice."""
        return self.type == ANY or self.type == gpu_type

    def __str__(self) -> str:
        """As a user writes it: ``"H100"``, ``"H100:2"``."""
        return self.type if self.count == 1 else f"{self.type}:{self.count}"

    def to_proto(self) -> pb.GPUChoice:
        return pb.GPUChoice(type=self.type, count=self.count)

    @classmethod
    def from_proto(cls, choice: pb.GPUChoice) -> GPUChoice:
        """The wire's choice as it is, unchecked (:meth:`GPURequest.from_proto` checks a
        request)."""
        return cls(choice.type, choice.count)


@dataclass(frozen=True)
class GPURequest:
    """GPUs a job asks for: choices in order of preference, the first that fits is used."""

    choices: tuple[GPUChoice, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise ConfigError('a GPU request needs at least one choice, e.g. gpu="H100"')

    def __str__(self) -> str:
        return ", ".join(str(c) for c in self.choices)

    @property
    def max_count(self) -> int:
        """The most GPUs any choice needs: more than any worker has means it can never run."""
        return max(c.count for c in self.choices)

    def to_proto(self) -> list[pb.GPUChoice]:
        """The request as the wire's ``Resources.gpu``: its choices in order."""
        return [c.to_proto() for c in self.choices]

    @classmethod
    def from_proto(cls, choices: Iterable[pb.GPUChoice]) -> GPURequest | None:
        """A ``Resources.gpu`` off the wire (None when empty: no GPU), checked by
        :func:`check_gpu` as the kernel checks ``gpu=``.

        Raises:
            ConfigError: an unknown or ambiguous type, a count of 0, a fallback listed
                twice, or ``"any"`` before another fallback; the kernel's sentence for it.
        """
        written = [GPUChoice.from_proto(c) for c in choices]
        return check_gpu(written) if written else None


def parse_gpu(value: Any) -> GPURequest | None:
    """Parses a ``gpu=`` value.

    Accepts ``"H100"``, ``"H100:2"`` (two of them), ``"any"``, ``"any:2"``, a list of those
    (fallbacks, first preferred), a :class:`GPURequest`, or None (no GPU). Type names are
    case-insensitive and come back canonical.

    Raises:
        ConfigError: an unknown or ambiguous type, a count that is not a positive integer,
            or a value of another kind; the message says what is valid.

    Example:
        >>> parse_gpu(["a100-80gb", "any"]).choices
        (GPUChoice(type='A100-80GB', count=1), GPUChoice(type='any', count=1))
    """
    if value is None or isinstance(value, GPURequest):
        return value
    if isinstance(value, str):
        return check_gpu([_split(value)], [value])
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(
                'gpu=[] names no GPU type: list one or more, e.g. gpu=["H100", "A100-80GB"]'
            )
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f'gpu={value!r}: every fallback must be a string like "H100" or "H100:2"'
            )
        return check_gpu([_split(v) for v in value], value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) > 0:
        raise ConfigError(
            f'gpu={value!r} names no GPU type: write gpu="any:{value}" for {value} GPUs of '
            'any type, or a type such as gpu="H100:2"'
        )
    raise ConfigError(
        f'gpu= takes a string like "H100", "H100:2" or "any", or a list of them, '
        f"not a {type(value).__name__}"
    )


def check_gpu(choices: Sequence[GPUChoice], written: Sequence[str] | None = None) -> GPURequest:
    """The one check of a GPU request, made by the kernel (:func:`parse_gpu`) and again by
    the control plane (:meth:`GPURequest.from_proto`).

    Args:
        choices: the fallbacks in order, their types as written (any case or separator).
        written: how each was written, for messages; default: ``str(choice)``.

    Returns:
        The request, its types canonical.

    Raises:
        ConfigError: an unknown or ambiguous type, a count of 0, a fallback listed twice,
            or ``"any"`` before another fallback; the message says what is valid.
    """
    shown = [str(c) for c in choices] if written is None else list(written)
    canonical = []
    for choice, text in zip(choices, shown, strict=True):
        if choice.count <= 0:
            raise ConfigError(
                f'gpu="{text}" asks for 0 GPUs: ask for 1 or more, or leave gpu= out to run '
                "without a GPU"
            )
        canonical.append(GPUChoice(_canonical(choice.type.strip(), text), choice.count))
    _check_fallbacks(shown, canonical)
    return GPURequest(tuple(canonical))


def _split(text: str) -> GPUChoice:
    """``"H100:2"`` as written (its type not yet checked)."""
    name, sep, count_text = text.partition(":")
    name = name.strip()
    count = 1
    if sep:
        count_text = count_text.strip()
        if not count_text.isdigit() or not count_text.isascii():
            raise ConfigError(
                f"gpu=\"{text}\": the count after ':' must be a whole number of GPUs above 0, "
                f'e.g. "{name}:2"'
            )
        count = int(count_text)
    return GPUChoice(name, count)


def _canonical(name: str, text: str) -> str:
    if not name:
        raise ConfigError(f'gpu="{text}" names no GPU type: write a type such as "H100", or "any"')
    if name.lower() == ANY:
        return ANY
    key = _key(name)
    if key in _BY_KEY:
        return _BY_KEY[key]
    if key in _AMBIGUOUS:
        a, b = _AMBIGUOUS[key]
        raise ConfigError(
            f'gpu="{text}" is ambiguous: write "{a}" or "{b}", or both as fallbacks '
            f'(gpu=["{b}", "{a}"])'
        )
    raise ConfigError(
        f'gpu="{text}": unknown GPU type "{name}"; known types: {", ".join(GPU_TYPES)} (or "any")'
    )


def _check_fallbacks(written: list[str], choices: list[GPUChoice]) -> None:
    seen: set[GPUChoice] = set()
    for i, c in enumerate(choices):
        if c in seen:
            raise ConfigError(f"gpu={written!r} lists {c} twice: list each fallback once")
        seen.add(c)
        if c.type == ANY and i < len(choices) - 1:
            raise ConfigError(
                f'gpu={written!r}: "any" must be the last fallback, since it takes '
                "whatever GPU is free and the choices after it would never be used"
            )


@dataclass(frozen=True)
class Resources:
    """What one runner of a job needs.

    Attributes:
        gpu: the GPU request, or None for a CPU-only job.
        cpu: cores; 0 means no limit asked.
        memory_mb: MiB of memory; 0 means no limit asked.
    """

    gpu: GPURequest | None = None
    cpu: float = 0.0
    memory_mb: int = 0

    def to_proto(self) -> pb.Resources:
        return pb.Resources(
            cpu=self.cpu, memory_mb=self.memory_mb, gpu=self.gpu.to_proto() if self.gpu else []
        )


#: The most cores a job may ask for.
MAX_CPU = 1024
#: The most memory a job may ask for, in MiB (64 TiB).
MAX_MEMORY_MB = 1 << 26
#: The most fallbacks a GPU request may list, and the longest type name.
MAX_GPU_CHOICES = 16
MAX_GPU_TYPE_CHARS = 64


def check_resources(resources: pb.Resources) -> GPURequest | None:
    """The wire's resources of a job, checked by the control plane with the rules
    :func:`parse_resources` applies in the kernel; returns its GPU request.

    Raises:
        ConfigError: cpu or memory out of range, or a GPU request that is not valid.
    """
    cpu = resources.cpu
    if not (math.isfinite(cpu) and 0 <= cpu <= MAX_CPU):
        raise ConfigError(
            f"the job asks for {cpu} cores; ask for a number above 0, at most {MAX_CPU} "
            "(0: no limit)"
        )
    if resources.memory_mb > MAX_MEMORY_MB:
        raise ConfigError(
            f"the job asks for {resources.memory_mb} MiB of memory; ask for at most "
            f"{MAX_MEMORY_MB} MiB (0: no limit)"
        )
    if len(resources.gpu) > MAX_GPU_CHOICES:
        raise ConfigError(
            f"the job's GPU request lists {len(resources.gpu)} fallbacks; list at most "
            f"{MAX_GPU_CHOICES}"
        )
    for choice in resources.gpu:
        if len(choice.type) > MAX_GPU_TYPE_CHARS:
            raise ConfigError(
                f"the job's GPU request names a type of {len(choice.type)} characters; "
                'write a type such as "H100", or "any"'
            )
    return GPURequest.from_proto(resources.gpu)


def parse_resources(gpu: Any = None, cpu: Any = None, memory: Any = None) -> Resources:
    """Parses ``gpu=``, ``cpu=`` (cores, a positive number) and ``memory=`` (MiB, a positive int).

    Raises:
        ConfigError: a value is invalid; the message says which and what is valid.
    """
    cores = 0.0
    if cpu is not None:
        if (
            isinstance(cpu, bool)
            or not isinstance(cpu, numbers.Real)
            or not 0 < float(cpu) <= MAX_CPU
        ):
            raise ConfigError(f"cpu={cpu!r}: expected a number of cores above 0, at most {MAX_CPU}")
        cores = float(cpu)
    mib = 0
    if memory is not None:
        if (
            isinstance(memory, bool)
            or not isinstance(memory, numbers.Integral)
            or not 0 < int(memory) <= MAX_MEMORY_MB
        ):
            raise ConfigError(
                f"memory={memory!r}: expected a whole number of MiB above 0, "
                f"at most {MAX_MEMORY_MB}"
            )
        mib = int(memory)
    return Resources(parse_gpu(gpu), cores, mib)


def cost_usd(
    gpu_type: str,
    count: int,
    seconds: float,
    prices: Mapping[str, float] | None = None,
) -> float | None:
    """Estimated cost of ``count`` GPUs of ``gpu_type`` for ``seconds``; None when unpriced.

    ``prices`` (per GPU-second, by canonical type) overrides the defaults in :data:`GPU_TYPES`.
    """
    price = (prices or {}).get(gpu_type)
    if price is None and gpu_type in GPU_TYPES:
        price = GPU_TYPES[gpu_type].per_second_usd
    return None if price is None else price * count * seconds


def price_per_second(gpu_type: str, gpu_count: int, configured: float | None) -> float | None:
    """Dollars per second for ``gpu_count`` GPUs of ``gpu_type``; None when nothing prices them.

    ``configured`` is the control plane's price for the whole job (``Status``/``JobInfo``
    ``price_per_second``); where it is unset, the default per-GPU-second price of the type
    (:func:`cost_usd`) times the count. A job without GPUs has no price unless the control
    plane gives one.
    """
    if configured is not None:
        return configured
    if not gpu_type or gpu_count <= 0:
        return None
    return cost_usd(gpu_type, gpu_count, 1.0)
