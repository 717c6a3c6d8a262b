"""The NVIDIA backend on a CUDA device: every Triton kernel computes the reference backend's function
over a grid of shapes (Qwen3-Next's and Llama's heads, odd lengths, pages of 16 and 64, batch 1 and
64, sequences resuming from a state slot), decode kernels replay correctly in a CUDA graph, and the
registry's `fastest` policy picks the backend's kernels on sm_90 with its reference check passing.
"""

from __future__ import annotations

import random

import pytest
import torch

import cases

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BF16 = torch.bfloat16
QWEN_ATTN = dict(Hq=16, Hk=2, D=256)
LLAMA_ATTN = dict(Hq=32, Hk=8, D=128)
QWEN_GDN = dict(Hk=16, Hv=32, K=128, V=128)
QWEN_CONV = 2 * 16 * 128 + 32 * 128  # q, k and v channels of Qwen3-Next's GDN conv


def _lens(n, lo, hi, seed):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


GRID = [
    ("rms_norm", dict(T=1, D=2048)),
    ("rms_norm", dict(T=4099, D=4096, residual=True, offset=1.0)),
    ("rms_norm", dict(T=33, D=5120, residual=True)),
    ("gated_rms_norm", dict(T=37, H=32, D=128)),
    ("gated_rms_norm", dict(T=1, H=16, D=128)),
    ("qk_norm_rope", dict(T=257, **{"Hq": 16, "Hk": 2, "D": 256}, rot=64, style="neox", offset=1.0)),
    ("qk_norm_rope", dict(T=9, Hq=16, Hk=2, D=256, rot=64, style="gptj")),
    ("qk_norm_rope", dict(T=65, Hq=32, Hk=8, D=128, rot=128, style="neox")),
    ("qk_norm_rope", dict(T=1, Hq=32, Hk=8, D=128, rot=128, style="gptj")),
    ("silu_and_mul", dict(T=1, I=512)),
    ("silu_and_mul", dict(T=1001, I=3072)),
    ("gdn_gating", dict(T=1, Hv=32)),
    ("gdn_gating", dict(T=4097, Hv=32)),
    ("causal_conv1d_extend", dict(lens=[1, 2, 3, 100, 1000], C=QWEN_CONV, resume=False, skip_write=True)),
    ("causal_conv1d_extend", dict(lens=_lens(64, 1, 300, 0), C=QWEN_CONV)),
    ("causal_conv1d_extend", dict(lens=[4097], C=QWEN_CONV, inplace=True)),
    ("causal_conv1d_decode", dict(B=1, C=QWEN_CONV)),
    ("causal_conv1d_decode", dict(B=64, C=QWEN_CONV, resume=False, skip_write=True)),
    ("causal_conv1d_decode", dict(B=64, C=QWEN_CONV, inplace=True)),
    ("gdn_decode", dict(B=1, **QWEN_GDN)),
    ("gdn_decode", dict(B=8, **QWEN_GDN, resume=False, skip_write=True)),
    ("gdn_decode", dict(B=64, **QWEN_GDN, inplace=True)),
    ("gdn_decode", dict(B=64, **QWEN_GDN, l2norm=False)),
    ("gdn_extend", dict(lens=[1], **QWEN_GDN)),
    ("gdn_extend", dict(lens=[63], **QWEN_GDN, resume=False)),
    ("gdn_extend", dict(lens=[64, 65], **QWEN_GDN, skip_write=True)),
    ("gdn_extend", dict(lens=[1000, 1, 77, 4096], **QWEN_GDN, inplace=True)),
    ("gdn_extend", dict(lens=_lens(64, 1, 300, 1), **QWEN_GDN, resume=False)),
    ("gdn_extend", dict(lens=[300, 129], **QWEN_GDN, l2norm=False)),
    # from gdn.GLUON_SCAN_MIN_TOKENS tokens a call the default scan is the Gluon kernel computing P
    ("gdn_extend", dict(lens=[9000, 7001, 500], **QWEN_GDN)),
    ("gdn_extend", dict(lens=[16384], **QWEN_GDN, resume=False, gate=4)),
    ("kv_cache_write", dict(T=1000, **{"Hk": 2, "D": 256}, page=16, kv_lens=[1000])),
    ("kv_cache_write", dict(T=513, Hk=8, D=128, page=64, kv_lens=[600, 600])),
]
for attn in (QWEN_ATTN, LLAMA_ATTN):
    for page in (16, 64):
        GRID += [
            ("attention_extend", dict(q_lens=[1000], kv_lens=[1000], page=page, **attn)),
            ("attention_extend", dict(q_lens=[5, 300, 1], kv_lens=[5, 1300, 38], page=page, **attn)),
            ("attention_extend", dict(q_lens=[777], kv_lens=[4096 + 777], page=page, **attn)),
            ("attention_decode", dict(kv_lens=[1], page=page, **attn)),
            ("attention_decode", dict(kv_lens=[5000], page=page, **attn)),
        ]
    q_lens = _lens(64, 1, 200, 2)
    GRID += [
        ("attention_extend", dict(q_lens=q_lens, kv_lens=[q + p for q, p in zip(q_lens, _lens(64, 0, 500, 3))],
                                  page=16, **attn)),
        ("attention_decode", dict(kv_lens=_lens(64, 1, 3000, 4), page=64, **attn)),
    ]


def _kernels():
    from tokenyard.backends.nvidia import kernels

    return {op: (fn, supports) for op, fn, supports in kernels()}


@pytest.mark.parametrize("op,shape", GRID, ids=[f"{op}-{i}" for i, (op, _) in enumerate(GRID)])
def test_kernel_matches_reference(op, shape):
    torch.manual_seed(hash((op, str(shape))) % 2**31)
    fn, supports = _kernels()[op]
    args = cases.make(op, "cuda", BF16, **shape)
    assert supports(**args) is None
    cases.check(op, fn, args)


def _graphed(fn, args: dict, fresh: dict):
    """Capture fn(**args) in a CUDA graph, copy `fresh` into the captured inputs, replay."""
    static = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    fn(**static)  # compile outside the capture
    torch.cuda.synchronize()
    for k, v in args.items():
        if isinstance(v, torch.Tensor):
            static[k].copy_(v)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(**static)
    for k, v in fresh.items():
        if isinstance(v, torch.Tensor):
            static[k].copy_(v)
    graph.replay()
    torch.cuda.synchronize()
    return out, static


@pytest.mark.parametrize("op,shape", [
    ("gdn_decode", dict(B=8, **QWEN_GDN, inplace=True)),
    ("attention_decode", dict(kv_lens=[700, 9000, 1], page=64, **QWEN_ATTN)),
    ("causal_conv1d_decode", dict(B=8, C=QWEN_CONV, inplace=True)),
])
def test_decode_kernel_replays_in_cuda_graph(op, shape):
    torch.manual_seed(7)
    fn, _ = _kernels()[op]
    first = cases.make(op, "cuda", BF16, **shape)
    second = cases.make(op, "cuda", BF16, **shape)  # same shapes, fresh values, slots and pages
    out, static = _graphed(fn, first, second)
    ref_args = cases.fp32_copy(second)
    expected = cases.outputs(op, cases.REFERENCE[op](**ref_args), ref_args)
    for got, ref in zip(cases.outputs(op, out, static), expected, strict=True):
        assert cases.rel_error(got, ref) <= cases.RTOL[BF16]


def test_fastest_policy_selects_nvidia_kernels(tmp_path, monkeypatch):
    import tokenyard.backends.nvidia as nvidia
    import tokenyard.backends.reference as reference
    from tokenyard.registry import Registry

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the Triton kernels are registered for sm_90 and up")
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "fastest")
    registry = Registry(load_entry_points=False, cache_path=str(tmp_path / "decisions.json"))
    registry.ensure_loaded()
    registry.add_backend("reference", reference)
    registry.add_backend("nvidia", nvidia)
    assert "nvidia" in registry.backends, registry.failed_backends
    shapes = {
        "rms_norm": dict(T=4096, D=4096, residual=True, offset=1.0),
        "gated_rms_norm": dict(T=1024, H=32, D=128),
        "qk_norm_rope": dict(T=1024, Hq=16, Hk=2, D=256, rot=64, style="neox", offset=1.0),
        "silu_and_mul": dict(T=2048, I=3072),
        "gdn_gating": dict(T=65536, Hv=32),  # at T=4096 both kernels time ~0.1 ms of host launch overhead
        "causal_conv1d_extend": dict(lens=[2048, 100], C=QWEN_CONV),
        "causal_conv1d_decode": dict(B=64, C=QWEN_CONV),
        "gdn_extend": dict(lens=[2048, 300], **QWEN_GDN),
        "gdn_decode": dict(B=64, **QWEN_GDN),
        "kv_cache_write": dict(T=2048, Hk=2, D=256, page=64, kv_lens=[4096]),
        "attention_extend": dict(q_lens=[2048], kv_lens=[4096], page=64, **QWEN_ATTN),
        "attention_decode": dict(kv_lens=[8192] * 8, page=64, **QWEN_ATTN),
    }
    for op, shape in shapes.items():
        args = cases.make(op, "cuda", BF16, **shape)
        selection = registry.select(op, args)
        ours = [c for c in selection.candidates if c.record.key == f"nvidia:triton_{op}"]
        assert ours and ours[0].reason is None, f"{op}: {ours and ours[0].reason}"
        assert ours[0].check_failure is None, f"{op}: {ours[0].check_failure}"
        print(f"{op}: chose {selection.chosen.key} ({selection.how}); "
              + ", ".join(f"{c.record.key}={c.time_ms:.3f}ms" for c in selection.candidates if c.time_ms is not None))
        assert selection.chosen.backend == "nvidia", (
            f"{op}: chose {selection.chosen.key}: " + ", ".join(f"{c.record.key}={c.time_ms}" for c in selection.candidates))


@pytest.mark.parametrize("T,K,N", [(1, 4096, 12288), (7, 2048, 512), (300, 4096, 4096)])
def test_cublas_gemm_matches_reference(T, K, N):
    """The engine's projections: cuBLAS bf16 against the reference's fp32 product; NVFP4 declined."""
    from tokenyard.backends.nvidia import linear
    from tokenyard.kernel_api.quant import NVFP4Weight

    x = torch.randn(T, K, device="cuda").to(BF16)
    w = (torch.randn(N, K, device="cuda") / K**0.5).to(BF16)
    out = linear.gemm(x=x, w=w)
    ref = cases.REFERENCE["gemm"](x=x.float(), w=w.float())
    assert out.dtype == BF16 and out.shape == (T, N)
    assert cases.rel_error(out, ref) <= cases.RTOL[BF16]
    assert linear.supports_gemm(x=x, w=w) is None
    assert "float32" in linear.supports_gemm(x=x, w=w.float())
    assert "NVFP4Weight" in linear.supports_gemm(x=x, w=NVFP4Weight.__new__(NVFP4Weight))
