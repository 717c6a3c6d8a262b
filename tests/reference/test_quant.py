"""NVFP4: exact round trip of representable weights (which also pins the layout: codes, nibble
order, scales, global scale), nearest-value rounding and bounded error on random weights."""

import pytest
import torch

from tokenyard.backends.reference.quant import nvfp4_dequantize, nvfp4_quantize

from .oracles import E2M1, nvfp4_decode, rand

E4M3_MAX_BITS = 0x7E  # 448; 0x7F is NaN in float8_e4m3fn


def representable(lead, n, k, device):
    """A weight that NVFP4 holds exactly, built from its parts: (w, codes, scale bits, global scale).

    Every block holds a ±6 (so its amax is 6·scale) and one block has scale 448 (so the matrix
    amax is 6·448·global_scale); the global scale is a power of two, so the quantizer's own
    choice of scales recovers exactly these parts.
    """
    codes = torch.randint(1, 16, (*lead, n, k), dtype=torch.uint8)
    codes[codes == 8] = 0  # -0 encodes the same value as 0; keep the encoding unique
    codes[..., ::16] = torch.where(torch.rand(*lead, n, k // 16) < 0.5, 7, 15).to(torch.uint8)
    scale_bits = torch.randint(0x20, E4M3_MAX_BITS + 1, (*lead, n, k // 16), dtype=torch.uint8)
    scale_bits.view(-1, n * k // 16)[:, 0] = E4M3_MAX_BITS
    global_scale = 2.0 ** torch.randint(-12, -4, lead if lead else ()).float()
    table = torch.tensor(E2M1)
    values = table[(codes & 7).long()] * torch.where(codes >= 8, -1.0, 1.0)
    scales = scale_bits.view(torch.float8_e4m3fn).float().repeat_interleave(16, dim=-1)
    w = values * scales * global_scale[..., None, None]
    return w.to(device), codes, scale_bits, global_scale


@pytest.mark.parametrize("lead", [(), (3,)])  # one matrix, and stacked experts
def test_nvfp4_quantize_recovers_the_exact_parts_of_representable_weights(device, lead):
    w, codes, scale_bits, global_scale = representable(lead, 8, 64, device)
    q = nvfp4_quantize(w=w)
    assert q.packed.dtype == torch.uint8 and q.packed.shape == (*lead, 8, 32)
    assert torch.equal(q.packed.cpu(), codes[..., 0::2] | (codes[..., 1::2] << 4))  # even column low
    assert torch.equal(q.scales.cpu().view(torch.uint8), scale_bits)
    assert torch.equal(q.global_scale.cpu(), global_scale)
    deq = nvfp4_dequantize(q=q)
    assert deq.dtype == torch.bfloat16 and torch.equal(deq.float(), w)  # exact even in bf16


def test_nvfp4_nibble_order_puts_the_even_column_in_the_low_nibble(device):
    row = torch.zeros(1, 16, device=device)
    row[0, :3] = torch.tensor([0.5, -1.0, 6.0])  # codes 1, 8|2, 7; 6 fixes the scale at 448
    q = nvfp4_quantize(w=row)
    assert q.packed[0, :2].tolist() == [0xA1, 0x07]
    assert float(q.scales[0, 0].float()) == 448.0


def test_nvfp4_dequantize_decodes_every_nibble_as_the_layout_defines(device):
    q = nvfp4_quantize(w=rand(2, 6, 32, device=device))
    torch.testing.assert_close(nvfp4_dequantize(q=q).double().cpu(),
                               nvfp4_decode(q.packed, q.scales, q.global_scale).bfloat16().double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nvfp4_quantize_rounds_random_weights_to_the_nearest_value_of_their_block_grid(device, dtype):
    w = rand(16, 128, dtype=dtype, device=device, scale=0.02)
    q = nvfp4_quantize(w=w)
    deq = nvfp4_decode(q.packed, q.scales, q.global_scale)
    w64 = w.double().cpu()
    step = q.scales.double().cpu().repeat_interleave(16, dim=-1) * float(q.global_scale)
    grid = torch.tensor(E2M1, dtype=torch.float64)
    grid = torch.cat((-grid.flip(0), grid))
    nearest = (w64[..., None] - grid * step[..., None]).abs().min(-1).values
    assert torch.all((w64 - deq).abs() <= nearest + 1e-12)
    assert float((w64 - deq).norm() / w64.norm()) < 0.12


def test_nvfp4_quantize_of_all_zeros_is_zero(device):
    q = nvfp4_quantize(w=torch.zeros(4, 32, device=device))
    assert torch.equal(nvfp4_dequantize(q=q).float(), torch.zeros(4, 32, device=device))


def test_nvfp4_quantize_breaks_ties_to_the_even_code_like_cvt_rn(device):
    # With a 6 in the block, scale·global_scale is exactly 1: each value below is a midpoint.
    row = torch.tensor([[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.75, -5.0] + [0.0] * 6], device=device)
    q = nvfp4_quantize(w=row)
    codes = torch.stack((q.packed & 0xF, q.packed >> 4), dim=-1).flatten(-2)[0, :10]
    assert codes.tolist() == [7, 0, 2, 2, 4, 4, 6, 6, 8 | 2, 8 | 6]
