"""Plain records that cross module boundaries: kernels, op specifications, selection outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

Supports = Callable[..., Optional[str]]
# check(outputs, reference_outputs, args) -> None when they agree, else the reason
Check = Callable[[list, list, dict], Optional[str]]
# cost(args) -> (flops, bytes) moved through device memory at the least
Cost = Callable[[dict], "tuple[float, float]"]
# example(device, dtype, **shape) -> args for one call
Example = Callable[..., dict]


@dataclass(frozen=True)
class KernelRecord:
    """One kernel for one op, as a backend registered it."""

    op: str
    backend: str
    name: str
    fn: Callable[..., Any]
    priority: int = 0
    devices: tuple[str, ...] = ("cpu", "cuda")
    min_capability: Optional[tuple[int, int]] = None
    max_capability: Optional[tuple[int, int]] = None
    supports: Optional[Supports] = None

    @property
    def key(self) -> str:
        return f"{self.backend}:{self.name}"

    def ineligibility(self, device: torch.device, args: dict) -> Optional[str]:
        """Why this kernel cannot run these arguments on this device, or None if it can."""
        if device.type not in self.devices:
            return f"runs on {'/'.join(self.devices)}, not {device.type}"
        if device.type == "cuda" and (self.min_capability or self.max_capability):
            cap = torch.cuda.get_device_capability(device)
            if self.min_capability and cap < tuple(self.min_capability):
                return f"needs compute capability >= {self.min_capability}, device has {cap}"
            if self.max_capability and cap > tuple(self.max_capability):
                return f"needs compute capability <= {self.max_capability}, device has {cap}"
        if self.supports is not None:
            try:
                reason = self.supports(**args)
            except Exception as exc:  # a broken supports() must not take dispatch down
                return f"supports() raised {type(exc).__name__}: {exc}"
            if reason:
                return str(reason)
        return None


@dataclass
class OpSpec:
    """What the registry must know about an op to tune and check its kernels.

    ``mutates`` names arguments written in place (cloned for each trial); ``rtol`` maps an
    activation dtype to the largest relative L2 error against the reference kernel;
    ``check`` replaces the default comparison where exactness means something else (sampling).
    """

    name: str
    mutates: tuple[str, ...] = ()
    rtol: dict = field(default_factory=lambda: {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2})
    check: Optional[Check] = None
    cost: Optional[Cost] = None
    example: Optional[Example] = None
    shapes: dict = field(default_factory=dict)  # named example shapes: {"name": {dim: size}}


@dataclass
class Candidate:
    """One kernel's standing for one call site: eligible or not and why, timing, check result."""

    record: KernelRecord
    reason: Optional[str] = None  # None = eligible
    time_ms: Optional[float] = None
    check_failure: Optional[str] = None
    syncs: bool = False  # waits for the GPU from the host (a CUDA-graph capture would fail on it)

    @property
    def usable(self) -> bool:
        return self.reason is None and self.check_failure is None


@dataclass
class Selection:
    """The outcome of selecting a kernel for (op, device, dtypes, shape bucket)."""

    op: str
    key: str
    chosen: KernelRecord
    how: str  # "priority", "fastest", "override:<source>", "persisted"
    candidates: list = field(default_factory=list)
