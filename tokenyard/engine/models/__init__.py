"""Model registry: which class runs a checkpoint, by its config.json `architectures` entry.

Owns the mapping only; classes are imported lazily so a broken or absent model module does not
break the others. GGUF files are mapped to the same names by the GGUF loader (`general.architecture`
→ an HF architecture), so there is one table.
"""

from __future__ import annotations

import importlib

from tokenyard.engine.models.base import CacheSpec, ForwardBatch, Model, ModelCaches

# HF architecture name -> "module:Class" under tokenyard.engine.models
MODELS: dict[str, str] = {
    "LlamaForCausalLM": "llama:LlamaForCausalLM",
    "MistralForCausalLM": "llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "llama:LlamaForCausalLM",
    "Qwen3ForCausalLM": "llama:LlamaForCausalLM",
    "Qwen3NextForCausalLM": "qwen3_next:Qwen3NextForCausalLM",
    "Qwen3_5ForCausalLM": "qwen3_5:Qwen3_5ForCausalLM",
    "Qwen3_5ForConditionalGeneration": "qwen3_5:Qwen3_5ForCausalLM",
    "Qwen3_5MoeForCausalLM": "qwen3_5:Qwen3_5ForCausalLM",
    "Qwen3_5MoeForConditionalGeneration": "qwen3_5:Qwen3_5ForCausalLM",
    "DeepseekV3ForCausalLM": "deepseek:DeepseekForCausalLM",
    "DeepseekV2ForCausalLM": "deepseek:DeepseekForCausalLM",
}


def model_class(config: dict) -> type:
    """The class for a config.json dict; ValueError naming the architecture if none is known."""
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch in MODELS:
            module_name, class_name = MODELS[arch].split(":")
            module = importlib.import_module(f"tokenyard.engine.models.{module_name}")
            return getattr(module, class_name)
    raise ValueError(
        f"config.json architectures={architectures!r}: no tokenyard model for it; supported: {sorted(MODELS)}"
    )


__all__ = ["CacheSpec", "ForwardBatch", "Model", "ModelCaches", "MODELS", "model_class"]
