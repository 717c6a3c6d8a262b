"""The agentic benchmark client: its statistics on hand-made turns, and a tiny run against the
real server whose token counts are checked against the workload it was asked to send."""

import json

import pytest

from tokenyard.engine.server import bench_agentic as bench


def _turn(user, turn, ttft, decode, completion, prompt=100, cached=0):
    return bench.TurnResult(user=user, turn=turn, prompt_tokens=prompt, cached_tokens=cached,
                            completion_tokens=completion, ttft_s=ttft, e2e_s=ttft + decode, decode_s=decode,
                            start_s=0.0, finish_reason="length")


def test_summary_statistics_match_hand_computed_values():
    turns = [
        _turn(0, 0, ttft=1.0, decode=0.9, completion=10, prompt=100, cached=0),    # ITL 0.1 s
        _turn(1, 0, ttft=3.0, decode=1.8, completion=10, prompt=300, cached=150),  # ITL 0.2 s
        _turn(2, 0, ttft=2.0, decode=0.0, completion=1, prompt=100, cached=50),    # no ITL with one token
    ]
    s = bench.summarize(turns, wall_s=30.0)
    assert s["requests"] == 3
    assert s["cached_share"] == pytest.approx(200 / 500)
    assert s["ttft_s"]["mean"] == pytest.approx(2.0)
    assert s["ttft_s"]["p50"] == pytest.approx(2.0)
    assert s["ttft_s"]["p90"] == pytest.approx(2.8)  # linear between 2.0 and 3.0
    assert s["itl_s"]["mean"] == pytest.approx(0.15)
    assert s["per_user_tok_s"]["mean"] == pytest.approx((10 + 5) / 2)
    assert s["aggregate_output_tok_min"] == pytest.approx(21 / 30 * 60)


def test_workload_rejects_impossible_settings():
    with pytest.raises(ValueError, match="users=0"):
        bench.Workload(users=0)
    with pytest.raises(ValueError, match="turns 5-2"):
        bench.Workload(min_turns=5, max_turns=2)


def test_random_text_is_fixed_by_the_seed():
    import random

    assert bench.random_text(random.Random(1), 50) == bench.random_text(random.Random(1), 50)
    assert bench.random_text(random.Random(1), 50) != bench.random_text(random.Random(2), 50)
    assert len(bench.random_text(random.Random(1), 50).split()) == 50


def test_tiny_run_against_the_real_server_sends_the_workload_it_describes(real_server, tmp_path):
    workload = bench.Workload(first_turn_tokens=60, turn_tokens=20, min_turns=1, max_turns=1, output_tokens=3, users=2, seed=5)
    report = bench.run(f"{real_server.url}/v1", None, workload, api_key="test-key", gpus=2)
    assert report["model"] == real_server.model and report["ignore_eos_sent"]
    requests = report["requests"]
    assert [(r["user"], r["turn"]) for r in requests] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in requests:
        assert r["completion_tokens"] == 3  # ignore_eos keeps every answer at O tokens
        assert 0 < r["ttft_s"] <= r["e2e_s"]
        assert 0 <= r["cached_tokens"] <= r["prompt_tokens"]
    for user in (0, 1):
        first, second = (r for r in requests if r["user"] == user)
        assert first["prompt_tokens"] >= 60
        # The second turn resends the first, its answer and 20 new words.
        assert second["prompt_tokens"] >= first["prompt_tokens"] + 3 + 20
    assert report["overall"]["completion_tokens"] == 12
    assert report["overall"]["output_tok_min_per_gpu"] == pytest.approx(report["overall"]["aggregate_output_tok_min"] / 2)
    assert [row["requests"] for row in report["per_turn"]] == [2, 2]

    json_path, png_path = bench.write_outputs(report, tmp_path)
    assert json.loads(json_path.read_text())["overall"]["requests"] == 4
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "aggregate:" in bench.format_report(report)


def test_a_server_that_refuses_ignore_eos_is_benchmarked_without_it():
    """Another engine (OpenAI itself, say) answers ignore_eos with a 400: the client drops it."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    from tokenyard.engine.server.launch import ServerThread

    app = FastAPI()
    seen = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "other", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(body)
        if "ignore_eos" in body:
            return JSONResponse({"error": {"message": "Unrecognized request argument supplied: ignore_eos"}}, 400)
        prompt = sum(len(m["content"].split()) for m in body["messages"])

        async def events():
            for word in ["a", " b", " c"]:
                yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}) + "\n\n"
            usage = {"prompt_tokens": prompt, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": prompt // 2}}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    workload = bench.Workload(first_turn_tokens=10, turn_tokens=5, min_turns=1, max_turns=1, output_tokens=3, users=1)
    with ServerThread(app) as server:
        report = bench.run(f"{server.url}/v1", None, workload)
    assert report["model"] == "other" and not report["ignore_eos_sent"]
    assert [("ignore_eos" in body) for body in seen] == [True, False, False]
    first, second = report["requests"]
    assert (first["prompt_tokens"], first["completion_tokens"]) == (12, 3)  # "User 0." + 10 words
    # The second turn resends the first turn, the answer "a b c" and 5 new words.
    assert second["prompt_tokens"] == 12 + 3 + 5
    assert report["overall"]["cached_share"] == pytest.approx((6 + 10) / (12 + 20))
