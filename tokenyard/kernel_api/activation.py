"""Activation ops: the SwiGLU gate silu(x[:, :I]) · x[:, I:]."""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, Validator

declare("silu_and_mul",
        example=lambda device, dtype, T=4096, I=11008: dict(x=randn(T, 2 * I, device=device, dtype=dtype)),
        cost=lambda a: (5.0 * a["x"].numel() / 2, 1.5 * nbytes(a["x"])),
        shapes={"small": dict(T=8, I=32), "llama": dict(T=4096, I=11008)})


def silu_and_mul(x: torch.Tensor, *, kernel: Optional[str] = None) -> torch.Tensor:
    """x: [T, 2I] (gate ‖ up) → [T, I] = silu(gate) · up, in x's dtype."""
    v = Validator("silu_and_mul")
    v.tensor("x", x, "T,I2", ACTIVATION_TYPES)
    if x.shape[1] % 2:
        v.fail("x", f"has last dim {x.shape[1]}, expected an even size (gate and up halves)")
    return dispatch("silu_and_mul", dict(x=x), kernel)
