"""The offline API: LLM, SamplingParams, RequestOutput.

Owns turning prompts (text, token ids, or chat conversations with tools) into engine requests and
running the engine until they finish. Outputs come back in the order of the prompts.
"""

from __future__ import annotations

import itertools

from tokenyard.engine.engine import LLMEngine
from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams

Prompt = str | list[int]


class LLM:
    def __init__(self, model: str | None = None, **engine_args):
        self.engine = LLMEngine(model, **engine_args)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(self, prompts: Prompt | list[Prompt],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None) -> list[RequestOutput]:
        """Complete each prompt (a string, or a list of token ids); one output per prompt, in order."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        token_ids = [self.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        return self._run(token_ids, sampling_params)

    def chat(self, messages: list[dict] | list[list[dict]], sampling_params: SamplingParams | list[SamplingParams] | None = None,
             tools: list[dict] | None = None, add_generation_prompt: bool = True, **template_kwargs) -> list[RequestOutput]:
        """Answer one conversation (a list of {"role", "content"} messages) or several."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        token_ids = [self.engine.apply_chat_template(c, tools, add_generation_prompt, **template_kwargs)
                     for c in conversations]
        return self._run(token_ids, sampling_params)

    def _run(self, token_ids: list[list[int]], sampling_params) -> list[RequestOutput]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(token_ids)
        if len(params) != len(token_ids):
            raise ValueError(f"sampling_params has {len(params)} entries for {len(token_ids)} prompts")
        order = [f"llm-{next(self._ids)}" for _ in token_ids]
        added = []
        try:
            for request_id, ids, p in zip(order, token_ids, params):
                self.engine.add_request(request_id, ids, p)
                added.append(request_id)
            final: dict[str, RequestOutput] = {}
            while len(final) < len(order):
                for output in self.engine.step():
                    if output.finished:
                        final[output.request_id] = output
        except BaseException:
            for request_id in added:
                self.engine.abort_request(request_id)
            raise
        return [final[r] for r in order]


__all__ = ["LLM", "SamplingParams", "RequestOutput"]
