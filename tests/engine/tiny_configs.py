"""Tiny random checkpoints of the hybrid and DeepSeek architectures, written by transformers.

Each builder makes a transformers model from a small config that keeps every feature of the
architecture (mixed layer kinds, MoE with shared experts, grouped routing, partial and YaRN RoPE,
q_lora or not), gives it weights large enough that greedy decoding has clear winners, and saves it
as an HF directory (config.json, safetensors, the byte tokenizer of conftest.py); Qwen3-Next's and
DeepSeek's config.json are written in the older style of their released checkpoints. The in-memory
transformers model is returned as the reference the tests compare tokenyard against.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.engine.conftest import SPECIALS, write_byte_tokenizer

VOCAB = 256 + len(SPECIALS)   # write_byte_tokenizer's bytes, then its special tokens
EOS = VOCAB - 3               # "</s>"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on two shared cores: one intra-op thread runs ~10x faster than two (no OpenMP
    spinning against other processes) and keeps every reduction in one order. Autouse in every
    module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights ~ N(0, 1/fan_in) for matrices, 1-D parameters (norms, A_log, dt_bias) perturbed,
    router correction biases random: activations O(1), logits with clear maxima."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
            else:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))


def _save(model: torch.nn.Module, path: Path, fused_experts: bool, released: bool) -> None:
    model.save_pretrained(path)
    if fused_experts:
        # transformers writes per-expert tensors; rewrite with its in-memory fused layout
        # (experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]) as pre-fused checkpoints have it.
        for f in path.glob("*.safetensors"):
            f.unlink()
        index = path / "model.safetensors.index.json"
        if index.exists():
            index.unlink()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    if released:
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps(_as_released(config)))
    write_byte_tokenizer(path)


def _as_released(config: dict) -> dict:
    """A transformers-5 config.json in the older style the released Qwen3-Next and DeepSeek
    checkpoints use: top-level rope_theta (and partial_rotary_factor), `rope_scaling` with a
    "type", and Qwen3-Next's layer kinds given by full_attention_interval alone."""
    config = dict(config)
    rope = dict(config.pop("rope_parameters"))
    config["rope_theta"] = rope.pop("rope_theta")
    if "partial_rotary_factor" in rope:
        config["partial_rotary_factor"] = rope.pop("partial_rotary_factor")
    kind = rope.pop("rope_type")
    rope.pop("type", None)
    config["rope_scaling"] = None if kind == "default" else rope | {"type": kind}
    types = config.pop("layer_types", None)
    if types is not None:
        interval = types.index("full_attention") + 1
        assert types == ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(len(types))]
        config["full_attention_interval"] = interval
    return config


def _build(model_class, config, path: Path, seed: int, fused_experts: bool = False, released: bool = False):
    torch.manual_seed(0)
    model = model_class(config).eval()
    _randomize(model, seed)
    _save(model, path, fused_experts, released)
    return model


def qwen3_next(path: Path):
    from transformers import Qwen3NextConfig, Qwen3NextForCausalLM

    config = Qwen3NextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, partial_rotary_factor=0.25, max_position_embeddings=512,
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, full_attention_interval=2, num_experts=8, num_experts_per_tok=2,
        moe_intermediate_size=32, shared_expert_intermediate_size=48, mlp_only_layers=[2], norm_topk_prob=True,
        eos_token_id=EOS,
    )
    return _build(Qwen3NextForCausalLM, config, path, seed=1, released=True)


def _qwen3_5_vision() -> dict:
    return dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=64, num_position_embeddings=16)


def qwen3_5(path: Path):
    """The multimodal checkpoint (`model.language_model.` prefix, a vision tower to skip)."""
    from transformers.models.qwen3_5 import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, max_position_embeddings=512, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
        layer_types=["linear_attention", "linear_attention", "full_attention"], eos_token_id=EOS,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25,
                             mrope_section=[2, 1, 1], mrope_interleaved=True),
    )
    config = Qwen3_5Config(text_config=text, vision_config=_qwen3_5_vision())
    return _build(Qwen3_5ForConditionalGeneration, config, path, seed=2)


def qwen3_5_moe(path: Path):
    """The multimodal MoE checkpoint, experts saved pre-fused."""
    from transformers.models.qwen3_5_moe import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration

    text = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, max_position_embeddings=512, linear_key_head_dim=16, linear_value_head_dim=16,
        linear_num_key_heads=2, linear_num_value_heads=4, layer_types=["linear_attention", "full_attention"],
        num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
        eos_token_id=EOS,
    )
    config = Qwen3_5MoeConfig(text_config=text, vision_config=_qwen3_5_vision())
    return _build(Qwen3_5MoeForConditionalGeneration, config, path, seed=3, fused_experts=True)


def deepseek_v3(path: Path):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=2.5,
        kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16,
        n_group=4, topk_group=2, num_experts_per_tok=3, first_k_dense_replace=1, norm_topk_prob=True,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=EOS,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=128, beta_fast=32,
                          beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
    )
    return _build(DeepseekV3ForCausalLM, config, path, seed=4, released=True)


def deepseek_v2(path: Path):
    """DeepSeek-V2-Lite's shape: no q_lora, softmax greedy routing, two shared experts, YaRN with mscale 0.707."""
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    config = DeepseekV2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, n_shared_experts=2, n_routed_experts=8, kv_lora_rank=32, q_lora_rank=None,
        qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16, num_experts_per_tok=2, first_k_dense_replace=1,
        topk_method="greedy", norm_topk_prob=False, routed_scaling_factor=1.0, max_position_embeddings=512,
        bos_token_id=0, eos_token_id=EOS,
        rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=128, beta_fast=32,
                          beta_slow=1, mscale=0.707, mscale_all_dim=0.707),
    )
    return _build(DeepseekV2ForCausalLM, config, path, seed=5, released=True)


def deepseek_v2_grouped(path: Path):
    """DeepSeek-V2 (236B)'s routing: group_limited_greedy, groups ranked by their best expert."""
    from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

    config = DeepseekV2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, n_shared_experts=1, n_routed_experts=16, kv_lora_rank=32, q_lora_rank=48,
        qk_rope_head_dim=8, v_head_dim=16, qk_nope_head_dim=16, num_experts_per_tok=3, first_k_dense_replace=1,
        topk_method="group_limited_greedy", n_group=4, topk_group=2, norm_topk_prob=False,
        routed_scaling_factor=2.0, max_position_embeddings=512, bos_token_id=0, eos_token_id=EOS,
    )
    return _build(DeepseekV2ForCausalLM, config, path, seed=6, released=True)


BUILDERS = {
    "qwen3_next": qwen3_next,
    "qwen3_5": qwen3_5,
    "qwen3_5_moe": qwen3_5_moe,
    "deepseek_v3": deepseek_v3,
    "deepseek_v2": deepseek_v2,
    "deepseek_v2_grouped": deepseek_v2_grouped,
}
