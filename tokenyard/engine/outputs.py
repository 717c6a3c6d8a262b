"""RequestOutput: what the engine reports about one request after a step. Plain data.

`LLMEngine.step()` returns one per request that changed: the `new_*` fields are this step's delta
(what a streaming server sends), the others are the totals so far (what `LLM.generate` returns).
A logprob entry maps token id -> logprob, the sampled (or prompt) token first, then the top k.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    new_token_ids: list[int]
    new_text: str
    token_ids: list[int]                 # all generated tokens so far
    text: str                            # all generated text so far (stop strings cut off)
    finished: bool = False
    finish_reason: str | None = None     # "stop" | "length" | "abort" | "error"
    stop_reason: int | str | None = None # the stop token id or stop string that ended it
    cached_tokens: int = 0               # prompt tokens served from the prefix cache
    new_logprobs: list[dict[int, float]] | None = None
    logprobs: list[dict[int, float]] | None = None
    prompt_logprobs: list[dict[int, float] | None] | None = None  # first entry None (no context)
    error: str | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids)
