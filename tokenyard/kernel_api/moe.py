"""Mixture-of-experts ops: routing (softmax or sigmoid scoring, DeepSeek group-limited top-k with a
selection-only correction bias) and the fused experts Σ_k weight · down(silu(gate) · up)."""

from __future__ import annotations

from typing import Optional, Union

import torch

from tokenyard.kernel_api._common import declare, dispatch, nbytes, randn
from tokenyard.kernel_api._validate import ACTIVATION_TYPES, FLOAT_TYPES, Validator
from tokenyard.kernel_api.quant import NVFP4Weight

SCORINGS = ("softmax", "sigmoid")
GROUP_SCORES = ("top2_sum", "max")


def _same_routes(out: list, ref: list, args: dict) -> Optional[str]:
    """Routes agree when each token picks the same set of experts with the same weights (order free)."""
    (w, ids), (rw, rids) = out[:2], ref[:2]
    if ids.shape != rids.shape:
        return f"ids have shape {tuple(ids.shape)}, the reference {tuple(rids.shape)}"
    order, rorder = ids.long().sort(dim=1), rids.long().sort(dim=1)
    if not torch.equal(order.values, rorder.values):
        rows = (order.values != rorder.values).any(dim=1).sum().item()
        return f"{rows} tokens pick other experts than the reference"
    w_sorted = w.float().gather(1, order.indices)
    rw_sorted = rw.float().gather(1, rorder.indices)
    if not torch.allclose(w_sorted, rw_sorted, rtol=1e-4, atol=1e-5):
        return f"weights differ from the reference by up to {(w_sorted - rw_sorted).abs().max().item():.3g}"
    return None


def _route_example(device, dtype, T=4096, E=256, top_k=8, deepseek=True):
    return dict(logits=randn(T, E, device=device, dtype=torch.float32), top_k=top_k,
                scoring="sigmoid" if deepseek else "softmax", renormalize=True,
                bias=randn(E, device=device, dtype=torch.float32, scale=0.1) if deepseek else None,
                n_group=8 if deepseek else 1, topk_group=4 if deepseek else 1, scale=2.5 if deepseek else 1.0)


declare("moe_route", example=_route_example, check=_same_routes,
        cost=lambda a: (10.0 * a["logits"].numel(), nbytes(a["logits"]) + a["logits"].shape[0] * a["top_k"] * 8.0),
        shapes={"small": dict(T=8, E=16, top_k=4, deepseek=True), "deepseek-v3": dict(T=4096, E=256, top_k=8),
                "qwen3-next": dict(T=4096, E=512, top_k=10, deepseek=False)})


def moe_route(logits: torch.Tensor, top_k: int, scoring: str, renormalize: bool, bias: Optional[torch.Tensor] = None,
              n_group: int = 1, topk_group: int = 1, scale: float = 1.0, group_score: str = "top2_sum", *,
              kernel: Optional[str] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``top_k`` experts per token from router logits [T, E] → (weights fp32 [T, k], ids int32 [T, k]).

    scores = softmax(logits) or sigmoid(logits). Selection uses scores + ``bias`` (DeepSeek-V3's
    e_score_correction_bias; it never enters the weights); with n_group > 1 experts form n_group
    groups of consecutive experts, a group scores the sum of its two best biased scores
    (``group_score="top2_sum"``, DeepSeek-V3) or its best score (``"max"``, DeepSeek-V2's
    group_limited_greedy), and only the best ``topk_group`` groups compete. Weights are the unbiased scores of the picks, divided by their sum when
    ``renormalize``, times ``scale`` (routed_scaling_factor).
    """
    v = Validator("moe_route")
    v.tensor("logits", logits, "T,E", FLOAT_TYPES)
    E = v.size("E")
    v.number("top_k", top_k, low=1, high=E, integer=True)
    v.choice("scoring", scoring, SCORINGS)
    v.flag("renormalize", renormalize)
    if bias is not None:
        v.tensor("bias", bias, "E", FLOAT_TYPES)
    v.number("n_group", n_group, low=1, high=E, integer=True)
    if E % n_group:
        v.fail("n_group", f"is {n_group}, expected a divisor of the {E} experts")
    v.number("topk_group", topk_group, low=1, high=n_group, integer=True)
    if top_k > topk_group * (E // n_group):
        v.fail("top_k", f"is {top_k}, expected at most topk_group × experts per group = {topk_group * (E // n_group)}")
    v.number("scale", scale, low=0, low_open=True)
    v.choice("group_score", group_score, GROUP_SCORES)
    return dispatch("moe_route", dict(logits=logits, top_k=top_k, scoring=scoring, renormalize=renormalize, bias=bias,
                                      n_group=n_group, topk_group=topk_group, scale=scale, group_score=group_score), kernel)


def _experts_example(device, dtype, T=4096, E=256, top_k=8, H=2048, I=512):
    logits = randn(T, E, device=device, dtype=torch.float32)
    weights, ids = torch.topk(logits.softmax(-1), top_k, dim=-1)
    return dict(x=randn(T, H, device=device, dtype=dtype), w13=randn(E, 2 * I, H, device=device, dtype=dtype, scale=H ** -0.5),
                w2=randn(E, H, I, device=device, dtype=dtype, scale=I ** -0.5), weights=weights,
                ids=ids.to(torch.int32), activation="silu")


def _experts_cost(a):
    x, w13, w2, ids = a["x"], a["w13"], a["w2"], a["ids"]
    T, k = ids.shape
    H = x.shape[1]
    inter = w2.shape[-1]
    flops = 2.0 * T * k * (2 * inter * H + H * inter)
    touched = torch.unique(ids).numel()  # only the experts some token picked are read
    w_bytes = sum((nbytes(t.packed, t.scales) if isinstance(t, NVFP4Weight) else nbytes(t)) for t in (w13, w2))
    E = w13.shape[0]
    return flops, w_bytes * touched / E + 2 * nbytes(x)


declare("moe_experts", example=_experts_example, cost=_experts_cost,
        shapes={"small": dict(T=8, E=8, top_k=2, H=32, I=16), "qwen3.5-35b-a3b-1": dict(T=1),
                "qwen3.5-35b-a3b-4k": dict(T=4096)})


def moe_experts(x: torch.Tensor, w13: Union[torch.Tensor, NVFP4Weight], w2: Union[torch.Tensor, NVFP4Weight],
                weights: torch.Tensor, ids: torch.Tensor, activation: str = "silu", *,
                kernel: Optional[str] = None) -> torch.Tensor:
    """Σ_k weights[t,k] · down_e(silu(gate_e(x_t)) · up_e(x_t)) with e = ids[t,k] → [T, H].

    x [T, H]; w13 [E, 2I, H] (gate rows, then up rows); w2 [E, H, I]; bf16/fp32 tensors of x's dtype
    or NVFP4Weight; weights fp32 [T, k]; ids int32 [T, k] in [0, E).
    """
    v = Validator("moe_experts")
    v.tensor("x", x, "T,H", ACTIVATION_TYPES)
    for name, w, shape in (("w13", w13, "E,I2,H"), ("w2", w2, "E,H,I")):
        if isinstance(w, NVFP4Weight):
            w.validate(v, name, shape)
        else:
            v.tensor(name, w, shape, like="x", like_value=x)
    if v.size("I2") != 2 * v.size("I"):
        v.fail("w13", f"has {v.size('I2')} rows per expert, expected 2 × I = {2 * v.size('I')} (gate then up)")
    v.tensor("weights", weights, "T,k", (torch.float32,))
    v.tensor("ids", ids, "T,k", (torch.int32,))
    v.index_range("ids", ids, 0, v.size("E"), "expert ids")
    v.choice("activation", activation, ("silu",))
    return dispatch("moe_experts", dict(x=x, w13=w13, w2=w2, weights=weights, ids=ids, activation=activation), kernel)
