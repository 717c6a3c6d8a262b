"""NVFP4 weights: quantize, dequantize, and the dense view the gemm and MoE kernels multiply by.

Owns the E2M1 code table and the rounding rules; the `NVFP4Weight` record itself belongs to
`tokenyard.kernel_api.quant`.

A weight w[..., N, K] is stored as
    w[n, k] = e2m1[n, k] · scale[n, k // 16] · global_scale
with e2m1 ∈ ±{0, 0.5, 1, 1.5, 2, 3, 4, 6} (code bit 3 = sign, bits 0-2 index the table), two codes
a byte (even column in the low nibble), scale float8_e4m3fn per block of 16 along K, and one fp32
global_scale per matrix (a multiplier, ModelOpt's weight_scale_2).

Quantization (ModelOpt's recipe):
    global_scale = amax(|w|) / (6·448)                 so that every block scale fits e4m3
    scale_b      = e4m3(amax_b(|w|) / 6 / global_scale)   round-to-nearest-even
    code         = nearest E2M1 to w / (scale_b·global_scale), ties to the even code, saturating at 6
"""

from __future__ import annotations

import torch

from tokenyard.kernel_api.quant import NVFP4Weight

BLOCK = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring E2M1 magnitudes; a tie rounds to the even code, which is the
# lower neighbour at even midpoint indices and the upper one at odd indices.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 code (uint8, sign in bit 3) of each fp32 element, ties to even."""
    mag = x.abs()
    code = torch.zeros_like(mag, dtype=torch.uint8)
    for i, m in enumerate(_MIDPOINTS):
        code += (mag > m) if i % 2 == 0 else (mag >= m)
    return code | ((x < 0).to(torch.uint8) << 3)


def _e2m1_values(codes: torch.Tensor) -> torch.Tensor:
    table = torch.tensor(E2M1_VALUES, dtype=torch.float32, device=codes.device)
    value = table[(codes & 7).long()]
    return torch.where(codes >= 8, -value, value)


def nvfp4_quantize(*, w: torch.Tensor) -> NVFP4Weight:
    wf = w.float()
    blocks = wf.unflatten(-1, (-1, BLOCK))  # [..., N, K/16, 16]
    amax = wf.abs().amax(dim=(-2, -1))
    global_scale = amax / (E2M1_MAX * E4M3_MAX)
    # An all-zero matrix gets scale 1 so that the divisions below stay finite; its codes are 0.
    global_scale = torch.where(global_scale > 0, global_scale, torch.ones_like(global_scale))
    gs = global_scale[..., None, None]
    scales = (blocks.abs().amax(-1) / E2M1_MAX / gs).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    denom = scales.float()[..., None] * gs[..., None]
    scaled = torch.where(denom > 0, blocks / denom, torch.zeros_like(blocks))
    codes = _e2m1_codes(scaled).flatten(-2)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return NVFP4Weight(packed=packed, scales=scales, global_scale=global_scale)


def dequantize_fp32(q: NVFP4Weight) -> torch.Tensor:
    """The exact values q stands for, in fp32 (e2m1·e4m3·fp32 is exact in fp32 but not in bf16)."""
    codes = torch.stack((q.packed & 0xF, q.packed >> 4), dim=-1).flatten(-2)
    values = _e2m1_values(codes).unflatten(-1, (-1, BLOCK))
    w = values * q.scales.float()[..., None] * q.global_scale.float()[..., None, None, None]
    return w.flatten(-2)


def nvfp4_dequantize(*, q: NVFP4Weight) -> torch.Tensor:
    return dequantize_fp32(q).to(torch.bfloat16)


def dense_fp32(w) -> torch.Tensor:
    """A weight operand (a tensor or an NVFP4Weight) as a dense fp32 tensor."""
    return dequantize_fp32(w) if isinstance(w, NVFP4Weight) else w.float()


def expert_fp32(w, e: int) -> torch.Tensor:
    """Matrix e of a stacked [E, N, K] weight operand (a tensor or an NVFP4Weight) as dense fp32."""
    if isinstance(w, NVFP4Weight):
        return dequantize_fp32(NVFP4Weight(packed=w.packed[e], scales=w.scales[e], global_scale=w.global_scale[e]))
    return w[e].float()
