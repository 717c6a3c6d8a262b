"""RMSNorm in its three forms: plain (optionally fused with the residual add), gated (GDN output).

Owns the fp32 normalisation every other reference module reuses (`rms`); touches no cache or state.

    rms(x) = x / sqrt(mean(x²) + eps)          over the last dim, in fp32
    rms_norm:        y = rms(h)·(w + offset),  h = x (+ residual, summed in the activation dtype)
    gated_rms_norm:  y = rms(x)·w·silu(z)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) over the last dim, in fp32."""
    x = x.float()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


def rms_norm(
    *,
    x: torch.Tensor,
    w: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    weight_offset: float = 0.0,
):
    # The residual stream is kept in the activation dtype, as every HF model keeps it.
    h = x if residual is None else x + residual
    y = (rms(h, eps) * (w.float() + weight_offset)).to(x.dtype)
    return y if residual is None else (y, h)


def gated_rms_norm(*, x: torch.Tensor, z: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return (rms(x, eps) * w.float() * F.silu(z.float())).to(x.dtype)
