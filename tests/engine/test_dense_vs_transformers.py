"""Dense models (Llama, Qwen2, Qwen3) against transformers on CPU in fp32: logprobs, greedy
continuations, and their independence from chunking, batching and preemption."""

from __future__ import annotations

import random

import torch

from tests.engine.conftest import engine, hf_greedy, hf_prompt_logprobs, run
from tokenyard.engine import SamplingParams

GREEDY = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True)


def prompts(n: int, seed: int = 1, low: int = 5, high: int = 60) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(256) for _ in range(rng.randint(low, high))] for _ in range(n)]


def test_prompt_logprobs_match_transformers_within_1e_4(tiny):
    path, hf = tiny
    prompt = prompts(1, seed=2, low=40, high=40)[0]
    out = run(engine(path), [prompt], SamplingParams(max_tokens=1, prompt_logprobs=0))["r0"]
    ours = torch.tensor([next(iter(e.values())) for e in out.prompt_logprobs[1:]])
    assert out.prompt_logprobs[0] is None and len(ours) == len(prompt) - 1
    assert [next(iter(e)) for e in out.prompt_logprobs[1:]] == prompt[1:]
    torch.testing.assert_close(ours, hf_prompt_logprobs(hf, prompt), atol=1e-4, rtol=0)


def test_sampled_token_logprobs_match_transformers(tiny_llama):
    path, hf = tiny_llama
    prompt = prompts(1, seed=3)[0]
    out = run(engine(path), [prompt], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, logprobs=3))["r0"]
    full = prompt + out.token_ids
    with torch.no_grad():
        lp = torch.log_softmax(hf(torch.tensor([full])).logits[0].float(), dim=-1)
    for i, (token, entry) in enumerate(zip(out.token_ids, out.logprobs)):
        row = lp[len(prompt) - 1 + i]
        assert next(iter(entry)) == token and len(entry) <= 4
        for t, value in entry.items():
            assert abs(value - row[t].item()) < 1e-4
        assert set(row.topk(3).indices.tolist()) <= set(entry)


def test_greedy_32_tokens_identical_to_transformers(tiny):
    path, hf = tiny
    prompt = prompts(1, seed=4)[0]
    out = run(engine(path), [prompt], GREEDY)["r0"]
    assert out.token_ids == hf_greedy(hf, prompt, 32)
    assert out.finish_reason == "length"


def test_chunked_prefill_matches_one_chunk(tiny_llama):
    path, hf = tiny_llama
    prompt = prompts(1, seed=5, low=100, high=100)[0]
    whole = run(engine(path), [prompt], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, prompt_logprobs=0))["r0"]
    chunked = run(engine(path, max_num_batched_tokens=7), [prompt],
                  SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, prompt_logprobs=0))["r0"]
    assert chunked.token_ids == whole.token_ids == hf_greedy(hf, prompt, 16)
    for a, b in zip(whole.prompt_logprobs[1:], chunked.prompt_logprobs[1:]):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-5 for k in a)


def test_batch_of_8_different_lengths_matches_each_alone(tiny_llama):
    path, hf = tiny_llama
    batch = prompts(8, seed=6, low=3, high=90)
    together = run(engine(path, max_num_batched_tokens=64), batch, GREEDY)
    for i, p in enumerate(batch):
        assert together[f"r{i}"].token_ids == hf_greedy(hf, p, 32), f"prompt {i} of length {len(p)}"


def test_preemption_under_memory_pressure_changes_nothing(tiny_llama):
    path, hf = tiny_llama
    batch = prompts(8, seed=7, low=20, high=60)
    # 8 requests of up to 92 tokens in 16 pages of 16 tokens: some must be preempted and recomputed
    eng = engine(path, kv_cache_memory=16 * 16 * 2 * 2 * 2 * 16 * 4)
    assert eng.stats()["total_pages"] == 16
    together = run(eng, batch, GREEDY)
    assert eng.stats()["preemptions"] > 0
    for i, p in enumerate(batch):
        assert together[f"r{i}"].token_ids == hf_greedy(hf, p, 32)


def test_forced_preemption_mid_decode_changes_nothing(tiny_llama):
    path, hf = tiny_llama
    batch = prompts(3, seed=8)
    seeded = [SamplingParams(max_tokens=32, temperature=0.9, top_p=0.95, seed=s, ignore_eos=True) for s in (1, 2, 3)]
    plain = run(engine(path), batch, GREEDY)
    plain_seeded = run(engine(path), batch, seeded)

    def preempt_r1(eng, step):
        if step in (5, 20) and "r1" in eng.scheduler.requests:
            eng.scheduler.preempt("r1")

    forced = run(engine(path), batch, GREEDY, on_step=preempt_r1)
    forced_seeded = run(engine(path), batch, seeded, on_step=preempt_r1)
    for i in range(3):
        assert forced[f"r{i}"].token_ids == plain[f"r{i}"].token_ids == hf_greedy(hf, batch[i], 32)
        assert forced_seeded[f"r{i}"].token_ids == plain_seeded[f"r{i}"].token_ids
