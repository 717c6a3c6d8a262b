"""load_format="dummy": a model directory with only config.json and a tokenizer loads with random
weights under exactly the names and shapes a real checkpoint has (the models' loaders reject an
unknown, misshapen or missing tensor), for every architecture; and bad arguments are named."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import make_tiny
from tests.engine.tiny_configs import BUILDERS, one_thread  # noqa: F401 (autouse fixture)
from tokenyard.engine import LLMEngine, SamplingParams
from tokenyard.engine.loader import load_checkpoint


def _config_only(path):
    for f in path.glob("*.safetensors*"):
        f.unlink()
    return path


@pytest.mark.parametrize("arch", ["llama", *BUILDERS])
def test_config_only_directory_loads_random_weights_and_generates(arch, tmp_path):
    if arch == "llama":
        make_tiny("llama", tmp_path)
    else:
        BUILDERS[arch](tmp_path)
    _config_only(tmp_path)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        LLMEngine(str(tmp_path), device="cpu", kv_cache_memory=8 << 20)
    engine = LLMEngine(str(tmp_path), device="cpu", kv_cache_memory=8 << 20, load_format="dummy")
    engine.add_request("r", list(range(20)), SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    outs = []
    while engine.has_unfinished_requests():
        outs += [o for o in engine.step() if o.finished]
    assert len(outs[0].token_ids) == 4
    weights = dict(load_checkpoint(tmp_path, "dummy").weights())
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert any(w.dim() >= 2 and w.std() > 0 for w in weights.values())


def test_bad_load_format_is_named(tmp_path):
    with pytest.raises(ValueError, match="load_format='safetensors': expected one of"):
        load_checkpoint(tmp_path, "safetensors")
