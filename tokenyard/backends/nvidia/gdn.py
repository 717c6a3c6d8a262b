"""Gated DeltaNet Triton kernels: gating, the short causal conv (extend and decode) and the gated
delta rule (chunked extend, one-step decode), over the engine's state-slot pools.

Owns these ops' NVIDIA kernels; the pools' allocation belongs to the engine. Semantics are the
reference backend's (tokenyard/backends/reference/gdn.py states the math): read slot −1 starts from
zeros, write slot −1 writes nothing, every read of a slot precedes the write of it, so read == write
is in place. No kernel here reads a device value on the host: decode ops are graph-capturable and
extend ops launch without a sync (varlen chunk indices are found in-kernel from cu_seqlens).

gdn_extend keeps only the forms the H100 sweeps (bench/gpu/sweep_gdn.py, FLA in the same run,
2026-11-23) support: the default "nilt" prepare (_gdn_prepare_wide_kernel: TMA loads, the
inverse's diagonal blocks in registers and in tf32x3, v-head-major grid, 4 warps, 128-register cap) + the LEAN 2
scan run by the warp-specialised Gluon kernel of gdn_ws.py on sm_90 from GLUON_SCAN_MIN_TOKENS
tokens a call (below, its extra launch host time outweighs what it saves), with P computed by
that scan's output warpgroup (this module's Triton LEAN 2 scan elsewhere) — sweeps of 05:55 and
06:03 UTC, FLA chunk in the same run: T=32K 1568 µs against 2386 (without P in the scan), 8×4096
1454 against 2431 — their fallbacks ("blocks" prepare at 2 warps where TMA does not apply or tiles
are narrower than 32 columns, LEAN 1 scan; K > 128: LEAN 0), and old_extend_config ("blocks" +
LEAN 0: 690 / 2808 / 2548 µs) as the sweeps' A/B baseline; the default applies at K = V = 128
only (extend_config says why and lists what was removed).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 64


@triton.jit
def _find_block(cu_ptr, B, pid, BLOCK: tl.constexpr, BLOCK_B: tl.constexpr):
    """Map a flat block id over all sequences (each cut into ceil(len/BLOCK) blocks, sequence
    after sequence) to (sequence, block within it, valid). The grid is sized ceil(T/BLOCK) + B."""
    i = tl.arange(0, BLOCK_B)
    starts = tl.load(cu_ptr + i, mask=i < B, other=0)
    ends = tl.load(cu_ptr + i + 1, mask=i < B, other=0)
    n = (ends - starts + BLOCK - 1) // BLOCK
    first = tl.cumsum(n, 0) - n
    hit = (pid >= first) & (pid < first + n)
    seq = tl.sum(tl.where(hit, i, 0), 0)
    blk = tl.sum(tl.where(hit, pid - first, 0), 0)
    valid = tl.sum(hit.to(tl.int32), 0) > 0
    return seq, blk, valid


# --- gating --------------------------------------------------------------------------------------
# g = −exp(A_log)·softplus(a + dt_bias), β = sigmoid(b); softplus(x) = x above 20 (torch's threshold)


@triton.jit
def _gating_kernel(alog_ptr, a_ptr, dt_ptr, b_ptr, g_ptr, beta_ptr, N, HV, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    h = offs % HV
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    alog = tl.load(alog_ptr + h, mask=mask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + h, mask=mask, other=0.0).to(tl.float32)
    x = a + dt
    softplus = tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    tl.store(g_ptr + offs, -tl.exp(alog) * softplus, mask=mask)
    tl.store(beta_ptr + offs, tl.sigmoid(b), mask=mask)


def gdn_gating(*, A_log, a, dt_bias, b):
    a, b = a.contiguous(), b.contiguous()
    g = torch.empty(a.shape, dtype=torch.float32, device=a.device)
    beta = torch.empty_like(g)
    n = a.numel()
    if n:
        _gating_kernel[(triton.cdiv(n, 1024),)](A_log, a, dt_bias, b, g, beta, n, a.shape[-1], BLOCK=1024, num_warps=4)
    return g, beta


# --- causal conv1d -------------------------------------------------------------------------------
# y[t, c] = act(bias_c + Σ_{j<W} w[c, j]·x̃[t − W + 1 + j, c]), x̃ = [state ‖ x] per sequence
# (state = the last W−1 inputs, oldest first). Every (token, channel) tile is independent: a token
# near its sequence's start reads the window's head from the read slot. The final states are
# written by a second launch so no program overwrites a state another still reads.


@triton.jit
def _conv1d_extend_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr, cu_ptr, rs_ptr, T, C, B, stride_x, stride_y, stride_s,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    tm = t < T
    cm = c < C
    seq = tl.zeros([BLOCK_T], dtype=tl.int32)
    for b in range(1, B):
        seq += (t >= tl.load(cu_ptr + b)).to(tl.int32)
    start = tl.load(cu_ptr + seq, mask=tm, other=0)
    rslot = tl.load(rs_ptr + seq, mask=tm, other=-1).to(tl.int64)
    acc = tl.zeros([BLOCK_T, BLOCK_C], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cm, other=0.0).to(tl.float32)[None, :]
    m2 = tm[:, None] & cm[None, :]
    for j in tl.static_range(W):
        p = t - (W - 1) + j
        in_x = p >= start
        xv = tl.load(x_ptr + p.to(tl.int64)[:, None] * stride_x + c[None, :], mask=m2 & in_x[:, None], other=0.0)
        sidx = (W - 1) + p - start
        in_s = (~in_x) & (rslot >= 0)
        sv = tl.load(state_ptr + rslot[:, None] * stride_s + c[None, :] * (W - 1) + sidx[:, None],
                     mask=m2 & in_s[:, None], other=0.0)
        wj = tl.load(w_ptr + c * W + j, mask=cm, other=0.0).to(tl.float32)
        acc += (xv.to(tl.float32) + sv.to(tl.float32)) * wj[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + t.to(tl.int64)[:, None] * stride_y + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _conv1d_final_state_kernel(
    x_ptr, state_ptr, cu_ptr, rs_ptr, ws_ptr, C, stride_x, stride_s,
    W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    b = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    kk = tl.arange(0, BLOCK_W)
    start = tl.load(cu_ptr + b)
    end = tl.load(cu_ptr + b + 1)
    rs = tl.load(rs_ptr + b).to(tl.int64)
    ws = tl.load(ws_ptr + b).to(tl.int64)
    p = end - (W - 1) + kk  # positions of the new state's entries
    m = tl.where(ws >= 0, (c < C)[:, None] & (kk < W - 1)[None, :], False)
    in_x = p >= start
    xv = tl.load(x_ptr + p.to(tl.int64)[None, :] * stride_x + c[:, None], mask=m & in_x[None, :], other=0.0)
    sv = tl.load(state_ptr + rs * stride_s + c[:, None] * (W - 1) + ((W - 1) + p - start)[None, :],
                 mask=tl.where(rs >= 0, m & (~in_x)[None, :], False), other=0.0)
    new = xv.to(tl.float32) + sv.to(tl.float32)
    tl.store(state_ptr + ws * stride_s + c[:, None] * (W - 1) + kk[None, :], new.to(state_ptr.dtype.element_ty), mask=m)


def causal_conv1d_extend(*, x, w, bias, conv_state, cu_seqlens, read_slots, write_slots, activation):
    T, C = x.shape
    W = w.shape[1]
    B = cu_seqlens.shape[0] - 1
    wc = w.contiguous()
    if conv_state.stride(2) != 1 or conv_state.stride(1) != W - 1:
        raise ValueError("causal_conv1d_extend: conv_state must be contiguous per slot [S, C, W-1]")
    y = torch.empty_like(x)
    block_c = min(256, triton.next_power_of_2(C))
    if T > 0:
        _conv1d_extend_kernel[(triton.cdiv(T, 32), triton.cdiv(C, block_c))](
            x, wc, bias if bias is not None else wc, conv_state, y, cu_seqlens, read_slots, T, C, B,
            x.stride(0), y.stride(0), conv_state.stride(0),
            W=W, HAS_BIAS=bias is not None, SILU=activation == "silu", BLOCK_T=32, BLOCK_C=block_c, num_warps=8,
        )
    if B > 0:
        _conv1d_final_state_kernel[(B, triton.cdiv(C, block_c))](
            x, conv_state, cu_seqlens, read_slots, write_slots, C, x.stride(0), conv_state.stride(0),
            W=W, BLOCK_C=block_c, BLOCK_W=triton.next_power_of_2(max(W - 1, 1)), num_warps=4,
        )
    return y


@triton.jit
def _conv1d_decode_kernel(
    x_ptr, w_ptr, bias_ptr, state_ptr, y_ptr, rs_ptr, ws_ptr, C, stride_x, stride_y, stride_s,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):
    b = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    kk = tl.arange(0, BLOCK_W)
    cm = c < C
    rs = tl.load(rs_ptr + b).to(tl.int64)
    ws = tl.load(ws_ptr + b).to(tl.int64)
    x = tl.load(x_ptr + b * stride_x + c, mask=cm, other=0.0).to(tl.float32)
    # window = [state[0..W-2] ‖ x]; the new state is window[1..W-1]
    sm = tl.where(rs >= 0, cm[:, None] & (kk < W - 1)[None, :], False)
    srow = state_ptr + rs * stride_s + c[:, None] * (W - 1)
    s = tl.load(srow + kk[None, :], mask=sm, other=0.0).to(tl.float32)
    s_next = tl.load(srow + kk[None, :] + 1, mask=sm & (kk < W - 2)[None, :], other=0.0).to(tl.float32)
    wm = cm[:, None] & (kk < W - 1)[None, :]
    wt = tl.load(w_ptr + c[:, None] * W + kk[None, :], mask=wm, other=0.0).to(tl.float32)
    wl = tl.load(w_ptr + c * W + (W - 1), mask=cm, other=0.0).to(tl.float32)
    acc = tl.sum(s * wt, axis=1) + wl * x
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=cm, other=0.0).to(tl.float32)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(y_ptr + b * stride_y + c, acc.to(y_ptr.dtype.element_ty), mask=cm)
    new = tl.where((kk == W - 2)[None, :], x[:, None], s_next)
    tl.store(state_ptr + ws * stride_s + c[:, None] * (W - 1) + kk[None, :], new.to(state_ptr.dtype.element_ty),
             mask=tl.where(ws >= 0, wm, False))


def causal_conv1d_decode(*, x, w, bias, conv_state, read_slots, write_slots, activation):
    B, C = x.shape
    W = w.shape[1]
    wc = w.contiguous()
    if conv_state.stride(2) != 1 or conv_state.stride(1) != W - 1:
        raise ValueError("causal_conv1d_decode: conv_state must be contiguous per slot [S, C, W-1]")
    y = torch.empty_like(x)
    block_c = min(512, triton.next_power_of_2(C))
    if B > 0:
        _conv1d_decode_kernel[(B, triton.cdiv(C, block_c))](
            x, wc, bias if bias is not None else wc, conv_state, y, read_slots, write_slots, C,
            x.stride(0), y.stride(0), conv_state.stride(0),
            W=W, HAS_BIAS=bias is not None, SILU=activation == "silu", BLOCK_C=block_c,
            BLOCK_W=triton.next_power_of_2(max(W - 1, 2)), num_warps=4,
        )
    return y


# --- gdn_decode ----------------------------------------------------------------------------------
# One step per (sequence, v-head, V block), the state tile S[K, BV] in registers:
#   S ← e^g S;  u = β(v − Sᵀk);  S ← S + k uᵀ;  o = scale·Sᵀq.
# Memory-bound on the fp32 state (read once, written once); BV sets how many programs share a head.


@triton.jit
def _gdn_decode_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, state_ptr, rs_ptr, ws_ptr, o_ptr, scale,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_gb, stride_bb,
    stride_ob, stride_oh, stride_s, HV, GROUP,
    K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, L2NORM: tl.constexpr, POLICY: tl.constexpr = "",
):
    pid = tl.program_id(0)
    b = pid // HV
    hv = pid % HV
    hk = hv // GROUP
    vb = tl.program_id(1)
    ks = tl.arange(0, K)
    vs = vb * BV + tl.arange(0, BV)
    rs = tl.load(rs_ptr + b).to(tl.int64)
    ws = tl.load(ws_ptr + b).to(tl.int64)
    s_off = hv * (K * V) + ks[:, None] * V + vs[None, :]
    S = tl.load(state_ptr + rs * stride_s + s_off, mask=tl.where(rs >= 0, s_off >= 0, False), other=0.0,
                eviction_policy=POLICY)
    q = tl.load(q_ptr + b * stride_qb + hk * stride_qh + ks).to(tl.float32)
    k = tl.load(k_ptr + b * stride_kb + hk * stride_kh + ks).to(tl.float32)
    v = tl.load(v_ptr + b * stride_vb + hv * stride_vh + vs).to(tl.float32)
    g = tl.load(g_ptr + b * stride_gb + hv).to(tl.float32)
    beta = tl.load(beta_ptr + b * stride_bb + hv).to(tl.float32)
    if L2NORM:
        q = q * tl.rsqrt(tl.sum(q * q, 0) + 1e-6)
        k = k * tl.rsqrt(tl.sum(k * k, 0) + 1e-6)
    S = S * tl.exp(g)
    u = beta * (v - tl.sum(k[:, None] * S, 0))
    S = S + k[:, None] * u[None, :]
    o = tl.sum((q * scale)[:, None] * S, 0)
    tl.store(o_ptr + b * stride_ob + hv * stride_oh + vs, o.to(o_ptr.dtype.element_ty))
    tl.store(state_ptr + ws * stride_s + s_off, S, mask=tl.where(ws >= 0, s_off >= 0, False), eviction_policy=POLICY)


def decode_config(batch: int, heads: int, v: int) -> tuple:
    """(BV, num_warps[, state eviction policy]) for gdn_decode: enough programs to cover the SMs at
    small batch, wide 16-byte rows at large batch. Small batch: one warp with the state kept in L2
    (evict_last): B=1 3.0 µs against 3.1 at (16, 2) (bench/gpu/sweep_gdn.py on the H100, 2026-11-23 02:10 UTC)."""
    if batch * heads <= 64:
        return min(v, 16), 1, "evict_last"
    if batch * heads <= 512:
        return min(v, 32), 1
    return min(v, 64), 4


def gdn_decode(*, q, k, v, g, beta, state, read_slots, write_slots, scale, qk_l2norm, config=None):
    B, HK, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    if state.stride(3) != 1 or state.stride(2) != V or state.stride(1) != K * V:
        raise ValueError("gdn_decode: state must be contiguous per slot [S, Hv, K, V]")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("gdn_decode: q, k, v must be contiguous in their last dim")
    bv, warps, *rest = config or decode_config(B, HV, V)
    policy = rest[0] if rest else ""  # optional third entry: the state's eviction policy
    o = torch.empty((B, HV, V), dtype=v.dtype, device=v.device)
    if B > 0:
        _gdn_decode_kernel[(B * HV, V // bv)](
            q, k, v, g, beta, state, read_slots, write_slots, o, scale,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            g.stride(0), beta.stride(0), o.stride(0), o.stride(1), state.stride(0), HV, HV // HK,
            K=K, V=V, BV=bv, L2NORM=bool(qk_l2norm), POLICY=policy, num_warps=warps,
        )
    return o


# --- gdn_extend ----------------------------------------------------------------------------------
# Chunked gated delta rule (the WY/UT form, chunks of C = 64 tokens aligned to each sequence's
# start; the math is in the reference module). Two launches:
#  1. prepare, parallel over (chunk, v-head) (_gdn_prepare_kernel: the chunk cut into four 16-row
#     blocks as FLA's fused kkt + solve_tril kernel does; the default _gdn_prepare_wide_kernel: the
#     same math as [64, 64] products, below): γ = cumsum(g); A_tj = β_t e^{γ_t−γ_j} k_t·k_j (j < t);
#     T = (I + A)⁻¹ (forward substitution on the 16×16 diagonal blocks, in-warp reductions, then the
#     off-diagonal blocks by block products); W = T((βe^γ)⊙K), U = T(β⊙V); P = scale·(QKᵀ ⊙ D).
#     Writes W, U, P (activation dtype), γ and the q/k row norms (fp32), token-major.
#  2. scan, parallel over (sequence, v-head, V block), sequential over the sequence's chunks, the
#     state block S[K, BV] in fp32 registers:  U' = U − W·S;  O = scale(e^γ⊙Q)·S + P·U';
#     S ← e^{γ_C} S + ((e^{γ_C−γ})⊙K)ᵀ·U'.  Only this scan is sequential.
#     (Launch option "pscan": the LEAN 2 scan computes P from its q and k tiles, the prepare skips it
#     and writes the row norms as the exponents the scan takes them in.)


@triton.jit
def _load_rows(ptr, rows, mask, stride_t, cols):
    return tl.load(ptr + rows.to(tl.int64)[:, None] * stride_t + cols[None, :], mask=mask[:, None], other=0.0)


@triton.jit
def _sumsq(x):
    xf = x.to(tl.float32)
    return tl.sum(xf * xf, 1)


@triton.jit
def _inv_norm(sumsq, L2NORM: tl.constexpr):
    """1/sqrt(Σx² + eps), FLA's l2norm factor, or ones."""
    if L2NORM:
        return tl.rsqrt(sumsq + 1e-6)
    else:
        return sumsq * 0.0 + 1.0


@triton.jit
def _outer(a, b):
    return a[:, None] * b[None, :]


@triton.jit
def _load_block(ptr, rows, mask, stride_t, cols, rowscale, dt):
    x = _load_rows(ptr, rows, mask, stride_t, cols)
    return (x.to(tl.float32) * rowscale[:, None]).to(dt)


@triton.jit
def _decay_block(x, ci, cj, bi, DIAG: tl.constexpr, STRICT: tl.constexpr):
    """x ⊙ e^{γ_i−γ_j} · b_i, zero above the diagonal (and on it when STRICT) of a diagonal block."""
    BC: tl.constexpr = x.shape[0]
    o = tl.arange(0, BC)
    if DIAG:
        if STRICT:
            keep = o[:, None] > o[None, :]
        else:
            keep = o[:, None] >= o[None, :]
        d = tl.exp(tl.where(keep, ci[:, None] - cj[None, :], float("-inf")))
    else:
        d = tl.exp(ci[:, None] - cj[None, :])
    return x * d * bi[:, None]


@triton.jit
def _unit_lower_inverse(a, PREC: tl.constexpr):
    """(I + a)⁻¹ of a strictly lower-triangular 16×16 block. With N = −a nilpotent (N¹⁶ = 0),
    (I − N)⁻¹ = Σ_{k<16} Nᵏ = (I + N)(I + N²)(I + N⁴)(I + N⁸): six small products in exact fp32
    instead of a 15-step forward substitution, whose row extractions cost a layout round trip each.
    Also on a batch [NB, 16, 16] of such blocks (one batched dot per product). PREC, the products'
    input_precision: "ieee" (fp32 FMA: operands broadcast through shared memory, ~770 FFMA and ~290
    LDS a thread for the [4, 16, 16] batch at 4 warps) or "tf32x3" (three tf32 mma.sync a product,
    fp32-level error; the "nilt" prepare's: H100, out/p2 A/B of 2026-11-23 07:20 UTC, prepare alone
    graphed T=8K 187 against 204 µs, T=32K 694 against 758, 8x4096 701 against 781, output error
    against the fp32 reference the same, 5.5e-3 in bf16)."""
    BC: tl.constexpr = a.shape[-1]
    o = tl.arange(0, BC)
    eye = (o[:, None] == o[None, :]).to(tl.float32)
    if len(a.shape) == 3:
        eye = eye[None, :, :]
    n1 = -a
    n2 = tl.dot(n1, n1, input_precision=PREC)
    n4 = tl.dot(n2, n2, input_precision=PREC)
    n8 = tl.dot(n4, n4, input_precision=PREC)
    t = tl.dot(eye + n1, eye + n2, input_precision=PREC)
    t = tl.dot(t, eye + n4, input_precision=PREC)
    return tl.dot(t, eye + n8, input_precision=PREC)


@triton.jit
def _gdn_prepare_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, cu_ptr, w_ptr, u_ptr, gc_ptr, p_ptr, qn_ptr, kn_ptr, scale, B, HV, GROUP,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_gt, stride_bt,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BLOCK_B: tl.constexpr,
    L2NORM: tl.constexpr,
):
    BC: tl.constexpr = BT // 4
    seq, blk, valid = _find_block(cu_ptr, B, tl.program_id(0), BT, BLOCK_B)
    hv = tl.program_id(1)
    hk = hv // GROUP
    bos = tl.load(cu_ptr + seq)
    eos = tl.load(cu_ptr + seq + 1)
    o = tl.arange(0, BC)
    r0 = bos + blk * BT + o
    r1 = r0 + BC
    r2 = r1 + BC
    r3 = r2 + BC
    m0 = tl.where(valid, r0 < eos, False)
    m1 = tl.where(valid, r1 < eos, False)
    m2 = tl.where(valid, r2 < eos, False)
    m3 = tl.where(valid, r3 < eos, False)
    qb = q_ptr + hk * stride_qh
    kb = k_ptr + hk * stride_kh
    vb = v_ptr + hv * stride_vh
    dt = w_ptr.dtype.element_ty
    # the ten lower blocks of KKᵀ and QKᵀ, accumulated over K in BK-wide slices of the raw rows
    # (with the row sums of squares: normalising a row scales its products, applied after)
    z = tl.zeros([BC, BC], dtype=tl.float32)
    a00, a10, a11, a20, a21, a22, a30, a31, a32, a33 = z, z, z, z, z, z, z, z, z, z
    p00, p10, p11, p20, p21, p22, p30, p31, p32, p33 = z, z, z, z, z, z, z, z, z, z
    zr = tl.zeros([BC], dtype=tl.float32)
    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3 = zr, zr, zr, zr, zr, zr, zr, zr
    for kc in range(0, K, BK):
        cols = kc + tl.arange(0, BK)
        k0 = _load_rows(kb, r0, m0, stride_kt, cols)
        k1 = _load_rows(kb, r1, m1, stride_kt, cols)
        k2 = _load_rows(kb, r2, m2, stride_kt, cols)
        k3 = _load_rows(kb, r3, m3, stride_kt, cols)
        t0, t1, t2, t3 = tl.trans(k0), tl.trans(k1), tl.trans(k2), tl.trans(k3)
        a00 = tl.dot(k0, t0, a00)
        a10 = tl.dot(k1, t0, a10)
        a11 = tl.dot(k1, t1, a11)
        a20 = tl.dot(k2, t0, a20)
        a21 = tl.dot(k2, t1, a21)
        a22 = tl.dot(k2, t2, a22)
        a30 = tl.dot(k3, t0, a30)
        a31 = tl.dot(k3, t1, a31)
        a32 = tl.dot(k3, t2, a32)
        a33 = tl.dot(k3, t3, a33)
        q0 = _load_rows(qb, r0, m0, stride_qt, cols)
        q1 = _load_rows(qb, r1, m1, stride_qt, cols)
        q2 = _load_rows(qb, r2, m2, stride_qt, cols)
        q3 = _load_rows(qb, r3, m3, stride_qt, cols)
        p00 = tl.dot(q0, t0, p00)
        p10 = tl.dot(q1, t0, p10)
        p11 = tl.dot(q1, t1, p11)
        p20 = tl.dot(q2, t0, p20)
        p21 = tl.dot(q2, t1, p21)
        p22 = tl.dot(q2, t2, p22)
        p30 = tl.dot(q3, t0, p30)
        p31 = tl.dot(q3, t1, p31)
        p32 = tl.dot(q3, t2, p32)
        p33 = tl.dot(q3, t3, p33)
        if L2NORM:
            sk0 += _sumsq(k0)
            sk1 += _sumsq(k1)
            sk2 += _sumsq(k2)
            sk3 += _sumsq(k3)
            sq0 += _sumsq(q0)
            sq1 += _sumsq(q1)
            sq2 += _sumsq(q2)
            sq3 += _sumsq(q3)
    nk0, nk1, nk2, nk3 = _inv_norm(sk0, L2NORM), _inv_norm(sk1, L2NORM), _inv_norm(sk2, L2NORM), _inv_norm(sk3, L2NORM)
    nq0, nq1, nq2, nq3 = _inv_norm(sq0, L2NORM), _inv_norm(sq1, L2NORM), _inv_norm(sq2, L2NORM), _inv_norm(sq3, L2NORM)
    a00, a10, a11 = a00 * _outer(nk0, nk0), a10 * _outer(nk1, nk0), a11 * _outer(nk1, nk1)
    a20, a21, a22 = a20 * _outer(nk2, nk0), a21 * _outer(nk2, nk1), a22 * _outer(nk2, nk2)
    a30, a31, a32, a33 = a30 * _outer(nk3, nk0), a31 * _outer(nk3, nk1), a32 * _outer(nk3, nk2), a33 * _outer(nk3, nk3)
    p00, p10, p11 = p00 * _outer(nq0, nk0), p10 * _outer(nq1, nk0), p11 * _outer(nq1, nk1)
    p20, p21, p22 = p20 * _outer(nq2, nk0), p21 * _outer(nq2, nk1), p22 * _outer(nq2, nk2)
    p30, p31, p32, p33 = p30 * _outer(nq3, nk0), p31 * _outer(nq3, nk1), p32 * _outer(nq3, nk2), p33 * _outer(nq3, nk3)

    gb = g_ptr + hv
    bb = beta_ptr + hv
    g0 = tl.load(gb + r0.to(tl.int64) * stride_gt, mask=m0, other=0.0).to(tl.float32)
    g1 = tl.load(gb + r1.to(tl.int64) * stride_gt, mask=m1, other=0.0).to(tl.float32)
    g2 = tl.load(gb + r2.to(tl.int64) * stride_gt, mask=m2, other=0.0).to(tl.float32)
    g3 = tl.load(gb + r3.to(tl.int64) * stride_gt, mask=m3, other=0.0).to(tl.float32)
    b0 = tl.load(bb + r0.to(tl.int64) * stride_bt, mask=m0, other=0.0).to(tl.float32)
    b1 = tl.load(bb + r1.to(tl.int64) * stride_bt, mask=m1, other=0.0).to(tl.float32)
    b2 = tl.load(bb + r2.to(tl.int64) * stride_bt, mask=m2, other=0.0).to(tl.float32)
    b3 = tl.load(bb + r3.to(tl.int64) * stride_bt, mask=m3, other=0.0).to(tl.float32)
    c0 = tl.cumsum(g0, 0)
    c1 = tl.cumsum(g1, 0) + tl.sum(g0, 0)
    c2 = tl.cumsum(g2, 0) + tl.sum(g0, 0) + tl.sum(g1, 0)
    c3 = tl.cumsum(g3, 0) + tl.sum(g0, 0) + tl.sum(g1, 0) + tl.sum(g2, 0)

    # A (strictly lower, scaled by β_t e^{γ_t−γ_j}) and its inverse T, block by block
    a00 = _decay_block(a00, c0, c0, b0, True, True)
    a11 = _decay_block(a11, c1, c1, b1, True, True)
    a22 = _decay_block(a22, c2, c2, b2, True, True)
    a33 = _decay_block(a33, c3, c3, b3, True, True)
    a10 = _decay_block(a10, c1, c0, b1, False, False)
    a20 = _decay_block(a20, c2, c0, b2, False, False)
    a21 = _decay_block(a21, c2, c1, b2, False, False)
    a30 = _decay_block(a30, c3, c0, b3, False, False)
    a31 = _decay_block(a31, c3, c1, b3, False, False)
    a32 = _decay_block(a32, c3, c2, b3, False, False)
    i00 = _unit_lower_inverse(a00, "ieee")
    i11 = _unit_lower_inverse(a11, "ieee")
    i22 = _unit_lower_inverse(a22, "ieee")
    i33 = _unit_lower_inverse(a33, "ieee")
    i10 = -tl.dot(tl.dot(i11, a10), i00)
    i21 = -tl.dot(tl.dot(i22, a21), i11)
    i32 = -tl.dot(tl.dot(i33, a32), i22)
    i20 = -tl.dot(i22, tl.dot(a20, i00) + tl.dot(a21, i10))
    i31 = -tl.dot(i33, tl.dot(a31, i11) + tl.dot(a32, i21))
    i30 = -tl.dot(i33, tl.dot(a30, i00) + tl.dot(a31, i10) + tl.dot(a32, i20))
    j00, j10, j11, j20, j21, j22 = i00.to(dt), i10.to(dt), i11.to(dt), i20.to(dt), i21.to(dt), i22.to(dt)
    j30, j31, j32, j33 = i30.to(dt), i31.to(dt), i32.to(dt), i33.to(dt)

    # W = T((βe^γ)⊙K), U = T(β⊙V), written in BK-wide slices
    wrow0 = (r0.to(tl.int64) * HV + hv)[:, None]
    wrow1 = (r1.to(tl.int64) * HV + hv)[:, None]
    wrow2 = (r2.to(tl.int64) * HV + hv)[:, None]
    wrow3 = (r3.to(tl.int64) * HV + hv)[:, None]
    for kc in range(0, K, BK):
        cols = kc + tl.arange(0, BK)
        x0 = _load_block(kb, r0, m0, stride_kt, cols, nk0 * b0 * tl.exp(c0), dt)
        x1 = _load_block(kb, r1, m1, stride_kt, cols, nk1 * b1 * tl.exp(c1), dt)
        x2 = _load_block(kb, r2, m2, stride_kt, cols, nk2 * b2 * tl.exp(c2), dt)
        x3 = _load_block(kb, r3, m3, stride_kt, cols, nk3 * b3 * tl.exp(c3), dt)
        tl.store(w_ptr + wrow0 * K + cols[None, :], tl.dot(j00, x0).to(dt), mask=m0[:, None])
        tl.store(w_ptr + wrow1 * K + cols[None, :], (tl.dot(j10, x0) + tl.dot(j11, x1)).to(dt), mask=m1[:, None])
        tl.store(w_ptr + wrow2 * K + cols[None, :],
                 (tl.dot(j20, x0) + tl.dot(j21, x1) + tl.dot(j22, x2)).to(dt), mask=m2[:, None])
        tl.store(w_ptr + wrow3 * K + cols[None, :],
                 (tl.dot(j30, x0) + tl.dot(j31, x1) + tl.dot(j32, x2) + tl.dot(j33, x3)).to(dt), mask=m3[:, None])
    for vc in range(0, V, BK):
        cols = vc + tl.arange(0, BK)
        x0 = _load_block(vb, r0, m0, stride_vt, cols, b0, dt)
        x1 = _load_block(vb, r1, m1, stride_vt, cols, b1, dt)
        x2 = _load_block(vb, r2, m2, stride_vt, cols, b2, dt)
        x3 = _load_block(vb, r3, m3, stride_vt, cols, b3, dt)
        tl.store(u_ptr + wrow0 * V + cols[None, :], tl.dot(j00, x0).to(dt), mask=m0[:, None])
        tl.store(u_ptr + wrow1 * V + cols[None, :], (tl.dot(j10, x0) + tl.dot(j11, x1)).to(dt), mask=m1[:, None])
        tl.store(u_ptr + wrow2 * V + cols[None, :],
                 (tl.dot(j20, x0) + tl.dot(j21, x1) + tl.dot(j22, x2)).to(dt), mask=m2[:, None])
        tl.store(u_ptr + wrow3 * V + cols[None, :],
                 (tl.dot(j30, x0) + tl.dot(j31, x1) + tl.dot(j32, x2) + tl.dot(j33, x3)).to(dt), mask=m3[:, None])

    # P = scale·(QKᵀ ⊙ D), lower blocks; the blocks above the diagonal are written as zeros
    zp = tl.zeros([BC, BC], dtype=dt)
    pc = o[None, :]
    sc = tl.zeros([BC], dtype=tl.float32) + scale
    tl.store(p_ptr + wrow0 * BT + pc, _decay_block(p00, c0, c0, sc, True, False).to(dt), mask=m0[:, None])
    tl.store(p_ptr + wrow0 * BT + BC + pc, zp, mask=m0[:, None])
    tl.store(p_ptr + wrow0 * BT + 2 * BC + pc, zp, mask=m0[:, None])
    tl.store(p_ptr + wrow0 * BT + 3 * BC + pc, zp, mask=m0[:, None])
    tl.store(p_ptr + wrow1 * BT + pc, _decay_block(p10, c1, c0, sc, False, False).to(dt), mask=m1[:, None])
    tl.store(p_ptr + wrow1 * BT + BC + pc, _decay_block(p11, c1, c1, sc, True, False).to(dt), mask=m1[:, None])
    tl.store(p_ptr + wrow1 * BT + 2 * BC + pc, zp, mask=m1[:, None])
    tl.store(p_ptr + wrow1 * BT + 3 * BC + pc, zp, mask=m1[:, None])
    tl.store(p_ptr + wrow2 * BT + pc, _decay_block(p20, c2, c0, sc, False, False).to(dt), mask=m2[:, None])
    tl.store(p_ptr + wrow2 * BT + BC + pc, _decay_block(p21, c2, c1, sc, False, False).to(dt), mask=m2[:, None])
    tl.store(p_ptr + wrow2 * BT + 2 * BC + pc, _decay_block(p22, c2, c2, sc, True, False).to(dt), mask=m2[:, None])
    tl.store(p_ptr + wrow2 * BT + 3 * BC + pc, zp, mask=m2[:, None])
    tl.store(p_ptr + wrow3 * BT + pc, _decay_block(p30, c3, c0, sc, False, False).to(dt), mask=m3[:, None])
    tl.store(p_ptr + wrow3 * BT + BC + pc, _decay_block(p31, c3, c1, sc, False, False).to(dt), mask=m3[:, None])
    tl.store(p_ptr + wrow3 * BT + 2 * BC + pc, _decay_block(p32, c3, c2, sc, False, False).to(dt), mask=m3[:, None])
    tl.store(p_ptr + wrow3 * BT + 3 * BC + pc, _decay_block(p33, c3, c3, sc, True, False).to(dt), mask=m3[:, None])
    # γ, and q's and k's row norms for the scan
    _store_rows(gc_ptr, qn_ptr, kn_ptr, r0, m0, HV, hv, c0, nq0, nk0)
    _store_rows(gc_ptr, qn_ptr, kn_ptr, r1, m1, HV, hv, c1, nq1, nk1)
    _store_rows(gc_ptr, qn_ptr, kn_ptr, r2, m2, HV, hv, c2, nq2, nk2)
    _store_rows(gc_ptr, qn_ptr, kn_ptr, r3, m3, HV, hv, c3, nq3, nk3)


@triton.jit
def _store_rows(gc_ptr, qn_ptr, kn_ptr, rows, mask, HV, hv, gc, nq, nk):
    off = rows.to(tl.int64) * HV + hv
    tl.store(gc_ptr + off, gc, mask=mask)
    tl.store(qn_ptr + off, nq, mask=mask)
    tl.store(kn_ptr + off, nk, mask=mask)


# --- gdn_extend prepare, TMA form ("nilt", the default) -------------------------------------------
# The same outputs as _gdn_prepare_kernel, with the chunk-wide products as single 64-row dots:
# KKᵀ and QKᵀ are one [64, BK]×[BK, 64] accumulation each (wgmma-sized at 4 warps, two [64, 64]
# fp32 accumulators live instead of twenty 16×16), decay/β/mask applied elementwise on the tile,
# P stored in one piece. The inverse: A goes to a per-program scratch (the W rows of this chunk,
# rewritten later, or a spare buffer when they are too narrow, L1/L2-hot, ordered by CTA
# barriers); only its four diagonal 16×16 blocks D make the round trip, inverted as one
# [4, 16, 16] batch in tf32x3 (fp32-level error, see _unit_lower_inverse); the rest is merged in registers by four [64, 64] tf32
# tensor-core dots (T = (I − M)(I + M²)(I+D)⁻¹, M = (I+D)⁻¹L strictly block-lower); then
# W = T((βe^γ)⊙K), U = T(β⊙V) are 64-row dots again. TMA: q/k/v tiles by host descriptor (no
# [64, BK] address tensors); gdn_extend launches it with TMA only (the pointer form at 4 warps
# measured 1.2e-2..2.9e-2 relative error on the H100, where it falls back to _gdn_prepare_kernel).
# sm_90 (Triton 3.9, offline): _gdn_prepare_kernel spills 2152 B/thread at 2 warps; this kernel
# with TMA at BK=32: 8 warps 181 registers, no spill; 4 warps 185 (capped at 168 by default).
# (The name is its removed "wide" sibling's, kept so that the default's PTX stays as measured.)


@triton.jit
def _store_t_times_rows(tm, x_desc, x_ptr, x_col0, stride_xt, rowscale, out_ptr, N: tl.constexpr, base, rows, rm,
                        hrow, dt, BK: tl.constexpr, TMA: tl.constexpr):
    """out[rows, head, :N] = T · (rowscale ⊙ X) for the chunk's [64, N] rows of X (W from K, U from
    V), BK columns at a time; X by TMA descriptor from column x_col0 of the [T, H·N] view, or by
    pointer loads from x_ptr (the head's base)."""
    for c0 in range(0, N, BK):
        cols = c0 + tl.arange(0, BK)
        if TMA:
            x = (x_desc.load([base, x_col0 + c0]).to(tl.float32) * rowscale[:, None]).to(dt)
        else:
            x = _load_block(x_ptr, rows, rm, stride_xt, cols, rowscale, dt)
        tl.store(out_ptr + hrow[:, None] * N + cols[None, :], tl.dot(tm, x).to(dt), mask=rm[:, None])


@triton.jit
def _gdn_prepare_wide_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, cu_ptr, w_ptr, u_ptr, gc_ptr, p_ptr, qn_ptr, kn_ptr, sc_ptr, scale,
    B, HV, GROUP, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_gt, stride_bt,
    stride_sct, stride_sch, q_desc, k_desc, v_desc,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BLOCK_B: tl.constexpr,
    L2NORM: tl.constexpr, TMA: tl.constexpr = False, HV_FAST: tl.constexpr = False, INV_REG: tl.constexpr = False,
    PSCAN: tl.constexpr = False,
):
    BC: tl.constexpr = BT // 4
    if HV_FAST:  # the v-heads of one chunk in consecutive programs: their q/k tiles meet in L2
        seq, blk, valid = _find_block(cu_ptr, B, tl.program_id(1), BT, BLOCK_B)
        hv = tl.program_id(0)
    else:
        seq, blk, valid = _find_block(cu_ptr, B, tl.program_id(0), BT, BLOCK_B)
        hv = tl.program_id(1)
    hk = hv // GROUP
    bos = tl.load(cu_ptr + seq)
    eos = tl.load(cu_ptr + seq + 1)
    r = tl.arange(0, BT)
    rows = bos + blk * BT + r
    rm = tl.where(valid, rows < eos, False)
    rows64 = rows.to(tl.int64)
    qb = q_ptr + hk * stride_qh
    kb = k_ptr + hk * stride_kh
    dt = w_ptr.dtype.element_ty
    # raw KKᵀ and QKᵀ over the chunk, with the row sums of squares (PSCAN: the scan computes P, so
    # no QKᵀ, and q is read only for its norms)
    akk = tl.zeros([BT, BT], dtype=tl.float32)
    if not PSCAN:
        aqk = tl.zeros([BT, BT], dtype=tl.float32)
    sk = tl.zeros([BT], dtype=tl.float32)
    sq = tl.zeros([BT], dtype=tl.float32)
    for kc in range(0, K, BK):
        cols = kc + tl.arange(0, BK)
        if TMA:
            # whole-T descriptors: rows past eos (the next sequence's, or zeros past T) only reach
            # rows of A, P, W, U that are masked out or scaled by β = 0 (see the scan's note)
            kx = k_desc.load([bos + blk * BT, hk * K + kc])
        else:
            kx = _load_rows(kb, rows, rm, stride_kt, cols)
        if not PSCAN or L2NORM:
            if TMA:
                qx = q_desc.load([bos + blk * BT, hk * K + kc])
            else:
                qx = _load_rows(qb, rows, rm, stride_qt, cols)
        kt = tl.trans(kx)
        akk = tl.dot(kx, kt, akk)
        if not PSCAN:
            aqk = tl.dot(qx, kt, aqk)
        if L2NORM:
            sk += _sumsq(kx)
            sq += _sumsq(qx)
    nk = _inv_norm(sk, L2NORM)
    nq = _inv_norm(sq, L2NORM)
    akk = akk * _outer(nk, nk)
    if not PSCAN:
        aqk = aqk * _outer(nq, nk)
    strict = r[:, None] > r[None, :]
    lower = r[:, None] >= r[None, :]  # P's mask, out here so that the default's PTX stays as measured
    gv = tl.load(g_ptr + hv + rows64 * stride_gt, mask=rm, other=0.0).to(tl.float32)
    bv = tl.load(beta_ptr + hv + rows64 * stride_bt, mask=rm, other=0.0).to(tl.float32)
    gc = tl.cumsum(gv, 0)
    hrow = rows64 * HV + hv
    if not PSCAN:
        # P = scale·(QKᵀ ⊙ D), zeros above the diagonal
        dq = tl.exp(tl.where(lower, gc[:, None] - gc[None, :], float("-inf")))
        tl.store(p_ptr + hrow[:, None] * BT + r[None, :], (aqk * dq * scale).to(dt), mask=rm[:, None])
    # A = β_t e^{γ_t−γ_j} k_t·k_j (j < t) → its diagonal blocks inverted → T
    da = tl.exp(tl.where(strict, gc[:, None] - gc[None, :], float("-inf")))
    a = akk * da * bv[:, None]
    base = bos + blk * BT
    # diagonal blocks D inverted as one [4, 16, 16] batch (exact fp32), then with the strictly
    # block-lower rest L and M = (I+D)⁻¹L (M⁴ = 0):
    # T = (I + M)⁻¹(I+D)⁻¹ = (I − M)(I + M²)(I+D)⁻¹, four [64, 64] tensor-core dots
    same = (r[:, None] // BC) == (r[None, :] // BC)
    if INV_REG:
        # D taken out of A and (I+D)⁻¹ put back as a block-diagonal [64, 64] by reshapes and
        # masked sums in registers (layout conversions through shared memory) instead of a round
        # trip through the global scratch with three CTA barriers
        ni = tl.arange(0, 4)[:, None, None, None]
        nj = tl.arange(0, 4)[None, None, :, None]
        d3 = tl.sum(tl.where(ni == nj, tl.reshape(a, [4, BC, 4, BC]), 0.0), axis=2)
        inv3 = _unit_lower_inverse(d3, "tf32x3")
        dinv = tl.reshape(tl.where(ni == nj, inv3[:, :, None, :], 0.0), [BT, BT])
    else:
        sp = sc_ptr + (bos + blk * BT).to(tl.int64) * stride_sct + hv * stride_sch
        tl.store(sp + r[:, None] * stride_sct + r[None, :], a, mask=rm[:, None])
        tl.debug_barrier()
        nb = tl.arange(0, 4)[:, None, None]
        bi = tl.arange(0, BC)[None, :, None]
        bj = tl.arange(0, BC)[None, None, :]
        dp = sp + (nb * BC + bi) * stride_sct + nb * BC + bj
        dm = tl.where(valid, (base + nb * BC + bi) < eos, False) & (bj >= 0)
        d3 = tl.load(dp, mask=dm, other=0.0)
        tl.debug_barrier()
        tl.store(dp, _unit_lower_inverse(d3, "tf32x3"), mask=dm)
        tl.debug_barrier()
        dinv = tl.load(sp + r[:, None] * stride_sct + r[None, :], mask=rm[:, None] & same, other=0.0)
    lo = tl.where(same, 0.0, a)
    m1 = tl.dot(dinv, lo, input_precision="tf32")
    m2 = tl.dot(m1, m1, input_precision="tf32")
    y = dinv + tl.dot(m2, dinv, input_precision="tf32")
    tm = (y - tl.dot(m1, y, input_precision="tf32")).to(dt)
    if not INV_REG:
        tl.debug_barrier()  # the scratch may alias this chunk's W rows, written next
    # W = T((βe^γ)⊙K), U = T(β⊙V)
    _store_t_times_rows(tm, k_desc, kb, hk * K, stride_kt, nk * bv * tl.exp(gc), w_ptr, K, base, rows, rm, hrow, dt,
                        BK, TMA)
    _store_t_times_rows(tm, v_desc, v_ptr + hv * stride_vh, hv * V, stride_vt, bv, u_ptr, V, base, rows, rm, hrow, dt,
                        BK, TMA)
    if PSCAN:  # the row norms as the exponents the scan takes them in: γ + ln qn, γ − ln kn
        _store_rows(gc_ptr, qn_ptr, kn_ptr, rows, rm, HV, hv, gc, gc + tl.log(nq), gc - tl.log(nk))
    else:
        _store_rows(gc_ptr, qn_ptr, kn_ptr, rows, rm, HV, hv, gc, nq, nk)

@triton.jit
def _scan_chunk(bos, eos, c, r, gc_ptr, HV, hv, BT: tl.constexpr):
    """Chunk c of a sequence in the scan: its first row, rows (int64), row mask, (row, v-head)
    index, cumulative gates γ and the chunk's last γ."""
    t0 = bos + c * BT
    rows = t0 + r
    rm = rows < eos
    rows = rows.to(tl.int64)
    hrow = rows * HV + hv
    last = tl.minimum(t0 + BT, eos) - 1
    gc = tl.load(gc_ptr + hrow, mask=rm, other=0.0)
    g_last = tl.load(gc_ptr + last.to(tl.int64) * HV + hv)
    return t0, rows, rm, hrow, gc, g_last


@triton.jit
def _gdn_scan_kernel(
    q_ptr, k_ptr, w_ptr, u_ptr, gc_ptr, p_ptr, qn_ptr, kn_ptr, state_ptr, cu_ptr, rs_ptr, ws_ptr, o_ptr, scale,
    HV, GROUP, stride_qt, stride_qh, stride_kt, stride_kh, stride_ot, stride_oh, stride_s,
    q_desc, k_desc, w_desc, u_desc, p_desc,
    K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, LEAN: tl.constexpr = 0,
    PSCAN: tl.constexpr = False,
):
    tl.static_assert(LEAN == 2 or not PSCAN, "P is computed in the scan only by its LEAN 2 form")
    b = tl.program_id(0)
    hv = tl.program_id(1)
    hk = hv // GROUP
    vs = tl.program_id(2) * BV + tl.arange(0, BV)
    ks = tl.arange(0, K)
    r = tl.arange(0, BT)
    bos = tl.load(cu_ptr + b)
    eos = tl.load(cu_ptr + b + 1)
    rs = tl.load(rs_ptr + b).to(tl.int64)
    ws = tl.load(ws_ptr + b).to(tl.int64)
    s_off = hv * (K * V) + ks[:, None] * V + vs[None, :]
    S = tl.load(state_ptr + rs * stride_s + s_off, mask=tl.where(rs >= 0, s_off >= 0, False), other=0.0)
    dt = w_ptr.dtype.element_ty
    if LEAN == 0:
        for c in range(0, tl.cdiv(eos - bos, BT)):
            t0, rows, rm, hrow, gc, g_last = _scan_chunk(bos, eos, c, r, gc_ptr, HV, hv, BT)
            w = tl.load(w_ptr + hrow[:, None] * K + ks[None, :], mask=rm[:, None], other=0.0)
            u = tl.load(u_ptr + hrow[:, None] * V + vs[None, :], mask=rm[:, None], other=0.0)
            sd = S.to(dt)
            un = (u.to(tl.float32) - tl.dot(w, sd)).to(dt)
            q = tl.load(q_ptr + rows[:, None] * stride_qt + hk * stride_qh + ks[None, :], mask=rm[:, None], other=0.0)
            qs = tl.load(qn_ptr + hrow, mask=rm, other=0.0) * tl.exp(gc) * scale
            p = tl.load(p_ptr + hrow[:, None] * BT + r[None, :], mask=rm[:, None], other=0.0)
            o = tl.dot((q.to(tl.float32) * qs[:, None]).to(dt), sd) + tl.dot(p, un)
            tl.store(o_ptr + rows[:, None] * stride_ot + hv * stride_oh + vs[None, :], o.to(o_ptr.dtype.element_ty),
                     mask=rm[:, None])
            k = tl.load(k_ptr + rows[:, None] * stride_kt + hk * stride_kh + ks[None, :], mask=rm[:, None], other=0.0)
            kscale = tl.load(kn_ptr + hrow, mask=rm, other=0.0) * tl.exp(g_last - gc)
            S = S * tl.exp(g_last) + tl.dot(tl.trans((k.to(tl.float32) * kscale[:, None]).to(dt)), un)
    else:
        # LEAN: the row scales applied to the [BT, BV] products instead of the [BT, K] q and k
        # tiles ((diag(s)Q)S = diag(s)(QS), (diag(s)K)ᵀU' = Kᵀ(diag(s)U'): no fp32 copies of q
        # and k), and the [BT, K] tiles loaded through host TMA descriptors (LEAN == 2) instead of
        # [BT, K] tensors of 64-bit addresses
        for c in range(0, tl.cdiv(eos - bos, BT)):
            t0, rows, rm, hrow, gc, g_last = _scan_chunk(bos, eos, c, r, gc_ptr, HV, hv, BT)
            if LEAN == 2:
                # host TMA descriptors over all T rows: rows past eos belong to the next sequence
                # (or read zero past T); harmless, as kscale (masked) is 0 there, P is lower
                # triangular and the o store is masked
                vb0 = tl.program_id(2) * BV
                w = w_desc.load([t0, hv * K])
                u = u_desc.load([t0, hv * V + vb0])
                q = q_desc.load([t0, hk * K])
                k = k_desc.load([t0, hk * K])
                if not PSCAN:
                    p = p_desc.load([t0, hv * BT])
            else:
                w = tl.load(w_ptr + hrow[:, None] * K + ks[None, :], mask=rm[:, None], other=0.0)
                u = tl.load(u_ptr + hrow[:, None] * V + vs[None, :], mask=rm[:, None], other=0.0)
                q = tl.load(q_ptr + rows[:, None] * stride_qt + hk * stride_qh + ks[None, :], mask=rm[:, None],
                            other=0.0)
                k = tl.load(k_ptr + rows[:, None] * stride_kt + hk * stride_kh + ks[None, :], mask=rm[:, None],
                            other=0.0)
                p = tl.load(p_ptr + hrow[:, None] * BT + r[None, :], mask=rm[:, None], other=0.0)
            if PSCAN:
                # qn_ptr, kn_ptr hold the prepare's exponents gq = γ + ln qn, gk = γ − ln kn (−inf,
                # +inf past eos, so that the row scales read 0 there as the norms' 0 would give)
                gq = tl.load(qn_ptr + hrow, mask=rm, other=float("-inf"))
                gk = tl.load(kn_ptr + hrow, mask=rm, other=float("inf"))
                qs = tl.exp(gq) * scale
                kscale = tl.exp(g_last - gk)
            else:
                qs = tl.load(qn_ptr + hrow, mask=rm, other=0.0) * tl.exp(gc) * scale
                kscale = tl.load(kn_ptr + hrow, mask=rm, other=0.0) * tl.exp(g_last - gc)
            sd = S.to(dt)
            un = u.to(tl.float32) - tl.dot(w.to(dt), sd)
            und = un.to(dt)
            if PSCAN:
                # P as the prepare defines it, scale·(QKᵀ ⊙ D) with the row norms, = QKᵀ ⊙
                # scale·e^{gq_i−gk_j}, from the raw q and k tiles loaded for the chain. The decay is
                # one exponent (e^{γ_i}·e^{−γ_j} would overflow for strongly negative gates; on and
                # below the diagonal gq_i − gk_j ≤ 2·ln 1000), zero above it and, through the
                # infinities, on rows past eos (the next sequence's q and k there); base 2 with the
                # scales folded into the [BT] vectors: a subtraction, ex2 and product an element.
                # No S in it: off the dependent chain, but Triton waits on each dot in turn, so it
                # still adds to a chunk's step; every V-block program of a head computes it. Here,
                # next to its use rather than before the chain: fewer spills (offline sm_90).
                lq = gq * 1.4426950408889634 + tl.log2(scale)  # log2(e)
                lk = gk * 1.4426950408889634
                dq = tl.exp2(tl.where(r[:, None] >= r[None, :], lq[:, None] - lk[None, :], float("-inf")))
                p = (tl.dot(q.to(dt), tl.trans(k.to(dt))) * dq).to(dt)
            o = tl.dot(q.to(dt), sd) * qs[:, None] + tl.dot(p, und)
            S = S * tl.exp(g_last) + tl.dot(tl.trans(k.to(dt)), (un * kscale[:, None]).to(dt))
            tl.store(o_ptr + rows[:, None] * stride_ot + hv * stride_oh + vs[None, :],
                     o.to(o_ptr.dtype.element_ty), mask=rm[:, None])
    tl.store(state_ptr + ws * stride_s + s_off, S, mask=tl.where(ws >= 0, s_off >= 0, False))


GLUON_SCAN_MIN_TOKENS = 8192


def extend_config(batch: int, heads: int, v: int, k: int = 128, tokens: int | None = None) -> tuple:
    """(scan BV, scan warps, prepare BK, prepare warps, prepare kind, scan num_stages, scan LEAN[, extra]):
    split V so the scan, the only sequential part, has enough programs to cover the SMs when there
    are few sequences.

    Prepare kinds: "nilt" (_gdn_prepare_wide_kernel: chunk-wide [64, 64] products, q/k/v tiles by
    host TMA descriptors) and "blocks" (_gdn_prepare_kernel, ten 16×16 accumulators, pointer loads).
    Where TMA does not apply (see _tma_ok: gapped or misaligned q/k/v views, pre-Hopper devices)
    "nilt" falls back to "blocks" at 2 warps without launch options. Scan LEAN: 0 the previous form,
    1 the row scales applied to the [64, BV] products instead of the q/k tiles, 2 LEAN 1 with its
    tiles loaded by host TMA descriptors (falls back to 1 where TMA does not apply); K > 128 always
    runs LEAN 0 (three [64, K] tiles a stage would not fit shared memory). scan num_stages None =
    Triton's. An optional eighth entry, a dict of launch options: "pmaxnreg", the prepare's register
    cap (more CTAs an SM); "pinv": "reg", the inverse's diagonal blocks taken out of A and put back
    in registers instead of through a global scratch; "pgrid": "hv", the v-heads of one chunk in
    consecutive programs (grid (Hv, blocks)) so that a k-head's q/k tiles are read from L2 by its
    second v-head; "sws": True, the LEAN 2 scan on the warp-specialised Gluon kernel (gdn_ws.py:
    a TMA producer warp, the dependent chain alone in one warpgroup, the output products in
    another; where it cannot run, the Triton scan); "pscan": True, P computed by the LEAN 2 scan from
    the q/k tiles it loads anyway instead of written by the "nilt" prepare and read back (at T=32K,
    Hv=32: 134 MB less written and read, the prepare's QKᵀ gone, 8 KB a stage less of the scan's
    shared memory, 2 CTAs an SM at BV 16 and 2 stages), against a [64, K]×[K, 64] product and the
    [64, 64] decay a chunk in each V-block program, off the dependent chain but not overlapped
    with it (offline sm_90, Triton 3.6, BV 32: 1567 instructions in the scan's loop against 863);
    ignored (P written) where the prepare is not "nilt" or the scan not LEAN 2. Measured (H100,
    05:44 / 05:55 UTC, FLA in the same run): T=8K 603 µs against the default's 479, T=32K 2208 /
    2241 against 1787 / 1776, 8x4096 1531 / 1521 against 1618 / 1617 (the only win; sws 1560).

    "sws" + "pscan" (the default since 06:03 UTC: P computed by the Gluon scan's output warpgroup,
    off the chain; the prepare without QKᵀ and P): T=8K 415 µs against "sws" alone 412, T=32K 1547
    against 1589, 8x4096 1454 against 1588 (bench/gpu/sweep_gdn.py 06:03 UTC; FLA's own times were
    off in that run: 1037 / 2947 / 2431).

    "sws" (H100, bench/gpu/sweep_gdn.py 05:55 UTC, FLA 2386 / 2428 µs in the same run): T=32K
    1568 µs (scan 747) against 1776 (scan 935) = 1.52x FLA; 8x4096 1560 against 1617 = 1.56x.
    Its first form loaded the row vectors (γ, norms) when it stored them, a load latency a chunk
    in the producer: scan 1073 µs at T=32K, 678 with those loads skipped, 650 with the TMA loads
    skipped, 521 with both (05:52 probe, numerics off) — now they are loaded a chunk ahead.

    Default (bench/gpu/sweep_gdn.py on the H100, FLA in the same run, Qwen3-Next shapes Hk=16,
    Hv=32, K=V=128, bf16): "nilt" at 4 warps with "pinv" and "pgrid", capped at 128 registers
    (4 CTAs an SM; offline sm_90, Triton 3.9: 166 registers uncapped with no spill, 200 B of stack
    at the cap, faster on the device all the same) + LEAN 2 scan on the Gluon kernel ("sws") with P
    computed there ("pscan"). Sweeps of
    2026-11-23 05:02 / 05:18 UTC, prepare alone: T=32K 1127 -> 834 / 849 µs, 8x4096 1140 -> 861
    / 846 against the previous default's prepare ("nilt" with the scratch, capped at 168: ncu at
    T=32K DRAM 55%, L1 70% busy, 37% of stalls on L1TEX scoreboards, 720 B of stack offline);
    whole op T=8K 482 / 494 µs, T=32K 1778 / 1854, 8x4096 1623 / 1614 (FLA chunk 634-860 /
    2389-2394 / 2426-2432). Each change alone (05:02): "pinv" 992 / 1014 µs, "pgrid" 992 / 1007
    (T=32K / 8x4096), both 882 / 906, capped at 152 the same, at 168 with W/U/P stored by TMA for
    full chunks the same (removed), uncapped with TMA stores 1110 / 1140, 8 warps capped at 128
    1241 / 1280, BK 64 884 / 896. Before that (02:10-02:43 UTC), "nilt" at 4 warps capped at 168
    + LEAN 2 against the round-1 default (old_extend_config): 566 / 2200 / 2048 µs against 690 /
    2808 / 2548. Removed after those sweeps: the "wide",
    "nil2t" and "nil" (pointer loads, 8 warps) prepares, slower everywhere measured ("nil" at 4
    warps also 1.2e-2..2.9e-2 relative error), "wide2", "nil2", "nilx3", "nil2x3" (never faster),
    scan LEAN 3 (= LEAN 2 within 1%) and LEAN 4/5 (wrong on the device: relative error 0.86 / inf).
    Measured and removed later (sweeps of 04:25 / 05:18 UTC): a scan on Sᵀ [BV, K] whose chain
    products take their A operand from registers (no shared-memory round trip on the chain): T=32K
    scan 1650 µs (BV 32, mma.sync) to 2410 µs (BV 64/128, wgmma, 160 B of spills) against LEAN
    2's 942; LEAN 2 with the next chunk's row scales loaded a chunk ahead (ncu put a third of the
    scan's stalls on global loads): 1066 µs against 994, 2 stages 1247. Measured and removed
    2026-11-23 (H100, graphed, FLA in the same run; out/ probes, not kept): the "nilt" prepare with
    both v-heads of a k-head in one program (KKᵀ, the norms and the q/k tiles shared; the ncu
    source view had the KKᵀ loop at 26% of the prepare's samples): prepare T=8K 243-313 µs against
    187, T=32K 930-1226 against 691 (capped at 128 / 168 / uncapped: the second head's live KKᵀ
    spills, and half the programs leave the latency-bound kernel less to overlap); W and U as
    (T·diag(row scales))·K straight from the TMA tiles, with the k norms from KKᵀ's diagonal (and
    q's from QQᵀ's): 210-215 against 204 at T=8K, 783-816 against 758 at T=32K; the Gluon scan's V
    block at 64 for one sequence (half the CTAs, half the L2 reads of q/k/W): T=8K 418 against
    372, T=32K 1603 against 1460 (8x4096 takes 64 already: 1390 against 1917 at 32).

    Only at K = V = 128, the shape the sweeps timed (and the engine on Qwen3.5-9B shapes ran, the
    registry's reference check at 2.6e-3, FLA's 2.5e-3). "nilt" below 32-column tiles falls back to
    "blocks" in prepare(): with [64, 16] tiles (K = V = 16, the tiny test checkpoints) it wrote NaN
    into W and U on the H100 (tests/gpu/test_engine_layouts.py, 2026-11-23; K = 32, 64 and 128
    right on the same engine layouts, memcheck clean), which is what turned the engine's bf16 test
    NaN at 03:08 UTC when this form was the default everywhere."""
    if k != 128 or v != 128:
        return old_extend_config(batch, heads, v)
    # the Gluon scan from GLUON_SCAN_MIN_TOKENS tokens a call (tokens None: the sweeps' default): its
    # launch costs more host time than the Triton scan's (bench/gpu/gdn_graphed.py on the H100,
    # 06:50 UTC: 453 against 383 µs a call at T=256), which a call of a few thousand tokens does not
    # earn back; at T=8K it does (same run: 431 µs eager and 407 graphed against 482 / 463; FLA 668
    # / 566). Before the device capability and the shared layouts were cached the gap was ~200 µs
    # (481 against 284 at 06:40), and at T=8K the Gluon path was the slower (06:20 sweep: 594 µs
    # against 480, host-bound), so this threshold stood at 16K for a while. With _tma_ok reading each
    # tensor attribute once, the own-output checks reduced to _box_ok, one allocation for the row
    # vectors and a cached P stand-in: 234 against 197 µs a call (07:59 UTC). Re-timed at 08:07 UTC
    # (one sequence, eager / graphed µs, Triton scan against Gluon scan): T=864 166 / 56 against
    # 232 / 49, 2K 212 / 125 against 256 / 104, 4K 240 / 229 against 413 / 193, 6K 348 / 333 against
    # 287 / 280, 8K 443 / 431 against 374 / 366. The Gluon scan is ahead on GPU time at every size,
    # but below ~6K tokens a call is host-bound and its launch costs ~40 µs more, so the threshold
    # stays (at 4K the two are even once launches overlap the GPU's work: ~229 against ~234)
    gluon = tokens is None or tokens >= GLUON_SCAN_MIN_TOKENS
    return ((min(v, 32) if batch * heads < 256 else min(v, 64)), 4, 32, 4, "nilt", None, 2,
            {"pmaxnreg": 128, "pinv": "reg", "pgrid": "hv", "sws": gluon, "pscan": gluon})


def old_extend_config(batch: int, heads: int, v: int) -> tuple:
    """The default before round 2 ("blocks" prepare at 2 warps, LEAN 0 scan), kept for A/B sweeps."""
    return (min(v, 32) if batch * heads < 256 else min(v, 64)), 4, 32, 2, "blocks", None, 0


PREPARE_KINDS = ("blocks", "nilt")
SCAN_FORMS = (0, 1, 2)
LAUNCH_OPTIONS = ("pmaxnreg", "pgrid", "pinv", "sws", "pscan")


def _extend_options(config) -> tuple[int, int, int, int, str, int | None, int, dict]:
    bv, swarps, bk, pwarps, *rest = config
    kind = rest[0] if rest else "blocks"
    stages = rest[1] if len(rest) > 1 else None
    lean = int(rest[2]) if len(rest) > 2 else 0
    extra = dict(rest[3]) if len(rest) > 3 and rest[3] else {}
    if kind not in PREPARE_KINDS:
        raise ValueError(f"gdn_extend: prepare kind must be one of {PREPARE_KINDS}, got {kind!r}")
    if lean not in SCAN_FORMS:
        raise ValueError(f"gdn_extend: scan LEAN must be one of {SCAN_FORMS}, got {lean!r}")
    if set(extra) - set(LAUNCH_OPTIONS):
        raise ValueError(f"gdn_extend: launch options must be among {LAUNCH_OPTIONS}, got {sorted(extra)}")
    return bv, swarps, bk, pwarps, kind, stages, lean, extra


_SM_MAJOR: dict = {}


def sm_major(device: torch.device) -> int:
    """The major compute capability of a CUDA device (0 off CUDA), cached per device: the query
    costs ~14 µs on the H100's host and the launch paths ask it several times a call (host-bound
    at small shapes: gdn_extend at T=256 took 572 µs of host time a call before this cache)."""
    if device.type != "cuda":
        return 0
    key = device.index if device.index is not None else torch.cuda.current_device()
    if key not in _SM_MAJOR:
        _SM_MAJOR[key] = torch.cuda.get_device_capability(key)[0]
    return _SM_MAJOR[key]


def _box_fits(width: int, element_size: int, box_cols: int) -> bool:
    """A [64, box_cols] TMA box over rows of width elements: 16..256 elements of ≥ 16 bytes, within
    the row, int32 extents."""
    return (box_cols * element_size) % 16 == 0 and 1 <= box_cols <= min(256, width) and width < 2**31


def _tma_ok(x: torch.Tensor, box_cols: int) -> bool:
    """Whether x [T, H, D] can be read as one [T, H·D] TMA tensor with [64, box_cols] boxes: heads
    and rows dense in the last two dims, 16-byte aligned base and row stride, int32 extents, a box
    that fits (_box_fits), and a Hopper-class device (or the CPU interpreter). Each tensor attribute
    is read once: a gdn_extend call asks this for several tensors, and on the H100's host the
    attribute reads were most of its ~3 µs (cProfile, 2026-11-23)."""
    shape, st = x.shape, x.stride()
    if len(shape) != 3 or st[2] != 1 or st[1] != shape[2] or not 0 < shape[0] < 2**31:
        return False
    es = x.element_size()
    if not _box_fits(shape[1] * shape[2], es, box_cols) or (st[0] * es) % 16 or x.data_ptr() % 16:
        return False
    return not x.is_cuda or sm_major(x.device) >= 9


def _box_ok(x: torch.Tensor, box_cols: int) -> bool:
    """_tma_ok for prepare()'s own outputs (W, U, P: dense [T, H, D] allocations on q's device, so
    TMA-readable wherever q is): only the box is left to check."""
    return _box_fits(x.shape[1] * x.shape[2], x.element_size(), box_cols)


def _warp_specialised_scan(q, k, chunks, state, bv: int):
    """gdn_ws (the Gluon scan) when it can run this call (sm_90, K = 128, TMA-readable tiles; a
    Triton with Gluon's Hopper API), else None."""
    try:
        from . import gdn_ws
    except ImportError:
        return None
    return gdn_ws if gdn_ws.supports_scan_ws(q, k, chunks, state, bv) is None else None


def _scan_lean(lean: int, q, k, w, u, p, bv: int) -> int:
    """The scan form that runs for the asked LEAN: 0 where K > 128 (three [64, K] tiles a stage would
    not fit shared memory), and LEAN 2 only where every tile it loads can be read by TMA (P's only
    when the prepare wrote it: p None), else 1."""
    K = q.shape[2]
    if lean and K > 128:
        return 0
    own = ((w, K), (u, bv)) + (((p, CHUNK),) if p is not None else ())
    if lean == 2 and not (_tma_ok(q, K) and _tma_ok(k, K) and all(_box_ok(x, c) for x, c in own)):
        return 1
    return lean


def gdn_extend(*, q, k, v, g, beta, state, cu_seqlens, read_slots, write_slots, scale, qk_l2norm, config=None):
    T, HK, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    B = cu_seqlens.shape[0] - 1
    if state.stride(3) != 1 or state.stride(2) != V or state.stride(1) != K * V:
        raise ValueError("gdn_extend: state must be contiguous per slot [S, Hv, K, V]")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("gdn_extend: q, k, v must be contiguous in their last dim")
    config = config or extend_config(B, HV, V, K, tokens=T)
    o = torch.empty((T, HV, V), dtype=v.dtype, device=v.device)
    if B == 0:
        return o
    chunks = prepare(q, k, v, g, beta, cu_seqlens, scale, qk_l2norm, config)
    scan(q, k, chunks, state, cu_seqlens, read_slots, write_slots, o, scale, config)
    return o


def prepare(q, k, v, g, beta, cu_seqlens, scale, qk_l2norm, config) -> dict:
    """Launch 1: the per-chunk tensors W, U, P, γ and the q/k row norms. With the "pscan" launch
    option, where both the "nilt" prepare and the LEAN 2 scan run, P is left to the scan: p is None
    in the result and the norms come as the exponents gq = γ + ln qn, gk = γ − ln kn (the one place
    that decides it; scan() reads it from there)."""
    T, HK, K = q.shape
    HV, V = v.shape[1], v.shape[2]
    B = cu_seqlens.shape[0] - 1
    bv, _, bk, warps, kind, _, lean, extra = _extend_options(config)
    bk = min(bk, K, V)
    # "nilt" with [64, 16] tiles (K or V = 16) wrote NaN into every W and U row on the H100 (Triton 3.6;
    # P, γ and the norms right; K = 32, 64, 128 right on the same engine layouts; memcheck clean):
    # below 32-column tiles, and where TMA does not apply, the previous default (see extend_config)
    if kind == "nilt" and (bk < 32 or not all(_tma_ok(x, bk) for x in (q, k, v))):
        kind, warps, extra = "blocks", 2, {}
    launch = dict(num_warps=warps)
    if extra.get("pmaxnreg"):
        launch["maxnreg"] = extra["pmaxnreg"]
    out = dict(w=torch.empty((T, HV, K), dtype=v.dtype, device=v.device),
               u=torch.empty((T, HV, V), dtype=v.dtype, device=v.device))
    pscan = bool(extra.get("pscan")) and kind == "nilt" and _scan_lean(lean, q, k, out["w"], out["u"], None,
                                                                         min(bv, V)) == 2
    if pscan and extra.get("sws") and sm_major(q.device) != 9:
        # asked for beside the Gluon scan, whose output warpgroup computes P off the chain; where that
        # scan cannot run, the Triton scan's P on the chain costs more than reading it (extend_config)
        pscan = False
    norms = ("gq", "gk") if pscan else ("qn", "kn")
    rows = torch.empty((3, T, HV), dtype=torch.float32, device=v.device)  # one allocation for γ and the norms
    out.update(p=None if pscan else torch.empty((T, HV, CHUNK), dtype=v.dtype, device=v.device), gc=rows[0],
               **{norms[0]: rows[1], norms[1]: rows[2]})
    if T > 0 and kind == "nilt":
        from triton.tools.tensor_descriptor import TensorDescriptor

        w = out["w"]
        inv_reg = extra.get("pinv") == "reg"
        if inv_reg:  # no scratch: any fp32 tensor stands in for the unused argument
            sc = out["gc"]
        elif K * w.element_size() >= CHUNK * 4:  # A and T pass through this chunk's W rows
            sc = w.view(torch.uint8).view(T, HV, K * w.element_size()).view(torch.float32)
        else:
            sc = torch.empty((T, HV, CHUNK), dtype=torch.float32, device=v.device)
        descs = tuple(TensorDescriptor(x, [T, x.shape[1] * x.shape[2]], [x.stride(0), 1], [CHUNK, bk])
                      for x in (q, k, v))
        blocks = triton.cdiv(T, CHUNK) + B
        hv_fast = extra.get("pgrid") == "hv" and blocks < 65536  # the grid's y extent
        _gdn_prepare_wide_kernel[(HV, blocks) if hv_fast else (blocks, HV)](
            q, k, v, g, beta, cu_seqlens, out["w"], out["u"], out["gc"], w if pscan else out["p"], out[norms[0]],
            out[norms[1]], sc, scale, B, HV, HV // HK, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            v.stride(0), v.stride(1), g.stride(0), beta.stride(0), sc.stride(0), sc.stride(1), *descs,
            K=K, V=V, BT=CHUNK, BK=bk, BLOCK_B=triton.next_power_of_2(B + 1), L2NORM=bool(qk_l2norm), TMA=True,
            HV_FAST=hv_fast, INV_REG=inv_reg, PSCAN=pscan, **launch,
        )
    elif T > 0:
        _gdn_prepare_kernel[(triton.cdiv(T, CHUNK) + B, HV)](
            q, k, v, g, beta, cu_seqlens, out["w"], out["u"], out["gc"], out["p"], out["qn"], out["kn"], scale, B, HV,
            HV // HK, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), g.stride(0),
            beta.stride(0), K=K, V=V, BT=CHUNK, BK=bk, BLOCK_B=triton.next_power_of_2(B + 1), L2NORM=bool(qk_l2norm),
            **launch,
        )
    return out


def scan(q, k, chunks, state, cu_seqlens, read_slots, write_slots, o, scale, config) -> None:
    """Launch 2: the sequential scan over each sequence's chunks, writing o and the final states."""
    HK, K = q.shape[1], q.shape[2]
    HV, V = o.shape[1], o.shape[2]
    B = cu_seqlens.shape[0] - 1
    bv, warps, _, _, _, stages, lean, extra = _extend_options(config)
    bv = min(bv, V)
    launch = dict(num_warps=warps) if stages is None else dict(num_warps=warps, num_stages=stages)
    descs = (None,) * 5
    p = chunks["p"]
    lean = _scan_lean(lean, q, k, chunks["w"], chunks["u"], p, bv)
    if p is None and lean != 2:
        raise ValueError("gdn_extend: chunks prepared without P (\"pscan\") need the LEAN 2 scan of the same config")
    if extra.get("sws") and lean == 2:
        ws = _warp_specialised_scan(q, k, chunks, state, bv)
        if ws is not None:
            ws.scan_ws(q, k, chunks, state, cu_seqlens, read_slots, write_slots, o, scale, bv, stages=stages)
            return
    if lean == 2:
        from triton.tools.tensor_descriptor import TensorDescriptor

        T = q.shape[0]

        def desc(x, cols, box):
            return TensorDescriptor(x, [T, cols], [x.stride(0), 1], box)

        descs = (desc(q, HK * K, [CHUNK, K]), desc(k, HK * K, [CHUNK, K]), desc(chunks["w"], HV * K, [CHUNK, K]),
                 desc(chunks["u"], HV * V, [CHUNK, bv]), None if p is None else desc(p, HV * CHUNK, [CHUNK, CHUNK]))
    _gdn_scan_kernel[(B, HV, V // bv)](
        q, k, chunks["w"], chunks["u"], chunks["gc"], chunks["w"] if p is None else p,
        *(chunks[n] for n in (("gq", "gk") if p is None else ("qn", "kn"))), state, cu_seqlens, read_slots,
        write_slots, o, scale, HV, HV // HK, q.stride(0), q.stride(1), k.stride(0), k.stride(1), o.stride(0),
        o.stride(1), state.stride(0), *descs, K=K, V=V, BT=CHUNK, BV=bv, LEAN=lean, PSCAN=p is None, **launch,
    )
