"""Every op of the contract rejects a wrong shape, dtype, device or index with a ValueError that
names the op and the argument, and leaves its inputs untouched."""

from __future__ import annotations

import pytest
import torch

import tokenyard.kernel_api as ops
from tokenyard.registry import get_registry

CPU = torch.device("cpu")


def example(op: str) -> dict:
    spec = get_registry().ops[op]
    torch.manual_seed(0)
    return spec.example(CPU, torch.float32, **spec.shapes["small"])


def tensor_args(args: dict) -> list[str]:
    return [k for k, v in args.items() if isinstance(v, torch.Tensor)]


def call(op: str, args: dict):
    return getattr(ops, op)(**args)


@pytest.mark.parametrize("op", ops.OPS)
def test_every_op_is_declared_documented_and_runs_its_example(op):
    fn = getattr(ops, op)
    assert fn.__doc__ and len(fn.__doc__) > 40
    assert op in get_registry().ops
    call(op, example(op))


@pytest.mark.parametrize("op", [op for op in ops.OPS if op != "nvfp4_quantize"])  # takes [..., N, K]
def test_wrong_rank_names_the_argument(op):
    args = example(op)
    for name in tensor_args(args):
        bad = dict(args)
        bad[name] = args[name].unsqueeze(0)
        with pytest.raises(ValueError, match=rf"^{op}: argument '{name}' .*expected"):
            call(op, bad)


@pytest.mark.parametrize("op", ops.OPS)
def test_wrong_dtype_names_the_argument_and_the_dtype(op):
    args = example(op)
    for name in tensor_args(args):
        bad = dict(args)
        bad[name] = args[name].to(torch.float64)
        with pytest.raises(ValueError, match=rf"^{op}: argument '{name}' has dtype torch.float64, expected"):
            call(op, bad)


@pytest.mark.parametrize("op", ops.OPS)
def test_wrong_device_names_the_argument(op):
    args = example(op)
    names = tensor_args(args)
    for name in names[1:]:
        bad = dict(args)
        bad[name] = args[name].to("meta")
        with pytest.raises(ValueError, match=rf"^{op}: argument '\w+' is on (meta|cpu), expected (cpu|meta)") as err:
            call(op, bad)
        assert f"'{name}'" in str(err.value)  # named as the stray argument or as the device's source


def test_mismatched_sizes_name_where_the_size_came_from():
    with pytest.raises(ValueError, match=r"argument 'w' has shape \(63,\): dim 0 \(D\) is 63, expected 64 \(as in 'x'\)"):
        ops.rms_norm(torch.randn(4, 64), torch.randn(63), 1e-6)


@pytest.mark.parametrize("op, name, value, message", [
    ("kv_cache_write", "slot_mapping", 10_000, "expected slots"),
    ("attention_decode", "page_table", 10_000, "expected page ids"),
    ("attention_extend", "page_table", -5, "expected page ids"),
    ("mla_decode", "page_table", 10_000, "expected page ids"),
    ("attention_decode", "seqlens_k", 10_000, "expected key counts"),
    ("gdn_extend", "read_slots", 99, "expected slots of state"),
    ("gdn_decode", "write_slots", -2, "expected slots of state"),
    ("causal_conv1d_extend", "write_slots", 99, "expected slots of conv_state"),
    ("moe_experts", "ids", 99, "expected expert ids"),
    ("rope", "positions", 10_000, "expected positions"),
    ("mla_cache_write", "slot_mapping", 10_000, "expected slots"),
])
def test_out_of_range_index_is_rejected_and_changes_nothing(op, name, value, message):
    args = example(op)
    before = {k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor)}
    args[name] = args[name].clone()
    args[name].view(-1)[0] = value
    with pytest.raises(ValueError, match=rf"^{op}: argument '{name}' holds {value}, {message}"):
        call(op, args)
    for k, v in before.items():
        if k != name:
            assert torch.equal(args[k], v), f"{k} changed although the call was rejected"


def test_two_sequences_writing_one_state_slot_is_rejected():
    args = example("gdn_extend")
    args["write_slots"] = torch.tensor([1, 1, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match="expected distinct slots"):
        ops.gdn_extend(**args)


def test_scalar_arguments_are_checked():
    with pytest.raises(ValueError, match=r"rms_norm: argument 'eps' is -1.0, expected > 0"):
        ops.rms_norm(torch.randn(2, 8), torch.randn(8), -1.0)
    args = example("moe_route")
    with pytest.raises(ValueError, match=r"moe_route: argument 'top_k' is 0, expected >= 1"):
        ops.moe_route(**{**args, "top_k": 0})
    with pytest.raises(ValueError, match=r"moe_route: argument 'n_group' is 3, expected a divisor"):
        ops.moe_route(**{**args, "n_group": 3})
    with pytest.raises(ValueError, match=r"rope: argument 'style' is 'llama', expected one of"):
        ops.rope(**{**example("rope"), "style": "llama"})
    sample = example("sample")
    with pytest.raises(ValueError, match=r"sample: argument 'temperature' holds -1.0"):
        ops.sample(**{**sample, "temperature": torch.full_like(sample["temperature"], -1.0)})


def test_cu_seqlens_must_cover_the_packed_tokens():
    args = example("attention_extend")
    args["cu_seqlens_q"] = args["cu_seqlens_q"].clone()
    args["cu_seqlens_q"][-1] -= 1
    with pytest.raises(ValueError, match=r"argument 'cu_seqlens_q' ends at \d+, expected \d+ \(the length of 'q'\)"):
        ops.attention_extend(**args)


def test_nvfp4_weight_parts_are_checked():
    q = ops.nvfp4_quantize(torch.randn(8, 64))
    bad = ops.NVFP4Weight(q.packed, q.scales.float(), q.global_scale)
    with pytest.raises(ValueError, match=r"gemm: argument 'w.scales' .*expected float8_e4m3fn"):
        ops.gemm(torch.randn(2, 64), bad)
    with pytest.raises(ValueError, match=r"gemm: argument 'w \(logical\)'.*expected 32"):
        ops.gemm(torch.randn(2, 32), q)


@pytest.mark.parametrize("batch", [3, 40])  # 3 rows: checked as host lists; 40 rows x 8 pages: as tensors
def test_only_pages_in_use_are_checked(batch):
    """Padding past a sequence's last page is never read and may hold anything; a page in use may not."""
    D, page, pages_per_seq = 8, 4, 8
    num_pages = batch * pages_per_seq
    table = torch.arange(num_pages, dtype=torch.int32).view(batch, pages_per_seq)
    seqlens = torch.full((batch,), 2 * page + 1, dtype=torch.int32)  # 3 pages in use per sequence
    args = dict(q=torch.randn(batch, 2, D), k_cache=torch.randn(num_pages, page, 1, D),
                v_cache=torch.randn(num_pages, page, 1, D), page_table=table, seqlens_k=seqlens, scale=0.3)
    table[-1, 5] = 10_000  # padding
    ops.attention_decode(**args)
    table[-1, 2] = 10_000  # the third page, in use
    with pytest.raises(ValueError, match=rf"argument 'page_table' holds 10000, expected page ids of pages in use in \[0, {num_pages}\)"):
        ops.attention_decode(**args)
