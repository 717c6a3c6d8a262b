"""Gated activations: silu_and_mul, y = silu(gate)·up with x = [gate ‖ up], in fp32."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(*, x: torch.Tensor) -> torch.Tensor:
    gate, up = x.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)
