"""Qwen3-Next, Qwen3.5 (dense and MoE, multimodal checkpoints), DeepSeek-V3 and DeepSeek-V2 against
transformers on CPU: tokenyard in fp32, greedy continuations identical to transformers' fp32
generation, logprobs within 1e-4, and the same results however the engine chunks, batches or
preempts the requests.

Logprobs are compared with transformers run in float64, the checkpoint's exact function:
transformers' own fp32 run strays from it by up to ~1.2e-4 on Qwen3-Next (its chunked
gated-delta rule rounds more), so fp32 against fp32 at 1e-4 would test transformers' rounding.

The tiny checkpoints (tiny_configs.py) keep each architecture's features: GDN and gated attention
layers with partial RoPE, MoE with shared experts next to dense layers, per-expert and pre-fused
expert tensors, MLA with and without q_lora under YaRN, sigmoid grouped routing with a correction
bias and softmax greedy routing.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from tests.engine.conftest import engine, hf_greedy, hf_prompt_logprobs, run
from tests.engine.tiny_configs import BUILDERS, one_thread  # noqa: F401 (autouse fixture)
from tokenyard.engine import SamplingParams
from tokenyard.engine.models import model_class

GREEDY = SamplingParams(max_tokens=32, temperature=0, ignore_eos=True, logprobs=0)


@pytest.fixture(scope="module", params=list(BUILDERS))
def tiny(request, tmp_path_factory):
    """(checkpoint dir, transformers model in fp32, the same in float64) for each architecture."""
    path = tmp_path_factory.mktemp(request.param)
    hf = BUILDERS[request.param](path)
    exact = copy.deepcopy(hf).double()
    if any(m.__class__.__name__.endswith("Experts") for m in exact.modules()):
        exact.set_experts_implementation("eager")  # grouped_mm has no float64 kernel
    return path, hf, exact


def prompts(n: int, seed: int, low: int, high: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(256) for _ in range(rng.randint(low, high))] for _ in range(n)]


def assert_greedy_and_logprobs_match(exact, prompt: list[int], out) -> None:
    """Each generated token is the argmax of transformers (float64) after the same prefix, with its
    logprob within 1e-4 (one full forward pass over prompt + output, no cache)."""
    with torch.no_grad():
        lp = torch.log_softmax(exact(torch.tensor([prompt + out.token_ids])).logits[0], dim=-1).float()
    rows = lp[len(prompt) - 1: len(prompt) - 1 + len(out.token_ids)]
    assert out.token_ids == rows.argmax(dim=-1).tolist(), f"prompt of {len(prompt)} tokens"
    ours = torch.tensor([entry[t] for entry, t in zip(out.logprobs, out.token_ids)])
    torch.testing.assert_close(ours, rows.gather(1, torch.tensor(out.token_ids)[:, None])[:, 0], atol=1e-4, rtol=0)


def test_prompt_logprobs_match_transformers_within_1e_4(tiny):
    path, _, exact = tiny
    prompt = prompts(1, seed=2, low=40, high=40)[0]
    out = run(engine(path), [prompt], SamplingParams(max_tokens=1, prompt_logprobs=0))["r0"]
    ours = torch.tensor([entry[t] for entry, t in zip(out.prompt_logprobs[1:], prompt[1:])])
    torch.testing.assert_close(ours, hf_prompt_logprobs(exact, prompt), atol=1e-4, rtol=0)


def test_greedy_32_tokens_identical_to_transformers(tiny):
    path, hf, exact = tiny
    prompt = prompts(1, seed=4, low=20, high=30)[0]
    out = run(engine(path), [prompt], GREEDY)["r0"]
    assert out.token_ids == hf_greedy(hf, prompt, 32)
    assert_greedy_and_logprobs_match(exact, prompt, out)


def test_chunked_prefill_matches_one_chunk(tiny):
    """Same tokens; logprobs equal up to fp32 rounding (the chunked GDN and the gemms round
    differently for different chunkings)."""
    path, _, _ = tiny
    prompt = prompts(1, seed=5, low=60, high=60)[0]
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, prompt_logprobs=0, logprobs=0)
    whole = run(engine(path), [prompt], params)["r0"]
    chunked = run(engine(path, page_size=4, max_num_batched_tokens=7), [prompt], params)["r0"]
    assert chunked.token_ids == whole.token_ids
    for a, b in zip(whole.prompt_logprobs[1:] + whole.logprobs, chunked.prompt_logprobs[1:] + chunked.logprobs):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)


def test_batch_of_8_different_lengths_matches_alone_and_transformers(tiny):
    path, _, exact = tiny
    batch = prompts(8, seed=6, low=3, high=45)
    alone = run(engine(path), batch[:1], GREEDY)["r0"]
    together = run(engine(path, page_size=4, max_num_batched_tokens=32), batch, GREEDY)
    assert together["r0"].token_ids == alone.token_ids
    for a, b in zip(alone.logprobs, together["r0"].logprobs):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    for i, prompt in enumerate(batch):
        assert_greedy_and_logprobs_match(exact, prompt, together[f"r{i}"])


def test_preemption_under_memory_pressure_changes_nothing(tiny):
    path, _, exact = tiny
    batch = prompts(8, seed=7, low=20, high=45)
    # 8 requests of up to 77 tokens in 20 pages of 4 tokens: some are preempted and recomputed.
    config = json.loads((path / "config.json").read_text())
    spec = model_class(config)(config, torch.float32, torch.device("cpu")).cache_spec()
    slots = 8 if spec.has_gdn else 0
    budget = slots * spec.bytes_per_slot(torch.float32) + 20 * 4 * spec.bytes_per_token(torch.float32)
    eng = engine(path, page_size=4, kv_cache_memory=budget, num_state_slots=slots or None)
    assert eng.stats()["total_pages"] == 20
    together = run(eng, batch, GREEDY)
    assert eng.stats()["preemptions"] > 0
    for i, prompt in enumerate(batch):
        assert_greedy_and_logprobs_match(exact, prompt, together[f"r{i}"])
