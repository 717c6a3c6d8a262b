"""attention_extend launch/kernel variants against FlashAttention-3 on one H100 run (issue 5 bars:
>= 0.8x FA3 at T=8K/32K for 32/8x128 and 16/2x256; the agentic turn, 800 new over 32K cached at
16/2x256, <= 1.1x FA3's time). Paged bf16 KV cache, page 64, causal.

    python bench/gpu/sweep_attention.py --out DIR [--quick] [--variants name,name] [--cases substr,substr]

Each variant is first checked on CUDA against the reference backend in fp32 (a two-sequence case with
a cached prefix, unsplit and split, and the timed case itself where T <= 8K or the agentic turn);
the reference output is computed once per case. A variant that fails to compile or check prints the
error and the sweep goes on. Timing: triton.testing.do_bench, median. JSON rows go to DIR.
TMA, the two-box TMA tiles and the fused merge's counter ordering can only be checked here (the
CPU interpreter runs programs one at a time), so every variant's check runs before its timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import cases  # noqa: E402
from gpu_ops import attn_flops, ceilings, fa3_extend  # noqa: E402

from tokenyard.backends.nvidia import attention  # noqa: E402

BF16 = torch.bfloat16
DEV = "cuda"


def bench(f, rep: int) -> float:
    if DEV == "cuda":
        return do_bench(f, warmup=25, rep=rep, return_mode="median")
    t = time.time()
    f()
    return (time.time() - t) * 1e3
QWEN = dict(Hq=16, Hk=2, D=256)
LLAMA = dict(Hq=32, Hk=8, D=128)
T128 = (128, 128, 8, 2)  # the d=128 tile before the 02:30 UTC sweep (2 stages)
T256 = (128, 64, 8, 3)  # current d=256 default tile

# name -> attention_extend kwargs. "default" = the launch the op picks today (on sm_90 the
# warp-specialised Gluon kernel, attention_ws.py); "triton" = the Triton kernel's default launch (the
# op's default before session 4); "gather" and "fp32 merge" the Triton defaults before the 02:30 UTC
# sweep (kept for the A/B); impl="ws": the Gluon kernel (attention_ws.attention_extend_ws) with the
# remaining kwargs (sm_90 only: skipped by --smoke, as Gluon has no CPU interpreter).
V128 = {
    "default": dict(),
    "gather": dict(config=T128, kv="gather", heads_inner=False),
    "lean": dict(config=T128, kv="lean", heads_inner=False),
    "tma2": dict(config=T128, kv="tma2", heads_inner=False),
    "tma2+inner": dict(config=T128, kv="tma2", heads_inner=True),
    "tma bn64 s3": dict(config=(128, 64, 8, 3), kv="tma", heads_inner=False),
    "triton": dict(impl="triton"),
    "ws s3": dict(impl="ws", stages=3),
    "ws head order": dict(impl="ws", heads_inner=False),
}
V256 = {
    "default": dict(),
    "lean(gather)": dict(config=T256, kv="lean", heads_inner=True),
    "triton": dict(impl="triton"),
    "ws head order": dict(impl="ws", heads_inner=False),
}
AGENTIC = {
    "default": dict(),
    "fp32 merge": dict(impl="triton", partials="fp32", fuse_merge=False),
    "half partials": dict(impl="triton", partials="half", fuse_merge=False),
    "fused merge": dict(impl="triton", fuse_merge=True, partials="fp32"),
    "fused+half ns=4": dict(impl="triton", fuse_merge=True, partials="half", splits=4),
    "fused+half ns=6": dict(impl="triton", fuse_merge=True, partials="half", splits=6),
    "triton": dict(impl="triton"),
    "ws ns=3": dict(impl="ws", splits=3),
}
AGENTIC128 = {
    "default": dict(),
    "gather fp32 merge": dict(config=T128, kv="gather", fuse_merge=False, partials="fp32"),
    "triton": dict(impl="triton"),
}
QUICK = {"default", "triton"}

SMALL = dict(q_lens=[777, 100], kv_lens=[4096 + 777, 3000])  # the check case: two sequences, cached prefix
CASES = [  # name, shape, variants, check the timed case against the reference
    ("T=8192 32/8x128", dict(q_lens=[8192], kv_lens=[8192], **LLAMA), V128, True),
    ("T=32768 32/8x128", dict(q_lens=[32768], kv_lens=[32768], **LLAMA), V128, False),
    ("T=8192 16/2x256", dict(q_lens=[8192], kv_lens=[8192], **QWEN), V256, True),
    ("T=32768 16/2x256", dict(q_lens=[32768], kv_lens=[32768], **QWEN), V256, False),
    ("800 over 32K 16/2x256", dict(q_lens=[800], kv_lens=[32768 + 800], **QWEN), AGENTIC, True),
    ("800 over 32K 32/8x128", dict(q_lens=[800], kv_lens=[32768 + 800], **LLAMA), AGENTIC128, True),
]


def reference(args: dict) -> torch.Tensor:
    ref_args = cases.fp32_copy(args)
    return cases.REFERENCE["attention_extend"](**ref_args)


def rel_err(fn, args: dict, ref: torch.Tensor) -> float:
    out = fn(**cases._clone(args))
    if DEV == "cuda":
        torch.cuda.synchronize()
    return cases.rel_error(out, ref)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--quick", action="store_true", help="only the variants most likely to matter")
    ap.add_argument("--variants", default="", help="comma list of variant names (default: all)")
    ap.add_argument("--cases", default="", help="comma list of substrings of case names")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU dry run of the script's logic at tiny shapes (needs TRITON_INTERPRET=1; fp32)")
    opt = ap.parse_args()
    global DEV, DT, CASES, SMALL
    DT = BF16
    if opt.smoke:
        DEV, DT = "cpu", torch.float32
        SMALL = dict(q_lens=[77, 10], kv_lens=[200 + 77, 130])
        small_shapes = {"T=8192": dict(q_lens=[130], kv_lens=[130]), "T=32768": dict(q_lens=[200], kv_lens=[200]),
                        "800 over": dict(q_lens=[40], kv_lens=[40 + 300])}
        CASES = [(n, dict(sh, Hq=8 // (sh["D"] // 128), Hk=1, **next(v for k, v in small_shapes.items()
                                                                     if n.startswith(k))), vs, chk)
                 for n, sh, vs, chk in CASES]
    opt.out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    want = set(filter(None, opt.variants.split(",")))
    sel = [c.strip() for c in opt.cases.split(",") if c.strip()]
    tol = cases.RTOL[DT]
    mm = float("nan")
    if DEV == "cuda":
        mm = ceilings()["matmul_TFLOPs"]
        print(f"# {torch.cuda.get_device_name()} matmul ceiling {mm:.0f} TFLOP/s", flush=True)

    # one small check per head shape (two sequences, cached prefix, odd lengths), reference computed once
    small = {}
    for heads in (QWEN, LLAMA):
        torch.manual_seed(1)
        s = cases.make("attention_extend", DEV, DT, page=64, **SMALL,
                       **(heads if DEV == "cuda" else dict(heads, Hq=8 // (heads["D"] // 128), Hk=1)))
        small[heads["D"]] = (s, reference(s))

    rows = []
    for cname, shape, variants, check_full in CASES:
        if sel and not any(x in cname for x in sel):
            continue
        print(f"# {cname} (at {time.time() - t_start:.0f}s)", flush=True)
        torch.manual_seed(0)
        args = cases.make("attention_extend", DEV, DT, page=64, **shape)
        fl = attn_flops(args)
        ref = reference(args) if check_full else None
        runs = []
        try:
            runs.append(("fa3", fa3_extend(args), None))
        except Exception as exc:
            print(f"{cname}: fa3 unavailable: {type(exc).__name__}: {str(exc)[:160]}", flush=True)
        for vname, kw in variants.items():
            if (want and vname not in want) or (opt.quick and not want and vname not in QUICK):
                continue
            if kw.get("impl") == "ws":
                if DEV != "cuda":
                    print(f"{cname} | {vname} | skipped: the Gluon kernel needs sm_90", flush=True)
                    continue
                from tokenyard.backends.nvidia import attention_ws

                op = attention_ws.attention_extend_ws
                kw = {k: v for k, v in kw.items() if k != "impl"}
            else:
                op = attention.attention_extend
            fn = (lambda op, kw: lambda **x: op(**x, **kw))(op, kw)
            try:
                sargs, sref = small[shape["D"]]
                errs = [rel_err(fn, sargs, sref)]
                if "over" in cname and "splits" not in kw:  # agentic variants: the split path on the small case too
                    errs.append(rel_err(lambda **x: op(**x, **dict(kw, splits=3)), sargs, sref))
                if ref is not None:
                    errs.append(rel_err(fn, args, ref))
                err = max(errs)
                if not err <= tol:
                    raise AssertionError(f"relative L2 error {err:.3g} > {tol} ({errs})")
            except Exception as exc:
                print(f"{cname} | {vname} | FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                rows.append(dict(case=cname, variant=vname, error=f"{type(exc).__name__}: {str(exc)[:500]}"))
                continue
            runs.append((vname, (lambda fn: lambda: fn(**args))(fn), err))
        fa3_ms = None
        for vname, f, err in runs:
            try:
                if vname == "fa3" and ref is not None:
                    out = f()
                    out = out[0] if isinstance(out, tuple) else out
                    err = cases.rel_error(out.reshape(ref.shape), ref)
                ms = bench(f, 250 if sum(shape["q_lens"]) >= 32768 else 150)
            except Exception as exc:
                print(f"{cname} | {vname} | FAILED at run: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                traceback.print_exc(limit=2)
                continue
            if vname == "fa3":
                fa3_ms = ms
            tf = fl / (ms * 1e-3) / 1e12
            r = dict(case=cname, variant=vname, us=ms * 1e3, tflops=tf, pct_ceiling=100 * tf / mm,
                     vs_fa3=(fa3_ms / ms) if fa3_ms else None, rel_err=err)
            rows.append(r)
            vs = f"{r['vs_fa3']:.3f}" if r["vs_fa3"] else ""
            e = f"{err:.1e}" if err is not None else ""
            print(f"{cname:24s} | {vname:26s} | {r['us']:9.1f} us | {tf:5.0f} TFLOP/s | {r['pct_ceiling']:3.0f}% | "
                  f"x FA3 speed {vs:>6s} | err {e}", flush=True)
        del args, ref
        if DEV == "cuda":
            torch.cuda.empty_cache()
    total = time.time() - t_start
    print(f"# total {total:.0f}s", flush=True)
    (opt.out / "sweep_attention.json").write_text(json.dumps(dict(matmul_TFLOPs=mm, seconds=total, rows=rows),
                                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
