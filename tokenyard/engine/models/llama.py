"""Llama-family dense decoder: Llama, Mistral, SmolLM2, Qwen2 (qkv bias), Qwen3 (per-head q/k norm).

Owns the weights and the forward pass, written against tokenyard.kernel_api only (plain torch for
the embedding lookup, splits and the Qwen2 bias add). q/k/v are fused into one GEMM and gate/up
into another at load time; the fused rows are the HF tensors stacked, so nothing is re-derived.

    h = embed(ids)
    per layer:  x = norm(h);  q,k,v = x·Wqkv;  (q,k) = rope(qk_norm?(q,k));  cache ← k,v
                h += attention(q, cache)·Wo;   h += down(silu(gate)·up)(norm(h))
    logits = norm(h)[wanted rows] · Wlm
"""

from __future__ import annotations

from typing import Iterable

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.models.base import CacheSpec, ForwardBatch, ModelCaches
from tokenyard.engine.models.rope import cos_sin_table


class LlamaForCausalLM:
    def __init__(self, config: dict, dtype: torch.dtype, device: torch.device):
        self.config = config
        self.dtype, self.device = dtype, torch.device(device)
        self.num_layers = config["num_hidden_layers"]
        self.hidden = config["hidden_size"]
        self.num_heads = config["num_attention_heads"]
        self.num_kv_heads = config.get("num_key_value_heads") or self.num_heads
        self.head_dim = config.get("head_dim") or self.hidden // self.num_heads
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.qk_norm = config.get("model_type") == "qwen3"
        self.qkv_bias = config.get("model_type") == "qwen2" or bool(config.get("attention_bias"))
        self.tie = bool(config.get("tie_word_embeddings", False))
        self.scale = self.head_dim ** -0.5
        self.cos_sin = cos_sin_table(config, self.head_dim, config.get("max_position_embeddings", 8192), self.device)
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.params: dict[str, torch.Tensor] = {}
        self.expected = self._expected_shapes()

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        c, H = self.config, self.hidden
        I, V = c["intermediate_size"], c["vocab_size"]
        shapes = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
        if not self.tie:
            shapes["lm_head.weight"] = (V, H)
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            shapes |= {
                p + "self_attn.q_proj.weight": (self.q_size, H), p + "self_attn.k_proj.weight": (self.kv_size, H),
                p + "self_attn.v_proj.weight": (self.kv_size, H), p + "self_attn.o_proj.weight": (H, self.q_size),
                p + "mlp.gate_proj.weight": (I, H), p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I),
                p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
            }
            if self.qkv_bias:
                shapes |= {p + "self_attn.q_proj.bias": (self.q_size,), p + "self_attn.k_proj.bias": (self.kv_size,),
                           p + "self_attn.v_proj.bias": (self.kv_size,)}
            if self.qk_norm:
                shapes |= {p + "self_attn.q_norm.weight": (self.head_dim,), p + "self_attn.k_norm.weight": (self.head_dim,)}
        return shapes

    def cache_spec(self) -> CacheSpec:
        return CacheSpec(num_attention_layers=self.num_layers, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        raw: dict[str, torch.Tensor] = {}
        for name, tensor in weights:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            if name == "lm_head.weight" and self.tie:
                continue
            if name not in self.expected:
                raise ValueError(f"checkpoint tensor {name!r} is not a parameter of {self.config['architectures']}")
            if tuple(tensor.shape) != self.expected[name]:
                raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, expected {self.expected[name]}")
            raw[name] = tensor.to(device=self.device, dtype=self.dtype)
        missing = sorted(set(self.expected) - set(raw))
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} tensors, e.g. {missing[:3]}")
        self.params = {"embed": raw["model.embed_tokens.weight"], "norm": raw["model.norm.weight"]}
        self.params["lm_head"] = self.params["embed"] if self.tie else raw["lm_head.weight"]
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            self.params[f"{i}.qkv"] = torch.cat([raw[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
            self.params[f"{i}.o"] = raw[p + "self_attn.o_proj.weight"]
            self.params[f"{i}.gate_up"] = torch.cat([raw[p + "mlp.gate_proj.weight"], raw[p + "mlp.up_proj.weight"]])
            self.params[f"{i}.down"] = raw[p + "mlp.down_proj.weight"]
            self.params[f"{i}.in_norm"] = raw[p + "input_layernorm.weight"]
            self.params[f"{i}.post_norm"] = raw[p + "post_attention_layernorm.weight"]
            if self.qkv_bias:
                self.params[f"{i}.qkv_bias"] = torch.cat([raw[p + f"self_attn.{x}_proj.bias"] for x in "qkv"])
            if self.qk_norm:
                self.params[f"{i}.q_norm"] = raw[p + "self_attn.q_norm.weight"]
                self.params[f"{i}.k_norm"] = raw[p + "self_attn.k_norm.weight"]

    def _attention(self, i: int, x: torch.Tensor, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        P, T = self.params, x.shape[0]
        qkv = ops.gemm(x, P[f"{i}.qkv"])
        if self.qkv_bias:
            qkv = qkv + P[f"{i}.qkv_bias"]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(T, self.num_heads, self.head_dim)
        k = k.reshape(T, self.num_kv_heads, self.head_dim)
        v = v.reshape(T, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            ops.qk_norm_rope(q, k, P[f"{i}.q_norm"], P[f"{i}.k_norm"], self.eps, batch.positions, self.cos_sin,
                             self.head_dim, "neox")
        else:
            ops.rope(q, k, batch.positions, self.cos_sin, self.head_dim, "neox")
        k_cache, v_cache = caches.k[i], caches.v[i]
        ops.kv_cache_write(k, v, k_cache, v_cache, batch.slot_mapping)
        if batch.is_decode:
            o = ops.attention_decode(q, k_cache, v_cache, batch.page_table, batch.seqlens_k, self.scale)
        else:
            o = ops.attention_extend(q, k_cache, v_cache, batch.page_table, batch.cu_seqlens_q, batch.seqlens_k, self.scale)
        return ops.gemm(o.reshape(T, self.q_size), P[f"{i}.o"])

    def forward(self, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        P = self.params
        h = P["embed"][batch.input_ids]
        residual = None
        for i in range(self.num_layers):
            if residual is None:
                x, residual = ops.rms_norm(h, P[f"{i}.in_norm"], self.eps), h
            else:
                x, residual = ops.rms_norm(h, P[f"{i}.in_norm"], self.eps, residual=residual)
            h = self._attention(i, x, batch, caches)
            x, residual = ops.rms_norm(h, P[f"{i}.post_norm"], self.eps, residual=residual)
            h = ops.gemm(ops.silu_and_mul(ops.gemm(x, P[f"{i}.gate_up"])), P[f"{i}.down"])
        h = (h + residual)[batch.logits_indices]
        x = ops.rms_norm(h, P["norm"], self.eps)
        return ops.gemm(x, P["lm_head"]).float()
