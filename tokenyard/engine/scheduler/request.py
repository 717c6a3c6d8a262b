"""A request and its state machine. Plain data plus the one transition table.

Owns: `RequestStatus`, `TRANSITIONS` (every legal move; anything else raises `IllegalTransition`),
and `Request`, the record the scheduler, runner and engine pass around. The pages and the state
slot a request holds are listed here; the pools that hand them out live in tokenyard.engine.cache.

    WAITING ──▶ PREFILLING ──▶ DECODING ──▶ FINISHED_(STOPPED | LENGTH | ABORTED | ERROR)
       ▲            │              │
       └─ PREEMPTED ◀──────────────┘     (preemption by recompute: pages and slot returned)
"""

from __future__ import annotations

import enum

from tokenyard.engine.params import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    PREFILLING = "prefilling"
    DECODING = "decoding"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_ERROR = "error"


S = RequestStatus
FINISHED = frozenset({S.FINISHED_STOPPED, S.FINISHED_LENGTH, S.FINISHED_ABORTED, S.FINISHED_ERROR})

TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    S.WAITING: frozenset({S.PREFILLING, S.FINISHED_ABORTED, S.FINISHED_ERROR}),
    # a prefill's last chunk samples a token, which may already end the request
    S.PREFILLING: frozenset({S.DECODING, S.PREEMPTED}) | FINISHED,
    S.DECODING: frozenset({S.PREEMPTED}) | FINISHED,
    S.PREEMPTED: frozenset({S.WAITING, S.FINISHED_ABORTED, S.FINISHED_ERROR}),
    **{status: frozenset() for status in FINISHED},
}


class IllegalTransition(RuntimeError):
    pass


class Request:
    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, arrival: int):
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.params = params
        self.arrival = arrival                    # admission order; preemption picks the latest
        self.status = RequestStatus.WAITING
        self.token_ids = list(prompt_token_ids)   # prompt, then every generated token
        self.num_computed_tokens = 0              # tokens whose keys/states are in the caches
        self.pages: list[int] = []                # owned pages, in sequence order
        self.page_keys: list[int] = []            # prefix keys of its first full pages (prefix cache)
        self.slot: int | None = None              # owned GDN state slot (its running state)
        self.read_slot: int | None = None         # a checkpoint its next step starts from, held till then
        self.tail_checkpoint: tuple[int, int] | None = None   # (slot, key) of its latest checkpoint in the
                                                              # generated tokens, superseded by the next one
        self.num_cached_tokens = 0                # prompt tokens served from the prefix cache
        self.num_preemptions = 0
        self.stop_reason: int | str | None = None
        self.logprobs: list[dict[int, float]] = []
        self.prompt_logprobs: list[dict[int, float] | None] = []

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.is_finished else None

    def transition(self, new: RequestStatus) -> None:
        if new not in TRANSITIONS[self.status]:
            raise IllegalTransition(
                f"request {self.request_id!r}: {self.status.name} -> {new.name} is not a legal transition; "
                f"from {self.status.name} it may go to {sorted(s.name for s in TRANSITIONS[self.status]) or 'nowhere'}"
            )
        self.status = new

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, {self.status.name}, tokens={self.num_tokens}, "
                f"computed={self.num_computed_tokens}, pages={len(self.pages)}, slot={self.slot})")
