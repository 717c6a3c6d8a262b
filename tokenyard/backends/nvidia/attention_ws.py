"""Warp-specialised attention_extend for Hopper, written in Gluon (Triton's explicit-layout
language): one TMA producer warp and two consumer warpgroups a CTA.

Owns the Gluon kernel and its launcher; the op's semantics, the cache layout and the program order
are attention.py's (read its module docstring). Why a second kernel: the Triton kernel runs its
8 warps in lockstep, so the tensor cores idle while both warpgroups compute the softmax, and Triton
3.6 produces no warp specialisation for it on sm_90 (bench/RESULTS.md). Here the 128 query rows of
a tile are split between two consumer warpgroups that run independently (one's softmax overlaps the
other's QKᵀ and PV products, as in FlashAttention-3), and a one-warp producer streams the K and V
tiles of every page through a ring of shared-memory stages by TMA, so neither consumer issues a
load. Each K/V stage has its own "ready" barriers (K and V separately, so QKᵀ starts before V has
landed) and one "empty" barrier both consumers arrive at once their PV product has read it.

Keys past the sequence's end inside its last tile are whatever the page holds (NaN in a poisoned
pool): the producer zeroes those V rows in shared memory before it signals the tile (p = 0 there
would not cancel a NaN), and the consumers mask the scores of those K rows.

H100, bench/gpu/sweep_attention.py, FA3 in the same run (2026-11-23 05:05 UTC), this kernel against
FA3 / the Triton kernel: causal T=8K 32/8x128 996 µs (FA3 933, Triton 1331), T=32K 15.4 ms (14.8,
19.3); 16/2x256 T=8K 936 µs (841, 1091), T=32K 14.1 ms (13.0, 16.9); 800 queries over 32K cached
16/2x256 798 µs (778, 899), 32/8x128 910 µs (867, 1102). Measured and not kept: 3 K/V stages at
d=128 (1050 µs at T=8K), head-group-major program order (1056), and FlashAttention-3's
intra-warpgroup overlap (QKᵀ of tile j and P·V of tile j−1 issued back to back, the softmax between
the two waits: 1328 µs) — ptxas hoisted the second wgmma wait above the softmax (the PTX order was
right; in the SASS both waits sit together), so nothing overlapped and only the extra live registers
remained. Nor FA3's ping-pong (05:43 UTC): the two consumers taking turns to issue their products
through a pair of mbarriers ran 1047 µs against 997 at T=8K 32/8x128 and the same elsewhere — the
two independent warpgroups already interleave without being told to.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from ._gluon import (
    GL_DTYPES,
    TensorDescriptor,
    fence_async_shared,
    mbarrier,
    mma_layout,
    shared_layout,
    tma_load,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from .attention import LOG2E, _sm_count, extend_grid, merge_split_partials
from .gdn import sm_major

WG_ROWS = gl.constexpr(64)  # query rows a consumer warpgroup owns (the wgmma M of one warpgroup)


@gluon.constexpr_function
def _rows_layout(cols, warps):
    """A blocked layout for [rows, cols] tiles: 8 contiguous elements (16 bytes) a thread."""
    cols, warps = gl._unwrap_if_constexpr(cols), gl._unwrap_if_constexpr(warps)
    tpc = min(32, cols // 8)
    return gl.BlockedLayout([1, 8], [32 // tpc, tpc], [warps, 1], [1, 0])


@gluon.jit
def _tile_rows(r, mb, h0, q_len, valid, BQ: gl.constexpr, HP: gl.constexpr):
    """Rows r of a packed tile: (query index within the sequence, query head, row holds a query)."""
    qi = mb * BQ + r // HP
    return qi, h0 + r % HP, valid & (qi < q_len) & (r < BQ * HP)


@gluon.jit
def _ws_consumer(q_ptr, o_ptr, mo_ptr, ml_ptr, q_smem, k_smem, v_smem, k_ready, v_ready, kv_empty,
                 q_start, q_len, kv_len, mb, h0, split, lo, hi, full_end, valid, qk_scale, HQ,
                 stride_qt, stride_qh, stride_ot, stride_oh,
                 D: gl.constexpr, DV: gl.constexpr, BQ: gl.constexpr, HP: gl.constexpr, BN: gl.constexpr,
                 NS: gl.constexpr, STAGES: gl.constexpr, WG: gl.constexpr):
    s_layout: gl.constexpr = mma_layout(BN)
    o_layout: gl.constexpr = mma_layout(DV)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    q_layout: gl.constexpr = _rows_layout(D, 4)

    # this warpgroup's 64 query rows into its own shared-memory tile (the QKᵀ A operand)
    rq = WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, q_layout))
    qi, heads, m_mask = _tile_rows(rq, mb, h0, q_len, valid, BQ, HP)
    dq = gl.arange(0, D, layout=gl.SliceLayout(0, q_layout))
    q_off = ((q_start + qi).to(gl.int64) * stride_qt + heads * stride_qh)[:, None] + dq[None, :]
    q = gl.load(q_ptr + q_off, mask=m_mask[:, None], other=0.0)
    q_tile = q_smem.index(WG)
    q_tile.store(q)
    fence_async_shared()

    rs = WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, s_layout))
    qpos = kv_len - q_len + mb * BQ + rs // HP
    m_i = gl.full([WG_ROWS], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([WG_ROWS], gl.float32, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([WG_ROWS, DV], gl.float32, layout=o_layout)
    it = 0
    for start in range(lo, gl.minimum(full_end, hi), BN):
        acc, m_i, l_i = _ws_block(acc, m_i, l_i, q_tile, k_smem, v_smem, k_ready, v_ready, kv_empty, it, start,
                                  qpos, kv_len, qk_scale, BN, STAGES, s_layout, p_layout, o_layout, False)
        it += 1
    for start in range(gl.maximum(full_end, lo), hi, BN):
        acc, m_i, l_i = _ws_block(acc, m_i, l_i, q_tile, k_smem, v_smem, k_ready, v_ready, kv_empty, it, start,
                                  qpos, kv_len, qk_scale, BN, STAGES, s_layout, p_layout, o_layout, True)
        it += 1

    ro = WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, o_layout))
    qi, heads, m_mask = _tile_rows(ro, mb, h0, q_len, valid, BQ, HP)
    dv = gl.arange(0, DV, layout=gl.SliceLayout(0, o_layout))
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    out = acc / gl.where(l_o > 0, l_o, 1.0)[:, None]
    rows = (q_start + qi).to(gl.int64)
    if NS > 1:
        m_o = gl.convert_layout(m_i, gl.SliceLayout(1, o_layout))
        part = (rows * HQ + heads) * NS + split
        lse = gl.where(l_o > 0, m_o + gl.log2(gl.where(l_o > 0, l_o, 1.0)), float("-inf"))
        gl.store(ml_ptr + part, lse, mask=m_mask)
        gl.store(mo_ptr + part[:, None] * DV + dv[None, :], out.to(mo_ptr.dtype.element_ty), mask=m_mask[:, None])
    else:
        o_off = (rows * stride_ot + heads * stride_oh)[:, None] + dv[None, :]
        gl.store(o_ptr + o_off, out.to(o_ptr.dtype.element_ty), mask=m_mask[:, None])


@gluon.jit
def _ws_softmax(s, m_i, start, qpos, kv_len, qk_scale, BN: gl.constexpr, s_layout: gl.constexpr, MASK: gl.constexpr):
    """The online-softmax step on raw scores s in the exp2 domain, the scale folded into one FMA:
    (p, α, new row max); masked tiles keep a row that sees no key yet at p = 0."""
    if MASK:
        offs_n = start + gl.arange(0, BN, layout=gl.SliceLayout(0, s_layout))
        seen = (offs_n[None, :] <= qpos[:, None]) & (offs_n < kv_len)[None, :]
        s = gl.where(seen, s * qk_scale, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, 1))
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(s - m_use[:, None])
    else:
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        m_use = m_new
        p = gl.exp2(s * qk_scale - m_use[:, None])
    return p, gl.exp2(m_i - m_use), m_new


@gluon.jit
def _ws_block(acc, m_i, l_i, q_tile, k_smem, v_smem, k_ready, v_ready, kv_empty, it, start, qpos, kv_len, qk_scale,
              BN: gl.constexpr, STAGES: gl.constexpr, s_layout: gl.constexpr, p_layout: gl.constexpr,
              o_layout: gl.constexpr, MASK: gl.constexpr):
    """One key tile of one consumer: S = Q·Kᵀ, the softmax step, acc = acc·α + P·V; then the stage
    is released to the producer."""
    st = it % STAGES
    ph = (it // STAGES) & 1
    mbarrier.wait(k_ready.index(st), ph)
    s = warpgroup_mma(q_tile, k_smem.index(st).permute((1, 0)), gl.zeros([WG_ROWS, BN], gl.float32, s_layout),
                      use_acc=False, is_async=True)
    s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
    p, alpha, m_new = _ws_softmax(s, m_i, start, qpos, kv_len, qk_scale, BN, s_layout, MASK)
    l_i = l_i * alpha + gl.sum(p, 1)
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    p_op = gl.convert_layout(p.to(v_smem.dtype), p_layout)
    mbarrier.wait(v_ready.index(st), ph)
    acc = warpgroup_mma(p_op, v_smem.index(st), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(kv_empty.index(st), count=1)
    return acc, m_new, l_i


@gluon.jit
def _ws_copy_tile(desc, smem, bar, pt_row, hk, start, kv_len, PAGE: gl.constexpr, DH: gl.constexpr,
                  BN: gl.constexpr, BOX: gl.constexpr):
    """The BN keys from start into smem as BN/BOX TMA boxes, one page-table entry each; a box past
    the sequence's end reads its last page (those rows are masked or zeroed)."""
    for b in gl.static_range(BN // BOX):
        s0 = start + b * BOX
        page = gl.load(pt_row + gl.minimum(s0, gl.maximum(kv_len - 1, 0)) // PAGE)
        tma_load(desc, [page * PAGE + s0 % PAGE, hk * DH], bar, smem.slice(b * BOX, BOX))


@gluon.jit
def _ws_producer(k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, kv_empty, tail_bar, pt_row, hk, lo, hi, kv_len,
                 PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, BN: gl.constexpr, BOX: gl.constexpr,
                 STAGES: gl.constexpr):
    z_layout: gl.constexpr = _rows_layout(64, 1)
    it = 0
    for start in range(lo, hi, BN):
        st = it % STAGES
        ph = (it // STAGES) & 1
        mbarrier.wait(kv_empty.index(st), ph ^ 1)  # a fresh barrier counts as phase 1 complete
        mbarrier.expect(k_ready.index(st), BN * D * k_desc.dtype.primitive_bitwidth // 8)
        _ws_copy_tile(k_desc, k_smem.index(st), k_ready.index(st), pt_row, hk, start, kv_len, PAGE, D, BN, BOX)
        v_tile = v_smem.index(st)
        vbytes: gl.constexpr = BN * DV * v_desc.dtype.primitive_bitwidth // 8
        if start + BN > kv_len:  # the sequence's last tile (once a CTA): zero V past the end, then signal
            mbarrier.expect(tail_bar, vbytes)
            _ws_copy_tile(v_desc, v_tile, tail_bar, pt_row, hk, start, kv_len, PAGE, DV, BN, BOX)
            mbarrier.wait(tail_bar, 0)
            for r0 in gl.static_range(0, BN, 8):  # [8, 64] pieces (one swizzle atom): 8 registers a lane
                key = start + r0 + gl.arange(0, 8, layout=gl.SliceLayout(1, z_layout))
                for c0 in gl.static_range(0, DV, 64):
                    piece = v_tile.slice(r0, 8).slice(c0, 64, dim=1)
                    piece.store(gl.where((key < kv_len)[:, None], piece.load(z_layout), 0.0))
            fence_async_shared()
            mbarrier.arrive(v_ready.index(st), count=1)
        else:
            mbarrier.expect(v_ready.index(st), vbytes)
            _ws_copy_tile(v_desc, v_tile, v_ready.index(st), pt_row, hk, start, kv_len, PAGE, DV, BN, BOX)
        it += 1


@gluon.jit
def _add(a, b):
    return a + b


@gluon.jit
def _find_block_gl(cu_ptr, B, pid, BLOCK: gl.constexpr, BLOCK_B: gl.constexpr):
    """gdn._find_block (which attention.py's kernel uses) in Gluon: flat block id -> (sequence, block
    within it, valid). Written again because a Gluon kernel cannot call a Triton function."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    i = gl.arange(0, BLOCK_B, layout=layout)
    starts = gl.load(cu_ptr + i, mask=i < B, other=0)
    ends = gl.load(cu_ptr + i + 1, mask=i < B, other=0)
    n = (ends - starts + BLOCK - 1) // BLOCK
    first = gl.associative_scan(n, 0, _add) - n
    hit = (pid >= first) & (pid < first + n)
    seq = gl.sum(gl.where(hit, i, 0), 0)
    blk = gl.sum(gl.where(hit, pid - first, 0), 0)
    valid = gl.sum(hit.to(gl.int32), 0) > 0
    return seq, blk, valid


@gluon.jit
def _attn_extend_ws_kernel(
    q_ptr, k_desc, v_desc, pt_ptr, cu_ptr, sk_ptr, o_ptr, mo_ptr, ml_ptr, qk_scale, B, HQ, GROUP,
    stride_qt, stride_qh, stride_pt, stride_ot, stride_oh,
    PAGE: gl.constexpr, D: gl.constexpr, DV: gl.constexpr, BQ: gl.constexpr, HP: gl.constexpr,
    BN: gl.constexpr, BOX: gl.constexpr, NS: gl.constexpr, STAGES: gl.constexpr, HEADS_INNER: gl.constexpr,
    BLOCK_B: gl.constexpr,
):
    # program -> (query block, packed heads, split) and the key range: attention.py's
    # _attn_extend_kernel's mapping, written again in Gluon (a Gluon kernel cannot call a Triton
    # function whose tensors carry no layout); extend_grid sizes both grids
    per_block = HQ // HP * NS
    blocks = gl.num_programs(0) // per_block
    if HEADS_INNER:  # every head's heaviest block first
        pid = blocks - 1 - gl.program_id(0) // per_block
        hs = gl.program_id(0) % per_block
    else:
        pid = blocks - 1 - gl.program_id(0) % blocks
        hs = gl.program_id(0) // blocks
    seq, mb, valid = _find_block_gl(cu_ptr, B, pid, BQ, BLOCK_B)
    split = hs % NS
    h0 = hs // NS * HP
    hk = h0 // GROUP
    q_start = gl.load(cu_ptr + seq)
    q_len = gl.load(cu_ptr + seq + 1) - q_start
    kv_len = gl.where(valid, gl.load(sk_ptr + seq), 0)
    first = kv_len - q_len + mb * BQ
    end = gl.maximum(gl.minimum(kv_len, first + BQ), 0)
    full_end = gl.maximum(gl.minimum((first + 1) // BN * BN, end), 0)
    lo = 0
    hi = end
    if NS > 1:
        per_split = gl.cdiv(gl.cdiv(end, NS), BN) * BN
        lo = gl.minimum(split * per_split, end)
        hi = gl.minimum(lo + per_split, end)
    pt_row = pt_ptr + seq.to(gl.int64) * stride_pt

    q_smem = gl.allocate_shared_memory(k_desc.dtype, [2, WG_ROWS, D],
                                       gl.NVMMASharedLayout.get_default_for([WG_ROWS, D], k_desc.dtype))
    k_smem = gl.allocate_shared_memory(k_desc.dtype, [STAGES, BN, D], k_desc.layout)
    v_smem = gl.allocate_shared_memory(v_desc.dtype, [STAGES, BN, DV], v_desc.layout)
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    tail_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=2)  # both consumer warpgroups release a stage
    mbarrier.init(tail_bar, count=1)

    gl.warp_specialize([
        (_ws_consumer, (q_ptr, o_ptr, mo_ptr, ml_ptr, q_smem, k_smem, v_smem, k_ready, v_ready, kv_empty, q_start,
                        q_len, kv_len, mb, h0, split, lo, hi, full_end, valid, qk_scale, HQ, stride_qt, stride_qh,
                        stride_ot, stride_oh, D, DV, BQ, HP, BN, NS, STAGES, 0)),
        (_ws_consumer, (q_ptr, o_ptr, mo_ptr, ml_ptr, q_smem, k_smem, v_smem, k_ready, v_ready, kv_empty, q_start,
                        q_len, kv_len, mb, h0, split, lo, hi, full_end, valid, qk_scale, HQ, stride_qt, stride_qh,
                        stride_ot, stride_oh, D, DV, BQ, HP, BN, NS, STAGES, 1)),
        (_ws_producer, (k_desc, v_desc, k_smem, v_smem, k_ready, v_ready, kv_empty, tail_bar, pt_row, hk, lo, hi,
                        kv_len, PAGE, D, DV, BN, BOX, STAGES)),
    ], [4, 1], [240, 24])



def extend_ws_config(d: int, dv: int) -> tuple[int, int]:
    """(BN, stages): the K/V ring must fit shared memory beside the two [64, D] query tiles
    (227 KB). d = 256: 64-key tiles in 2 stages (128 KB + 64 KB); d <= 128: 128-key tiles in 2
    stages (128 KB + 32 KB), which the H100 sweep preferred to 3 (bench/gpu/sweep_attention.py,
    2026-11-23 04:58 UTC, 32/8x128, FA3 in the same run: T=8K 980 µs against 1038, T=32K 15.2 ms
    against 15.9; FA3 938 µs / 14.7 ms)."""
    if max(d, dv) > 128:
        return 64, 2
    return 128, 2


def supports_ws(q, k_cache, v_cache) -> str | None:
    """Why this kernel cannot run a call (None when it can)."""
    D, DV = q.shape[-1], v_cache.shape[-1]
    page = k_cache.shape[1]
    bn, _ = extend_ws_config(D, DV)
    if q.dtype not in GL_DTYPES or k_cache.dtype != q.dtype or v_cache.dtype != q.dtype:
        return f"dtypes q {q.dtype}, caches {k_cache.dtype}/{v_cache.dtype}: the kernel takes bf16 or fp16, all alike"
    if D not in (64, 128, 256) or DV not in (64, 128, 256):
        return f"head dims D={D}, Dv={DV} not in (64, 128, 256)"
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        return "the caches must be contiguous (TMA over [pages x page, Hk x D])"
    if page % min(page, bn) or bn % min(page, bn) or min(page, bn) < 8:
        return f"page size {page} and the {bn}-key tile do not split into whole TMA boxes of >= 8 rows"
    if sm_major(q.device) != 9:
        return "the warp-specialised kernel targets sm_90 (wgmma + TMA)"
    return None


def attention_extend_ws(*, q, k_cache, v_cache, page_table, cu_seqlens_q, seqlens_k, scale, splits=None, pack=None,
                        heads_inner=True, stages=None):
    """attention_extend on the warp-specialised kernel; launch choices as attention.attention_extend's
    (pack and split only when one program per query block and head would not fill two waves)."""
    why = supports_ws(q, k_cache, v_cache)
    if why:
        raise ValueError(f"attention_extend_ws: {why}")
    T, HQ, D = q.shape
    HK, DV = k_cache.shape[2], v_cache.shape[3]
    page = k_cache.shape[1]
    B = cu_seqlens_q.shape[0] - 1
    bn, default_stages = extend_ws_config(D, DV)
    box = min(page, bn)
    o = torch.empty((T, HQ, DV), dtype=q.dtype, device=q.device)
    if T == 0 or B == 0:
        return o
    group = HQ // HK
    hp, bq, blocks, ns = extend_grid(T, B, HQ, group, 2 * WG_ROWS.value, bn, page_table.shape[1] * page,
                                     _sm_count(q.device), pack, splits)
    k_layout = shared_layout((box, D), q.dtype)
    v_layout = shared_layout((box, DV), q.dtype)
    k_desc = TensorDescriptor.from_tensor(k_cache.view(-1, HK * D), [box, D], k_layout)
    v_desc = TensorDescriptor.from_tensor(v_cache.view(-1, HK * DV), [box, DV], v_layout)
    mo = torch.empty((T * HQ * ns, DV) if ns > 1 else (1,), dtype=q.dtype, device=q.device)
    ml = torch.empty((T * HQ * ns,) if ns > 1 else (1,), dtype=torch.float32, device=q.device)
    _attn_extend_ws_kernel[(HQ // hp * ns * blocks,)](
        q, k_desc, v_desc, page_table, cu_seqlens_q, seqlens_k, o, mo, ml, scale * LOG2E, B, HQ, group,
        q.stride(0), q.stride(1), page_table.stride(0), o.stride(0), o.stride(1),
        PAGE=page, D=D, DV=DV, BQ=bq, HP=hp, BN=bn, BOX=box, NS=ns, STAGES=stages or default_stages,
        HEADS_INNER=heads_inner, BLOCK_B=triton.next_power_of_2(B + 1), num_warps=4, maxnreg=168,
    )
    if ns > 1:
        merge_split_partials(mo, ml, o, ns)
    return o
