"""DeepSeek-V3 and DeepSeek-V2 (DeepseekV3ForCausalLM, DeepseekV2ForCausalLM; Kimi-K2 uses V3's):
multi-head latent attention and DeepSeek MoE, as transformers 5 defines them.

Owns: MLA with absorbed decode and un-absorbed prefill, DeepSeek's routing per version, and the
mapping of their checkpoint names. May not touch: the ops (kernel_api), the latent cache's
allocation (the engine, from `cache_spec`).

MLA, per token (H heads, R = kv_lora_rank, P = qk_rope_head_dim, N = qk_nope_head_dim, V = v_head_dim):
    q = q_b(RMSNorm(q_a(x)))  (or q_proj(x) when q_lora_rank is None)   → [H, N + P]
    c = RMSNorm(kv_a(x)[:R]),  k_r = RoPE(kv_a(x)[R:])                   → cached: [c ‖ k_r], R + P wide
    kv_b = [W_UK; W_UV] per head: k_nope = W_UK c [H, N], v = W_UV c [H, V]
    score = scale · (q_nope·k_nope + q_r·k_r),  scale = (N+P)^-½ · mscale²  (YaRN's mscale_all_dim)
Prefill (extend) expands every cached latent of the sequence (gathered by `key_slots`) to k, v and
runs ordinary causal attention (`mla_extend`). Decode absorbs W_UK into the query,
q_latent = W_UKᵀ q_nope, attends over the latent cache (`mla_decode`) and applies W_UV after:
the same scores (q_nope·W_UK c = (W_UKᵀ q_nope)·c) without expanding the cache.
RoPE pairs are interleaved (gptj) for V2 and for V3 with `rope_interleave` (its default),
rotate-half (neox) otherwise.

DeepSeek MoE: layers ≥ first_k_dense_replace are MoE (a dense MLP before). The router runs in fp32.
    V3  sigmoid scores; selection by scores + e_score_correction_bias among the topk_group best of
        n_group groups (a group scores its two best); weights = scores of the picks, renormalised
        if norm_topk_prob, × routed_scaling_factor.
    V2  softmax scores, top-k over all experts (`greedy`, V2-Lite) or among the topk_group best of
        n_group groups scored by their best expert (`group_limited_greedy`, the 236B model);
        weights × routed_scaling_factor (renormalised if norm_topk_prob).
Shared experts: one SwiGLU MLP of moe_intermediate_size · n_shared_experts, added unscaled.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.loader.nvfp4 import dense
from tokenyard.engine.models.base import CacheSpec, ForwardBatch, ModelCaches
from tokenyard.engine.models.decoder import DecoderLayer, DecoderModel
from tokenyard.engine.models.moe import Experts, GatedMLP
from tokenyard.engine.models.parts import Part
from tokenyard.engine.models.rope import cos_sin_table, rope_parameters


def softmax_scale(cfg: dict) -> float:
    """(N + P)^-½, times mscale² under YaRN with mscale_all_dim (transformers' yarn_apply_mscale)."""
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    params = rope_parameters(cfg)
    if params["rope_type"] != "default" and params.get("mscale_all_dim"):
        factor = params["factor"]
        mscale = 1.0 if factor <= 1 else 0.1 * params["mscale_all_dim"] * math.log(factor) + 1.0
        scale *= mscale * mscale
    return scale


class MLA(Part):
    def __init__(self, prefix: str, cfg: dict, cos_sin: torch.Tensor, style: str, ordinal: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        if cfg.get("attention_bias", False):
            raise ValueError("config attention_bias=True is not supported for MLA; expected False")
        hidden = cfg["hidden_size"]
        self.heads, self.q_rank, self.rank = cfg["num_attention_heads"], cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
        self.nope, self.rope_dim, self.v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        self.eps, self.cos_sin, self.style, self.ordinal = cfg.get("rms_norm_eps", 1e-6), cos_sin, style, ordinal
        self.scale = softmax_scale(cfg)
        qk = self.nope + self.rope_dim
        if self.q_rank is None:
            self.expect("q_proj.weight", self.heads * qk, hidden)
        else:
            self.expect("q_a_proj.weight", self.q_rank, hidden)
            self.expect("q_a_layernorm.weight", self.q_rank)
            self.expect("q_b_proj.weight", self.heads * qk, self.q_rank)
        self.expect("kv_a_proj_with_mqa.weight", self.rank + self.rope_dim, hidden)
        self.expect("kv_a_layernorm.weight", self.rank)
        self.expect("kv_b_proj.weight", self.heads * (self.nope + self.v_dim), self.rank)
        self.expect("o_proj.weight", hidden, self.heads * self.v_dim)

    def build(self) -> None:
        first = "q_proj.weight" if self.q_rank is None else "q_a_proj.weight"
        self.in_proj = self.linear(first, "kv_a_proj_with_mqa.weight")  # both read x: one gemm
        self.first_dim = self.heads * (self.nope + self.rope_dim) if self.q_rank is None else self.q_rank
        if self.q_rank is not None:
            self.q_a_norm = self.tensor("q_a_layernorm.weight")
            self.q_b = self.linear("q_b_proj.weight")
        self.kv_a_norm = self.tensor("kv_a_layernorm.weight")
        self.kv_b = self.linear("kv_b_proj.weight")
        w = dense(self.raw["kv_b_proj.weight"], self.dtype).to(self.device).view(self.heads, self.nope + self.v_dim, self.rank)
        self.w_uk = w[:, : self.nope].contiguous()   # [H, N, R]
        self.w_uv = w[:, self.nope:].contiguous()    # [H, V, R]
        self.o_proj = self.linear("o_proj.weight")

    def __call__(self, x: torch.Tensor, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        t, h, r, p = x.shape[0], self.heads, self.rank, self.rope_dim
        first, kv_a = self.in_proj(x).split([self.first_dim, r + p], dim=-1)
        q = first if self.q_rank is None else self.q_b(ops.rms_norm(first, self.q_a_norm, self.eps))
        q = q.reshape(t, h, self.nope + p)
        q_nope, q_rope = q[..., : self.nope], q[..., self.nope:].contiguous()
        latent = ops.rms_norm(kv_a[:, :r], self.kv_a_norm, self.eps)
        k_rope = kv_a[:, r:].reshape(t, 1, p).contiguous()
        ops.rope(q_rope, k_rope, batch.positions, self.cos_sin, p, self.style)
        cache = caches.mla[self.ordinal]
        ops.mla_cache_write(latent, k_rope[:, 0], cache, batch.slot_mapping)
        if batch.is_decode:
            q_latent = torch.einsum("thn,hnr->thr", q_nope, self.w_uk)
            o = ops.mla_decode(q_latent, q_rope, cache, batch.page_table, batch.seqlens_k, self.scale)
            o = torch.einsum("thr,hvr->thv", o, self.w_uv)
        else:
            keys = cache.view(-1, r + p)[batch.key_slots]  # every latent of every sequence, prefix included
            kv = self.kv_b(keys[:, :r]).reshape(-1, h, self.nope + self.v_dim)
            k = torch.cat((kv[..., : self.nope], keys[:, None, r:].expand(-1, h, p)), dim=-1)
            o = ops.mla_extend(torch.cat((q_nope, q_rope), dim=-1), k, kv[..., self.nope:],
                               batch.cu_seqlens_q, batch.cu_seqlens_k, self.scale)
        return self.o_proj(o.reshape(t, h * self.v_dim))


class DeepseekMoE(Part):
    def __init__(self, prefix: str, cfg: dict, v3: bool, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        hidden, self.num_experts = cfg["hidden_size"], cfg["n_routed_experts"]
        self.top_k, self.renormalize = cfg["num_experts_per_tok"], bool(cfg.get("norm_topk_prob", v3))
        self.scale = float(cfg.get("routed_scaling_factor", 1.0))
        self.v3 = v3
        if v3:
            self.n_group, self.topk_group = cfg.get("n_group") or 1, cfg.get("topk_group") or 1
            self.expect("gate.e_score_correction_bias", self.num_experts)
        else:
            method = cfg.get("topk_method", "greedy")
            if method not in ("greedy", "group_limited_greedy"):
                raise ValueError(f"config topk_method={method!r} is not supported for DeepSeek-V2; "
                                 "expected 'greedy' or 'group_limited_greedy'")
            grouped = method == "group_limited_greedy"
            self.n_group = (cfg.get("n_group") or 1) if grouped else 1
            self.topk_group = (cfg.get("topk_group") or 1) if grouped else 1
        self.expect("gate.weight", self.num_experts, hidden)
        self.experts = self.child("experts", Experts(prefix + "experts.", self.num_experts, hidden, cfg["moe_intermediate_size"], dtype, device))
        shared = cfg.get("n_shared_experts") or 0
        self.shared: Optional[GatedMLP] = None
        if shared:
            self.shared = self.child("shared_experts", GatedMLP(prefix + "shared_experts.", hidden,
                                                                cfg["moe_intermediate_size"] * shared, dtype, device))

    def build(self) -> None:
        self.gate = self.tensor("gate.weight", torch.float32)
        self.bias = self.tensor("gate.e_score_correction_bias", torch.float32) if self.v3 else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = ops.gemm(x.float(), self.gate)
        weights, ids = ops.moe_route(logits, self.top_k, "sigmoid" if self.v3 else "softmax", self.renormalize,
                                     self.bias, self.n_group, self.topk_group, self.scale,
                                     group_score="top2_sum" if self.v3 else "max")
        out = self.experts(x, weights, ids)
        return out if self.shared is None else out + self.shared(x)


class DeepseekForCausalLM(DecoderModel):
    """DeepseekV3ForCausalLM and DeepseekV2ForCausalLM checkpoints."""

    def __init__(self, config: dict, dtype: torch.dtype, device: torch.device) -> None:
        cfg, hidden, eps = config, config["hidden_size"], config.get("rms_norm_eps", 1e-6)
        super().__init__(cfg["vocab_size"], hidden, eps, 0.0, cfg.get("tie_word_embeddings", False), dtype, device)
        if cfg.get("hidden_act", "silu") != "silu" or cfg.get("mlp_bias", False):
            raise ValueError(f"config hidden_act={cfg.get('hidden_act')!r}, mlp_bias={cfg.get('mlp_bias')!r}: "
                             "expected 'silu' without MLP biases")
        v3 = "DeepseekV3ForCausalLM" in (cfg.get("architectures") or []) or cfg.get("model_type") == "deepseek_v3"
        style = "gptj" if (not v3 or cfg.get("rope_interleave", True)) else "neox"
        p = cfg["qk_rope_head_dim"]
        cos_sin = cos_sin_table(cfg, p, cfg.get("max_position_embeddings", 4096), device)
        self.num_layers = cfg["num_hidden_layers"]
        first_dense = cfg.get("first_k_dense_replace") or 0
        for i in range(self.num_layers):
            prefix = f"model.layers.{i}."
            mla = MLA(prefix + "self_attn.", cfg, cos_sin, style, i, dtype, device)
            if i >= first_dense:
                mlp: Part = DeepseekMoE(prefix + "mlp.", cfg, v3, dtype, device)
            else:
                mlp = GatedMLP(prefix + "mlp.", hidden, cfg["intermediate_size"], dtype, device)
            self.add_layer(DecoderLayer(prefix, "self_attn", mla, mlp, hidden, eps, 0.0, dtype, device))
        self.spec = CacheSpec(num_attention_layers=self.num_layers, mla_latent_dim=cfg["kv_lora_rank"] + p)

    def local_name(self, name: str) -> Optional[str]:
        # Layers past num_hidden_layers are V3's multi-token-prediction modules.
        if name.startswith("model.layers."):
            if int(name.split(".", 3)[2]) >= self.num_layers:
                return None
        return super().local_name(name)

    def cache_spec(self) -> CacheSpec:
        return self.spec
