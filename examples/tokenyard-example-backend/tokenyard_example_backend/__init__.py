"""An example tokenyard backend plugin: a SwiGLU gate (``silu_and_mul``) kernel for the CPU.

Everything a vendor writes is here: the hook, one registration, the kernel. tokenyard discovers
the package through its ``tokenyard.backends`` entry point, lists it, checks it against the
reference kernel and picks it when it is the fastest correct candidate.

``TOKENYARD_EXAMPLE_FAULT=1`` makes the kernel drop the gate's sigmoid, to show what the
registry does with a kernel that computes the wrong thing: it is excluded, with the reason.
"""

import os

import torch

from tokenyard.registry import hookimpl


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up on x = [gate | up], in one pass per half and no fp32 round trip."""
    gate, up = x.chunk(2, dim=-1)
    if os.environ.get("TOKENYARD_EXAMPLE_FAULT") == "1":
        return gate * up
    return torch.nn.functional.silu(gate) * up


def _supports(x: torch.Tensor) -> "str | None":
    if x.shape[-1] > (1 << 20):
        return f"last dim {x.shape[-1]} over this kernel's limit of {1 << 20}"
    return None


@hookimpl
def tokenyard_register_kernels(registry):
    registry.register("silu_and_mul", silu_and_mul, name="fused", priority=1, devices=("cpu",), supports=_supports)
