"""Peer libraries as candidate kernels, registered beside tokenyard's own when they are installed:
FLA's chunk_gated_delta_rule for gdn_extend and FlashAttention-3 for attention_extend/decode.

Owns only the adapters from the op contract to each library's calling convention. Peers get
priority 5 (below tokenyard's Triton kernels) and names that say whose kernel it is; the registry's
`fastest` policy times them against ours and checks them against the reference like any kernel.
FLA's fused_recurrent is not registered for gdn_decode: it has no slot indices, so the gather and
scatter around it would cost more than the op.
"""

from __future__ import annotations

import importlib.util

import torch

PEER_PRIORITY = 5
HOPPER = (9, 0)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def fla_gdn_extend(*, q, k, v, g, beta, state, cu_seqlens, read_slots, write_slots, scale, qk_l2norm):
    """FLA's chunk_gated_delta_rule on packed sequences; states gathered from and scattered to the
    slots around it (the scatter of "−1 = don't write" syncs on the host: extend is never graphed)."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    reads = read_slots.long()
    initial = state.index_select(0, reads.clamp(min=0)) * (reads >= 0).to(state.dtype)[:, None, None, None]
    o, final = chunk_gated_delta_rule(
        q[None], k[None], v[None], g[None], beta[None], scale=scale, initial_state=initial,
        output_final_state=True, use_qk_l2norm_in_kernel=bool(qk_l2norm), cu_seqlens=cu_seqlens.long(),
    )
    keep = write_slots >= 0
    state[write_slots[keep].long()] = final[keep].to(state.dtype)
    return o[0]


def _supports_fla_gdn_extend(*, q, k, v, g, beta, state, cu_seqlens, read_slots, write_slots, scale, qk_l2norm):
    if v.dtype not in (torch.bfloat16, torch.float16):
        return "FLA peer: bf16/fp16 activations only"
    if q.shape[-1] > 256 or v.shape[-1] > 256:
        return "FLA peer: head dims up to 256"
    if state.dtype != torch.float32:
        return "FLA peer: fp32 state"
    return None


def fa3_attention_extend(*, q, k_cache, v_cache, page_table, cu_seqlens_q, seqlens_k, scale):
    """One sequence in FA3's batch form; several in its varlen form (max_seqlen_q syncs the host:
    extend is never graphed)."""
    from flash_attn_interface import flash_attn_with_kvcache

    if cu_seqlens_q.shape[0] == 2:
        return flash_attn_with_kvcache(q[None], k_cache, v_cache, cache_seqlens=seqlens_k, page_table=page_table,
                                       softmax_scale=scale, causal=True)[0]
    max_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    return flash_attn_with_kvcache(
        q, k_cache, v_cache, cache_seqlens=seqlens_k, page_table=page_table, cu_seqlens_q=cu_seqlens_q,
        max_seqlen_q=max_q, softmax_scale=scale, causal=True,
    )


def fa3_attention_decode(*, q, k_cache, v_cache, page_table, seqlens_k, scale):
    from flash_attn_interface import flash_attn_with_kvcache

    out = flash_attn_with_kvcache(
        q[:, None], k_cache, v_cache, cache_seqlens=seqlens_k, page_table=page_table, softmax_scale=scale, causal=True,
    )
    return out[:, 0]


def _supports_fa3(*, q, k_cache, v_cache, **_) -> str | None:
    if q.dtype not in (torch.bfloat16, torch.float16):
        return "FA3 peer: bf16/fp16 activations only"
    if q.shape[-1] not in (64, 96, 128, 192, 256) or v_cache.shape[-1] != q.shape[-1]:
        return f"FA3 peer: head dim {q.shape[-1]} (Dv {v_cache.shape[-1]}) not a built variant"
    return None


def register(registry) -> None:
    if _installed("fla"):
        registry.register("gdn_extend", fla_gdn_extend, name="fla_chunk_gated_delta_rule", priority=PEER_PRIORITY,
                          devices=("cuda",), min_capability=HOPPER, supports=_supports_fla_gdn_extend)
    if _installed("flash_attn_interface"):
        # FA3's wheel is built for sm_90a only.
        for op, fn in (("attention_extend", fa3_attention_extend), ("attention_decode", fa3_attention_decode)):
            registry.register(op, fn, name="fa3", priority=PEER_PRIORITY, devices=("cuda",),
                              min_capability=HOPPER, max_capability=HOPPER, supports=_supports_fa3)
