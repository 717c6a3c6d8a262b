"""LLMEngine: the stepping engine under both the offline API and the server.

Owns: building the model, caches, scheduler and runner from a model path and engine arguments;
admitting requests (validated: a bad one raises ValueError naming the argument and changes
nothing); each step's bookkeeping after the forward pass (tokens, logprobs, detokenization, stop
conditions, finishing); outputs and stats. Every public method takes one lock, so a server may call
add_request / abort_request from another thread while a loop calls step().
"""

from __future__ import annotations

import itertools
import logging
import threading

import torch

from tokenyard.engine.cache import PrefixPool, memory_budget, num_pages_for_budget
from tokenyard.engine.detokenizer import IncrementalDetokenizer
from tokenyard.engine.loader import load_checkpoint
from tokenyard.engine.models import ModelCaches, model_class
from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams
from tokenyard.engine.runner.cuda_graphs import DecodeGraphs, NotCapturable
from tokenyard.engine.runner.runner import ModelRunner, StepResult
from tokenyard.engine.scheduler.request import Request, RequestStatus
from tokenyard.engine.scheduler.scheduler import ScheduledBatch, Scheduler

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(_DTYPES)} or 'auto'")
    return _DTYPES[dtype]


class LLMEngine:
    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        page_size: int | None = None,
        max_model_len: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_num_seqs: int | None = None,
        kv_cache_memory: int | None = None,
        gpu_memory_utilization: float = 0.85,
        num_state_slots: int | None = None,
        enable_prefix_caching: bool = True,
        checkpoint_interval: int = 4096,
        cuda_graphs: bool = True,
        load_format: str = "auto",
    ):
        if model is None:
            from tokenyard.engine.default_model import default_model_path

            model = default_model_path()
        self.model_path = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _resolve_dtype(dtype, self.device)
        if page_size is None:
            # On CUDA a page holds a whole K/V tile of the attention kernels (TMA bulk copies of 64
            # rows, bench/RESULTS.md); on the CPU smaller pages share more of a prefix.
            page_size = 64 if self.device.type == "cuda" else 16
        if page_size < 1:
            raise ValueError(f"page_size={page_size}: expected >= 1")
        checkpoint = load_checkpoint(model, load_format, self.dtype, self.device)
        self.config = checkpoint.config
        self.tokenizer = checkpoint.tokenizer
        self.eos_token_ids = checkpoint.eos_token_ids
        self.model = model_class(checkpoint.config)(checkpoint.config, self.dtype, self.device)
        self.model.load_weights(checkpoint.weights())
        self.vocab_size = checkpoint.config.get("vocab_size") or self.tokenizer.vocab_size

        cuda = self.device.type == "cuda"
        max_num_seqs = max_num_seqs or (256 if cuda else 32)
        spec = self.model.cache_spec()
        budget = kv_cache_memory or memory_budget(self.device, gpu_memory_utilization)
        num_slots = 0
        if spec.has_gdn:
            # a running state per request and as many again for cached checkpoints, in at most half
            # the budget (states of large hybrid models take tens of MB); fewer slots, fewer running
            wanted = max_num_seqs * (2 if enable_prefix_caching else 1)
            num_slots = num_state_slots or max(1, min(wanted, budget // 2 // spec.bytes_per_slot(self.dtype)))
        num_pages = num_pages_for_budget(spec, self.dtype, page_size, num_slots, budget)
        self.caches = ModelCaches.allocate(spec, num_pages, page_size, num_slots, self.dtype, self.device)

        capacity = num_pages * page_size
        config_len = self.config.get("max_position_embeddings") or capacity
        if max_model_len is not None and max_model_len > min(config_len, capacity):
            raise ValueError(f"max_model_len={max_model_len}: the model supports {config_len} positions and the "
                             f"cache holds {capacity} tokens ({num_pages} pages of {page_size})")
        self.max_model_len = max_model_len or min(config_len, capacity)
        self.scheduler = Scheduler(
            pages=PrefixPool("page", num_pages),
            slots=PrefixPool("state slot", num_slots) if spec.has_gdn else None,
            page_size=page_size,
            max_num_batched_tokens=max_num_batched_tokens or (8192 if cuda else 2048),
            max_num_seqs=max_num_seqs,
            prefix_caching=enable_prefix_caching,
            checkpoint_interval=checkpoint_interval,
        )
        graphs = self._capture_decode_graphs(max_num_seqs, page_size) if cuda and cuda_graphs else None
        self.runner = ModelRunner(self.model, self.caches, self.device, has_state=spec.has_gdn, graphs=graphs)
        self._lock = threading.Lock()
        self._arrivals = itertools.count()
        self._detokenizers: dict[str, IncrementalDetokenizer] = {}
        self._pending: list[RequestOutput] = []   # outputs of aborts, handed out by the next step
        self.counters = {"prompt_tokens": 0, "generation_tokens": 0}
        log.info("engine ready: %s on %s %s, %d pages x %d tokens, %d state slots, max_model_len %d",
                 self.model_path, self.device, self.dtype, num_pages, page_size, num_slots, self.max_model_len)

    def _capture_decode_graphs(self, max_num_seqs: int, page_size: int) -> DecodeGraphs | None:
        graphs = DecodeGraphs(self.model, self.caches, self.device, max_batch=max_num_seqs,
                              max_pages=-(-self.max_model_len // page_size))
        try:
            graphs.capture()
        except NotCapturable as error:
            log.warning("no CUDA graphs, decode runs eagerly: %s", error)
            return None
        log.info("captured decode CUDA graphs for batch sizes %s", graphs.sizes)
        return graphs

    # -- requests --------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict], tools: list[dict] | None = None,
                            add_generation_prompt: bool = True, **template_kwargs) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, tools, add_generation_prompt, **template_kwargs)

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams | None = None) -> None:
        params = SamplingParams() if params is None else params
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params={params!r}: expected a SamplingParams")
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id={request_id!r}: expected a non-empty string")
        if not isinstance(prompt_token_ids, (list, tuple)) or not prompt_token_ids:
            raise ValueError(f"prompt_token_ids: expected a non-empty list of token ids, got {prompt_token_ids!r:.80}")
        bad = [t for t in prompt_token_ids if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt_token_ids holds {bad[:5]}: expected integers in [0, {self.vocab_size})")
        if len(prompt_token_ids) >= self.max_model_len:
            raise ValueError(f"prompt_token_ids has {len(prompt_token_ids)} tokens: the prompt plus at least one "
                             f"generated token must fit in max_model_len={self.max_model_len}")
        with self._lock:
            if request_id in self.scheduler.requests:
                raise ValueError(f"request_id={request_id!r} is already running")
            request = Request(request_id, prompt_token_ids, params, next(self._arrivals))
            if params.prompt_logprobs is not None:
                request.prompt_logprobs = [None]
            self._detokenizers[request_id] = IncrementalDetokenizer(self.tokenizer, params)
            self.scheduler.add(request)

    def abort_request(self, request_id: str) -> bool:
        """Abort wherever the request is; its memory is returned now. False if it is not known."""
        with self._lock:
            request = self.scheduler.requests.get(request_id)
            if request is None:
                return False
            self.scheduler.finish(request, RequestStatus.FINISHED_ABORTED)
            self._pending.append(self._output(request, [], None))
            return True

    def has_unfinished_requests(self) -> bool:
        with self._lock:
            return self.scheduler.has_unfinished() or bool(self._pending)

    # -- stepping --------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        with self._lock:
            outputs, self._pending = self._pending, []
            plan = self.scheduler.schedule()
            if not plan.requests:
                return outputs
            try:
                result = self.runner.run(plan)
            except Exception as error:   # the requests in this batch fail; the engine carries on
                log.exception("step failed for %s", [r.request_id for r in plan.requests])
                for request in plan.requests:
                    self.scheduler.finish(request, RequestStatus.FINISHED_ERROR)
                    outputs.append(self._output(request, [], None, error=f"{type(error).__name__}: {error}"))
                return outputs
            self.scheduler.advance(plan, result.sampled)
            outputs += self._process(plan, result)
            return outputs

    def _process(self, plan: ScheduledBatch, result: StepResult) -> list[RequestOutput]:
        outputs = []
        for i, request in enumerate(plan.requests):
            if result.prompt_logprobs[i]:
                request.prompt_logprobs += result.prompt_logprobs[i]
            token = result.sampled[i]
            if token is None:
                continue
            if request.num_output_tokens == 1 and request.num_preemptions == 0:
                self.counters["prompt_tokens"] += request.num_prompt_tokens
            self.counters["generation_tokens"] += 1
            if result.logprobs[i] is not None:
                request.logprobs.append(result.logprobs[i])
            status = self._check_stop(request, token)
            if status is not None:
                self.scheduler.finish(request, status)
            outputs.append(self._output(request, [token], result.logprobs[i]))
        return outputs

    def _check_stop(self, request: Request, token: int) -> RequestStatus | None:
        params = request.params
        stop_string = self._detokenizers[request.request_id].push(token)
        if (not params.ignore_eos and token in self.eos_token_ids) or token in params.stop_token_ids:
            request.stop_reason = token
            return RequestStatus.FINISHED_STOPPED
        if stop_string is not None:
            request.stop_reason = stop_string
            return RequestStatus.FINISHED_STOPPED
        if params.max_tokens is not None and request.num_output_tokens >= params.max_tokens:
            return RequestStatus.FINISHED_LENGTH
        if request.num_tokens >= self.max_model_len:
            return RequestStatus.FINISHED_LENGTH
        return None

    def _output(self, request: Request, new_tokens: list[int], new_logprob: dict | None,
                error: str | None = None) -> RequestOutput:
        detokenizer = self._detokenizers[request.request_id]
        finished = request.is_finished
        if finished:
            del self._detokenizers[request.request_id]
        first = request.num_output_tokens == len(new_tokens)
        return RequestOutput(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            new_token_ids=new_tokens,
            new_text=detokenizer.take(finished),
            token_ids=request.output_token_ids,
            text=detokenizer.text,
            finished=finished,
            finish_reason=request.finish_reason,
            stop_reason=request.stop_reason,
            cached_tokens=request.num_cached_tokens,
            new_logprobs=[new_logprob] if new_logprob is not None else None,
            logprobs=request.logprobs if request.params.logprobs is not None else None,
            prompt_logprobs=request.prompt_logprobs if request.params.prompt_logprobs is not None and (first or finished) else None,
            error=error,
        )

    # -- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict:
        with self._lock:
            s = self.scheduler
            return {
                "running": len(s.running),
                "waiting": len(s.waiting),
                "free_pages": s.pages.num_free,         # unused or evictable cached
                "cached_pages": s.pages.num_cached,     # of which hold a cached prefix
                "total_pages": s.pages.capacity,
                "free_slots": s.slots.num_free if s.slots else 0,       # unused or evictable checkpoints
                "checkpoint_slots": s.slots.num_cached if s.slots else 0,
                "total_slots": s.slots.capacity if s.slots else 0,
                "page_size": s.page_size,
                "preemptions": s.num_preemptions,
                "prefix_cache_queries": s.prefix_queries,  # tokens looked up
                "prefix_cache_hits": s.prefix_hits,        # tokens found
                "prompt_tokens": self.counters["prompt_tokens"],
                "generation_tokens": self.counters["generation_tokens"],
            }

    def check_invariants(self) -> None:
        with self._lock:
            self.scheduler.check_invariants()
