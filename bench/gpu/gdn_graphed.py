"""gdn_extend with and without the host's launch cost: each case timed eagerly (triton do_bench, as
bench/gpu_ops.py does) and replayed in a CUDA graph (do_bench_cudagraph), tokenyard's default, its
Gluon scan forced, and FLA's chunk_gated_delta_rule in the same run. At T=8K both sides are
host-bound when eager (two launches with ~40 arguments and TMA descriptors here, five for FLA), so
the graphed column is the GPU-time comparison. First, the host time of one call itself: 300 calls
back to back at T=256 (GPU work of a few µs), the Triton scan against the Gluon scan.

    PYTHONPATH=.:<FLA on the path> python bench/gpu/gdn_graphed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from triton.testing import do_bench, do_bench_cudagraph

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "gpu"), str(ROOT / "bench"), str(ROOT)]

import cases  # noqa: E402
from gpu_ops import QWEN_GDN, fla_chunk  # noqa: E402

from tokenyard.backends.nvidia import gdn  # noqa: E402


def host_us(f, n: int = 300) -> float:
    for _ in range(20):
        f()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        f()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    torch.manual_seed(0)
    a = cases.make("gdn_extend", "cuda", torch.bfloat16, lens=[256], **QWEN_GDN)
    gluon = gdn.extend_config(1, QWEN_GDN["Hv"], QWEN_GDN["V"], QWEN_GDN["K"])
    print(f"# {torch.cuda.get_device_name()}: host time a gdn_extend call at T=256: Triton scan (the default "
          f"there) {host_us(lambda: gdn.gdn_extend(**a)):.0f} µs, Gluon scan "
          f"{host_us(lambda: gdn.gdn_extend(**a, config=gluon)):.0f} µs", flush=True)
    print(f"# {torch.cuda.get_device_name()}: eager / graphed, median µs")
    for lens in ([8192], [32768], [4096] * 8):
        torch.manual_seed(0)
        a = cases.make("gdn_extend", "cuda", torch.bfloat16, lens=lens, **QWEN_GDN)
        gluon = gdn.extend_config(len(lens), QWEN_GDN["Hv"], QWEN_GDN["V"], QWEN_GDN["K"])  # no token threshold
        row = [f"T={sum(lens)} B={len(lens)}"]
        for name, f in (("tokenyard", lambda: gdn.gdn_extend(**a)),
                        ("tokenyard, Gluon scan", lambda: gdn.gdn_extend(**a, config=gluon)),
                        ("fla_chunk", fla_chunk(a))):
            try:
                eager = do_bench(f, warmup=50, rep=300, return_mode="median")
                f()
                torch.cuda.synchronize()
                graphed = do_bench_cudagraph(f, rep=300, return_mode="median")
                row.append(f"{name} {eager * 1e3:.1f} / {graphed * 1e3:.1f}")
            except Exception as exc:  # a peer missing or not capturable
                row.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:80]}")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
