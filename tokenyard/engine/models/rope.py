"""RoPE tables: the `cos_sin [max_pos, rotary_dim]` fp32 table the rope ops read, from a config.

Owns: reading a config's RoPE parameters (transformers 4's `rope_theta` + `rope_scaling` and
transformers 5's `rope_parameters` alike) and the inverse frequencies of the scaling types the
supported models use (default, linear, llama3, yarn), computed exactly as transformers computes
them so that logits match it. Row p = cat(cos(p·inv_freq), sin(p·inv_freq)) · attention_factor.
"""

from __future__ import annotations

import math

import torch


def rope_parameters(config: dict) -> dict:
    """One dict with `rope_type`, `rope_theta` and the scaling keys, whatever the config's vintage."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type", params.get("type", "default"))
    return params


def _yarn(dim: int, base: float, params: dict, max_positions: int) -> tuple[torch.Tensor, float]:
    factor = params.get("factor") or max_positions / params["original_max_position_embeddings"]
    original = params["original_max_position_embeddings"]

    def get_mscale(scale: float, mscale: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
        else:
            attention_factor = get_mscale(factor)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def _llama3(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    factor, low_ff, high_ff = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_len = params["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low_ff, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / high_ff) * ~(wavelen > old_len / low_ff)
    return torch.where(medium, smoothed, scaled)


def cos_sin_table(config: dict, rotary_dim: int, max_positions: int, device: torch.device) -> torch.Tensor:
    """fp32 [max_positions, rotary_dim] table for `kernel_api.rope` / `qk_norm_rope`."""
    params = rope_parameters(config)
    base, kind = float(params["rope_theta"]), params["rope_type"]
    attention_factor = 1.0
    if kind == "yarn":
        inv_freq, attention_factor = _yarn(rotary_dim, base, params, config.get("max_position_embeddings", max_positions))
    else:
        inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
        if kind == "linear":
            inv_freq = inv_freq / params["factor"]
        elif kind == "llama3":
            inv_freq = _llama3(inv_freq, params)
        elif kind != "default":
            raise ValueError(f"rope_type {kind!r} is not supported; expected default, linear, llama3 or yarn")
    freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
    table = torch.cat((freqs.cos(), freqs.sin()), dim=-1) * attention_factor
    return table.to(device)
