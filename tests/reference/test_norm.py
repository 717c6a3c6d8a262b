"""rms_norm (plain, fused residual, weight offset) and gated_rms_norm against their formulas."""

import pytest
import torch

from tokenyard.backends.reference.norm import gated_rms_norm, rms_norm

from .oracles import rand, tol

DTYPES = [torch.float32, torch.bfloat16]


def rms64(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_is_x_over_its_rms_times_weight(device, dtype):
    x, w = rand(7, 96, dtype=dtype, device=device, scale=3.0), rand(96, dtype=dtype, device=device)
    y = rms_norm(x=x, w=w, eps=1e-6)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), rms64(x, 1e-6) * w.double(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_with_residual_returns_norm_of_sum_and_the_sum(device, dtype):
    x, r = rand(5, 64, dtype=dtype, device=device), rand(5, 64, dtype=dtype, device=device)
    w = rand(64, dtype=dtype, device=device)
    y, h = rms_norm(x=x, w=w, eps=1e-5, residual=r)
    assert h.dtype == dtype and torch.equal(h, x + r)  # the residual stream stays in its dtype
    torch.testing.assert_close(y.double(), rms64(x + r, 1e-5) * w.double(), **tol(dtype))


def test_rms_norm_weight_offset_multiplies_by_offset_plus_weight(device):
    x, w = rand(4, 32, device=device), rand(32, device=device, scale=0.1)
    y = rms_norm(x=x, w=w, eps=1e-6, weight_offset=1.0)
    torch.testing.assert_close(y.double(), rms64(x, 1e-6) * (1.0 + w.double()), **tol(torch.float32))


def test_rms_norm_eps_enters_under_the_root(device):
    x, w = rand(3, 16, device=device, scale=1e-3), rand(16, device=device)
    torch.testing.assert_close(rms_norm(x=x, w=w, eps=1e-2).double(), rms64(x, 1e-2) * w.double(), **tol(torch.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_rms_norm_is_norm_times_weight_times_silu_gate(device, dtype):
    x, z = rand(6, 3, 32, dtype=dtype, device=device), rand(6, 3, 32, dtype=dtype, device=device)
    w = rand(32, dtype=dtype, device=device)
    y = gated_rms_norm(x=x, z=z, w=w, eps=1e-6)
    z64 = z.double()
    expected = rms64(x, 1e-6) * w.double() * z64 / (1 + torch.exp(-z64))
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected, **tol(dtype))
