"""Dense GEMM: y[T, N] = x[T, K] @ w[N, K]ᵀ, with w a dense tensor or an NVFP4Weight.

NVFP4 weights are dequantized to their exact fp32 values and everything is multiplied in fp32:
the oracle carries no rounding that a fast kernel (bf16 multiply of e2m1·scale, global scale on
the fp32 accumulator) would not also avoid.
"""

from __future__ import annotations

import torch

from .quant import dense_fp32

# At most this many rows (a decode step), y is computed as (w·xᵀ)ᵀ: the same products and sums,
# but CPU BLAS streams a wide weight this way round up to twice as fast (SmolLM2's lm_head at 8
# rows: 19 → 9 ms on 2 cores); for more rows x·wᵀ is as fast without the transposing copy.
FEW_ROWS = 64


def gemm(*, x: torch.Tensor, w) -> torch.Tensor:
    x32, w32 = x.float(), dense_fp32(w)
    y = (w32 @ x32.t()).t().contiguous() if x.shape[0] <= FEW_ROWS else x32 @ w32.t()
    return y.to(x.dtype)
