"""The batch planner: which requests run this step, with how many tokens each.

Owns the waiting queue, the running list, and every change of a request's pages and slot.
Policy (continuous batching under a token budget):
  1. running requests first, decodes before prefill chunks, in admission order; a request that
     cannot get the pages it needs preempts the most recently admitted running request (by
     recompute: its pages and slot go back, it waits at the head of the queue and later prefills
     prompt + generated tokens again), itself if it is the most recent;
  2. then, unless this step preempted, waiting requests in order, as long as budget,
     `max_num_seqs`, pages and slots allow, with no preemption on their behalf; a long prompt is
     prefilled in chunks over several steps. With prefix caching, an admitted request first takes
     the longest run of already computed full pages that its tokens begin with (never all of its
     tokens: the last one is always computed, to give logits) and starts computing after them.
     A model with GDN layers also needs the recurrent state at that point: the run is cut back to
     the longest prefix that has a state checkpoint, which the request reads (copy-on-write: its
     first step reads the checkpoint slot and writes its own). Checkpoints are taken at page-aligned
     positions: every `checkpoint_interval` tokens, at the last page boundary of the prompt, and at
     the end of every generation (the last page boundary its tokens reached when it finishes, so
     that an agent's next turn resumes after the whole answer). Prefill chunks end at the first two
     kinds (and a recomputation after a preemption at the last page boundary of its tokens); the
     slot holding the state there is handed to the cache as it is and the request goes on in a
     fresh slot, so nothing is copied. The end-of-generation checkpoint is a tail kept the same
     way at every page boundary of the generated tokens, each superseding the one before.
A request samples a token in a step whose chunk reaches the end of its tokens.
May not touch: tensors, the model, the tokenizer.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from tokenyard.engine.cache.prefix_pool import PrefixPool, chain_hash
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
        pages: PrefixPool,
        slots: PrefixPool | None,
        page_size: int,
        max_num_batched_tokens: int,
        max_num_seqs: int,
        prefix_caching: bool = False,
        checkpoint_interval: int = 4096,
    ):
        if checkpoint_interval < page_size or checkpoint_interval % page_size:
            raise ValueError(f"checkpoint_interval={checkpoint_interval}: expected a multiple of page_size={page_size}")
        self.pages = pages
        self.prefix_caching = prefix_caching
        self.checkpoint_interval = checkpoint_interval
        self.slots = slots                # None when the model has no GDN layers
        self.page_size = page_size
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0
        self.prefix_queries = 0           # tokens looked up in the prefix index
        self.prefix_hits = 0              # of which found

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
            start = request.num_computed_tokens
            wanted = self._clip(request, start, min(request.num_tokens - start, budget))
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
            hits, keys, checkpoint = self._lookup(request)
            if self.slots is not None:
                slots_taken = 1 + (checkpoint is not None and self.slots.ref_count[checkpoint] == 0)
                if self.slots.num_free < slots_taken:
                    break
            pages_taken = sum(1 for p in hits if self.pages.ref_count[p] == 0)
            start = len(hits) * self.page_size
            n = min(request.num_tokens - start, budget, (self.pages.num_free - pages_taken) * self.page_size)
            if n <= 0:
                break
            self.waiting.popleft()
            self._reuse(request, hits, keys, checkpoint)
            request.transition(RequestStatus.PREFILLING)
            if self.slots is not None:
                request.slot = self.slots.allocate(1)[0]   # after taking the checkpoint: never evicts it
            n = self._clip(request, start, n)
            self.running.append(request)
            self._take(request, n, batch)
            budget -= n
        return batch

    def _lookup(self, request: Request) -> tuple[list[int], list[int], int | None]:
        """Cached pages the request's tokens begin with, and for GDN models the checkpoint slot of
        the state at their end."""
        # A request that asks for prompt logprobs gets no hit: a prompt token's logprob comes from
        # the logits of the step that runs the token before it, and the cache keeps keys, values and
        # states, not logits. It still runs its whole prompt and leaves its pages for others.
        if not self.prefix_caching or request.params.prompt_logprobs is not None:
            return [], [], None
        ps = self.page_size
        hits, keys = self.pages.lookup(request.token_ids, ps, (request.num_tokens - 1) // ps)
        if self.slots is None:
            return hits, keys, None
        for i in range(len(hits), 0, -1):
            checkpoint = self.slots.find(keys[i - 1], request.token_ids[(i - 1) * ps:i * ps])
            if checkpoint is not None:
                return hits[:i], keys[:i], checkpoint
        return [], [], None

    def _reuse(self, request: Request, hits: list[int], keys: list[int], checkpoint: int | None) -> None:
        self.pages.acquire(hits)
        if checkpoint is not None:
            self.slots.acquire([checkpoint])
            request.read_slot = checkpoint
        request.pages, request.page_keys = list(hits), list(keys)
        request.num_computed_tokens = len(hits) * self.page_size
        if request.num_preemptions == 0:
            request.num_cached_tokens = request.num_computed_tokens
        if self.prefix_caching:
            self.prefix_queries += request.num_tokens
            self.prefix_hits += request.num_computed_tokens

    def _kept_for_good(self, request: Request, position: int) -> bool:
        """Checkpoint positions every request passes: every checkpoint_interval tokens and the
        prompt's last page boundary."""
        ps = self.page_size
        return position > 0 and position % ps == 0 and (
            position % self.checkpoint_interval == 0 or position == request.num_prompt_tokens // ps * ps)

    def _in_generation(self, request: Request, position: int) -> bool:
        """A page boundary past the prompt's last one: where the end-of-generation checkpoint may be."""
        ps = self.page_size
        return position % ps == 0 and position > request.num_prompt_tokens // ps * ps

    def _clip(self, request: Request, start: int, n: int) -> int:
        """End a GDN request's chunk at its next checkpoint position, where the state is kept; a
        request recomputing its generated tokens after a preemption also stops at the last page
        boundary of its tokens, so that its end-of-generation checkpoint is not skipped."""
        if self.slots is None or not self.prefix_caching:
            return n
        ps = self.page_size
        first_page_end = (start // ps + 1) * ps
        for position in range(first_page_end, start + n, ps):
            if self._kept_for_good(request, position) or position == request.num_tokens // ps * ps:
                return position - start
        return n

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
        request.pages, request.page_keys = [], []
        held = [s for s in (request.slot, request.read_slot) if s is not None]
        if held:
            self.slots.release(held)
        request.slot = request.read_slot = None

    # -- after the step --------------------------------------------------------------------------

    def advance(self, batch: ScheduledBatch, sampled: list[int | None]) -> None:
        """Account for a finished forward pass: computed tokens move on, sampled tokens join, and
        states at checkpoint positions are kept."""
        for request, n, token in zip(batch.requests, batch.num_new_tokens, sampled):
            request.num_computed_tokens += n
            if request.read_slot is not None:    # its state lives in its own slot from now on
                self.slots.release([request.read_slot])
                request.read_slot = None
            if self.prefix_caching:
                self._register_full_pages(request)
                position = request.num_computed_tokens
                if self.slots is not None and (self._kept_for_good(request, position)
                                               or self._in_generation(request, position)):
                    self._keep_checkpoint(request)
            if token is not None:
                request.token_ids.append(token)
                if request.status == RequestStatus.PREFILLING:
                    request.transition(RequestStatus.DECODING)

    def _keep_checkpoint(self, request: Request) -> None:
        """The request's slot holds the state at this page boundary: register it as a checkpoint and
        hand the request a fresh slot (its next step reads the checkpoint and writes the new slot).
        Any checkpoint supersedes the request's tail, its previous one in the generated tokens, which
        is forgotten; a checkpoint in the generated tokens off the interval becomes the new tail, so
        each request leaves at most one behind, at the last page boundary it reached."""
        position = request.num_computed_tokens
        key = request.page_keys[position // self.page_size - 1]
        if request.tail_checkpoint is not None:
            self.slots.forget(*request.tail_checkpoint)
            request.tail_checkpoint = None
        if self.slots.has(key) or self.slots.num_free == 0:
            return
        checkpoint = request.slot
        self.slots.register(checkpoint, key, request.token_ids[position - self.page_size:position])
        request.read_slot, request.slot = checkpoint, self.slots.allocate(1)[0]
        if not self._kept_for_good(request, position):
            request.tail_checkpoint = (checkpoint, key)

    def _register_full_pages(self, request: Request) -> None:
        for i in range(len(request.page_keys), request.num_computed_tokens // self.page_size):
            tokens = request.token_ids[i * self.page_size:(i + 1) * self.page_size]
            key = chain_hash(request.page_keys[-1] if request.page_keys else 0, tokens)
            self.pages.register(request.pages[i], key, tokens)
            request.page_keys.append(key)

    # -- the invariant ---------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """free + owned + cached == capacity for pages and for state slots (an id held by k requests
        has ref_count k); nothing in two states; only running requests hold anything."""
        requests = self.requests.values()
        pools = [(self.pages, [p for r in requests for p in r.pages])]
        if self.slots is not None:
            pools.append((self.slots, [s for r in requests for s in (r.slot, r.read_slot) if s is not None]))
        for pool, held in pools:
            owned = Counter(held)
            free, cached = pool.free_ids(), pool.cached_ids()
            everything = list(owned) + free + cached
            assert len(everything) == len(set(everything)), f"{pool.name}: an id is in two of free / owned / cached"
            assert set(everything) == set(range(pool.capacity)), (
                f"{pool.name}: free {len(free)} + owned {len(owned)} + cached {len(cached)} != capacity {pool.capacity}")
            for i, holders in owned.items():
                assert pool.ref_count[i] == holders, f"{pool.name} {i}: ref_count {pool.ref_count[i]}, held by {holders}"
            assert all(pool.ref_count[i] == 0 for i in free + cached), f"{pool.name}: a free or cached id has references"
        for request in requests:
            holds = bool(request.pages) or request.slot is not None or request.read_slot is not None
            assert not holds or request in self.running, f"{request} holds memory but is not running"
            assert request.num_computed_tokens <= len(request.pages) * self.page_size, f"{request} outgrew its pages"
