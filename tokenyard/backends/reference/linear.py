"""Dense GEMM: y[T, N] = x[T, K] @ w[N, K]ᵀ, with w a dense tensor or an NVFP4Weight.

NVFP4 weights are dequantized to their exact fp32 values and everything is multiplied in fp32:
the oracle carries no rounding that a fast kernel (bf16 multiply of e2m1·scale, global scale on
the fp32 accumulator) would not also avoid.
"""

from __future__ import annotations

import torch

from .quant import dense_fp32


def gemm(*, x: torch.Tensor, w) -> torch.Tensor:
    return (x.float() @ dense_fp32(w).t()).to(x.dtype)
