"""pytest-benchmark suite for the reference kernels on the CPU (``make bench``).

One benchmark per op at its named example shape "small" and, where cheap enough on a laptop-class
CPU, a larger one; every benchmark first checks that its inputs are valid through kernel_api.
"""

from __future__ import annotations

import pytest
import torch

import tokenyard.kernel_api as ops
from tokenyard.registry import get_registry
from tokenyard.registry.tuning import clone_args

CPU_SHAPES = {
    "rms_norm": dict(T=512, D=2048),
    "silu_and_mul": dict(T=512, I=2048),
    "gemm": dict(T=64, N=1024, K=1024),
    "attention_decode": dict(B=4, ctx=2048, Hq=16, Hk=2, D=128, page=16),
    "attention_extend": dict(B=1, q_len=512, prefix=512, Hq=16, Hk=2, D=128, page=16),
    "gdn_extend": dict(B=1, L=512, Hk=4, Hv=8, K=64, V=64),
    "gdn_decode": dict(B=8, Hk=4, Hv=8, K=64, V=64),
    "moe_experts": dict(T=64, E=16, top_k=4, H=256, I=128),
}


@pytest.mark.parametrize("op,shape", [(op, "small") for op in ops.OPS] + [(op, "cpu") for op in CPU_SHAPES])
def test_reference_kernel(benchmark, op, shape):
    spec = get_registry().ops[op]
    sizes = spec.shapes["small"] if shape == "small" else CPU_SHAPES[op]
    torch.manual_seed(0)
    args = spec.example(torch.device("cpu"), torch.float32, **sizes)
    getattr(ops, op)(**clone_args(spec, args))  # validates the example through the contract
    benchmark.extra_info.update(op=op, shape=sizes)
    benchmark(lambda: getattr(ops, op)(**clone_args(spec, args), kernel="reference"))
