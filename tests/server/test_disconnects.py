"""Clients that go away: 50 concurrent requests on the real engine, most of them dropped at random
points (before the first token, after a few chunks, a non-streamed request timing out). Afterwards
the engine holds no request and no page, and the server still answers.
"""

import asyncio
import json
import random

import httpx

MAX_TOKENS = 12


async def _complete_stream(client, body):
    tokens, done = 0, False
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                chunk = json.loads(line[6:])
                assert "error" not in chunk, chunk
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    assert done
    return tokens


async def _drop_after(client, body, chunks):
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if seen >= chunks:
                    break  # leaving the block closes the connection mid-stream


async def _one(client, i: int, rng: random.Random) -> str:
    mode = rng.choice(["complete", "drop_after_chunks", "drop_after_chunks", "drop_at_once", "non_streamed_timeout"])
    body = {
        "messages": [{"role": "user", "content": f"Please count from {i} to {i + 50}."}],
        "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True,
        "stream": True, "stream_options": {"include_usage": True},
    }
    if mode == "complete":
        assert await _complete_stream(client, body) == MAX_TOKENS
    elif mode == "drop_after_chunks":
        await _drop_after(client, body, rng.randint(1, 4))
    elif mode == "drop_at_once":
        try:
            await asyncio.wait_for(_complete_stream(client, body), timeout=rng.uniform(0.01, 0.3))
        except asyncio.TimeoutError:
            pass
    else:
        body = body | {"stream": False}
        body.pop("stream_options")
        try:
            await client.post("/v1/chat/completions", json=body, timeout=rng.uniform(0.2, 1.0))
        except httpx.TimeoutException:
            pass
    return mode


def test_fifty_streams_with_random_disconnects_leave_no_request_and_no_page(real_server):
    aborts_before = _aborts(real_server)

    async def main():
        limits = httpx.Limits(max_connections=60)
        async with httpx.AsyncClient(base_url=real_server.url, headers=real_server.headers(), limits=limits,
                                     timeout=httpx.Timeout(180.0)) as client:
            rng = random.Random(1234)
            return await asyncio.gather(*(_one(client, i, random.Random(rng.random())) for i in range(50)))

    modes = asyncio.run(main())
    assert len(modes) == 50 and "complete" in modes and len(set(modes)) == 4

    real_server.wait_idle()
    stats = real_server.engine.stats()
    assert stats["running"] == 0 and stats["waiting"] == 0
    assert stats["free_pages"] == stats["total_pages"]
    assert stats["free_slots"] == stats["total_slots"]
    assert real_server.engine.scheduler.requests == {}
    real_server.engine.check_invariants()
    assert real_server.state.loop._streams == {}, "the server forgot to drop a finished stream"
    assert _aborts(real_server) > aborts_before, "no request was aborted: the test did not disconnect anything"

    again = real_server.openai().chat.completions.create(
        model=real_server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0)
    assert again.choices[0].message.content


def _aborts(real_server) -> float:
    text = httpx.get(f"{real_server.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("tokenyard:request_success_total{") and 'finished_reason="abort"' in line)
