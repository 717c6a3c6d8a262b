"""NVFP4 weights: the ``NVFP4Weight`` record and quantize / dequantize ops.

Layout: ``packed`` uint8 [..., N, K/2] holds two E2M1 values a byte, the even column in the low
nibble; ``scales`` float8_e4m3fn [..., N, K/16], one per block of 16 along K; ``global_scale``
fp32 [...] is a multiplier: w = e2m1 · scale · global_scale (ModelOpt's ``weight_scale_2``).
Loaders convert other conventions (compressed-tensors stores the reciprocal) into this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import FLOAT_TYPES, Validator

BLOCK = 16
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # codes 0..7; code | 8 is the negative


@dataclass
class NVFP4Weight:
    """A weight of logical shape [..., N, K] in NVFP4 (see the module docstring)."""

    packed: torch.Tensor
    scales: torch.Tensor
    global_scale: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.packed.shape[:-1], self.packed.shape[-1] * 2)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def validate(self, v: Validator, name: str, shape: str) -> None:
        """Check the three parts against each other and against the symbolic logical ``shape``."""
        dims = [d.strip() for d in shape.split(",")]
        packed = self.packed
        if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
            v.fail(f"{name}.packed", f"is {getattr(packed, 'dtype', type(packed).__name__)}, expected a uint8 tensor")
        # packed is [..., N, K/2]: its leading dims bind the shape's symbols, its last dim is half of K
        v.tensor(f"{name}.packed", packed, ",".join(dims[:-1] + [f"{name}_Khalf"]))
        v.dim(f"{name} (logical)", packed, len(dims) - 1, dims[-1], int(packed.shape[-1]) * 2)
        k = int(packed.shape[-1]) * 2
        if k % BLOCK:
            v.fail(f"{name}.packed", f"has K = {k}, expected a multiple of {BLOCK}")
        expected = (*packed.shape[:-1], k // BLOCK)
        if not isinstance(self.scales, torch.Tensor) or tuple(self.scales.shape) != expected or self.scales.dtype != torch.float8_e4m3fn:
            got = (tuple(self.scales.shape), self.scales.dtype) if isinstance(self.scales, torch.Tensor) else type(self.scales).__name__
            v.fail(f"{name}.scales", f"is {got}, expected float8_e4m3fn of shape {expected}")
        if not isinstance(self.global_scale, torch.Tensor) or tuple(self.global_scale.shape) != tuple(packed.shape[:-2]) \
                or self.global_scale.dtype != torch.float32:
            got = (tuple(self.global_scale.shape), self.global_scale.dtype) if isinstance(self.global_scale, torch.Tensor) else type(self.global_scale).__name__
            v.fail(f"{name}.global_scale", f"is {got}, expected float32 of shape {tuple(packed.shape[:-2])}")
        for part in ("scales", "global_scale"):
            if getattr(self, part).device != packed.device:
                v.fail(f"{name}.{part}", f"is on {getattr(self, part).device}, expected {packed.device}")


def _quantize_example(device, dtype, N=4096, K=4096):
    return dict(w=randn(N, K, device=device, dtype=dtype, scale=0.02))


declare("nvfp4_quantize", example=_quantize_example,
        cost=lambda a: (4.0 * a["w"].numel(), nbytes(a["w"]) * (1 + 0.5625 / a["w"].element_size())),
        check=lambda out, ref, args: _same_dequantized(out[0], ref[0]),
        shapes={"small": dict(N=8, K=64), "llama": dict(N=4096, K=4096)})


def _same_dequantized(out: NVFP4Weight, ref: NVFP4Weight) -> Optional[str]:
    from tokenyard.registry.tuning import relative_error

    a, b = nvfp4_dequantize(out, kernel="reference"), nvfp4_dequantize(ref, kernel="reference")
    err = relative_error(a, b)
    return None if err <= 1e-2 else f"dequantized result differs from the reference's by relative L2 {err:.3g}"


def nvfp4_quantize(w: torch.Tensor, *, kernel: Optional[str] = None) -> NVFP4Weight:
    """Quantize w [..., N, K] (K a multiple of 16) to NVFP4: one global fp32 multiplier per
    matrix, one e4m3 scale per 16 values along K, E2M1 values rounded to nearest."""
    v = Validator("nvfp4_quantize")
    if not isinstance(w, torch.Tensor) or w.dim() < 2:
        v.fail("w", f"is {getattr(w, 'shape', type(w).__name__)}, expected a tensor [..., N, K]")
    v.tensor("w", w, ",".join([f"L{i}" for i in range(w.dim() - 2)] + ["N", "K"]), FLOAT_TYPES)
    if w.shape[-1] % BLOCK:
        v.fail("w", f"has K = {w.shape[-1]}, expected a multiple of {BLOCK}")
    return dispatch("nvfp4_quantize", dict(w=w), kernel)


def _dequantize_example(device, dtype, N=4096, K=4096):
    return dict(q=nvfp4_quantize(randn(N, K, device=device, dtype=torch.float32, scale=0.02), kernel="reference"))


declare("nvfp4_dequantize", example=_dequantize_example,
        cost=lambda a: (2.0 * a["q"].packed.numel() * 2, nbytes(a["q"].packed, a["q"].scales) + 2 * a["q"].packed.numel() * 2 * 2),
        shapes={"small": dict(N=8, K=64), "llama": dict(N=4096, K=4096)})


def nvfp4_dequantize(q: NVFP4Weight, *, kernel: Optional[str] = None) -> torch.Tensor:
    """NVFP4Weight → bf16 [..., N, K] (e2m1 · scale · global_scale, exact for representable values)."""
    v = Validator("nvfp4_dequantize")
    if not isinstance(q, NVFP4Weight):
        v.fail("q", f"is {type(q).__name__}, expected an NVFP4Weight")
    q.validate(v, "q", ",".join([f"L{i}" for i in range(q.packed.dim() - 2)] + ["N", "K"]))
    return dispatch("nvfp4_dequantize", dict(q=q), kernel)
