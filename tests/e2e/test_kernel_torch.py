"""PyTorch values through a real kernel and runner: a model goes out, a tensor comes back."""

from __future__ import annotations

import pytest
from support import optional_module

pytestmark = pytest.mark.kernel

# Not in the test extra (a bare requirement pulls the CUDA build); CI installs the CPU wheel.
optional_module("torch", "pip install torch --index-url https://download.pytorch.org/whl/cpu")


def test_a_model_travels_to_the_runner_and_its_output_comes_back(kernel):
    kernel.ok(
        "import torch\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Linear(512, 512)\n"
        "x = torch.randn(64, 512)\n"
        "expected = model(x).detach()"
    )
    kernel.ok("%%remote\ny = model(x).detach()\nn = sum(p.numel() for p in model.parameters())")
    assert kernel.value("torch.equal(y, expected)") is True
    assert kernel.value("n") == 512 * 512 + 512
    assert kernel.value("type(y).__name__, str(y.dtype)") == ("Tensor", "torch.float32")
