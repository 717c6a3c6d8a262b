"""The reference backend through the registry: every op of the contract has a reference kernel
taking exactly kernel_api's arguments, and kernel_api calls on CPU run it."""

import dataclasses
import inspect

import pytest
import torch

import tokenyard.kernel_api as api
from tokenyard.backends.reference import KERNELS
from tokenyard.registry import get_registry


def reference_record(op):
    records = [r for r in get_registry().kernels(op) if r.backend == "reference"]
    assert len(records) == 1, f"{op}: reference kernels {[r.key for r in records]}"
    return records[0]


@pytest.mark.parametrize("op", api.OPS)
def test_every_op_has_a_reference_kernel_for_cpu_and_cuda_at_priority_zero(op):
    record = reference_record(op)
    assert (record.name, record.priority, set(record.devices)) == ("torch", 0, {"cpu", "cuda"})
    assert record.fn is KERNELS[op]


@pytest.mark.parametrize("op", api.OPS)
def test_reference_kernel_takes_exactly_the_kernel_api_arguments(op):
    contract = [(n, p.default) for n, p in inspect.signature(getattr(api, op)).parameters.items() if n != "kernel"]
    kernel = [(n, p.default) for n, p in inspect.signature(KERNELS[op]).parameters.items()]
    assert kernel == contract


def cloned(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, api.NVFP4Weight):
        return api.NVFP4Weight(*(cloned(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        return {k: cloned(v) for k, v in value.items()}
    return value


def assert_same(a, b):
    if isinstance(a, api.NVFP4Weight):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.dtype == torch.float8_e4m3fn else torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("op", api.OPS)
def test_kernel_api_on_cpu_selects_and_runs_the_reference_kernel(op, dtype):
    registry = get_registry()
    spec = registry.ops[op]
    args = spec.example("cpu", dtype, **spec.shapes.get("small", {}))
    assert registry.select(op, args).chosen.backend == "reference"
    via_api, direct = cloned(args), cloned(args)
    torch.manual_seed(0)
    out_api = getattr(api, op)(**via_api)
    torch.manual_seed(0)
    out_direct = KERNELS[op](**direct)
    assert_same(out_api, out_direct)
    assert_same([via_api[n] for n in spec.mutates], [direct[n] for n in spec.mutates])
