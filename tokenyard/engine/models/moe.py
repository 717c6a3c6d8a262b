"""The SwiGLU MLP and the routed experts of a mixture-of-experts block.

Owns: `GatedMLP` (down(silu(gate(x))·up(x)), the dense MLP and every shared expert) and `Experts`
(E routed experts as w13 [E, 2I, H] / w2 [E, H, I] for `moe_experts`, loaded from per-expert
tensors `experts.{e}.{gate,up,down}_proj.weight` or from pre-fused `experts.gate_up_proj`
[E, 2I, H] / `experts.down_proj` [E, H, I], the layout transformers 5 uses in memory).
May not touch: routing (each model scores its experts its own way) and shared-expert gating.
"""

from __future__ import annotations

import re

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.loader.nvfp4 import Weight, cat_rows, place, stack
from tokenyard.engine.models.parts import Part, check_shape


class GatedMLP(Part):
    def __init__(self, prefix: str, hidden: int, intermediate: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        self.expect("gate_proj.weight", intermediate, hidden)
        self.expect("up_proj.weight", intermediate, hidden)
        self.expect("down_proj.weight", hidden, intermediate)

    def build(self) -> None:
        self.gate_up = self.linear("gate_proj.weight", "up_proj.weight")
        self.down = self.linear("down_proj.weight")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(ops.silu_and_mul(self.gate_up(x)))


_PER_EXPERT = re.compile(r"(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
_FUSED = ("gate_up_proj", "down_proj")


class Experts(Part):
    def __init__(self, prefix: str, num_experts: int, hidden: int, intermediate: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        self.num_experts, self.hidden, self.intermediate = num_experts, hidden, intermediate

    def put(self, name: str, w: Weight) -> None:
        m = _PER_EXPERT.fullmatch(name)
        if m and int(m.group(1)) < self.num_experts:
            rows, cols = (self.hidden, self.intermediate) if m.group(2) == "down_proj" else (self.intermediate, self.hidden)
            check_shape(self.prefix + name, w, (rows, cols))
        elif name == "gate_up_proj":
            check_shape(self.prefix + name, w, (self.num_experts, 2 * self.intermediate, self.hidden))
        elif name == "down_proj":
            check_shape(self.prefix + name, w, (self.num_experts, self.hidden, self.intermediate))
        else:
            raise ValueError(f"checkpoint tensor {self.prefix}{name}: unknown to this model (expected "
                             f"{{0..{self.num_experts - 1}}}.{{gate,up,down}}_proj.weight or {'/'.join(_FUSED)})")
        self.raw[name] = w

    def _per_expert_names(self) -> list[str]:
        return [f"{e}.{p}.weight" for e in range(self.num_experts) for p in ("gate_proj", "up_proj", "down_proj")]

    def complete(self) -> bool:
        return self.built or all(n in self.raw for n in _FUSED) or all(n in self.raw for n in self._per_expert_names())

    def missing(self) -> list[str]:
        if self.built:
            return []
        if any(n in self.raw for n in _FUSED):
            return [self.prefix + n for n in _FUSED if n not in self.raw]
        return [self.prefix + n for n in self._per_expert_names() if n not in self.raw]

    def build(self) -> None:
        if all(n in self.raw for n in _FUSED):
            w13, w2 = self.raw["gate_up_proj"], self.raw["down_proj"]
        else:
            w13 = stack([cat_rows([self.raw[f"{e}.gate_proj.weight"], self.raw[f"{e}.up_proj.weight"]])
                         for e in range(self.num_experts)])
            w2 = stack([self.raw[f"{e}.down_proj.weight"] for e in range(self.num_experts)])
        self.w13, self.w2 = place(w13, self.dtype, self.device), place(w2, self.dtype, self.device)

    def __call__(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return ops.moe_experts(x, self.w13, self.w2, weights, ids)
