"""Per-op kernel benchmarks: every eligible kernel on one op's example inputs, checked against the
reference, timed, and put next to the device's measured ceilings (copy bandwidth, matmul rate)
measured in the same run.

Used by ``tokenyard kernels bench`` and by the scripts in ``bench/``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from tokenyard.registry.core import REFERENCE_BACKEND, Registry, args_device
from tokenyard.registry.tuning import clone_args, default_check, outputs_of


@dataclass
class Ceilings:
    """What this device can do, measured now: bytes read + written per second, and matmul FLOP/s."""

    device: str
    copy_bytes_per_s: float
    matmul_flops_per_s: float
    matmul_dtype: str


@dataclass
class KernelTiming:
    kernel: str
    time_ms: Optional[float]
    gbytes_per_s: Optional[float] = None
    tflops: Optional[float] = None
    pct_of_ceiling: Optional[float] = None
    bound: str = ""
    check: str = "ok"
    note: str = ""


@dataclass
class OpBench:
    op: str
    shape: dict
    dtype: str
    device: str
    flops: float
    bytes: float
    ceilings: Ceilings
    kernels: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, min_repeats: int = 5, budget_s: float = 0.5) -> float:
    """Median time of fn() after a warm-up; CUDA events on GPU, perf_counter on CPU."""
    fn()
    _sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < min_repeats or (time.perf_counter() - start_all < budget_s and len(times) < 200):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_ceilings(device: torch.device) -> Ceilings:
    """A large device copy (bytes read + written) and a large matmul, timed now."""
    n = (256 << 20) if device.type == "cuda" else (32 << 20)
    src = torch.empty(n // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src), device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    m = 8192 if device.type == "cuda" else 1024
    a = torch.randn(m, m, device=device, dtype=dtype)
    b = torch.randn(m, m, device=device, dtype=dtype)
    mm_ms = median_ms(lambda: a @ b, device)
    return Ceilings(str(device), 2 * n / (copy_ms * 1e-3), 2.0 * m ** 3 / (mm_ms * 1e-3), str(dtype).removeprefix("torch."))


def bench_op(registry: Registry, op: str, shape: dict, dtype: torch.dtype, device: torch.device,
             ceilings: Optional[Ceilings] = None) -> OpBench:
    registry.ensure_loaded()
    spec = registry.ops[op]
    if spec.example is None:
        raise ValueError(f"op {op!r} has no example inputs to benchmark")
    torch.manual_seed(0)
    args = spec.example(device, dtype, **shape)
    flops, moved = spec.cost(args) if spec.cost else (0.0, 0.0)
    ceilings = ceilings or measure_ceilings(device)
    result = OpBench(op, shape, str(dtype).removeprefix("torch."), str(device), flops, moved, ceilings)
    candidates = registry.candidates(op, args, args_device(args))
    ref = next((c for c in candidates if c.record.backend == REFERENCE_BACKEND and c.reason is None), None)
    ref_out = None
    if ref is not None:
        try:
            trial = clone_args(spec, args)
            ref_out = outputs_of(ref.record.fn(**trial), spec, trial)
        except Exception as exc:  # reported on the reference's own row below
            ref_out = None
            print(f"warning: the reference kernel raised {type(exc).__name__}: {exc}; no kernel is checked")
    for cand in candidates:
        if cand.reason is not None:
            result.kernels.append(KernelTiming(cand.record.key, None, check="not run", note=cand.reason))
            continue
        timing = KernelTiming(cand.record.key, None)
        try:
            trial = clone_args(spec, args)
            out = outputs_of(cand.record.fn(**trial), spec, trial)
            if ref_out is not None and cand is not ref:
                failure = (spec.check or (lambda o, r, a: default_check(spec, o, r, a)))(out, ref_out, args)
                timing.check = failure or "ok"
            trials = [clone_args(spec, args) for _ in range(2)] if spec.mutates else [args]
            counter = iter(range(1 << 30))
            timing.time_ms = median_ms(lambda: cand.record.fn(**trials[next(counter) % len(trials)]), device)
        except Exception as exc:
            timing.check = f"raised {type(exc).__name__}: {exc}"
            result.kernels.append(timing)
            continue
        seconds = timing.time_ms * 1e-3
        timing.gbytes_per_s = moved / seconds / 1e9 if moved else None
        timing.tflops = flops / seconds / 1e12 if flops else None
        t_mem = moved / ceilings.copy_bytes_per_s
        t_math = flops / ceilings.matmul_flops_per_s
        timing.bound = "memory" if t_mem >= t_math else "compute"
        floor = max(t_mem, t_math)
        timing.pct_of_ceiling = 100.0 * floor / seconds if floor else None
        result.kernels.append(timing)
    return result


def render(result: OpBench) -> str:
    """A plain-text table (rich renders it in the CLI; this is for logs and tests)."""
    c = result.ceilings
    lines = [
        f"{result.op}  shape={result.shape}  dtype={result.dtype}  device={result.device}",
        f"  ceilings: copy {c.copy_bytes_per_s / 1e9:.1f} GB/s, matmul {c.matmul_flops_per_s / 1e12:.2f} TFLOP/s ({c.matmul_dtype})",
        f"  {'kernel':28} {'time ms':>10} {'GB/s':>9} {'TFLOP/s':>9} {'% ceil':>7} {'bound':>8}  check",
    ]
    for k in result.kernels:
        fmt = lambda x, f: (f.format(x) if x is not None else "-")  # noqa: E731
        lines.append(f"  {k.kernel:28} {fmt(k.time_ms, '{:.4f}'):>10} {fmt(k.gbytes_per_s, '{:.1f}'):>9} "
                     f"{fmt(k.tflops, '{:.3f}'):>9} {fmt(k.pct_of_ceiling, '{:.1f}'):>7} {k.bound:>8}  {k.check}"
                     + (f" ({k.note})" if k.note else ""))
    return "\n".join(lines)
