"""The reference backend: plain PyTorch kernels for every op of the contract, on CPU and CUDA.

It is the correctness oracle: every faster kernel is checked against it, and the engine's CPU
tests run through it. Kernels favour the plainest correct formulation (fp32 math, one rounding
to the activation dtype) while staying vectorised enough for tiny models on CPU. One module per
op family; this module only registers them, through the same hook a vendor's backend uses.
"""

from __future__ import annotations

from tokenyard.registry import hookimpl

from . import activation, attention, gdn, linear, mla, moe, norm, quant, rope, sample

KERNELS = {
    "rms_norm": norm.rms_norm,
    "gated_rms_norm": norm.gated_rms_norm,
    "rope": rope.rope,
    "qk_norm_rope": rope.qk_norm_rope,
    "silu_and_mul": activation.silu_and_mul,
    "gemm": linear.gemm,
    "kv_cache_write": attention.kv_cache_write,
    "attention_extend": attention.attention_extend,
    "attention_decode": attention.attention_decode,
    "mla_cache_write": mla.mla_cache_write,
    "mla_decode": mla.mla_decode,
    "mla_extend": mla.mla_extend,
    "gdn_gating": gdn.gdn_gating,
    "causal_conv1d_extend": gdn.causal_conv1d_extend,
    "causal_conv1d_decode": gdn.causal_conv1d_decode,
    "gdn_extend": gdn.gdn_extend,
    "gdn_decode": gdn.gdn_decode,
    "moe_route": moe.moe_route,
    "moe_experts": moe.moe_experts,
    "nvfp4_quantize": quant.nvfp4_quantize,
    "nvfp4_dequantize": quant.nvfp4_dequantize,
    "sample": sample.sample,
}


@hookimpl
def tokenyard_register_kernels(registry) -> None:
    for op, fn in KERNELS.items():
        registry.register(op, fn, name="torch", priority=0, devices=("cpu", "cuda"))
