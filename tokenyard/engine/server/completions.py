"""`POST /v1/completions`: a prompt string, token ids, or a batch of either; streamed or not."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.server.protocol import CompletionRequest
from tokenyard.engine.server.serving import (
    ServerState,
    check_alive,
    check_model,
    check_token_ids,
    output_limit,
    sampling_params,
    token_text,
    usage,
)
from tokenyard.engine.server.engine_loop import RequestStream
from tokenyard.engine.server.streams import admit, final_outputs, run_requests, sse, unless_disconnected


def _completion_logprobs(state: ServerState, entries: list[dict[int, float]], top: int, offset: int) -> dict:
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for entry in entries:
        (sampled, logprob), *_ = entry.items()
        text = token_text(state, sampled)
        tokens.append(text)
        token_logprobs.append(logprob)
        ranked = sorted(entry.items(), key=lambda kv: kv[1], reverse=True)[:top]
        top_logprobs.append({token_text(state, i): lp for i, lp in ranked})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}


def _plan_completion(state: ServerState, body: CompletionRequest, request_id: str):
    check_model(state, body.model)
    check_alive(state)
    requests = []
    prompts = []
    for p, prompt in enumerate(body.prompts()):
        if isinstance(prompt, str):
            ids = state.tokenizer.encode(prompt)
        else:
            check_token_ids(state, prompt, "prompt")
            ids = list(prompt)
        limit = output_limit(state, len(ids), body.output_limit(), "max_tokens")
        prompts.append(ids)
        for j in range(body.n):
            index = p * body.n + j
            requests.append((f"{request_id}-{index}", ids, sampling_params(body, limit, j, body.logprobs)))
    return prompts, requests


def _completion_usage(prompts: list[list[int]], outputs: list[RequestOutput], n: int) -> dict:
    """Usage of a batched completion: each prompt (and its cached part) counts once, not n times."""
    counts = usage(sum(len(p) for p in prompts), outputs)
    counts["prompt_tokens_details"]["cached_tokens"] = sum(o.cached_tokens for o in outputs[::n])
    return counts


async def create_completion(state: ServerState, body: CompletionRequest, request: Request) -> Response:
    request_id = f"cmpl-{uuid.uuid4().hex}"
    prompts, requests = _plan_completion(state, body, request_id)
    streams = await admit(state, requests)
    if body.stream:
        return sse(_completion_stream(state, body, prompts, streams, request_id), request, streams)
    result = await unless_disconnected(request, _completion_full(state, body, prompts, streams, request_id), streams)
    return result if isinstance(result, Response) else JSONResponse(result)


async def _completion_full(state: ServerState, body: CompletionRequest, prompts: list[list[int]],
                           streams: list[RequestStream], request_id: str) -> dict:
    outputs = await final_outputs(streams)
    choices = []
    for index, output in enumerate(outputs):
        logprobs = None
        if body.logprobs is not None:
            logprobs = _completion_logprobs(state, output.logprobs or [], body.logprobs, 0)
        choices.append({"index": index, "text": output.text, "logprobs": logprobs, "finish_reason": output.finish_reason})
    return {
        "id": request_id, "object": "text_completion", "created": int(time.time()), "model": state.model_name,
        "choices": choices, "usage": _completion_usage(prompts, outputs, body.n),
    }


async def _completion_stream(state: ServerState, body: CompletionRequest, prompts: list[list[int]],
                             streams: list[RequestStream], request_id: str) -> AsyncIterator[dict]:
    created = int(time.time())
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    offsets = [0] * len(streams)
    finals: list[RequestOutput | None] = [None] * len(streams)
    async with contextlib.aclosing(run_requests(streams)) as outputs:
        async for i, output in outputs:
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
    if include_usage:
        yield {
            "id": request_id, "object": "text_completion", "created": created, "model": state.model_name,
            "choices": [], "usage": _completion_usage(prompts, finals, body.n),
        }
