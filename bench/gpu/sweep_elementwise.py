"""Sweep of the qk_norm_rope kernel variants on one GPU, and kv_cache_write beside a copy of its bytes.

    PYTHONPATH=. python bench/gpu/sweep_elementwise.py --out DIR [--quick] [--variants token,rows8w4,...]
                                                      [--only qk,kv]

For each case and variant: fresh random bf16 inputs (tests/gpu/cases.py), a check against the
reference backend in fp32 (cases.check: poisoned outputs, relative L2 error), then
triton.testing.do_bench median (L2 flushed between calls, un-graphed, as bench/gpu_ops.py times
these ops). Rates are bytes read + written over the 2 GiB device-copy ceiling measured in the same
run. Variants: elementwise.QK_VARIANTS (the first, rows8w4, is the registered default; "token"
the previous one). kv_cache_write: the registered kernel only (the 02:09 UTC sweep timed it at 1-16
tokens a program and 1-8 warps, and with k and v in separate programs: 15.4-16.3 µs against 15.5,
above a copy of the same bytes, 16.6). Each case also times a plain device copy of the same bytes
("copy(same B)"): the copy rate at this size under do_bench's L2 flush. A variant that fails to
compile or check prints the error and the sweep goes on. About 40-60 s on an H100 with compiles.
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
from triton.testing import do_bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "gpu"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import cases  # noqa: E402
from gpu_ops import ceilings  # noqa: E402

from tokenyard.backends.nvidia import attention, elementwise  # noqa: E402

BF16 = torch.bfloat16
DEV = "cuda"

QK_CASES = [  # (label, shape, in the quick run)
    ("T=4096 16/2x256 rot64", dict(T=4096, Hq=16, Hk=2, D=256, rot=64, style="neox", offset=1.0), True),
    ("T=16384 32/8x128 rot128", dict(T=16384, Hq=32, Hk=8, D=128, rot=128, style="neox"), True),
    ("T=4096 32/8x128 rot128", dict(T=4096, Hq=32, Hk=8, D=128, rot=128, style="neox"), False),
    ("T=16384 16/2x256 rot64", dict(T=16384, Hq=16, Hk=2, D=256, rot=64, style="neox", offset=1.0), False),
]
KV_CASE = ("T=8192 2x256 page64", dict(T=8192, Hk=2, D=256, page=64, kv_lens=[8192]))
KV_VARIANTS = ["default"]


def qk_bytes(a: dict) -> float:
    return 2.0 * sum(a[n].numel() * a[n].element_size() for n in ("q", "k"))


def kv_bytes(a: dict) -> float:
    return 2.0 * sum(a[n].numel() * a[n].element_size() for n in ("k", "v"))


def measure(op: str, label: str, variant: str, shape: dict, fn, amount, ceiling: float, rows: list,
            check: bool = True) -> None:
    torch.manual_seed(0)
    row = {"op": op, "case": label, "variant": variant, "rel_err": float("nan")}
    try:
        if check:
            a = cases.make(op, DEV, BF16, **shape)
            row["rel_err"] = cases.check(op, fn, a)
        a = cases.make(op, DEV, BF16, **shape) if check else {}  # fresh inputs for the timing
        ms = do_bench(lambda: fn(**a), warmup=25, rep=150, return_mode="median")
        rate = amount(a) / (ms * 1e-3) / 1e12
        row.update(us=ms * 1e3, TBps=rate, pct_copy=100 * rate / ceiling, MB=amount(a) / 1e6)
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        traceback.print_exc(limit=2)
    rows.append(row)
    if "us" in row:
        print(f"{op:14s} {label:26s} {variant:12s} {row['us']:8.1f} us {row['TBps']:5.2f} TB/s "
              f"{row['pct_copy']:5.1f}% copy  err {row['rel_err']:.1e}", flush=True)
    else:
        print(f"{op:14s} {label:26s} {variant:12s} ERROR {row['error']}", flush=True)
    torch.cuda.empty_cache()


def same_size_copy(op: str, label: str, shape: dict, amount, ceiling: float, rows: list) -> None:
    """A device copy moving the case's bytes (half read, half written), timed the same way: what the
    copy ceiling is at this size under do_bench's L2 flush (the flush leaves L2 dirty)."""
    torch.manual_seed(0)
    n = int(amount(cases.make(op, DEV, BF16, **shape)) // 2)
    src = torch.empty(n, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    measure(op, label, "copy(same B)", {}, lambda: dst.copy_(src), lambda _: 2.0 * n, ceiling, rows, check=False)
    del src, dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--quick", action="store_true", help="only the two bar cases of qk_norm_rope, and kv")
    ap.add_argument("--variants", default="", help="comma-separated qk_norm_rope variants (default: all)")
    ap.add_argument("--only", default="qk,kv", help="qk, kv or both")
    opts = ap.parse_args()
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    props = torch.cuda.get_device_properties(0)
    ceiling = ceilings()["copy_TBps"]
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": props.name,
            "torch": torch.__version__, "triton": triton.__version__, "copy_TBps": ceiling}
    print(json.dumps(meta), flush=True)
    rows: list = []
    only = opts.only.split(",")
    if "qk" in only:
        variants = opts.variants.split(",") if opts.variants else list(elementwise.QK_VARIANTS)
        for label, shape, quick in QK_CASES:
            if opts.quick and not quick:
                continue
            for v in variants:
                fn = (lambda v: lambda **a: elementwise.qk_norm_rope(**a, variant=v))(v)
                measure("qk_norm_rope", label, v, shape, fn, qk_bytes, ceiling, rows)
            same_size_copy("qk_norm_rope", label, shape, qk_bytes, ceiling, rows)
    if "kv" in only:
        label, shape = KV_CASE
        for v in KV_VARIANTS:
            measure("kv_cache_write", label, v, shape, attention.kv_cache_write, kv_bytes, ceiling, rows)
        same_size_copy("kv_cache_write", label, shape, kv_bytes, ceiling, rows)
    meta["seconds"] = time.time() - t0
    print(f"\n{'op':14s} {'case':26s} {'variant':12s} {'us':>8s} {'TB/s':>6s} {'%copy':>6s} {'vs default':>10s} rel_err")
    base = {}
    for r in rows:
        if r["variant"] in (elementwise.QK_VARIANTS[0], "default") and "us" in r:
            base[(r["op"], r["case"])] = r["us"]
    for r in rows:
        if "us" not in r:
            print(f"{r['op']:14s} {r['case']:26s} {r['variant']:12s} ERROR {r['error'][:80]}")
            continue
        b = base.get((r["op"], r["case"]))
        ratio = f"{b / r['us']:10.2f}x" if b else f"{'':>11s}"
        print(f"{r['op']:14s} {r['case']:26s} {r['variant']:12s} {r['us']:8.1f} {r['TBps']:6.2f} {r['pct_copy']:6.1f}"
              f"{ratio} {r['rel_err']:.1e}")
    (out_dir / "sweep_elementwise.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"total {meta['seconds']:.0f} s; copy ceiling {ceiling:.2f} TB/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
