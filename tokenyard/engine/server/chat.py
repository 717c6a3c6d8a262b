"""`POST /v1/chat/completions`: messages through the model's chat template, tools and
tool_choice, tool-call parsing (complete and streamed), logprobs, response_format validation.

tool_choice "required" or a named function is honoured by starting the call in the prompt (the
parser's forced prefix), not by constrained decoding: a model that then writes no valid call gets
its output returned as text, prefix included.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.server.protocol import APIError, ChatCompletionRequest, NamedToolChoice
from tokenyard.engine.server.serving import (
    ServerState,
    check_alive,
    check_model,
    output_limit,
    sampling_params,
    token_text,
    usage,
)
from tokenyard.engine.server.engine_loop import RequestStream
from tokenyard.engine.server.streams import admit, final_outputs, run_requests, sse, unless_disconnected
from tokenyard.engine.server.tool_parsers import ToolCall, ToolCallStream, ToolParser


def _template_messages(messages) -> list[dict]:
    """OpenAI messages as chat templates expect them: text content, tool-call arguments as objects."""
    out = []
    for message in messages:
        item: dict = {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
        if message.name is not None:
            item["name"] = message.name
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        if message.reasoning_content is not None:
            item["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                try:
                    arguments = json.loads(call.function.arguments)
                except json.JSONDecodeError:
                    arguments = call.function.arguments
                calls.append({
                    "id": call.id, "type": "function",
                    "function": {"name": call.function.name, "arguments": arguments},
                })
            item["tool_calls"] = calls
        out.append(item)
    return out


def render_chat(state: ServerState, messages, tools: list[dict] | None, add_generation_prompt: bool = True,
                template_kwargs: dict | None = None) -> list[int]:
    try:
        return state.tokenizer.apply_chat_template(
            _template_messages(messages), tools, add_generation_prompt, **(template_kwargs or {}),
        )
    except Exception as exc:  # a template's raise_exception, or one it hits on odd input
        raise APIError(f"messages could not be rendered with the model's chat template: {exc}", param="messages") from exc


@dataclass
class _ChatPlan:
    prompt: list[int]
    tools: list[dict] | None
    parser: ToolParser | None
    forced_prefix: str
    requests: list[tuple[str, list[int], SamplingParams]]


def _plan_chat(state: ServerState, body: ChatCompletionRequest, request_id: str) -> _ChatPlan:
    check_model(state, body.model)
    check_alive(state)
    tool_choice = body.tool_choice or ("auto" if body.tools else "none")
    tools = [tool.model_dump(exclude_none=True) for tool in body.tools] if body.tools and tool_choice != "none" else None
    parser = None
    forced_prefix = ""
    if tools:
        parser = state.tool_parser
        if parser is None:
            raise APIError(
                "this server has no tool-call parser for its model's chat template; start it with "
                "--tool-call-parser (hermes, qwen3_xml, deepseek_v3) or send tool_choice 'none'",
                param="tools",
            )
        if tool_choice == "required":
            forced_prefix = parser.forced_prefix(None)
        elif isinstance(tool_choice, NamedToolChoice):
            forced_prefix = parser.forced_prefix(tool_choice.function.name)
    prompt = render_chat(state, body.messages, tools, template_kwargs=body.chat_template_kwargs)
    if forced_prefix:
        prompt = prompt + state.tokenizer.encode(forced_prefix, add_special_tokens=False)
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    limit = output_limit(state, len(prompt), body.output_limit(), param)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    requests = [
        (f"{request_id}-{i}", prompt, sampling_params(body, limit, i, logprobs)) for i in range(body.n)
    ]
    return _ChatPlan(prompt, tools, parser, forced_prefix, requests)


def _check_json(text: str, body: ChatCompletionRequest) -> None:
    if body.response_format is None or body.response_format.type == "text":
        return
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(
            f"response_format {body.response_format.type}: the model's output is not valid JSON ({exc}); "
            "this server validates the output but does not constrain decoding",
            status_code=500, type="server_error", code="invalid_json_output",
        ) from exc


def _tool_call_json(call: ToolCall, index: int | None = None) -> dict:
    out = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
    if index is not None:
        out = {"index": index, **out}
    return out


def _chat_logprobs(state: ServerState, entries: list[dict[int, float]], top: int) -> dict:
    content = []
    for entry in entries:
        (sampled, logprob), *_ = entry.items()
        ranked = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top]
        text = token_text(state, sampled)
        content.append({
            "token": text, "logprob": logprob, "bytes": list(text.encode()),
            "top_logprobs": [
                {"token": (t := token_text(state, i)), "logprob": lp, "bytes": list(t.encode())} for i, lp in ranked
            ],
        })
    return {"content": content}


async def create_chat_completion(state: ServerState, body: ChatCompletionRequest, request: Request) -> Response:
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    plan = _plan_chat(state, body, request_id)
    streams = await admit(state, plan.requests)
    if body.stream:
        return sse(_chat_stream(state, body, plan, streams, request_id), request, streams)
    result = await unless_disconnected(request, _chat_full(state, body, plan, streams, request_id), streams)
    return result if isinstance(result, Response) else JSONResponse(result)


async def _chat_full(state: ServerState, body: ChatCompletionRequest, plan: _ChatPlan,
                     streams: list[RequestStream], request_id: str) -> dict:
    outputs = await final_outputs(streams)
    choices = []
    for index, output in enumerate(outputs):
        text = plan.forced_prefix + output.text
        message: dict = {"role": "assistant", "content": text}
        finish_reason = output.finish_reason
        if plan.parser is not None:
            parsed = plan.parser.parse(text, plan.tools)
            calls = parsed.tool_calls if body.parallel_tool_calls else parsed.tool_calls[:1]
            if calls:
                message = {
                    "role": "assistant",
                    "content": parsed.content if parsed.content.strip() else None,
                    "tool_calls": [_tool_call_json(c) for c in calls],
                }
                finish_reason = "tool_calls"
        if message.get("content") is not None and finish_reason == "stop":
            _check_json(message["content"], body)
        choice = {"index": index, "message": message, "logprobs": None, "finish_reason": finish_reason}
        if body.logprobs:
            choice["logprobs"] = _chat_logprobs(state, output.logprobs or [], body.top_logprobs or 0)
        choices.append(choice)
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": state.model_name,
        "choices": choices, "usage": usage(len(plan.prompt), outputs),
    }


async def _chat_stream(state: ServerState, body: ChatCompletionRequest, plan: _ChatPlan,
                       streams: list[RequestStream], request_id: str) -> AsyncIterator[dict]:
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(index: int, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None) -> dict:
        out = {
            "id": request_id, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }
        if include_usage:
            out["usage"] = None
        return out

    n = len(plan.requests)
    parsers = [ToolCallStream(plan.parser, plan.tools) if plan.parser else None for _ in range(n)]
    texts = [""] * n
    called = [0] * n
    finals: list[RequestOutput | None] = [None] * n
    for i in range(n):
        yield chunk(i, {"role": "assistant", "content": ""})
        if parsers[i] is not None and plan.forced_prefix:
            parsers[i].feed(plan.forced_prefix)
    async with contextlib.aclosing(run_requests(streams)) as outputs:
        async for i, output in outputs:
            logprobs = _chat_logprobs(state, output.new_logprobs or [], body.top_logprobs or 0) if body.logprobs else None
            deltas = parsers[i].feed(output.new_text) if parsers[i] else []
            if output.finished and parsers[i]:
                deltas += parsers[i].finish()
            texts[i] += output.new_text
            if parsers[i] is None and (output.new_text or logprobs and logprobs["content"]):
                yield chunk(i, {"content": output.new_text}, logprobs=logprobs)
            for delta in deltas:
                if delta.tool_call is not None and (body.parallel_tool_calls or called[i] == 0):
                    called[i] += 1
                    yield chunk(i, {"tool_calls": [_tool_call_json(delta.tool_call, delta.index)]})
                elif delta.content:
                    yield chunk(i, {"content": delta.content}, logprobs=logprobs)
                    logprobs = None
            if output.finished:
                finals[i] = output
                if not called[i] and output.finish_reason == "stop":
                    _check_json(plan.forced_prefix + texts[i], body)
                yield chunk(i, {}, "tool_calls" if called[i] else output.finish_reason)
    if include_usage:
        yield {
            "id": request_id, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
            "choices": [], "usage": usage(len(plan.prompt), finals),
        }
