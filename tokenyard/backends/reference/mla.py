"""Multi-head latent attention (DeepSeek-V2/V3): latent cache write, absorbed decode, ragged prefill.

Owns MLA's cache layout: kv_cache[pages, page_size, R + P] holds, per token, the compressed
latent c (R wide, shared by all heads) followed by the shared rope key k_r (P wide).

Decode is absorbed: the model folds W_UK into the query (q_latent = q_nope·W_UKᵀ) and applies
W_UV after, so per head h
    o_h = Σ_j softmax_j(scale · (q_latent_h·c_j + q_rope_h·k_r_j)) · c_j        [R wide]
which is single-KV-head attention with query [q_latent ‖ q_rope], key [c ‖ k_r], value c.
Prefill is un-absorbed: ordinary causal attention with Dv ≠ Dqk over ragged k and v.
"""

from __future__ import annotations

import torch

from .attention import attend, causal_blocks, causal_mask, gather_pages, sequence_pages
from .pools import flat_rows, write_slots


def mla_cache_write(
    *,
    latent: torch.Tensor,
    k_rope: torch.Tensor,
    kv_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    write_slots(slot_mapping, (flat_rows(kv_cache), torch.cat((latent, k_rope.to(latent.dtype)), dim=-1)))


def mla_decode(
    *,
    q_latent: torch.Tensor,
    q_rope: torch.Tensor,
    kv_cache: torch.Tensor,
    page_table: torch.Tensor,
    seqlens_k: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    r = q_latent.shape[-1]
    q = torch.cat((q_latent.float(), q_rope.float()), dim=-1)
    pages, n, valid = sequence_pages(kv_cache, page_table, seqlens_k)
    kv = gather_pages(kv_cache, pages, n)[:, :, None, :]  # one KV head shared by all query heads
    o = attend(q[:, None], kv, kv[..., :r], valid[:, None, :], scale)
    return o[:, 0].to(q_latent.dtype)


def mla_extend(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        qs, qe, ks, ke = cq[b], cq[b + 1], ck[b], ck[b + 1]
        if qe == qs:
            continue
        for first, last, positions, seen in causal_blocks(qe - qs, ke - ks, q.device):
            rows, keys = slice(qs + first, qs + last), slice(ks, ks + seen)
            mask = causal_mask(positions, seen)
            out[rows] = attend(q[None, rows], k[None, keys], v[None, keys], mask[None], scale)[0]
    return out
