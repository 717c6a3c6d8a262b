"""Named weights of one part of a model: what it expects, what has arrived, and its linears.

Owns: the bookkeeping that turns a stream of checkpoint tensors into a part's runtime weights
(unknown name, wrong shape and missing tensor errors that name the checkpoint tensor), and
`Linear`, a projection whose rows may come from several checkpoint matrices (q/k/v, gate/up)
multiplied in one gemm. Used by the hybrid (Qwen3-Next / Qwen3.5) and DeepSeek models.
May not touch: what the parts compute (their modules), where tensors come from (the loader).
"""

from __future__ import annotations

from typing import Optional

import torch

from tokenyard import kernel_api as ops
from tokenyard.engine.loader.nvfp4 import Weight, cat_rows, place
from tokenyard.kernel_api.quant import NVFP4Weight


class Part:
    """A node of a model's weight tree: the checkpoint tensors under one name prefix, plus child
    parts under longer prefixes. A part is built (its runtime weights made from `self.raw`) as
    soon as all its tensors and its children's have arrived, so a large checkpoint never sits in
    memory twice. Subclasses declare tensors with `expect`, children with `child`, and implement
    `build`."""

    def __init__(self, prefix: str, dtype: torch.dtype, device: torch.device) -> None:
        self.prefix, self.dtype, self.device = prefix, dtype, device
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.children: dict[str, "Part"] = {}
        self.raw: dict[str, Weight] = {}
        self.built = False

    def expect(self, name: str, *shape: int) -> None:
        self.shapes[name] = tuple(shape)

    def child(self, name: str, part: "Part") -> "Part":
        self.children[name] = part
        return part

    def put(self, name: str, w: Weight) -> None:
        for key, part in self.children.items():
            if name.startswith(key + "."):
                part.put(name[len(key) + 1:], w)
                if part.complete():
                    part.finish()
                return
        if name not in self.shapes:
            raise ValueError(f"checkpoint tensor {self.prefix}{name}: unknown to this model (expected one of "
                             f"{sorted(self.shapes) + sorted(k + '.*' for k in self.children)} under {self.prefix!r})")
        check_shape(self.prefix + name, w, self.shapes[name])
        self.raw[name] = w

    def complete(self) -> bool:
        if self.built:
            return True
        return all(n in self.raw for n in self.shapes) and all(p.complete() for p in self.children.values())

    def missing(self) -> list[str]:
        if self.built:
            return []
        return [self.prefix + n for n in self.shapes if n not in self.raw] + [m for p in self.children.values() for m in p.missing()]

    def finish(self) -> None:
        """Build (children first) once complete; later calls do nothing."""
        if self.built:
            return
        for part in self.children.values():
            part.finish()
        self.build()
        self.raw = {}
        self.built = True

    def build(self) -> None:
        """Make the runtime weights from `self.raw` (children are built already)."""

    def linear(self, *names: str) -> "Linear":
        """The named raw matrices as one `Linear`."""
        return Linear([self.raw[n] for n in names], self.dtype, self.device)

    def tensor(self, name: str, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """A raw norm weight, per-head parameter or router matrix as a plain tensor (the activation dtype unless told)."""
        w = self.raw[name]
        if isinstance(w, NVFP4Weight):
            raise ValueError(f"checkpoint tensor {self.prefix}{name}: is NVFP4, expected a plain tensor")
        return w.to(device=self.device, dtype=dtype or self.dtype).contiguous()


class Norm(Part):
    """An RMSNorm weight `<prefix>weight` [dim]."""

    def __init__(self, prefix: str, dim: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(prefix, dtype, device)
        self.expect("weight", dim)

    def build(self) -> None:
        self.weight = self.tensor("weight")


def check_shape(name: str, w: Weight, shape: tuple[int, ...]) -> None:
    if tuple(w.shape) != tuple(shape):
        kind = "NVFP4 weight of logical shape" if isinstance(w, NVFP4Weight) else "tensor of shape"
        raise ValueError(f"checkpoint tensor {name}: is a {kind} {tuple(w.shape)}, expected {tuple(shape)}")


class Linear:
    """y = x @ [W_1; W_2; ...]ᵀ: checkpoint matrices stacked along rows and multiplied by `gemm`.

    Consecutive matrices are joined into one gemm when that is exact: dense ones always, NVFP4
    ones when they share a global scale. Others (a quantized q/k/v next to an unquantized small
    gate, two NVFP4 matrices quantized apart) each take their own gemm, outputs concatenated."""

    def __init__(self, parts: list[Weight], dtype: torch.dtype, device: torch.device) -> None:
        groups: list[list[Weight]] = []
        for p in parts:
            if groups and _joinable(groups[-1][-1], p):
                groups[-1].append(p)
            else:
                groups.append([p])
        self.weights = [place(cat_rows(g) if len(g) > 1 else g[0], dtype, device) for g in groups]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.weights) == 1:
            return ops.gemm(x, self.weights[0])
        return torch.cat([ops.gemm(x, w) for w in self.weights], dim=-1)



def _joinable(a: Weight, b: Weight) -> bool:
    if isinstance(a, NVFP4Weight) and isinstance(b, NVFP4Weight):
        return torch.equal(a.global_scale, b.global_scale)
    return not isinstance(a, NVFP4Weight) and not isinstance(b, NVFP4Weight)
