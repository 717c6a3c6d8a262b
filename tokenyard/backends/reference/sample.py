"""Token sampling: greedy, temperature, top-k, top-p, min-p, seeded draws.

Owns the choice of the next token from a row of logits; logprobs and penalties are the engine's.

Per row, with temperature τ:
    τ = 0:  argmax(logits)                                      (greedy, exact)
    else:   p = softmax(logits / τ), then keep
              top-k: the k most probable tokens                 (k ≤ 0: all)
              top-p: the most probable tokens, in order, until the kept ones (renormalised after
                     top-k) reach mass top_p; the first token is always kept
              min-p: tokens with p ≥ min_p · max(p)
            and draw from p restricted to the kept tokens.
The draw is an exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) i.i.d. picks i with
probability p_i / Σp. A row with seed ≥ 0 draws its E from a generator seeded with that seed, so
the same logits and seed give the same token on the same device; unseeded rows (seed < 0) draw
from the default generator.
"""

from __future__ import annotations

import torch


def _kept(probs: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """[B, V] bool: the tokens that survive top-k, top-p and min-p."""
    vocab = probs.shape[-1]
    sorted_p, order = probs.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=probs.device)[None, :]
    k = torch.where(top_k > 0, top_k.long(), torch.full_like(top_k, vocab, dtype=torch.long))
    keep = rank < k[:, None]
    after_k = sorted_p * keep
    after_k = after_k / after_k.sum(-1, keepdim=True)
    mass_before = after_k.cumsum(-1) - after_k
    keep &= mass_before < top_p.float()[:, None]
    keep &= sorted_p >= min_p.float()[:, None] * sorted_p[:, :1]
    keep[:, 0] = True
    return torch.zeros_like(keep).scatter(-1, order, keep)


def _exponentials(shape: tuple[int, int], seeds: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Exp(1) noise [B, V]: row b from a generator seeded with seeds[b] when it is ≥ 0."""
    noise = torch.empty(shape, device=device).exponential_()
    for row, seed in enumerate(seeds.tolist()):
        if seed >= 0:
            gen = torch.Generator(device=device).manual_seed(seed)
            noise[row] = torch.empty(shape[1], device=device).exponential_(generator=gen)
    return noise


def _draw(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
          min_p: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """One draw per row (every temperature > 0): tempered softmax, filtered, exponential race."""
    probs = (logits / temperature.float()[:, None]).softmax(-1)
    probs = probs * _kept(probs, top_p, top_k, min_p)
    return (probs / _exponentials(tuple(probs.shape), seeds, logits.device)).argmax(-1)


def sample(
    *,
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    min_p: torch.Tensor,
    seeds: torch.Tensor,
) -> torch.Tensor:
    # Greedy rows are an argmax; only the other rows pay for softmax, sorting and noise.
    logits = logits.float()
    ids = logits.argmax(-1)
    drawn = (temperature > 0).nonzero()[:, 0]
    if drawn.numel():
        ids[drawn] = _draw(logits[drawn], temperature[drawn], top_p[drawn], top_k[drawn], min_p[drawn], seeds[drawn])
    return ids
