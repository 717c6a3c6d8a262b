"""Per-op benchmark of the NVIDIA backend against its peers, on one GPU, in one run.

    PYTHONPATH=. python bench/gpu_ops.py [--out DIR] [--only OP,...] [--sweep]

For every case: check our kernel against the reference backend (fp32 reference, fresh random bf16
inputs, poisoned outputs), then time it and the peers installed (FLA chunk_gated_delta_rule and
fused_recurrent_gated_delta_rule, FlashAttention-3, torch SDPA on cuDNN) with
triton.testing.do_bench medians (L2 flushed between calls; decode ops replayed in CUDA graphs, the
peers too). The device ceilings are measured in the same run: a 2 GiB device copy (bytes read +
written) and a bf16 8192³ matmul; for byte-bound ops also a copy of the case's own bytes, timed the
same way ("%copy@size": what a plain copy reaches at that size under the same measurement). Prints
one table; writes JSON to DIR (default $OUT or out/).
`--sweep` also times the launch configurations of the GDN and attention kernels and reports each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT))

import cases  # noqa: E402

from tokenyard.backends.nvidia import attention, elementwise, gdn  # noqa: E402

BF16 = torch.bfloat16
DEV = "cuda"
QWEN_ATTN = dict(Hq=16, Hk=2, D=256)
LLAMA_ATTN = dict(Hq=32, Hk=8, D=128)
QWEN_GDN = dict(Hk=16, Hv=32, K=128, V=128)


@dataclass
class Case:
    op: str
    name: str
    shape: dict
    metric: str  # "bytes" (TB/s vs the copy ceiling) or "flops" (TFLOP/s vs the matmul ceiling)
    amount: Callable[[dict], float]
    graph: bool = False
    check: bool = True
    peers: dict = field(default_factory=dict)  # name -> (args) -> zero-arg callable
    bar: str = ""


# --- amounts ------------------------------------------------------------------------------------

def nbytes(*ts) -> float:
    return float(sum(t.numel() * t.element_size() for t in ts if isinstance(t, torch.Tensor)))


def elementwise_bytes(op: str) -> Callable[[dict], float]:
    def amount(a: dict) -> float:
        if op == "rms_norm":
            n = nbytes(a["x"]) * (4 if a["residual"] is not None else 2)
        elif op == "gated_rms_norm":
            n = nbytes(a["x"]) * 3
        elif op == "qk_norm_rope":
            n = 2 * nbytes(a["q"], a["k"])
        elif op == "silu_and_mul":
            n = nbytes(a["x"]) * 1.5
        elif op == "gdn_gating":
            n = nbytes(a["a"], a["b"]) + 8 * a["a"].numel()
        elif op in ("causal_conv1d_extend", "causal_conv1d_decode"):
            n = 2 * nbytes(a["x"])
        elif op == "kv_cache_write":
            n = 2 * nbytes(a["k"], a["v"])
        return n
    return amount


def gdn_state_bytes(a: dict) -> float:
    return 2.0 * a["v"].shape[0] * a["state"][0].numel() * 4


def gdn_extend_flops(a: dict) -> float:
    T, Hv, V = a["v"].shape
    K = a["q"].shape[2]
    return T * Hv * (4.0 * 2 * K * V + 2 * 2 * 64 * (K + V))


def attn_flops(a: dict) -> float:
    cu = a["cu_seqlens_q"].tolist()
    sk = a["seqlens_k"].tolist()
    hq, d, dv = a["q"].shape[1], a["q"].shape[2], a["v_cache"].shape[3]
    visible = sum((cu[b + 1] - cu[b]) * (sk[b] - (cu[b + 1] - cu[b])) + (cu[b + 1] - cu[b]) * (cu[b + 1] - cu[b] + 1) / 2
                  for b in range(len(sk)))
    return 2.0 * hq * visible * (d + dv)


def kv_bytes(a: dict) -> float:
    kc, vc = a["k_cache"], a["v_cache"]
    return float(a["seqlens_k"].sum()) * kc.shape[2] * (kc.shape[3] + vc.shape[3]) * kc.element_size()


# --- peers --------------------------------------------------------------------------------------

def have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


def fla_chunk(a: dict):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    reads = a["read_slots"].long()
    h0 = a["state"][reads.clamp(min=0)] * (reads >= 0).float()[:, None, None, None]
    q, k, v, g, beta = (a[n][None] for n in ("q", "k", "v", "g", "beta"))
    cu = a["cu_seqlens"].long()
    return lambda: chunk_gated_delta_rule(q, k, v, g, beta, scale=a["scale"], initial_state=h0,
                                          output_final_state=True, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)


def fla_recurrent(a: dict):
    from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

    h0 = a["state"][a["read_slots"].long()]
    q, k, v, g, beta = (a[n][:, None] for n in ("q", "k", "v", "g", "beta"))
    return lambda: fused_recurrent_gated_delta_rule(q, k, v, g=g, beta=beta, scale=a["scale"], initial_state=h0,
                                                    output_final_state=True, use_qk_l2norm_in_kernel=True)


def fa3_extend(a: dict):
    """FA3 on the paged cache: one sequence in FA3's batch form, several in its varlen form."""
    from flash_attn_interface import flash_attn_with_kvcache

    q, cu = a["q"], a["cu_seqlens_q"]
    if cu.numel() == 2:
        return lambda: flash_attn_with_kvcache(q[None], a["k_cache"], a["v_cache"], cache_seqlens=a["seqlens_k"],
                                               page_table=a["page_table"], softmax_scale=a["scale"], causal=True)
    max_q = int((cu[1:] - cu[:-1]).max())
    return lambda: flash_attn_with_kvcache(q, a["k_cache"], a["v_cache"], cache_seqlens=a["seqlens_k"],
                                           page_table=a["page_table"], cu_seqlens_q=cu, max_seqlen_q=max_q,
                                           softmax_scale=a["scale"], causal=True)


def fa3_decode(a: dict):
    from flash_attn_interface import flash_attn_with_kvcache

    q = a["q"][:, None]
    return lambda: flash_attn_with_kvcache(q, a["k_cache"], a["v_cache"], cache_seqlens=a["seqlens_k"],
                                           page_table=a["page_table"], softmax_scale=a["scale"], causal=True)


def sdpa_cudnn(a: dict):
    """cuDNN SDPA on the same problem, unpaged (one sequence with no cached prefix only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    T, Hq, D = a["q"].shape
    if a["cu_seqlens_q"].numel() != 2 or int(a["seqlens_k"][0]) != T:
        return None
    q = a["q"].transpose(0, 1)[None]
    k = torch.randn(1, Hq, T, D, device=DEV, dtype=BF16)  # GQA expanded: cuDNN reads Hq heads
    v = torch.randn(1, Hq, T, a["v_cache"].shape[3], device=DEV, dtype=BF16)

    def run():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=a["scale"])
    return run


# --- the cases ----------------------------------------------------------------------------------

def all_cases() -> list[Case]:
    cs = [
        Case("rms_norm", "T=4096 D=4096 +res (1+w)", dict(T=4096, D=4096, residual=True, offset=1.0), "bytes",
             elementwise_bytes("rms_norm"), bar=">=80% copy"),
        Case("rms_norm", "T=16384 D=4096", dict(T=16384, D=4096), "bytes", elementwise_bytes("rms_norm"), bar=">=80% copy"),
        Case("gated_rms_norm", "T=4096 32x128", dict(T=4096, H=32, D=128), "bytes", elementwise_bytes("gated_rms_norm"),
             bar=">=80% copy"),
        Case("gated_rms_norm", "T=16384 32x128", dict(T=16384, H=32, D=128), "bytes",
             elementwise_bytes("gated_rms_norm"), bar=">=80% copy"),
        Case("qk_norm_rope", "T=4096 16/2x256 rot64", dict(T=4096, Hq=16, Hk=2, D=256, rot=64, style="neox", offset=1.0),
             "bytes", elementwise_bytes("qk_norm_rope"), bar=">=80% copy"),
        Case("qk_norm_rope", "T=16384 32/8x128 rot128", dict(T=16384, Hq=32, Hk=8, D=128, rot=128, style="neox"),
             "bytes", elementwise_bytes("qk_norm_rope"), bar=">=80% copy"),
        Case("silu_and_mul", "T=4096 I=14336", dict(T=4096, I=14336), "bytes", elementwise_bytes("silu_and_mul"),
             bar=">=80% copy"),
        Case("gdn_gating", "T=16384 Hv=32", dict(T=16384, Hv=32), "bytes", elementwise_bytes("gdn_gating")),
        Case("causal_conv1d_extend", "T=8192 C=8192", dict(lens=[8192], C=8192), "bytes",
             elementwise_bytes("causal_conv1d_extend")),
        Case("causal_conv1d_decode", "B=64 C=8192", dict(B=64, C=8192), "bytes",
             elementwise_bytes("causal_conv1d_decode"), graph=True),
        Case("kv_cache_write", "T=8192 2x256", dict(T=8192, Hk=2, D=256, page=64, kv_lens=[8192]), "bytes",
             elementwise_bytes("kv_cache_write")),
    ]
    for b in (1, 8, 64):
        cs.append(Case("gdn_decode", f"B={b} 16/32x128", dict(B=b, **QWEN_GDN), "bytes", gdn_state_bytes, graph=True,
                       peers={"fla_fused_recurrent": fla_recurrent},
                       bar="<=3us" if b == 1 else ">=85% copy"))
    for name, lens in (("T=8192", [8192]), ("T=32768", [32768]), ("8x4096 h0", [4096] * 8)):
        cs.append(Case("gdn_extend", name, dict(lens=lens, **QWEN_GDN), "flops", gdn_extend_flops,
                       peers={"fla_chunk": fla_chunk}, bar=">=1.5x FLA"))
    for heads, label in ((QWEN_ATTN, "16/2x256"), (LLAMA_ATTN, "32/8x128")):
        for T in (8192, 32768):
            cs.append(Case("attention_extend", f"T={T} {label}", dict(q_lens=[T], kv_lens=[T], page=64, **heads), "flops",
                           attn_flops, check=T <= 8192, peers={"fa3": fa3_extend, "sdpa_cudnn": sdpa_cudnn},
                           bar=">=0.8x FA3"))
    cs.append(Case("attention_extend", "800 over 32K 16/2x256", dict(q_lens=[800], kv_lens=[32768 + 800], page=64,
                                                                         **QWEN_ATTN), "flops", attn_flops,
                   peers={"fa3": fa3_extend}, bar="<=1.1x FA3 time"))
    for heads, label in ((QWEN_ATTN, "16/2x256"), (LLAMA_ATTN, "32/8x128")):
        cs.append(Case("attention_decode", f"B=1 128K {label}", dict(kv_lens=[131072], page=64, **heads), "bytes",
                       kv_bytes, graph=True, peers={"fa3": fa3_decode}, bar=">=2.4TB/s and >=FA3"))
        cs.append(Case("attention_decode", f"B=32 8K {label}", dict(kv_lens=[8192] * 32, page=64, **heads), "bytes",
                       kv_bytes, graph=True, peers={"fa3": fa3_decode}, bar=">=0.95x FA3"))
    return cs


def kernel_fn(op: str):
    from tokenyard.backends.nvidia import kernels

    return {o: fn for o, fn, _ in kernels()}[op]


def time_ms(fn, graph: bool) -> float:
    if graph:
        fn()
        torch.cuda.synchronize()
        return do_bench_cudagraph(fn, rep=200, return_mode="median")
    return do_bench(fn, warmup=50, rep=300, return_mode="median")


def ceilings() -> dict:
    src = torch.empty(1 << 30, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    src2 = torch.empty(1 << 30, dtype=torch.uint8, device=DEV).random_()
    dst2 = torch.empty_like(src2)
    t_copy = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    t_copy2 = do_bench(lambda: dst2.copy_(src2), warmup=25, rep=200, return_mode="median")
    copy_tbs = 2 * src.numel() / (min(t_copy, t_copy2) * 1e-3) / 1e12
    del src, dst, src2, dst2
    a = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    b = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    t_mm = do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    return {"copy_TBps": copy_tbs, "matmul_TFLOPs": 2 * 8192**3 / (t_mm * 1e-3) / 1e12}


def rate(metric: str, amount: float, ms: float) -> float:
    return amount / (ms * 1e-3) / 1e12


def run_case(c: Case, ceil: dict) -> list[dict]:
    torch.manual_seed(0)
    args = cases.make(c.op, DEV, BF16, **c.shape)
    fn = kernel_fn(c.op)
    row = {"op": c.op, "case": c.name, "bar": c.bar, "metric": c.metric}
    if c.check:
        try:
            row["rel_err"] = cases.check(c.op, fn, args)
        except AssertionError as exc:
            row["rel_err"] = str(exc)
    amount = c.amount(args)
    ceiling = ceil["copy_TBps"] if c.metric == "bytes" else ceil["matmul_TFLOPs"]
    runs = [("tokenyard", lambda: fn(**args))]
    for name, make in c.peers.items():
        try:
            peer = make(args)
            if peer is not None:
                runs.append((name, peer))
        except Exception as exc:  # a peer not installed or not supporting the shape
            row[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
    out = []
    for name, f in runs:
        try:
            ms = time_ms(f, c.graph)
        except Exception as exc:
            row[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        r = dict(row, kernel=name, ms=ms, rate=rate(c.metric, amount, ms), pct_ceiling=100 * rate(c.metric, amount, ms) / ceiling)
        if name != "tokenyard":
            r.pop("rel_err", None)  # the check is of our kernel only
        out.append(r)
    ours = [r for r in out if r["kernel"] == "tokenyard"]
    for r in out:
        if ours and r["kernel"] != "tokenyard":
            r["ours_speedup"] = r["ms"] / ours[0]["ms"]
    if ours and c.metric == "bytes":
        # the same bytes as one device copy, timed the same way: the ceiling at this size (at tens of
        # MB, do_bench's L2 flush and the launch are a visible share of even a plain copy's time)
        src = torch.empty(int(amount // 2), dtype=torch.uint8, device=DEV).random_()
        dst = torch.empty_like(src)
        copy_ms = time_ms(lambda: dst.copy_(src), c.graph)
        ours[0]["same_size_copy_ms"] = copy_ms
        ours[0]["pct_same_size_copy"] = 100 * copy_ms / ours[0]["ms"]
        del src, dst
    torch.cuda.empty_cache()
    return out or [dict(row, kernel="tokenyard", ms=float("nan"))]


# --- launch-configuration sweeps ----------------------------------------------------------------

SWEPT = ("qk_norm_rope", "gdn_decode", "gdn_extend", "attention_extend", "attention_decode")


def sweep(op_name: str, rows: list, on_row=None) -> None:
    """Time each launch configuration of one op's kernel on its benchmark shapes; append to rows."""

    def record(op, case, config, fn, graph, amount=None, metric="bytes"):
        try:
            ms = time_ms(fn, graph)
            r = {"op": op, "case": case, "config": str(config), "ms": ms}
            if amount:
                r["rate"] = rate(metric, amount, ms)
        except Exception as exc:
            r = {"op": op, "case": case, "config": str(config), "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
        rows.append(r)
        print(f"sweep {op} {case} {config}: " + (f"{r['ms'] * 1e3:.1f} us" if "ms" in r else r["error"]), flush=True)
        if on_row:
            on_row()

    if op_name == "qk_norm_rope":
        for heads, label in ((QWEN_ATTN, "16/2x256 rot64"), (LLAMA_ATTN, "32/8x128 rot128")):
            a = cases.make("qk_norm_rope", DEV, BF16, T=4096, Hq=heads["Hq"], Hk=heads["Hk"], D=heads["D"],
                           rot=64 if heads["D"] == 256 else 128, style="neox")
            for warps in (2, 4, 8, 16):
                record("qk_norm_rope", f"T=4096 {label}", warps, lambda: elementwise.qk_norm_rope(**a, num_warps=warps),
                       False, elementwise_bytes("qk_norm_rope")(a))
    for b in ((1, 8, 64) if op_name == "gdn_decode" else ()):
        a = cases.make("gdn_decode", DEV, BF16, B=b, **QWEN_GDN)
        for bv in (8, 16, 32, 64):
            for warps in (1, 2, 4, 8):
                record("gdn_decode", f"B={b}", (bv, warps), lambda: gdn.gdn_decode(**a, config=(bv, warps)), True,
                       gdn_state_bytes(a))
    for lens in (([8192], [4096] * 8) if op_name == "gdn_extend" else ()):
        a = cases.make("gdn_extend", DEV, BF16, lens=lens, **QWEN_GDN)
        label = f"T={sum(lens)} B={len(lens)}"
        for cfg in ((32, 4, 64, 2), (64, 4, 64, 2), (32, 8, 64, 2), (32, 4, 32, 2), (32, 4, 64, 4), (16, 4, 64, 2),
                    (32, 4, 64, 1)):
            record("gdn_extend", label, cfg, lambda: gdn.gdn_extend(**a, config=cfg), False)
        # the two launches on their own, default configuration
        cfg = gdn.extend_config(len(lens), 32, 128, tokens=sum(lens))
        pa = (a["q"], a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"], a["scale"], True)
        chunks = gdn.prepare(*pa, cfg)
        o = torch.empty_like(a["v"])
        record("gdn_extend", label, ("prepare only",) + cfg, lambda: gdn.prepare(*pa, cfg), False)
        record("gdn_extend", label, ("scan only",) + cfg,
               lambda: gdn.scan(a["q"], a["k"], chunks, a["state"], a["cu_seqlens"], a["read_slots"], a["write_slots"],
                                o, a["scale"], cfg), False)
        del chunks, o
    for heads, label in ((QWEN_ATTN, "16/2x256"), (LLAMA_ATTN, "32/8x128")):
        if op_name == "attention_extend":
            extend_sweep(heads, label, record)
        if op_name == "attention_decode":
            for ctx, b in ((131072, 1), (8192, 32)):
                a = cases.make("attention_decode", DEV, BF16, kv_lens=[ctx] * b, page=64, **heads)
                for cfg in ((32, 4, 4, 132), (32, 4, 4, 264), (32, 4, 3, 264), (64, 4, 2, 264), (16, 4, 4, 264),
                            (32, 8, 4, 264), (64, 4, 2, 528), (64, 4, 2, 1056), (64, 4, 3, 528)):
                    record("attention_decode", f"B={b} ctx={ctx} {label}", cfg,
                           lambda: attention.attention_decode(**a, config=cfg), True, kv_bytes(a))
        torch.cuda.empty_cache()


def extend_sweep(heads: dict, label: str, record) -> None:
    """attention_extend at the default tile: TMA or gathered K/V tiles, GQA packing, program order,
    and on the agentic turn key-range splits; each variant first checked against the reference on a
    two-sequence case with a cached prefix (unsplit and split three ways)."""
    d = heads["D"]
    tile = (128, 64, 8, 3) if d == 256 else (128, 128, 8, 2)
    variants = [dict(config=tile, tma=tma, pack=pack, heads_inner=inner)
                for tma, pack, inner in ((False, False, False), (True, False, False), (True, False, True),
                                         (True, True, True))]
    check = cases.make("attention_extend", DEV, BF16, q_lens=[777, 100], kv_lens=[4096 + 777, 3000], page=64, **heads)
    good = []
    for v in variants:
        try:
            for ns in (1, 3):
                cases.check("attention_extend", lambda **x: attention.attention_extend(**x, **v, splits=ns), check)
            good.append(v)
        except Exception as exc:
            print(f"check failed {label} {v}: {str(exc)[:200]}", flush=True)

    def name(v, ns=None):
        return (v["config"] + (("tma",) if v["tma"] else ()) + (("pack",) if v["pack"] else ())
                + (() if v["heads_inner"] else ("group-major",)) + ((f"ns={ns}",) if ns else ()))

    a = cases.make("attention_extend", DEV, BF16, q_lens=[8192], kv_lens=[8192], page=64, **heads)
    fl = attn_flops(a)
    for v in good:
        record("attention_extend", f"T=8192 {label}", name(v), lambda: attention.attention_extend(**a, **v), False, fl,
               "flops")
    a = cases.make("attention_extend", DEV, BF16, q_lens=[800], kv_lens=[32768 + 800], page=64, **heads)
    fl = attn_flops(a)
    for v in good:
        if v["tma"] and v["heads_inner"]:
            for ns in (1, 2, 5):
                record("attention_extend", f"800 over 32K {label}", name(v, ns),
                       lambda: attention.attention_extend(**a, **v, splits=ns), False, fl, "flops")


# --- main ---------------------------------------------------------------------------------------

def fmt_rate(r: dict) -> str:
    if "rate" not in r:
        return "-"
    unit = "TB/s" if r["metric"] == "bytes" else "TFLOP/s"
    return f"{r['rate']:.2f} {unit}" if r["metric"] == "bytes" else f"{r['rate']:.0f} {unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--only", default="", help="comma-separated ops")
    ap.add_argument("--sweep", action="store_true")
    opts = ap.parse_args()
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    props = torch.cuda.get_device_properties(0)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": props.name,
            "capability": list(torch.cuda.get_device_capability()), "torch": torch.__version__,
            "triton": triton.__version__, "peers": {m: have(m) for m in ("fla", "flash_attn_interface")}}
    ceil = ceilings()
    meta.update(ceil)
    print(json.dumps(meta), flush=True)
    only = {o for o in opts.only.split(",") if o}
    rows, sweeps = [], []

    def save():
        (out_dir / "gpu_ops.json").write_text(json.dumps({"meta": meta, "rows": rows, "sweeps": sweeps}, indent=1))

    todo = [c for c in all_cases() if not only or c.op in only]
    for i, c in enumerate(todo):
        t0 = time.time()
        try:
            rows += run_case(c, ceil)
        except Exception as exc:
            traceback.print_exc()
            rows.append({"op": c.op, "case": c.name, "kernel": "tokenyard", "error": f"{type(exc).__name__}: {exc}"})
        print(f"# {c.op} {c.name}: {time.time() - t0:.1f}s", flush=True)
        save()
        last_of_op = i + 1 == len(todo) or todo[i + 1].op != c.op
        if opts.sweep and last_of_op and c.op in SWEPT:
            sweep(c.op, sweeps, save)
    print_table(meta, ceil, rows)
    if sweeps:
        print("\nlaunch-configuration sweeps (best 3 per case):")
        by_case: dict = {}
        for s in sweeps:
            by_case.setdefault((s["op"], s["case"]), []).append(s)
        for (op, case), ss in by_case.items():
            ok = sorted((s for s in ss if "ms" in s), key=lambda s: s["ms"])[:3]
            errs = sum("error" in s for s in ss)
            print(f"  {op:18s} {case:28s} " + "  ".join(f"{s['config']}={s['ms'] * 1e3:.1f}us" for s in ok)
                  + (f"  ({errs} configs failed)" if errs else ""))
    return 0


def print_table(meta: dict, ceil: dict, rows: list) -> None:
    print(f"\n{meta['device']}  copy {ceil['copy_TBps']:.2f} TB/s  bf16 matmul {ceil['matmul_TFLOPs']:.0f} TFLOP/s")
    print(f"{'op':20s} {'case':26s} {'kernel':20s} {'time':>11s} {'rate':>14s} {'%ceil':>6s} {'%copy@size':>10s} "
          f"{'peer/ours':>9s} {'err':>9s}  bar")
    for r in rows:
        t = f"{r['ms'] * 1e3:.1f} us" if isinstance(r.get("ms"), float) and r["ms"] == r["ms"] else "-"
        err = r.get("rel_err", "")
        err = f"{err:.1e}" if isinstance(err, float) else ("FAIL" if err else "")
        print(f"{r['op']:20s} {r['case']:26s} {r['kernel']:20s} {t:>11s} {fmt_rate(r):>14s} "
              f"{r.get('pct_ceiling', float('nan')):6.1f} {r.get('pct_same_size_copy', float('nan')):10.1f} "
              f"{r.get('ours_speedup', float('nan')):9.2f} {err:>9s}  "
              f"{r.get('bar', '') if r['kernel'] == 'tokenyard' else ''}")
        for k, v in r.items():
            if k.endswith("_error") or k == "error" or (k == "rel_err" and isinstance(v, str)):
                print(f"    {k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
