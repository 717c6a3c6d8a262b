"""Sweep of the GDN kernels' variants on one GPU: gdn_extend (prepare kind, scan form, launch shapes)
and gdn_decode (BV, warps, eviction policy), old defaults and new variants in the same run.

    PYTHONPATH=. python bench/gpu/sweep_gdn.py --out DIR [--quick | --full] [--variants SUBSTR,...] [--no-peers]

For each case: fresh random bf16 inputs (tests/gpu/cases.py), the fp32 reference computed once, each
variant checked against it (outputs poisoned), then timed: triton.testing.do_bench medians for
gdn_extend (whole op, and its prepare or scan launch alone where the variant changes only that one),
CUDA-graph replays for gdn_decode. FLA (chunk_gated_delta_rule / fused_recurrent) in the same run
where importable. Prints one table; writes DIR/sweep_gdn.json. Variants that fail to compile or
check print the error and the sweep goes on.

Variant names: "default" is the backend's current launch (gdn.extend_config / gdn.decode_config);
extend variants override entries of that 7-tuple (scan BV, scan warps, prepare BK, prepare warps,
prepare kind, scan num_stages, scan LEAN form): "p:*" change the prepare launch only, "s:*" the
scan only, "c:*" both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import triton
from triton.testing import do_bench, do_bench_cudagraph

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import cases  # noqa: E402
from gpu_ops import QWEN_GDN, fla_chunk, fla_recurrent, gdn_extend_flops, gdn_state_bytes  # noqa: E402

from tokenyard.backends.nvidia import gdn  # noqa: E402

BF16 = torch.bfloat16
DEV = "cuda"
FIELDS = ("bv", "sw", "bk", "pw", "kind", "stages", "lean")
T_START = time.time()

# name -> overrides of the default extend config (see the module docstring)
EXTEND_VARIANTS = {
    "default": {},
    "p:wide w8": dict(kind="wide", pw=8),
    "p:nil w4": dict(kind="nil", pw=4),
    "p:nil w8": dict(kind="nil", pw=8),
    "p:nil w8 bk64": dict(kind="nil", pw=8, bk=64),
    "p:nil2 w8": dict(kind="nil2", pw=8),
    "p:nilx3 w8": dict(kind="nilx3", pw=8),
    "p:nilt w4": dict(kind="nilt", pw=4),
    "p:nilt w8": dict(kind="nilt", pw=8),
    "p:nil2t w8": dict(kind="nil2t", pw=8),
    "s:lean1": dict(lean=1),
    "s:lean2": dict(lean=2),
    "s:lean2 st1": dict(lean=2, stages=1),
    "s:lean2 st2": dict(lean=2, stages=2),
    "s:lean2 w8 st2": dict(lean=2, sw=8, stages=2),
    "s:lean2 bv16 st1": dict(lean=2, bv=16, stages=1),
    "s:lean2 bv16 st2": dict(lean=2, bv=16, stages=2),
    "s:lean2 bv64 st2": dict(lean=2, bv=64, stages=2),
    "c:nil w8 + lean2": dict(kind="nil", pw=8, lean=2),
    "c:nil w4 + lean2": dict(kind="nil", pw=4, lean=2),
    "c:nilt w8 + lean2": dict(kind="nilt", pw=8, lean=2),
    "c:nilt w4 + lean2": dict(kind="nilt", pw=4, lean=2),
    "c:nilt w8 + lean2 st1": dict(kind="nilt", pw=8, lean=2, stages=1),
    "c:nilt w8 + lean2 bv16 st1": dict(kind="nilt", pw=8, lean=2, bv=16, stages=1),
}
# the variants run without --full (each new kernel compiled once per case; the combinations reuse them)
MAIN_EXTEND = ("default", "p:nil w8", "p:nilt w4", "p:nilt w8", "s:lean2", "s:lean2 st1", "s:lean2 bv16 st1",
               "c:nilt w8 + lean2", "c:nilt w4 + lean2", "c:nilt w8 + lean2 st1", "c:nilt w8 + lean2 bv16 st1",
               "p:nil2t w8")
QUICK_EXTEND = ("default", "p:nilt w8", "s:lean2", "c:nilt w8 + lean2")
EXTEND_CASES = (("T=8192", [8192]), ("T=32768", [32768]), ("8x4096 h0", [4096] * 8))

# (BV, warps[, state eviction policy])
DECODE_VARIANTS = {
    1: [(8, 1), (16, 1), (16, 2), (32, 1), (32, 2), (32, 4), (8, 1, "evict_last"), (16, 2, "evict_last"),
        (16, 2, "evict_first"), (16, 1, "evict_last")],
    8: [(16, 1), (32, 1), (32, 2), (32, 1, "evict_last"), (64, 4)],
    64: [(32, 1), (64, 2), (64, 4), (64, 4, "evict_first"), (128, 4)],
}


def extend_config(batch: int, name: str) -> tuple:
    base = dict(zip(FIELDS, tuple(gdn.extend_config(batch, QWEN_GDN["Hv"], QWEN_GDN["V"])) + ("blocks", None, 0)))
    base.update(EXTEND_VARIANTS[name])
    return tuple(base[f] for f in FIELDS)


def ceilings() -> dict:
    src = torch.empty(1 << 29, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    t_copy = do_bench(lambda: dst.copy_(src), warmup=10, rep=60, return_mode="median")
    del src, dst
    a = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    b = torch.randn(8192, 8192, device=DEV, dtype=BF16)
    t_mm = do_bench(lambda: a @ b, warmup=10, rep=60, return_mode="median")
    return {"copy_TBps": 2 * (1 << 29) / (t_copy * 1e-3) / 1e12, "matmul_TFLOPs": 2 * 8192**3 / (t_mm * 1e-3) / 1e12}


def bench_ms(fn, graph: bool) -> float:
    if graph:
        fn()
        torch.cuda.synchronize()
        return do_bench_cudagraph(fn, rep=60, return_mode="median")
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


class Reference:
    """The fp32 reference outputs of one case, computed once; check(fn) = worst relative error."""

    def __init__(self, op: str, args: dict):
        self.op, self.args = op, args
        ref_args = cases.fp32_copy(args)
        self.ref = [t.clone() for t in cases.outputs(op, cases.REFERENCE[op](**ref_args), ref_args)]

    def check(self, fn) -> float:
        test_args = cases._clone(self.args)
        cases.poison(DEV)
        got = cases.outputs(self.op, fn(**test_args), test_args)
        if DEV == "cuda":
            torch.cuda.synchronize()
        return max(cases.rel_error(a, b) for a, b in zip(got, self.ref))


def peer(emit, op, label, name, make, args, graph, metric, amount):
    """Time a peer (FLA) on the case; its time in ms, or None where it is missing or fails."""
    try:
        ms = bench_ms(make(args), graph)
    except Exception as exc:
        emit(dict(op=op, case=label, variant=name, error=f"{type(exc).__name__}: {str(exc)[:160]}"))
        return None
    emit(dict(op=op, case=label, variant=name, ms=ms, metric=metric, amount=amount))
    return ms


def run_extend(opts, ceil, rows, emit) -> None:
    chosen = EXTEND_VARIANTS if opts.full else QUICK_EXTEND if opts.quick else MAIN_EXTEND
    names = [n for n in EXTEND_VARIANTS if n in chosen and (not opts.variants or any(s in n for s in opts.variants))]
    if "default" not in names:
        names.insert(0, "default")
    for label, lens in EXTEND_CASES:
        torch.manual_seed(0)
        a = cases.make("gdn_extend", DEV, BF16, lens=lens, **QWEN_GDN)
        flops = gdn_extend_flops(a)
        t0 = time.time()
        ref = Reference("gdn_extend", a)
        print(f"# gdn_extend {label}: reference {time.time() - t0:.1f}s", flush=True)
        base = None if opts.no_peers else peer(emit, "gdn_extend", label, "FLA chunk", fla_chunk, a, False, "flops", flops)
        for name in names:
            if time.time() - T_START > opts.budget:
                print(f"# budget of {opts.budget:.0f} s spent: gdn_extend {label} {name} skipped", flush=True)
                continue
            cfg = extend_config(len(lens), name)
            row = dict(op="gdn_extend", case=label, variant=name, config=str(cfg), metric="flops", amount=flops)
            try:
                fn = lambda **x: gdn.gdn_extend(**x, config=cfg)  # noqa: E731
                row["rel_err"] = ref.check(fn)
                row["ms"] = bench_ms(lambda: fn(**a), False)
                if base:
                    row["peer_over_ours"] = base / row["ms"]
                # the launch the variant changes, alone
                pa = (a["q"], a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"], a["scale"], True)
                if name == "default" or name.startswith("p:"):
                    row["prepare_ms"] = bench_ms(lambda: gdn.prepare(*pa, cfg), False)
                if name == "default" or name.startswith("s:"):
                    chunks = gdn.prepare(*pa, cfg)
                    o = torch.empty_like(a["v"])
                    st = a["state"].clone()
                    row["scan_ms"] = bench_ms(lambda: gdn.scan(a["q"], a["k"], chunks, st, a["cu_seqlens"], a["read_slots"],
                                                               a["write_slots"], o, a["scale"], cfg), False)
                    del chunks, o, st
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                traceback.print_exc(limit=2)
            emit(row)
        del a, ref
        torch.cuda.empty_cache()


def run_decode(opts, ceil, rows, emit) -> None:
    for b in (1, 8, 64):
        torch.manual_seed(0)
        a = cases.make("gdn_decode", DEV, BF16, B=b, **QWEN_GDN)
        amount = gdn_state_bytes(a)
        ref = Reference("gdn_decode", a)
        label = f"B={b}"
        base = None if opts.no_peers else peer(emit, "gdn_decode", label, "FLA fused_recurrent", fla_recurrent, a, True,
                                               "bytes", amount)
        default = gdn.decode_config(b, QWEN_GDN["Hv"], QWEN_GDN["V"])
        variants = [("default", default)] + [(str(c), c) for c in DECODE_VARIANTS[b] if tuple(c) != tuple(default)]
        if opts.quick:
            variants = variants[:6]
        for name, cfg in variants:
            if time.time() - T_START > opts.budget:
                print(f"# budget of {opts.budget:.0f} s spent: gdn_decode {label} {name} skipped", flush=True)
                continue
            row = dict(op="gdn_decode", case=label, variant=name, config=str(cfg), metric="bytes", amount=amount)
            try:
                fn = lambda **x: gdn.gdn_decode(**x, config=cfg)  # noqa: E731
                row["rel_err"] = ref.check(fn)
                row["ms"] = bench_ms(lambda: fn(**a), True)
                if base:
                    row["peer_over_ours"] = base / row["ms"]
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            emit(row)
        del a, ref
        torch.cuda.empty_cache()


def fmt(r: dict, ceil: dict) -> str:
    if "error" in r:
        return f"{r['op']:10s} {r['case']:10s} {r['variant']:28s} ERROR {r['error']}"
    rate = r["amount"] / (r["ms"] * 1e-3) / 1e12
    ceiling = ceil["copy_TBps"] if r["metric"] == "bytes" else ceil["matmul_TFLOPs"]
    unit = "TB/s" if r["metric"] == "bytes" else "TFLOP/s"
    parts = [f"{r['op']:10s} {r['case']:10s} {r['variant']:28s} {r['ms'] * 1e3:9.1f} us {rate:7.2f} {unit:7s}"
             f" {100 * rate / ceiling:5.1f}%"]
    parts.append(f" peer/ours {r['peer_over_ours']:5.2f}" if "peer_over_ours" in r else " " * 16)
    parts.append(f" err {r['rel_err']:.1e}" if "rel_err" in r else " " * 12)
    if "prepare_ms" in r:
        parts.append(f" prepare {r['prepare_ms'] * 1e3:.1f} us")
    if "scan_ms" in r:
        parts.append(f" scan {r['scan_ms'] * 1e3:.1f} us")
    return "".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--quick", action="store_true", help="fewer variants")
    ap.add_argument("--full", action="store_true", help="every extend variant (over the 150 s budget)")
    ap.add_argument("--variants", default="", help="comma-separated substrings of extend variant names to run")
    ap.add_argument("--ops", default="gdn_decode,gdn_extend")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--budget", type=float, default=140.0, help="seconds after which remaining variants are skipped")
    opts = ap.parse_args()
    opts.variants = [v for v in opts.variants.split(",") if v]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(0) if DEV == "cuda" else DEV,
            "torch": torch.__version__, "triton": triton.__version__}
    ceil = ceilings()
    meta.update(ceil)
    print(json.dumps(meta), flush=True)
    rows: list = []

    def emit(r: dict) -> None:
        rows.append(r)
        print(fmt(r, ceil), flush=True)
        (out / "sweep_gdn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    ops = opts.ops.split(",")
    if "gdn_extend" in ops:
        run_extend(opts, ceil, rows, emit)
    if "gdn_decode" in ops:
        run_decode(opts, ceil, rows, emit)
    print(f"\n{meta['device']}  copy {ceil['copy_TBps']:.2f} TB/s  bf16 matmul {ceil['matmul_TFLOPs']:.0f} TFLOP/s"
          f"  ({time.time() - T_START:.0f} s)")
    for key in dict.fromkeys((r["op"], r["case"]) for r in rows):
        rs = [r for r in rows if (r["op"], r["case"]) == key]
        ok = sorted((r for r in rs if "ms" in r and r["variant"] not in ("FLA chunk", "FLA fused_recurrent")
                     and r.get("rel_err", 1) <= 2e-2), key=lambda r: r["ms"])
        print(f"best {key[0]} {key[1]}: " + "  ".join(f"{r['variant']}={r['ms'] * 1e3:.1f}us" for r in ok[:3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
