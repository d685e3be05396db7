"""What a second of a job or a GPU costs: the control plane's configured price, else the default."""

from __future__ import annotations

from remotecell.client.resources import cost_usd


def price_per_second(gpu_type: str, gpu_count: int, configured: float | None) -> float | None:
    """Dollars per second for ``gpu_count`` GPUs of ``gpu_type``; None when nothing prices them.

    ``configured`` is the control plane's price for the whole job (``Status``/``JobInfo``
    ``price_per_second``); where it is unset, the default per-GPU-second price of the type
    (:func:`remotecell.client.resources.cost_usd`) times the count. A job without GPUs has
    no price unless the control plane gives one.
    """
    if configured is not None:
        return configured
    if not gpu_type or gpu_count <= 0:
        return None
    return cost_usd(gpu_type, gpu_count, 1.0)
