"""Warp-specialised gdn_extend scan for Hopper, written in Gluon: the sequential half of the
chunked gated delta rule (gdn.py's launch 2) with its dependent chain alone in one warpgroup.

Owns this kernel and its launcher; the math, the chunk tensors it reads (W, U, P, γ and the q/k row
norms from gdn.prepare) and the state-slot semantics are gdn.py's. Per (sequence, v-head, V block)
one CTA of three partitions:
  - a producer warp streams each chunk's W, U, q, k and P tiles by TMA and its row vectors (γ, the
    q/k norms, the chunk's last γ) by plain loads into a ring of shared-memory stages, a chunk
    ahead, and computes from them the chain's factors (U's row scales, e^{γ_C});
  - the chain warpgroup carries the state block S[K, BV] in fp32 registers and does only what the
    next chunk depends on: U' = U − W·S, then S ← e^{γ_C} S + ((e^{γ_C−γ})⊙K)ᵀ·U' (no reduction or
    exp of its own; what does not depend on W·S is read while the tensor cores run it);
  - the output warpgroup computes P = QKᵀ⊙decay before it waits for the chain, then takes S (as
    the chain stored it, bf16) and U' from a double-buffered hand-off, computes
    O = scale·(e^γ⊙Q)·S + P·U' off the chain (freeing its stage before the last product), and
    stores it.
In gdn.py's Triton scan one warpgroup does all of it, so every chunk's step also waits on the
output products, the output store and the loads of the row vectors.

H100 (bench/gpu/sweep_gdn.py, FLA in the same run; the figures and the probe that shaped the
producer are in gdn.extend_config's docstring): T=32K 1547–1568 µs against the Triton scan's
1776–1829 (FLA 2386), 8x4096 1440–1454 against 1608–1617 (FLA 2430). The ncu source view of
2026-11-23 07:09 UTC (T=8K) had the chain waiting on its next stage 43% of its time: the output
warpgroup freed a stage only after its last product, and the producer stalled on the row vectors
it had just loaded. With the stage freed after its last read, P computed before the hand-off and
the row factors computed after the producer's wait, the scan alone went 194 → 181 µs at T=8K and
~770 → 741 at T=32K (graphed), and ncu puts it at 83% of L2 bandwidth (each of a head's V-block
CTAs reads the same q, k and W tiles; Gluon 3.6 has no TMA multicast to share them). A pair CTA
that read them once for two V halves (one chain warpgroup each, one output warpgroup computing P
once for both, 16 warps at 152 registers) was exact and slower (H100, graphed, 07:46 UTC: T=8K
440 against 364 µs, T=32K 1690 against 1406, 8x4096 1383 against 1363; not kept): halving the
L2 reads does not pay for an output warpgroup serving two chains. The default takes it from
gdn.GLUON_SCAN_MIN_TOKENS tokens a call: its launch costs ~40 µs more host time
(bench/gpu/gdn_graphed.py, 07:59 UTC: 234 against 197 µs a call at T=256; 453 against 383 at
06:50, before the launch path's attribute reads and allocations were cut).
"""

from __future__ import annotations

import torch
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

from .gdn import _box_ok, _tma_ok, sm_major

BT = gl.constexpr(64)  # chunk length (gdn.CHUNK)


@gluon.jit
def _ws_chain(state_ptr, rs, ws, hv, vb0, stride_s, n_chunks, w_s, u_s, k_s, vec_s, decay_s, sd_s, und_s, uk_s, ready,
              empty, hand_ready, hand_empty, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr,
              STAGES: gl.constexpr):
    s_layout: gl.constexpr = mma_layout(BV)  # [K, BV] and [BT, BV] accumulators
    rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    ks = gl.arange(0, K, layout=rows)
    vs = vb0 + gl.arange(0, BV, layout=gl.SliceLayout(0, s_layout))
    s_off = hv * (K * V) + ks[:, None] * V + vs[None, :]
    S = gl.load(state_ptr + rs * stride_s + s_off, mask=(s_off >= 0) & (rs >= 0), other=0.0)
    for c in range(n_chunks):
        st = c % STAGES
        hb = c % 2
        mbarrier.wait(ready.index(st), (c // STAGES) & 1)
        mbarrier.wait(hand_empty.index(hb), ((c // 2) & 1) ^ 1)  # the output warpgroup is done with c − 2
        sd = sd_s.index(hb)
        sd.store(S.to(sd_s.dtype))
        fence_async_shared()
        wsd = warpgroup_mma(w_s.index(st), sd, gl.zeros([BT, BV], gl.float32, s_layout), use_acc=False,
                            is_async=True)
        # what does not depend on W·S, while the tensor cores run it: U, the row scales of U' and
        # the decayed state (the producer computed both factors: no reduction or exp on the chain)
        u = u_s.index(st).load(s_layout).to(gl.float32)
        kscale = vec_s.index(4 * st + 3).load(rows)
        S = S * decay_s.index(st).load(rows)[:, None]
        wsd = warpgroup_mma_wait(num_outstanding=0, deps=(wsd, ))
        un = u - wsd
        und_s.index(hb).store(un.to(und_s.dtype))
        uk_s.store((un * kscale[:, None]).to(uk_s.dtype))
        fence_async_shared()
        mbarrier.arrive(hand_ready.index(hb), count=1)  # S and U' of chunk c are the output's now
        S = warpgroup_mma(k_s.index(st).permute((1, 0)), uk_s, S, is_async=True)
        S = warpgroup_mma_wait(num_outstanding=0, deps=(S, ))
        mbarrier.arrive(empty.index(st), count=1)
    gl.store(state_ptr + ws * stride_s + s_off, S, mask=(s_off >= 0) & (ws >= 0))


@gluon.jit
def _ws_output(o_ptr, bos, eos, hv, vb0, scale, stride_ot, stride_oh, n_chunks, q_s, k_s, p_s, vec_s, sd_s, und_s,
               ready, empty, hand_ready, hand_empty, BV: gl.constexpr, STAGES: gl.constexpr, PSCAN: gl.constexpr):
    o_layout: gl.constexpr = mma_layout(BV)
    qk_layout: gl.constexpr = mma_layout(BT)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    ri = gl.arange(0, BT, layout=gl.SliceLayout(1, qk_layout))
    rj = gl.arange(0, BT, layout=gl.SliceLayout(0, qk_layout))
    rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    r = gl.arange(0, BT, layout=rows)
    vs = vb0 + gl.arange(0, BV, layout=gl.SliceLayout(0, o_layout))
    for c in range(n_chunks):
        st = c % STAGES
        hb = c % 2
        mbarrier.wait(ready.index(st), (c // STAGES) & 1)
        if PSCAN:
            # P = QKᵀ ⊙ scale·e^{gq_i − gk_j} on and below the diagonal, from the raw q and k tiles
            # (gdn.py's PSCAN scan states the exponents: rows 1 and 2 hold gq = γ + ln qn, −inf past
            # eos, and gk = γ − ln kn): one exponent an element, so no e^{±γ} can overflow; P stays
            # in registers as the A operand of P·U'. It needs nothing from the chain, so it is
            # computed before the hand-off is waited for.
            qk = warpgroup_mma(q_s.index(st), k_s.index(st).permute((1, 0)), gl.zeros([BT, BT], gl.float32, qk_layout),
                               use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
            lq = vec_s.index(4 * st + 1).load(gl.SliceLayout(1, qk_layout)) * 1.4426950408889634 + gl.log2(scale)
            lk = vec_s.index(4 * st + 2).load(gl.SliceLayout(0, qk_layout)) * 1.4426950408889634
            decay = gl.exp2(gl.where(ri[:, None] >= rj[None, :], lq[:, None] - lk[None, :], float("-inf")))
            p = gl.convert_layout((qk * decay).to(und_s.dtype), p_layout)
            qs = gl.exp(vec_s.index(4 * st + 1).load(rows)) * scale
        else:
            qs = vec_s.index(4 * st + 1).load(rows) * gl.exp(vec_s.index(4 * st).load(rows)) * scale
        mbarrier.wait(hand_ready.index(hb), (c // 2) & 1)
        o = warpgroup_mma(q_s.index(st), sd_s.index(hb), gl.zeros([BT, BV], gl.float32, o_layout), use_acc=False,
                          is_async=True)
        o = warpgroup_mma_wait(num_outstanding=0, deps=(o, ))
        if PSCAN:
            # the stage's tiles and row vectors are all read: the producer may refill it while the
            # last product runs (held until the end, the stage came back a product later and the
            # chain waited on its next stage: ncu source view, 2026-11-23)
            mbarrier.arrive(empty.index(st), count=1)
            o = warpgroup_mma(p, und_s.index(hb), o * qs[:, None], is_async=True)
        else:
            o = warpgroup_mma(p_s.index(st), und_s.index(hb), o * qs[:, None], is_async=True)
        o = warpgroup_mma_wait(num_outstanding=0, deps=(o, ))
        mbarrier.arrive(hand_empty.index(hb), count=1)
        if not PSCAN:
            mbarrier.arrive(empty.index(st), count=1)
        t = bos + c * BT + r
        o_off = (t.to(gl.int64) * stride_ot + hv * stride_oh)[:, None] + vs[None, :]
        gl.store(o_ptr + o_off, o.to(o_ptr.dtype.element_ty), mask=(t < eos)[:, None])


@gluon.jit
def _ws_row_vectors(gc_ptr, qn_ptr, kn_ptr, bos, eos, c, hv, HV, r, rk, PSCAN: gl.constexpr):
    """Chunk c's row vectors as loaded: γ, the q norms and the k norms (0 past eos; PSCAN: the
    exponents gq, −inf past eos, and gk, +inf), and its last γ in each lane of r and of rk."""
    t0 = bos + c * BT
    t = t0 + r
    tm = t < eos
    hrow = t.to(gl.int64) * HV + hv
    last = (gl.minimum(t0 + BT, eos) - 1).to(gl.int64) * HV + hv
    q_past: gl.constexpr = float("-inf") if PSCAN else 0.0
    k_past: gl.constexpr = float("inf") if PSCAN else 0.0
    return (gl.load(gc_ptr + hrow, mask=tm, other=0.0), gl.load(qn_ptr + hrow, mask=tm, other=q_past),
            gl.load(kn_ptr + hrow, mask=tm, other=k_past), gl.load(gc_ptr + last + r * 0),
            gl.load(gc_ptr + last + rk * 0))


@gluon.jit
def _ws_store_row_vectors(vec_s, decay_s, st, gcv, qnv, knv, glv, glk, PSCAN: gl.constexpr):
    """A stage's row vectors (rows 4·st .. 4·st + 3): γ, q norms, k norms as loaded, and the row
    scales of U' in the state update (kn·e^{γ_C−γ}; PSCAN e^{γ_C−gk}; 0 past eos); and e^{γ_C} in
    each of the state's K rows. Computed here, after the stage's wait, so that the loads' latency
    passes while the producer waits (computed when loaded, it held the producer a load latency a
    chunk: bench/gpu ncu source view, 2026-11-23)."""
    vec_s.index(4 * st).store(gcv)
    vec_s.index(4 * st + 1).store(qnv)
    vec_s.index(4 * st + 2).store(knv)
    if PSCAN:
        vec_s.index(4 * st + 3).store(gl.exp(glv - knv))
    else:
        vec_s.index(4 * st + 3).store(knv * gl.exp(glv - gcv))
    decay_s.index(st).store(gl.exp(glk))


@gluon.jit
def _ws_producer(w_desc, u_desc, q_desc, k_desc, p_desc, gc_ptr, qn_ptr, kn_ptr, bos, eos, hv, hk, vb0, HV, n_chunks,
                 w_s, u_s, q_s, k_s, p_s, vec_s, decay_s, ready, empty, K: gl.constexpr, V: gl.constexpr,
                 STAGES: gl.constexpr, PSCAN: gl.constexpr):
    v_layout: gl.constexpr = gl.BlockedLayout([2], [32], [1], [0])
    r = gl.arange(0, BT, layout=v_layout)
    rk = gl.arange(0, K, layout=gl.BlockedLayout([K // 32], [32], [1], [0]))
    p_bytes: gl.constexpr = 0 if PSCAN else p_desc.block_type.nbytes
    nbytes: gl.constexpr = (w_desc.block_type.nbytes + u_desc.block_type.nbytes + q_desc.block_type.nbytes
                            + k_desc.block_type.nbytes + p_bytes)
    # the row vectors are strided plain loads ([T, Hv] rows, no TMA box): each chunk's are loaded
    # while the producer waits for the stage they go to, one chunk ahead (loaded when stored, they
    # held the producer for a load latency a chunk and the scan at T=32K took 1073 µs instead of 678)
    gcv, qnv, knv, glv, glk = _ws_row_vectors(gc_ptr, qn_ptr, kn_ptr, bos, eos, 0, hv, HV, r, rk, PSCAN)
    for c in range(n_chunks):
        st = c % STAGES
        mbarrier.wait(empty.index(st), ((c // STAGES) & 1) ^ 1)  # a fresh barrier counts as phase 1 complete
        _ws_store_row_vectors(vec_s, decay_s, st, gcv, qnv, knv, glv, glk, PSCAN)
        # the TMA boxes cover whole chunks over all T rows: rows past eos belong to the next
        # sequence (or read zero past T); they reach only rows of U' that kn = 0 cancels, rows of
        # P·U' above P's diagonal, and output rows the store masks
        t0 = bos + c * BT
        bar = ready.index(st)
        mbarrier.expect(bar, nbytes)
        tma_load(w_desc, [t0, hv * K], bar, w_s.index(st))
        tma_load(u_desc, [t0, hv * V + vb0], bar, u_s.index(st))
        tma_load(q_desc, [t0, hk * K], bar, q_s.index(st))
        tma_load(k_desc, [t0, hk * K], bar, k_s.index(st))
        if not PSCAN:
            tma_load(p_desc, [t0, hv * BT], bar, p_s.index(st))
        gcv, qnv, knv, glv, glk = _ws_row_vectors(gc_ptr, qn_ptr, kn_ptr, bos, eos, c + 1, hv, HV, r, rk, PSCAN)


@gluon.jit
def _gdn_scan_ws_kernel(
    w_desc, u_desc, q_desc, k_desc, p_desc, gc_ptr, qn_ptr, kn_ptr, state_ptr, cu_ptr, rs_ptr, ws_ptr, o_ptr, scale,
    HV, GROUP, stride_ot, stride_oh, stride_s,
    K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr, STAGES: gl.constexpr, PSCAN: gl.constexpr = False,
):
    b = gl.program_id(0)
    hv = gl.program_id(1)
    hk = hv // GROUP
    vb0 = gl.program_id(2) * BV
    bos = gl.load(cu_ptr + b)
    eos = gl.load(cu_ptr + b + 1)
    rs = gl.load(rs_ptr + b).to(gl.int64)
    ws = gl.load(ws_ptr + b).to(gl.int64)
    n_chunks = gl.cdiv(eos - bos, BT)

    dt: gl.constexpr = w_desc.dtype
    w_s = gl.allocate_shared_memory(dt, [STAGES, BT, K], w_desc.layout)
    u_s = gl.allocate_shared_memory(dt, [STAGES, BT, BV], u_desc.layout)
    q_s = gl.allocate_shared_memory(dt, [STAGES, BT, K], q_desc.layout)
    k_s = gl.allocate_shared_memory(dt, [STAGES, BT, K], k_desc.layout)
    p_stages: gl.constexpr = 1 if PSCAN else STAGES  # PSCAN: P is computed by the output warpgroup
    p_s = gl.allocate_shared_memory(dt, [p_stages, BT, BT], p_desc.layout)
    # row vectors of each stage (rows 4·stage .. 4·stage + 3, see _ws_row_vectors): γ, q norms, k
    # norms, U's row scales; and e^{γ_C} over the state's K rows
    vec_s = gl.allocate_shared_memory(gl.float32, [STAGES * 4, BT], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    decay_s = gl.allocate_shared_memory(gl.float32, [STAGES, K], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    sd_s = gl.allocate_shared_memory(dt, [2, K, BV], gl.NVMMASharedLayout.get_default_for([K, BV], dt))
    und_s = gl.allocate_shared_memory(dt, [2, BT, BV], gl.NVMMASharedLayout.get_default_for([BT, BV], dt))
    uk_s = gl.allocate_shared_memory(dt, [BT, BV], gl.NVMMASharedLayout.get_default_for([BT, BV], dt))
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    hand_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    hand_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # the chain and the output warpgroup release a stage
    for i in gl.static_range(2):
        mbarrier.init(hand_ready.index(i), count=1)
        mbarrier.init(hand_empty.index(i), count=1)

    gl.warp_specialize([
        (_ws_chain, (state_ptr, rs, ws, hv, vb0, stride_s, n_chunks, w_s, u_s, k_s, vec_s, decay_s, sd_s, und_s, uk_s,
                     ready, empty, hand_ready, hand_empty, K, V, BV, STAGES)),
        (_ws_output, (o_ptr, bos, eos, hv, vb0, scale, stride_ot, stride_oh, n_chunks, q_s, k_s, p_s, vec_s, sd_s,
                      und_s, ready, empty, hand_ready, hand_empty, BV, STAGES, PSCAN)),
        (_ws_producer, (w_desc, u_desc, q_desc, k_desc, p_desc, gc_ptr, qn_ptr, kn_ptr, bos, eos, hv, hk, vb0, HV,
                        n_chunks, w_s, u_s, q_s, k_s, p_s, vec_s, decay_s, ready, empty, K, V, STAGES, PSCAN)),
    ], [4, 1], [152, 40])



def supports_scan_ws(q, k, chunks, state, bv: int) -> str | None:
    """Why the warp-specialised scan cannot run a call with V blocks of bv (None when it can).
    chunks["p"] is None when the prepare left P to the scan ("pscan"): the output warpgroup
    computes it."""
    K, V = q.shape[2], chunks["u"].shape[2]
    tiles = [("q", q, K), ("k", k, K), ("w", chunks["w"], K), ("u", chunks["u"], bv)]
    if chunks["p"] is not None:
        tiles.append(("p", chunks["p"], BT.value))
    if q.dtype not in GL_DTYPES or any(x.dtype != q.dtype for _, x, _ in tiles):
        return "the warp-specialised scan takes bf16 or fp16 q, k, W, U, P alike"
    if K != 128 or V % bv or bv % 16:
        return f"head dims K={K}, V={V}, V block {bv}: the scan is built for K = 128 and V blocks a multiple of 16"
    if sm_major(q.device) != 9:
        return "the warp-specialised scan targets sm_90 (wgmma + TMA)"
    for name, x, cols in tiles:
        if not (_tma_ok(x, cols) if name in ("q", "k") else _box_ok(x, cols)):
            return f"{name} cannot be read as one TMA tensor with [64, {cols}] boxes (see gdn._tma_ok)"
    return None


_P_STAND_IN: dict = {}


def scan_ws(q, k, chunks, state, cu_seqlens, read_slots, write_slots, o, scale, bv: int, stages: int | None = None) -> None:
    """Launch 2 of gdn_extend on the warp-specialised kernel (gdn.scan's contract). stages None: 2.
    Three fit shared memory at BV 32 (193 KB with P computed here; 234 KB of the 227 at BV 64): they
    were worth 3% while the output warpgroup held its stage to the end (T=8K 392 against 403 µs
    graphed), nothing since it frees the stage after its last read (385 against 384; T=32K 1493
    against 1479: H100, out/p2 A/B of 2026-11-23 07:20 UTC)."""
    T, HK, K = q.shape
    HV, V = o.shape[1], o.shape[2]
    B = cu_seqlens.shape[0] - 1
    pscan = chunks["p"] is None
    stages = stages or 2

    def desc(x, rows, cols, box):
        return TensorDescriptor(x, [rows, cols], [x.stride(0), 1], box, shared_layout(tuple(box), q.dtype))

    # pscan: no P tensor; a [64, 64] stand-in keeps the signature (the kernel never loads it), one per
    # device and dtype rather than an allocation a call
    if pscan:
        key = (q.device, q.dtype)
        if key not in _P_STAND_IN:
            _P_STAND_IN[key] = torch.empty((64, 64), dtype=q.dtype, device=q.device)
        p = _P_STAND_IN[key]
    else:
        p = chunks["p"]
    descs = (desc(chunks["w"], T, HV * K, [64, K]), desc(chunks["u"], T, HV * V, [64, bv]),
             desc(q, T, HK * K, [64, K]), desc(k, T, HK * K, [64, K]),
             desc(p, p.shape[0], p.numel() // p.shape[0], [64, 64]))
    norms = (chunks["gq"], chunks["gk"]) if pscan else (chunks["qn"], chunks["kn"])
    _gdn_scan_ws_kernel[(B, HV, V // bv)](
        *descs, chunks["gc"], *norms, state, cu_seqlens, read_slots, write_slots, o, scale,
        HV, HV // HK, o.stride(0), o.stride(1), state.stride(0), K=K, V=V, BV=bv, STAGES=stages, PSCAN=pscan,
        num_warps=4, maxnreg=168,
    )
