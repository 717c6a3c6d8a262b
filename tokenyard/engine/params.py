"""SamplingParams: how one request is sampled and when it stops. Plain data, validated on creation.

Owns the validation of every field (a ValueError naming the field, the value and what was
expected); the engine trusts a SamplingParams once built.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    max_tokens: int | None = 16          # None: until a stop or max_model_len
    temperature: float = 1.0             # 0 = greedy
    top_p: float = 1.0                   # (0, 1]
    top_k: int = 0                       # <= 0: off
    min_p: float = 0.0                   # [0, 1]
    seed: int | None = None              # per-request seed: same seed, same tokens
    stop: list[str] = field(default_factory=list)          # stop strings, cut from the text
    stop_token_ids: list[int] = field(default_factory=list)
    logprobs: int | None = None          # None: none; k >= 0: the sampled token's plus the top k
    prompt_logprobs: int | None = None   # same, for every prompt token after the first
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        _check(self.max_tokens is None or (_is_int(self.max_tokens) and self.max_tokens >= 1),
               "max_tokens", self.max_tokens, "an integer >= 1 or None")
        _check(_is_number(self.temperature) and self.temperature >= 0, "temperature", self.temperature, "a number >= 0")
        _check(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "a number in (0, 1]")
        _check(_is_int(self.top_k), "top_k", self.top_k, "an integer (<= 0 disables it)")
        _check(_is_number(self.min_p) and 0 <= self.min_p <= 1, "min_p", self.min_p, "a number in [0, 1]")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed, "an integer or None")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop, "non-empty strings")
        _check(all(_is_int(t) and t >= 0 for t in self.stop_token_ids), "stop_token_ids", self.stop_token_ids,
               "non-negative integers")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _check(value is None or (_is_int(value) and 0 <= value <= 20), name, value, "None or an integer in [0, 20]")
        _check(isinstance(self.ignore_eos, bool), "ignore_eos", self.ignore_eos, "a bool")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name}={value!r}: expected {expected}")
