"""The batch planner alone (no model): budget, decodes before prefill chunks, chunking,
max_num_seqs, preemption of the most recent request, and the memory invariant throughout."""

from __future__ import annotations

from tokenyard.engine.cache import PrefixPool, num_pages_for_budget
from tokenyard.engine.models.base import CacheSpec
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.scheduler.request import Request, RequestStatus as S
from tokenyard.engine.scheduler.scheduler import Scheduler


def make(pages=64, page_size=4, budget=16, max_seqs=8, slots=None, prefix_caching=False):
    return Scheduler(PrefixPool("page", pages), PrefixPool("slot", slots) if slots else None, page_size, budget,
                     max_seqs, prefix_caching, checkpoint_interval=4 * page_size)


def add(s, rid, n, arrival):
    r = Request(rid, list(range(n)), SamplingParams(), arrival)
    s.add(r)
    return r


def step(s):
    batch = s.schedule()
    s.advance(batch, [7 if batch.samples(i) else None for i in range(len(batch.requests))])
    s.check_invariants()
    return batch


def test_long_prompt_is_chunked_under_the_token_budget():
    s = make(budget=16)
    r = add(s, "a", 40, 0)
    sizes = [step(s).num_new_tokens for _ in range(3)]
    assert sizes == [[16], [16], [8]]
    assert r.status is S.DECODING and r.num_output_tokens == 1 and len(r.pages) == 10


def test_decodes_come_first_then_prefill_chunks_fill_the_budget():
    s = make(budget=16)
    a, b = add(s, "a", 5, 0), add(s, "b", 5, 1)
    step(s)
    c = add(s, "c", 30, 2)
    batch = step(s)
    assert batch.requests == [a, b, c] and batch.num_new_tokens == [1, 1, 14]
    assert batch.num_tokens == 16


def test_max_num_seqs_caps_the_running_set():
    s = make(max_seqs=2)
    for i in range(3):
        add(s, f"r{i}", 3, i)
    step(s)
    assert [r.request_id for r in s.running] == ["r0", "r1"] and len(s.waiting) == 1


def test_out_of_pages_preempts_the_most_recent_and_it_resumes_first():
    s = make(pages=4, page_size=4, budget=64)
    a, b = add(s, "a", 8, 0), add(s, "b", 8, 1)
    step(s)                            # both prefilled: 4 pages in use, none free
    batch = step(s)                    # a needs a 3rd page: b (latest) is preempted
    assert batch.preempted == [b] and b.status is S.WAITING and b.num_computed_tokens == 0
    assert s.waiting[0] is b and s.num_preemptions == 1 and b.pages == [] and batch.requests == [a]
    s.finish(a, S.FINISHED_STOPPED)
    s.check_invariants()
    batch = step(s)
    assert batch.requests == [b] and batch.num_new_tokens == [9]   # prompt + its generated token, recomputed


def test_slots_are_owned_per_request_and_returned():
    s = make(slots=2)
    for i in range(3):
        add(s, f"r{i}", 3, i)
    step(s)
    assert s.slots.num_free == 0 and len(s.running) == 2 and len(s.waiting) == 1
    s.finish(s.requests["r0"], S.FINISHED_ABORTED)
    s.check_invariants()
    step(s)
    assert sorted(r.slot for r in s.running) == [0, 1]


def test_page_count_follows_the_budget():
    spec = CacheSpec(num_attention_layers=2, num_kv_heads=2, head_dim=8, num_gdn_layers=1, conv_channels=4,
                     conv_width=4, gdn_num_v_heads=2, gdn_k_dim=8, gdn_v_dim=8)
    page_bytes = 16 * 2 * 2 * (8 + 8) * 4
    slot_bytes = 4 * 3 * 4 + 2 * 8 * 8 * 4
    import torch
    assert num_pages_for_budget(spec, torch.float32, 16, 3, 10 * page_bytes + 3 * slot_bytes) == 10
