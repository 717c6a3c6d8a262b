"""Multi-head latent attention (DeepSeek-V2/V3): the latent cache write, absorbed decode over the
latent cache, and un-absorbed ragged causal prefill.

The cache is [pages, page_size, R + P]: the compressed KV latent (R = kv_lora_rank) followed by the
shared rotary key (P = qk_rope_head_dim). Absorbed decode scores a query against a key as
q_latent·latent + q_rope·k_rope and returns the softmax-weighted sum of latents [B, H, R]; the
model applies W_UV afterwards.
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._paged import cu_seqlens, paged_layout
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, Validator


def _validate_latent_cache(v: Validator, kv_cache, like: str, like_value: torch.Tensor) -> None:
    """kv_cache [N, S, R + P] of ``like``'s dtype, R and P already bound by the latent and rope inputs."""
    v.tensor("kv_cache", kv_cache, "N,S,RP", like=like, like_value=like_value)
    if kv_cache.shape[2] != v.size("R") + v.size("P"):
        v.fail("kv_cache", f"has last dim {kv_cache.shape[2]}, expected R + P = {v.size('R') + v.size('P')}")


def _write_example(device, dtype, T=4096, R=512, P=64, page=64):
    pages = 2 * T // page + 1
    return dict(latent=randn(T, R, device=device, dtype=dtype), k_rope=randn(T, P, device=device, dtype=dtype),
                kv_cache=randn(pages, page, R + P, device=device, dtype=dtype),
                slot_mapping=torch.randperm(pages * page)[:T].to(device=device, dtype=torch.int64))


declare("mla_cache_write", mutates=("kv_cache",), example=_write_example,
        cost=lambda a: (0.0, 2 * nbytes(a["latent"], a["k_rope"]) + nbytes(a["slot_mapping"])),
        shapes={"small": dict(T=8, R=32, P=8, page=4), "deepseek-v3": dict(T=4096, R=512, P=64)})


def mla_cache_write(latent: torch.Tensor, k_rope: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
                    *, kernel: Optional[str] = None) -> None:
    """Store cat(latent [T, R], k_rope [T, P]) at ``slot_mapping`` int64 [T] (-1 skips) of kv_cache, in place."""
    v = Validator("mla_cache_write")
    v.tensor("latent", latent, "T,R", ACTIVATION_TYPES)
    v.tensor("k_rope", k_rope, "T,P", like="latent", like_value=latent)
    _validate_latent_cache(v, kv_cache, "latent", latent)
    v.tensor("slot_mapping", slot_mapping, "T", (torch.int64,))
    v.index_range("slot_mapping", slot_mapping, -1, v.size("N") * v.size("S"), "slots (or -1)")
    return dispatch("mla_cache_write", dict(latent=latent, k_rope=k_rope, kv_cache=kv_cache, slot_mapping=slot_mapping), kernel)


def _decode_example(device, dtype, B=1, ctx=32768, H=128, R=512, P=64, page=64):
    table, pages = paged_layout([ctx] * B, page, device)
    return dict(q_latent=randn(B, H, R, device=device, dtype=dtype), q_rope=randn(B, H, P, device=device, dtype=dtype),
                kv_cache=randn(pages, page, R + P, device=device, dtype=dtype), page_table=table,
                seqlens_k=torch.full((B,), ctx, dtype=torch.int32, device=device), scale=(128 + P) ** -0.5)


def _decode_cost(a):
    ql, kc = a["q_latent"], a["kv_cache"]
    keys = float(a["seqlens_k"].sum())
    return 2.0 * ql.shape[1] * keys * (kc.shape[2] + ql.shape[2]), keys * kc.shape[2] * kc.element_size() + 2 * nbytes(ql)


declare("mla_decode", example=_decode_example, cost=_decode_cost,
        shapes={"small": dict(B=2, ctx=13, H=4, R=32, P=8, page=4), "deepseek-v3-32k": dict(B=1, ctx=32768, H=128)})


def mla_decode(q_latent: torch.Tensor, q_rope: torch.Tensor, kv_cache: torch.Tensor, page_table: torch.Tensor,
               seqlens_k: torch.Tensor, scale: float, *, kernel: Optional[str] = None) -> torch.Tensor:
    """Absorbed MLA decode: q_latent [B, H, R], q_rope [B, H, P] over the latent cache → [B, H, R]."""
    v = Validator("mla_decode")
    v.tensor("q_latent", q_latent, "B,H,R", ACTIVATION_TYPES)
    v.tensor("q_rope", q_rope, "B,H,P", like="q_latent", like_value=q_latent)
    _validate_latent_cache(v, kv_cache, "q_latent", q_latent)
    v.tensor("page_table", page_table, "B,M", (torch.int32,))
    v.tensor("seqlens_k", seqlens_k, "B", (torch.int32,))
    v.index_range("seqlens_k", seqlens_k, 1, v.size("M") * v.size("S") + 1, "key counts (1 .. max_pages × page_size)")
    v.pages_in_use("page_table", page_table, seqlens_k, v.size("S"), v.size("N"))
    v.number("scale", scale, low=0, low_open=True)
    return dispatch("mla_decode", dict(q_latent=q_latent, q_rope=q_rope, kv_cache=kv_cache, page_table=page_table,
                                       seqlens_k=seqlens_k, scale=scale), kernel)


def _extend_example(device, dtype, B=1, q_len=4096, prefix=0, H=16, Dqk=192, Dv=128):
    k_len = q_len + prefix
    return dict(q=randn(B * q_len, H, Dqk, device=device, dtype=dtype), k=randn(B * k_len, H, Dqk, device=device, dtype=dtype),
                v=randn(B * k_len, H, Dv, device=device, dtype=dtype), cu_seqlens_q=cu_seqlens([q_len] * B, device),
                cu_seqlens_k=cu_seqlens([k_len] * B, device), scale=Dqk ** -0.5)


def _extend_cost(a):
    q, k, vv = a["q"], a["k"], a["v"]
    cq, ck = a["cu_seqlens_q"].tolist(), a["cu_seqlens_k"].tolist()
    flops = 0.0
    for b in range(len(cq) - 1):
        n, m = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        flops += 2.0 * q.shape[1] * (n * (m - n) + n * (n + 1) / 2) * (q.shape[2] + vv.shape[2])
    return flops, nbytes(q, k, vv) + q.shape[0] * q.shape[1] * vv.shape[2] * q.element_size()


declare("mla_extend", example=_extend_example, cost=_extend_cost,
        shapes={"small": dict(B=2, q_len=5, prefix=3, H=2, Dqk=24, Dv=16), "deepseek-v3-4k": dict(q_len=4096, H=128)})


def mla_extend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
               scale: float, *, kernel: Optional[str] = None) -> torch.Tensor:
    """Ragged causal attention with Dv ≠ Dqk (un-absorbed MLA prefill): q [T, H, Dqk], k [Tk, H, Dqk],
    v [Tk, H, Dv] → [T, H, Dv]; sequence b's queries are the last q_len_b of its k_len_b keys."""
    val = Validator("mla_extend")
    val.tensor("q", q, "T,H,Dqk", ACTIVATION_TYPES)
    val.tensor("k", k, "Tk,H,Dqk", like="q", like_value=q)
    val.tensor("v", v, "Tk,H,Dv", like="q", like_value=q)
    val.tensor("cu_seqlens_q", cu_seqlens_q, "B1", (torch.int32,))
    val.tensor("cu_seqlens_k", cu_seqlens_k, "B1", (torch.int32,))
    val.cu_seqlens("cu_seqlens_q", cu_seqlens_q, val.size("T"), "q")
    val.cu_seqlens("cu_seqlens_k", cu_seqlens_k, val.size("Tk"), "k")
    if Validator.values_checkable(cu_seqlens_q) and Validator.values_checkable(cu_seqlens_k):
        if bool(((cu_seqlens_q[1:] - cu_seqlens_q[:-1]) > (cu_seqlens_k[1:] - cu_seqlens_k[:-1])).any()):
            val.fail("cu_seqlens_k", "gives some sequence fewer keys than queries, expected k_len_b >= q_len_b")
    val.number("scale", scale, low=0, low_open=True)
    return dispatch("mla_extend", dict(q=q, k=k, v=v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, scale=scale), kernel)
