"""The ``fastest`` policy: time every eligible kernel on the real inputs, check each against the
reference kernel, note which wait for the GPU from the host, and persist the decision.

Owns the trial protocol (clone what a kernel mutates, so trials leave no trace), the default
output comparison, and the JSON decision file under the user cache dir, keyed by device, driver
and library versions so that a new driver or release re-tunes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Any, Optional

import torch

from tokenyard.registry.records import Candidate, OpSpec

TRIAL_REPEATS = 5
# The most bytes of mutated arguments a trial clones. An engine's ops write into its whole KV page
# pool or GDN state pool (GBs, in a GPU the pools have filled): such a call site is not timed, the
# highest-priority kernel runs it.
TRIAL_CLONE_LIMIT = 256 << 20


def trial_clone_bytes(spec: OpSpec, args: dict) -> int:
    return sum(v.numel() * v.element_size() for k, v in args.items() if k in spec.mutates and isinstance(v, torch.Tensor))


def clone_args(spec: OpSpec, args: dict) -> dict:
    """Arguments for one trial: mutated tensors cloned, everything else shared."""
    return {k: (v.clone() if k in spec.mutates and isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def outputs_of(result: Any, spec: OpSpec, args: dict) -> list:
    """What a call produced: its return value(s) and the tensors it mutated, as a flat list."""
    if result is None:
        produced = []
    elif isinstance(result, (tuple, list)):
        produced = list(result)
    else:
        produced = [result]
    return produced + [args[name] for name in spec.mutates if isinstance(args.get(name), torch.Tensor)]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.detach().double()
    ref = ref.detach().double()
    denom = ref.norm().item()
    return (out - ref).norm().item() / max(denom, 1e-30)


def tolerance(spec: OpSpec, out_dtype: torch.dtype, args: dict) -> float:
    """The op's tolerance for the least precise of the output's dtype and the floating inputs'
    dtypes: an fp32 state computed from bf16 activations carries bf16 rounding (gdn_extend's
    state from bf16 q/k/v is 2.5e-3 from the fp32 reference for FLA and tokenyard alike)."""
    default = spec.rtol.get(torch.float32, 1e-4)
    dtypes = {out_dtype} | {v.dtype for v in args.values() if isinstance(v, torch.Tensor) and v.is_floating_point()}
    return max(spec.rtol.get(d, default) for d in dtypes)


def default_check(spec: OpSpec, outputs: list, reference: list, args: dict) -> Optional[str]:
    """Agreement of every output with the reference's: exact for integers, relative L2 for floats."""
    if len(outputs) != len(reference):
        return f"returned {len(outputs)} outputs, the reference {len(reference)}"
    for i, (out, ref) in enumerate(zip(outputs, reference)):
        if not isinstance(ref, torch.Tensor):
            continue
        if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return f"output {i} has shape {got}, the reference {tuple(ref.shape)}"
        if not ref.is_floating_point():
            if not torch.equal(out.to(ref.dtype), ref):
                return f"output {i} differs from the reference in {(out.to(ref.dtype) != ref).sum().item()} elements"
            continue
        finite = torch.isfinite(ref)   # an engine's pools hold whatever unused memory held
        if (finite & ~torch.isfinite(out)).any():
            return f"output {i} has non-finite values where the reference has none"
        tol = tolerance(spec, ref.dtype, args)
        err = relative_error(out[finite], ref[finite]) if not finite.all() else relative_error(out, ref)
        if not err <= tol:   # NaN fails too
            return f"output {i} relative L2 error {err:.3g} exceeds tolerance {tol:.3g} ({ref.dtype})"
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, make_args, device: torch.device, repeats: int = TRIAL_REPEATS) -> float:
    """Median milliseconds of ``fn(**make_args())`` after one warm-up (arguments made outside the timing)."""
    fn(**make_args())
    _sync(device)
    times = []
    for _ in range(repeats):
        args = make_args()
        _sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(**args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(**args)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def syncs_with_host(fn, args: dict, device: torch.device) -> bool:
    """Whether fn(**args) makes the host wait for the GPU (an .item(), a nonzero(), a copy to the
    CPU): such a kernel stalls the pipeline and rules out CUDA graphs, costs that timing one call
    in isolation does not see. Runs fn once."""
    if device.type != "cuda":
        return False
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn(**args)
    except RuntimeError as exc:
        if "synchroniz" in str(exc).lower():
            return True
        raise
    finally:
        torch.cuda.set_sync_debug_mode(before)
    return False


def tune(registry, spec: OpSpec, candidates: list[Candidate], args: dict) -> None:
    """Fill in time_ms, check_failure and syncs of each eligible candidate, in place."""
    from tokenyard.registry.core import REFERENCE_BACKEND, args_device

    device = args_device(args)
    eligible = [c for c in candidates if c.reason is None]
    reference = [c for c in candidates if c.record.backend == REFERENCE_BACKEND and c.reason is None]
    ref_outputs = None
    if reference:
        trial = clone_args(spec, args)
        ref_outputs = outputs_of(reference[0].record.fn(**trial), spec, trial)
    for cand in eligible:
        try:
            trial = clone_args(spec, args)
            outputs = outputs_of(cand.record.fn(**trial), spec, trial)
            if ref_outputs is not None and cand.record.backend != REFERENCE_BACKEND:
                check = spec.check or (lambda o, r, a: default_check(spec, o, r, a))
                cand.check_failure = check(outputs, ref_outputs, args)
            if cand.check_failure is None:
                cand.syncs = syncs_with_host(cand.record.fn, clone_args(spec, args), device)
                cand.time_ms = time_call(cand.record.fn, lambda: clone_args(spec, args), device)
        except Exception as exc:
            cand.check_failure = f"raised {type(exc).__name__}: {exc}"


# -- persistence -----------------------------------------------------------------------------

def environment_key() -> str:
    """Device, driver and library versions: a decision is only reused where all of these match."""
    import tokenyard

    parts = [f"torch-{torch.__version__}", f"tokenyard-{tokenyard.__version__}"]
    try:
        import triton

        parts.append(f"triton-{triton.__version__}")
    except Exception:
        parts.append("triton-none")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        driver = getattr(torch.cuda, "driver_version", lambda: None)() if hasattr(torch.cuda, "driver_version") else None
        parts += [props.name.replace(" ", "_"), f"cuda-{torch.version.cuda}", f"driver-{driver or _nvidia_driver()}"]
    else:
        parts.append(f"cpu-{platform.machine()}-{platform.processor() or 'unknown'}")
    return "_".join(p.replace("/", "-") for p in parts)


def _nvidia_driver() -> str:
    try:
        with open("/proc/driver/nvidia/version") as f:
            for token in f.readline().split():
                if token.count(".") >= 1 and token.replace(".", "").isdigit():
                    return token
    except OSError:
        pass
    return "unknown"


def decisions_path(registry) -> str:
    if registry._cache_path:
        return registry._cache_path
    root = os.environ.get("TOKENYARD_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("tokenyard")
    return os.path.join(root, "kernels", f"{environment_key()}.json")


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load_decision(registry, key: str) -> Optional[str]:
    entry = _read(decisions_path(registry)).get(key)
    return entry.get("chosen") if isinstance(entry, dict) else None


def store_decision(registry, key: str, best: Candidate, candidates: list[Candidate]) -> None:
    path = decisions_path(registry)
    data = _read(path)
    data[key] = {
        "chosen": best.record.key,
        "times_ms": {c.record.key: c.time_ms for c in candidates if c.time_ms is not None},
        "rejected": {c.record.key: c.check_failure for c in candidates if c.check_failure},
        "syncs": sorted(c.record.key for c in candidates if c.syncs),
    }
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache dir costs re-tuning, nothing else
