"""Random inputs for every op the NVIDIA backend implements, and the check of a kernel against the
reference backend: the kernel runs on the inputs as given, the reference on an fp32 copy, and
every output and every mutated buffer (state pools, caches, in-place q/k) is compared by relative
L2 error. Outputs are poisoned: the allocator's next blocks are filled with NaN before the kernel
runs, so an element the kernel never wrote shows up as NaN.

Shared by tests/gpu (on CUDA), tests/test_nvidia_interpreter.py (TRITON_INTERPRET=1 on CPU) and
bench/gpu_ops.py, so the three check the same thing.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from tokenyard.backends.reference import KERNELS as REFERENCE

# Relative L2 error allowed against the fp32 reference, by the kernel's activation dtype.
RTOL = {torch.float32: 2e-3, torch.float16: 1e-2, torch.bfloat16: 2e-2}

# Arguments an op writes in place: compared after the call like outputs.
MUTATED = {
    "qk_norm_rope": ("q", "k"),
    "kv_cache_write": ("k_cache", "v_cache"),
    "causal_conv1d_extend": ("conv_state",),
    "causal_conv1d_decode": ("conv_state",),
    "gdn_extend": ("state",),
    "gdn_decode": ("state",),
}


def _rand(*shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, device=device) * scale).to(dtype)


def _cu(lens, device):
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device=device)


def _slots(n, pool, device, resume=True, skip_write=False):
    """Distinct read and write slots; some reads −1 (fresh sequence) unless every one resumes,
    the last write −1 when skip_write."""
    perm = torch.randperm(pool)
    reads = perm[:n].clone()
    if not resume:
        reads[::2] = -1
    writes = perm[n : 2 * n].clone() if pool >= 2 * n else perm[:n].clone()
    if skip_write and n > 1:
        writes[-1] = -1
    return reads.to(torch.int32).to(device), writes.to(torch.int32).to(device)


def make(op: str, device, dtype, **s) -> dict:
    """Arguments for one call of `op`, drawn fresh."""
    d = dict(device=device, dtype=dtype)
    if op == "rms_norm":
        x = _rand(s["T"], s["D"], **d)
        return dict(x=x, w=_rand(s["D"], **d, scale=0.2) + 1, eps=1e-6,
                    residual=_rand(s["T"], s["D"], **d) if s.get("residual") else None,
                    weight_offset=s.get("offset", 0.0))
    if op == "gated_rms_norm":
        return dict(x=_rand(s["T"], s["H"], s["D"], **d), z=_rand(s["T"], s["H"], s["D"], **d),
                    w=_rand(s["D"], **d, scale=0.2) + 1, eps=1e-6)
    if op == "qk_norm_rope":
        T, D, rot = s["T"], s["D"], s["rot"]
        positions = torch.randint(0, 4096, (T,), device=device)
        inv = 1.0 / (10000 ** (torch.arange(0, rot, 2, device=device, dtype=torch.float32) / rot))
        ang = torch.arange(4096, device=device, dtype=torch.float32)[:, None] * inv[None, :]
        return dict(q=_rand(T, s["Hq"], D, **d), k=_rand(T, s["Hk"], D, **d), q_w=_rand(D, **d, scale=0.2) + 1,
                    k_w=_rand(D, **d, scale=0.2) + 1, eps=1e-6, positions=positions,
                    cos_sin=torch.cat((ang.cos(), ang.sin()), -1), rotary_dim=rot, style=s["style"],
                    weight_offset=s.get("offset", 0.0))
    if op == "silu_and_mul":
        return dict(x=_rand(s["T"], 2 * s["I"], **d))
    if op == "gdn_gating":
        T, H = s["T"], s["Hv"]
        return dict(A_log=torch.rand(H, device=device) * 2 - 1, a=_rand(T, H, **d, scale=3),
                    dt_bias=torch.rand(H, device=device), b=_rand(T, H, **d, scale=3))
    if op in ("causal_conv1d_extend", "causal_conv1d_decode"):
        C, W = s["C"], s.get("W", 4)
        n = len(s["lens"]) if op == "causal_conv1d_extend" else s["B"]
        pool = s.get("pool", 2 * n + 3)
        reads, writes = _slots(n, pool, device, s.get("resume", True), s.get("skip_write", False))
        if s.get("inplace"):
            writes = reads.clamp(min=0)
        args = dict(w=_rand(C, W, **d, scale=0.5), bias=_rand(C, **d) if s.get("bias", True) else None,
                    conv_state=_rand(pool, C, W - 1, **d), read_slots=reads, write_slots=writes, activation="silu")
        if op == "causal_conv1d_extend":
            args.update(x=_rand(sum(s["lens"]), C, **d), cu_seqlens=_cu(s["lens"], device))
        else:
            args.update(x=_rand(n, C, **d))
        return args
    if op in ("gdn_extend", "gdn_decode"):
        Hk, Hv, K, V = s["Hk"], s["Hv"], s["K"], s["V"]
        n = len(s["lens"]) if op == "gdn_extend" else s["B"]
        T = sum(s["lens"]) if op == "gdn_extend" else n
        pool = s.get("pool", 2 * n + 3)
        reads, writes = _slots(n, pool, device, s.get("resume", True), s.get("skip_write", False))
        if s.get("inplace"):
            writes = reads.clamp(min=0)
        lead = (T,) if op == "gdn_extend" else (n,)
        q, k = _rand(*lead, Hk, K, **d), _rand(*lead, Hk, K, **d)
        if not s.get("l2norm", True):  # unnormalised keys make the delta rule diverge: pass unit rows
            q, k = (F.normalize(x.float(), dim=-1).to(dtype) for x in (q, k))
        # gates in (−gate, 0): at gate 4 a chunk's γ reaches ~−128, past where e^{−γ} is finite in fp32
        args = dict(q=q, k=k, v=_rand(*lead, Hv, V, **d),
                    g=-torch.rand(*lead, Hv, device=device) * s.get("gate", 0.5) - 0.01,
                    beta=torch.rand(*lead, Hv, device=device) * 0.9 + 0.05,
                    state=torch.randn(pool, Hv, K, V, device=device) * 0.3,
                    read_slots=reads, write_slots=writes, scale=K ** -0.5, qk_l2norm=s.get("l2norm", True))
        if op == "gdn_extend":
            args["cu_seqlens"] = _cu(s["lens"], device)
        return args
    if op in ("kv_cache_write", "attention_extend", "attention_decode"):
        Hk, D, page = s["Hk"], s["D"], s["page"]
        DV = s.get("DV", D)
        kv_lens = s["kv_lens"]
        max_pages = max(1, max(math.ceil(n / page) for n in kv_lens))
        pages = len(kv_lens) * max_pages + 2
        perm = torch.randperm(pages)[: len(kv_lens) * max_pages].view(len(kv_lens), max_pages)
        page_table = perm.to(torch.int32).to(device)
        k_cache = _rand(pages, page, Hk, D, **d)
        v_cache = _rand(pages, page, Hk, DV, **d)
        seqlens_k = torch.tensor(kv_lens, dtype=torch.int32, device=device)
        if op == "kv_cache_write":
            T = s["T"]
            slots = torch.randperm(pages * page)[:T].to(device)
            slots[::7] = -1
            return dict(k=_rand(T, Hk, D, **d), v=_rand(T, Hk, DV, **d), k_cache=k_cache, v_cache=v_cache,
                        slot_mapping=slots.to(torch.int64))
        if op == "attention_extend":
            q_lens = s["q_lens"]
            return dict(q=_rand(sum(q_lens), s["Hq"], D, **d), k_cache=k_cache, v_cache=v_cache,
                        page_table=page_table, cu_seqlens_q=_cu(q_lens, device), seqlens_k=seqlens_k,
                        scale=D ** -0.5)
        return dict(q=_rand(len(kv_lens), s["Hq"], D, **d), k_cache=k_cache, v_cache=v_cache,
                    page_table=page_table, seqlens_k=seqlens_k, scale=D ** -0.5)
    raise ValueError(f"no cases for op {op!r}")


def fp32_copy(args: dict) -> dict:
    """The arguments cloned, floating tensors upcast to fp32: what the reference runs on."""
    return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in _clone(args).items()}


def _clone(args: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in args.items()}


def outputs(op: str, result, args: dict) -> list:
    outs = list(result) if isinstance(result, tuple) else ([] if result is None else [result])
    return outs + [args[name] for name in MUTATED.get(op, ())]


def poison(device, nbytes: int = 256 << 20) -> None:
    """Fill the allocator's free blocks with NaN so an output element never written reads NaN."""
    if torch.device(device).type == "cuda":
        torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(float("nan"))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.float(), ref.float()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp(min=1e-12))


def check(op: str, fn, args: dict, rtol: float | None = None) -> float:
    """Run fn and the reference on the same inputs; the worst relative error over all outputs.
    Raises AssertionError above the tolerance for the activation dtype."""
    halves = [v.dtype for v in args.values() if isinstance(v, torch.Tensor) and v.dtype in (torch.bfloat16, torch.float16)]
    dtype = halves[0] if halves else torch.float32
    ref_args = fp32_copy(args)
    ref = outputs(op, REFERENCE[op](**ref_args), ref_args)
    test_args = _clone(args)
    device = next(v.device for v in args.values() if isinstance(v, torch.Tensor))
    poison(device)
    got = outputs(op, fn(**test_args), test_args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    assert len(got) == len(ref), f"{op}: {len(got)} outputs, reference has {len(ref)}"
    worst = 0.0
    for i, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape, f"{op} output {i}: shape {tuple(a.shape)}, reference {tuple(b.shape)}"
        worst = max(worst, rel_error(a, b))
    limit = rtol if rtol is not None else RTOL[dtype]
    assert worst <= limit, f"{op}: relative L2 error {worst:.3g} > {limit:g}"
    return worst
