"""Dense matrix multiply x @ wᵀ with bf16/fp32 weights or NVFP4 weights."""

from __future__ import annotations

from typing import Optional, Union

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, Validator
from tokenyard.kernel_api.quant import NVFP4Weight


def _gemm_example(device, dtype, T=4096, N=4096, K=4096, nvfp4=False):
    w = randn(N, K, device=device, dtype=dtype, scale=K ** -0.5)
    if nvfp4:
        from tokenyard.kernel_api.quant import nvfp4_quantize

        w = nvfp4_quantize(w, kernel="reference")
    return dict(x=randn(T, K, device=device, dtype=dtype), w=w)


def _gemm_cost(a):
    x, w = a["x"], a["w"]
    n = w.shape[0]
    w_bytes = nbytes(w.packed, w.scales) if isinstance(w, NVFP4Weight) else nbytes(w)
    return 2.0 * x.shape[0] * n * x.shape[1], nbytes(x) + w_bytes + x.shape[0] * n * x.element_size()


declare("gemm", example=_gemm_example, cost=_gemm_cost,
        shapes={"small": dict(T=8, N=32, K=64), "decode": dict(T=1, N=4096, K=4096), "prefill": dict(T=4096, N=4096, K=4096)})


def gemm(x: torch.Tensor, w: Union[torch.Tensor, NVFP4Weight], *, kernel: Optional[str] = None) -> torch.Tensor:
    """x [T, K] @ wᵀ → [T, N]. w is a [N, K] tensor of x's dtype or an NVFP4Weight of logical
    shape [N, K] (dequantized to x's dtype; exact in bf16)."""
    v = Validator("gemm")
    v.tensor("x", x, "T,K", ACTIVATION_TYPES)
    if isinstance(w, NVFP4Weight):
        w.validate(v, "w", "N,K")
    else:
        v.tensor("w", w, "N,K", like="x", like_value=x)
    return dispatch("gemm", dict(x=x, w=w), kernel)
