"""The HTTP layer with a scripted "model" (tests/server/scripted_engine.py): tool calls a small
real model would not write, driven through the official openai client, complete and streamed;
replayed tool calls rendered by Qwen3's real chat template; a dying engine loop.
"""

import json
import time

import httpx
import openai
import pytest

from scripted_engine import ScriptedEngine, qwen_tokenizer
from tokenyard.engine.server.app import build_app
from tokenyard.engine.server.launch import ServerThread
from tokenyard.engine.server.tool_parsers import get_tool_parser

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "hourly": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}
HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n</tool_call>'
XML_CALL = (
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
    "<parameter=days>\n2\n</parameter>\n<parameter=hourly>\ntrue\n</parameter>\n</function>\n</tool_call>"
)

# What the scripted model answers, keyed by a word in the last user message.
ANSWERS = {
    "weather": "Let me look that up.\n" + HERMES_CALL,
    "xmlweather": XML_CALL,
    "twice": HERMES_CALL + "\n" + HERMES_CALL.replace("Paris", "Oslo"),
    "broken": '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>',
    "json": '{"answer": 42}',
    "notjson": "forty-two",
    "named": '{"city": "Lima"}}\n</tool_call>',
    "crash": "never sent",
}


def answer(prompt: str) -> str:
    if prompt.endswith('{"name": "get_weather", "arguments": '):
        return ANSWERS["named"]
    last_user = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>")[0]
    for word in sorted(ANSWERS, key=len, reverse=True):
        if word in last_user.split():
            return ANSWERS[word]
    return "Hello! How can I help?"


def _start(tokenizer, parser_name):
    engine = ScriptedEngine(tokenizer, answer, fail_on="crash", refuse_on="refuse")
    server = ServerThread(build_app(engine, "scripted", 4096, tool_parser=get_tool_parser(parser_name))).start()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    return engine, server, client


@pytest.fixture(scope="module")
def hermes(qwen_tokenizer_dir):
    engine, server, client = _start(qwen_tokenizer(qwen_tokenizer_dir), "hermes")
    yield engine, server, client
    server.stop()


def _ask(client, text, stream=False, **kwargs):
    return client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": text}], stream=stream, **kwargs
    )


def _collect_stream(chunks):
    """Content, tool calls (accumulated by index, as a client does) and finish reason of a stream."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def test_tool_call_comes_back_as_tool_calls_with_the_text_before_it_as_content(hermes):
    _, _, client = hermes
    response = _ask(client, "weather in Paris?", tools=[WEATHER_TOOL])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look that up.\n"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris", "days": 2})


def test_streamed_tool_call_deltas_accumulate_to_the_same_calls(hermes):
    _, _, client = hermes
    content, calls, finish = _collect_stream(_ask(client, "twice please", stream=True, tools=[WEATHER_TOOL]))
    assert finish == "tool_calls"
    assert content.strip() == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 2}),
        ("get_weather", {"city": "Oslo", "days": 2}),
    ]
    assert all(c["id"].startswith("call_") for c in calls)


def test_parallel_tool_calls_false_keeps_only_the_first_call(hermes):
    _, _, client = hermes
    response = _ask(client, "twice", tools=[WEATHER_TOOL], parallel_tool_calls=False)
    assert [json.loads(c.function.arguments)["city"] for c in response.choices[0].message.tool_calls] == ["Paris"]


def test_malformed_tool_call_is_returned_as_text(hermes):
    _, _, client = hermes
    response = _ask(client, "broken", tools=[WEATHER_TOOL])
    assert response.choices[0].finish_reason == "stop"
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].message.content == ANSWERS["broken"]
    content, calls, finish = _collect_stream(_ask(client, "broken", stream=True, tools=[WEATHER_TOOL]))
    assert (content, calls, finish) == (ANSWERS["broken"], [], "stop")


def test_tool_choice_none_leaves_tools_out_of_the_prompt_and_parses_nothing(hermes):
    engine, _, client = hermes
    response = _ask(client, "weather", tools=[WEATHER_TOOL], tool_choice="none")
    assert "# Tools" not in engine.prompts[-1]
    assert response.choices[0].message.content == ANSWERS["weather"]
    assert response.choices[0].message.tool_calls is None


def test_named_tool_choice_starts_the_call_in_the_prompt(hermes):
    engine, _, client = hermes
    response = _ask(
        client, "anything", tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert engine.prompts[-1].endswith('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ')
    [call] = response.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Lima"}


def test_replayed_tool_calls_and_tool_results_are_rendered_by_the_chat_template(hermes):
    engine, _, client = hermes
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL])
    prompt = engine.prompts[-1]
    # Hand-written from Qwen3's chat template.
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' in prompt
    assert prompt.endswith(
        "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_kwargs_reach_the_template(hermes):
    engine, server, client = hermes
    _ask(client, "hello", extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    _ask(client, "hello")
    assert engine.prompts[-1].endswith("<|im_start|>assistant\n")
    refused = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hello"}], "chat_template_kwargs": {"tools": []}})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "chat_template_kwargs"


def test_n_choices_each_get_an_answer(hermes):
    engine, _, client = hermes
    response = _ask(client, "hello", n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.message.content == "Hello! How can I help?" for c in response.choices)
    answer_tokens = len(engine.tokenizer.encode("Hello! How can I help?", add_special_tokens=False))
    assert response.usage.completion_tokens == 3 * answer_tokens
    assert response.usage.prompt_tokens_details.cached_tokens == 0


def test_n_streamed_choices_each_carry_their_index_and_finish(hermes):
    _, _, client = hermes
    texts, finishes = {}, {}
    for chunk in _ask(client, "hello", stream=True, n=2):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "Hello! How can I help?", 1: "Hello! How can I help?"}
    assert finishes == {0: "stop", 1: "stop"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_the_engine_refuses_is_a_400_and_its_admitted_siblings_are_aborted(hermes, stream):
    engine, server, _ = hermes
    body = {"messages": [{"role": "user", "content": "refuse"}], "n": 2, "stream": stream}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "prompt_token_ids: refused by the scripted engine"
    for _ in range(200):  # the abort of choice 0 is queued to the engine thread
        if not engine.requests:
            break
        time.sleep(0.01)
    assert engine.requests == {}


def test_json_object_response_format_is_validated(hermes):
    _, server, client = hermes
    response = _ask(client, "json", response_format={"type": "json_object"})
    assert json.loads(response.choices[0].message.content) == {"answer": 42}
    raw = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "notjson"}], "response_format": {"type": "json_object"}})
    assert raw.status_code == 500
    assert raw.json()["error"]["code"] == "invalid_json_output"


def test_xml_tool_calls_are_typed_by_the_tool_schema(qwen_tokenizer_dir):
    _, server, client = _start(qwen_tokenizer(qwen_tokenizer_dir), "qwen3_xml")
    try:
        expected = [("get_weather", {"city": "Paris", "days": 2, "hourly": True})]
        response = _ask(client, "xmlweather", tools=[WEATHER_TOOL])
        calls = response.choices[0].message.tool_calls
        assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == expected
        _, streamed, finish = _collect_stream(_ask(client, "xmlweather", stream=True, tools=[WEATHER_TOOL]))
        assert [(c["name"], json.loads(c["arguments"])) for c in streamed] == expected and finish == "tool_calls"
    finally:
        server.stop()


def test_a_dying_engine_loop_fails_open_requests_and_health_turns_503(qwen_tokenizer_dir):
    _, server, client = _start(qwen_tokenizer(qwen_tokenizer_dir), "hermes")
    try:
        assert httpx.get(f"{server.url}/health").status_code == 200
        with pytest.raises(openai.InternalServerError):
            _ask(client, "crash")
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["error"]["code"] == "engine_dead"
        with pytest.raises(openai.APIStatusError) as refused:
            _ask(client, "hello")
        assert refused.value.status_code == 503
    finally:
        server.stop()


def test_an_unexpected_server_error_is_a_500_with_an_openai_error_body(qwen_tokenizer_dir):
    tokenizer = qwen_tokenizer(qwen_tokenizer_dir)
    engine, server, _ = _start(tokenizer, "hermes")
    try:
        def broken(*args, **kwargs):
            raise RuntimeError("tokenizer exploded")

        tokenizer.encode = broken
        response = httpx.post(f"{server.url}/tokenize", json={"prompt": "hello"})
        assert response.status_code == 500
        assert response.json()["error"] == {
            "message": "RuntimeError: tokenizer exploded", "type": "server_error", "param": None, "code": None,
        }
        assert httpx.get(f"{server.url}/health").status_code == 200
    finally:
        server.stop()
