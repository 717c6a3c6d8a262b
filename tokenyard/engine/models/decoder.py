"""The decoder-only stack shared by the hybrid (Qwen3-Next, Qwen3.5) and DeepSeek models.

Owns: embed → layers (pre-norm mixer and MLP, each around the residual stream) → final norm →
lm_head, the routing of checkpoint names into the layers' weight trees, and the model protocol
methods of `tokenyard.engine.models.base` that do not depend on the layers' kind.
May not touch: what a mixer or an MLP computes (the model files), caches' allocation (the engine).

The residual stream is carried as in every fused-norm engine: `rms_norm(h, w, residual=r)`
returns (norm(h + r), h + r), which is HF's `residual + h` followed by the next norm.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.loader.nvfp4 import assemble
from tokenyard.engine.models.base import ForwardBatch, ModelCaches
from tokenyard.engine.models.parts import Norm, Part



class DecoderLayer(Part):
    """x → x + mixer(norm(x)) → x + mlp(norm(x)); `mixer_name` is the checkpoint's name for the mixer."""

    def __init__(self, prefix: str, mixer_name: str, mixer: Part, mlp: Part, hidden: int, eps: float,
                 norm_offset: float, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        self.eps, self.norm_offset = eps, norm_offset
        self.input_norm = self.child("input_layernorm", Norm(prefix + "input_layernorm.", hidden, dtype, device))
        self.post_norm = self.child("post_attention_layernorm", Norm(prefix + "post_attention_layernorm.", hidden, dtype, device))
        self.mixer = self.child(mixer_name, mixer)
        self.mlp = self.child("mlp", mlp)

    def __call__(self, h: torch.Tensor, residual: Optional[torch.Tensor], batch: ForwardBatch,
                 caches: ModelCaches) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = h
            x = ops.rms_norm(h, self.input_norm.weight, self.eps, weight_offset=self.norm_offset)
        else:
            x, residual = ops.rms_norm(h, self.input_norm.weight, self.eps, residual=residual, weight_offset=self.norm_offset)
        h = self.mixer(x, batch, caches)
        x, residual = ops.rms_norm(h, self.post_norm.weight, self.eps, residual=residual, weight_offset=self.norm_offset)
        return self.mlp(x), residual


class DecoderModel(Part):
    """The stack over `model.embed_tokens`, `model.layers.{i}`, `model.norm` and `lm_head`.

    Subclasses build `self.layers` (and add them as children) and may override `local_name` to
    map their checkpoints' names onto these (Qwen3.5's `model.language_model.` prefix) or skip
    tensors the text model does not use (vision towers, multi-token-prediction heads)."""

    def __init__(self, vocab: int, hidden: int, eps: float, norm_offset: float, tie_word_embeddings: bool,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__("", dtype, device)
        self.eps, self.norm_offset, self.tied = eps, norm_offset, tie_word_embeddings
        self.expect("model.embed_tokens.weight", vocab, hidden)
        self.expect("model.norm.weight", hidden)
        if not tie_word_embeddings:
            self.expect("lm_head.weight", vocab, hidden)
        self.layers: list[DecoderLayer] = []

    def add_layer(self, layer: DecoderLayer) -> None:
        self.layers.append(self.child(f"model.layers.{len(self.layers)}", layer))

    def local_name(self, name: str) -> Optional[str]:
        """The weight-tree name of a checkpoint tensor, or None to skip it."""
        if name.startswith("mtp.") or (self.tied and name == "lm_head.weight"):
            return None
        return name

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, w in assemble(weights):
            local = self.local_name(name)
            if local is not None:
                self.put(local, w)
        missing = self.missing()
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensor(s) this model needs, e.g. {missing[:4]}")
        self.finish()

    def build(self) -> None:
        embed = self.raw["model.embed_tokens.weight"]
        if not isinstance(embed, torch.Tensor):
            raise ValueError("checkpoint tensor model.embed_tokens.weight: is NVFP4, expected a plain tensor")
        self.embed = embed.to(device=self.device, dtype=self.dtype)
        self.norm = self.tensor("model.norm.weight")
        self.lm_head = self.linear("model.embed_tokens.weight" if self.tied else "lm_head.weight")

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        h = torch.nn.functional.embedding(batch.input_ids, self.embed)
        residual = None
        for layer in self.layers:
            h, residual = layer(h, residual, batch, caches)
        rows = batch.logits_indices
        x, _ = ops.rms_norm(h[rows], self.norm, self.eps, residual=residual[rows], weight_offset=self.norm_offset)
        return self.lm_head(x).float()
