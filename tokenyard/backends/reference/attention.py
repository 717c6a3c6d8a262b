"""Paged softmax attention: cache writes, causal extend (prefill, chunked prefill), decode.

Owns the paged-cache addressing (slot = page·page_size + offset; page_table row b lists sequence
b's pages in order) and the masked softmax every attention-like reference op shares (`attend`,
also used by mla.py). Caches are [pages, page_size, Hk, D].

For query i of sequence b with q_len queries over n = seqlens_k[b] keys, at key position
p_i = n − q_len + i, and query head h reading key/value head h // (Hq/Hk):

    o_i = Σ_{j ≤ p_i} softmax_j(scale · q_i·k_j) · v_j        (fp32 scores, softmax and sum)

Extend gathers each sequence's pages and runs one masked softmax(QKᵀ)V per sequence (per block
of QUERY_BLOCK queries, to bound memory on long prompts); decode gathers every sequence's pages
at once (up to the longest) and runs one batched softmax.
"""

from __future__ import annotations

import torch

from .pools import flat_rows, write_slots

QUERY_BLOCK = 1024


def gather_pages(cache: torch.Tensor, pages: torch.Tensor, n: int) -> torch.Tensor:
    """The first n rows of the pages listed in pages[B, np]: [B, n, ...]."""
    return cache[pages.long()].flatten(1, 2)[:, :n]


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
    n, lq, hq, d = q.shape
    hk, dv = k.shape[2], v.shape[-1]
    qg = q.float().view(n, lq, hk, hq // hk, d)
    scores = torch.einsum("nqhgd,nshd->nhgqs", qg, k.float()) * scale
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    probs = scores.softmax(-1).masked_fill(~mask.any(-1)[:, None, None, :, None], 0.0)
    o = torch.einsum("nhgqs,nshd->nqhgd", probs, v.float())
    return o.reshape(n, lq, hq, dv)


def gather_sequences(cache: torch.Tensor, page_table: torch.Tensor, seqlens_k: torch.Tensor):
    """Every sequence's cached rows, padded to the longest: ([B, n, ...], valid mask [B, n]).

    The longest length is read on the host once; page-table entries past a sequence's own pages
    are never dereferenced (they may hold padding).
    """
    page_size = cache.shape[1]
    n = int(seqlens_k.max())
    n_pages = -(-n // page_size)
    own = torch.arange(n_pages, device=page_table.device)[None, :] < (seqlens_k[:, None] + page_size - 1) // page_size
    pages = torch.where(own, page_table[:, :n_pages], torch.zeros_like(page_table[:, :n_pages]))
    valid = torch.arange(n, device=seqlens_k.device)[None, :] < seqlens_k[:, None]
    return gather_pages(cache, pages, n), valid


def kv_cache_write(
    *,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    write_slots(flat_rows(k_cache), slot_mapping, k)
    write_slots(flat_rows(v_cache), slot_mapping, v)


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
    k, valid = gather_sequences(k_cache, page_table, seqlens_k)
    v, _ = gather_sequences(v_cache, page_table, seqlens_k)
    return attend(q[:, None], k, v, valid[:, None, :], scale)[:, 0].to(q.dtype)
