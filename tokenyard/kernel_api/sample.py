"""Token sampling: temperature, top-k, top-p, min-p, per-row seeds; temperature 0 is greedy."""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard.kernel_api._common import declare, dispatch
from tokenyard.kernel_api._validate import FLOAT_TYPES, Validator


def _greedy_rows_agree(out: list, ref: list, args: dict) -> Optional[str]:
    """Random draws may differ between kernels; greedy rows (temperature 0) must not."""
    greedy = args["temperature"] == 0
    if bool((out[0][greedy] != ref[0][greedy]).any()):
        return "greedy rows (temperature 0) pick other tokens than the reference"
    return None


def _sample_example(device, dtype, B=64, V=151936):
    g = torch.Generator().manual_seed(0)
    return dict(logits=torch.randn(B, V, generator=g).to(device) * 3,
                temperature=(torch.rand(B, generator=g) * (torch.rand(B, generator=g) > 0.3)).to(device),
                top_p=torch.full((B,), 0.9, device=device), top_k=torch.full((B,), 50, dtype=torch.int32, device=device),
                min_p=torch.zeros(B, device=device), seeds=torch.arange(B, dtype=torch.int64, device=device))


declare("sample", example=_sample_example, check=_greedy_rows_agree,
        cost=lambda a: (10.0 * a["logits"].numel(), float(a["logits"].numel() * a["logits"].element_size())),
        shapes={"small": dict(B=4, V=64), "qwen3-b64": dict(B=64, V=151936)})


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
           min_p: torch.Tensor, seeds: torch.Tensor, *, kernel: Optional[str] = None) -> torch.Tensor:
    """Draw one token per row of logits [B, V] → ids int64 [B].

    temperature fp32 [B] (0 = greedy argmax), top_k int32 [B] (<= 0 = off), top_p fp32 [B] in (0, 1],
    min_p fp32 [B] in [0, 1] (drop tokens with p < min_p · p_max), seeds int64 [B] (>= 0: the draw is
    a function of the logits and the seed alone; < 0: unseeded).
    """
    v = Validator("sample")
    v.tensor("logits", logits, "B,V", FLOAT_TYPES)
    v.tensor("temperature", temperature, "B", (torch.float32,))
    v.tensor("top_p", top_p, "B", (torch.float32,))
    v.tensor("top_k", top_k, "B", (torch.int32,))
    v.tensor("min_p", min_p, "B", (torch.float32,))
    v.tensor("seeds", seeds, "B", (torch.int64,))
    if Validator.values_checkable(temperature):
        if bool((temperature < 0).any()) or not bool(torch.isfinite(temperature).all()):
            v.fail("temperature", f"holds {temperature.min().item()}, expected finite values >= 0")
        if bool(((top_p <= 0) | (top_p > 1)).any()):
            v.fail("top_p", f"holds {top_p.min().item()} .. {top_p.max().item()}, expected values in (0, 1]")
        if bool(((min_p < 0) | (min_p > 1)).any()):
            v.fail("min_p", f"holds {min_p.min().item()} .. {min_p.max().item()}, expected values in [0, 1]")
    return dispatch("sample", dict(logits=logits, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                   seeds=seeds), kernel)
