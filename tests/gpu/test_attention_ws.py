"""The warp-specialised Gluon attention_extend (tokenyard/backends/nvidia/attention_ws.py) on an
sm_90 device against the reference backend in fp32: Qwen3-Next's and Llama's heads, pages of 16
and 64, odd lengths, cached prefixes, many sequences, GQA packing with split-K, and caches whose
rows past every sequence's end (and unused pages) hold NaN, which no output may pick up.
"""

from __future__ import annotations

import random

import pytest
import torch

import cases

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
                       reason="needs an sm_90 device"),
]

BF16 = torch.bfloat16
QWEN_ATTN = dict(Hq=16, Hk=2, D=256)
LLAMA_ATTN = dict(Hq=32, Hk=8, D=128)


def _lens(n, lo, hi, seed):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def _poison_past_end(args: dict) -> None:
    """NaN into every cache row no sequence owns: past each sequence's length and unused pages."""
    page = args["k_cache"].shape[1]
    owned = torch.zeros(args["k_cache"].shape[:2], dtype=torch.bool, device=args["k_cache"].device)
    for b, n in enumerate(args["seqlens_k"].tolist()):
        pos = torch.arange(n, device=owned.device)
        owned[args["page_table"][b, pos // page].long(), pos % page] = True
    for name in ("k_cache", "v_cache"):
        args[name][~owned] = float("nan")


CASES = []
for heads in (QWEN_ATTN, LLAMA_ATTN):
    for page in (16, 64):
        CASES += [
            (dict(q_lens=[1000], kv_lens=[1000], page=page, **heads), {}),
            (dict(q_lens=[5, 300, 1], kv_lens=[5, 1300, 38], page=page, **heads), {}),
            (dict(q_lens=[777], kv_lens=[4096 + 777], page=page, **heads), {}),
        ]
    q_lens = _lens(24, 1, 200, 2)
    CASES += [
        (dict(q_lens=q_lens, kv_lens=[q + p for q, p in zip(q_lens, _lens(24, 0, 500, 3))], page=64, **heads), {}),
        (dict(q_lens=[800], kv_lens=[3000 + 800], page=64, **heads), dict(pack=True, splits=3)),
        (dict(q_lens=[129, 70], kv_lens=[129 + 640, 70], page=64, **heads), dict(pack=True, splits=2)),
        (dict(q_lens=[300], kv_lens=[300], page=64, **heads), dict(heads_inner=False)),
    ]


@pytest.mark.parametrize("shape,launch", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("poison", [False, True], ids=["finite", "nan_past_end"])
def test_ws_kernel_matches_reference(shape, launch, poison):
    from tokenyard.backends.nvidia import attention_ws

    torch.manual_seed(hash(str(shape)) % 2**31)
    args = cases.make("attention_extend", "cuda", BF16 if poison or shape["D"] == 256 else torch.float16, **shape)
    if poison:
        _poison_past_end(args)
    assert attention_ws.supports_ws(args["q"], args["k_cache"], args["v_cache"]) is None
    cases.check("attention_extend", lambda **a: attention_ws.attention_extend_ws(**a, **launch), args)


def test_ws_kernel_declines_what_it_cannot_run():
    from tokenyard.backends.nvidia import attention_ws

    args = cases.make("attention_extend", "cuda", torch.float32, q_lens=[10], kv_lens=[10], page=64, **LLAMA_ATTN)
    assert "bf16 or fp16" in attention_ws.supports_ws(args["q"], args["k_cache"], args["v_cache"])
    args = cases.make("attention_extend", "cuda", BF16, q_lens=[10], kv_lens=[10], page=64, Hq=4, Hk=1, D=32)
    assert "head dims" in attention_ws.supports_ws(args["q"], args["k_cache"], args["v_cache"])
    with pytest.raises(ValueError, match="attention_extend_ws: head dims"):
        attention_ws.attention_extend_ws(**args)
