"""Independent formulations the reference kernels are checked against (float64, explicit loops).

Nothing here imports tokenyard: each oracle restates the op's definition in the plainest form.
"""

from __future__ import annotations

import torch

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def tol(dtype: torch.dtype) -> dict:
    """assert_close tolerances for a kernel whose inputs were rounded to dtype."""
    return dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)


def rand(*shape, dtype=torch.float32, device="cpu", scale=1.0) -> torch.Tensor:
    """Random normal values, never zero-filled, already rounded to dtype."""
    return (torch.randn(*shape) * scale).to(device=device, dtype=dtype)


def softmax64(scores: torch.Tensor) -> torch.Tensor:
    e = (scores - scores.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def nvfp4_decode(packed: torch.Tensor, scales: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """Decode NVFP4 element by element from the layout's definition (float64)."""
    *lead, n, half = packed.shape
    out = torch.empty(*lead, n, half * 2, dtype=torch.float64)
    flat_p, flat_s = packed.reshape(-1, n, half).cpu(), scales.float().reshape(-1, n, half // 8).cpu()
    flat_g = global_scale.reshape(-1).cpu()
    flat_o = out.view(-1, n, half * 2)
    for m in range(flat_p.shape[0]):
        for row in range(n):
            for byte in range(half):
                for nibble in range(2):
                    col = 2 * byte + nibble
                    code = (int(flat_p[m, row, byte]) >> (4 * nibble)) & 0xF
                    value = -E2M1[code & 7] if code & 8 else E2M1[code & 7]
                    flat_o[m, row, col] = value * float(flat_s[m, row, col // 16]) * float(flat_g[m])
    return out
