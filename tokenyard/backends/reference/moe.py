"""Mixture of experts: routing (top-k selection and weights) and the routed experts' SwiGLU MLPs.

Owns expert selection and the grouped expert computation; shared experts and the shared-expert
gate are ordinary layers of the model.

Routing, per token, from router logits ℓ[E]:
    s = softmax(ℓ) or sigmoid(ℓ)                      (the weights come from s)
    c = s + bias                                        (bias, if given, only steers the choice:
                                                         DeepSeek-V3's e_score_correction_bias)
    with n_group > 1 (group-limited routing): split c into n_group equal groups of consecutive
    experts, score a group by the sum of its two largest c (DeepSeek-V3, "top2_sum") or by its
    largest c (DeepSeek-V2's group_limited_greedy, "max"), keep the topk_group best groups and
    drop every expert outside them
    ids = top_k of c;   w = s[ids];   w /= Σw if renormalize;   w *= scale
Qwen's rule is the special case softmax, no bias, n_group = 1 (renormalize = norm_topk_prob).

Experts, with w13[e] = [gate rows ‖ up rows] [2I, H] and w2[e] [H, I]:
    y_t = Σ_j w_tj · W2[e_tj] (silu(gate_e·x_t) ⊙ (up_e·x_t)),   e_tj = ids[t, j]
computed expert by expert over the tokens routed to it (token-expert pairs sorted by expert),
in fp32, and scatter-added back.
"""

from __future__ import annotations

import torch

from .activation import silu_and_mul
from .quant import expert_fp32

_SCORINGS = ("softmax", "sigmoid")
# DeepSeek-V3 adds this to the denominator so that all-zero sigmoid weights cannot divide by 0.
_RENORM_EPS = 1e-20


def moe_route(
    *,
    logits: torch.Tensor,
    top_k: int,
    scoring: str,
    renormalize: bool,
    bias: torch.Tensor | None = None,
    n_group: int = 1,
    topk_group: int = 1,
    scale: float = 1.0,
    group_score: str = "top2_sum",
):
    if scoring not in _SCORINGS:
        raise ValueError(f"scoring must be one of {_SCORINGS}, got {scoring!r}")
    logits = logits.float()
    scores = logits.softmax(-1) if scoring == "softmax" else logits.sigmoid()
    choice = scores if bias is None else scores + bias.float()
    if n_group > 1:
        tokens, experts = choice.shape
        grouped = choice.view(tokens, n_group, experts // n_group)
        if group_score == "top2_sum":
            group_rank = grouped.topk(2, dim=-1).values.sum(-1)
        else:
            group_rank = grouped.max(dim=-1).values
        kept = torch.zeros_like(group_rank, dtype=torch.bool)
        kept.scatter_(1, group_rank.topk(topk_group, dim=-1).indices, True)
        choice = grouped.masked_fill(~kept[..., None], float("-inf")).view(tokens, experts)
    ids = choice.topk(top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(-1, keepdim=True) + _RENORM_EPS)
    return weights * scale, ids.to(torch.int32)


def moe_experts(
    *,
    x: torch.Tensor,
    w13,
    w2,
    weights: torch.Tensor,
    ids: torch.Tensor,
    activation: str = "silu",
) -> torch.Tensor:
    if activation != "silu":
        raise ValueError(f"activation must be 'silu', got {activation!r}")
    top_k = ids.shape[1]
    flat_ids = ids.flatten().long()
    order = flat_ids.argsort(stable=True)  # token-expert pairs, grouped by expert
    token = order // top_k
    pair_weight = weights.flatten().float()[order]
    counts = torch.bincount(flat_ids)
    y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    start = 0
    for e, count in enumerate(counts.tolist()):
        if count == 0:
            continue
        rows = slice(start, start + count)
        start += count
        h = silu_and_mul(x=x[token[rows]].float() @ expert_fp32(w13, e).t())
        y.index_add_(0, token[rows], (h @ expert_fp32(w2, e).t()) * pair_weight[rows, None])
    return y.to(x.dtype)
