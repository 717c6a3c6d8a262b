"""``tokenyard kernels list | explain OP | bench OP``: what is registered, why each kernel is or is
not eligible here, which one is chosen, and how fast each runs against the device's ceilings."""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional

import torch

from tokenyard.registry.core import get_registry


def _device(name: Optional[str]) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(name: Optional[str], device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        dtype = None
    if not isinstance(dtype, torch.dtype):
        raise SystemExit(f"--dtype {name!r}: expected float32, bfloat16 or float16")
    return dtype


def parse_shape(spec, text: Optional[str], device: torch.device) -> tuple[str, dict]:
    """``--shape NAME`` picks a named example shape; ``--shape T=4096,D=4096`` sets sizes (on top of NAME: ``llama,T=16``)."""
    default = "small" if device.type == "cpu" else next((n for n in spec.shapes if n != "small"), "small")
    if not text:
        return default, dict(spec.shapes.get(default, {}))
    name, sizes = default, {}
    for part in text.split(","):
        part = part.strip()
        if "=" in part:
            key, value = part.split("=", 1)
            value = value.strip()
            sizes[key.strip()] = value.lower() == "true" if value.lower() in ("true", "false") else int(value)
        elif part:
            if part not in spec.shapes:
                raise SystemExit(f"--shape {part!r}: unknown for {spec.name}; known: {', '.join(spec.shapes)}")
            name = part
    return name, {**spec.shapes.get(name, {}), **sizes}


def _op_spec(op: str):
    registry = get_registry()
    registry.ensure_loaded()
    if op not in registry.ops:
        raise SystemExit(f"unknown op {op!r}; known ops: {', '.join(sorted(registry.ops))}")
    return registry, registry.ops[op]


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    registry = get_registry()
    registry.ensure_loaded()
    device = _device(args.device)
    table = Table(title=f"kernels (eligibility on {device})")
    for col in ("op", "kernel", "priority", "devices", "arch", "here"):
        table.add_column(col)
    for op in sorted(registry.ops):
        for rec in sorted(registry.kernels(op), key=lambda r: (-r.priority, r.key)):
            arch = ""
            if rec.min_capability or rec.max_capability:
                lo = "sm_%d%d" % rec.min_capability if rec.min_capability else ""
                hi = "sm_%d%d" % rec.max_capability if rec.max_capability else ""
                arch = f"{lo}..{hi}"
            reason = rec.ineligibility(device, {})
            table.add_row(op, rec.key, str(rec.priority), ",".join(rec.devices), arch, "yes" if reason is None else f"no: {reason}")
        if not registry.kernels(op):
            table.add_row(op, "-", "", "", "", "no kernel registered")
    console = Console(width=160)
    console.print(table)
    console.print(f"backends loaded: {', '.join(registry.backends) or 'none'}")
    for name, why in registry.failed_backends.items():
        console.print(f"backend {name} not loaded: {why}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    registry, spec = _op_spec(args.op)
    device = _device(args.device)
    shape_name, shape = parse_shape(spec, args.shape, device)
    dtype = _dtype(args.dtype, device)
    example = spec.example(device, dtype, **shape)
    selection = registry.select(args.op, example, kernel=args.kernel)
    print(f"{args.op} on {device}, {str(dtype).removeprefix('torch.')}, shape {shape_name} {shape}")
    print(f"policy: {registry.policy()}   call site: {selection.key}")
    for cand in selection.candidates or registry.candidates(args.op, example, device):
        if cand.reason:
            status = f"not eligible: {cand.reason}"
        elif cand.check_failure:
            status = f"excluded: {cand.check_failure}"
        elif cand.time_ms is not None:
            status = f"eligible, {cand.time_ms:.4f} ms" + (", syncs with the host (ranked last)" if cand.syncs else "")
        else:
            status = "eligible"
        print(f"  {cand.record.key:32} priority {cand.record.priority:3}  {status}")
    print(f"chosen: {selection.chosen.key} ({selection.how})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from tokenyard.registry.bench import bench_op, render

    registry, spec = _op_spec(args.op)
    device = _device(args.device)
    shape_name, shape = parse_shape(spec, args.shape, device)
    result = bench_op(registry, args.op, shape, _dtype(args.dtype, device), device)
    print(render(result))
    path = args.json or os.path.join("out", "kernels", f"{args.op}-{shape_name}-{device.type}.json")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result.to_json(), f, indent=1)
    print(f"wrote {path}")
    return 0


def add_commands(subparsers) -> None:
    kernels = subparsers.add_parser("kernels", help="list, explain and benchmark registered kernels")
    sub = kernels.add_subparsers(dest="kernels_command", required=True)
    p = sub.add_parser("list", help="ops x kernels, with eligibility on this machine")
    p.add_argument("--device", help="cpu or cuda (default: cuda if present)")
    p.set_defaults(func=cmd_list)
    for name, func, text in (("explain", cmd_explain, "candidates for an op, why each is (not) eligible, the choice"),
                             ("bench", cmd_bench, "time every eligible kernel of an op against the device ceilings")):
        p = sub.add_parser(name, help=text)
        p.add_argument("op")
        p.add_argument("--shape", help="a named example shape and/or sizes, e.g. 'llama' or 'T=4096,D=4096'")
        p.add_argument("--dtype", help="float32 | bfloat16 | float16 (default: bfloat16 on cuda, float32 on cpu)")
        p.add_argument("--device", help="cpu or cuda (default: cuda if present)")
        if name == "explain":
            p.add_argument("--kernel", help="force backend:name (as the argument override would)")
        else:
            p.add_argument("--json", help="where to write the JSON (default out/kernels/OP-SHAPE-DEVICE.json)")
        p.set_defaults(func=func)
