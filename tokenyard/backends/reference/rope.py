"""Rotary position embedding (neox and gptj layouts) and the fused per-head QK-norm + RoPE.

Owns the rotation of the first `rotary_dim` dims of each head, written back in place; the rest
of the head is left untouched (partial RoPE).

`cos_sin[p] = cat(cos(p·θ), sin(p·θ))`, each rotary_dim/2 wide. Pair i of the rotary part is
(x_a, x_b) = (x[i], x[i + rotary_dim/2]) for neox (rotate-half) and (x[2i], x[2i+1]) for gptj;
each pair rotates by its angle:

    x_a' = x_a·cos_i − x_b·sin_i
    x_b' = x_b·cos_i + x_a·sin_i

computed for the whole rotary part at once as x' = x·cos + partner(x)·(∓sin), where partner(x)
swaps each x_a with its x_b and ∓sin is −sin_i at x_a's place and +sin_i at x_b's.
"""

from __future__ import annotations

import torch

from .norm import rms

_STYLES = ("neox", "gptj")


def angles(positions: torch.Tensor, cos_sin: torch.Tensor, rotary_dim: int, style: str):
    """(cos, ∓sin), each [T, 1, rotary_dim] fp32, laid out like the rotary part of a head."""
    if style not in _STYLES:
        raise ValueError(f"style must be one of {_STYLES}, got {style!r}")
    half = rotary_dim // 2
    cs = cos_sin[positions].float()
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    if style == "neox":
        return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)
    return torch.stack((cos, cos), dim=-1).flatten(-2), torch.stack((-sin, sin), dim=-1).flatten(-2)


def rotate(part: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, style: str) -> torch.Tensor:
    """The rotary part [T, H, rotary_dim] (fp32) rotated; a new fp32 tensor."""
    half = part.shape[-1] // 2
    if style == "neox":
        partner = part.roll(half, dims=-1)
    else:
        partner = part.unflatten(-1, (half, 2)).flip(-1).flatten(-2)
    return part * cos + partner * signed_sin


def rope(
    *,
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    cos_sin: torch.Tensor,
    rotary_dim: int,
    style: str,
):
    cos, signed_sin = angles(positions, cos_sin, rotary_dim, style)
    for x in (q, k):
        part = x[..., :rotary_dim]
        part.copy_(rotate(part.float(), cos, signed_sin, style))
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
    cos, signed_sin = angles(positions, cos_sin, rotary_dim, style)
    for x, w in ((q, q_w), (k, k_w)):
        y = rms(x, eps) * (w.float() + weight_offset)
        y[..., :rotary_dim] = rotate(y[..., :rotary_dim], cos, signed_sin, style)
        x.copy_(y)
    return q, k
