"""Fused elementwise Triton kernels: rms_norm (+ residual, + weight offset), gated_rms_norm,
qk_norm_rope (per-head RMSNorm and partial RoPE in one pass) and silu_and_mul.

Owns these four ops' NVIDIA kernels; touches no cache or state. All math is fp32, rounded once to
the activation dtype, as the reference backend does. These ops are memory-bound: each kernel reads
every input once and writes every output once, rows tiled so a program moves ~16-32 KB.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl



def _rows_per_program(d_block: int, target: int = 4096) -> int:
    return max(1, min(64, target // d_block))


def _warps(elements: int) -> int:
    return 4 if elements <= 4096 else 8 if elements <= 8192 else 16


# --- rms_norm ------------------------------------------------------------------------------------
# h = x (+ residual, rounded to the activation dtype), y = h / sqrt(mean(h²) + eps) · (w + offset)


@triton.jit
def _rms_norm_kernel(
    x_ptr, r_ptr, w_ptr, y_ptr, h_ptr, T, D, eps, offset,
    stride_x, stride_r, stride_y, stride_h,
    HAS_RES: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < T)[:, None] & (cols < D)[None, :]
    rows = rows.to(tl.int64)
    x = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    if HAS_RES:
        r = tl.load(r_ptr + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
        h = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(h_ptr + rows[:, None] * stride_h + cols[None, :], h, mask=mask)
        xf = h.to(tl.float32)
    else:
        xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=1) / D + eps)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32) + offset
    y = xf * rstd[:, None] * w[None, :]
    tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def rms_norm(*, x, w, eps, residual=None, weight_offset=0.0):
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    T, D = x2.shape
    y = torch.empty((T, D), dtype=x.dtype, device=x.device)
    block_d = triton.next_power_of_2(D)
    block_t = _rows_per_program(block_d)
    grid = (triton.cdiv(T, block_t),)
    if residual is None:
        _rms_norm_kernel[grid](
            x2, x2, w, y, y, T, D, eps, weight_offset, x2.stride(0), 0, y.stride(0), 0,
            HAS_RES=False, BLOCK_T=block_t, BLOCK_D=block_d, num_warps=_warps(block_t * block_d),
        )
        return y.view(x.shape)
    r2 = residual.reshape(-1, D)
    if r2.stride(-1) != 1:
        r2 = r2.contiguous()
    h = torch.empty_like(y)
    _rms_norm_kernel[grid](
        x2, r2, w, y, h, T, D, eps, weight_offset, x2.stride(0), r2.stride(0), y.stride(0), h.stride(0),
        HAS_RES=True, BLOCK_T=block_t, BLOCK_D=block_d, num_warps=_warps(block_t * block_d),
    )
    return y.view(x.shape), h.view(x.shape)


# --- gated_rms_norm ------------------------------------------------------------------------------
# y = x / sqrt(mean(x²) + eps) · w · z·sigmoid(z), per row of D (rows = T·H)


@triton.jit
def _gated_rms_norm_kernel(
    x_ptr, z_ptr, w_ptr, y_ptr, R, D, eps,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < R)[:, None] & (cols < D)[None, :]
    offs = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    y = x * rstd[:, None] * w[None, :] * (z * tl.sigmoid(z))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def gated_rms_norm(*, x, z, w, eps):
    D = x.shape[-1]
    xc, zc = x.contiguous(), z.contiguous()
    y = torch.empty_like(xc)
    R = xc.numel() // D
    block_d = triton.next_power_of_2(D)
    block_r = _rows_per_program(block_d)
    _gated_rms_norm_kernel[(triton.cdiv(R, block_r),)](
        xc, zc, w, y, R, D, eps, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=_warps(block_r * block_d),
    )
    return y


# --- qk_norm_rope --------------------------------------------------------------------------------
# Per head: x̂ = x / sqrt(mean(x²) + eps) · (w + offset); then on dims d < rotary_dim
#   x'_d = x̂_d·cos_i + sign_d·x̂_partner(d)·sin_i
# neox: i = d mod R/2, partner = d ± R/2, sign − on the first half; gptj: i = d/2, partner = d xor 1,
# sign − on even d. The partner is re-loaded (an L1 hit) rather than shuffled between lanes.


@triton.jit
def _rope_pairs(d, ROT: tl.constexpr, NEOX: tl.constexpr):
    """For dims d of the rotary part: the partner dim, the angle index and the sign of sin."""
    HALF: tl.constexpr = ROT // 2
    if NEOX:
        partner = tl.where(d < HALF, d + HALF, d - HALF)
        idx = d % HALF
        sign = tl.where(d < HALF, -1.0, 1.0)
    else:
        partner = d ^ 1
        idx = d // 2
        sign = tl.where(d % 2 == 0, -1.0, 1.0)
    return partner, idx, sign


@triton.jit
def _norm_rope_heads(
    x_ptr, w_ptr, t, H, D, stride_t, stride_h, eps, offset, pos, cs_ptr, stride_cs,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    heads = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    HALF: tl.constexpr = ROT // 2
    partner, idx, sign = _rope_pairs(d, ROT, NEOX)
    rot = d < ROT
    partner = tl.where(rot, partner, d)
    hmask = heads < H
    mask = hmask[:, None] & (d < D)[None, :]
    base = x_ptr + t.to(tl.int64) * stride_t + heads[:, None] * stride_h
    x = tl.load(base + d[None, :], mask=mask, other=0.0).to(tl.float32)
    xp = tl.load(base + partner[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    w = tl.load(w_ptr + d, mask=d < D, other=0.0).to(tl.float32) + offset
    wp = tl.load(w_ptr + partner, mask=d < D, other=0.0).to(tl.float32) + offset
    xn = x * rstd[:, None] * w[None, :]
    xpn = xp * rstd[:, None] * wp[None, :]
    cos = tl.load(cs_ptr + pos * stride_cs + idx, mask=rot, other=1.0)
    sin = tl.load(cs_ptr + pos * stride_cs + HALF + idx, mask=rot, other=0.0)
    out = xn * cos[None, :] + (sign * sin)[None, :] * xpn
    tl.store(base + d[None, :], out.to(x_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    q_ptr, k_ptr, qw_ptr, kw_ptr, pos_ptr, cs_ptr, HQ, HK, D,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cs, eps, offset,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    _norm_rope_heads(q_ptr, qw_ptr, t, HQ, D, stride_qt, stride_qh, eps, offset, pos, cs_ptr, stride_cs,
                     ROT, NEOX, BLOCK_HQ, BLOCK_D)
    _norm_rope_heads(k_ptr, kw_ptr, t, HK, D, stride_kt, stride_kh, eps, offset, pos, cs_ptr, stride_cs,
                     ROT, NEOX, BLOCK_HK, BLOCK_D)


# Rows variant: q and k flattened to rows of one head (row r of q is token r // HQ, head r % HQ),
# BLOCK_R rows a program, q blocks then k blocks in one 1D grid. Small independent programs: no
# dependent k phase after the q stores, a few KB each and few registers, so many programs share an
# SM and more bytes are in flight (the token kernel at 16/2x256 is 73 registers x 8 warps: 3
# programs an SM). The partner is re-loaded only on the rotary part; cos/sin are gathered per row.


@triton.jit
def _rows_addr(r0, R, H, stride_t, stride_h, BLOCK_R: tl.constexpr):
    """Rows r0.. of a [T, H, D] tensor flattened to T·H head rows: the row mask and element offsets."""
    r = r0 + tl.arange(0, BLOCK_R)
    t = r // H
    return r < R, t, t.to(tl.int64) * stride_t + (r - t * H).to(tl.int64) * stride_h


@triton.jit
def _rows_weights(w_ptr, D, offset, ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_R: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    # w as a [BLOCK_R, BLOCK_D] tile (L1 hits) in x's layout: a 1D load would be converted through smem
    d = tl.arange(0, BLOCK_D)
    partner, idx, sign = _rope_pairs(d, ROT, NEOX)
    rows = w_ptr + tl.zeros([BLOCK_R, 1], dtype=tl.int32)
    w = tl.load(rows + d[None, :], mask=(d < D)[None, :], other=0.0).to(tl.float32) + offset
    wp = tl.load(rows + partner[None, :], mask=(d < ROT)[None, :], other=0.0).to(tl.float32) + offset
    return w, wp


@triton.jit
def _rows_load(
    x_ptr, pos_ptr, cs_ptr, r0, R, H, D, stride_t, stride_h, stride_cs,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, EVICT: tl.constexpr,
):
    """x (activation dtype), its rotary partners and the rows' cos and sin; all [BLOCK_R, BLOCK_D]."""
    rmask, t, off = _rows_addr(r0, R, H, stride_t, stride_h, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    partner, idx, sign = _rope_pairs(d, ROT, NEOX)
    # partner and idx stay in bounds past ROT (masked there) and contiguous: 16-byte loads
    mask = rmask[:, None] & (d < D)[None, :]
    pmask = rmask[:, None] & (d < ROT)[None, :]
    base = x_ptr + off[:, None]
    if EVICT:
        x = tl.load(base + d[None, :], mask=mask, other=0.0, eviction_policy="evict_first")
    else:
        x = tl.load(base + d[None, :], mask=mask, other=0.0)
    xp = tl.load(base + partner[None, :], mask=pmask, other=0.0)
    pos = tl.load(pos_ptr + t, mask=rmask, other=0).to(tl.int64)
    cs_row = cs_ptr + pos[:, None] * stride_cs
    cos = tl.load(cs_row + idx[None, :], mask=pmask, other=1.0)
    sin = tl.load(cs_row + ROT // 2 + idx[None, :], mask=pmask, other=0.0)
    return x, xp, cos, sin


@triton.jit
def _rows_store(
    x_ptr, x, xp, cos, sin, w, wp, r0, R, H, D, stride_t, stride_h, eps,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, EVICT: tl.constexpr,
):
    rmask, t, off = _rows_addr(r0, R, H, stride_t, stride_h, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    partner, idx, sign = _rope_pairs(d, ROT, NEOX)
    mask = rmask[:, None] & (d < D)[None, :]
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=1) / D + eps)
    out = ((xf * w * cos + (sign[None, :] * sin) * (xp.to(tl.float32) * wp)) * rstd[:, None]).to(x.dtype)
    if EVICT:
        tl.store(x_ptr + off[:, None] + d[None, :], out, mask=mask, eviction_policy="evict_first")
    else:
        tl.store(x_ptr + off[:, None] + d[None, :], out, mask=mask)


@triton.jit
def _norm_rope_rows(
    x_ptr, w_ptr, pos_ptr, cs_ptr, r0, R, H, D, stride_t, stride_h, stride_cs, eps, offset,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, EVICT: tl.constexpr,
):
    w, wp = _rows_weights(w_ptr, D, offset, ROT, NEOX, BLOCK_R, BLOCK_D)
    x, xp, cos, sin = _rows_load(x_ptr, pos_ptr, cs_ptr, r0, R, H, D, stride_t, stride_h, stride_cs,
                                 ROT, NEOX, BLOCK_R, BLOCK_D, EVICT)
    # In place, so every read of the block must precede any write: Triton picks the tile's layout,
    # and where it spreads a row over several warps (unvectorised, e.g. offline without the
    # divisibility hints: [1, 1] a thread, 4 warps across 256 columns) or repeats rows in several
    # warps (tiles smaller than the program's threads), one warp could write a row before another
    # has read its rotary partners. Found with a split variant of this kernel whose [8, 64] rotary
    # tile did split rows across warps: one failure in the GPU tests (H100, 08:20 UTC), none with
    # this barrier in 2 reruns. Cost here: rows8w4 at 16/2x256 T=4096 32.8 us against 32.5-33.3
    # without it (sweeps of 08:14-08:24 UTC).
    tl.debug_barrier()
    _rows_store(x_ptr, x, xp, cos, sin, w, wp, r0, R, H, D, stride_t, stride_h, eps, ROT, NEOX, BLOCK_R, BLOCK_D, EVICT)


@triton.jit
def _qk_norm_rope_rows_kernel(
    q_ptr, k_ptr, qw_ptr, kw_ptr, pos_ptr, cs_ptr, RQ, RK, HQ, HK, D, NQB,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cs, eps, offset,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, EVICT: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < NQB:
        _norm_rope_rows(q_ptr, qw_ptr, pos_ptr, cs_ptr, pid * BLOCK_R, RQ, HQ, D, stride_qt, stride_qh, stride_cs,
                        eps, offset, ROT, NEOX, BLOCK_R, BLOCK_D, EVICT)
    else:
        _norm_rope_rows(k_ptr, kw_ptr, pos_ptr, cs_ptr, (pid - NQB) * BLOCK_R, RK, HK, D, stride_kt, stride_kh,
                        stride_cs, eps, offset, ROT, NEOX, BLOCK_R, BLOCK_D, EVICT)


# Launch variants reachable by name (bench/gpu/sweep_elementwise.py times them):
#   rows{R}w{W}[e]   the rows kernel, R head rows a program, W warps, e = evict-first loads/stores;
#                    rows8w4 is the default: bench/gpu/sweep_elementwise.py on the H100,
#                    2026-11-23 02:09 UTC, 16/2x256 rot64 T=4096 32.7 us (token 38.4, a copy
#                    of the same 75 MB 31.5), T=16384 115.1 (token 134.5);
#                    32/8x128 rot128 T=4096 36.4 (38.2), T=16384 125.7 (131.4)
#   token            one program a token, q heads then k heads (the previous default)
# A persistent rows kernel (C programs an SM, the next block's loads issued before this block's
# stores) was slower in every case of that sweep (35.9-200 us) and was removed. So was (sweep of
# 2026-11-23 07:57 UTC) a loop kernel taking R head rows one at a time as [D] vectors with the
# weights and their partners loaded once a program (ncu had the rows kernel at 72% issue
# utilisation: with w and its partners re-read for every row from L1 it issues six loads an
# element): 16/2x256 T=4096 34.0-41.3 us against rows8w4's 32.5 (a copy of the same bytes 30.0),
# 32/8x128 T=16384 146.8-192.0 against 126.2; and a probe with the positions gather removed
# (cos/sin rows indexed by the token) was no faster (34.0 against 32.7 us), so the dependent
# pos -> cos/sin load is not what holds it. Nor (08:14-08:24 UTC) a split kernel reading the row
# once for its norm and pass-through columns and the rotary columns again as their own [R, ROT]
# tile (about 14 memory instructions a thread against 19): 31.0-31.9 us without the barrier its
# in-place update needs (see _norm_rope_rows; it raced), 32.4 with it, against rows8w4's 32.8.
QK_VARIANTS = ("rows8w4", "token", "rows2w1", "rows4w2", "rows8w2", "rows16w8", "rows4w4", "rows8w8", "rows8w4e")


def _parse_rows(variant: str) -> tuple[int, int, bool]:
    r, w = variant[4:].rstrip("e").split("w")
    return int(r), int(w), variant.endswith("e")


def qk_norm_rope(*, q, k, q_w, k_w, eps, positions, cos_sin, rotary_dim, style, weight_offset=0.0, num_warps=None,
                 variant="rows8w4"):
    T, HQ, D = q.shape
    HK = k.shape[1]
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("qk_norm_rope: q and k must be contiguous in their last dim (written in place)")
    cs = cos_sin if cos_sin.dtype == torch.float32 and cos_sin.stride(-1) == 1 else cos_sin.float().contiguous()
    block_d = triton.next_power_of_2(D)
    if T == 0:
        return q, k
    if variant.startswith("rows"):
        block_r, warps, evict = _parse_rows(variant)
        nqb = triton.cdiv(T * HQ, block_r)
        _qk_norm_rope_rows_kernel[(nqb + triton.cdiv(T * HK, block_r),)](
            q, k, q_w, k_w, positions, cs, T * HQ, T * HK, HQ, HK, D, nqb,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), cs.stride(0), eps, weight_offset,
            ROT=rotary_dim, NEOX=style == "neox", BLOCK_R=block_r, BLOCK_D=block_d, EVICT=evict,
            num_warps=num_warps or warps)
        return q, k
    if variant != "token":
        raise ValueError(f"qk_norm_rope: unknown variant {variant!r}")
    elements = (triton.next_power_of_2(HQ) + triton.next_power_of_2(HK)) * block_d
    _qk_norm_rope_kernel[(T,)](
        q, k, q_w, k_w, positions, cs, HQ, HK, D,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cs.stride(0), eps, weight_offset,
        ROT=rotary_dim, NEOX=style == "neox", BLOCK_HQ=triton.next_power_of_2(HQ),
        BLOCK_HK=triton.next_power_of_2(HK), BLOCK_D=block_d, num_warps=num_warps or _warps(elements),
    )
    return q, k


# --- silu_and_mul --------------------------------------------------------------------------------
# y[t, i] = silu(x[t, i]) · x[t, I + i]


@triton.jit
def _silu_and_mul_kernel(x_ptr, y_ptr, I, stride_x, stride_y, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < I
    a = tl.load(x_ptr + t * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(x_ptr + t * stride_x + I + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + t * stride_y + cols, (a * tl.sigmoid(a) * b).to(y_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(*, x):
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    T, two_i = x2.shape
    I = two_i // 2
    y = torch.empty((T, I), dtype=x.dtype, device=x.device)
    block = min(2048, triton.next_power_of_2(I))
    if T > 0:
        _silu_and_mul_kernel[(T, triton.cdiv(I, block))](x2, y, I, x2.stride(0), y.stride(0), BLOCK=block, num_warps=4)
    return y.view(*x.shape[:-1], I)
