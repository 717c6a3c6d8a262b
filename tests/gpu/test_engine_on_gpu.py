"""The engine on the GPU, end to end, against transformers: tiny random checkpoints of a dense
(Llama) and two hybrid architectures (Qwen3.5 dense: GDN + gated attention; Qwen3-Next: GDN +
attention + MoE) run in bf16 on CUDA with the NVIDIA backend's kernels (priority policy, so the
Triton kernels are the ones chosen), and every token the engine generates is checked against
transformers' float64 forward pass over the same prompt + output on the CPU.

bf16 activations cannot reproduce float64 logprobs exactly, so the checks are about faults, not
rounding: each generated token must be within GREEDY_SLACK nats of transformers' best token at
that position (a wrong kernel, a stale state slot or a page mix-up puts it several nats away), and
its logprob within LOGPROB_ATOL of transformers'. Cache hits are checked the same way, and their
output against the same prompt computed without the prefix cache.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from tests.engine.conftest import make_tiny
from tests.engine.tiny_configs import BUILDERS
from tokenyard.engine import LLMEngine, SamplingParams
from tokenyard.registry import get_registry

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

GREEDY_SLACK = 0.15   # nats between the engine's token and transformers' argmax at that position
LOGPROB_ATOL = 0.15   # bf16 end to end through a few layers of random weights
TOKENS = 16


@pytest.fixture(scope="module", params=["llama", "qwen3_5", "qwen3_next"])
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = make_tiny("llama", path) if request.param == "llama" else BUILDERS[request.param](path)
    exact = copy.deepcopy(hf).double()
    if any(m.__class__.__name__.endswith("Experts") for m in exact.modules()):
        exact.set_experts_implementation("eager")
    return request.param, path, exact


@pytest.fixture(autouse=True)
def triton_kernels_first(monkeypatch):
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    get_registry().clear_choices()
    yield
    get_registry().clear_choices()


def _engine(path, **kw) -> LLMEngine:
    return LLMEngine(str(path), dtype="bfloat16", device="cuda", kv_cache_memory=256 << 20, max_num_seqs=8, **kw)


def _run(engine: LLMEngine, prompts: list[list[int]]) -> list:
    params = SamplingParams(max_tokens=TOKENS, temperature=0, ignore_eos=True, logprobs=0)
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    stats = engine.stats()   # everything released (cached prefixes stay evictable, counted free)
    assert stats["running"] == stats["waiting"] == 0
    assert stats["free_pages"] == stats["total_pages"] and stats["free_slots"] == stats["total_slots"]
    return [done[f"r{i}"] for i in range(len(prompts))]


def _check_against_transformers(exact, prompt: list[int], out) -> tuple[float, float]:
    with torch.no_grad():
        lp = torch.log_softmax(exact(torch.tensor([prompt + out.token_ids])).logits[0], dim=-1)
    rows = lp[len(prompt) - 1: len(prompt) - 1 + len(out.token_ids)]
    chosen = rows.gather(1, torch.tensor(out.token_ids)[:, None])[:, 0]
    slack = float((rows.max(dim=-1).values - chosen).max())
    ours = torch.tensor([entry[t] for entry, t in zip(out.logprobs, out.token_ids)], dtype=torch.float64)
    err = float((ours - chosen).abs().max())
    assert slack <= GREEDY_SLACK, f"a generated token is {slack:.3f} nats below transformers' best"
    assert err <= LOGPROB_ATOL, f"logprob differs from transformers' float64 by {err:.3f}"
    return slack, err


def _prompts(n: int, seed: int, low: int, high: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(256) for _ in range(rng.randint(low, high))] for _ in range(n)]


@pytest.mark.parametrize("page_size", [16, 64])
def test_batched_generation_matches_transformers(tiny, page_size):
    name, path, exact = tiny
    engine = _engine(path, page_size=page_size)
    prompts = _prompts(6, seed=page_size, low=3, high=300)   # several GDN chunks, odd lengths
    worst = [_check_against_transformers(exact, p, o) for p, o in zip(prompts, _run(engine, prompts))]
    print(f"{name} page {page_size}: max slack {max(w[0] for w in worst):.4f}, "
          f"max logprob err {max(w[1] for w in worst):.4f}, graphs {engine.runner.graphs is not None}")


def test_prefix_cache_hit_matches_miss_and_transformers(tiny):
    """Turn 2 of a conversation (turn 1's prompt + output + new tokens) served from the prefix cache
    (pages and, for hybrids, the GDN state checkpoint) against the same prompt with the cache off."""
    name, path, exact = tiny
    rng = random.Random(7)
    turn1 = [rng.randrange(256) for _ in range(333)]
    cached = _engine(path, page_size=16, checkpoint_interval=128)
    first = _run(cached, [turn1])[0]
    turn2 = turn1 + first.token_ids + [rng.randrange(256) for _ in range(45)]
    hit = _run(cached, [turn2])[0]
    assert hit.cached_tokens >= 320, f"{name}: only {hit.cached_tokens} of turn 2's tokens came from the cache"
    miss = _run(_engine(path, page_size=16, enable_prefix_caching=False), [turn2])[0]
    _check_against_transformers(exact, turn2, hit)
    _check_against_transformers(exact, turn2, miss)
    lp_hit = torch.tensor([e[t] for e, t in zip(hit.logprobs, hit.token_ids)])
    lp_miss = torch.tensor([e[t] for e, t in zip(miss.logprobs, miss.token_ids)])
    same = next((i for i, (a, b) in enumerate(zip(hit.token_ids, miss.token_ids)) if a != b), TOKENS)
    assert same >= TOKENS // 2, f"{name}: cache hit and miss diverge at token {same}"
    assert float((lp_hit[:same] - lp_miss[:same]).abs().max()) <= LOGPROB_ATOL
