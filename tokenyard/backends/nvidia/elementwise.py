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
def _norm_rope_heads(
    x_ptr, w_ptr, t, H, D, stride_t, stride_h, eps, offset, pos, cs_ptr, stride_cs,
    ROT: tl.constexpr, NEOX: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    heads = tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_D)
    HALF: tl.constexpr = ROT // 2
    if NEOX:
        partner = tl.where(d < HALF, d + HALF, d - HALF)
        idx = d % HALF
        sign = tl.where(d < HALF, -1.0, 1.0)
    else:
        partner = d ^ 1
        idx = d // 2
        sign = tl.where(d % 2 == 0, -1.0, 1.0)
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


def qk_norm_rope(*, q, k, q_w, k_w, eps, positions, cos_sin, rotary_dim, style, weight_offset=0.0, num_warps=None):
    T, HQ, D = q.shape
    HK = k.shape[1]
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("qk_norm_rope: q and k must be contiguous in their last dim (written in place)")
    cs = cos_sin if cos_sin.dtype == torch.float32 and cos_sin.stride(-1) == 1 else cos_sin.float().contiguous()
    block_d = triton.next_power_of_2(D)
    elements = (triton.next_power_of_2(HQ) + triton.next_power_of_2(HK)) * block_d
    if T > 0:
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
