"""Gated DeltaNet: the chunked gdn_extend against a token-by-token recurrence and against
transformers' torch_chunk_gated_delta_rule; state slots (split and resume, -1 reads and writes);
gdn_decode against gdn_extend on length-1 sequences; gdn_gating against its formula."""

import pytest
import torch
import torch.nn.functional as F

from tokenyard.backends.reference.gdn import gdn_decode, gdn_extend, gdn_gating

from .oracles import rand, tol

FP32 = tol(torch.float32)

DTYPES = [torch.float32, torch.bfloat16]


def recurrence(q, k, v, g, beta, state, scale, qk_l2norm):
    """One sequence, token by token, in float64. q, k [L, Hk, K], v [L, Hv, V], g, beta [L, Hv],
    state [Hv, K, V] -> (o [L, Hv, V], final state)."""
    q, k, v, g, beta, s = (t.double().cpu() for t in (q, k, v, g, beta, state))
    if qk_l2norm:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    hv, group = v.shape[1], v.shape[1] // k.shape[1]
    o = torch.empty(v.shape, dtype=torch.float64)
    for t in range(v.shape[0]):
        for j in range(hv):
            qj, kj = q[t, j // group] * scale, k[t, j // group]
            s[j] = torch.exp(g[t, j]) * s[j]
            s[j] = s[j] + torch.outer(kj, beta[t, j] * (v[t, j] - s[j].t() @ kj))
            o[t, j] = s[j].t() @ qj
    return o, s


def gdn_inputs(t, hk, hv, dk, dv, dtype, device):
    q, k = rand(t, hk, dk, dtype=dtype, device=device), rand(t, hk, dk, dtype=dtype, device=device)
    v = rand(t, hv, dv, dtype=dtype, device=device)
    g = -F.softplus(torch.randn(t, hv)).mul(0.3).to(device)  # log decays in (-inf, 0)
    beta = torch.rand(t, hv).to(device)
    return q, k, v, g, beta


def ints(values, device, dtype=torch.int32):
    return torch.tensor(values, dtype=dtype, device=device)


def tolerance(dtype):
    return dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("hk,hv", [(2, 2), (2, 4)])  # equal heads, and grouped value heads
@pytest.mark.parametrize("qk_l2norm", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_gdn_extend_matches_token_by_token_recurrence(device, hk, hv, qk_l2norm, dtype):
    # A varlen batch: one sequence over two chunks, a short one, one of exactly a chunk.
    lens = [150, 7, 64]
    dk, dv = 16, 8
    q, k, v, g, beta = gdn_inputs(sum(lens), hk, hv, dk, dv, dtype, device)
    if not qk_l2norm:
        q, k = q * 0.25, k * 0.25  # unnormalised keys must keep the delta rule contractive
    pool = rand(4, hv, dk, dv, device=device, scale=0.5)
    initial = pool.clone()
    cu = [0, 150, 157, 221]
    out = gdn_extend(q=q, k=k, v=v, g=g, beta=beta, state=pool, cu_seqlens=ints(cu, device),
                     read_slots=ints([2, -1, 0], device), write_slots=ints([1, 3, 0], device),
                     scale=dk**-0.5, qk_l2norm=qk_l2norm)
    assert out.shape == v.shape and out.dtype == dtype
    starts = [initial[2], torch.zeros_like(initial[0]), initial[0]]
    for b, slot in enumerate([1, 3, 0]):
        s = slice(cu[b], cu[b + 1])
        o, final = recurrence(q[s], k[s], v[s], g[s], beta[s], starts[b], dk**-0.5, qk_l2norm)
        torch.testing.assert_close(out[s].cpu().double(), o, **tolerance(dtype))
        torch.testing.assert_close(pool[slot].cpu().double(), final, **tolerance(dtype))
    assert torch.equal(pool[2], initial[2])  # read, never written


@pytest.mark.parametrize("hk,hv", [(2, 2), (1, 2)])
def test_gdn_extend_matches_transformers_torch_chunk_gated_delta_rule(device, hk, hv):
    qwen3_next = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    t, dk, dv = 100, 32, 16
    q, k, v, g, beta = gdn_inputs(t, hk, hv, dk, dv, torch.float32, device)
    pool = rand(1, hv, dk, dv, device=device, scale=0.5)
    initial = pool.clone()
    out = gdn_extend(q=q, k=k, v=v, g=g, beta=beta, state=pool, cu_seqlens=ints([0, t], device),
                     read_slots=ints([0], device), write_slots=ints([0], device), scale=dk**-0.5, qk_l2norm=True)
    # transformers: [B, T, H, K] layout; it always scales q by K^-0.5 and l2-normalises with
    # use_qk_l2norm_in_kernel, FLA's convention (x / sqrt(Σx² + 1e-6)).
    expected, final = qwen3_next.torch_chunk_gated_delta_rule(
        q[None], k[None], v[None], g[None], beta[None], initial_state=initial,
        output_final_state=True, use_qk_l2norm_in_kernel=True)
    torch.testing.assert_close(out, expected[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pool, final, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("split", [1, 37, 64, 129])
def test_gdn_extend_split_and_resumed_from_its_slot_equals_the_unsplit_run(device, split):
    t, hk, hv, dk, dv = 150, 2, 4, 16, 8
    q, k, v, g, beta = gdn_inputs(t, hk, hv, dk, dv, torch.float32, device)
    args = dict(scale=dk**-0.5, qk_l2norm=True)
    whole = torch.zeros(1, hv, dk, dv, device=device)
    out_whole = gdn_extend(q=q, k=k, v=v, g=g, beta=beta, state=whole, cu_seqlens=ints([0, t], device),
                           read_slots=ints([-1], device), write_slots=ints([0], device), **args)
    pool = rand(2, hv, dk, dv, device=device)  # slot 0 holds garbage until the first part writes it
    first = slice(0, split)
    second = slice(split, t)
    out_first = gdn_extend(q=q[first], k=k[first], v=v[first], g=g[first], beta=beta[first], state=pool,
                           cu_seqlens=ints([0, split], device), read_slots=ints([-1], device),
                           write_slots=ints([0], device), **args)
    out_second = gdn_extend(q=q[second], k=k[second], v=v[second], g=g[second], beta=beta[second], state=pool,
                            cu_seqlens=ints([0, t - split], device), read_slots=ints([0], device),
                            write_slots=ints([1], device), **args)
    torch.testing.assert_close(torch.cat((out_first, out_second)), out_whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool[1], whole[0], atol=1e-5, rtol=1e-5)


def test_gdn_extend_write_slot_minus_one_writes_nothing(device):
    t, hk, hv, dk, dv = 20, 2, 2, 8, 8
    q, k, v, g, beta = gdn_inputs(t, hk, hv, dk, dv, torch.float32, device)
    pool = rand(3, hv, dk, dv, device=device)
    before = pool.clone()
    gdn_extend(q=q, k=k, v=v, g=g, beta=beta, state=pool, cu_seqlens=ints([0, 12, 20], device),
               read_slots=ints([0, 1], device), write_slots=ints([-1, -1], device), scale=0.3, qk_l2norm=True)
    assert torch.equal(pool, before)


@pytest.mark.parametrize("hk,hv", [(2, 2), (2, 4)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gdn_decode_equals_gdn_extend_on_length_one_sequences(device, hk, hv, dtype):
    b, dk, dv = 5, 16, 8
    q, k, v, g, beta = gdn_inputs(b, hk, hv, dk, dv, dtype, device)
    pool = rand(6, hv, dk, dv, device=device)
    extend_pool = pool.clone()
    reads, writes = ints([3, -1, 0, 5, 2], device), ints([3, 1, -1, 4, 2], device)  # 3 and 2 in place
    args = dict(q=q, k=k, v=v, g=g, beta=beta, read_slots=reads, write_slots=writes, scale=dk**-0.5, qk_l2norm=True)
    out = gdn_decode(state=pool, **args)
    expected = gdn_extend(state=extend_pool, cu_seqlens=torch.arange(b + 1, dtype=torch.int32, device=device), **args)
    assert out.shape == (b, hv, dv) and out.dtype == dtype
    torch.testing.assert_close(out, expected, **tolerance(dtype))
    torch.testing.assert_close(pool, extend_pool, atol=1e-5, rtol=1e-5)


def test_gdn_decode_steps_reproduce_the_recurrence_in_place(device):
    t, hk, hv, dk, dv = 6, 1, 2, 8, 4
    q, k, v, g, beta = gdn_inputs(t, hk, hv, dk, dv, torch.float32, device)
    pool = rand(2, hv, dk, dv, device=device)
    o_expected, s_expected = recurrence(q, k, v, g, beta, pool[1], 0.5, True)
    for i in range(t):
        o = gdn_decode(q=q[i : i + 1], k=k[i : i + 1], v=v[i : i + 1], g=g[i : i + 1], beta=beta[i : i + 1],
                       state=pool, read_slots=ints([1], device), write_slots=ints([1], device), scale=0.5,
                       qk_l2norm=True)
        torch.testing.assert_close(o[0].cpu().double(), o_expected[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool[1].cpu().double(), s_expected, atol=1e-5, rtol=1e-5)


def test_gdn_gating_is_log_decay_and_sigmoid_beta(device):
    hv = 4
    a_log, dt_bias = rand(hv, device=device), rand(hv, device=device)
    a, b = rand(7, hv, dtype=torch.bfloat16, device=device), rand(7, hv, dtype=torch.bfloat16, device=device)
    g, beta = gdn_gating(A_log=a_log, a=a, dt_bias=dt_bias, b=b)
    assert g.dtype == torch.float32 and beta.dtype == torch.float32
    x = a.double() + dt_bias.double()
    torch.testing.assert_close(g.double(), -torch.exp(a_log.double()) * torch.log1p(torch.exp(x)), **FP32)
    torch.testing.assert_close(beta.double(), 1 / (1 + torch.exp(-b.double())), **FP32)
