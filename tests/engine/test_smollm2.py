"""SmolLM2-135M-Instruct, the embedded default, against transformers in fp32 on CPU.

The reference is independent of tokenyard's loader: transformers' own GGUF reader dequantizes the
file and undoes llama.cpp's q/k permutation, and transformers' LlamaForCausalLM runs it."""

from __future__ import annotations

import pytest
import torch

from tests.engine.conftest import CheckedEngine, hf_greedy, hf_prompt_logprobs, run
from tokenyard.engine import SamplingParams
from tokenyard.engine.default_model import default_gguf_path

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def gguf_path():
    try:
        return default_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference(gguf_path):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = load_gguf_checkpoint(str(gguf_path))["config"]
    config = LlamaConfig(**{k: v for k, v in config.items() if k not in ("model_type", "_model_name_or_path")})
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton)["tensors"]
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    return model


@pytest.fixture(scope="module")
def smol(gguf_path):
    return CheckedEngine(str(gguf_path), dtype="float32", device="cpu", kv_cache_memory=64 << 20)


@pytest.fixture(scope="module")
def prompt(smol):
    return smol.apply_chat_template(MESSAGES)


def test_chat_prompt_tokens_match_transformers_tokenizer(gguf_path, prompt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    expected = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert prompt == list(expected)


def test_prompt_logprobs_match_transformers_within_1e_4(smol, reference, prompt):
    out = run(smol, [prompt], SamplingParams(max_tokens=1, prompt_logprobs=0))["r0"]
    ours = torch.tensor([next(iter(e.values())) for e in out.prompt_logprobs[1:]])
    torch.testing.assert_close(ours, hf_prompt_logprobs(reference, prompt), atol=1e-4, rtol=0)


def test_greedy_continuation_identical_and_sensible(smol, reference, prompt):
    out = run(smol, [prompt], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))["r0"]
    assert out.token_ids == hf_greedy(reference, prompt, 12)
    assert "Paris" in out.text


def test_converted_default_dir_gives_the_same_tokens(smol, prompt, tmp_path, gguf_path):
    from tokenyard.engine.default_model import convert_gguf

    converted = CheckedEngine(str(convert_gguf(gguf_path, tmp_path / "smol")), dtype="float32", device="cpu",
                              kv_cache_memory=64 << 20)
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    assert converted.apply_chat_template(MESSAGES) == prompt
    assert run(converted, [prompt], params)["r0"].token_ids == run(smol, [prompt], params)["r0"].token_ids
