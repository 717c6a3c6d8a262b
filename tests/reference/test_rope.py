"""rope (neox, gptj, partial) against a complex-number rotation; qk_norm_rope against norm then rope."""

import pytest
import torch

from tokenyard.backends.reference.rope import qk_norm_rope, rope

from .oracles import rand, tol

DTYPES = [torch.float32, torch.bfloat16]


def cos_sin_table(max_pos: int, rotary_dim: int, base: float = 10000.0) -> torch.Tensor:
    inv_freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1).float()


def rotate_complex(x: torch.Tensor, positions: torch.Tensor, rotary_dim: int, style: str, base: float = 10000.0):
    """Each rotary pair as one complex number z, rotated to z·e^{i·pos·θ_j}; the rest unchanged."""
    x = x.double().cpu()
    half = rotary_dim // 2
    theta = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    turn = torch.polar(torch.ones(len(positions), half, dtype=torch.float64), positions.cpu().double()[:, None] * theta)
    part = x[..., :rotary_dim]
    if style == "neox":
        z = torch.complex(part[..., :half], part[..., half:]) * turn[:, None, :]
        rotated = torch.cat((z.real, z.imag), dim=-1)
    else:
        z = torch.view_as_complex(part.reshape(*part.shape[:-1], half, 2).contiguous()) * turn[:, None, :]
        rotated = torch.view_as_real(z).flatten(-2)
    return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)


@pytest.mark.parametrize("style", ["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [32, 16])  # full head and partial rotary
@pytest.mark.parametrize("dtype", DTYPES)
def test_rope_rotates_each_pair_by_position_times_frequency(device, style, rotary_dim, dtype):
    t, hq, hk, d = 9, 4, 2, 32
    q, k = rand(t, hq, d, dtype=dtype, device=device), rand(t, hk, d, dtype=dtype, device=device)
    positions = torch.tensor([0, 1, 2, 5, 17, 100, 3, 3, 250], device=device)
    q_in, k_in = q.clone(), k.clone()
    q_out, k_out = rope(q=q, k=k, positions=positions, cos_sin=cos_sin_table(256, rotary_dim).to(device),
                        rotary_dim=rotary_dim, style=style)
    assert q_out.data_ptr() == q.data_ptr() and k_out.data_ptr() == k.data_ptr()  # in place
    torch.testing.assert_close(q.cpu().double(), rotate_complex(q_in, positions, rotary_dim, style), **tol(dtype))
    torch.testing.assert_close(k.cpu().double(), rotate_complex(k_in, positions, rotary_dim, style), **tol(dtype))
    assert torch.equal(q[..., rotary_dim:], q_in[..., rotary_dim:])


@pytest.mark.parametrize("style", ["neox", "gptj"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_qk_norm_rope_is_per_head_rms_norm_then_rope(device, style, dtype):
    t, hq, hk, d, rot = 6, 4, 2, 32, 16
    q, k = rand(t, hq, d, dtype=dtype, device=device, scale=2.0), rand(t, hk, d, dtype=dtype, device=device)
    q_w, k_w = rand(d, dtype=dtype, device=device, scale=0.1), rand(d, dtype=dtype, device=device, scale=0.1)
    positions = torch.tensor([3, 0, 9, 40, 41, 7], device=device)
    q_in, k_in = q.clone(), k.clone()
    qk_norm_rope(q=q, k=k, q_w=q_w, k_w=k_w, eps=1e-6, positions=positions, cos_sin=cos_sin_table(64, rot).to(device),
                 rotary_dim=rot, style=style, weight_offset=1.0)
    for out, x, w in ((q, q_in, q_w), (k, k_in, k_w)):
        x64 = x.double()
        normed = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + w.double())
        torch.testing.assert_close(out.cpu().double(), rotate_complex(normed, positions, rot, style), **tol(dtype))
