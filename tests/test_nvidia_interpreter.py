"""The NVIDIA backend's Triton kernels compute the reference backend's function: checked on the CPU
with Triton's interpreter (TRITON_INTERPRET=1) at tiny fp32 shapes, with the default launch or, where a case names one, another launch
configuration whose code path the defaults don't reach at these sizes.

The interpreter must be switched on before Triton is imported, so the kernels run in one child
process (tests/gpu/cases.py builds the inputs and compares, as on the GPU); each case below is one
test. bf16 is not checked here (the interpreter mishandles it); tests/gpu covers it on a device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

GPU_TESTS = Path(__file__).parent / "gpu"

CASES = [
    ("rms_norm", dict(T=5, D=48)),
    ("rms_norm", dict(T=7, D=40, residual=True, offset=1.0)),
    ("gated_rms_norm", dict(T=3, H=2, D=32)),
    ("qk_norm_rope", dict(T=3, Hq=4, Hk=2, D=32, rot=16, style="neox", offset=1.0)),
    ("qk_norm_rope", dict(T=2, Hq=2, Hk=1, D=32, rot=32, style="gptj")),
    ("silu_and_mul", dict(T=3, I=40)),
    ("gdn_gating", dict(T=5, Hv=6)),
    ("causal_conv1d_extend", dict(lens=[5, 1, 2], C=24, resume=False, skip_write=True)),
    ("causal_conv1d_extend", dict(lens=[2, 6], C=20, inplace=True, bias=False)),
    ("causal_conv1d_decode", dict(B=3, C=24, resume=False, skip_write=True)),
    ("causal_conv1d_decode", dict(B=2, C=20, inplace=True)),
    ("gdn_decode", dict(B=3, Hk=2, Hv=4, K=16, V=16, resume=False, skip_write=True)),
    ("gdn_decode", dict(B=2, Hk=1, Hv=2, K=16, V=32, inplace=True, l2norm=False)),
    ("gdn_extend", dict(lens=[70, 3], Hk=1, Hv=2, K=16, V=16, resume=False, skip_write=True)),
    ("gdn_extend", dict(lens=[5, 64], Hk=1, Hv=1, K=16, V=32, inplace=True)),
    ("gdn_extend", dict(lens=[67], Hk=1, Hv=2, K=128, V=128, l2norm=False)),
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=64, V=32)),
    ("kv_cache_write", dict(T=9, Hk=2, D=16, page=4, kv_lens=[8, 8])),
    ("attention_extend", dict(q_lens=[5, 3, 1], kv_lens=[5, 11, 9], Hq=4, Hk=2, D=16, page=4)),
    # GQA-packed tiles with the key range split three ways and merged; K/V tiles by TMA descriptor
    ("attention_extend", dict(q_lens=[7, 20], kv_lens=[70, 90], Hq=8, Hk=2, D=16, page=16),
     dict(config=(64, 16, 4, 1), splits=3, tma=True)),
    ("attention_extend", dict(q_lens=[7, 20], kv_lens=[70, 90], Hq=6, Hk=2, D=16, page=16),
     dict(config=(32, 16, 4, 1), splits=2)),
    ("attention_decode", dict(kv_lens=[1, 37, 100], Hq=4, Hk=1, D=16, page=4)),
]

CHILD = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import cases
from tokenyard.backends.nvidia import kernels
fns = {op: fn for op, fn, _ in kernels()}
for op, shape, *launch in json.loads(sys.argv[2]):
    torch.manual_seed(0)
    fn = (lambda op, kw: lambda **args: fns[op](**args, **kw))(op, launch[0] if launch else {})
    try:
        err = cases.check(op, fn, cases.make(op, "cpu", torch.float32, **shape))
        print(json.dumps({"ok": True, "error": err}), flush=True)
    except Exception as exc:
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
"""


def run_child(child: str, cases: list) -> list:
    """Run `cases` through a child script under TRITON_INTERPRET=1; one result dict per case."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", child, str(GPU_TESTS), json.dumps(cases)],
                          env=env, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(cases), f"child process failed:\n{proc.stdout}\n{proc.stderr}"
    return lines


@pytest.fixture(scope="module")
def results() -> list:
    return run_child(CHILD, CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)])
def test_kernel_matches_reference_under_interpreter(results, index):
    result = results[index]
    assert result["ok"], f"{CASES[index]}: {result['error']}"


# Launch variants in elementwise.py that the registered defaults don't take: qk_norm_rope's rows
# kernel at other shapes (head rows flattened, q and k blocks in one grid; partial and full rotary,
# both styles, row blocks that straddle tokens) and its previous token kernel.
VARIANT_CASES = [
    ("qk_norm_rope", dict(T=5, Hq=3, Hk=1, D=48, rot=16, style="neox", offset=1.0), dict(variant="rows4w2")),
    ("qk_norm_rope", dict(T=3, Hq=4, Hk=2, D=32, rot=16, style="gptj"), dict(variant="rows8w4e")),
    ("qk_norm_rope", dict(T=2, Hq=2, Hk=1, D=32, rot=32, style="neox", offset=1.0), dict(variant="rows2w1")),
    ("qk_norm_rope", dict(T=5, Hq=3, Hk=1, D=48, rot=16, style="gptj", offset=1.0), dict(variant="token")),
]

# CHILD, with qk_norm_rope's variants reachable through its keyword arguments
VARIANT_CHILD = CHILD.replace(
    "fns = {op: fn for op, fn, _ in kernels()}",
    "from tokenyard.backends.nvidia import elementwise\n"
    "fns = {'qk_norm_rope': elementwise.qk_norm_rope}",
)
assert VARIANT_CHILD != CHILD


@pytest.fixture(scope="module")
def variant_results() -> list:
    return run_child(VARIANT_CHILD, VARIANT_CASES)


@pytest.mark.parametrize("index", range(len(VARIANT_CASES)),
                         ids=[f"{case[0]}-{case[2]}" for case in VARIANT_CASES])
def test_launch_variant_matches_reference_under_interpreter(variant_results, index):
    result = variant_results[index]
    assert result["ok"], f"{VARIANT_CASES[index]}: {result['error']}"


# gdn.py's extend forms (bench/gpu/sweep_gdn.py times them): the default "nilt" prepare (64-row
# dots, q/k/v by TMA descriptor, the inverse's diagonal blocks in registers, v-head-major grid; the
# previous form's scratch aliases W when K is wide enough, else a spare buffer; below 32-column
# tiles the "blocks" fallback) with its register cap, the scan's LEAN forms (2: host TMA
# descriptors, 1: pointer loads with the row scales on the products, 0: the previous form, also what K > 128 runs), the old
# default ("blocks" prepare + LEAN 0), the sweep's launch shapes, decode's eviction hint.
# Varlen with initial states, odd lengths, fresh and skipped slots. Config: (scan BV, scan warps,
# prepare BK, prepare warps, prepare kind, scan num_stages, scan LEAN[, launch options]).
GDN_DEFAULT = (16, 4, 32, 4, "nilt", None, 2, {"pmaxnreg": 128, "pinv": "reg", "pgrid": "hv"})
GDN_SCRATCH = (16, 4, 32, 4, "nilt", None, 2, {"pmaxnreg": 168})  # the inverse through the global scratch
# "pscan": P computed by the LEAN 2 scan instead of the prepare, with gates down to −4 a token
# (γ ~ −128 at a chunk's end: e^{−γ} overflows fp32, the decay must be taken as one exponent),
# sequences shorter than a chunk, odd lengths, initial states; and where it does not apply (LEAN 1,
# "blocks" prepare, 16-column tiles, K > 128) the prepare writes P. (shape, config, P left to the scan)
GDN_PSCAN = (16, 4, 32, 4, "nilt", None, 2, {"pmaxnreg": 128, "pinv": "reg", "pgrid": "hv", "pscan": True})
GDN_PSCAN_CASES = [
    (dict(lens=[70, 3, 129], Hk=2, Hv=4, K=32, V=32, gate=4), GDN_PSCAN, True),
    (dict(lens=[33, 64, 1], Hk=1, Hv=2, K=32, V=32, inplace=True), (32, 4, 32, 4, "nilt", 2, 2, {"pscan": True}), True),
    (dict(lens=[5, 67], Hk=1, Hv=2, K=64, V=32, resume=False, skip_write=True, l2norm=False, gate=4), GDN_PSCAN, True),
    (dict(lens=[67, 64, 2], Hk=1, Hv=2, K=128, V=128), GDN_PSCAN, True),
    (dict(lens=[70, 3], Hk=2, Hv=4, K=32, V=32, gate=4), (16, 4, 32, 4, "nilt", None, 1, {"pscan": True}), False),
    (dict(lens=[70, 3], Hk=2, Hv=4, K=32, V=32), (16, 4, 32, 2, "blocks", None, 2, {"pscan": True}), False),
    (dict(lens=[5, 64], Hk=1, Hv=2, K=16, V=16, resume=False), (16, 4, 16, 4, "nilt", None, 2, {"pscan": True}), False),
    (dict(lens=[70, 3], Hk=1, Hv=2, K=256, V=32, resume=False), GDN_PSCAN, False),
]
GDN_VARIANT_CASES = [
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=64, V=32), dict(config=GDN_DEFAULT)),
    ("gdn_extend", dict(lens=[33, 64, 1], Hk=1, Hv=2, K=32, V=32, inplace=True), dict(config=GDN_DEFAULT)),
    ("gdn_extend", dict(lens=[5, 64], Hk=1, Hv=2, K=16, V=16, resume=False, skip_write=True),
     dict(config=(16, 4, 16, 4, "nilt", 2, 2, {"pmaxnreg": 168}))),
    ("gdn_extend", dict(lens=[67], Hk=1, Hv=2, K=128, V=128, l2norm=False), dict(config=(32, 4, 32, 4, "nilt", None, 2))),
    ("gdn_extend", dict(lens=[67, 64, 2], Hk=1, Hv=2, K=128, V=128), dict(config=GDN_DEFAULT)),
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=64, V=32), dict(config=GDN_SCRATCH)),
    ("gdn_extend", dict(lens=[33, 64, 1], Hk=1, Hv=2, K=32, V=32), dict(config=(16, 4, 32, 4, "nilt", None, 2, {"pinv": "reg"}))),
    ("gdn_extend", dict(lens=[33, 64, 1], Hk=1, Hv=2, K=32, V=32), dict(config=(16, 4, 32, 4, "nilt", None, 2, {"pgrid": "hv"}))),
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=64, V=32), dict(config=(32, 4, 64, 8, "nilt", 2, 2, {"pmaxnreg": 128}))),
    ("gdn_extend", dict(lens=[2, 65], Hk=2, Hv=4, K=64, V=32, resume=False), dict(config=(32, 4, 32, 4, "nilt", 1, 1))),
    ("gdn_extend", dict(lens=[65, 2], Hk=2, Hv=4, K=32, V=32), dict(config=(16, 4, 32, 4, "nilt", None, 0))),
    ("gdn_extend", dict(lens=[70, 3], Hk=1, Hv=2, K=256, V=16, resume=False), dict(config=GDN_DEFAULT)),
    # the old default (also the fallback prepare), and "blocks" under the TMA / pointer scans
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=64, V=32), dict(config=(16, 4, 32, 2, "blocks", None, 0))),
    ("gdn_extend", dict(lens=[33, 64, 1], Hk=1, Hv=2, K=32, V=32, resume=False), dict(config=(16, 4, 32, 2, "blocks", 1, 2))),
    ("gdn_extend", dict(lens=[1, 130], Hk=1, Hv=2, K=16, V=16, resume=False, skip_write=True),
     dict(config=(16, 4, 16, 2, "blocks", None, 1))),
    ("gdn_decode", dict(B=3, Hk=2, Hv=4, K=16, V=32, resume=False, skip_write=True), dict(config=(8, 1, "evict_last"))),
    ("gdn_decode", dict(B=2, Hk=1, Hv=2, K=16, V=32, inplace=True), dict(config=(16, 1, "evict_last"))),
    *(("gdn_extend", shape, dict(config=config)) for shape, config, _ in GDN_PSCAN_CASES),
]


@pytest.fixture(scope="module")
def gdn_variant_results() -> list:
    return run_child(CHILD, GDN_VARIANT_CASES)


@pytest.mark.parametrize("index", range(len(GDN_VARIANT_CASES)),
                         ids=[f"{case[0]}-{case[2]['config']}" for case in GDN_VARIANT_CASES])
def test_gdn_variant_matches_reference_under_interpreter(gdn_variant_results, index):
    result = gdn_variant_results[index]
    assert result["ok"], f"{GDN_VARIANT_CASES[index]}: {result['error']}"


# whether gdn.prepare left P to the scan: the cases above are exact either way, this checks that
# "pscan" took effect where it should (and so that those cases ran the scan's own P)
GDN_PSCAN_CHILD = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import cases
from tokenyard.backends.nvidia import gdn
for shape, config in json.loads(sys.argv[2]):
    torch.manual_seed(0)
    a = cases.make("gdn_extend", "cpu", torch.float32, **shape)
    chunks = gdn.prepare(a["q"], a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"], a["scale"], a["qk_l2norm"], config)
    print(json.dumps({"p_in_scan": chunks["p"] is None}), flush=True)
"""


def test_gdn_pscan_leaves_p_to_the_scan_only_where_both_forms_run():
    lines = run_child(GDN_PSCAN_CHILD, [(shape, config) for shape, config, _ in GDN_PSCAN_CASES])
    assert [line["p_in_scan"] for line in lines] == [want for _, _, want in GDN_PSCAN_CASES]


# gdn_extend's default (TMA prepare and scan) where TMA does not apply: q, k, v as views with a
# gap between heads and a base 4 bytes off 16-byte alignment, made inside the call (the harness
# clones inputs densely); the op must take the pointer-load paths ("blocks" prepare at 2 warps,
# LEAN 1 scan) and stay exact; the old default, and "pscan" (ignored: the prepare writes P), on the same views.
GDN_FALLBACK_CASES = [
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=32, V=32)),
    ("gdn_extend", dict(lens=[5, 64], Hk=1, Hv=2, K=16, V=16, resume=False, skip_write=True)),
    ("gdn_extend", dict(lens=[64, 1, 65], Hk=2, Hv=4, K=32, V=32, inplace=True), dict(config=GDN_DEFAULT)),
    ("gdn_extend", dict(lens=[70, 3, 129], Hk=2, Hv=4, K=32, V=32), dict(config=(16, 4, 32, 2, "blocks", None, 0))),
    ("gdn_extend", dict(lens=[33, 64, 1], Hk=2, Hv=4, K=32, V=32, gate=4), dict(config=GDN_PSCAN)),
]
GDN_FALLBACK_CHILD = CHILD.replace(
    "fn = (lambda op, kw: lambda **args: fns[op](**args, **kw))(op, launch[0] if launch else {})",
    "def skew(x):\n"
    "        buf = torch.empty(x.numel() + x.shape[0] * x.shape[1] + 1, dtype=x.dtype)\n"
    "        y = buf[1:1 + x.shape[0] * x.shape[1] * (x.shape[2] + 1)].view(x.shape[0], x.shape[1], x.shape[2] + 1)\n"
    "        y = y[..., :x.shape[2]]\n"
    "        y.copy_(x)\n"
    "        assert y.stride(1) != y.shape[2] and y.data_ptr() % 16\n"
    "        return y\n"
    "    kw = launch[0] if launch else {}\n"
    "    fn = lambda **args: fns[op](**{k: skew(v) if k in ('q', 'k', 'v') else v for k, v in args.items()}, **kw)",
)
assert GDN_FALLBACK_CHILD != CHILD


@pytest.mark.parametrize("index", range(len(GDN_FALLBACK_CASES)), ids=[str(i) for i in range(len(GDN_FALLBACK_CASES))])
def test_gdn_extend_falls_back_without_tma_under_interpreter(index):
    lines = run_child(GDN_FALLBACK_CHILD, GDN_FALLBACK_CASES[index:index + 1])
    assert lines[0]["ok"], f"{GDN_FALLBACK_CASES[index]}: {lines[0]['error']}"


@pytest.mark.parametrize("config", [(16, 4, 32, 4, "nil", None, 2), (16, 4, 32, 4, "wide2", None, 0),
                                    (16, 4, 32, 4, "nilt", None, 4), (16, 4, 32, 4, "nilt", None, 5),
                                    (16, 4, 32, 4, "nilt", None, 2, {"smaxnreg": 168})])
def test_gdn_extend_rejects_removed_forms(config):
    from tokenyard.backends.nvidia import gdn

    with pytest.raises(ValueError):
        gdn._extend_options(config)


# attention_extend kernel forms the defaults don't take (bench/gpu/sweep_attention.py times them):
# kv="lean" (gathered tile, [BN] int32 row offsets, unmasked full blocks, acc += dot), kv="tma2" (a
# BN-key tile as two per-page TMA boxes of BN/2 rows; the half past a sequence's end reads a
# clamped page-table entry), the fused split-K merge (last split of a tile merges, atomic counter)
# and half-precision partials; page sizes 4/16/64, several sequences, cached prefixes, odd lengths,
# fp32 and fp16 (4th item: dtype). The interpreter runs programs one at a time, so the counter's
# ordering across SMs is checked only on the device (the sweep checks every variant first).
ATTN_VARIANT_CASES = [
    ("attention_extend", dict(q_lens=[37, 20, 1], kv_lens=[37, 90, 71], Hq=4, Hk=2, D=16, page=16),
     dict(config=(32, 32, 4, 1), kv="lean"), "float32"),
    ("attention_extend", dict(q_lens=[70, 9], kv_lens=[200, 9], Hq=2, Hk=1, D=32, page=64),
     dict(config=(64, 128, 4, 1), kv="tma2"), "float16"),
    ("attention_extend", dict(q_lens=[37, 20, 1], kv_lens=[37, 90, 71], Hq=4, Hk=2, D=16, page=16),
     dict(config=(32, 32, 4, 1), kv="tma2", heads_inner=True), "float32"),
    ("attention_extend", dict(q_lens=[7, 20], kv_lens=[70, 90], Hq=8, Hk=2, D=16, page=16),
     dict(config=(64, 32, 4, 1), kv="tma2", splits=3, pack=True, fuse_merge=True, partials="half"), "float16"),
    ("attention_extend", dict(q_lens=[5, 3, 1], kv_lens=[5, 11, 9], Hq=4, Hk=2, D=16, page=4),
     dict(config=(16, 8, 4, 1), kv="lean", splits=2, heads_inner=False, fuse_merge=True), "float32"),
    ("attention_extend", dict(q_lens=[7, 20], kv_lens=[70, 90], Hq=8, Hk=2, D=16, page=16),
     dict(config=(64, 16, 4, 1), splits=4, tma=True, pack=True, partials="half"), "float16"),
]

ATTN_CHILD = CHILD.replace('cases.make(op, "cpu", torch.float32, **shape)',
                           'cases.make(op, "cpu", getattr(torch, launch[1]), **shape)')
assert ATTN_CHILD != CHILD


@pytest.fixture(scope="module")
def attn_variant_results() -> list:
    return run_child(ATTN_CHILD, ATTN_VARIANT_CASES)


@pytest.mark.parametrize("index", range(len(ATTN_VARIANT_CASES)),
                         ids=[f"{case[0]}-{i}-{case[3]}" for i, case in enumerate(ATTN_VARIANT_CASES)])
def test_attention_variant_matches_reference_under_interpreter(attn_variant_results, index):
    result = attn_variant_results[index]
    assert result["ok"], f"{ATTN_VARIANT_CASES[index]}: {result['error']}"
