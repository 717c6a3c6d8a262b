"""Bad requests over raw HTTP: each gets the right 4xx with an OpenAI-style error body, and none
of them reaches the engine (a spy on `add_request` counts the calls that get through).
"""

import httpx
import pytest

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def spy(real_server):
    """Counts add_request calls; the engine loop looks the method up on every call."""
    engine = real_server.engine
    calls = []
    original = engine.add_request

    def add_request(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("request_id"))
        return original(*args, **kwargs)

    engine.add_request = add_request
    yield calls
    del engine.add_request


LONG = " ".join(["word"] * 1500)  # more tokens than max_model_len=1024

CASES = [
    # (title, method, path, raw body or json, expected status, expected param or None, expected code or None)
    ("malformed JSON", CHAT, b'{"messages": [', 400, None, None),
    ("body is not an object", CHAT, [1, 2], 400, None, None),
    ("messages missing", CHAT, {"model": None}, 400, "messages", None),
    ("empty messages", CHAT, {"messages": []}, 400, "messages", None),
    ("unknown role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages", None),
    ("content of the wrong type", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages", None),
    ("user message without content", CHAT, {"messages": [{"role": "user"}]}, 400, "messages", None),
    ("tool message without tool_call_id", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400, "messages", None),
    ("temperature of the wrong type", CHAT, {"messages": OK_MESSAGES, "temperature": "hot"}, 400, "temperature", None),
    ("temperature out of range", CHAT, {"messages": OK_MESSAGES, "temperature": 7}, 400, "temperature", None),
    ("top_p of 0", CHAT, {"messages": OK_MESSAGES, "top_p": 0}, 400, "top_p", None),
    ("unknown top-level field", CHAT, {"messages": OK_MESSAGES, "max_token": 5}, 400, "max_token", None),
    ("negative max_tokens", CHAT, {"messages": OK_MESSAGES, "max_tokens": -1}, 400, "max_tokens", None),
    ("zero max_completion_tokens", CHAT, {"messages": OK_MESSAGES, "max_completion_tokens": 0}, 400, "max_completion_tokens", None),
    ("absurd max_tokens", CHAT, {"messages": OK_MESSAGES, "max_tokens": 10**12}, 400, "max_tokens", "context_length_exceeded"),
    ("max_tokens as text", CHAT, {"messages": OK_MESSAGES, "max_tokens": "many"}, 400, "max_tokens", None),
    ("prompt over the context length", CHAT, {"messages": [{"role": "user", "content": LONG}]}, 400, None, "context_length_exceeded"),
    ("n of 0", CHAT, {"messages": OK_MESSAGES, "n": 0}, 400, "n", None),
    ("top_logprobs without logprobs", CHAT, {"messages": OK_MESSAGES, "top_logprobs": 2}, 400, None, None),
    ("tool_choice required without tools", CHAT, {"messages": OK_MESSAGES, "tool_choice": "required"}, 400, None, None),
    ("named tool that is not in tools", CHAT, {
        "messages": OK_MESSAGES, "tools": [{"type": "function", "function": {"name": "a"}}],
        "tool_choice": {"type": "function", "function": {"name": "b"}}}, 400, None, None),
    ("empty stop string", CHAT, {"messages": OK_MESSAGES, "stop": [""]}, 400, "stop", None),
    ("unsupported penalty", CHAT, {"messages": OK_MESSAGES, "presence_penalty": 0.5}, 400, "presence_penalty", None),
    ("unknown model", CHAT, {"messages": OK_MESSAGES, "model": "gpt-17"}, 404, "model", "model_not_found"),
    ("empty prompt", COMPLETIONS, {"prompt": ""}, 400, "prompt", None),
    ("token id outside the vocabulary", COMPLETIONS, {"prompt": [1, 2, 10**9]}, 400, "prompt", None),
    ("mixed prompt list", COMPLETIONS, {"prompt": ["a", 1]}, 400, "prompt", None),
    ("echo", COMPLETIONS, {"prompt": "a", "echo": True}, 400, "echo", None),
    ("completion prompt over the context length", COMPLETIONS, {"prompt": LONG}, 400, None, "context_length_exceeded"),
    ("negative completion max_tokens", COMPLETIONS, {"prompt": "a", "max_tokens": -5}, 400, "max_tokens", None),
]


def _post(real_server, path, body, headers=None):
    headers = real_server.headers() | (headers or {})
    if isinstance(body, bytes):
        return httpx.post(real_server.url + path, content=body, headers=headers | {"Content-Type": "application/json"})
    return httpx.post(real_server.url + path, json=body, headers=headers)


def _check_error_body(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.mark.parametrize("title,path,body,status,param,code", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_an_openai_error_and_never_reaches_the_engine(real_server, spy, title, path, body, status, param, code):
    before = len(spy)
    for stream in (False, True):
        sent = body | {"stream": True} if stream and isinstance(body, dict) else body
        error = _check_error_body(_post(real_server, path, sent), status)
        assert error["param"] == param
        if code is not None:
            assert error["code"] == code
    assert len(spy) == before
    assert real_server.engine.stats()["running"] == 0 and real_server.engine.stats()["waiting"] == 0


def test_stream_options_without_stream_is_refused(real_server, spy):
    before = len(spy)
    body = {"messages": OK_MESSAGES, "stream_options": {"include_usage": True}}
    assert "stream_options" in _check_error_body(_post(real_server, CHAT, body), 400)["message"]
    assert len(spy) == before


def test_a_good_request_does_reach_the_engine(real_server, spy):
    """The spy sees what gets through, so the test above is not vacuous. OpenAI fields that change
    nothing here are accepted, as OpenAI accepts them."""
    before = len(spy)
    body = {"messages": OK_MESSAGES, "max_tokens": 1, "user": "u1", "store": False, "metadata": {"k": "v"}}
    response = _post(real_server, CHAT, body)
    assert response.status_code == 200
    assert len(spy) == before + 1


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer wrong"}, {"Authorization": ""}, {"Authorization": "test-key"}])
def test_wrong_or_missing_api_key_is_401(real_server, spy, headers):
    before = len(spy)
    for path in (CHAT, COMPLETIONS, "/v1/models", "/tokenize"):
        response = httpx.post(real_server.url + path, json={"messages": OK_MESSAGES, "prompt": "x"}, headers=headers)
        if path == "/v1/models":
            response = httpx.get(real_server.url + path, headers=headers)
        error = _check_error_body(response, 401)
        assert error["code"] == "invalid_api_key"
    assert len(spy) == before


def test_health_and_metrics_need_no_key(real_server):
    assert httpx.get(real_server.url + "/health").status_code == 200
    assert httpx.get(real_server.url + "/metrics").status_code == 200


def test_unknown_route_and_wrong_method_get_error_bodies(real_server):
    _check_error_body(httpx.get(real_server.url + "/v1/nothing", headers=real_server.headers()), 404)
    _check_error_body(httpx.get(real_server.url + CHAT, headers=real_server.headers()), 405)


def test_detokenize_rejects_ids_outside_the_vocabulary(real_server):
    response = httpx.post(real_server.url + "/detokenize", json={"tokens": [-1]}, headers=real_server.headers())
    assert _check_error_body(response, 400)["param"] == "tokens"
