"""The real server on the real engine (SmolLM2-135M-Instruct on the CPU), driven by the official
openai client: non-streaming and streaming chat and completions, usage, logprobs, stop strings,
seeds, tools, tokenize/detokenize and the Prometheus counters.

Outputs are short (a few tokens) and greedy unless a test is about sampling; the reference for
each property is independent of the server: the engine's own tokenizer and chat template, a
non-streamed answer for a streamed one, the same request run twice.
"""

import httpx
import pytest

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(real_server):
    return real_server.openai()


def _chat(real_server, client, **kwargs):
    args = {"model": real_server.model, "messages": MESSAGES, "max_tokens": 4, "temperature": 0.0} | kwargs
    return client.chat.completions.create(**args)


def test_models_lists_the_served_model_with_its_context_length(real_server, client):
    [model] = client.models.list().data
    assert model.id == real_server.model
    assert model.model_extra["max_model_len"] == 1024


def test_chat_completion_counts_tokens_like_the_chat_template(real_server, client):
    response = _chat(real_server, client)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    expected_prompt = len(real_server.engine.apply_chat_template(MESSAGES))
    assert response.usage.prompt_tokens == expected_prompt
    assert response.usage.total_tokens == expected_prompt + response.usage.completion_tokens
    if choice.finish_reason == "length":
        assert response.usage.completion_tokens == 4
    cached = response.usage.prompt_tokens_details.cached_tokens
    assert isinstance(cached, int) and 0 <= cached <= expected_prompt


def test_streamed_chat_says_what_the_unstreamed_one_says_and_ends_with_usage(real_server, client):
    full = _chat(real_server, client, max_tokens=6)
    chunks = list(_chat(real_server, client, max_tokens=6, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens is not None
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_from_text_and_from_token_ids_agree_streamed_or_not(real_server, client):
    prompt = "The quick brown fox"
    ids = real_server.engine.tokenizer.encode(prompt)
    by_text = client.completions.create(model=real_server.model, prompt=prompt, max_tokens=5, temperature=0)
    by_ids = client.completions.create(model=real_server.model, prompt=ids, max_tokens=5, temperature=0)
    streamed = client.completions.create(model=real_server.model, prompt=prompt, max_tokens=5, temperature=0,
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert by_text.choices[0].text == by_ids.choices[0].text
    assert "".join(c.choices[0].text for c in chunks if c.choices) == by_text.choices[0].text
    assert by_text.usage.prompt_tokens == len(ids)
    assert chunks[-1].usage.completion_tokens == by_text.usage.completion_tokens


def test_batched_completion_prompts_get_one_choice_each(real_server, client):
    response = client.completions.create(model=real_server.model, prompt=["Hello", "One two three"], max_tokens=2, temperature=0)
    assert [c.index for c in response.choices] == [0, 1]
    single = client.completions.create(model=real_server.model, prompt="One two three", max_tokens=2, temperature=0)
    assert response.choices[1].text == single.choices[0].text


def test_chat_logprobs_rank_the_greedy_token_first(real_server, client):
    response = _chat(real_server, client, max_tokens=3, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0.0
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs))
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert "".join(e.token for e in content) == response.choices[0].message.content


def test_streamed_logprobs_are_the_unstreamed_ones(real_server, client):
    full = _chat(real_server, client, max_tokens=4, logprobs=True, top_logprobs=2).choices[0].logprobs.content
    streamed = [entry for chunk in _chat(real_server, client, max_tokens=4, logprobs=True, top_logprobs=2, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in full]
    # The second run reads the prompt's keys from the prefix cache: equal up to float rounding.
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in full], abs=1e-3)


def test_completion_logprobs_list_each_token_with_its_top_alternatives(real_server, client):
    response = client.completions.create(model=real_server.model, prompt="One, two, three,", max_tokens=3,
                                         temperature=0, logprobs=2)
    logprobs = response.choices[0].logprobs
    assert "".join(logprobs.tokens) == response.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.top_logprobs)
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert len(top) == 2 and top[token] == logprob == max(top.values())


def test_stop_string_cuts_the_answer_before_it(real_server, client):
    full = _chat(real_server, client, max_tokens=8).choices[0].message.content
    word = full.split()[1]
    stopped = _chat(real_server, client, max_tokens=8, stop=[word]).choices[0]
    assert stopped.finish_reason == "stop"
    assert stopped.message.content == full[: full.index(word)]


def test_same_seed_same_sample(real_server, client):
    a = _chat(real_server, client, temperature=1.0, seed=7, max_tokens=6)
    b = _chat(real_server, client, temperature=1.0, seed=7, max_tokens=6)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_n_choices_with_a_seed_are_reproducible(real_server, client):
    a = _chat(real_server, client, temperature=1.0, seed=3, n=2, max_tokens=4)
    b = _chat(real_server, client, temperature=1.0, seed=3, n=2, max_tokens=4)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert 2 <= a.usage.completion_tokens <= 8


def test_tools_are_accepted_and_the_answer_is_text_or_calls(real_server, client):
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]
    for tool_choice in ("auto", "required", {"type": "function", "function": {"name": "get_time"}}):
        response = _chat(real_server, client, tools=tools, tool_choice=tool_choice, max_tokens=8)
        message = response.choices[0].message
        assert message.tool_calls or message.content
        for call in message.tool_calls or []:
            assert call.function.name == "get_time"


def test_tokenize_and_detokenize_round_trip(real_server):
    headers = real_server.headers()
    tokens = httpx.post(f"{real_server.url}/tokenize", json={"prompt": "Hello world"}, headers=headers).json()
    assert tokens["tokens"] == real_server.engine.tokenizer.encode("Hello world")
    assert tokens["count"] == len(tokens["tokens"]) and tokens["max_model_len"] == 1024
    chat = httpx.post(f"{real_server.url}/tokenize", json={"messages": MESSAGES}, headers=headers).json()
    assert chat["tokens"] == real_server.engine.apply_chat_template(MESSAGES)
    text = httpx.post(f"{real_server.url}/detokenize", json={"tokens": tokens["tokens"]}, headers=headers).json()
    assert text["prompt"].endswith("Hello world")


def test_metrics_counters_move_with_a_request(real_server, client):
    names = [
        "tokenyard:prompt_tokens_total", "tokenyard:generation_tokens_total",
        "tokenyard:request_success_total", "tokenyard:time_to_first_token_seconds_count",
        "tokenyard:e2e_request_latency_seconds_count", "tokenyard:prefix_cache_queries_total",
        "tokenyard:inter_token_latency_seconds_count",
    ]
    real_server.wait_idle()
    before = {n: real_server.metric(n) for n in names}
    response = _chat(real_server, client, max_tokens=3, extra_body={"ignore_eos": True})
    after = {n: real_server.metric(n) for n in names}
    usage = response.usage
    assert usage.completion_tokens == 3
    assert after["tokenyard:prompt_tokens_total"] - before["tokenyard:prompt_tokens_total"] == usage.prompt_tokens
    assert after["tokenyard:generation_tokens_total"] - before["tokenyard:generation_tokens_total"] == 3
    assert after["tokenyard:prefix_cache_queries_total"] - before["tokenyard:prefix_cache_queries_total"] == usage.prompt_tokens
    assert after["tokenyard:inter_token_latency_seconds_count"] - before["tokenyard:inter_token_latency_seconds_count"] == 2
    for name in ("tokenyard:request_success_total", "tokenyard:time_to_first_token_seconds_count",
                 "tokenyard:e2e_request_latency_seconds_count"):
        assert after[name] - before[name] == 1, name
    text = httpx.get(f"{real_server.url}/metrics").text
    for gauge in ("tokenyard:num_requests_running", "tokenyard:num_requests_waiting", "tokenyard:num_preemptions_total"):
        assert gauge in text


def test_a_repeated_prompt_is_served_from_the_prefix_cache_and_usage_says_so(real_server, client):
    messages = [{"role": "user", "content": "Here is a long note about caching. " * 12 + "Summarise it."}]
    first = _chat(real_server, client, messages=messages, max_tokens=2)
    hits_before = real_server.metric("tokenyard:prefix_cache_hits_total")
    second = _chat(real_server, client, messages=messages, max_tokens=2)
    hits_after = real_server.metric("tokenyard:prefix_cache_hits_total")
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert second.usage.prompt_tokens == first.usage.prompt_tokens > 100
    assert 0 < cached < second.usage.prompt_tokens
    assert hits_after - hits_before == cached
    assert second.choices[0].message.content == first.choices[0].message.content


def test_health_is_ok_while_the_loop_runs(real_server):
    assert httpx.get(f"{real_server.url}/health").json() == {"status": "ok"}
