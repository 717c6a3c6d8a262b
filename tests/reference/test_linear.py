"""silu_and_mul, and gemm with dense and NVFP4 weights, against float64 formulas."""

import pytest
import torch

from tokenyard.backends.reference.activation import silu_and_mul
from tokenyard.backends.reference.linear import gemm
from tokenyard.backends.reference.quant import nvfp4_quantize

from .oracles import nvfp4_decode, rand, tol

DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul_gates_the_second_half_by_silu_of_the_first(device, dtype):
    x = rand(5, 2 * 24, dtype=dtype, device=device, scale=2.0)
    gate, up = x[:, :24].double(), x[:, 24:].double()
    y = silu_and_mul(x=x)
    assert y.shape == (5, 24) and y.dtype == dtype
    torch.testing.assert_close(y.double(), gate * torch.sigmoid(gate) * up, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_is_x_times_w_transposed(device, dtype):
    x, w = rand(7, 48, dtype=dtype, device=device), rand(20, 48, dtype=dtype, device=device)
    y = gemm(x=x, w=w)
    assert y.shape == (7, 20) and y.dtype == dtype
    torch.testing.assert_close(y.double(), x.double() @ w.double().t(), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_with_nvfp4_weight_multiplies_by_the_values_it_encodes(device, dtype):
    x, w = rand(5, 64, dtype=dtype, device=device), rand(12, 64, device=device, scale=0.05)
    q = nvfp4_quantize(w=w)
    y = gemm(x=x, w=q)
    w64 = nvfp4_decode(q.packed, q.scales, q.global_scale).to(device)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), x.double() @ w64.t(), **tol(dtype))
