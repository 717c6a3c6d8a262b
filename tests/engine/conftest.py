"""Shared fixtures for the engine tests: tiny random HF checkpoints of the dense architectures, the
transformers models they came from (the reference), and an engine whose invariants are checked
after every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from tokenyard.engine import LLMEngine, SamplingParams

SPECIALS = ["<s>", "</s>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if tools %}tools:{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def write_byte_tokenizer(path: Path) -> int:
    """A byte-level tokenizer: every byte is a token (ids 0-255), then the special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab, [], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHAT_TEMPLATE}))
    return len(vocab)


def _config(arch: str, vocab: int):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, eos_token_id=vocab - 3, bos_token_id=vocab - 4)
    if arch == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if arch == "qwen2":
        return Qwen2Config(**common, rope_theta=1000.0)
    return Qwen3Config(**(common | dict(tie_word_embeddings=True)), head_dim=32, rope_theta=1000.0)


def make_tiny(arch: str, path: Path, seed: int = 0):
    """Save a tiny random `arch` model to `path`; return the transformers model (fp32, eval)."""
    from transformers import AutoModelForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    vocab = write_byte_tokenizer(path)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, vocab), dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # O(1) activations and decisive logits, so greedy has clear winners
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    return model


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the threads'
    spin-waits cost more than the work; both sides of every comparison run with one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", params=["llama", "qwen2", "qwen3"])
def tiny(request, tmp_path_factory):
    """(checkpoint dir, transformers reference model) for each dense architecture."""
    path = tmp_path_factory.mktemp(request.param)
    return path, make_tiny(request.param, path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    return path, make_tiny("llama", path)


class CheckedEngine(LLMEngine):
    """An LLMEngine that checks free + owned + cached == capacity after every step."""

    def step(self):
        outputs = super().step()
        self.check_invariants()
        return outputs


def run(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams | list[SamplingParams],
        on_step=None) -> dict[str, "RequestOutput"]:  # noqa: F821
    """Add prompts as requests r0, r1, ...; step to completion; the final output of each."""
    params = params if isinstance(params, list) else [params] * len(prompts)
    for i, (p, sp) in enumerate(zip(prompts, params)):
        engine.add_request(f"r{i}", p, sp)
    final, steps = {}, 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                final[out.request_id] = out
        steps += 1
        if on_step:
            on_step(engine, steps)
    stats = engine.stats()
    assert stats["running"] == stats["waiting"] == 0
    assert stats["free_pages"] == stats["total_pages"] and stats["free_slots"] == stats["total_slots"]
    return final


def engine(path, **kw) -> CheckedEngine:
    kw.setdefault("kv_cache_memory", 8 << 20)
    return CheckedEngine(str(path), dtype="float32", device="cpu", **kw)


def hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    """n argmax tokens from transformers' own forward with its KV cache (no generation processors:
    eos is just another token)."""
    ids, past, step_input = [], None, torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            out = model(step_input, past_key_values=past, use_cache=True)
            past = out.past_key_values
            ids.append(int(out.logits[0, -1].argmax()))
            step_input = torch.tensor([[ids[-1]]])
    return ids


def hf_prompt_logprobs(model, prompt: list[int]) -> torch.Tensor:
    """logprob of prompt token i+1 given tokens 0..i, for i < len(prompt) - 1."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[:-1].gather(1, torch.tensor(prompt[1:])[:, None])[:, 0]
