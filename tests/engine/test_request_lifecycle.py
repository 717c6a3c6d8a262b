"""The request state machine, the scheduler's memory ownership, and what ends a request:
illegal transitions raise, abort frees everything wherever the request is, stop strings, stop
token ids, max_tokens, ignore_eos, seeded sampling, bad requests rejected without side effects."""

from __future__ import annotations

import pytest

from tests.engine.conftest import engine, run
from tests.engine.test_dense_vs_transformers import GREEDY, prompts
from tokenyard.engine import SamplingParams
from tokenyard.engine.scheduler.request import TRANSITIONS, IllegalTransition, Request, RequestStatus as S

LEGAL = {
    S.WAITING: {S.PREFILLING, S.FINISHED_ABORTED, S.FINISHED_ERROR},
    S.PREFILLING: {S.DECODING, S.PREEMPTED, S.FINISHED_STOPPED, S.FINISHED_LENGTH, S.FINISHED_ABORTED, S.FINISHED_ERROR},
    S.DECODING: {S.PREEMPTED, S.FINISHED_STOPPED, S.FINISHED_LENGTH, S.FINISHED_ABORTED, S.FINISHED_ERROR},
    S.PREEMPTED: {S.WAITING, S.FINISHED_ABORTED, S.FINISHED_ERROR},
}


@pytest.mark.parametrize("start", list(S))
@pytest.mark.parametrize("end", list(S))
def test_transition_allowed_exactly_when_design_says(start, end):
    request = Request("r", [1, 2], SamplingParams(), 0)
    request.status = start
    if end in LEGAL.get(start, set()):
        request.transition(end)
        assert request.status is end
    else:
        with pytest.raises(IllegalTransition, match=f"{start.name} -> {end.name}"):
            request.transition(end)
        assert request.status is start
    assert set(TRANSITIONS[start]) == LEGAL.get(start, set())


def _stepped_until(eng, predicate, limit=200):
    for _ in range(limit):
        if predicate():
            return
        eng.step()
    raise AssertionError("condition never reached")


@pytest.mark.parametrize("where", ["waiting", "prefilling", "decoding"])
def test_abort_anywhere_frees_everything(tiny_llama, where):
    path, _ = tiny_llama
    eng = engine(path, max_num_batched_tokens=16, max_num_seqs=2)
    for i, p in enumerate(prompts(3, seed=11, low=40, high=40)):
        eng.add_request(f"r{i}", p, GREEDY)
    target = {"waiting": "r2", "prefilling": "r0", "decoding": "r0"}[where]
    status = {"waiting": S.WAITING, "prefilling": S.PREFILLING, "decoding": S.DECODING}[where]
    if where != "waiting":
        _stepped_until(eng, lambda: eng.scheduler.requests["r0"].status is status)
    assert eng.scheduler.requests[target].status is status
    assert eng.abort_request(target)
    assert not eng.abort_request(target)
    eng.check_invariants()
    outs = [o for o in eng.step() if o.request_id == target]
    assert len(outs) == 1 and outs[0].finished and outs[0].finish_reason == "abort"
    for rid in list(eng.scheduler.requests):
        eng.abort_request(rid)
    eng.step()
    stats = eng.stats()
    assert stats["free_pages"] == stats["total_pages"] and stats["running"] == stats["waiting"] == 0
    assert not eng.has_unfinished_requests()


def test_model_error_finishes_batch_with_error_and_frees(tiny_llama, monkeypatch):
    path, _ = tiny_llama
    eng = engine(path)
    eng.add_request("r0", [1, 2, 3], GREEDY)

    def boom(batch, caches):
        raise RuntimeError("device lost")

    monkeypatch.setattr(eng.model, "forward", boom)
    (out,) = eng.step()
    assert out.finished and out.finish_reason == "error" and "device lost" in out.error
    stats = eng.stats()
    assert stats["free_pages"] == stats["total_pages"] and not eng.has_unfinished_requests()


def test_stop_token_ids_end_the_request_at_the_first_occurrence(tiny_llama):
    path, _ = tiny_llama
    prompt = prompts(1, seed=12)[0]
    free = run(engine(path), [prompt], GREEDY)["r0"].token_ids
    stop_at = free[10]
    first = free.index(stop_at)
    out = run(engine(path), [prompt], SamplingParams(max_tokens=32, temperature=0, stop_token_ids=[stop_at]))["r0"]
    assert out.token_ids == free[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_at


def test_eos_stops_unless_ignore_eos(tiny_llama):
    path, _ = tiny_llama
    eng = engine(path)
    prompt = prompts(1, seed=13)[0]
    free = run(eng, [prompt], GREEDY)["r0"].token_ids
    eng.eos_token_ids = [free[5]]
    stopped = run(eng, [prompt], SamplingParams(max_tokens=32, temperature=0))["r0"]
    assert stopped.token_ids == free[:free.index(free[5]) + 1] and stopped.finish_reason == "stop"
    ignored = run(eng, [prompt], SamplingParams(max_tokens=32, temperature=0, ignore_eos=True))["r0"]
    assert ignored.token_ids == free and ignored.finish_reason == "length"


def test_stop_string_cuts_text_and_streamed_text_adds_up(tiny_llama):
    path, _ = tiny_llama
    eng = engine(path)
    prompt = prompts(1, seed=14)[0]
    free = run(eng, [prompt], GREEDY)["r0"]
    text = free.text
    stop = text[12:15]
    assert len(stop) == 3 and stop not in text[:12]
    eng.add_request("s", prompt, SamplingParams(max_tokens=32, temperature=0, stop=[stop, "\x00never"]))
    streamed, final = "", None
    while eng.has_unfinished_requests():
        for out in eng.step():
            streamed += out.new_text
            final = out
    assert final.text == text[:12] == streamed
    assert final.finish_reason == "stop" and final.stop_reason == stop


def test_max_tokens_gives_length(tiny_llama):
    path, _ = tiny_llama
    out = run(engine(path), [[5, 6, 7]], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))["r0"]
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


def test_seeded_sampling_reproducible_alone_and_in_a_batch(tiny_llama):
    path, _ = tiny_llama
    batch = prompts(4, seed=15)
    params = [SamplingParams(max_tokens=24, temperature=1.0, top_k=50, top_p=0.9, min_p=0.01, seed=100 + i,
                             ignore_eos=True) for i in range(4)]
    together = run(engine(path), batch, params)
    alone = run(engine(path), [batch[2]], [params[2]])
    again = run(engine(path), batch, params)
    assert alone["r0"].token_ids == together["r2"].token_ids
    assert all(again[f"r{i}"].token_ids == together[f"r{i}"].token_ids for i in range(4))
    other = run(engine(path), [batch[2]], [SamplingParams(max_tokens=24, temperature=1.0, seed=7, ignore_eos=True)])
    assert other["r0"].token_ids != alone["r0"].token_ids


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=-0.5), "temperature"), (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(min_p=2.0), "min_p"), (dict(max_tokens=0), "max_tokens"), (dict(stop=[""]), "stop"),
    (dict(logprobs=-1), "logprobs"), (dict(stop_token_ids=[-3]), "stop_token_ids"), (dict(seed=1.5), "seed"),
])
def test_sampling_params_errors_name_the_field_and_value(kwargs, field):
    with pytest.raises(ValueError, match=f"SamplingParams.{field}="):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("prompt, params, match", [
    ([], None, "prompt_token_ids"),
    ([1, 2, 99999], None, "prompt_token_ids"),
    ([1] * 600, None, "max_model_len"),
    ([1, 2], "greedy", "params"),
])
def test_bad_request_raises_and_changes_nothing(tiny_llama, prompt, params, match):
    path, _ = tiny_llama
    eng = engine(path)
    before = eng.stats()
    with pytest.raises(ValueError, match=match):
        eng.add_request("bad", prompt, params)
    assert eng.stats() == before and not eng.has_unfinished_requests()
    eng.add_request("ok", [1, 2], GREEDY)
    with pytest.raises(ValueError, match="request_id"):
        eng.add_request("ok", [1, 2], GREEDY)
    assert eng.stats()["waiting"] == 1
