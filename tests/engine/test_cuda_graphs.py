"""Decode through captured CUDA graphs gives exactly the logits of the eager forward pass, and an
engine whose decode path cannot be captured falls back to eager decoding, intact (GPU only)."""

from __future__ import annotations

import random

import pytest
import torch

from tests.engine.conftest import make_tiny
from tokenyard.engine import LLMEngine, SamplingParams
from tokenyard.engine.runner.runner import make_forward_batch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _engine(path, dtype):
    return LLMEngine(str(path), dtype=dtype, device="cuda", kv_cache_memory=64 << 20, max_num_seqs=16)


def _prefilled(engine, n=5):
    rng = random.Random(0)
    for i in range(n):
        prompt = [rng.randrange(200) for _ in range(rng.randint(5, 60))]
        engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=3, temperature=0))
    engine.step()
    return list(engine.scheduler.running)


def test_graph_replay_equals_eager_decode(tmp_path):
    make_tiny("llama", tmp_path)
    engine = _engine(tmp_path, "bfloat16")
    if engine.runner.graphs is None:
        pytest.skip("no capturable bf16 decode kernels registered on this device")
    requests = _prefilled(engine)
    batch = make_forward_batch([[r.token_ids[-1]] for r in requests], [r.num_computed_tokens for r in requests],
                               [r.pages for r in requests], engine.caches.page_size, engine.device)
    eager = engine.model.forward(batch, engine.caches).clone()
    assert torch.equal(engine.runner.graphs.run(batch), eager)


def test_uncapturable_decode_falls_back_to_eager(tmp_path, monkeypatch):
    from tokenyard.engine.models.llama import LlamaForCausalLM

    forward = LlamaForCausalLM.forward

    def syncing_forward(self, batch, caches):
        int(batch.seqlens_k.max())   # a host sync, as a kernel without a capturable version would do
        return forward(self, batch, caches)

    monkeypatch.setattr(LlamaForCausalLM, "forward", syncing_forward)
    make_tiny("llama", tmp_path)
    engine = _engine(tmp_path, "bfloat16")
    assert engine.runner.graphs is None
    _prefilled(engine)
    while engine.has_unfinished_requests():
        engine.step()
        engine.check_invariants()
    # sampling still works after the refused capture (a failed capture would have broken CUDA's RNG)
    engine.add_request("s", [1, 2, 3], SamplingParams(max_tokens=4, temperature=1.0, seed=3))
    outputs = []
    while engine.has_unfinished_requests():
        outputs += engine.step()
    assert outputs[-1].finished and len(outputs[-1].token_ids) == 4
