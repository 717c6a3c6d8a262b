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

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from tokenyard.engine.outputs import RequestOutput

# The `_created` series would double every counter and histogram for no use here.
disable_created_metrics()

# vLLM's buckets, trimmed to the range a CPU or one GPU sees.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)


class Metrics:
    """Called only from the engine thread (`request_added`, `observe_step`, `update_gauges`); the
    HTTP side only renders."""

    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["model_name"]
        self.model_name = model_name

        def one(metric):  # the model's child, created now so that it shows at 0 from the start
            return metric.labels(model_name)

        def counter(name, doc):
            return one(Counter(f"tokenyard:{name}", doc, labels, registry=r))

        def gauge(name, doc):
            return one(Gauge(f"tokenyard:{name}", doc, labels, registry=r))

        def histogram(name, doc, buckets):
            return one(Histogram(f"tokenyard:{name}", doc, labels, buckets=buckets, registry=r))

        self.running = gauge("num_requests_running", "Requests in a batch (prefilling or decoding).")
        self.waiting = gauge("num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_usage = gauge("kv_cache_usage_perc", "Fraction of KV-cache pages in use (1 = full).")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens of accepted requests.")
        self.generation_tokens = counter("generation_tokens", "Generated tokens.")
        self.cache_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.cache_hits = counter("prefix_cache_hits", "Prompt tokens served from the prefix cache.")
        self.preemptions = counter("num_preemptions", "Requests preempted (by recompute).")
        self.ttft = histogram("time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.itl = histogram("inter_token_latency_seconds", "Time between consecutive tokens.", ITL_BUCKETS)
        self.e2e = histogram("e2e_request_latency_seconds", "Request latency, acceptance to finish.", E2E_BUCKETS)
        self.finished = Counter("tokenyard:request_success", "Finished requests by finish reason.",
                                labels + ["finished_reason"], registry=r)
        self._accepted: dict[str, float] = {}
        self._last_token: dict[str, float] = {}
        self._seen_preemptions = 0

    def request_added(self, request_id: str, num_prompt_tokens: int) -> None:
        self._accepted[request_id] = time.perf_counter()
        self.prompt_tokens.inc(num_prompt_tokens)

    def observe_step(self, outputs: list[RequestOutput], stats: dict) -> None:
        now = time.perf_counter()
        for out in outputs:
            accepted = self._accepted.get(out.request_id, now)
            if out.new_token_ids:
                self.generation_tokens.inc(len(out.new_token_ids))
                last = self._last_token.get(out.request_id)
                if last is None:
                    self.ttft.observe(now - accepted)
                    self.cache_queries.inc(out.num_prompt_tokens)
                    self.cache_hits.inc(out.cached_tokens)
                else:
                    # Several tokens in one step (a held-back stop-string prefix) share its time.
                    n = len(out.new_token_ids)
                    for _ in range(n):
                        self.itl.observe((now - last) / n)
                self._last_token[out.request_id] = now
            if out.finished:
                self.finished.labels(self.model_name, out.finish_reason or "unknown").inc()
                self.e2e.observe(now - accepted)
                self._accepted.pop(out.request_id, None)
                self._last_token.pop(out.request_id, None)
        self.update_gauges(stats)

    def update_gauges(self, stats: dict) -> None:
        self.running.set(stats["running"])
        self.waiting.set(stats["waiting"])
        if stats.get("total_pages"):
            self.kv_usage.set(1.0 - stats["free_pages"] / stats["total_pages"])
        preemptions = stats.get("preemptions", 0)
        if preemptions > self._seen_preemptions:
            self.preemptions.inc(preemptions - self._seen_preemptions)
            self._seen_preemptions = preemptions

    def render(self) -> bytes:
        return generate_latest(self.registry)
