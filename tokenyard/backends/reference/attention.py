"""Paged softmax attention: cache writes, causal extend (prefill, chunked prefill), decode.

Owns the paged-cache addressing (slot = page·page_size + offset; page_table row b lists sequence
b's pages in order) and the masked softmax every attention-like reference op shares (`attend`,
also used by mla.py). Caches are [pages, page_size, Hk, D].

For query i of sequence b with q_len queries over n = seqlens_k[b] keys, at key position
p_i = n − q_len + i, and query head h reading key/value head h // (Hq/Hk):

    o_i = Σ_{j ≤ p_i} softmax_j(scale · q_i·k_j) · v_j        (fp32 scores, softmax and sum)

The sum is torch's scaled_dot_product_attention in fp32 with an explicit boolean mask (exactly
the formula above; no causal shortcut, so a query block of a chunked prefill is masked by its own
key positions). Extend gathers each sequence's pages once and runs one masked attention per
sequence (per block of QUERY_BLOCK queries, to bound memory on long prompts); decode gathers
every sequence's pages at once (up to the longest), one index_select per cache, and runs one
batched attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pools import flat_rows, write_slots

QUERY_BLOCK = 1024


def gather_pages(cache: torch.Tensor, pages: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows of the pages listed in pages[B, np]: [B, n, ...], one index_select."""
    rows = cache.index_select(0, pages.reshape(-1))
    return rows.view(pages.shape[0], pages.shape[1] * cache.shape[1], *cache.shape[2:])[:, :n]


def causal_mask(positions: torch.Tensor, k_len: int) -> torch.Tensor:
    """[len(positions), k_len] bool: the query at key position p sees keys 0..p."""
    return torch.arange(k_len, device=positions.device)[None, :] <= positions[:, None]


def causal_blocks(q_len: int, k_len: int, device: torch.device):
    """Blocks of a sequence's queries: (first, last + 1, their key positions, keys they need).

    Bounds the [queries × keys] score matrix of a long prefill to QUERY_BLOCK rows at a time.
    """
    for first in range(0, q_len, QUERY_BLOCK):
        last = min(first + QUERY_BLOCK, q_len)
        positions = torch.arange(first, last, device=device) + (k_len - q_len)
        yield first, last, positions, k_len - q_len + last


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Masked GQA attention in fp32.

    q[N, Lq, Hq, D], k[N, Lk, Hk, D], v[N, Lk, Hk, Dv], mask[N, Lq, Lk] (True = visible)
    -> o[N, Lq, Hq, Dv] fp32; query head h uses key/value head h // (Hq/Hk). A query that sees
    no key (a padded decode row with seqlens_k = 0) gets zeros, as FlashAttention gives.
    """
    o = F.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2),
        attn_mask=mask[:, None], scale=scale, enable_gqa=q.shape[2] != k.shape[2])
    return torch.where(mask.any(-1)[:, None, :, None], o, 0.0).transpose(1, 2)


def sequence_pages(cache: torch.Tensor, page_table: torch.Tensor, seqlens_k: torch.Tensor):
    """(pages [B, np], n, valid [B, n]) for gathering every sequence's cached rows of cache
    [P, page_size, ...], padded to the longest: n = max(seqlens_k) (read on the host once).

    Page-table entries past a sequence's own pages may hold padding, even out of range: they are
    clamped into the pool, and the valid mask hides every row they bring in.
    """
    n = int(seqlens_k.max())
    pages = page_table[:, : -(-n // cache.shape[1])].clamp(0, cache.shape[0] - 1)
    valid = torch.arange(n, device=seqlens_k.device)[None, :] < seqlens_k[:, None]
    return pages, n, valid


def kv_cache_write(
    *,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    write_slots(slot_mapping, (flat_rows(k_cache), k), (flat_rows(v_cache), v))


def attention_extend(
    *,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seqlens_k: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    page_size = k_cache.shape[1]
    out = q.new_empty(q.shape[0], q.shape[1], v_cache.shape[-1])
    cu, lens = cu_seqlens_q.tolist(), seqlens_k.tolist()
    for b, n in enumerate(lens):
        start, end = cu[b], cu[b + 1]
        if end == start:
            continue
        pages = page_table[b : b + 1, : -(-n // page_size)]
        k, v = gather_pages(k_cache, pages, n), gather_pages(v_cache, pages, n)
        for first, last, positions, seen in causal_blocks(end - start, n, q.device):
            rows = slice(start + first, start + last)
            mask = causal_mask(positions, seen)
            out[rows] = attend(q[None, rows], k[:, :seen], v[:, :seen], mask[None], scale)[0]
    return out


def attention_decode(
    *,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    page_table: torch.Tensor,
    seqlens_k: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    pages, n, valid = sequence_pages(k_cache, page_table, seqlens_k)
    k, v = gather_pages(k_cache, pages, n), gather_pages(v_cache, pages, n)
    return attend(q[:, None], k, v, valid[:, None, :], scale)[:, 0].to(q.dtype)
