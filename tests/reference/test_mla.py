"""MLA: the absorbed decode over the latent cache equals ordinary attention with the up-projected
keys and values; mla_extend against explicit causal attention with Dv ≠ Dqk; the cache write."""

import pytest
import torch

from tokenyard.backends.reference.mla import mla_cache_write, mla_decode, mla_extend

from .oracles import rand, softmax64, tol
from .test_attention import paged_pool

DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
def test_absorbed_mla_decode_equals_attention_with_up_projected_keys_and_values(device, dtype):
    seqlens, page_size = [9, 40, 17], 16
    h, r, p, d_nope, d_v = 4, 32, 8, 16, 12
    table, pages, total = paged_pool(seqlens, page_size)
    kv_cache = rand(total, page_size, r + p, dtype=dtype, device=device)
    w_uk = rand(h, r, d_nope, device=device, scale=r**-0.5)  # latent -> per-head key (no rope part)
    w_uv = rand(h, r, d_v, device=device, scale=r**-0.5)  # latent -> per-head value
    q_nope = rand(3, h, d_nope, device=device)
    q_rope = rand(3, h, p, dtype=dtype, device=device)
    scale = (d_nope + p) ** -0.5

    q_latent = torch.einsum("bhd,hrd->bhr", q_nope, w_uk).to(dtype)  # W_UK absorbed into the query
    o_latent = mla_decode(q_latent=q_latent, q_rope=q_rope, kv_cache=kv_cache, page_table=table.to(device),
                          seqlens_k=torch.tensor(seqlens, dtype=torch.int32, device=device), scale=scale)
    assert o_latent.shape == (3, h, r) and o_latent.dtype == dtype
    out = torch.einsum("bhr,hrv->bhv", o_latent.double(), w_uv.double())

    for b, n in enumerate(seqlens):
        rows = torch.cat([kv_cache[pg] for pg in pages[b]])[:n].double()
        latent, k_rope = rows[:, :r], rows[:, r:]
        for head in range(h):
            k = latent @ w_uk[head].double()  # [n, d_nope], un-absorbed keys
            v = latent @ w_uv[head].double()
            scores = (k @ q_nope[b, head].double() + k_rope @ q_rope[b, head].double()) * scale
            expected = softmax64(scores) @ v
            torch.testing.assert_close(out[b, head], expected, **tol(dtype))


def test_mla_cache_write_stores_latent_then_rope_key_at_each_slot(device):
    pages, page_size, r, p = 3, 4, 16, 4
    cache = rand(pages, page_size, r + p, device=device)
    latent, k_rope = rand(4, r, device=device), rand(4, p, device=device)
    slots = [5, -1, 0, 11]
    expected = cache.clone()
    for t, s in enumerate(slots):
        if s >= 0:
            expected[s // page_size, s % page_size] = torch.cat((latent[t], k_rope[t]))
    mla_cache_write(latent=latent, k_rope=k_rope, kv_cache=cache, slot_mapping=torch.tensor(slots, device=device))
    assert torch.equal(cache, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mla_extend_is_ragged_causal_attention_with_wider_keys_than_values(device, dtype):
    q_lens, k_lens = [5, 13, 1], [5, 20, 9]  # fresh prompt, chunk after a prefix, one token
    h, d_qk, d_v = 3, 24, 16
    q = rand(sum(q_lens), h, d_qk, dtype=dtype, device=device)
    k = rand(sum(k_lens), h, d_qk, dtype=dtype, device=device)
    v = rand(sum(k_lens), h, d_v, dtype=dtype, device=device)
    cu_q = torch.tensor([0, 5, 18, 19], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 5, 25, 34], dtype=torch.int32, device=device)
    out = mla_extend(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, scale=0.2)
    assert out.shape == (19, h, d_v) and out.dtype == dtype
    for b in range(3):
        qs, ks = int(cu_q[b]), int(cu_k[b])
        for i in range(q_lens[b]):
            visible = k_lens[b] - q_lens[b] + i + 1
            for head in range(h):
                keys = k[ks : ks + visible, head].double()
                expected = softmax64(keys @ q[qs + i, head].double() * 0.2) @ v[ks : ks + visible, head].double()
                torch.testing.assert_close(out[qs + i, head].double(), expected, **tol(dtype))
