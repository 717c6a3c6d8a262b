"""Qwen3.5 text models, dense (qwen3_5) and MoE (qwen3_5_moe): Qwen3-Next's hybrid stack with
separate GDN projections, a dense MLP in every layer (dense) or a sparse MoE block in every layer
(MoE, top-k weights always renormalised), and the text model of the multimodal checkpoints.

Owns: reading Qwen3.5 configs (the multimodal `Qwen3_5*ForConditionalGeneration` config nests the
text model under `text_config`) and mapping its checkpoint names: `model.language_model.X` →
`model.X`; the vision tower (`model.visual.*`) and multi-token-prediction head (`mtp.*`) are
skipped. Expert weights may be per expert or pre-fused (moe.Experts reads both).
May not touch: the layers themselves (qwen3_next.py), the ops.

The multimodal RoPE (mrope_section) reduces to ordinary partial neox RoPE for text, whose three
position streams (t, h, w) are all the token position.
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.engine.models.moe import GatedMLP
from tokenyard.engine.models.parts import Part
from tokenyard.engine.models.qwen3_next import GatedDeltaNet, HybridModel, SparseMoE

_LANGUAGE_MODEL = "model.language_model."
_SKIPPED = ("model.visual.", "mtp.")


class Qwen3_5GatedDeltaNet(GatedDeltaNet):
    """Qwen3.5 stores the GDN input projections apart, already in [q | k | v], z, b, a order."""

    def expect_projections(self, hidden: int) -> None:
        self.expect("in_proj_qkv.weight", self.conv_dim, hidden)
        self.expect("in_proj_z.weight", self.value_dim, hidden)
        self.expect("in_proj_b.weight", self.hv, hidden)
        self.expect("in_proj_a.weight", self.hv, hidden)

    def projections(self) -> list[str]:
        return ["in_proj_qkv.weight", "in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight"]


class Qwen3_5ForCausalLM(HybridModel):
    """Qwen3_5(Moe)ForCausalLM and Qwen3_5(Moe)ForConditionalGeneration checkpoints (text only)."""

    gdn_class = Qwen3_5GatedDeltaNet

    def __init__(self, config: dict, dtype: torch.dtype, device: torch.device) -> None:
        cfg = dict(config.get("text_config") or config)
        if "tie_word_embeddings" in config:  # a multimodal checkpoint decides at its top level
            cfg["tie_word_embeddings"] = config["tie_word_embeddings"]
        super().__init__(cfg, dtype, device)

    def mlp(self, i: int, prefix: str) -> Part:
        cfg = self.cfg
        if cfg.get("num_experts", 0) > 0:
            return SparseMoE(prefix, cfg, True, self.dtype, self.device)
        return GatedMLP(prefix, cfg["hidden_size"], cfg["intermediate_size"], self.dtype, self.device)

    def local_name(self, name: str) -> Optional[str]:
        if name.startswith(_SKIPPED):
            return None
        if name.startswith(_LANGUAGE_MODEL):
            name = "model." + name[len(_LANGUAGE_MODEL):]
        return super().local_name(name)
