"""Paged attention over a shared page pool: cache writes, causal extend (prefill with or without a
cached prefix), and single-query decode.

Caches are [pages, page_size, Hk, D] (k) and [pages, page_size, Hk, Dv] (v); ``page_table`` int32
[B, max_pages] maps a sequence's logical page to a pool page; ``seqlens_k`` int32 [B] counts the
keys in the cache including this step's. GQA: query head h reads kv head h // (Hq / Hk).
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._paged import cu_seqlens, paged_layout
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, Validator


def _validate_paged(v: Validator, q, k_cache, v_cache, page_table, seqlens_k) -> None:
    v.tensor("k_cache", k_cache, "P,S,Hk,D", like="q", like_value=q)
    v.tensor("v_cache", v_cache, "P,S,Hk,Dv", like="q", like_value=q)
    if v.size("Hq") % v.size("Hk"):
        v.fail("k_cache", f"has {v.size('Hk')} kv heads, expected a divisor of q's {v.size('Hq')} heads")
    v.tensor("page_table", page_table, "B,M", (torch.int32,))
    v.tensor("seqlens_k", seqlens_k, "B", (torch.int32,))
    v.index_range("seqlens_k", seqlens_k, 0, v.size("M") * v.size("S") + 1, "key counts (max_pages × page_size)")
    v.pages_in_use("page_table", page_table, seqlens_k, v.size("S"), v.size("P"))


# -- kv_cache_write --------------------------------------------------------------------------

def _write_example(device, dtype, T=4096, Hk=8, D=128, page=64, pages=None):
    pages = pages or (2 * T // page + 1)
    slots = torch.randperm(pages * page)[:T].to(device=device, dtype=torch.int64)
    return dict(k=randn(T, Hk, D, device=device, dtype=dtype), v=randn(T, Hk, D, device=device, dtype=dtype),
                k_cache=randn(pages, page, Hk, D, device=device, dtype=dtype),
                v_cache=randn(pages, page, Hk, D, device=device, dtype=dtype), slot_mapping=slots)


declare("kv_cache_write", mutates=("k_cache", "v_cache"), example=_write_example,
        cost=lambda a: (0.0, 2 * nbytes(a["k"], a["v"]) + nbytes(a["slot_mapping"])),
        shapes={"small": dict(T=8, Hk=2, D=16, page=4), "llama": dict(T=4096, Hk=8, D=128, page=64)})


def kv_cache_write(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor, *, kernel: Optional[str] = None) -> None:
    """Store k [T, Hk, D] and v [T, Hk, Dv] at ``slot_mapping`` int64 [T] (page·page_size + offset;
    -1 skips the token) of k_cache / v_cache, in place."""
    val = Validator("kv_cache_write")
    val.tensor("k", k, "T,Hk,D", ACTIVATION_TYPES)
    val.tensor("v", v, "T,Hk,Dv", like="k", like_value=k)
    val.tensor("k_cache", k_cache, "P,S,Hk,D", like="k", like_value=k)
    val.tensor("v_cache", v_cache, "P,S,Hk,Dv", like="k", like_value=k)
    val.tensor("slot_mapping", slot_mapping, "T", (torch.int64,))
    val.index_range("slot_mapping", slot_mapping, -1, val.size("P") * val.size("S"), "slots (or -1)")
    return dispatch("kv_cache_write", dict(k=k, v=v, k_cache=k_cache, v_cache=v_cache, slot_mapping=slot_mapping), kernel)


# -- attention_extend ------------------------------------------------------------------------

def _extend_example(device, dtype, B=1, q_len=8192, prefix=0, Hq=16, Hk=2, D=256, page=64):
    seqlens = [prefix + q_len] * B
    table, pages = paged_layout(seqlens, page, device)
    return dict(q=randn(B * q_len, Hq, D, device=device, dtype=dtype),
                k_cache=randn(pages, page, Hk, D, device=device, dtype=dtype),
                v_cache=randn(pages, page, Hk, D, device=device, dtype=dtype), page_table=table,
                cu_seqlens_q=cu_seqlens([q_len] * B, device), seqlens_k=torch.tensor(seqlens, dtype=torch.int32, device=device),
                scale=D ** -0.5)


def _extend_cost(a):
    q, kc, vc = a["q"], a["k_cache"], a["v_cache"]
    cu = a["cu_seqlens_q"].tolist()
    sk = a["seqlens_k"].tolist()
    hq, d, dv = q.shape[1], q.shape[2], vc.shape[3]
    flops = 0.0
    kv_read = 0.0
    for b in range(len(sk)):
        n, k = cu[b + 1] - cu[b], sk[b]
        visible = n * (k - n) + n * (n + 1) / 2  # causal: query i sees prefix + i + 1 keys
        flops += 2.0 * hq * visible * (d + dv)
        kv_read += k * kc.shape[2] * (d + dv) * kc.element_size()
    return flops, kv_read + 2 * nbytes(q)


declare("attention_extend", example=_extend_example, cost=_extend_cost,
        shapes={"small": dict(B=2, q_len=5, prefix=3, Hq=4, Hk=2, D=16, page=4),
                "qwen3-next-8k": dict(q_len=8192, Hq=16, Hk=2, D=256),
                "llama-8k": dict(q_len=8192, Hq=32, Hk=8, D=128),
                "agentic-turn": dict(q_len=800, prefix=32768, Hq=16, Hk=2, D=256)})


def attention_extend(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                     cu_seqlens_q: torch.Tensor, seqlens_k: torch.Tensor, scale: float, *,
                     kernel: Optional[str] = None) -> torch.Tensor:
    """Causal attention of packed queries q [T, Hq, D] over the paged cache → [T, Hq, Dv].

    Sequence b's q_len_b = cu_seqlens_q[b+1] − cu_seqlens_q[b] queries are the last q_len_b of its
    seqlens_k[b] keys (which are already in the cache); query i sees keys 0 .. seqlens_k[b] − q_len_b + i.
    """
    v = Validator("attention_extend")
    v.tensor("q", q, "T,Hq,D", ACTIVATION_TYPES)
    _validate_paged(v, q, k_cache, v_cache, page_table, seqlens_k)
    v.tensor("cu_seqlens_q", cu_seqlens_q, "B1", (torch.int32,))
    if cu_seqlens_q.shape[0] != v.size("B") + 1:
        v.fail("cu_seqlens_q", f"has {cu_seqlens_q.shape[0]} entries, expected B + 1 = {v.size('B') + 1}")
    v.cu_seqlens("cu_seqlens_q", cu_seqlens_q, v.size("T"), "q")
    if Validator.values_checkable(cu_seqlens_q) and Validator.values_checkable(seqlens_k):
        q_lens = cu_seqlens_q[1:] - cu_seqlens_q[:-1]
        if bool((q_lens > seqlens_k).any()):
            b = int((q_lens > seqlens_k).nonzero()[0])
            v.fail("seqlens_k", f"has {int(seqlens_k[b])} keys for sequence {b}, expected at least its {int(q_lens[b])} queries")
    v.number("scale", scale, low=0, low_open=True)
    return dispatch("attention_extend", dict(q=q, k_cache=k_cache, v_cache=v_cache, page_table=page_table,
                                             cu_seqlens_q=cu_seqlens_q, seqlens_k=seqlens_k, scale=scale), kernel)


# -- attention_decode ------------------------------------------------------------------------

def _decode_example(device, dtype, B=1, ctx=131072, Hq=16, Hk=2, D=256, page=64):
    table, pages = paged_layout([ctx] * B, page, device)
    return dict(q=randn(B, Hq, D, device=device, dtype=dtype),
                k_cache=randn(pages, page, Hk, D, device=device, dtype=dtype),
                v_cache=randn(pages, page, Hk, D, device=device, dtype=dtype), page_table=table,
                seqlens_k=torch.full((B,), ctx, dtype=torch.int32, device=device), scale=D ** -0.5)


def _decode_cost(a):
    q, kc, vc = a["q"], a["k_cache"], a["v_cache"]
    keys = float(a["seqlens_k"].sum())
    flops = 2.0 * q.shape[1] * keys * (q.shape[2] + vc.shape[3])
    return flops, keys * kc.shape[2] * (kc.shape[3] + vc.shape[3]) * kc.element_size() + 2 * nbytes(q)


declare("attention_decode", example=_decode_example, cost=_decode_cost,
        shapes={"small": dict(B=3, ctx=37, Hq=4, Hk=2, D=16, page=4),
                "qwen3-next-128k": dict(B=1, ctx=131072, Hq=16, Hk=2, D=256),
                "qwen3-next-b32-8k": dict(B=32, ctx=8192, Hq=16, Hk=2, D=256),
                "llama-128k": dict(B=1, ctx=131072, Hq=32, Hk=8, D=128),
                "llama-b32-8k": dict(B=32, ctx=8192, Hq=32, Hk=8, D=128)})


def attention_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                     seqlens_k: torch.Tensor, scale: float, *, kernel: Optional[str] = None) -> torch.Tensor:
    """One query per sequence, q [B, Hq, D], over all seqlens_k[b] cached keys → [B, Hq, Dv].
    Graph-capturable: no host synchronisation, fixed shapes."""
    v = Validator("attention_decode")
    v.tensor("q", q, "B,Hq,D", ACTIVATION_TYPES)
    _validate_paged(v, q, k_cache, v_cache, page_table, seqlens_k)
    v.number("scale", scale, low=0, low_open=True)
    return dispatch("attention_decode", dict(q=q, k_cache=k_cache, v_cache=v_cache, page_table=page_table,
                                             seqlens_k=seqlens_k, scale=scale), kernel)
