"""The contract between the engine and a model: one step's batch, the caches, the model protocol.

Owns: `ForwardBatch` (what the runner hands a model each step), `CacheSpec` (what a model says it
needs), `ModelCaches` (the tensors the engine allocates from a spec) and the `Model` protocol.
May not touch: scheduling, pages or slots as objects (a model only sees indices), sampling.

Conventions (those of DESIGN.md's op contract). A step packs the tokens of B sequences along dim 0,
decodes first, then prefill chunks. Sequence b contributes q_lens[b] new tokens, which are the last
q_lens[b] of its k_lens[b] keys. Everything a kernel reads is a device tensor; `q_lens`/`k_lens`
are the same numbers as host lists, for glue that needs Python ints (splitting, MLA prefill).

A model indexes `ModelCaches` by its own ordinal among attention layers (0..num_attention_layers-1)
and among GDN layers (0..num_gdn_layers-1), not by the global layer index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

import torch


@dataclass
class ForwardBatch:
    input_ids: torch.Tensor          # int64 [T]
    positions: torch.Tensor          # int64 [T]   position of each token in its sequence
    cu_seqlens_q: torch.Tensor       # int32 [B+1] offsets of each sequence's tokens in [T]
    seqlens_k: torch.Tensor          # int32 [B]   keys in the cache per sequence, this step's included
    page_table: torch.Tensor         # int32 [B, max_pages] pages of each sequence (padded with 0)
    slot_mapping: torch.Tensor       # int64 [T]   page * page_size + offset where each new key goes
    state_read_slots: torch.Tensor   # int32 [B]   GDN state slot to start from (-1 = zeros)
    state_write_slots: torch.Tensor  # int32 [B]   GDN state slot to write the final state to (-1 = don't)
    logits_indices: torch.Tensor     # int64 [N]   rows of [T] whose logits the engine wants, in order
    is_decode: bool                  # every sequence has exactly one new token (decode kernels apply)
    q_lens: list[int]                # host copy: new tokens per sequence
    k_lens: list[int]                # host copy: keys per sequence, this step's included
    cu_seqlens_k: torch.Tensor       # int32 [B+1] offsets into the packed keys of `key_slots`
    key_slots: torch.Tensor          # int64 [sum k_lens] cache slot of every key of every sequence,
                                     # in order; filled only when not is_decode (MLA's un-absorbed
                                     # prefill gathers the latent cache with it), else empty

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class CacheSpec:
    """What a model needs the engine to allocate.

    Attention layers store either k/v (`head_dim`, `v_head_dim`, `num_kv_heads`) or, when
    `mla_latent_dim` > 0, one MLA latent row of width R+P per token. GDN layers each own a conv
    state [C, W-1] (activation dtype) and a recurrent state [Hv, K, V] (fp32) per slot.
    """

    num_attention_layers: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    v_head_dim: int = 0              # 0 = same as head_dim
    mla_latent_dim: int = 0          # R + P; > 0 selects the MLA latent cache
    num_gdn_layers: int = 0
    conv_channels: int = 0           # C
    conv_width: int = 0              # W (the state keeps W-1 inputs)
    gdn_num_v_heads: int = 0         # Hv
    gdn_k_dim: int = 0               # K
    gdn_v_dim: int = 0               # V

    @property
    def uses_mla(self) -> bool:
        return self.mla_latent_dim > 0

    @property
    def has_gdn(self) -> bool:
        return self.num_gdn_layers > 0

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        """Cache bytes one token takes across all attention layers."""
        width = self.mla_latent_dim if self.uses_mla else self.num_kv_heads * (self.head_dim + (self.v_head_dim or self.head_dim))
        return self.num_attention_layers * width * dtype.itemsize

    def bytes_per_slot(self, dtype: torch.dtype) -> int:
        """State bytes one GDN slot takes across all GDN layers."""
        conv = self.conv_channels * max(self.conv_width - 1, 0) * dtype.itemsize
        ssm = self.gdn_num_v_heads * self.gdn_k_dim * self.gdn_v_dim * 4
        return self.num_gdn_layers * (conv + ssm)


@dataclass
class ModelCaches:
    """The device tensors behind the page pool and the state-slot pool, one entry per layer."""

    page_size: int
    k: list[torch.Tensor] = field(default_factory=list)      # per attention layer [pages, page_size, Hk, D]
    v: list[torch.Tensor] = field(default_factory=list)      # per attention layer [pages, page_size, Hk, Dv]
    mla: list[torch.Tensor] = field(default_factory=list)    # per attention layer [pages, page_size, R+P]
    conv: list[torch.Tensor] = field(default_factory=list)   # per GDN layer [slots, C, W-1]
    ssm: list[torch.Tensor] = field(default_factory=list)    # per GDN layer [slots, Hv, K, V] fp32

    @classmethod
    def allocate(
        cls, spec: CacheSpec, num_pages: int, page_size: int, num_slots: int, dtype: torch.dtype, device: torch.device
    ) -> "ModelCaches":
        caches = cls(page_size=page_size)
        for _ in range(spec.num_attention_layers):
            if spec.uses_mla:
                caches.mla.append(torch.zeros(num_pages, page_size, spec.mla_latent_dim, dtype=dtype, device=device))
            else:
                shape = (num_pages, page_size, spec.num_kv_heads)
                caches.k.append(torch.zeros(*shape, spec.head_dim, dtype=dtype, device=device))
                caches.v.append(torch.zeros(*shape, spec.v_head_dim or spec.head_dim, dtype=dtype, device=device))
        for _ in range(spec.num_gdn_layers):
            caches.conv.append(torch.zeros(num_slots, spec.conv_channels, spec.conv_width - 1, dtype=dtype, device=device))
            caches.ssm.append(
                torch.zeros(num_slots, spec.gdn_num_v_heads, spec.gdn_k_dim, spec.gdn_v_dim, dtype=torch.float32, device=device)
            )
        return caches


class Model(Protocol):
    """What every model class implements. `config` is the checkpoint's config.json as a dict
    (GGUF metadata is translated into the same keys by the loader); weights arrive under their
    Hugging Face names, in the checkpoint's dtype, on the CPU; the model converts and places them."""

    def __init__(self, config: dict, dtype: torch.dtype, device: torch.device) -> None: ...

    def cache_spec(self) -> CacheSpec: ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Consume (hf_name, tensor) pairs; raise ValueError naming a tensor that is unknown, has the
        wrong shape, or (at the end) is missing."""
        ...

    def forward(self, batch: ForwardBatch, caches: ModelCaches) -> torch.Tensor:
        """Run one step: write this step's keys/states into `caches`, return fp32 logits
        [len(batch.logits_indices), vocab] for the rows `batch.logits_indices` names."""
        ...
