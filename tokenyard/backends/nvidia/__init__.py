"""The NVIDIA backend: Triton kernels for Hopper (sm_90) and newer, registered through the
``tokenyard.backends`` entry point like any third-party backend.

Owns tokenyard/backends/nvidia/; touches nothing outside it. Registers only when CUDA is available
and Triton imports (an ImportError here is reported by the registry as a failed, non-fatal backend).
Every kernel is plain Triton, so it declares sm_90 as its floor and no ceiling. Peer libraries,
when installed, are registered beside them under their own names (``peers.py``).

Kernels per op family: ``elementwise.py`` (rms_norm, gated_rms_norm, qk_norm_rope, silu_and_mul),
``gdn.py`` (gdn_gating, causal_conv1d_extend/decode, gdn_extend, gdn_decode; on sm_90
gdn_extend's scan runs the warp-specialised Gluon kernel of ``gdn_ws.py``), ``attention.py``
(kv_cache_write, attention_extend, attention_decode; on sm_90 attention_extend runs the
warp-specialised Gluon kernel of ``attention_ws.py`` wherever it applies); and ``linear.py``, gemm
through cuBLAS for plain bf16/fp16 weights (any CUDA GPU).
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.registry import hookimpl

PRIORITY = 10
HOPPER = (9, 0)
_FLOATS = (torch.bfloat16, torch.float16, torch.float32)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _dtype(x: torch.Tensor, name: str) -> Optional[str]:
    return None if x.dtype in _FLOATS else f"{name} dtype {x.dtype} is not bf16/fp16/fp32"


def _supports_rms_norm(*, x, w, eps, residual=None, weight_offset=0.0) -> Optional[str]:
    if x.shape[-1] > 16384:
        return f"hidden size {x.shape[-1]} > 16384"
    return _dtype(x, "x")


def _supports_gated_rms_norm(*, x, z, w, eps) -> Optional[str]:
    if x.shape[-1] > 16384:
        return f"head dim {x.shape[-1]} > 16384"
    return _dtype(x, "x")


def _supports_qk_norm_rope(*, q, k, q_w, k_w, eps, positions, cos_sin, rotary_dim, style, weight_offset=0.0):
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        return "q and k must be contiguous in their last dim"
    if rotary_dim % 2 or rotary_dim > q.shape[-1]:
        return f"rotary_dim {rotary_dim} must be even and <= head dim {q.shape[-1]}"
    if q.shape[-1] > 512 or q.shape[1] * q.shape[-1] > 32768:
        return f"heads x head dim {q.shape[1]}x{q.shape[-1]} too large for one program"
    return _dtype(q, "q")


def _supports_silu_and_mul(*, x) -> Optional[str]:
    return _dtype(x, "x")


def _supports_gdn_gating(*, A_log, a, dt_bias, b) -> Optional[str]:
    return None


def _supports_conv(x, w, conv_state) -> Optional[str]:
    if w.shape[1] < 2 or w.shape[1] > 8:
        return f"conv width {w.shape[1]} outside 2..8"
    if conv_state.stride(2) != 1 or conv_state.stride(1) != w.shape[1] - 1:
        return "conv_state must be contiguous per slot"
    return _dtype(x, "x")


def _supports_conv_extend(*, x, w, bias, conv_state, cu_seqlens, read_slots, write_slots, activation):
    return _supports_conv(x, w, conv_state)


def _supports_conv_decode(*, x, w, bias, conv_state, read_slots, write_slots, activation):
    return _supports_conv(x, w, conv_state)


def _supports_gdn(q, k, v, state) -> Optional[str]:
    K, V = q.shape[-1], v.shape[-1]
    if not (_pow2(K) and _pow2(V) and 16 <= K <= 256 and 16 <= V <= 256):
        return f"head dims K={K}, V={V} must be powers of two in 16..256"
    if v.shape[1] % q.shape[1]:
        return f"value heads {v.shape[1]} not a multiple of key heads {q.shape[1]}"
    if state.dtype != torch.float32 or state.stride(3) != 1 or state.stride(2) != V or state.stride(1) != K * V:
        return "state must be fp32 and contiguous per slot [S, Hv, K, V]"
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        return "q, k, v must be contiguous in their last dim"
    return _dtype(v, "v")


def _supports_gdn_extend(*, q, k, v, g, beta, state, cu_seqlens, read_slots, write_slots, scale, qk_l2norm):
    if v.dtype == torch.float32 and v.is_cuda:
        return "fp32 activations: the chunk products run on bf16/fp16 tensor cores"
    return _supports_gdn(q, k, v, state)


def _supports_gdn_decode(*, q, k, v, g, beta, state, read_slots, write_slots, scale, qk_l2norm):
    return _supports_gdn(q, k, v, state)


def _supports_attention(q, k_cache, v_cache) -> Optional[str]:
    D, DV = q.shape[-1], v_cache.shape[-1]
    if not (_pow2(D) and _pow2(DV) and 16 <= D <= 256 and 16 <= DV <= 256):
        return f"head dims D={D}, Dv={DV} must be powers of two in 16..256"
    if q.shape[1] % k_cache.shape[2]:
        return f"query heads {q.shape[1]} not a multiple of kv heads {k_cache.shape[2]}"
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        return "q and the caches must be contiguous in their last dim"
    if q.dtype == torch.float32 and q.is_cuda:
        return "fp32 activations: the attention products run on bf16/fp16 tensor cores"
    return _dtype(q, "q")


def _supports_attention_extend(*, q, k_cache, v_cache, page_table, cu_seqlens_q, seqlens_k, scale):
    return _supports_attention(q, k_cache, v_cache)


def _supports_attention_decode(*, q, k_cache, v_cache, page_table, seqlens_k, scale):
    if q.shape[1] // k_cache.shape[2] > 64:
        return f"query heads per kv head {q.shape[1] // k_cache.shape[2]} > 64"
    return _supports_attention(q, k_cache, v_cache)


def _supports_kv_cache_write(*, k, v, k_cache, v_cache, slot_mapping):
    if k.stride(-1) != 1 or v.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        return "k, v and the caches must be contiguous in their last dim"
    return None


def kernels() -> list[tuple[str, object, object]]:
    """(op, kernel, supports) for every Triton kernel of this backend."""
    from . import attention, elementwise, gdn

    return [
        ("rms_norm", elementwise.rms_norm, _supports_rms_norm),
        ("gated_rms_norm", elementwise.gated_rms_norm, _supports_gated_rms_norm),
        ("qk_norm_rope", elementwise.qk_norm_rope, _supports_qk_norm_rope),
        ("silu_and_mul", elementwise.silu_and_mul, _supports_silu_and_mul),
        ("gdn_gating", gdn.gdn_gating, _supports_gdn_gating),
        ("causal_conv1d_extend", gdn.causal_conv1d_extend, _supports_conv_extend),
        ("causal_conv1d_decode", gdn.causal_conv1d_decode, _supports_conv_decode),
        ("gdn_extend", gdn.gdn_extend, _supports_gdn_extend),
        ("gdn_decode", gdn.gdn_decode, _supports_gdn_decode),
        ("kv_cache_write", attention.kv_cache_write, _supports_kv_cache_write),
        ("attention_extend", attention.attention_extend, _supports_attention_extend),
        ("attention_decode", attention.attention_decode, _supports_attention_decode),
    ]


@hookimpl
def tokenyard_register_kernels(registry) -> None:
    if not torch.cuda.is_available():
        return
    import triton  # noqa: F401  (no Triton: the registry reports this backend as not loaded)

    for op, fn, supports in kernels():
        registry.register(op, fn, name=f"triton_{op}", priority=PRIORITY, devices=("cuda",),
                          min_capability=HOPPER, supports=supports)
    from . import linear, peers

    registry.register("gemm", linear.gemm, name="cublas_gemm", priority=PRIORITY, devices=("cuda",),
                      supports=linear.supports_gemm)

    peers.register(registry)
