"""gemm on NVIDIA GPUs through cuBLAS (torch's matmul): bf16/fp16 tensor cores with fp32
accumulation, the output in the activation dtype.

Owns the op's fast path for plain weights; NVFP4 weights are declined (the reference dequantizes
them). The reference gemm computes in fp32 as the oracle, which on a GPU means converting every
weight to fp32 on every call: about 4x the bytes of a bf16 decode step and CUDA-core FLOPs for
prefill (sm80_xmma_gemm_f32f32 kernels took 73% of the CUDA time of an agentic turn on an H100:
`bench/gpu/engine_gpu.py --model qwen3-8b --profile`, 2026-11-23 02:41 UTC).
"""

from __future__ import annotations

from typing import Optional

import torch


def supports_gemm(*, x, w) -> Optional[str]:
    if not isinstance(w, torch.Tensor):
        return f"weight is a {type(w).__name__}, not a plain tensor"
    if w.dtype != x.dtype:
        return f"weight dtype {w.dtype} differs from x's {x.dtype}"
    if x.dtype not in (torch.bfloat16, torch.float16):
        return f"x dtype {x.dtype} is not bf16/fp16"
    return None


def gemm(*, x, w):
    return torch.nn.functional.linear(x, w)
