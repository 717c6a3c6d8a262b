"""NVFP4 checkpoints: ModelOpt and compressed-tensors tensors assembled into `NVFP4Weight`.

Owns: recognising the per-module tensors of an NVFP4 checkpoint in a stream of (name, tensor),
converting each convention into tokenyard's (packed, scales, global_scale multiplier), and the
row-wise operations models apply to weights that may be NVFP4 (joining gate and up, stacking
experts, permuting rows, moving to a device). May not touch: which weights a model has, reading
files (the HF loader streams the tensors), the kernels that multiply by NVFP4 weights.

A quantized linear `<m>` arrives as
    ModelOpt            <m>.weight uint8 [N, K/2]         <m>.weight_scale e4m3 [N, K/16]
                        <m>.weight_scale_2 fp32 [] or [1]  (the multiplier: w = e2m1·scale·weight_scale_2)
    compressed-tensors  <m>.weight_packed uint8 [N, K/2]  <m>.weight_scale e4m3 [N, K/16]
                        <m>.weight_global_scale fp32       (the RECIPROCAL: w = e2m1·scale / weight_global_scale)
and both pack two E2M1 codes a byte with the even column in the low nibble, as NVFP4Weight does.
Activation scales (`input_scale`, `input_global_scale`) are dropped: tokenyard multiplies NVFP4
weights by bf16 activations (the Hopper path: dequantize in registers, multiply in bf16).
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator, Union

import torch

from tokenyard.kernel_api.quant import NVFP4Weight, nvfp4_dequantize

Weight = Union[torch.Tensor, NVFP4Weight]

_ACTIVATION_SCALES = ("input_scale", "input_global_scale")
_MODELOPT = ("weight", "weight_scale", "weight_scale_2")
_COMPRESSED_TENSORS = ("weight_packed", "weight_scale", "weight_global_scale")
_PART_NAMES = {"weight_packed", "weight_scale", "weight_scale_2", "weight_global_scale"}
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def assemble(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, Weight]]:
    """Pass (name, tensor) pairs through, replacing the parts of each NVFP4 linear by one
    (`<m>.weight`, NVFP4Weight) pair once all its parts have arrived (they may sit in different
    shards). Plain checkpoints go through unchanged. Raises ValueError naming a module whose
    parts are incomplete or inconsistent."""
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        if isinstance(tensor, NVFP4Weight):  # assembled already (by the loader)
            yield name, tensor
            continue
        module, _, leaf = name.rpartition(".")
        if leaf in _ACTIVATION_SCALES:
            continue
        if leaf == "weight_scale_inv" or (leaf not in _PART_NAMES and tensor.dtype in _FP8):
            raise ValueError(f"checkpoint tensor {name}: is FP8-quantized ({tensor.dtype}); tokenyard loads bf16/fp16/fp32 "
                             "and NVFP4 checkpoints, expected one of those")
        if leaf in _PART_NAMES or (leaf == "weight" and tensor.dtype == torch.uint8):
            parts = pending.setdefault(module, {})
            parts[leaf] = tensor
            if all(p in parts for p in _MODELOPT):
                del pending[module]
                yield f"{module}.weight", _nvfp4(module, parts["weight"], parts["weight_scale"], parts["weight_scale_2"].float())
            elif all(p in parts for p in _COMPRESSED_TENSORS):
                del pending[module]
                yield f"{module}.weight", _nvfp4(module, parts["weight_packed"], parts["weight_scale"],
                                                 1.0 / parts["weight_global_scale"].float())
            continue
        yield name, tensor
    if pending:
        module, parts = next(iter(pending.items()))
        raise ValueError(
            f"checkpoint tensor {module}: has {sorted(parts)}, expected the NVFP4 parts {list(_MODELOPT)} (ModelOpt) "
            f"or {list(_COMPRESSED_TENSORS)} (compressed-tensors); {len(pending)} module(s) incomplete"
        )


def _nvfp4(module: str, packed: torch.Tensor, scales: torch.Tensor, global_scale: torch.Tensor) -> NVFP4Weight:
    if packed.dtype != torch.uint8 or packed.dim() < 2:
        raise ValueError(f"checkpoint tensor {module}: packed weight is {packed.dtype} {tuple(packed.shape)}, expected uint8 [..., N, K/2]")
    expected = (*packed.shape[:-1], packed.shape[-1] * 2 // 16)
    if tuple(scales.shape) != expected or scales.dtype != torch.float8_e4m3fn:
        raise ValueError(
            f"checkpoint tensor {module}.weight_scale: is {scales.dtype} {tuple(scales.shape)}, "
            f"expected float8_e4m3fn {expected} for a packed weight {tuple(packed.shape)}"
        )
    lead = tuple(packed.shape[:-2])
    if global_scale.numel() == 1:
        global_scale = global_scale.reshape(()).expand(lead).clone()
    elif global_scale.numel() == max(1, int(torch.Size(lead).numel())):
        global_scale = global_scale.reshape(lead)
    else:
        raise ValueError(f"checkpoint tensor {module}: global scale has shape {tuple(global_scale.shape)}, expected one value per matrix {lead}")
    return NVFP4Weight(packed=packed, scales=scales, global_scale=global_scale.float().contiguous())


def place(w: Weight, dtype: torch.dtype, device: torch.device) -> Weight:
    """A dense weight cast to the activation dtype on `device`; an NVFP4 weight moved as is."""
    if isinstance(w, NVFP4Weight):
        return NVFP4Weight(packed=w.packed.to(device), scales=w.scales.to(device), global_scale=w.global_scale.to(device, torch.float32))
    return w.to(device=device, dtype=dtype)


def dense(w: Weight, dtype: torch.dtype) -> torch.Tensor:
    """A weight as a dense tensor of `dtype`, for the few weights models use outside gemm (MLA's
    absorbed kv_b). e2m1·e4m3 is exact in bf16, so the op dequantizes with a unit global scale and
    the multiplier is applied in `dtype`: exact in fp32, one rounding in bf16."""
    if not isinstance(w, NVFP4Weight):
        return w.to(dtype)
    unit = NVFP4Weight(packed=w.packed, scales=w.scales, global_scale=torch.ones_like(w.global_scale))
    return nvfp4_dequantize(unit).to(dtype) * w.global_scale.to(dtype)[..., None, None]


def take_rows(w: Weight, index: torch.Tensor) -> Weight:
    """Rows `index` of w [N, K] (a row permutation or selection, exact for NVFP4)."""
    if isinstance(w, NVFP4Weight):
        return NVFP4Weight(packed=w.packed[index], scales=w.scales[index], global_scale=w.global_scale)
    return w[index]


def cat_rows(parts: list[Weight]) -> Weight:
    """Matrices [N_i, K] joined into [ΣN_i, K] (gate + up → w13; q, k, v → qkv).

    NVFP4 parts share one global multiplier afterwards: exact when theirs are equal (ModelOpt
    exports fused-in-serving layers that way); otherwise the block scales of the parts with a
    smaller multiplier are rescaled into the largest one and rounded to e4m3 again, which can
    change them by one e4m3 step (warned about once)."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(parts, dim=-2)
    if not all(isinstance(p, NVFP4Weight) for p in parts):
        raise ValueError("cannot join NVFP4 and dense weights into one matrix; expected all of one kind")
    common = torch.stack([p.global_scale for p in parts]).amax(dim=0)
    scales = []
    for p in parts:
        if torch.equal(p.global_scale, common):
            scales.append(p.scales)
        else:
            warnings.warn("NVFP4 matrices joined with different global scales: block scales rescaled (lossy)", stacklevel=2)
            ratio = (p.global_scale / common)[..., None, None]
            scales.append((p.scales.float() * ratio).to(torch.float8_e4m3fn))
    return NVFP4Weight(packed=torch.cat([p.packed for p in parts], dim=-2),
                       scales=torch.cat(scales, dim=-2), global_scale=common)


def stack(parts: list[Weight]) -> Weight:
    """Per-expert matrices [N, K] stacked into [E, N, K] (an NVFP4 stack keeps one multiplier per expert)."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.stack(parts)
    if not all(isinstance(p, NVFP4Weight) for p in parts):
        raise ValueError("cannot stack NVFP4 and dense expert weights together; expected all of one kind")
    return NVFP4Weight(packed=torch.stack([p.packed for p in parts]), scales=torch.stack([p.scales for p in parts]),
                       global_scale=torch.stack([p.global_scale for p in parts]))
