"""The OpenAI-compatible HTTP application.

`build_app(engine, ...)` returns a FastAPI app serving `/v1/chat/completions`, `/v1/completions`,
`/v1/models`, `/tokenize`, `/detokenize`, `/health` and `/metrics` on top of one `EngineLoop`.

Every request is validated completely (schema, model name, template, context length, sampling
parameters) before the engine sees it; a refusal is a 4xx with an OpenAI error body and the engine
is untouched. A client that goes away, mid-stream or while waiting for a non-streamed answer,
aborts its requests, which returns their pages and slots.

Owns the HTTP layer and the translation between the OpenAI format and engine requests. May not
touch the engine except through the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.server.engine_loop import EngineLoop
from tokenyard.engine.server.metrics import Metrics
from tokenyard.engine.server.protocol import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    NamedToolChoice,
    TokenizeRequest,
)
from tokenyard.engine.server.tool_parsers import ToolCall, ToolCallStream, ToolParser


@dataclass
class ServerState:
    loop: EngineLoop
    tokenizer: object
    model_name: str
    max_model_len: int
    tool_parser: ToolParser | None
    metrics: Metrics
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def build_app(
    engine,
    model_name: str,
    max_model_len: int,
    api_key: str | None = None,
    tool_parser: ToolParser | None = None,
) -> FastAPI:
    metrics = Metrics(model_name)
    state = ServerState(
        loop=EngineLoop(engine, metrics),
        tokenizer=engine.tokenizer,
        model_name=model_name,
        max_model_len=max_model_len,
        tool_parser=tool_parser,
        metrics=metrics,
        api_key=api_key,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.loop.start()
        yield
        state.loop.stop()

    app = FastAPI(title="tokenyard", lifespan=lifespan)
    app.state.server = state
    _install_error_handlers(app)

    @app.middleware("http")
    async def check_api_key(request: Request, call_next):
        guarded = request.url.path.startswith("/v1") or request.url.path in ("/tokenize", "/detokenize")
        if state.api_key and guarded:
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                return _error_response(APIError(
                    "Incorrect API key provided.", status_code=401, code="invalid_api_key",
                ))
        return await call_next(request)

    @app.get("/health")
    async def health() -> Response:
        _check_alive(state)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def get_metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{
                "id": state.model_name, "object": "model", "created": state.created,
                "owned_by": "tokenyard", "max_model_len": state.max_model_len,
            }],
        }

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        _check_model(state, body.model)
        if body.messages is not None:
            tokens = _render_chat(state, body.messages, None, body.add_generation_prompt)
        else:
            tokens = state.tokenizer.encode(body.prompt)
        return {"count": len(tokens), "max_model_len": state.max_model_len, "tokens": tokens}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        _check_model(state, body.model)
        _check_token_ids(state, body.tokens, "tokens")
        return {"prompt": state.tokenizer.decode(body.tokens, skip_special_tokens=False)}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await _chat(state, body, request)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _complete(state, body, request)

    return app


# -- errors ---------------------------------------------------------------------------------------


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = where[0] if where else None  # the request field; the message has the full path
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
        elif not where:
            message = "the request body must be a JSON object"
        elif first.get("type") == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {where[-1] if where else '?'}"
        else:
            message = f"{'.'.join(where) or 'body'}: {first.get('msg')}"
            if "input" in first and first.get("type") not in ("missing",):
                message += f" (got {json.dumps(first['input'], default=str)[:200]})"
        return _error_response(APIError(message, status_code=400, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error_response(APIError(message, status_code=exc.status_code, type=kind))


# -- shared request preparation -------------------------------------------------------------------


def _check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise APIError(
            f"The model `{model}` does not exist; this server serves `{state.model_name}`.",
            status_code=404, type="not_found_error", param="model", code="model_not_found",
        )


def _check_token_ids(state: ServerState, ids: list[int], param: str) -> None:
    vocab = state.tokenizer.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise APIError(f"{param}: token ids {bad[:5]} are outside the vocabulary [0, {vocab})", param=param)


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


def _render_chat(state: ServerState, messages, tools: list[dict] | None, add_generation_prompt: bool = True) -> list[int]:
    try:
        return state.tokenizer.apply_chat_template(
            _template_messages(messages), tools=tools, add_generation_prompt=add_generation_prompt,
        )
    except Exception as exc:  # a template's raise_exception, or one it hits on odd input
        raise APIError(f"messages could not be rendered with the model's chat template: {exc}", param="messages") from exc


def _output_limit(state: ServerState, num_prompt: int, requested: int | None, param: str) -> int:
    room = state.max_model_len - num_prompt
    if room <= 0 or (requested is not None and requested > room):
        asked = f"{requested} tokens for the completion" if requested is not None else "at least 1 completion token"
        raise APIError(
            f"This model's maximum context length is {state.max_model_len} tokens. However, you requested "
            f"{num_prompt + (requested or 1)} tokens ({num_prompt} in the prompt, {asked}). "
            f"Please reduce the length of the prompt or the completion.",
            param=param if room > 0 else None,
            code="context_length_exceeded",
        )
    return requested if requested is not None else room


def _sampling_params(body, max_tokens: int, index: int, logprobs: int | None) -> SamplingParams:
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=0 if body.top_k is None else body.top_k,
            min_p=0.0 if body.min_p is None else body.min_p,
            seed=None if body.seed is None else body.seed + index,
            stop=body.stop_list(),
            stop_token_ids=body.stop_token_ids or [],
            logprobs=logprobs,
            ignore_eos=body.ignore_eos,
        )
    except ValueError as exc:
        raise APIError(str(exc)) from exc


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Awaitable):
    """Run `work`; if the client goes away first, cancel it (which aborts its engine requests)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return Response(status_code=499)
    return task.result()


def _sse(events: AsyncIterator[dict], request: Request) -> StreamingResponse:
    """Server-sent events from `events`, produced in a task that a client disconnect cancels."""

    async def body() -> AsyncIterator[str]:
        queue: asyncio.Queue = asyncio.Queue()
        done = object()

        async def produce() -> None:
            try:
                async for event in events:
                    queue.put_nowait(f"data: {json.dumps(event, ensure_ascii=False)}\n\n")
            except APIError as exc:
                queue.put_nowait(f"data: {json.dumps(exc.body())}\n\n")
            except Exception as exc:
                error = APIError(f"{type(exc).__name__}: {exc}", status_code=500, type="server_error")
                queue.put_nowait(f"data: {json.dumps(error.body())}\n\n")
            finally:
                await events.aclose()
                queue.put_nowait(done)

        producer = asyncio.create_task(produce())

        async def watch() -> None:
            await _until_disconnected(request)
            producer.cancel()

        watcher = asyncio.create_task(watch())
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                yield item
            yield "data: [DONE]\n\n"
        finally:
            watcher.cancel()
            producer.cancel()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _merge(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, object]]:
    """Items of several async iterators as they arrive, tagged with the iterator's index."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as stream:
            async for item in stream:
                yield 0, item
        return
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump(i: int, stream: AsyncIterator) -> None:
        async with contextlib.aclosing(stream):
            async for item in stream:
                queue.put_nowait((i, item))
        queue.put_nowait((i, end))

    async with asyncio.TaskGroup() as group:
        for i, stream in enumerate(streams):
            group.create_task(pump(i, stream))
        open_streams = len(streams)
        while open_streams:
            i, item = await queue.get()
            if item is end:
                open_streams -= 1
            else:
                yield i, item


async def _final_outputs(state: ServerState, requests: list[tuple[str, list[int], SamplingParams]]) -> list[RequestOutput]:
    """Run requests to completion and return each one's last output (which holds the totals)."""
    last: list[RequestOutput | None] = [None] * len(requests)
    async with contextlib.aclosing(_merge([state.loop.generate(*r) for r in requests])) as merged:
        async for i, output in merged:
            last[i] = output
    return last


def _raise_if_failed(output: RequestOutput) -> None:
    if output.finish_reason == "error":
        raise APIError(f"the engine failed this request: {output.error}", status_code=500, type="server_error")


def _usage(num_prompt: int, outputs: list[RequestOutput]) -> dict:
    completion = sum(o.num_output_tokens for o in outputs)
    cached = max((o.cached_tokens for o in outputs), default=0)
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": completion,
        "total_tokens": num_prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _token_text(state: ServerState, token_id: int) -> str:
    return state.tokenizer.decode([token_id], skip_special_tokens=False)


def _chat_logprobs(state: ServerState, entries: list[dict[int, float]], top: int) -> dict:
    content = []
    for entry in entries:
        (sampled, logprob), *_ = entry.items()
        ranked = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top]
        text = _token_text(state, sampled)
        content.append({
            "token": text, "logprob": logprob, "bytes": list(text.encode()),
            "top_logprobs": [
                {"token": (t := _token_text(state, i)), "logprob": lp, "bytes": list(t.encode())} for i, lp in ranked
            ],
        })
    return {"content": content}


def _completion_logprobs(state: ServerState, entries: list[dict[int, float]], top: int, offset: int) -> dict:
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for entry in entries:
        (sampled, logprob), *_ = entry.items()
        text = _token_text(state, sampled)
        tokens.append(text)
        token_logprobs.append(logprob)
        ranked = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top]
        top_logprobs.append({_token_text(state, i): lp for i, lp in ranked})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


# -- chat completions -----------------------------------------------------------------------------


@dataclass
class _ChatPlan:
    prompt: list[int]
    tools: list[dict] | None
    parser: ToolParser | None
    forced_prefix: str
    requests: list[tuple[str, list[int], SamplingParams]]


def _check_alive(state: ServerState) -> None:
    if not state.loop.alive:
        raise APIError(f"the engine loop is not running: {state.loop.error or 'stopped'}",
                       status_code=503, type="server_error", code="engine_dead")


def _plan_chat(state: ServerState, body: ChatCompletionRequest, request_id: str) -> _ChatPlan:
    _check_model(state, body.model)
    _check_alive(state)
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
    prompt = _render_chat(state, body.messages, tools)
    if forced_prefix:
        prompt = prompt + state.tokenizer.encode(forced_prefix, add_special_tokens=False)
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    limit = _output_limit(state, len(prompt), body.output_limit(), param)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    requests = [
        (f"{request_id}-{i}", prompt, _sampling_params(body, limit, i, logprobs)) for i in range(body.n)
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


async def _chat(state: ServerState, body: ChatCompletionRequest, request: Request) -> Response:
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    plan = _plan_chat(state, body, request_id)
    if body.stream:
        return _sse(_chat_stream(state, body, plan, request_id), request)
    result = await _unless_disconnected(request, _chat_full(state, body, plan, request_id))
    return result if isinstance(result, Response) else JSONResponse(result)


async def _chat_full(state: ServerState, body: ChatCompletionRequest, plan: _ChatPlan, request_id: str) -> dict:
    try:
        outputs = await _final_outputs(state, plan.requests)
    except* ValueError as group:
        raise APIError(str(group.exceptions[0])) from None
    choices = []
    for index, output in enumerate(outputs):
        _raise_if_failed(output)
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
        "choices": choices, "usage": _usage(len(plan.prompt), outputs),
    }


async def _chat_stream(state: ServerState, body: ChatCompletionRequest, plan: _ChatPlan, request_id: str) -> AsyncIterator[dict]:
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
    streams = [ToolCallStream(plan.parser, plan.tools) if plan.parser else None for _ in range(n)]
    texts = [""] * n
    called = [0] * n
    finals: list[RequestOutput | None] = [None] * n
    for i in range(n):
        yield chunk(i, {"role": "assistant", "content": ""})
        if streams[i] is not None and plan.forced_prefix:
            streams[i].feed(plan.forced_prefix)
    try:
        async with contextlib.aclosing(_merge([state.loop.generate(*r) for r in plan.requests])) as merged:
            async for i, output in merged:
                _raise_if_failed(output)
                logprobs = _chat_logprobs(state, output.new_logprobs or [], body.top_logprobs or 0) if body.logprobs else None
                deltas = streams[i].feed(output.new_text) if streams[i] else []
                if output.finished and streams[i]:
                    deltas += streams[i].finish()
                texts[i] += output.new_text
                if streams[i] is None and (output.new_text or logprobs and logprobs["content"]):
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
    except* ValueError as group:
        raise APIError(str(group.exceptions[0])) from None
    if include_usage:
        yield {
            "id": request_id, "object": "chat.completion.chunk", "created": created, "model": state.model_name,
            "choices": [], "usage": _usage(len(plan.prompt), finals),
        }


# -- completions ----------------------------------------------------------------------------------


def _plan_completion(state: ServerState, body: CompletionRequest, request_id: str):
    _check_model(state, body.model)
    _check_alive(state)
    requests = []
    prompts = []
    for p, prompt in enumerate(body.prompts()):
        if isinstance(prompt, str):
            ids = state.tokenizer.encode(prompt)
        else:
            _check_token_ids(state, prompt, "prompt")
            ids = list(prompt)
        limit = _output_limit(state, len(ids), body.output_limit(), "max_tokens")
        prompts.append(ids)
        for j in range(body.n):
            index = p * body.n + j
            requests.append((f"{request_id}-{index}", ids, _sampling_params(body, limit, j, body.logprobs)))
    return prompts, requests


def _completion_usage(prompts: list[list[int]], outputs: list[RequestOutput], n: int) -> dict:
    """Usage of a batched completion: each prompt (and its cached part) counts once, not n times."""
    usage = _usage(sum(len(p) for p in prompts), outputs)
    usage["prompt_tokens_details"]["cached_tokens"] = sum(o.cached_tokens for o in outputs[::n])
    return usage


async def _complete(state: ServerState, body: CompletionRequest, request: Request) -> Response:
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prompts, requests = _plan_completion(state, body, request_id)
    if body.stream:
        return _sse(_completion_stream(state, body, prompts, requests, request_id), request)
    result = await _unless_disconnected(request, _completion_full(state, body, prompts, requests, request_id))
    return result if isinstance(result, Response) else JSONResponse(result)


async def _completion_full(state, body: CompletionRequest, prompts, requests, request_id: str) -> dict:
    try:
        outputs = await _final_outputs(state, requests)
    except* ValueError as group:
        raise APIError(str(group.exceptions[0])) from None
    choices = []
    for index, output in enumerate(outputs):
        _raise_if_failed(output)
        logprobs = None
        if body.logprobs is not None:
            logprobs = _completion_logprobs(state, output.logprobs or [], body.logprobs, 0)
        choices.append({"index": index, "text": output.text, "logprobs": logprobs, "finish_reason": output.finish_reason})
    return {
        "id": request_id, "object": "text_completion", "created": int(time.time()), "model": state.model_name,
        "choices": choices, "usage": _completion_usage(prompts, outputs, body.n),
    }


async def _completion_stream(state, body: CompletionRequest, prompts, requests, request_id: str) -> AsyncIterator[dict]:
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    offsets = [0] * len(requests)
    finals: list[RequestOutput | None] = [None] * len(requests)
    try:
        async with contextlib.aclosing(_merge([state.loop.generate(*r) for r in requests])) as merged:
            async for i, output in merged:
                _raise_if_failed(output)
                logprobs = None
                if body.logprobs is not None:
                    logprobs = _completion_logprobs(state, output.new_logprobs or [], body.logprobs, offsets[i])
                offsets[i] += len(output.new_text)
                if output.finished:
                    finals[i] = output
                if output.new_text or output.finished:
                    event = {
                        "id": request_id, "object": "text_completion", "created": created, "model": state.model_name,
                        "choices": [{
                            "index": i, "text": output.new_text, "logprobs": logprobs,
                            "finish_reason": output.finish_reason if output.finished else None,
                        }],
                    }
                    if include_usage:
                        event["usage"] = None
                    yield event
    except* ValueError as group:
        raise APIError(str(group.exceptions[0])) from None
    if include_usage:
        yield {
            "id": request_id, "object": "text_completion", "created": created, "model": state.model_name,
            "choices": [], "usage": _completion_usage(prompts, finals, body.n),
        }
