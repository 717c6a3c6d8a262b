"""Norm ops: RMSNorm (optionally fused with the residual add and Qwen3-Next's (1+w) offset) and
the gated RMSNorm that closes a Gated-DeltaNet layer."""

from __future__ import annotations

from typing import Optional, Union

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, FLOAT_TYPES, Validator


def _rms_norm_example(device, dtype, T=4096, D=4096, residual=True):
    return dict(
        x=randn(T, D, device=device, dtype=dtype),
        w=randn(D, device=device, dtype=dtype, scale=0.1) + 1,
        eps=1e-6,
        residual=randn(T, D, device=device, dtype=dtype) if residual else None,
        weight_offset=0.0,
    )


def _rms_norm_cost(a):
    x, r = a["x"], a["residual"]
    moved = nbytes(x, a["w"]) + nbytes(x)  # read x, w; write y
    if r is not None:
        moved += nbytes(r) + nbytes(x)  # read residual; write h
    return 4.0 * x.numel(), moved


declare("rms_norm", example=_rms_norm_example, cost=_rms_norm_cost,
        shapes={"small": dict(T=16, D=64), "llama": dict(T=4096, D=4096)})


def rms_norm(
    x: torch.Tensor,
    w: torch.Tensor,
    eps: float,
    residual: Optional[torch.Tensor] = None,
    weight_offset: float = 0.0,
    *,
    kernel: Optional[str] = None,
) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """RMS normalisation over the last dim.

    x: [T, D] activations. w: [D] weight (any float dtype). Returns y = x̂ · (w + weight_offset)
    with x̂ = x / sqrt(mean(x²) + eps), computed in fp32, in x's dtype. With ``residual`` [T, D]
    (x's dtype) returns (norm(h), h) where h = x + residual; weight_offset=1 is Qwen3-Next's (1+w).
    """
    v = Validator("rms_norm")
    v.tensor("x", x, "T,D", ACTIVATION_TYPES)
    v.tensor("w", w, "D", FLOAT_TYPES)
    if residual is not None:
        v.tensor("residual", residual, "T,D", like="x", like_value=x)
    v.number("eps", eps, low=0, low_open=True)
    v.number("weight_offset", weight_offset)
    return dispatch("rms_norm", dict(x=x, w=w, eps=eps, residual=residual, weight_offset=weight_offset), kernel)


def _gated_example(device, dtype, T=4096, H=32, D=128):
    return dict(x=randn(T, H, D, device=device, dtype=dtype), z=randn(T, H, D, device=device, dtype=dtype),
                w=randn(D, device=device, dtype=dtype, scale=0.1) + 1, eps=1e-6)


declare("gated_rms_norm", example=_gated_example,
        cost=lambda a: (8.0 * a["x"].numel(), nbytes(a["x"], a["z"], a["w"], a["x"])),
        shapes={"small": dict(T=16, H=2, D=32), "qwen3-next": dict(T=4096, H=32, D=128)})


def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, w: torch.Tensor, eps: float, *, kernel: Optional[str] = None) -> torch.Tensor:
    """y = rmsnorm(x) · w · silu(z) per head (the Gated-DeltaNet output norm).

    x, z: [T, H, D] activations of one dtype; w: [D]. fp32 math, result in x's dtype.
    """
    v = Validator("gated_rms_norm")
    v.tensor("x", x, "T,H,D", ACTIVATION_TYPES)
    v.tensor("z", z, "T,H,D", like="x", like_value=x)
    v.tensor("w", w, "D", FLOAT_TYPES)
    v.number("eps", eps, low=0, low_open=True)
    return dispatch("gated_rms_norm", dict(x=x, z=z, w=w, eps=eps), kernel)
