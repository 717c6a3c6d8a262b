"""Short causal depthwise conv with state: extend against F.conv1d over [state ‖ x]; split and
resumed equals unsplit; sequences shorter than the window; decode equals extend of length 1."""

import pytest
import torch
import torch.nn.functional as F

from tokenyard.backends.reference.gdn import causal_conv1d_decode, causal_conv1d_extend

from .oracles import rand, tol

DTYPES = [torch.float32, torch.bfloat16]
C, W = 6, 4


def direct(x, w, bias, state, activation):
    """y and new state of one sequence: F.conv1d over [state ‖ xᵀ] without padding."""
    window = torch.cat((state.double(), x.double().t()), dim=-1)
    y = F.conv1d(window[None], w.double()[:, None, :], None if bias is None else bias.double(), groups=C)[0].t()
    return (F.silu(y) if activation == "silu" else y), window[:, -(W - 1) :]


def ints(values, device):
    return torch.tensor(values, dtype=torch.int32, device=device)


@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_extend_matches_conv1d_over_state_then_inputs(device, activation, with_bias, dtype):
    lens = [9, 2, 1, 5]  # two shorter than W - 1: the old state shifts along
    x = rand(sum(lens), C, dtype=dtype, device=device)
    w = rand(C, W, dtype=dtype, device=device)
    bias = rand(C, dtype=dtype, device=device) if with_bias else None
    pool = rand(5, C, W - 1, dtype=dtype, device=device)
    initial = pool.clone()
    reads, writes = [4, 1, -1, 3], [0, 1, 2, -1]  # slot 1 in place; the last writes nothing
    cu = [0, 9, 11, 12, 17]
    y = causal_conv1d_extend(x=x, w=w, bias=bias, conv_state=pool, cu_seqlens=ints(cu, device),
                             read_slots=ints(reads, device), write_slots=ints(writes, device), activation=activation)
    assert y.shape == x.shape and y.dtype == dtype
    for b in range(4):
        start = initial[reads[b]] if reads[b] >= 0 else torch.zeros_like(initial[0])
        y_b, state_b = direct(x[cu[b] : cu[b + 1]], w, bias, start, activation)
        torch.testing.assert_close(y[cu[b] : cu[b + 1]].double(), y_b, **tol(dtype))
        if writes[b] >= 0:
            torch.testing.assert_close(pool[writes[b]].double(), state_b, **tol(dtype))
    assert torch.equal(pool[3], initial[3]) and torch.equal(pool[4], initial[4])


@pytest.mark.parametrize("split", [1, 2, 5])
def test_conv1d_extend_split_and_resumed_equals_unsplit(device, split):
    x, w, bias = rand(8, C, device=device), rand(C, W, device=device), rand(C, device=device)
    pool = rand(2, C, W - 1, device=device)
    whole = pool.clone()
    y_whole = causal_conv1d_extend(x=x, w=w, bias=bias, conv_state=whole, cu_seqlens=ints([0, 8], device),
                                   read_slots=ints([0], device), write_slots=ints([1], device), activation="silu")
    y1 = causal_conv1d_extend(x=x[:split], w=w, bias=bias, conv_state=pool, cu_seqlens=ints([0, split], device),
                              read_slots=ints([0], device), write_slots=ints([1], device), activation="silu")
    y2 = causal_conv1d_extend(x=x[split:], w=w, bias=bias, conv_state=pool, cu_seqlens=ints([0, 8 - split], device),
                              read_slots=ints([1], device), write_slots=ints([1], device), activation="silu")
    torch.testing.assert_close(torch.cat((y1, y2)), y_whole)
    torch.testing.assert_close(pool[1], whole[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_decode_equals_extend_of_length_one(device, dtype):
    x, w, bias = rand(4, C, dtype=dtype, device=device), rand(C, W, dtype=dtype, device=device), rand(C, dtype=dtype, device=device)
    pool = rand(5, C, W - 1, dtype=dtype, device=device)
    extend_pool = pool.clone()
    args = dict(x=x, w=w, bias=bias, read_slots=ints([2, -1, 0, 4], device), write_slots=ints([2, 1, -1, 3], device),
                activation="silu")
    y = causal_conv1d_decode(conv_state=pool, **args)
    expected = causal_conv1d_extend(conv_state=extend_pool, cu_seqlens=torch.arange(5, dtype=torch.int32, device=device), **args)
    assert y.dtype == dtype
    torch.testing.assert_close(y, expected)
    assert torch.equal(pool, extend_pool)
