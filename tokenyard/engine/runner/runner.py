"""The model runner: a planned batch in, sampled tokens and logprobs out.

Owns: building `ForwardBatch` metadata from the scheduler's plan (`make_forward_batch`, also the
one way tests and model authors build a batch), running the model, sampling through
`tokenyard.kernel_api.sample`, and logprobs. May not touch request states, pages or slots beyond
reading them. On CUDA, decode batches replay captured graphs (runner/cuda_graphs.py); everything
else runs eagerly.

Seeds: a seeded request's n-th generated token is sampled with seed hash(seed, n), so it is the
same whether the request ran alone, in a batch, or was preempted and recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.models.base import ForwardBatch, ModelCaches
from tokenyard.engine.runner.cuda_graphs import DecodeGraphs
from tokenyard.engine.scheduler.request import Request
from tokenyard.engine.scheduler.scheduler import ScheduledBatch

_SEED_MASK = (1 << 62) - 1


def make_forward_batch(
    token_ids: list[list[int]],
    starts: list[int],
    pages: list[list[int]],
    page_size: int,
    device: torch.device,
    read_slots: list[int] | None = None,
    write_slots: list[int] | None = None,
    logits_rows: list[list[int]] | None = None,
) -> ForwardBatch:
    """A batch of sequences: sequence b feeds `token_ids[b]` at positions starts[b].., its keys go
    to `pages[b]`; `logits_rows[b]` lists which of its new tokens want logits (default: the last)."""
    q_lens = [len(t) for t in token_ids]
    k_lens = [s + n for s, n in zip(starts, q_lens)]
    B = len(token_ids)
    ids, positions, slots, wanted = [], [], [], []
    offset = 0
    for b in range(B):
        ids += token_ids[b]
        seq_pages = pages[b]
        pos = range(starts[b], k_lens[b])
        positions += pos
        slots += [seq_pages[p // page_size] * page_size + p % page_size for p in pos]
        rows = logits_rows[b] if logits_rows is not None else [q_lens[b] - 1]
        wanted += [offset + r for r in rows]
        offset += q_lens[b]
    is_decode = all(n == 1 for n in q_lens)
    within = torch.arange(page_size)
    key_slots = [] if is_decode else [   # every key of every sequence: long prefixes, so vectorized
        (torch.tensor(pages[b], dtype=torch.int64)[:, None] * page_size + within).flatten()[:k_lens[b]] for b in range(B)]
    max_pages = max((len(p) for p in pages), default=0) or 1
    table = [p + [0] * (max_pages - len(p)) for p in pages]
    cu_q, cu_k = [0], [0]
    for n, k in zip(q_lens, k_lens):
        cu_q.append(cu_q[-1] + n)
        cu_k.append(cu_k[-1] + k)

    def i32(x):
        return torch.tensor(x, dtype=torch.int32, device=device)

    def i64(x):
        return torch.tensor(x, dtype=torch.int64, device=device)

    return ForwardBatch(
        input_ids=i64(ids), positions=i64(positions), cu_seqlens_q=i32(cu_q), seqlens_k=i32(k_lens),
        page_table=i32(table).reshape(B, max_pages), slot_mapping=i64(slots),
        state_read_slots=i32(read_slots if read_slots is not None else [-1] * B),
        state_write_slots=i32(write_slots if write_slots is not None else [-1] * B),
        logits_indices=i64(wanted), is_decode=is_decode, q_lens=q_lens, k_lens=k_lens,
        cu_seqlens_k=i32(cu_k), key_slots=torch.cat(key_slots).to(device) if key_slots else i64([]),
    )


@dataclass
class StepResult:
    sampled: list[int | None]                                  # per scheduled request: its new token, or None
    logprobs: list[dict[int, float] | None]                    # per scheduled request, for its new token
    prompt_logprobs: list[list[dict[int, float]]]              # per scheduled request, for prompt tokens


def _top(logprobs: torch.Tensor, chosen: torch.Tensor, k: int) -> list[dict[int, float]]:
    """Per row: {chosen token: logprob, then the top k tokens: logprobs}."""
    picked = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
    top_lp, top_ids = logprobs.topk(k, dim=-1) if k else (None, None)
    out = []
    for r, token in enumerate(chosen.tolist()):
        entry = {token: picked[r]}
        if k:
            for t, lp in zip(top_ids[r].tolist(), top_lp[r].tolist()):
                entry.setdefault(t, lp)
        out.append(entry)
    return out


class ModelRunner:
    def __init__(self, model, caches: ModelCaches, device: torch.device, has_state: bool,
                 graphs: DecodeGraphs | None = None):
        self.model = model
        self.caches = caches
        self.device = device
        self.has_state = has_state
        self.graphs = graphs

    @staticmethod
    def _read_slot(request: Request) -> int:
        """Where a GDN request's state starts this step: a checkpoint, its own slot, or zeros."""
        if request.read_slot is not None:
            return request.read_slot
        return request.slot if request.num_computed_tokens > 0 else -1

    def _logits_rows(self, request: Request, n: int, samples: bool) -> tuple[list[int], list[int]]:
        """(rows wanted for prompt logprobs, as chunk offsets; the prompt tokens they score)."""
        if request.params.prompt_logprobs is None:
            return [], []
        start = request.num_computed_tokens
        # row j scores the token at position start + j + 1; each prompt token is scored once
        first = max(start, len(request.prompt_logprobs) - 1 if request.prompt_logprobs else 0)
        last = min(start + n, request.num_prompt_tokens - 1)
        rows = list(range(first - start, last - start))
        return rows, [request.token_ids[start + j + 1] for j in rows]

    def run(self, plan: ScheduledBatch) -> StepResult:
        token_ids, starts, pages, slots, rows = [], [], [], [], []
        prompt_rows: list[tuple[list[int], list[int]]] = []
        for i, (request, n) in enumerate(zip(plan.requests, plan.num_new_tokens)):
            start = request.num_computed_tokens
            token_ids.append(request.token_ids[start:start + n])
            starts.append(start)
            pages.append(request.pages)
            slots.append(request.slot if request.slot is not None else -1)
            p_rows, p_targets = self._logits_rows(request, n, plan.samples(i))
            prompt_rows.append((p_rows, p_targets))
            rows.append(p_rows + ([n - 1] if plan.samples(i) else []))
        read = [self._read_slot(r) for r in plan.requests] if self.has_state else None
        batch = make_forward_batch(token_ids, starts, pages, self.caches.page_size, self.device,
                                   read_slots=read, write_slots=slots if self.has_state else None, logits_rows=rows)
        if self.graphs is not None and self.graphs.fits(batch):
            logits = self.graphs.run(batch)
        else:
            logits = self.model.forward(batch, self.caches)
        return self._sample(plan, logits, [len(r) for r in rows], prompt_rows)

    def _sample(self, plan: ScheduledBatch, logits: torch.Tensor, row_counts: list[int],
                prompt_rows: list[tuple[list[int], list[int]]]) -> StepResult:
        sampled: list[int | None] = [None] * len(plan.requests)
        logprobs: list[dict[int, float] | None] = [None] * len(plan.requests)
        prompt_lps: list[list[dict[int, float]]] = [[] for _ in plan.requests]
        which, last_rows, offset = [], [], 0
        for i, request in enumerate(plan.requests):
            p_rows, p_targets = prompt_rows[i]
            if p_rows:
                lp = torch.log_softmax(logits[offset:offset + len(p_rows)], dim=-1)
                prompt_lps[i] = _top(lp, torch.tensor(p_targets, device=lp.device), request.params.prompt_logprobs)
            offset += row_counts[i]
            if plan.samples(i):
                which.append(i)
                last_rows.append(offset - 1)
        if not which:
            return StepResult(sampled, logprobs, prompt_lps)
        rows = logits[torch.tensor(last_rows, device=logits.device)]
        params = [plan.requests[i].params for i in which]
        seeds = [(hash((p.seed, plan.requests[i].num_output_tokens)) & _SEED_MASK) if p.seed is not None else -1
                 for i, p in zip(which, params)]
        dev = rows.device
        ids = ops.sample(
            rows,
            torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev),
            torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev),
            torch.tensor([p.top_k for p in params], dtype=torch.int32, device=dev),
            torch.tensor([p.min_p for p in params], dtype=torch.float32, device=dev),
            torch.tensor(seeds, dtype=torch.int64, device=dev),
        )
        for i, token in zip(which, ids.tolist()):
            sampled[i] = token
        want = [j for j, p in enumerate(params) if p.logprobs is not None]
        if want:
            lp = torch.log_softmax(rows[want], dim=-1)
            k = max(params[j].logprobs for j in want)
            entries = _top(lp, ids[want], k)
            for j, entry in zip(want, entries):
                keep = params[j].logprobs + 1
                logprobs[which[j]] = dict(list(entry.items())[:keep])
        return StepResult(sampled, logprobs, prompt_lps)
