"""What the Gluon kernels (attention_ws.py, gdn_ws.py) share: the Hopper names they use, one TMA
load across Gluon's renames, the GL dtype of a torch dtype, and the wgmma accumulator layout of one
warpgroup.

Gluon is Triton's experimental explicit-layout language and renames between releases: the TMA
load is async_copy_global_to_shared in Triton 3.6 (the device's) and async_load from 3.7 on.
"""

from __future__ import annotations

import functools

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

__all__ = ["GL_DTYPES", "TensorDescriptor", "fence_async_shared", "mbarrier", "mma_layout", "shared_layout", "tma_load",
           "warpgroup_mma", "warpgroup_mma_wait"]

tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared

GL_DTYPES = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}


@gluon.constexpr_function
def mma_layout(n):
    """The accumulator layout of a one-warpgroup wgmma with N = n (M tiled by 64 over 4 warps)."""
    n = gl._unwrap_if_constexpr(n)
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@functools.lru_cache(maxsize=None)
def shared_layout(box: tuple, dtype: torch.dtype) -> gl.NVMMASharedLayout:
    """The swizzled shared layout of a TMA box, cached (the launchers build several a call)."""
    return gl.NVMMASharedLayout.get_default_for(list(box), GL_DTYPES[dtype])
