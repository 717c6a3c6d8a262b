"""Prometheus metrics, named after vLLM's (`vllm:x` is `tokenyard:x` here) so that existing
dashboards need only the prefix changed.

One `Metrics` per server, on its own CollectorRegistry (several servers in one process, as in the
tests, do not collide). Request-level numbers come from the engine loop's outputs: the loop calls
`request_added` when the engine accepts a request and `observe_step` after every step, both on the
engine thread. Latencies are measured there too: TTFT from acceptance to the step that produced
the first token, inter-token latency between the steps that produced consecutive tokens.

Owns the metric objects only.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from tokenyard.engine.outputs import RequestOutput

# The `_created` series double every counter for no use here (vLLM turns them off too).
disable_created_metrics()

# vLLM's buckets, trimmed to the range a CPU or one GPU sees.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)


class Metrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        r = self.registry

        def counter(name, doc, extra=()):
            return Counter(f"tokenyard:{name}", doc, labels + list(extra), registry=r)

        self.running = Gauge("tokenyard:num_requests_running", "Requests in a batch (prefilling or decoding).", labels, registry=r)
        self.waiting = Gauge("tokenyard:num_requests_waiting", "Requests waiting to be scheduled.", labels, registry=r)
        self.kv_usage = Gauge("tokenyard:kv_cache_usage_perc", "Fraction of KV-cache pages in use (1 = full).", labels, registry=r)
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of accepted requests.")
        self.generation_tokens = counter("generation_tokens", "Generated tokens.")
        self.cache_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.cache_hits = counter("prefix_cache_hits", "Prompt tokens served from the prefix cache.")
        self.preemptions = counter("num_preemptions", "Requests preempted (by recompute).")
        self.finished = counter("request_success", "Finished requests by finish reason.", ["finished_reason"])
        self.ttft = Histogram("tokenyard:time_to_first_token_seconds", "Time to first token.", labels, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("tokenyard:inter_token_latency_seconds", "Time between consecutive tokens.", labels, buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("tokenyard:e2e_request_latency_seconds", "Request latency, acceptance to finish.", labels, buckets=E2E_BUCKETS, registry=r)
        self.model_name = model_name
        for metric in (self.running, self.waiting, self.prompt_tokens, self.generation_tokens, self.cache_queries,
                       self.cache_hits, self.preemptions, self.ttft, self.itl, self.e2e):
            metric.labels(model_name)  # present from the start, at 0
        self._accepted: dict[str, float] = {}
        self._last_token: dict[str, float] = {}
        self._seen_preemptions = 0
        self._lock = threading.Lock()

    def request_added(self, request_id: str, num_prompt_tokens: int) -> None:
        with self._lock:
            self._accepted[request_id] = time.perf_counter()
        self.prompt_tokens.labels(self.model_name).inc(num_prompt_tokens)

    def observe_step(self, outputs: list[RequestOutput], stats: dict) -> None:
        now = time.perf_counter()
        m = self.model_name
        for out in outputs:
            with self._lock:
                accepted = self._accepted.get(out.request_id, now)
                last = self._last_token.get(out.request_id)
            if out.new_token_ids:
                self.generation_tokens.labels(m).inc(len(out.new_token_ids))
                if last is None:
                    self.ttft.labels(m).observe(now - accepted)
                    self.cache_queries.labels(m).inc(out.num_prompt_tokens)
                    self.cache_hits.labels(m).inc(out.cached_tokens)
                else:
                    # Several tokens in one step (a held-back stop-string prefix) share its time.
                    n = len(out.new_token_ids)
                    for _ in range(n):
                        self.itl.labels(m).observe((now - last) / n)
                with self._lock:
                    self._last_token[out.request_id] = now
            if out.finished:
                self.finished.labels(m, out.finish_reason or "unknown").inc()
                self.e2e.labels(m).observe(now - accepted)
                with self._lock:
                    self._accepted.pop(out.request_id, None)
                    self._last_token.pop(out.request_id, None)
        self.update_gauges(stats)

    def update_gauges(self, stats: dict) -> None:
        m = self.model_name
        self.running.labels(m).set(stats["running"])
        self.waiting.labels(m).set(stats["waiting"])
        if stats.get("total_pages"):
            self.kv_usage.labels(m).set(1.0 - stats["free_pages"] / stats["total_pages"])
        preemptions = stats.get("preemptions", 0)
        if preemptions > self._seen_preemptions:
            self.preemptions.labels(m).inc(preemptions - self._seen_preemptions)
            self._seen_preemptions = preemptions

    def render(self) -> bytes:
        return generate_latest(self.registry)
