"""What every endpoint shares: the server's state, and the checks and conversions between a
validated OpenAI request and engine requests (model name, liveness, context length, sampling
parameters) and back (usage, failures).

Owns no HTTP handling and no engine access beyond reading the tokenizer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.server.engine_loop import EngineLoop
from tokenyard.engine.server.metrics import Metrics
from tokenyard.engine.server.protocol import APIError
from tokenyard.engine.server.tool_parsers import ToolParser


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


def check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise APIError(
            f"The model `{model}` does not exist; this server serves `{state.model_name}`.",
            status_code=404, type="not_found_error", param="model", code="model_not_found",
        )


def check_token_ids(state: ServerState, ids: list[int], param: str) -> None:
    vocab = state.tokenizer.vocab_size
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise APIError(f"{param}: token ids {bad[:5]} are outside the vocabulary [0, {vocab})", param=param)


def check_alive(state: ServerState) -> None:
    if not state.loop.alive:
        raise APIError(f"the engine loop is not running: {state.loop.error or 'stopped'}",
                       status_code=503, type="server_error", code="engine_dead")


def output_limit(state: ServerState, num_prompt: int, requested: int | None, param: str) -> int:
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


def sampling_params(body, max_tokens: int, index: int, logprobs: int | None) -> SamplingParams:
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


def raise_if_failed(output: RequestOutput) -> None:
    if output.finish_reason == "error":
        raise APIError(f"the engine failed this request: {output.error}", status_code=500, type="server_error")


def usage(num_prompt: int, outputs: list[RequestOutput]) -> dict:
    completion = sum(o.num_output_tokens for o in outputs)
    cached = max((o.cached_tokens for o in outputs), default=0)
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": completion,
        "total_tokens": num_prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def token_text(state: ServerState, token_id: int) -> str:
    return state.tokenizer.decode([token_id], skip_special_tokens=False)
