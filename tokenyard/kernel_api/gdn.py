"""Gated-DeltaNet ops (Qwen3-Next / Qwen3.5 linear-attention layers): gating, the depthwise causal
conv1d with its rolling state, and the gated delta rule, each over a state-slot pool.

Slots: ``read_slots[b]`` is where sequence b's initial state is read (-1: zeros), ``write_slots[b]``
where its final state goes (-1: nowhere). Separate read and write slots make copy-on-write free: a
cached checkpoint is read and never mutated.

Gated delta rule, per sequence, value head j (qk head j // (Hv/Hk)), state S [K, V] fp32:
    S ← exp(g_t) · S;   S ← S + k_t ⊗ β_t (v_t − k_tᵀ S);   o_t = (scale · q_t)ᵀ S
with q, k L2-normalised per head first when ``qk_l2norm``. The layout [slots, Hv, K, V] is FLA's.
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._paged import cu_seqlens as make_cu_seqlens
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, FLOAT_TYPES, Validator

ACTIVATIONS = (None, "silu")


def _validate_slots(v: Validator, pool_name: str, read_slots, write_slots) -> None:
    v.tensor("read_slots", read_slots, "B", (torch.int32,))
    v.tensor("write_slots", write_slots, "B", (torch.int32,))
    v.index_range("read_slots", read_slots, -1, v.size("S"), f"slots of {pool_name} (or -1)")
    v.index_range("write_slots", write_slots, -1, v.size("S"), f"slots of {pool_name} (or -1)")
    v.distinct_slots("write_slots", write_slots)


def _slots_example(B, device, read=True):
    slots = torch.randperm(2 * B)[:B].to(torch.int32)
    reads = slots if read else torch.full((B,), -1, dtype=torch.int32)
    return reads.to(device), slots.to(device), 2 * B


# -- gating ----------------------------------------------------------------------------------

def _gating_example(device, dtype, T=4096, Hv=32):
    return dict(A_log=randn(Hv, device=device, dtype=torch.float32), a=randn(T, Hv, device=device, dtype=dtype),
                dt_bias=randn(Hv, device=device, dtype=torch.float32), b=randn(T, Hv, device=device, dtype=dtype))


declare("gdn_gating", example=_gating_example,
        cost=lambda a: (20.0 * a["a"].numel(), nbytes(a["a"], a["b"]) + 8.0 * a["a"].numel()),
        shapes={"small": dict(T=8, Hv=4), "qwen3-next": dict(T=4096, Hv=32)})


def gdn_gating(A_log: torch.Tensor, a: torch.Tensor, dt_bias: torch.Tensor, b: torch.Tensor, *,
               kernel: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """g = −exp(A_log) · softplus(a + dt_bias) (fp32, log-space decay) and beta = sigmoid(b) (fp32);
    A_log, dt_bias [Hv]; a, b [T, Hv]."""
    v = Validator("gdn_gating")
    v.tensor("a", a, "T,Hv", ACTIVATION_TYPES)
    v.tensor("b", b, "T,Hv", FLOAT_TYPES)
    v.tensor("A_log", A_log, "Hv", FLOAT_TYPES)
    v.tensor("dt_bias", dt_bias, "Hv", FLOAT_TYPES)
    return dispatch("gdn_gating", dict(A_log=A_log, a=a, dt_bias=dt_bias, b=b), kernel)


# -- causal conv1d ---------------------------------------------------------------------------

def _validate_conv(v: Validator, x_shape: str, x, w, bias, conv_state, activation) -> None:
    v.tensor("x", x, x_shape, ACTIVATION_TYPES)
    v.tensor("w", w, "C,W", FLOAT_TYPES)
    if bias is not None:
        v.tensor("bias", bias, "C", FLOAT_TYPES)
    v.tensor("conv_state", conv_state, "S,C,W1", like="x", like_value=x)
    if conv_state.shape[2] != w.shape[1] - 1:
        v.fail("conv_state", f"has {conv_state.shape[2]} columns, expected W - 1 = {w.shape[1] - 1}")
    v.choice("activation", activation, ACTIVATIONS)


def _conv_extend_example(device, dtype, B=1, L=4096, C=8192, W=4):
    reads, writes, slots = _slots_example(B, device)
    return dict(x=randn(B * L, C, device=device, dtype=dtype), w=randn(C, W, device=device, dtype=dtype, scale=0.5),
                bias=None, conv_state=randn(slots, C, W - 1, device=device, dtype=dtype),
                cu_seqlens=make_cu_seqlens([L] * B, device), read_slots=reads, write_slots=writes, activation="silu")


declare("causal_conv1d_extend", mutates=("conv_state",), example=_conv_extend_example,
        cost=lambda a: (2.0 * a["x"].numel() * a["w"].shape[1], 2 * nbytes(a["x"]) + nbytes(a["w"])),
        shapes={"small": dict(B=3, L=5, C=16, W=4), "qwen3-next": dict(B=1, L=4096, C=8192, W=4)})


def causal_conv1d_extend(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], conv_state: torch.Tensor,
                         cu_seqlens: torch.Tensor, read_slots: torch.Tensor, write_slots: torch.Tensor,
                         activation: Optional[str], *, kernel: Optional[str] = None) -> torch.Tensor:
    """Depthwise causal conv over packed sequences x [T, C] with weights w [C, W] (+ bias [C]),
    each sequence continuing from conv_state[read_slot] [C, W-1] (its last W−1 inputs, oldest
    first; -1 = zeros) and leaving its last W−1 inputs in conv_state[write_slot]; → [T, C]."""
    v = Validator("causal_conv1d_extend")
    _validate_conv(v, "T,C", x, w, bias, conv_state, activation)
    v.tensor("cu_seqlens", cu_seqlens, "B1", (torch.int32,))
    v.bind("B", cu_seqlens.shape[0] - 1, "cu_seqlens")
    v.cu_seqlens("cu_seqlens", cu_seqlens, v.size("T"), "x")
    _validate_slots(v, "conv_state", read_slots, write_slots)
    return dispatch("causal_conv1d_extend", dict(x=x, w=w, bias=bias, conv_state=conv_state, cu_seqlens=cu_seqlens,
                                                 read_slots=read_slots, write_slots=write_slots, activation=activation), kernel)


def _conv_decode_example(device, dtype, B=64, C=8192, W=4):
    reads, writes, slots = _slots_example(B, device)
    return dict(x=randn(B, C, device=device, dtype=dtype), w=randn(C, W, device=device, dtype=dtype, scale=0.5), bias=None,
                conv_state=randn(slots, C, W - 1, device=device, dtype=dtype), read_slots=reads, write_slots=writes,
                activation="silu")


declare("causal_conv1d_decode", mutates=("conv_state",), example=_conv_decode_example,
        cost=lambda a: (2.0 * a["x"].numel() * a["w"].shape[1],
                        2 * nbytes(a["x"]) + 2 * a["x"].numel() * (a["w"].shape[1] - 1) * a["x"].element_size()),
        shapes={"small": dict(B=3, C=16, W=4), "qwen3-next-b64": dict(B=64, C=8192, W=4)})


def causal_conv1d_decode(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], conv_state: torch.Tensor,
                         read_slots: torch.Tensor, write_slots: torch.Tensor, activation: Optional[str], *,
                         kernel: Optional[str] = None) -> torch.Tensor:
    """One step of the causal conv for x [B, C]; read == write updates the state in place."""
    v = Validator("causal_conv1d_decode")
    _validate_conv(v, "B,C", x, w, bias, conv_state, activation)
    _validate_slots(v, "conv_state", read_slots, write_slots)
    return dispatch("causal_conv1d_decode", dict(x=x, w=w, bias=bias, conv_state=conv_state, read_slots=read_slots,
                                                 write_slots=write_slots, activation=activation), kernel)


# -- gated delta rule ------------------------------------------------------------------------

def _validate_gdn(v: Validator, t: str, q, k, vv, g, beta, state, scale, qk_l2norm) -> None:
    v.tensor("q", q, f"{t},Hk,K", ACTIVATION_TYPES)
    v.tensor("k", k, f"{t},Hk,K", like="q", like_value=q)
    v.tensor("v", vv, f"{t},Hv,V", like="q", like_value=q)
    if v.size("Hv") % v.size("Hk"):
        v.fail("v", f"has {v.size('Hv')} heads, expected a multiple of q's {v.size('Hk')} heads")
    v.tensor("g", g, f"{t},Hv", (torch.float32,))
    v.tensor("beta", beta, f"{t},Hv", FLOAT_TYPES)
    v.tensor("state", state, "S,Hv,K,V", (torch.float32,))
    v.number("scale", scale, low=0, low_open=True)
    v.flag("qk_l2norm", qk_l2norm)


def _gdn_inputs(n, Hk, Hv, K, V, device, dtype):
    return dict(q=randn(n, Hk, K, device=device, dtype=dtype), k=randn(n, Hk, K, device=device, dtype=dtype),
                v=randn(n, Hv, V, device=device, dtype=dtype),
                g=-torch.rand(n, Hv, device=device, dtype=torch.float32) * 0.5,
                beta=torch.rand(n, Hv, device=device, dtype=torch.float32))


def _gdn_extend_example(device, dtype, B=1, L=8192, Hk=16, Hv=32, K=128, V=128, initial=True):
    reads, writes, slots = _slots_example(B, device, read=initial)
    a = _gdn_inputs(B * L, Hk, Hv, K, V, device, dtype)
    a.update(state=randn(slots, Hv, K, V, device=device, dtype=torch.float32, scale=0.1),
             cu_seqlens=make_cu_seqlens([L] * B, device), read_slots=reads, write_slots=writes, scale=K ** -0.5, qk_l2norm=True)
    return a


def _gdn_extend_cost(a):
    T, Hv, V = a["v"].shape
    K = a["q"].shape[2]
    B = a["read_slots"].shape[0]
    # chunked form, chunk 64: about 4 [64,K]x[K,V]-sized products per token per head plus the intra-chunk ones
    flops = T * Hv * (4.0 * 2 * K * V + 2 * 2 * 64 * (K + V))
    state_bytes = 2.0 * B * Hv * K * V * 4
    return flops, nbytes(a["q"], a["k"], a["v"], a["g"], a["beta"]) + nbytes(a["v"]) + state_bytes


declare("gdn_extend", mutates=("state",), example=_gdn_extend_example, cost=_gdn_extend_cost,
        rtol={torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 3e-2},
        shapes={"small": dict(B=3, L=37, Hk=2, Hv=4, K=16, V=16), "qwen3-next-8k": dict(B=1, L=8192),
                "qwen3-next-32k": dict(B=1, L=32768), "qwen3-next-8x4k": dict(B=8, L=4096)})


def gdn_extend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
               state: torch.Tensor, cu_seqlens: torch.Tensor, read_slots: torch.Tensor, write_slots: torch.Tensor,
               scale: float, qk_l2norm: bool, *, kernel: Optional[str] = None) -> torch.Tensor:
    """Gated delta rule over packed sequences (see the module docstring): q, k [T, Hk, K],
    v [T, Hv, V], g [T, Hv] fp32 (log decay), beta [T, Hv], state pool [S, Hv, K, V] fp32 → o [T, Hv, V]."""
    val = Validator("gdn_extend")
    _validate_gdn(val, "T", q, k, v, g, beta, state, scale, qk_l2norm)
    val.tensor("cu_seqlens", cu_seqlens, "B1", (torch.int32,))
    val.bind("B", cu_seqlens.shape[0] - 1, "cu_seqlens")
    val.cu_seqlens("cu_seqlens", cu_seqlens, val.size("T"), "q")
    _validate_slots(val, "state", read_slots, write_slots)
    return dispatch("gdn_extend", dict(q=q, k=k, v=v, g=g, beta=beta, state=state, cu_seqlens=cu_seqlens,
                                       read_slots=read_slots, write_slots=write_slots, scale=scale, qk_l2norm=qk_l2norm), kernel)


def _gdn_decode_example(device, dtype, B=64, Hk=16, Hv=32, K=128, V=128):
    reads, writes, slots = _slots_example(B, device)
    a = _gdn_inputs(B, Hk, Hv, K, V, device, dtype)
    a.update(state=randn(slots, Hv, K, V, device=device, dtype=torch.float32, scale=0.1), read_slots=reads,
             write_slots=writes, scale=K ** -0.5, qk_l2norm=True)
    return a


declare("gdn_decode", mutates=("state",), example=_gdn_decode_example,
        cost=lambda a: (6.0 * a["v"].shape[0] * a["v"].shape[1] * a["q"].shape[2] * a["v"].shape[2],
                        2.0 * a["v"].shape[0] * a["v"].shape[1] * a["q"].shape[2] * a["v"].shape[2] * 4),
        rtol={torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2},
        shapes={"small": dict(B=3, Hk=2, Hv=4, K=16, V=16), "qwen3-next-b1": dict(B=1), "qwen3-next-b8": dict(B=8),
                "qwen3-next-b64": dict(B=64)})


def gdn_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
               state: torch.Tensor, read_slots: torch.Tensor, write_slots: torch.Tensor, scale: float,
               qk_l2norm: bool, *, kernel: Optional[str] = None) -> torch.Tensor:
    """One step of the gated delta rule for B sequences (q, k [B, Hk, K], v [B, Hv, V]); read ==
    write is in place. Graph-capturable. → o [B, Hv, V]."""
    val = Validator("gdn_decode")
    _validate_gdn(val, "B", q, k, v, g, beta, state, scale, qk_l2norm)
    _validate_slots(val, "state", read_slots, write_slots)
    return dispatch("gdn_decode", dict(q=q, k=k, v=v, g=g, beta=beta, state=state, read_slots=read_slots,
                                       write_slots=write_slots, scale=scale, qk_l2norm=qk_l2norm), kernel)
