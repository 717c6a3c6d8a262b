"""MoE: moe_route against transformers' DeepSeek-V3 and Qwen3-Next routers and a per-token
restatement of the group-limited rule; moe_experts against a per-token, per-choice python loop."""

import pytest
import torch
import torch.nn.functional as F

from tokenyard.backends.reference.moe import moe_experts, moe_route
from tokenyard.backends.reference.quant import nvfp4_quantize

from .oracles import nvfp4_decode, rand, tol

DTYPES = [torch.float32, torch.bfloat16]


def by_expert(weights, ids):
    """(ids, weights) of each token sorted by expert id: routing is a set, its order is free."""
    order = ids.long().argsort(-1)
    return ids.long().gather(-1, order), weights.gather(-1, order)


def test_moe_route_matches_transformers_deepseek_v3_router(device):
    modeling = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")
    from transformers import DeepseekV3Config

    config = DeepseekV3Config(hidden_size=32, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                              routed_scaling_factor=2.5, norm_topk_prob=True)
    router = modeling.DeepseekV3TopkRouter(config).to(device)
    with torch.no_grad():
        router.weight.normal_()
        router.e_score_correction_bias.normal_(std=0.5)  # large enough to change choices
    x = rand(24, 32, device=device)
    logits, expected_w, expected_ids = router(x)
    weights, ids = moe_route(logits=logits, top_k=4, scoring="sigmoid", renormalize=True,
                             bias=router.e_score_correction_bias, n_group=4, topk_group=2, scale=2.5)
    assert weights.dtype == torch.float32 and ids.dtype == torch.int32 and ids.shape == (24, 4)
    got_ids, got_w = by_expert(weights, ids)
    want_ids, want_w = by_expert(expected_w, expected_ids)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w.float())


def test_moe_route_matches_transformers_deepseek_v2_group_limited_greedy_router(device):
    modeling = pytest.importorskip("transformers.models.deepseek_v2.modeling_deepseek_v2")
    from transformers import DeepseekV2Config

    config = DeepseekV2Config(hidden_size=32, n_routed_experts=16, num_experts_per_tok=4, n_group=8, topk_group=3,
                              topk_method="group_limited_greedy", routed_scaling_factor=16.0)
    router = modeling.DeepseekV2TopkRouter(config).to(device)
    with torch.no_grad():
        router.weight.normal_()
    x = rand(64, 32, device=device)
    logits, expected_w, expected_ids = router(x)
    weights, ids = moe_route(logits=logits, top_k=4, scoring="softmax", renormalize=False, n_group=8, topk_group=3,
                             scale=16.0, group_score="max")
    got_ids, got_w = by_expert(weights, ids)
    want_ids, want_w = by_expert(expected_w, expected_ids)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w.float())
    # the V3 group score (sum of the two best) picks other experts for some tokens on these logits
    v3_ids = moe_route(logits=logits, top_k=4, scoring="softmax", renormalize=False, n_group=8, topk_group=3,
                       scale=16.0, group_score="top2_sum")[1]
    assert not torch.equal(by_expert(weights, v3_ids)[0], got_ids)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_moe_route_matches_transformers_qwen3_next_router(device, norm_topk_prob):
    modeling = pytest.importorskip("transformers.models.qwen3_next.modeling_qwen3_next")
    from transformers import Qwen3NextConfig

    config = Qwen3NextConfig(hidden_size=32, num_experts=8, num_experts_per_tok=3, norm_topk_prob=norm_topk_prob)
    router = modeling.Qwen3NextTopKRouter(config).to(device)
    with torch.no_grad():
        router.weight.normal_()
    x = rand(24, 32, device=device)
    logits, expected_w, expected_ids = router(x)
    weights, ids = moe_route(logits=logits, top_k=3, scoring="softmax", renormalize=norm_topk_prob)
    got_ids, got_w = by_expert(weights, ids)
    want_ids, want_w = by_expert(expected_w, expected_ids)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w, want_w.float())


def group_limited_route(logits, top_k, scoring, renormalize, bias, n_group, topk_group, scale):
    """DeepSeek-V3's rule restated one token at a time with python sorting."""
    weights, ids = [], []
    for row in logits.double().cpu():
        scores = row.softmax(-1) if scoring == "softmax" else row.sigmoid()
        choice = scores + bias.double().cpu()
        size = len(row) // n_group
        group_score = [sum(sorted(choice[gi * size : (gi + 1) * size].tolist(), reverse=True)[:2]) for gi in range(n_group)]
        groups = sorted(range(n_group), key=lambda gi: -group_score[gi])[:topk_group]
        allowed = [e for gi in groups for e in range(gi * size, (gi + 1) * size)]
        chosen = sorted(allowed, key=lambda e: -float(choice[e]))[:top_k]
        w = scores[chosen]
        if renormalize:
            w = w / w.sum()
        weights.append(w * scale)
        ids.append(chosen)
    return torch.stack(weights), torch.tensor(ids)


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
@pytest.mark.parametrize("renormalize", [True, False])
def test_moe_route_group_limited_rule_keeps_the_best_groups_by_top2_sum(device, scoring, renormalize):
    logits, bias = rand(16, 32, device=device, scale=2.0), rand(32, device=device, scale=0.3)
    weights, ids = moe_route(logits=logits, top_k=6, scoring=scoring, renormalize=renormalize, bias=bias,
                             n_group=8, topk_group=3, scale=1.5)
    want_w, want_ids = group_limited_route(logits, 6, scoring, renormalize, bias, 8, 3, 1.5)
    got_ids, got_w = by_expert(weights.cpu(), ids.cpu())
    want_ids, want_w = by_expert(want_w, want_ids)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_w.double(), want_w, **tol(torch.float32))
    unlimited = (logits + bias).cpu().topk(6, dim=-1).indices.sort(-1).values
    assert not torch.equal(got_ids, unlimited)  # the group limit changed some choices


def test_moe_route_bias_steers_choice_but_not_weights(device):
    logits = rand(1, 4, device=device)
    bias = torch.tensor([0.0, 0.0, 0.0, 100.0], device=device)  # expert 3 always chosen
    weights, ids = moe_route(logits=logits, top_k=1, scoring="sigmoid", renormalize=False, bias=bias)
    assert ids.tolist() == [[3]]
    torch.testing.assert_close(weights, logits[:, 3:].sigmoid())


def experts_loop(x, w13, w2, weights, ids):
    """Σ_j w_tj · W2[e] (silu(gate·x_t) ⊙ (up·x_t)), one token and one choice at a time, float64."""
    inter = w2.shape[-1]
    y = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            h = w13[e] @ x[t].double()
            gate, up = h[:inter], h[inter:]
            y[t] += float(weights[t, j]) * (w2[e] @ (F.silu(gate) * up))
    return y


@pytest.mark.parametrize("dtype", DTYPES)
def test_moe_experts_equals_per_token_loop_over_chosen_experts(device, dtype):
    t, h, inter, e, k = 9, 16, 12, 6, 2
    x = rand(t, h, dtype=dtype, device=device)
    w13, w2 = rand(e, 2 * inter, h, dtype=dtype, device=device), rand(e, h, inter, dtype=dtype, device=device)
    ids = torch.stack([torch.randperm(e)[:k] for _ in range(t)]).to(device=device, dtype=torch.int32)
    ids[:, 0] = 4  # one expert shared by all tokens; others unused
    weights = torch.rand(t, k, device=device)
    y = moe_experts(x=x, w13=w13, w2=w2, weights=weights, ids=ids)
    assert y.shape == (t, h) and y.dtype == dtype
    expected = experts_loop(x.cpu(), w13.double().cpu(), w2.double().cpu(), weights.cpu(), ids.cpu())
    torch.testing.assert_close(y.double().cpu(), expected, **tol(dtype))


def test_moe_experts_with_nvfp4_weights_uses_the_values_they_encode(device):
    t, h, inter, e, k = 5, 32, 16, 3, 2
    x = rand(t, h, device=device)
    w13 = nvfp4_quantize(w=rand(e, 2 * inter, h, device=device, scale=0.1))
    w2 = nvfp4_quantize(w=rand(e, h, inter, device=device, scale=0.1))
    ids = torch.tensor([[0, 2], [1, 0], [2, 1], [0, 1], [2, 0]], dtype=torch.int32, device=device)
    weights = torch.rand(t, k, device=device)
    y = moe_experts(x=x, w13=w13, w2=w2, weights=weights, ids=ids)
    dense13 = nvfp4_decode(w13.packed, w13.scales, w13.global_scale)
    dense2 = nvfp4_decode(w2.packed, w2.scales, w2.global_scale)
    torch.testing.assert_close(y.double().cpu(), experts_loop(x.cpu(), dense13, dense2, weights.cpu(), ids.cpu()),
                               **tol(torch.float32))
