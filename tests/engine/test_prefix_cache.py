"""The prefix cache: a request that begins with already computed full pages reuses them, reports
them as cached_tokens, and generates exactly what it would have without the cache."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import engine, hf_greedy, run
from tests.engine.test_dense_vs_transformers import GREEDY, prompts
from tests.engine.test_scheduler import add, make, step
from tokenyard.engine import SamplingParams
from tokenyard.engine.cache.prefix_pool import chain_hash
from tokenyard.engine.scheduler.request import RequestStatus


def test_second_turn_reuses_the_first_turns_pages_and_matches_transformers(tiny_llama):
    path, hf = tiny_llama
    eng = engine(path, page_size=8)
    first_turn = prompts(1, seed=31, low=45, high=45)[0]
    first = run(eng, [first_turn], GREEDY)["r0"]
    assert first.cached_tokens == 0
    second_turn = first_turn + first.token_ids + prompts(1, seed=32, low=10, high=10)[0]
    second = run(eng, [second_turn], GREEDY)["r0"]
    # the first turn's prompt and all but its last generated token are in the cache, in full pages
    assert second.cached_tokens == (len(first_turn) + 31) // 8 * 8
    assert second.token_ids == hf_greedy(hf, second_turn, 32)
    stats = eng.stats()
    assert stats["prefix_cache_hits"] == second.cached_tokens and stats["cached_pages"] > 0
    uncached = run(engine(path, page_size=8, enable_prefix_caching=False), [second_turn], GREEDY)["r0"]
    assert uncached.cached_tokens == 0 and uncached.token_ids == second.token_ids


def test_identical_prompt_recomputes_only_its_last_page(tiny_llama):
    path, _ = tiny_llama
    eng = engine(path, page_size=4)
    prompt = prompts(1, seed=33, low=16, high=16)[0]
    a = run(eng, [prompt], GREEDY)["r0"]
    b = run(eng, [prompt], GREEDY)["r0"]
    assert b.cached_tokens == 12 and b.token_ids == a.token_ids


def test_shared_prefix_pages_are_shared_by_running_requests(tiny_llama):
    path, hf = tiny_llama
    eng = engine(path, page_size=4)
    system = prompts(1, seed=34, low=32, high=32)[0]
    run(eng, [system + [1]], SamplingParams(max_tokens=1))
    batch = [system + tail for tail in prompts(4, seed=35, low=3, high=9)]
    pages_seen = []
    outs = run(eng, batch, GREEDY, on_step=lambda e, n: pages_seen.append(
        [tuple(r.pages[:8]) for r in e.scheduler.running]))
    assert any(len(set(step_pages)) == 1 and len(step_pages) == 4 for step_pages in pages_seen)
    for i, p in enumerate(batch):
        assert outs[f"r{i}"].cached_tokens == 32
        assert outs[f"r{i}"].token_ids == hf_greedy(hf, p, 32)


def test_eviction_under_memory_pressure_keeps_results_and_invariants(tiny_llama):
    path, hf = tiny_llama
    eng = engine(path, kv_cache_memory=12 * 16 * 2 * 2 * 2 * 16 * 4)   # 12 pages of 16 tokens
    batch = prompts(10, seed=36, low=20, high=70)
    assert sum(len(p) + 32 for p in batch) > 3 * 12 * 16   # far more than fits: pages get evicted
    for i, p in enumerate(batch):
        out = run(eng, [p], GREEDY)["r0"]
        assert out.token_ids == hf_greedy(hf, p, 32), f"prompt {i}"
    assert eng.stats()["free_pages"] == eng.stats()["total_pages"]


def test_lookup_never_covers_the_last_token_and_counts_references():
    s = make(pages=16, page_size=4, budget=64, prefix_caching=True)
    a = add(s, "a", 8, 0)
    step(s)
    b = add(s, "b", 8, 1)              # same 8 tokens: only the first page may be reused
    batch = step(s)
    assert b.num_cached_tokens == 4 and batch.num_new_tokens[-1] == 4
    assert b.pages[0] == a.pages[0] and s.pages.ref_count[a.pages[0]] == 2
    s.finish(a, RequestStatus.FINISHED_STOPPED)
    s.check_invariants()
    assert s.pages.ref_count[b.pages[0]] == 1


# -- hybrid models: pages plus GDN state checkpoints ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_qwen3_next(tmp_path_factory):
    from tests.engine import tiny_configs

    path = tmp_path_factory.mktemp("qwen3_next_prefix")
    return path, tiny_configs.qwen3_next(path)


def test_hybrid_second_turn_resumes_after_the_whole_first_answer(tiny_qwen3_next):
    path, hf = tiny_qwen3_next
    eng = engine(path, page_size=8, checkpoint_interval=16)
    first_turn = prompts(1, seed=41, low=45, high=45)[0]
    first = run(eng, [first_turn], GREEDY)["r0"]
    # 45 + 31 computed tokens: checkpoints at 16, 32, 40 (the prompt's last full page), 48 and 64
    # (every 16), and 72, the end of the generation's last full page (56, the tail before it, is gone)
    assert eng.stats()["checkpoint_slots"] == 6
    second_turn = first_turn + first.token_ids + prompts(1, seed=42, low=10, high=10)[0]
    second = run(eng, [second_turn], GREEDY)["r0"]
    assert second.cached_tokens == (len(first_turn) + len(first.token_ids) - 1) // 8 * 8 == 72
    assert second.token_ids == hf_greedy(hf, second_turn, 32)
    uncached = run(engine(path, page_size=8, enable_prefix_caching=False), [second_turn], GREEDY)["r0"]
    assert uncached.cached_tokens == 0 and uncached.token_ids == second.token_ids
    again = run(eng, [first_turn], GREEDY)["r0"]
    assert again.cached_tokens == 40 and again.token_ids == first.token_ids


def test_hybrid_agent_turns_ending_on_a_stop_token_resume_after_each_answer(tiny_qwen3_next):
    path, hf = tiny_qwen3_next
    eng = engine(path, page_size=8, checkpoint_interval=64)
    conversation = prompts(1, seed=45, low=37, high=37)[0]
    for turn, tool_output in enumerate(prompts(3, seed=46, low=5, high=20)):
        reference = hf_greedy(hf, conversation, 40)
        # the answer ends on a stop token: the first one not generated before, 20 tokens in or later
        end = next(i for i in range(20, 40) if reference[i] not in reference[:i])
        params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, stop_token_ids=[reference[end]])
        answer = run(eng, [conversation], params)["r0"]
        assert answer.finish_reason == "stop" and answer.token_ids == reference[:end + 1], f"turn {turn}"
        miss = run(engine(path, page_size=8, enable_prefix_caching=False), [conversation], params)["r0"]
        assert miss.token_ids == answer.token_ids, f"turn {turn}"
        if turn:
            assert answer.cached_tokens == (previous_computed // 8) * 8, f"turn {turn}"
        previous_computed = len(conversation) + len(answer.token_ids) - 1
        conversation = conversation + answer.token_ids + tool_output


def test_hybrid_chunked_and_preempted_with_checkpoints_match_transformers(tiny_qwen3_next):
    path, hf = tiny_qwen3_next
    batch = prompts(6, seed=43, low=20, high=60)
    shared = prompts(1, seed=44, low=24, high=24)[0]
    batch = [shared + p for p in batch]
    spec = engine(path).model.cache_spec()
    # 20 pages of 8 tokens for 6 requests of up to 116 tokens: preemptions, resumed from checkpoints
    budget = 20 * 8 * spec.bytes_per_token(torch.float32) + 10 * spec.bytes_per_slot(torch.float32)
    eng = engine(path, page_size=8, checkpoint_interval=16, max_num_batched_tokens=24, kv_cache_memory=budget,
                 num_state_slots=10)
    assert eng.stats()["total_pages"] == 20
    outs = run(eng, batch, GREEDY)
    assert eng.stats()["preemptions"] > 0 and eng.stats()["prefix_cache_hits"] > 0
    for i, p in enumerate(batch):
        assert outs[f"r{i}"].token_ids == hf_greedy(hf, p, 32), f"prompt {i}"


def test_chunks_end_at_checkpoints_whose_slots_are_handed_to_the_cache():
    s = make(pages=32, page_size=4, budget=64, slots=6, prefix_caching=True)   # checkpoints every 16 tokens
    r = add(s, "a", 38, 0)
    batch = s.schedule()
    assert batch.num_new_tokens == [16]
    first_slot = r.slot
    s.advance(batch, [None])
    # the state at 16 stays in its slot, now a checkpoint the next chunk reads; the request writes a new one
    assert r.read_slot == first_slot and r.slot != first_slot and s.slots.ref_count[first_slot] == 1
    s.check_invariants()
    batch = s.schedule()
    assert batch.num_new_tokens == [16]
    s.advance(batch, [None])
    assert s.slots.cached_ids() == [first_slot]
    batch = s.schedule()
    assert batch.num_new_tokens == [4]       # 36: the prompt's last full page
    s.advance(batch, [None])
    s.check_invariants()
    b = add(s, "b", 38, 1)
    s.schedule()
    assert s.slots.num_cached == 2           # 16 and 32; 36 is held by r, whose next step reads it, and by b
    assert b.num_cached_tokens == 36 and b.read_slot == r.read_slot and s.slots.ref_count[b.read_slot] == 2
    s.check_invariants()


def _decode_to(s, request, computed: int) -> None:
    while request.num_computed_tokens < computed:
        step(s)


def test_a_finished_generation_leaves_one_checkpoint_at_its_last_full_page():
    s = make(pages=32, page_size=4, budget=64, slots=8, prefix_caching=True)   # checkpoints every 16 tokens
    a = add(s, "a", 10, 0)
    _decode_to(s, a, 30)                      # page boundaries 12, 20, 24, 28 in the answer are tails
    s.finish(a, RequestStatus.FINISHED_STOPPED)
    s.check_invariants()
    keys = [chain_hash(0, a.token_ids[0:4])]
    for page in range(1, 7):
        keys.append(chain_hash(keys[-1], a.token_ids[4 * page:4 * page + 4]))
    kept = [end for end in range(4, 29, 4) if s.slots.find(keys[end // 4 - 1], a.token_ids[end - 4:end]) is not None]
    assert kept == [8, 16, 28] and s.slots.num_cached == 3   # the prompt's last full page, the interval, the end
    b = add(s, "b", 0, 1)
    b.token_ids = b.prompt_token_ids = a.token_ids + [1, 2, 3]
    step(s)
    assert b.num_cached_tokens == 28


def test_a_recomputed_generation_stops_at_its_last_full_page_to_keep_the_tail():
    s = make(pages=32, page_size=4, budget=64, slots=8, prefix_caching=True)
    a = add(s, "a", 10, 0)
    _decode_to(s, a, 21)                      # 22 tokens, tail at 20
    s.preempt("a")
    s.slots.forget(*a.tail_checkpoint)        # as if evicted: the recomputation resumes from 16
    batch = step(s)
    assert a.num_cached_tokens == 0 and batch.num_new_tokens == [4]   # 16 to 20, not to 22
    assert a.tail_checkpoint is not None and s.slots.find(a.tail_checkpoint[1], a.token_ids[16:20]) is not None
    assert step(s).num_new_tokens == [2]
