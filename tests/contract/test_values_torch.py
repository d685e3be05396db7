"""PyTorch tensors through ``pack`` and ``unpack``: large ones out of band, as their bytes."""

from __future__ import annotations

from typing import Any

import pytest
from support import optional_module
from test_values import round_trip

from remotecell.contract.values import OUT_OF_BAND_MIN, pack

# Not in the test extra (a bare requirement pulls the CUDA build); CI installs the CPU wheel.
torch = optional_module(
    "torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu"
)


def test_a_large_tensor_travels_out_of_band_and_once() -> None:
    weights = torch.randn(512, 512)  # 1 MiB
    out, packed, _ = round_trip({"weights": weights})
    assert torch.equal(out["weights"], weights)
    assert out["weights"].dtype == torch.float32
    (value,) = packed.values
    assert len(value.pickle) < 1024  # the bytes left the stream...
    assert sum(v.nbytes for v in packed.blobs.values()) == weights.nbytes  # ...as one blob
    # The same tensor again is the same blob: nothing new to upload.
    assert set(pack({"weights": weights}).blobs) == set(packed.blobs)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.int8, torch.bool, torch.complex64, torch.float64]
)
def test_every_dtype_keeps_its_values_including_those_numpy_lacks(dtype: Any) -> None:
    tensor = (torch.arange(256 * 256) % 7 - 3).reshape(256, 256).to(dtype)
    out, packed, _ = round_trip({"t": tensor})
    assert out["t"].dtype == dtype and out["t"].shape == tensor.shape
    assert torch.equal(out["t"], tensor)
    assert packed.blobs  # out of band


def test_views_grad_and_writability() -> None:
    base = torch.randn(300, 200)
    leaf = torch.zeros(128, 128, requires_grad=True)
    out, _, _ = round_trip({"t": base.t(), "leaf": leaf})
    assert torch.equal(out["t"], base.t())  # a transposed view arrives as its values
    assert out["leaf"].requires_grad and out["leaf"].is_leaf
    out["t"].mul_(2)  # the received tensor is writable, and no one else's memory
    assert torch.equal(out["t"], base.t() * 2)


def test_a_module_and_its_shared_parameters_arrive_whole() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)
    )
    model[2].weight = model[0].weight  # tied weights: one Parameter under two names
    out, packed, _ = round_trip({"model": model, "state": model.state_dict()})
    received = out["model"]
    assert received[2].weight is received[0].weight
    assert isinstance(received[0].weight, torch.nn.Parameter) and received[0].weight.requires_grad
    x = torch.randn(4, 256)
    assert torch.equal(received(x), model(x))
    assert torch.equal(out["state"]["0.weight"], model[0].weight.detach())
    # The tied weight travels once; both biases are small and stay in the stream.
    assert len(packed.blobs) == 1


def test_a_small_tensor_stays_in_the_pickle_stream() -> None:
    small = torch.ones(4)
    assert small.nbytes < OUT_OF_BAND_MIN
    out, packed, _ = round_trip({"small": small})
    assert torch.equal(out["small"], small) and not packed.blobs


def test_a_tensor_computed_with_grad_arrives_as_a_leaf_that_requires_grad() -> None:
    x = torch.randn(256, 256, requires_grad=True)
    out, _, _ = round_trip({"y": x * 2})
    assert out["y"].is_leaf and out["y"].requires_grad  # as torch's own pickling has it
    assert torch.equal(out["y"].detach(), (x * 2).detach())


def test_sparse_tensors_pickle_as_torch_pickles_them() -> None:
    sparse = torch.eye(512).to_sparse()
    out, _, _ = round_trip({"s": sparse})
    assert out["s"].is_sparse and torch.equal(out["s"].to_dense(), torch.eye(512))


def test_conjugate_and_negative_views_arrive_as_their_values() -> None:
    x = torch.randn(256, 256, dtype=torch.complex64)
    views = {"conj": x.conj(), "adjoint": x.mH, "neg": torch._neg_view(x)}
    assert all(v.is_conj() or v.is_neg() for v in views.values())
    out, packed, _ = round_trip(views)
    for name, view in views.items():
        assert torch.equal(out[name], view), name
        assert not out[name].is_conj() and not out[name].is_neg()
    assert packed.blobs  # out of band, like any large tensor
