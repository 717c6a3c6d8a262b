"""Sampling: greedy is argmax; seeded draws are reproducible and vary with the seed; top-k, top-p
and min-p keep exactly the tokens their definitions keep; seeded draws follow the distribution."""

import pytest
import torch

from tokenyard.backends.reference.sample import sample


def params(b, device, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seeds=None):
    return dict(
        temperature=torch.full((b,), temperature, device=device),
        top_p=torch.full((b,), top_p, device=device),
        top_k=torch.full((b,), top_k, dtype=torch.int32, device=device),
        min_p=torch.full((b,), min_p, device=device),
        seeds=(torch.arange(b) if seeds is None else torch.as_tensor(seeds)).to(device=device, dtype=torch.int64),
    )


def test_temperature_zero_is_argmax_whatever_the_filters(device):
    logits = torch.randn(6, 50, device=device)
    p = params(6, device, temperature=0.0, top_p=0.3, top_k=5, min_p=0.2)
    ids = sample(logits=logits, **p)
    assert ids.dtype == torch.int64 and torch.equal(ids, logits.argmax(-1))


def test_same_seed_gives_the_same_token_and_seeds_vary_the_draw(device):
    logits = torch.randn(200, 32, device=device) * 0.1  # near-uniform: draws are spread out
    logits[1:] = logits[0]
    p = params(200, device, seeds=torch.arange(200))
    first, again = sample(logits=logits, **p), sample(logits=logits, **p)
    assert torch.equal(first, again)
    assert len(set(first.tolist())) > 10


def test_a_seeded_row_does_not_depend_on_the_rest_of_the_batch(device):
    logits = torch.randn(3, 40, device=device)
    alone = sample(logits=logits[1:2], **params(1, device, seeds=[1234]))
    batched = sample(logits=logits, **params(3, device, seeds=[-1, 1234, 7]))
    assert alone[0] == batched[1]


def test_unseeded_rows_draw_from_the_default_generator(device):
    logits = torch.zeros(1, 1000, device=device)
    p = params(1, device, seeds=[-1])
    torch.manual_seed(5)
    a = sample(logits=logits, **p)
    torch.manual_seed(5)
    assert sample(logits=logits, **p) == a
    assert len({int(sample(logits=logits, **p)) for _ in range(20)}) > 1


def test_top_k_one_and_tiny_top_p_are_greedy(device):
    logits = torch.randn(8, 64, device=device)
    assert torch.equal(sample(logits=logits, **params(8, device, top_k=1)), logits.argmax(-1))
    assert torch.equal(sample(logits=logits, **params(8, device, top_p=1e-6)), logits.argmax(-1))


def kept_by_definition(probs, top_k, top_p, min_p):
    """The tokens a row may produce, restated: k most probable, then the shortest prefix of the
    remaining (renormalised) ones reaching mass top_p, then those with p ≥ min_p·max(p)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    if top_k > 0:
        order = order[:top_k]
    mass, total, prefix = 0.0, sum(probs[i] for i in order), []
    for i in order:
        prefix.append(i)
        mass += probs[i] / total
        if mass >= top_p:
            break
    return {i for i in prefix if probs[i] >= min_p * max(probs)}


@pytest.mark.parametrize("top_k,top_p,min_p", [(5, 1.0, 0.0), (0, 0.6, 0.0), (0, 1.0, 0.3), (6, 0.9, 0.1)])
def test_draws_stay_inside_the_filtered_set_and_cover_it(device, top_k, top_p, min_p):
    row = torch.tensor([2.0, 1.8, 1.5, 1.4, 1.0, 0.9, 0.5, 0.0, -1.0, -2.0])
    allowed = kept_by_definition(row.double().softmax(-1).tolist(), top_k, top_p, min_p)
    n = 2000
    ids = sample(logits=row.to(device).expand(n, -1), **params(n, device, top_k=top_k, top_p=top_p, min_p=min_p))
    assert set(ids.tolist()) == allowed


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_seeded_draws_follow_the_tempered_softmax(device, temperature):
    row = torch.tensor([1.0, 0.5, 0.0, -0.5, 0.3, 1.2, -1.0, 0.8])
    n = 6000
    ids = sample(logits=row.to(device).expand(n, -1), **params(n, device, temperature=temperature))
    counts = torch.bincount(ids.cpu(), minlength=8).double()
    expected = (row.double() / temperature).softmax(-1) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 24.3  # 7 degrees of freedom, p = 0.001; the seeds are fixed, so no flakes
