"""Helpers shared by the op modules: element sizes, example-input makers and op declaration."""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.registry import OpSpec, define_op, dispatch

__all__ = ["OpSpec", "declare", "dispatch", "nbytes", "randn", "default_dtype"]


def declare(name: str, **kwargs) -> OpSpec:
    return define_op(OpSpec(name=name, **kwargs))


def nbytes(*tensors: Optional[torch.Tensor]) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)))


def default_dtype(device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def randn(*shape, device, dtype, scale: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return (torch.randn(*shape, device="cpu", dtype=torch.float32, generator=generator) * scale).to(device=device, dtype=dtype)
