"""Sweep of the GDN kernels' variants on one GPU: gdn_extend (prepare kind, scan form, launch shapes)
and gdn_decode (BV, warps, eviction policy), old defaults and new variants in the same run.

    PYTHONPATH=. python bench/gpu/sweep_gdn.py --out DIR [--quick | --full] [--risky] [--variants SUBSTR,...] [--no-peers]

For each case: fresh random bf16 inputs (tests/gpu/cases.py), the fp32 reference computed once, each
variant checked against it (outputs poisoned), then timed: triton.testing.do_bench medians for
gdn_extend (whole op, and its prepare or scan launch alone where the variant changes only that one),
CUDA-graph replays for gdn_decode. FLA (chunk_gated_delta_rule / fused_recurrent) in the same run
where importable. Prints one table and a "best" summary; writes DIR/sweep_gdn.json. Variants that
fail to compile or check print the error and the sweep goes on; a variant that can take the CUDA
context down (RISKY: TMA loads at num_stages=1, which crashed with an illegal address on the
device) runs only with --risky, in a child process of its own; if the context is lost anyway, the
remaining variants run in a fresh child process.

Variant names: "default" is the backend's current launch (gdn.extend_config: "nilt" prepare at 4
warps capped at 128 registers, inverse in registers, v-head-major grid, without P + the LEAN 2
scan on the Gluon kernel computing P; gdn.decode_config), "old default" the round-1 one
(gdn.old_extend_config: "blocks" prepare at 2 warps, LEAN 0 scan); extend variants override
entries of the default's 8-tuple (scan BV, scan warps, prepare BK, prepare warps, prepare kind,
scan num_stages, scan LEAN form, launch options; "extra" dicts merge): "p:*" change the prepare
launch only, "s:*" the scan only, "c:*" both. The default's prepare leaves P out ("pscan"), so an
"s:*" variant of a scan that reads P (LEAN 0/1, "sws": False) reports an error: time those as
"c:*". Only launch shapes of the kept kernels and the fallbacks remain (see EXTEND_VARIANTS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
from gpu_ops import QWEN_GDN, ceilings, fla_chunk, fla_recurrent, gdn_extend_flops, gdn_state_bytes  # noqa: E402

from tokenyard.backends.nvidia import gdn  # noqa: E402

BF16 = torch.bfloat16
DEV = "cuda"
if os.environ.get("SWEEP_GDN_DRYRUN"):  # CPU check of the script's logic: TRITON_INTERPRET=1, tiny shapes
    BF16, DEV = torch.float32, "cpu"
    QWEN_GDN = dict(Hk=1, Hv=2, K=128, V=128)  # extend_config takes the default forms at K = V = 128 only
FIELDS = ("bv", "sw", "bk", "pw", "kind", "stages", "lean", "extra")
T_START = time.time()
MAX_ERR = 1e-2  # a variant above this is reported but never "best" (the good ones sit at 3.4e-3)

# name -> overrides of the default extend config (see the module docstring); "extra" dicts merge.
# Only the kept forms (gdn.PREPARE_KINDS, gdn.SCAN_FORMS): the LEAN 3/4/5 scans and the wide/nil*
# prepares other than "nilt" were removed from gdn.py after the sweeps of 02:10/02:16/02:43 UTC.
EXTEND_VARIANTS = {
    "default": {},  # nilt w4 r128 pinv pgrid + LEAN 2
    "old default": "old",  # blocks w2 + LEAN 0
    # the prepare's register cap (the default's 128: 4 CTAs/SM): uncapped 166 registers = 3 CTAs/SM
    "p:nilt w4 nocap": dict(extra={"pmaxnreg": None}),
    "p:nilt w4 bk64": dict(bk=64),  # half the K-loop trips, [64, 64] TMA boxes
    "p:nilt w8 r128": dict(pw=8),  # 2 CTAs of 8 warps
    # the default before 05:30 UTC: the inverse's diagonal blocks through a global scratch (ncu, T=32K:
    # DRAM 55%, L1 70%, 37% of stalls on L1TEX scoreboards), chunk-major grid, capped at 168; and
    # each of the two changes alone
    "p:scratch r168": dict(extra={"pmaxnreg": 168, "pinv": None, "pgrid": None}),
    "p:no inv": dict(extra={"pinv": None}),
    "p:no hv": dict(extra={"pgrid": None}),
    "p:r168": dict(extra={"pmaxnreg": 168}),
    # the fallback prepare where TMA does not apply (the old default's prepare)
    "p:blocks w2": dict(kind="blocks", pw=2, extra={"pmaxnreg": None}),
    # the fallback scan (pointer loads); at num_stages 1 without the pipeliner's buffers: 70-82 KB
    # of shared memory instead of 193-214 KB, so 2 CTAs/SM (8x4096: 829.8 us against 747.0, 02:43)
    "s:lean1": dict(lean=1),
    "s:lean1 st1": dict(lean=1, stages=1),
    "s:lean2 st2": dict(stages=2),
    "s:lean2 bv16 st2": dict(bv=16, stages=2),
    "s:bv64": dict(bv=64),  # half the L2 reads of W/q/k/P a chunk (8x4096: 746.6 us, = default)
    "s:lean0": dict(lean=0),
    # P computed by the LEAN 2 scan instead of written by the prepare ("pscan"). Offline sm_90, Triton
    # 3.6, scan at 3 stages: BV 32 170 KB of shared memory (194 without), 255 registers (192), 2
    # spill instructions in the loop (0), 1567 instructions in the loop (863); BV 64 (the default at
    # 8x4096) 190 KB (214), 119 spill instructions in the loop (16 without). 2 stages: BV 32 116 KB
    # and 255 registers, BV 16 107 KB and 195 registers (no spill): 2 CTAs an SM, which P's 8 KB a
    # stage kept "s:lean2 bv16 st2" (123 KB) from (BV 32 only just: 2 x 116.5 KB of 228). 4 stages
    # at BV 32: 224 KB (248 KB at BV 64: over the 227 KB limit).
    # the default scan from gdn.GLUON_SCAN_MIN_TOKENS tokens is the warp-specialised Gluon kernel
    # (gdn_ws.py: producer warp, chain warpgroup, output warpgroup computing P: "sws" + "pscan",
    # 06:03 UTC); "stages" is its ring depth there (default 2). "c:triton scan": the Triton LEAN 2 scan reading the prepare's P, the
    # default before; "c:sws no pscan": the Gluon scan reading the prepare's P
    "c:triton scan": dict(extra={"sws": False, "pscan": False}),
    "c:sws no pscan": dict(extra={"sws": True, "pscan": False}),
    "c:sws": dict(extra={"sws": True, "pscan": True}),  # = default from gdn.GLUON_SCAN_MIN_TOKENS tokens
    "c:sws st3": dict(stages=3, extra={"sws": True, "pscan": True}),
    "c:sws bv16": dict(bv=16, extra={"sws": True, "pscan": True}),
    "c:sws bv64": dict(bv=64, extra={"sws": True, "pscan": True}),
    "c:pscan": dict(extra={"sws": False, "pscan": True}),
    "c:pscan st2": dict(stages=2, extra={"sws": False, "pscan": True}),
    "c:pscan bv32": dict(bv=32, extra={"sws": False, "pscan": True}),
    "c:pscan bv32 st2": dict(bv=32, stages=2, extra={"sws": False, "pscan": True}),
    "c:pscan bv32 st4": dict(bv=32, stages=4, extra={"sws": False, "pscan": True}),
    "c:pscan bv16 st2": dict(bv=16, stages=2, extra={"sws": False, "pscan": True}),
    # RISKY: TMA at num_stages=1 (illegal address on the device, Triton 3.6; Triton 3.9's TMA
    # lowering asserts on the prepare's loads at num_stages=1)
    "s:lean2 st1": dict(stages=1),
}
RISKY = ("s:lean2 st1",)
# the variants run without --full, in this order
MAIN_EXTEND = ("default", "old default", "c:triton scan", "c:sws no pscan", "c:pscan", "c:pscan bv16 st2", "c:pscan bv32 st2", "c:pscan bv32",
               "c:pscan st2", "c:pscan bv32 st4", "s:lean2 bv16 st2", "p:scratch r168", "p:no inv", "p:no hv", "p:r168",
               "p:nilt w4 nocap", "s:bv64", "p:blocks w2", "s:lean1", "p:nilt w4 bk64", "s:lean1 st1", "p:nilt w8 r128",
               "s:lean2 st2")
QUICK_EXTEND = ("default", "old default", "p:scratch r168")
DECODE_RESERVE_S = 15.0  # of the budget, kept for gdn_decode after gdn_extend
EXTEND_CASES = (("T=8192", [8192]), ("T=32768", [32768]), ("8x4096 h0", [4096] * 8))
if DEV == "cpu":
    EXTEND_CASES = (("T=8192", [70]), ("T=32768", [130]), ("8x4096 h0", [33, 64]))

# (BV, warps[, state eviction policy]); the default is added first
DECODE_VARIANTS = {
    1: [(16, 2), (16, 2, "evict_last"), (32, 4)],  # (16, 2): the previous default
    8: [(32, 1, "evict_last"), (32, 2)],
    64: [(64, 2), (64, 4, "evict_first")],
}


def extend_config(batch: int, name: str, tokens: int) -> tuple:
    hv, v = QWEN_GDN["Hv"], QWEN_GDN["V"]
    over = EXTEND_VARIANTS[name]
    cfg = tuple(gdn.old_extend_config(batch, hv, v) if over == "old" else gdn.extend_config(batch, hv, v, tokens=tokens))
    base = dict(zip(FIELDS, cfg + ("blocks", None, 0, None)[len(cfg) - 4:]))
    if over != "old":
        for key, val in over.items():
            base[key] = {**(base.get(key) or {}), **val} if key == "extra" else val
    return tuple(base[f] for f in FIELDS)


def bench_ms(fn, graph: bool) -> float:
    if DEV == "cpu":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
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


def context_alive() -> bool:
    if DEV != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def run_child(opts, names, labels, rows, emit, why: str) -> None:
    """Run extend variants `names` on cases `labels` in a fresh process (its own CUDA context), and
    take its rows."""
    out = Path(opts.out) / ("child_" + str(len(rows)))
    left = max(10.0, opts.budget - (time.time() - T_START))
    cmd = [sys.executable, __file__, "--out", str(out), "--ops", "gdn_extend", "--exact", ",".join(names),
           "--cases", ",".join(labels), "--budget", str(left), "--no-peers", "--no-ceilings"]
    print(f"# {why}: {', '.join(names)} on {', '.join(labels)} in a child process", flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left + 60)
        tail = [ln for ln in proc.stdout.splitlines() if ln.startswith("gdn_") or ln.startswith("#")]
        print("\n".join("  child: " + ln for ln in tail[-40:]), flush=True)
        if proc.returncode:
            print(f"  child exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] }", flush=True)
        got = json.loads((out / "sweep_gdn.json").read_text())["rows"] if (out / "sweep_gdn.json").exists() else []
    except Exception as exc:
        print(f"  child failed: {type(exc).__name__}: {exc}", flush=True)
        got = []
    done = {(r["case"], r["variant"]) for r in got}
    for r in got:
        emit(r, quiet=True)
    for label in labels:
        for name in names:
            if (label, name) not in done:
                emit(dict(op="gdn_extend", case=label, variant=name, error="not measured (child process)"))


def run_extend(opts, ceil, rows, emit) -> None:
    if opts.exact:
        names = [n for n in opts.exact if n in EXTEND_VARIANTS]
    else:
        chosen = list(EXTEND_VARIANTS) if opts.full else QUICK_EXTEND if opts.quick else MAIN_EXTEND
        names = [n for n in chosen if not opts.variants or any(s in n for s in opts.variants)]
        names = [n for n in names if n not in RISKY]
        if "default" not in names:
            names.insert(0, "default")
    risky = [] if opts.exact else [n for n in RISKY if opts.risky or (opts.full and n in EXTEND_VARIANTS)]
    cases_ = [(label, lens) for label, lens in EXTEND_CASES if not opts.cases or label in opts.cases]
    # each case gets a share of the time left (the first more: most compiles happen there), so a
    # slow start skips the last variants of every case (the diagnostics) rather than a whole case
    reserve = DECODE_RESERVE_S if "gdn_decode" in opts.ops.split(",") else 0.0
    t_ext = time.time()
    span = max(1.0, opts.budget - reserve - (t_ext - T_START))
    weights = [1.6] + [1.0] * (len(cases_) - 1)
    ends = [t_ext + span * sum(weights[:i + 1]) / sum(weights) for i in range(len(cases_))]
    for ci, (label, lens) in enumerate(cases_):
        torch.manual_seed(0)
        a = cases.make("gdn_extend", DEV, BF16, lens=lens, **QWEN_GDN)
        flops = gdn_extend_flops(a)
        t0 = time.time()
        ref = Reference("gdn_extend", a)
        print(f"# gdn_extend {label}: reference {time.time() - t0:.1f}s", flush=True)
        base = None if opts.no_peers else peer(emit, "gdn_extend", label, "FLA chunk", fla_chunk, a, False, "flops", flops)
        for vi, name in enumerate(names):
            if time.time() > ends[ci] and vi > 1:  # default and old default always run
                print(f"# this case's share of the {opts.budget:.0f} s budget spent: gdn_extend {label} {name} skipped",
                      flush=True)
                continue
            cfg = extend_config(len(lens), name, sum(lens))
            row = dict(op="gdn_extend", case=label, variant=name, config=str(cfg), lean=cfg[6], metric="flops",
                       amount=flops)
            try:
                fn = lambda **x: gdn.gdn_extend(**x, config=cfg)  # noqa: E731
                row["rel_err"] = ref.check(fn)
                row["ms"] = bench_ms(lambda: fn(**a), False)
                if base:
                    row["peer_over_ours"] = base / row["ms"]
                # the launch the variant changes, alone
                pa = (a["q"], a["k"], a["v"], a["g"], a["beta"], a["cu_seqlens"], a["scale"], True)
                if name in ("default", "old default") or name.startswith(("p:", "c:")):
                    row["prepare_ms"] = bench_ms(lambda: gdn.prepare(*pa, cfg), False)
                if name in ("default", "old default") or name.startswith(("s:", "c:")):
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
            if "error" in row and not context_alive():
                # the context is gone: everything after this variant in a fresh process
                print(f"# CUDA context lost after gdn_extend {label} {name}", flush=True)
                if not opts.exact:
                    rest = names[vi + 1:]
                    if rest:
                        run_child(opts, rest, [label], rows, emit, "context lost")
                    later = [lb for lb, _ in cases_[ci + 1:]]
                    if later:
                        run_child(opts, names, later, rows, emit, "context lost")
                    if risky:
                        run_child(opts, risky, [lb for lb, _ in cases_], rows, emit, "risky variants, isolated")
                return
        del a, ref
        if DEV == "cuda":
            torch.cuda.empty_cache()
    if risky:
        run_child(opts, risky, [lb for lb, _ in cases_], rows, emit, "risky variants, isolated")


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
            variants = variants[:2]
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
        if DEV == "cuda":
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
    if r.get("rel_err", 0) > MAX_ERR:
        parts.append(" (ERR TOO HIGH)")
    if "prepare_ms" in r:
        parts.append(f" prepare {r['prepare_ms'] * 1e3:.1f} us")
    if "scan_ms" in r:
        parts.append(f" scan {r['scan_ms'] * 1e3:.1f} us")
    return "".join(parts)


PEERS = ("FLA chunk", "FLA fused_recurrent")


def summary(rows: list) -> None:
    for key in dict.fromkeys((r["op"], r["case"]) for r in rows):
        rs = [r for r in rows if (r["op"], r["case"]) == key]
        ok = sorted((r for r in rs if "ms" in r and r["variant"] not in PEERS and r.get("rel_err", 1) <= MAX_ERR),
                    key=lambda r: r["ms"])
        print(f"best {key[0]} {key[1]}: " + "  ".join(f"{r['variant']}={r['ms'] * 1e3:.1f}us" for r in ok[:3]))
        peer = next((r["ms"] for r in rs if r["variant"] in PEERS and "ms" in r), None)
        if key[0] == "gdn_extend":
            # the best prepare and the best scan of different variants, summed (not measured together)
            preps = [r for r in ok if "prepare_ms" in r]
            scans = [r for r in ok if "scan_ms" in r]
            if preps and scans:
                bp = min(preps, key=lambda r: r["prepare_ms"])
                bs = min(scans, key=lambda r: r["scan_ms"])
                est = bp["prepare_ms"] + bs["scan_ms"]
                print(f"  best prepare {bp['variant']} {bp['prepare_ms'] * 1e3:.1f}us + best scan {bs['variant']} "
                      f"{bs['scan_ms'] * 1e3:.1f}us = ~{est * 1e3:.1f}us (launches summed)")
            if peer and ok:
                need = peer / 1.5
                print(f"  bar >=1.5x FLA ({peer * 1e3:.1f}us): needs <= {need * 1e3:.1f}us; best {ok[0]['ms'] * 1e3:.1f}us "
                      f"= {peer / ok[0]['ms']:.2f}x -> {'MET' if ok[0]['ms'] <= need else 'missed'}")
        if key == ("gdn_decode", "B=1") and ok:
            print(f"  bar <=3.0us: best {ok[0]['ms'] * 1e3:.2f}us -> {'MET' if ok[0]['ms'] * 1e3 <= 3.0 else 'missed'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--quick", action="store_true", help="fewer variants")
    ap.add_argument("--full", action="store_true", help="every extend variant (over the 150 s budget; risky ones isolated)")
    ap.add_argument("--risky", action="store_true", help="also the RISKY extend variants, each run in a child process")
    ap.add_argument("--variants", default="", help="comma-separated substrings of extend variant names to run")
    ap.add_argument("--exact", default="", help="comma-separated extend variant names, exactly these (child runs)")
    ap.add_argument("--cases", default="", help="comma-separated extend case labels (default: all)")
    ap.add_argument("--ops", default="gdn_extend,gdn_decode")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-ceilings", action="store_true", help="nominal H100 ceilings instead of measuring them")
    ap.add_argument("--budget", type=float, default=140.0, help="seconds after which remaining variants are skipped")
    opts = ap.parse_args()
    opts.variants = [v for v in opts.variants.split(",") if v]
    opts.exact = [v for v in opts.exact.split(",") if v]
    opts.cases = [v for v in opts.cases.split(",") if v]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": torch.cuda.get_device_name(0) if DEV == "cuda" else DEV,
            "torch": torch.__version__, "triton": triton.__version__}
    ceil = {"copy_TBps": 2.97, "matmul_TFLOPs": 745.0} if opts.no_ceilings else ceilings()
    meta.update(ceil)
    print(json.dumps(meta), flush=True)
    rows: list = []

    def emit(r: dict, quiet: bool = False) -> None:
        rows.append(r)
        if not quiet:
            print(fmt(r, ceil), flush=True)
        (out / "sweep_gdn.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))

    ops = opts.ops.split(",")
    if "gdn_extend" in ops:
        run_extend(opts, ceil, rows, emit)
    if "gdn_decode" in ops and context_alive():
        run_decode(opts, ceil, rows, emit)
    print(f"\n{meta['device']}  copy {ceil['copy_TBps']:.2f} TB/s  bf16 matmul {ceil['matmul_TFLOPs']:.0f} TFLOP/s"
          f"  ({time.time() - T_START:.0f} s)")
    if not opts.exact:
        print("\n".join(fmt(r, ceil) for r in rows if r["op"] == "gdn_extend"))  # the table, child rows included
        summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
