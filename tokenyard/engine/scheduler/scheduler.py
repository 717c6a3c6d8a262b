"""The batch planner: which requests run this step, with how many tokens each.

Owns the waiting queue, the running list, and every change of a request's pages and slot.
Policy (continuous batching under a token budget):
  1. running requests first, decodes before prefill chunks, in admission order; a request that
     cannot get the pages it needs preempts the most recently admitted running request (by
     recompute: its pages and slot go back, it waits at the head of the queue and later prefills
     prompt + generated tokens again), itself if it is the most recent;
  2. then, unless this step preempted, waiting requests in order, as long as budget,
     `max_num_seqs`, pages and slots allow, with no preemption on their behalf; a long prompt is
     prefilled in chunks over several steps.
A request samples a token in a step whose chunk reaches the end of its tokens.
May not touch: tensors, the model, the tokenizer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from tokenyard.engine.cache.pool import IdPool
from tokenyard.engine.scheduler.request import Request, RequestStatus


@dataclass
class ScheduledBatch:
    requests: list[Request] = field(default_factory=list)   # decodes first, then prefill chunks
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def samples(self, i: int) -> bool:
        """Whether request i's chunk reaches the end of its tokens (so a token is sampled)."""
        request = self.requests[i]
        return request.num_computed_tokens + self.num_new_tokens[i] == request.num_tokens


class Scheduler:
    def __init__(
        self,
        pages: IdPool,
        slots: IdPool | None,
        page_size: int,
        max_num_batched_tokens: int,
        max_num_seqs: int,
    ):
        self.pages = pages
        self.slots = slots                # None when the model has no GDN layers
        self.page_size = page_size
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0

    # -- requests in and out -------------------------------------------------------------------

    def add(self, request: Request) -> None:
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish(self, request: Request, status: RequestStatus) -> None:
        """Move `request` to a FINISHED status from wherever it is and return everything it holds."""
        request.transition(status)
        self._release(request)
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        del self.requests[request.request_id]

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # -- planning --------------------------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        order = [r for r in self.running if r.status == RequestStatus.DECODING]
        order += [r for r in self.running if r.status == RequestStatus.PREFILLING]
        for request in order:
            if budget == 0:
                break
            if request not in self.running:      # preempted earlier in this loop
                continue
            wanted = min(request.num_tokens - request.num_computed_tokens, budget)
            n = self._fit(request, wanted)
            while n == 0:
                victim = self._pick_victim(batch)
                self._preempt(victim, batch)
                if victim is request:
                    break
                n = self._fit(request, wanted)
            if n:
                self._take(request, n, batch)
                budget -= n
        # after a preemption memory is short: admitting now would only evict again
        while not batch.preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            if self.slots is not None and request.slot is None and self.slots.num_free == 0:
                break
            n = self._fit(request, min(request.num_tokens - request.num_computed_tokens, budget))
            if n == 0:
                break
            self.waiting.popleft()
            request.transition(RequestStatus.PREFILLING)
            if self.slots is not None:
                request.slot = self.slots.allocate(1)[0]
            self.running.append(request)
            self._take(request, n, batch)
            budget -= n
        return batch

    def _fit(self, request: Request, wanted: int) -> int:
        """How many of `wanted` new tokens fit in the request's pages plus the free ones."""
        room = (len(request.pages) + self.pages.num_free) * self.page_size - request.num_computed_tokens
        return max(min(wanted, room), 0)

    def _take(self, request: Request, n: int, batch: ScheduledBatch) -> None:
        needed = -(-(request.num_computed_tokens + n) // self.page_size) - len(request.pages)
        if needed > 0:
            request.pages.extend(self.pages.allocate(needed))
        batch.requests.append(request)
        batch.num_new_tokens.append(n)

    def _pick_victim(self, batch: ScheduledBatch) -> Request:
        """The most recently admitted running request not already in this step's batch."""
        return max((r for r in self.running if r not in batch.requests), key=lambda r: r.arrival)

    def _preempt(self, request: Request, batch: ScheduledBatch) -> None:
        request.transition(RequestStatus.PREEMPTED)
        self._release(request)
        self.running.remove(request)
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        request.transition(RequestStatus.WAITING)
        self.waiting.appendleft(request)
        batch.preempted.append(request)

    def preempt(self, request_id: str) -> None:
        """Preempt a running request now (tests and operators force what memory pressure would)."""
        request = self.requests[request_id]
        if request not in self.running:
            raise ValueError(f"request_id={request_id!r} is {request.status.name}, not running")
        self._preempt(request, ScheduledBatch())

    def _release(self, request: Request) -> None:
        self.pages.release(request.pages)
        request.pages = []
        if request.slot is not None:
            self.slots.release([request.slot])
            request.slot = None

    # -- after the step --------------------------------------------------------------------------

    def advance(self, batch: ScheduledBatch, sampled: list[int | None]) -> None:
        """Account for a finished forward pass: computed tokens move on, sampled tokens join."""
        for request, n, token in zip(batch.requests, batch.num_new_tokens, sampled):
            request.num_computed_tokens += n
            if token is not None:
                request.token_ids.append(token)
                if request.status == RequestStatus.PREFILLING:
                    request.transition(RequestStatus.DECODING)

    # -- the invariant ---------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """free + owned + cached == capacity for pages and slots, nothing owned twice, and only
        running requests own anything. (No prefix cache yet: cached is 0.)"""
        for pool, owned in (
            (self.pages, [p for r in self.requests.values() for p in r.pages]),
            (self.slots, [r.slot for r in self.requests.values() if r.slot is not None]),
        ):
            if pool is None:
                continue
            free = pool.free_ids()
            everything = owned + free
            assert len(everything) == len(set(everything)), f"{pool.name}: an id is owned twice or owned and free"
            assert set(everything) == set(range(pool.capacity)), (
                f"{pool.name}: free {len(free)} + owned {len(owned)} + cached 0 != capacity {pool.capacity}"
            )
        for request in self.requests.values():
            holds = bool(request.pages) or request.slot is not None
            assert not holds or request in self.running, f"{request} holds memory but is not running"
            assert request.num_computed_tokens <= len(request.pages) * self.page_size, f"{request} outgrew its pages"
