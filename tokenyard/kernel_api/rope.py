"""Rotary position embedding, and the fused per-head q/k RMSNorm + partial RoPE of Qwen3-style
attention. Both work in place on q and k and return them.

``cos_sin`` [max_pos, rotary_dim] fp32: row p is cat(cos(p·inv_freq), sin(p·inv_freq)), each
rotary_dim/2 wide. Style ``neox`` rotates the two halves of the rotary part (x1, x2) → (x1·cos −
x2·sin, x2·cos + x1·sin); ``gptj`` rotates interleaved pairs (x[2i], x[2i+1]) the same way.
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, FLOAT_TYPES, INDEX_TYPES, Validator

STYLES = ("neox", "gptj")


def make_cos_sin(max_pos: int, rotary_dim: int, base: float = 10000.0, device="cpu") -> torch.Tensor:
    """The plain (unscaled) cos_sin table for ``rope`` of rotary_dim dims."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    freqs = torch.outer(torch.arange(max_pos, dtype=torch.float64), inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1).to(device=device, dtype=torch.float32)


def _validate_rope(v: Validator, q, k, positions, cos_sin, rotary_dim, style) -> None:
    v.tensor("q", q, "T,Hq,D", ACTIVATION_TYPES)
    v.tensor("k", k, "T,Hk,D", like="q", like_value=q)
    v.tensor("positions", positions, "T", INDEX_TYPES)
    v.tensor("cos_sin", cos_sin, "max_pos,rot", FLOAT_TYPES)
    v.number("rotary_dim", rotary_dim, low=2, high=v.size("D"), integer=True)
    if rotary_dim % 2 or cos_sin.shape[1] != rotary_dim:
        v.fail("rotary_dim", f"is {rotary_dim}, expected an even number equal to cos_sin's width {cos_sin.shape[1]}")
    v.choice("style", style, STYLES)
    v.index_range("positions", positions, 0, cos_sin.shape[0], "positions (rows of cos_sin)")


def _rope_example(device, dtype, T=4096, Hq=16, Hk=2, D=256, rot=64, neox=True):
    return dict(q=randn(T, Hq, D, device=device, dtype=dtype), k=randn(T, Hk, D, device=device, dtype=dtype),
                positions=torch.randint(0, 8 * T, (T,), device=device), cos_sin=make_cos_sin(8 * T, rot, device=device),
                rotary_dim=rot, style="neox" if neox else "gptj")


def _rope_cost(a):
    q, k = a["q"], a["k"]
    return 6.0 * (q.shape[1] + k.shape[1]) * q.shape[0] * a["rotary_dim"], 2 * nbytes(q, k) + nbytes(a["positions"])


declare("rope", mutates=("q", "k"), example=_rope_example, cost=_rope_cost,
        shapes={"small": dict(T=8, Hq=4, Hk=2, D=32, rot=16), "qwen3-next": dict(T=4096, Hq=16, Hk=2, D=256, rot=64)})


def rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, rotary_dim: int,
         style: str, *, kernel: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the first ``rotary_dim`` dims of q [T, Hq, D] and k [T, Hk, D] in place by the
    positions [T]; returns (q, k)."""
    v = Validator("rope")
    _validate_rope(v, q, k, positions, cos_sin, rotary_dim, style)
    return dispatch("rope", dict(q=q, k=k, positions=positions, cos_sin=cos_sin, rotary_dim=rotary_dim, style=style), kernel)


def _qknr_example(device, dtype, T=4096, Hq=16, Hk=2, D=256, rot=64):
    a = _rope_example(device, dtype, T, Hq, Hk, D, rot)
    a.update(q_w=randn(D, device=device, dtype=dtype, scale=0.1), k_w=randn(D, device=device, dtype=dtype, scale=0.1),
             eps=1e-6, weight_offset=1.0)
    return dict(q=a["q"], k=a["k"], q_w=a["q_w"], k_w=a["k_w"], eps=a["eps"], positions=a["positions"],
                cos_sin=a["cos_sin"], rotary_dim=rot, style="neox", weight_offset=1.0)


declare("qk_norm_rope", mutates=("q", "k"), example=_qknr_example,
        cost=lambda a: (10.0 * (a["q"].numel() + a["k"].numel()), 2 * nbytes(a["q"], a["k"]) + nbytes(a["positions"])),
        shapes={"small": dict(T=8, Hq=4, Hk=2, D=32, rot=16), "qwen3-next": dict(T=4096, Hq=16, Hk=2, D=256, rot=64)})


def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, q_w: torch.Tensor, k_w: torch.Tensor, eps: float,
                 positions: torch.Tensor, cos_sin: torch.Tensor, rotary_dim: int, style: str,
                 weight_offset: float = 0.0, *, kernel: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head RMSNorm of q [T, Hq, D] with (q_w + weight_offset) and of k [T, Hk, D] with
    (k_w + weight_offset), then RoPE on the first ``rotary_dim`` dims, in place, one pass; returns (q, k)."""
    v = Validator("qk_norm_rope")
    _validate_rope(v, q, k, positions, cos_sin, rotary_dim, style)
    v.tensor("q_w", q_w, "D", FLOAT_TYPES)
    v.tensor("k_w", k_w, "D", FLOAT_TYPES)
    v.number("eps", eps, low=0, low_open=True)
    v.number("weight_offset", weight_offset)
    return dispatch("qk_norm_rope", dict(q=q, k=k, q_w=q_w, k_w=k_w, eps=eps, positions=positions, cos_sin=cos_sin,
                                         rotary_dim=rotary_dim, style=style, weight_offset=weight_offset), kernel)
