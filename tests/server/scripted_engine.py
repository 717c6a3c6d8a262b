"""A stand-in for LLMEngine whose "model" answers from a script, for tests of the HTTP layer
alone: tool-call output a small real model would never write, errors inside the loop.

It speaks the LLMEngine interface the server uses (tokenizer, add_request, abort_request, step,
has_unfinished_requests, stats) and tokenizes with a real tokenizer and chat template (Qwen3's),
one token per step. The real engine is what the other server tests run.
"""

from __future__ import annotations

from collections.abc import Callable

import tokenizers

from tokenyard.engine.loader.tokenizer import Tokenizer
from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams


def qwen_tokenizer(tokenizer_dir) -> Tokenizer:
    import json

    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    return Tokenizer(
        tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")),
        chat_template=config["chat_template"],
        eos_token=config["eos_token"],
    )


class ScriptedEngine:
    def __init__(self, tokenizer: Tokenizer, answer: Callable[[str], str], fail_on: str | None = None,
                 refuse_on: str | None = None):
        """`answer(prompt_text)` is the text the "model" writes; a step raises if a prompt
        contains `fail_on`; add_request refuses the second choice (id ending "-1") of a prompt
        that contains `refuse_on`."""
        self.tokenizer = tokenizer
        self.answer = answer
        self.fail_on = fail_on
        self.refuse_on = refuse_on
        self.requests: dict[str, dict] = {}
        self.prompts: list[str] = []

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> None:
        if request_id in self.requests:
            raise ValueError(f"request_id={request_id!r} is already running")
        if not prompt_token_ids:
            raise ValueError("prompt_token_ids=[]: expected at least one token")
        prompt = self.tokenizer.decode(prompt_token_ids, skip_special_tokens=False)
        if self.refuse_on is not None and self.refuse_on in prompt and request_id.endswith("-1"):
            raise ValueError("prompt_token_ids: refused by the scripted engine")
        self.prompts.append(prompt)
        answer_ids = self.tokenizer.encode(self.answer(prompt), add_special_tokens=False)
        self.requests[request_id] = {
            "prompt": list(prompt_token_ids), "answer": answer_ids, "done": 0, "params": params, "text": "",
            "fail": self.fail_on is not None and self.fail_on in prompt,
        }

    def abort_request(self, request_id: str) -> None:
        self.requests.pop(request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def stats(self) -> dict:
        return {"running": len(self.requests), "waiting": 0, "preemptions": 0}

    def step(self) -> list[RequestOutput]:
        outputs = []
        for request_id, r in list(self.requests.items()):
            if r["fail"]:
                raise RuntimeError("scripted failure")
            r["done"] += 1
            ids = r["answer"][: r["done"]]
            text = self.tokenizer.decode(ids)
            new_text, r["text"] = text[len(r["text"]) :], text
            limit = r["params"].max_tokens
            finished = r["done"] >= len(r["answer"]) or (limit is not None and r["done"] >= limit)
            reason = None if not finished else "length" if r["done"] < len(r["answer"]) else "stop"
            outputs.append(RequestOutput(
                request_id=request_id, prompt_token_ids=r["prompt"], new_token_ids=[ids[-1]], new_text=new_text,
                token_ids=list(ids), text=text, finished=finished, finish_reason=reason,
            ))
            if finished:
                del self.requests[request_id]
        return outputs
