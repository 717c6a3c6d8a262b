"""Paged attention: kv_cache_write against direct indexing; attention_extend / attention_decode
against an explicit softmax(QKᵀ)V over keys gathered page by page in a python loop."""

import math

import pytest
import torch

from tokenyard.backends.reference.attention import attention_decode, attention_extend, kv_cache_write

from .oracles import rand, softmax64, tol

DTYPES = [torch.float32, torch.bfloat16]


def paged_pool(seqlens, page_size, spare_pages=3, pad_value=10**6):
    """A shuffled page assignment: (page_table [B, max_pages + 2] int32, pages per sequence, pool size).

    Table entries past a sequence's own pages hold an out-of-range value: no kernel may read them.
    """
    counts = [math.ceil(n / page_size) for n in seqlens]
    total = sum(counts) + spare_pages
    order = torch.randperm(total).tolist()
    table = torch.full((len(seqlens), max(counts) + 2), pad_value, dtype=torch.int32)
    pages, used = [], 0
    for b, c in enumerate(counts):
        pages.append(order[used : used + c])
        table[b, :c] = torch.tensor(order[used : used + c], dtype=torch.int32)
        used += c
    return table, pages, total


def naive_attention(q, k_cache, v_cache, pages, n_keys, scale):
    """q [L, Hq, D] are the last L of n_keys positions; keys gathered one page at a time."""
    ks = torch.cat([k_cache[p] for p in pages])[:n_keys].double().cpu()
    vs = torch.cat([v_cache[p] for p in pages])[:n_keys].double().cpu()
    q = q.double().cpu()
    length, hq = q.shape[0], q.shape[1]
    group = hq // ks.shape[1]
    out = torch.empty(length, hq, vs.shape[-1], dtype=torch.float64)
    for i in range(length):
        visible = n_keys - length + i + 1
        for h in range(hq):
            scores = ks[:visible, h // group] @ q[i, h] * scale
            out[i, h] = softmax64(scores) @ vs[:visible, h // group]
    return out


@pytest.mark.parametrize("page_size", [16, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_extend_matches_explicit_causal_softmax_over_gathered_pages(device, page_size, dtype):
    # Three sequences: a fresh prompt, a chunk after a cached prefix, a single new token.
    q_lens, seqlens = [37, 11, 1], [37, 100, 5]
    hq, hk, d, dv = 6, 2, 16, 24
    table, pages, total = paged_pool(seqlens, page_size)
    k_cache = rand(total, page_size, hk, d, dtype=dtype, device=device)
    v_cache = rand(total, page_size, hk, dv, dtype=dtype, device=device)
    q = rand(sum(q_lens), hq, d, dtype=dtype, device=device)
    cu = torch.tensor([0, 37, 48, 49], dtype=torch.int32, device=device)
    scale = d**-0.5
    out = attention_extend(q=q, k_cache=k_cache, v_cache=v_cache, page_table=table.to(device), cu_seqlens_q=cu,
                           seqlens_k=torch.tensor(seqlens, dtype=torch.int32, device=device), scale=scale)
    assert out.shape == (49, hq, dv) and out.dtype == dtype
    for b, (start, end) in enumerate(zip(cu.tolist(), cu.tolist()[1:])):
        expected = naive_attention(q[start:end], k_cache, v_cache, pages[b], seqlens[b], scale)
        torch.testing.assert_close(out[start:end].cpu().double(), expected, **tol(dtype))


@pytest.mark.parametrize("page_size", [16, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_decode_matches_explicit_softmax_over_all_cached_keys(device, page_size, dtype):
    seqlens = [1, 67, 130, 16]
    hq, hk, d = 8, 2, 32
    table, pages, total = paged_pool(seqlens, page_size)
    k_cache = rand(total, page_size, hk, d, dtype=dtype, device=device)
    v_cache = rand(total, page_size, hk, d, dtype=dtype, device=device)
    q = rand(len(seqlens), hq, d, dtype=dtype, device=device)
    out = attention_decode(q=q, k_cache=k_cache, v_cache=v_cache, page_table=table.to(device),
                           seqlens_k=torch.tensor(seqlens, dtype=torch.int32, device=device), scale=0.3)
    assert out.shape == (4, hq, d) and out.dtype == dtype
    for b, n in enumerate(seqlens):
        expected = naive_attention(q[b : b + 1], k_cache, v_cache, pages[b], n, 0.3)[0]
        torch.testing.assert_close(out[b].cpu().double(), expected, **tol(dtype))


def test_attention_decode_row_without_keys_is_zero(device):
    # A padded row of a fixed-size decode batch has no keys; it must not poison the batch with NaN.
    table, pages, total = paged_pool([5, 1], 16)
    k_cache, v_cache = rand(total, 16, 1, 8, device=device), rand(total, 16, 1, 8, device=device)
    out = attention_decode(q=rand(2, 2, 8, device=device), k_cache=k_cache, v_cache=v_cache,
                           page_table=table.to(device), seqlens_k=torch.tensor([5, 0], dtype=torch.int32, device=device),
                           scale=0.3)
    assert torch.isfinite(out[0]).all() and torch.equal(out[1], torch.zeros_like(out[1]))


def test_attention_extend_long_prompt_spans_several_query_blocks(device):
    # Longer than one block of queries, so causal masking crosses block boundaries.
    seqlens, hq, hk, d, page_size = [1300], 2, 1, 8, 64
    table, pages, total = paged_pool(seqlens, page_size)
    k_cache, v_cache = rand(total, page_size, hk, d, device=device), rand(total, page_size, hk, d, device=device)
    q = rand(1300, hq, d, device=device)
    out = attention_extend(q=q, k_cache=k_cache, v_cache=v_cache, page_table=table.to(device),
                           cu_seqlens_q=torch.tensor([0, 1300], dtype=torch.int32, device=device),
                           seqlens_k=torch.tensor(seqlens, dtype=torch.int32, device=device), scale=0.35)
    rows = [0, 1, 1023, 1024, 1025, 1299]
    ks = torch.cat([k_cache[p] for p in pages[0]]).double().cpu()
    vs = torch.cat([v_cache[p] for p in pages[0]]).double().cpu()
    for i in rows:
        for h in range(hq):
            expected = softmax64(ks[: i + 1, 0] @ q[i, h].double().cpu() * 0.35) @ vs[: i + 1, 0]
            torch.testing.assert_close(out[i, h].cpu().double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kv_cache_write_stores_each_token_at_its_slot_and_skips_minus_one(device, dtype):
    pages, page_size, hk, d, dv = 5, 4, 2, 8, 6
    k_cache = rand(pages, page_size, hk, d, dtype=dtype, device=device)
    v_cache = rand(pages, page_size, hk, dv, dtype=dtype, device=device)
    k, v = rand(6, hk, d, dtype=dtype, device=device), rand(6, hk, dv, dtype=dtype, device=device)
    slots = [17, 0, -1, 3, 19, -1]
    k_before, v_before = k_cache.clone(), v_cache.clone()
    kv_cache_write(k=k, v=v, k_cache=k_cache, v_cache=v_cache,
                   slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device))
    k_expected, v_expected = k_before.clone(), v_before.clone()
    for t, slot in enumerate(slots):
        if slot >= 0:
            k_expected[slot // page_size, slot % page_size] = k[t]
            v_expected[slot // page_size, slot % page_size] = v[t]
    assert torch.equal(k_cache, k_expected) and torch.equal(v_cache, v_expected)
