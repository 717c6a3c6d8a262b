"""The NVIDIA kernels on inputs laid out as the engine lays them out, against the reference: Gated
DeltaNet q/k/v as column slices of the conv output (one [T, 2·Hk·K + Hv·V] row a token), state
pools whose unused slots hold NaN (an engine's pools are torch.empty), several sequences with fresh
and resumed slots, and the tiny head dims of the test checkpoints next to Qwen3-Next's.

These are the inputs the kernel grid (test_nvidia_kernels.py) does not draw: dense per-op tensors
and finite pools. A kernel that multiplies a masked-out value by zero instead of not loading it
passes there and returns NaN in an engine.
"""

from __future__ import annotations

import pytest
import torch

import cases
from tokenyard.backends.nvidia import kernels

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

BF16 = torch.bfloat16
NVIDIA = {op: fn for op, fn, _ in kernels()}


def _engine_gdn_args(lens, hk, hv, dk, dv, pool):
    T = sum(lens)
    n = len(lens)
    conv_out = torch.randn(T, 2 * hk * dk + hv * dv, device="cuda").to(BF16)
    q, k, v = conv_out.split([hk * dk, hk * dk, hv * dv], dim=-1)
    state = torch.full((pool, hv, dk, dv), float("nan"), device="cuda")
    reads = torch.tensor([-1 if i % 2 == 0 else pool - 1 - i for i in range(n)], dtype=torch.int32, device="cuda")
    for i in range(n):
        if reads[i] >= 0:
            state[reads[i]] = torch.randn(hv, dk, dv, device="cuda") * 0.3
    writes = torch.arange(n, dtype=torch.int32, device="cuda")
    return dict(q=q.reshape(T, hk, dk), k=k.reshape(T, hk, dk), v=v.reshape(T, hv, dv),
                g=-torch.rand(T, hv, device="cuda") * 0.5 - 0.01, beta=torch.rand(T, hv, device="cuda") * 0.9 + 0.05,
                state=state, cu_seqlens=cases._cu(lens, "cuda"), read_slots=reads, write_slots=writes,
                scale=dk ** -0.5, qk_l2norm=True)


@pytest.mark.parametrize("form", ["default", "tma", "pscan", "sws", "sws+pscan"])
@pytest.mark.parametrize("hk,hv,dk,dv", [(2, 4, 16, 16), (2, 4, 32, 32), (16, 32, 128, 128)])
def test_gdn_extend_on_engine_layout_with_nan_pools(hk, hv, dk, dv, form):
    """form "tma": the TMA prepare + scan (the default only at K = V = 128) asked for at every head
    dim. With it as the default everywhere the engine's bf16 test went NaN on the tiny hybrid
    checkpoints; this test found the cause on the H100 (2026-11-23): the "nilt" prepare with
    [64, 16] tiles (K = V = 16) wrote NaN into W and U, at 32 and up it is right. gdn.prepare now
    takes the "blocks" prepare below 32-column tiles, so at K = 16 this checks that fallback.
    Form "pscan": the same with P computed by the scan (the sweep-only launch option; its q/k
    rows past a sequence's end are the next sequence's). Form "sws": the scan on the
    warp-specialised Gluon kernel (gdn_ws.py; at K = 128 only, elsewhere the Triton scan), and
    "sws+pscan" with P computed by its output warpgroup."""
    from tokenyard.backends.nvidia import gdn

    lens = [3, 77, 300, 1, 64, 129]
    args = _engine_gdn_args(lens, hk, hv, dk, dv, pool=2 * len(lens) + 3)
    if form != "default":
        config = list(gdn.extend_config(len(lens), hv, 128, 128))
        config[0] = min(config[0], dv)   # the scan's V block
        config[7] = {**config[7], "sws": "sws" in form, "pscan": "pscan" in form}
        args["config"] = tuple(config)
    ref_args = {k: (v.float() if isinstance(v, torch.Tensor) and v.dtype == BF16 else
                    v.clone() if isinstance(v, torch.Tensor) else v) for k, v in args.items() if k != "config"}
    ref_out = cases.REFERENCE["gdn_extend"](**ref_args)
    out = gdn.gdn_extend(**args)
    assert torch.isfinite(out).all(), "NaN/inf in the output"
    assert cases.rel_error(out, ref_out) <= cases.RTOL[BF16]
    written = args["write_slots"].long()
    assert torch.isfinite(args["state"][written]).all(), "NaN/inf in a written state"
    assert cases.rel_error(args["state"][written], ref_args["state"][written]) <= cases.RTOL[BF16]


@pytest.mark.parametrize("hq,hk,d,rot", [(4, 2, 32, 8), (16, 2, 256, 64)])
def test_qk_norm_rope_on_gated_attention_layout(hq, hk, d, rot):
    args = cases.make("qk_norm_rope", "cuda", BF16, T=300, Hq=hq, Hk=hk, D=d, rot=rot, style="neox", offset=1.0)
    assert cases.check("qk_norm_rope", NVIDIA["qk_norm_rope"], args) <= cases.RTOL[BF16]


@pytest.mark.parametrize("page", [16, 64])
def test_attention_extend_at_tiny_head_dims(page):
    args = cases.make("attention_extend", "cuda", BF16, q_lens=[3, 77, 300, 1], kv_lens=[3, 77 + 40, 300, 65],
                      page=page, Hq=4, Hk=2, D=32)
    assert cases.check("attention_extend", NVIDIA["attention_extend"], args) <= cases.RTOL[BF16]
