"""Paged attention Triton kernels: kv_cache_write, attention_extend (causal, GQA, cached prefix)
and attention_decode (split-K, graph-capturable).

Owns these ops' NVIDIA kernels; the page pool belongs to the engine. Caches are
[pages, page_size, Hk, D]; key position p of sequence b lives at page page_table[b, p // page_size],
row p % page_size. Query i of sequence b (of q_len_b) sits at key position
seqlens_k[b] − q_len_b + i and sees keys 0..that position; q head h reads kv head h // (Hq/Hk).
Softmax runs in the exp2 domain (scores pre-multiplied by scale·log2 e) with fp32 accumulators.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .gdn import _find_block

LOG2E = 1.4426950408889634


# --- kv_cache_write ------------------------------------------------------------------------------


# BLOCK_T tokens a program; each token's [Hk, D] row of k (and of v) is one flat run of Hk·D values.


@triton.jit
def _copy_rows(src_ptr, dst_ptr, t, ok, page, row, H, D, stride_st, stride_sh, stride_dp, stride_ds, stride_dh,
               BLOCK_HD: tl.constexpr):
    col = tl.arange(0, BLOCK_HD)
    h = col // D
    d = col % D
    m = ok[:, None] & (col < H * D)[None, :]
    x = tl.load(src_ptr + t[:, None] * stride_st + (h * stride_sh + d)[None, :], mask=m)
    tl.store(dst_ptr + (page * stride_dp + row * stride_ds)[:, None] + (h * stride_dh + d)[None, :], x, mask=m)


@triton.jit
def _kv_cache_write_kernel(
    k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, T, HK, D, DV,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
    PAGE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_HD: tl.constexpr, BLOCK_HDV: tl.constexpr,
):
    t = (tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)).to(tl.int64)
    slot = tl.load(slot_ptr + t, mask=t < T, other=-1)
    ok = slot >= 0
    page = slot // PAGE
    row = slot % PAGE
    _copy_rows(k_ptr, kc_ptr, t, ok, page, row, HK, D, stride_kt, stride_kh, stride_kcp, stride_kcs, stride_kch,
               BLOCK_HD)
    _copy_rows(v_ptr, vc_ptr, t, ok, page, row, HK, DV, stride_vt, stride_vh, stride_vcp, stride_vcs, stride_vch,
               BLOCK_HDV)


def kv_cache_write(*, k, v, k_cache, v_cache, slot_mapping):
    T, HK, D = k.shape
    DV = v.shape[2]
    if k.stride(-1) != 1 or v.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("kv_cache_write: k, v and the caches must be contiguous in their last dim")
    block_hd = triton.next_power_of_2(HK * max(D, DV))
    block_t = max(1, min(16, 4096 // block_hd))
    if T > 0:
        _kv_cache_write_kernel[(triton.cdiv(T, block_t),)](
            k, v, k_cache, v_cache, slot_mapping, T, HK, D, DV,
            k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
            PAGE=k_cache.shape[1], BLOCK_T=block_t, BLOCK_HD=triton.next_power_of_2(HK * D),
            BLOCK_HDV=triton.next_power_of_2(HK * DV), num_warps=4,
        )
    return None


# --- attention_extend ----------------------------------------------------------------------------
# One program per (block of BM queries of one sequence, q head), heaviest blocks first. Key blocks
# that every query of the block sees run without a mask; the blocks on the diagonal with one.


@triton.jit
def _attn_block(
    acc, m_i, l_i, q, kc_ptr, vc_ptr, pt_row, hk, start_n, kv_len, qpos, qk_scale,
    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
    PAGE: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BN: tl.constexpr, MASK: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BN)
    d = tl.arange(0, D)
    dv = tl.arange(0, DV)
    kmask = offs_n < kv_len
    page = tl.load(pt_row + offs_n // PAGE, mask=kmask, other=0).to(tl.int64)
    row = (offs_n % PAGE).to(tl.int64)
    k = tl.load(kc_ptr + (page * stride_kcp + row * stride_kcs + hk * stride_kch)[:, None] + d[None, :],
                mask=kmask[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k)) * qk_scale
    if MASK:
        s = tl.where((offs_n[None, :] <= qpos[:, None]) & kmask[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(vc_ptr + (page * stride_vcp + row * stride_vcs + hk * stride_vch)[:, None] + dv[None, :],
                mask=kmask[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def _attn_extend_kernel(
    q_ptr, kc_ptr, vc_ptr, pt_ptr, cu_ptr, sk_ptr, o_ptr, qk_scale, B, GROUP,
    stride_qt, stride_qh, stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
    stride_pt, stride_ot, stride_oh,
    PAGE: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    pid = tl.num_programs(0) - 1 - tl.program_id(0)
    seq, mb, valid = _find_block(cu_ptr, B, pid, BM, BLOCK_B)
    h = tl.program_id(1)
    hk = h // GROUP
    q_start = tl.load(cu_ptr + seq)
    q_len = tl.load(cu_ptr + seq + 1) - q_start
    kv_len = tl.where(valid, tl.load(sk_ptr + seq), 0)
    offs_m = mb * BM + tl.arange(0, BM)
    m_mask = tl.where(valid, offs_m < q_len, False)
    d = tl.arange(0, D)
    dv = tl.arange(0, DV)
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + h * stride_qh + d[None, :], mask=m_mask[:, None], other=0.0)
    qpos = kv_len - q_len + offs_m
    first = kv_len - q_len + mb * BM  # position of the block's first query (>= 0 when valid)
    end = tl.maximum(tl.minimum(kv_len, first + BM), 0)  # one past the last key any query of the block sees
    full_end = tl.maximum(tl.minimum((first + 1) // BN * BN, end), 0)
    pt_row = pt_ptr + seq.to(tl.int64) * stride_pt
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, DV], dtype=tl.float32)
    for start_n in range(0, full_end, BN):
        acc, m_i, l_i = _attn_block(acc, m_i, l_i, q, kc_ptr, vc_ptr, pt_row, hk, start_n, kv_len, qpos, qk_scale,
                                    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
                                    PAGE, D, DV, BN, False)
    for start_n in range(full_end, end, BN):
        acc, m_i, l_i = _attn_block(acc, m_i, l_i, q, kc_ptr, vc_ptr, pt_row, hk, start_n, kv_len, qpos, qk_scale,
                                    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
                                    PAGE, D, DV, BN, True)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(o_ptr + rows[:, None] * stride_ot + h * stride_oh + dv[None, :], out.to(o_ptr.dtype.element_ty),
             mask=m_mask[:, None])


def extend_config(d: int, dv: int) -> tuple[int, int, int, int]:
    """(BM, BN, num_warps, num_stages) by head dim, from bench/gpu_ops.py --sweep on H100: the fp32
    accumulator [BM, DV] and the K/V stages must fit (BN=128 at d=256 needs 320 KB of smem)."""
    if max(d, dv) > 128:
        return 128, 64, 8, 3
    return 128, 128, 8, 2


def attention_extend(*, q, k_cache, v_cache, page_table, cu_seqlens_q, seqlens_k, scale, config=None):
    T, HQ, D = q.shape
    HK, DV = k_cache.shape[2], v_cache.shape[3]
    B = cu_seqlens_q.shape[0] - 1
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("attention_extend: q and the caches must be contiguous in their last dim")
    bm, bn, warps, stages = config or extend_config(D, DV)
    o = torch.empty((T, HQ, DV), dtype=q.dtype, device=q.device)
    if T == 0 or B == 0:
        return o
    _attn_extend_kernel[(triton.cdiv(T, bm) + B, HQ)](
        q, k_cache, v_cache, page_table, cu_seqlens_q, seqlens_k, o, scale * LOG2E, B, HQ // HK,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), page_table.stride(0), o.stride(0), o.stride(1),
        PAGE=k_cache.shape[1], D=D, DV=DV, BM=bm, BN=bn, BLOCK_B=triton.next_power_of_2(B + 1),
        num_warps=warps, num_stages=stages,
    )
    return o


# --- attention_decode ----------------------------------------------------------------------------
# Split-K ("flash decoding"): program (sequence, kv head, split) runs the query heads of its group
# (padded to 16 rows for the MMA) over its share of the keys, cut from the sequence's real length
# in-kernel; a second kernel merges the splits by their log-sum-exp. The number of splits depends
# only on shapes, so the launch is graph-capturable.


@triton.jit
def _attn_decode_split_kernel(
    q_ptr, kc_ptr, vc_ptr, pt_ptr, sk_ptr, mo_ptr, ml_ptr, qk_scale, HK, GROUP, NS,
    stride_qb, stride_qh, stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch, stride_pt,
    PAGE: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BG: tl.constexpr, BN: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // HK
    hk = pid % HK
    split = tl.program_id(1)
    kv_len = tl.load(sk_ptr + b)
    per_split = tl.cdiv(tl.cdiv(kv_len, NS), BN) * BN
    start = split * per_split
    end = tl.minimum(start + per_split, kv_len)
    gs = tl.arange(0, BG)
    gm = gs < GROUP
    d = tl.arange(0, D)
    dv = tl.arange(0, DV)
    heads = hk * GROUP + gs
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=gm[:, None], other=0.0)
    pt_row = pt_ptr + b.to(tl.int64) * stride_pt
    m_i = tl.full([BG], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, DV], dtype=tl.float32)
    qpos = tl.full([BG], 0, dtype=tl.int32) + kv_len
    for start_n in range(start, end, BN):
        acc, m_i, l_i = _attn_block(acc, m_i, l_i, q, kc_ptr, vc_ptr, pt_row, hk, start_n, end, qpos, qk_scale,
                                    stride_kcp, stride_kcs, stride_kch, stride_vcp, stride_vcs, stride_vch,
                                    PAGE, D, DV, BN, True)
    # partial results: normalised output and log2-sum-exp per (b, head, split)
    row = (b * HK * GROUP + heads).to(tl.int64) * NS + split
    lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))
    tl.store(ml_ptr + row, lse, mask=gm)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(mo_ptr + row[:, None] * DV + dv[None, :], out, mask=gm[:, None])


@triton.jit
def _attn_decode_merge_kernel(mo_ptr, ml_ptr, o_ptr, NS, DV, stride_ob, stride_oh, HQ,
                              BS: tl.constexpr, BLOCK_DV: tl.constexpr):
    """o = Σ_s 2^{lse_s − M} o_s / Σ_s 2^{lse_s − M}, over the splits in slices of BS (a
    [NS, DV] tile in registers would spill at 128K keys)."""
    pid = tl.program_id(0)
    b = pid // HQ
    h = pid % HQ
    dv = tl.program_id(1) * BLOCK_DV + tl.arange(0, BLOCK_DV)
    base = pid.to(tl.int64) * NS
    mv = tl.full([BS], float("-inf"), dtype=tl.float32)
    for s0 in range(0, NS, BS):
        s = s0 + tl.arange(0, BS)
        mv = tl.maximum(mv, tl.load(ml_ptr + base + s, mask=s < NS, other=float("-inf")))
    m = tl.max(mv, 0)
    m = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BS, BLOCK_DV], dtype=tl.float32)
    den = tl.zeros([BS], dtype=tl.float32)
    for s0 in range(0, NS, BS):
        s = s0 + tl.arange(0, BS)
        wts = tl.exp2(tl.load(ml_ptr + base + s, mask=s < NS, other=float("-inf")) - m)
        parts = tl.load(mo_ptr + (base + s)[:, None] * DV + dv[None, :], mask=(s < NS)[:, None] & (dv < DV)[None, :],
                        other=0.0)
        acc += wts[:, None] * parts
        den += wts
    out = tl.sum(acc, 0) / tl.maximum(tl.sum(den, 0), 1e-30)
    tl.store(o_ptr + b * stride_ob + h * stride_oh + dv, out.to(o_ptr.dtype.element_ty), mask=dv < DV)


def decode_splits(batch: int, kv_heads: int, max_keys: int, block_n: int, target_programs: int) -> int:
    """Splits per (sequence, kv head): enough programs for ~4 per SM, none shorter than 4 key blocks."""
    longest = max(1, triton.cdiv(max_keys, 4 * block_n))
    return max(1, min(longest, triton.cdiv(target_programs, batch * kv_heads), 512))


def decode_config(d: int, batch: int, kv_heads: int) -> tuple[int, int, int, int]:
    """(BN, num_warps, num_stages, target programs), from bench/gpu_ops.py --sweep on H100."""
    if d > 128:
        return 32, 4, 4, 264
    return 64, 4, 2, (528 if batch * kv_heads < 64 else 264)


def attention_decode(*, q, k_cache, v_cache, page_table, seqlens_k, scale, config=None):
    B, HQ, D = q.shape
    HK, DV = k_cache.shape[2], v_cache.shape[3]
    page = k_cache.shape[1]
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("attention_decode: q and the caches must be contiguous in their last dim")
    bn, warps, stages, target = config or decode_config(max(D, DV), B, HK)
    group = HQ // HK
    ns = decode_splits(B, HK, page_table.shape[1] * page, bn, target)
    o = torch.empty((B, HQ, DV), dtype=q.dtype, device=q.device)
    if B == 0:
        return o
    mo = torch.empty((B * HQ * ns, DV), dtype=torch.float32, device=q.device)
    ml = torch.empty((B * HQ * ns,), dtype=torch.float32, device=q.device)
    _attn_decode_split_kernel[(B * HK, ns)](
        q, k_cache, v_cache, page_table, seqlens_k, mo, ml, scale * LOG2E, HK, group, ns,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), page_table.stride(0),
        PAGE=page, D=D, DV=DV, BG=max(16, triton.next_power_of_2(group)), BN=bn, num_warps=warps, num_stages=stages,
    )
    block_dv = min(64, triton.next_power_of_2(DV))
    _attn_decode_merge_kernel[(B * HQ, triton.cdiv(DV, block_dv))](
        mo, ml, o, ns, DV, o.stride(0), o.stride(1), HQ, BS=16, BLOCK_DV=block_dv, num_warps=2,
    )
    return o
