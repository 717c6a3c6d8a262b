"""Qwen3-Next (Qwen3NextForCausalLM): Gated-DeltaNet and gated full attention, sparse MoE with a
gated shared expert, zero-centred (1 + w) RMSNorms. Qwen3.5 (qwen3_5.py) reuses these layers.

Owns: the hybrid layer stack as transformers 5 defines it (models/qwen3_next/modeling_qwen3_next.py)
and the mapping of Qwen3-Next's checkpoint names onto it. May not touch: the ops (kernel_api).

Layer kinds come from `layer_types` ("linear_attention" | "full_attention"), or every
`full_attention_interval`-th layer is full attention. Per token, with T tokens packed:
  gated attention   q‖gate = q_proj(x) per head; q, k get per-head (1+w) RMSNorm and partial
                    neox RoPE (rotary_dim = head_dim · partial_rotary_factor); o = attn(q, k, v)
                    · sigmoid(gate); o_proj(o).
  Gated DeltaNet    q, k, v, z, b, a = projections of x; q‖k‖v → causal depthwise conv1d (silu);
                    g, β = gating(A_log, a, dt_bias, b); o = gated delta rule (q, k L2-normalised,
                    q scaled by K^-½); out_proj(RMSNorm(o)·w·silu(z)).
  sparse MoE        softmax top-k (renormalised if norm_topk_prob) over `gate`; Σ experts +
                    sigmoid(shared_expert_gate(x)) · shared_expert(x). A layer is MoE when
                    num_experts > 0, it is not in mlp_only_layers and (i+1) % decoder_sparse_step == 0.

Qwen3-Next's `in_proj_qkvz` interleaves heads by key-head group g: rows [q_g | k_g | v_g | z_g]
with v_g, z_g holding the Hv/Hk value heads of the group; `in_proj_ba` rows [b_g | a_g]. They are
permuted once at load into Qwen3.5's order (all q, all k, all v, all z, all b, all a), so one
projection serves both families.
"""

from __future__ import annotations

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.loader.nvfp4 import take_rows
from tokenyard.engine.models.base import CacheSpec, ForwardBatch, ModelCaches
from tokenyard.engine.models.decoder import DecoderLayer, DecoderModel
from tokenyard.engine.models.moe import Experts, GatedMLP
from tokenyard.engine.models.parts import Part
from tokenyard.engine.models.rope import cos_sin_table, rope_parameters


def layer_types(cfg: dict) -> list[str]:
    types = cfg.get("layer_types")
    if types is None:
        interval = cfg.get("full_attention_interval", 4)
        types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(cfg["num_hidden_layers"])]
    for i, t in enumerate(types):
        if t not in ("linear_attention", "full_attention"):
            raise ValueError(f"config layer_types[{i}] is {t!r}, expected 'linear_attention' or 'full_attention'")
    return list(types)


class Rope:
    """The partial neox RoPE table shared by a model's attention layers."""

    def __init__(self, cfg: dict, head_dim: int, device: torch.device) -> None:
        factor = rope_parameters(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.25))
        self.rotary_dim = int(head_dim * factor)
        self.cos_sin = cos_sin_table(cfg, self.rotary_dim, cfg.get("max_position_embeddings", 32768), device)


class GatedAttention(Part):
    def __init__(self, prefix: str, cfg: dict, rope: Rope, ordinal: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        if cfg.get("attention_bias", False):
            raise ValueError("config attention_bias=True is not supported for gated attention; expected False")
        hidden = cfg["hidden_size"]
        self.heads, self.kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.head_dim = cfg.get("head_dim") or hidden // self.heads
        self.eps, self.rope, self.ordinal = cfg.get("rms_norm_eps", 1e-6), rope, ordinal
        self.scale = self.head_dim ** -0.5
        hd = self.head_dim
        self.expect("q_proj.weight", self.heads * hd * 2, hidden)
        self.expect("k_proj.weight", self.kv_heads * hd, hidden)
        self.expect("v_proj.weight", self.kv_heads * hd, hidden)
        self.expect("o_proj.weight", hidden, self.heads * hd)
        self.expect("q_norm.weight", hd)
        self.expect("k_norm.weight", hd)

    def build(self) -> None:
        # q_proj's rows are per head [q_h | gate_h]; put all q rows first, then all gate rows.
        hd, h = self.head_dim, self.heads
        rows = torch.arange(h * 2 * hd).view(h, 2, hd)
        self.raw["q_proj.weight"] = take_rows(self.raw["q_proj.weight"], torch.cat((rows[:, 0].flatten(), rows[:, 1].flatten())))
        self.qkv = self.linear("q_proj.weight", "k_proj.weight", "v_proj.weight")
        self.o_proj = self.linear("o_proj.weight")
        self.q_norm, self.k_norm = self.tensor("q_norm.weight"), self.tensor("k_norm.weight")

    def __call__(self, x: torch.Tensor, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        t, hd = x.shape[0], self.head_dim
        q, gate, k, v = self.qkv(x).split([self.heads * hd, self.heads * hd, self.kv_heads * hd, self.kv_heads * hd], dim=-1)
        q = q.reshape(t, self.heads, hd).contiguous()
        k = k.reshape(t, self.kv_heads, hd).contiguous()
        v = v.reshape(t, self.kv_heads, hd)
        ops.qk_norm_rope(q, k, self.q_norm, self.k_norm, self.eps, batch.positions, self.rope.cos_sin,
                         self.rope.rotary_dim, "neox", weight_offset=1.0)
        k_cache, v_cache = caches.k[self.ordinal], caches.v[self.ordinal]
        ops.kv_cache_write(k, v, k_cache, v_cache, batch.slot_mapping)
        if batch.is_decode:
            o = ops.attention_decode(q, k_cache, v_cache, batch.page_table, batch.seqlens_k, self.scale)
        else:
            o = ops.attention_extend(q, k_cache, v_cache, batch.page_table, batch.cu_seqlens_q, batch.seqlens_k, self.scale)
        return self.o_proj(o.reshape(t, self.heads * hd) * torch.sigmoid(gate))


class GatedDeltaNet(Part):
    """The linear-attention mixer. Subclasses differ only in their checkpoint's projection names:
    `projections()` lists the raw matrices whose rows, in order, are [q | k | v | z | b | a]."""

    def __init__(self, prefix: str, cfg: dict, ordinal: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        hidden = cfg["hidden_size"]
        self.hk, self.hv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
        self.dk, self.dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
        if self.hv % self.hk:
            raise ValueError(f"config linear_num_value_heads={self.hv} is not a multiple of linear_num_key_heads={self.hk}")
        self.width = cfg.get("linear_conv_kernel_dim", 4)
        self.eps, self.ordinal = cfg.get("rms_norm_eps", 1e-6), ordinal
        self.key_dim, self.value_dim = self.hk * self.dk, self.hv * self.dv
        self.conv_dim = 2 * self.key_dim + self.value_dim
        self.expect_projections(hidden)
        self.expect("conv1d.weight", self.conv_dim, 1, self.width)
        self.expect("A_log", self.hv)
        self.expect("dt_bias", self.hv)
        self.expect("norm.weight", self.dv)
        self.expect("out_proj.weight", hidden, self.value_dim)

    def expect_projections(self, hidden: int) -> None:
        self.expect("in_proj_qkvz.weight", 2 * self.key_dim + 2 * self.value_dim, hidden)
        self.expect("in_proj_ba.weight", 2 * self.hv, hidden)

    def projections(self) -> list[str]:
        """Undo the per-key-head-group interleaving of in_proj_qkvz / in_proj_ba (module docstring)."""
        r = self.hv // self.hk
        qkvz = torch.arange(2 * self.key_dim + 2 * self.value_dim).view(self.hk, 2 * self.dk + 2 * r * self.dv)
        q, k, v, z = qkvz.split([self.dk, self.dk, r * self.dv, r * self.dv], dim=1)
        order = torch.cat([part.flatten() for part in (q, k, v, z)])
        self.raw["in_proj_qkvz.weight"] = take_rows(self.raw["in_proj_qkvz.weight"], order)
        b, a = torch.arange(2 * self.hv).view(self.hk, 2 * r).split([r, r], dim=1)
        self.raw["in_proj_ba.weight"] = take_rows(self.raw["in_proj_ba.weight"], torch.cat((b.flatten(), a.flatten())))
        return ["in_proj_qkvz.weight", "in_proj_ba.weight"]

    def build(self) -> None:
        self.in_proj = self.linear(*self.projections())
        self.conv_w = self.tensor("conv1d.weight").reshape(self.conv_dim, self.width).contiguous()
        self.A_log = self.tensor("A_log", torch.float32)
        self.dt_bias = self.tensor("dt_bias", torch.float32)
        self.norm = self.tensor("norm.weight")
        self.out_proj = self.linear("out_proj.weight")

    def __call__(self, x: torch.Tensor, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        t = x.shape[0]
        qkv, z, b, a = self.in_proj(x).split([self.conv_dim, self.value_dim, self.hv, self.hv], dim=-1)
        conv_state, ssm = caches.conv[self.ordinal], caches.ssm[self.ordinal]
        reads, writes = batch.state_read_slots, batch.state_write_slots
        if batch.is_decode:
            qkv = ops.causal_conv1d_decode(qkv, self.conv_w, None, conv_state, reads, writes, "silu")
        else:
            qkv = ops.causal_conv1d_extend(qkv, self.conv_w, None, conv_state, batch.cu_seqlens_q, reads, writes, "silu")
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q, k, v = q.reshape(t, self.hk, self.dk), k.reshape(t, self.hk, self.dk), v.reshape(t, self.hv, self.dv)
        g, beta = ops.gdn_gating(self.A_log, a, self.dt_bias, b)
        scale = self.dk ** -0.5
        if batch.is_decode:
            o = ops.gdn_decode(q, k, v, g, beta, ssm, reads, writes, scale, True)
        else:
            o = ops.gdn_extend(q, k, v, g, beta, ssm, batch.cu_seqlens_q, reads, writes, scale, True)
        o = ops.gated_rms_norm(o, z.reshape(t, self.hv, self.dv), self.norm, self.eps)
        return self.out_proj(o.reshape(t, self.value_dim))


class SparseMoE(Part):
    """Softmax top-k routed experts plus a shared expert scaled by sigmoid(shared_expert_gate(x))."""

    def __init__(self, prefix: str, cfg: dict, renormalize: bool, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        hidden, self.num_experts = cfg["hidden_size"], cfg["num_experts"]
        self.top_k, self.renormalize = cfg["num_experts_per_tok"], renormalize
        self.expect("gate.weight", self.num_experts, hidden)
        self.expect("shared_expert_gate.weight", 1, hidden)
        self.experts = self.child("experts", Experts(prefix + "experts.", self.num_experts, hidden, cfg["moe_intermediate_size"], dtype, device))
        self.shared = self.child("shared_expert", GatedMLP(prefix + "shared_expert.", hidden, cfg["shared_expert_intermediate_size"], dtype, device))

    def build(self) -> None:
        # The router and the shared expert's gate read the same x: one gemm for both.
        self.gates = self.linear("gate.weight", "shared_expert_gate.weight")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits, shared_gate = self.gates(x).split([self.num_experts, 1], dim=-1)
        weights, ids = ops.moe_route(logits, self.top_k, "softmax", self.renormalize)
        return self.experts(x, weights, ids) + torch.sigmoid(shared_gate) * self.shared(x)


class HybridModel(DecoderModel):
    """Qwen3-Next and Qwen3.5: the hybrid stack over a text config `cfg`. Subclasses choose the
    GDN projection layout (`gdn_class`) and the MLP of each layer (`mlp`)."""

    gdn_class: type[GatedDeltaNet] = GatedDeltaNet

    def __init__(self, cfg: dict, dtype: torch.dtype, device: torch.device) -> None:
        hidden, eps = cfg["hidden_size"], cfg.get("rms_norm_eps", 1e-6)
        super().__init__(cfg["vocab_size"], hidden, eps, 1.0, cfg.get("tie_word_embeddings", False), dtype, device)
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config hidden_act={cfg['hidden_act']!r} is not supported; expected 'silu'")
        self.cfg, self.types = cfg, layer_types(cfg)
        head_dim = cfg.get("head_dim") or hidden // cfg["num_attention_heads"]
        rope = Rope(cfg, head_dim, device)
        attention_layers = gdn_layers = 0
        for i, kind in enumerate(self.types):
            prefix = f"model.layers.{i}."
            if kind == "full_attention":
                name, mixer = "self_attn", GatedAttention(prefix + "self_attn.", cfg, rope, attention_layers, dtype, device)
                attention_layers += 1
            else:
                name, mixer = "linear_attn", self.gdn_class(prefix + "linear_attn.", cfg, gdn_layers, dtype, device)
                gdn_layers += 1
            self.add_layer(DecoderLayer(prefix, name, mixer, self.mlp(i, prefix + "mlp."), hidden, eps, 1.0, dtype, device))
        self.spec = CacheSpec(
            num_attention_layers=attention_layers, num_kv_heads=cfg["num_key_value_heads"], head_dim=head_dim,
            num_gdn_layers=gdn_layers, conv_channels=2 * cfg["linear_num_key_heads"] * cfg["linear_key_head_dim"]
            + cfg["linear_num_value_heads"] * cfg["linear_value_head_dim"], conv_width=cfg.get("linear_conv_kernel_dim", 4),
            gdn_num_v_heads=cfg["linear_num_value_heads"], gdn_k_dim=cfg["linear_key_head_dim"], gdn_v_dim=cfg["linear_value_head_dim"],
        )

    def mlp(self, i: int, prefix: str) -> Part:
        cfg = self.cfg
        sparse = cfg.get("num_experts", 0) > 0 and i not in (cfg.get("mlp_only_layers") or []) \
            and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
        if sparse:
            return SparseMoE(prefix, cfg, cfg.get("norm_topk_prob", True), self.dtype, self.device)
        return GatedMLP(prefix, cfg["hidden_size"], cfg["intermediate_size"], self.dtype, self.device)

    def cache_spec(self) -> CacheSpec:
        return self.spec


class Qwen3NextForCausalLM(HybridModel):
    """Qwen3NextForCausalLM checkpoints: config.json is the text config, names start `model.`."""

