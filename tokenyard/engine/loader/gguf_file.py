"""GGUF files (llama.cpp's format) through the `gguf` package: config, weights and tokenizer.

Owns the translation of a GGUF file into what the HF-dir loader produces: a config.json-shaped
dict, (hf_name, tensor) pairs (dequantized to fp32, with llama.cpp's q/k row permutation undone)
and a `Tokenizer` rebuilt from the `tokenizer.ggml.*` metadata with its chat template.
Supported architectures: llama (SmolLM2, Llama, Mistral), qwen2, qwen3.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, processors

from tokenyard.engine.loader.progress import progress
from tokenyard.engine.loader.tokenizer import Tokenizer

# GGUF general.architecture -> (HF architecture, model_type, q/k rows permuted by llama.cpp)
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama", True),
    "qwen2": ("Qwen2ForCausalLM", "qwen2", False),
    "qwen3": ("Qwen3ForCausalLM", "qwen3", False),
}

_TOP_LEVEL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_PER_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_LAYER_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
_CONTROL, _USER_DEFINED = 3, 4


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def hf_name(gguf_name: str) -> str:
    if gguf_name in _TOP_LEVEL:
        return _TOP_LEVEL[gguf_name]
    match = _LAYER_NAME.match(gguf_name)
    if not match or match.group(2) not in _PER_LAYER:
        raise ValueError(f"GGUF tensor {gguf_name!r} has no Hugging Face equivalent known to tokenyard")
    layer, part, kind = match.groups()
    return f"model.layers.{layer}.{_PER_LAYER[part]}.{kind}"


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's convert-time permutation of q/k rows (interleaved rope -> rotate-half)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFCheckpoint:
    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file {str(self.path)!r} does not exist")
        self.reader = gguf.GGUFReader(self.path)
        arch = _field(self.reader, "general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(f"{self.path.name}: GGUF architecture {arch!r} is not supported; expected one of {sorted(ARCHITECTURES)}")
        self.arch = arch
        self.config = self._config()

    def _config(self) -> dict:
        arch, r = self.arch, self.reader
        names = {t.name for t in r.tensors}
        if "rope_freqs.weight" in names:
            raise ValueError(f"{self.path.name}: GGUF rope_freqs (llama3-style rope scaling) is not supported")
        hf_arch, model_type, _ = ARCHITECTURES[arch]
        heads = int(_field(r, f"{arch}.attention.head_count"))
        hidden = int(_field(r, f"{arch}.embedding_length"))
        config = {
            "architectures": [hf_arch],
            "model_type": model_type,
            "hidden_size": hidden,
            "intermediate_size": int(_field(r, f"{arch}.feed_forward_length")),
            "num_hidden_layers": int(_field(r, f"{arch}.block_count")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(_field(r, f"{arch}.attention.head_count_kv", heads)),
            "head_dim": int(_field(r, f"{arch}.attention.key_length", hidden // heads)),
            "rms_norm_eps": float(_field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
            "rope_theta": float(_field(r, f"{arch}.rope.freq_base", 10000.0)),
            "max_position_embeddings": int(_field(r, f"{arch}.context_length")),
            "vocab_size": len(r.fields["tokenizer.ggml.tokens"].data),
            "tie_word_embeddings": "output.weight" not in names,
            "attention_bias": "blk.0.attn_q.bias" in names,
            "torch_dtype": "float32",
        }
        for key in ("bos_token_id", "eos_token_id"):
            value = _field(r, f"tokenizer.ggml.{key}")
            if value is not None:
                config[key] = int(value)
        return config

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        from gguf.quants import dequantize

        permuted = ARCHITECTURES[self.arch][2]
        heads, kv_heads = self.config["num_attention_heads"], self.config["num_key_value_heads"]
        total = sum(int(t.n_bytes) for t in self.reader.tensors)
        with progress(total, f"loading {self.path.name}") as bar:
            for t in self.reader.tensors:
                w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
                if permuted and ".attn_q." in t.name:
                    w = unpermute_rows(w, heads)
                elif permuted and ".attn_k." in t.name:
                    w = unpermute_rows(w, kv_heads)
                bar.update(int(t.n_bytes))
                yield hf_name(t.name), torch.from_numpy(np.require(w, requirements=("C", "W")))

    def tokenizer(self) -> Tokenizer:
        r = self.reader
        kind = _field(r, "tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(f"{self.path.name}: GGUF tokenizer model {kind!r} is not supported; expected 'gpt2' (byte-level BPE)")
        tokens = _field(r, "tokenizer.ggml.tokens")
        types = _field(r, "tokenizer.ggml.token_type")
        merges = [tuple(m.split(" ", 1)) for m in _field(r, "tokenizer.ggml.merges")]
        tok = HFTokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if _field(r, "tokenizer.ggml.pre") == "smollm":   # llama.cpp's smollm pre-tokenizer splits digits
            tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        else:
            tok.pre_tokenizer = byte_level
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                for i, t in enumerate(types) if t in (_CONTROL, _USER_DEFINED)])
        bos_id, eos_id = self.config.get("bos_token_id"), self.config.get("eos_token_id")
        bos = tokens[bos_id] if bos_id is not None else None
        if bos is not None and _field(r, "tokenizer.ggml.add_bos_token", False):
            tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                               special_tokens=[(bos, bos_id)])
        return Tokenizer(tok, chat_template=_field(r, "tokenizer.chat_template"), bos_token=bos,
                         eos_token=tokens[eos_id] if eos_id is not None else None)
