"""The op contract: one typed function per op, grouped in one module per op family.

Each function validates its inputs (a ValueError naming the op, the argument, the value and what
was expected) and dispatches through the kernel registry; ``kernel="backend:name"`` forces a
kernel for one call. Shapes, dtypes and semantics are in each function's docstring and in
DESIGN.md's table.
"""

from tokenyard.kernel_api.activation import silu_and_mul
from tokenyard.kernel_api.attention import attention_decode, attention_extend, kv_cache_write
from tokenyard.kernel_api.gdn import (
    causal_conv1d_decode,
    causal_conv1d_extend,
    gdn_decode,
    gdn_extend,
    gdn_gating,
)
from tokenyard.kernel_api.linear import gemm
from tokenyard.kernel_api.mla import mla_cache_write, mla_decode, mla_extend
from tokenyard.kernel_api.moe import moe_experts, moe_route
from tokenyard.kernel_api.norm import gated_rms_norm, rms_norm
from tokenyard.kernel_api.quant import NVFP4Weight, nvfp4_dequantize, nvfp4_quantize
from tokenyard.kernel_api.rope import make_cos_sin, qk_norm_rope, rope
from tokenyard.kernel_api.sample import sample

OPS = (
    "rms_norm", "gated_rms_norm", "rope", "qk_norm_rope", "silu_and_mul", "gemm",
    "kv_cache_write", "attention_extend", "attention_decode",
    "mla_cache_write", "mla_decode", "mla_extend",
    "gdn_gating", "causal_conv1d_extend", "causal_conv1d_decode", "gdn_extend", "gdn_decode",
    "moe_route", "moe_experts", "nvfp4_quantize", "nvfp4_dequantize", "sample",
)

__all__ = [*OPS, "NVFP4Weight", "OPS", "make_cos_sin"]
