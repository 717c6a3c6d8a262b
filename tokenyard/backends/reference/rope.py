"""Rotary position embedding (neox and gptj layouts) and the fused per-head QK-norm + RoPE.

Owns the rotation of the first `rotary_dim` dims of each head, written back in place; the rest
of the head is left untouched (partial RoPE).

`cos_sin[p] = cat(cos(p·θ), sin(p·θ))`, each rotary_dim/2 wide. Pair i of the rotary part is
(x_a, x_b) = (x[i], x[i + rotary_dim/2]) for neox (rotate-half) and (x[2i], x[2i+1]) for gptj;
each pair rotates by its angle:

    x_a' = x_a·cos_i − x_b·sin_i
    x_b' = x_b·cos_i + x_a·sin_i
"""

from __future__ import annotations

import torch

from .norm import rms

_STYLES = ("neox", "gptj")


def rotated(x: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, rotary_dim: int, style: str) -> torch.Tensor:
    """x[T, H, D] (fp32) with its first rotary_dim dims rotated; a new fp32 tensor."""
    if style not in _STYLES:
        raise ValueError(f"style must be one of {_STYLES}, got {style!r}")
    half = rotary_dim // 2
    cs = cos_sin[positions].float()
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    part, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if style == "neox":
        a, b = part[..., :half], part[..., half:]
        part = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    else:
        a, b = part[..., 0::2], part[..., 1::2]
        part = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    return torch.cat((part, rest), dim=-1)


def rope(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    rotary_dim: int,
    style: str,
):
    for x in (q, k):
        x.copy_(rotated(x.float(), positions, cos_sin, rotary_dim, style))
    return q, k


def qk_norm_rope(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    q_w: torch.Tensor,
    k_w: torch.Tensor,
    eps: float,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    rotary_dim: int,
    style: str,
    weight_offset: float = 0.0,
):
    # Normalised and rotated in fp32, rounded once.
    for x, w in ((q, q_w), (k, k_w)):
        x.copy_(rotated(rms(x, eps) * (w.float() + weight_offset), positions, cos_sin, rotary_dim, style))
    return q, k
