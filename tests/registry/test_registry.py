"""The registry's selection rules, overrides, tuning and persistence, on fake backends whose kernels
are plain torch functions with known behaviour (fast, slow, wrong, mutating)."""

from __future__ import annotations

import importlib.metadata
import json
import time
import types

import pytest
import torch

import tokenyard.kernel_api as ops
from tokenyard.registry import Registry, hookimpl, use_kernel
from tokenyard.registry.tuning import decisions_path


def _silu_mul(x):
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate.float()).to(x.dtype) * up


def _slow(fn, seconds=0.003):
    def wrapped(**kw):
        time.sleep(seconds)
        return fn(**kw)
    return wrapped


def plugin(*registrations):
    """A backend object whose hook registers the given (op, fn, kwargs) triples."""
    class Backend:
        @hookimpl
        def tokenyard_register_kernels(self, registry):
            for op, fn, kwargs in registrations:
                registry.register(op, fn, **kwargs)
    return Backend()


@pytest.fixture
def registry(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENYARD_KERNEL_POLICY", raising=False)
    monkeypatch.delenv("TOKENYARD_KERNEL_SILU_AND_MUL", raising=False)
    reg = Registry(load_entry_points=False, cache_path=str(tmp_path / "decisions.json"))
    reg.add_backend("reference", plugin(("silu_and_mul", _slow(lambda x: _silu_mul(x)), dict(name="torch"))))
    return reg


def x_args(T=8, I=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(T, 2 * I, generator=g))


def test_priority_policy_picks_highest_eligible(registry, monkeypatch):
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    registry.add_backend("vendor", plugin(
        ("silu_and_mul", _silu_mul, dict(name="fast", priority=10)),
        ("silu_and_mul", _silu_mul, dict(name="gpu_only", priority=20, devices=("cuda",))),
    ))
    sel = registry.select("silu_and_mul", x_args())
    assert sel.chosen.key == "vendor:fast"
    reasons = {c.record.key: c.reason for c in sel.candidates}
    assert reasons["vendor:gpu_only"] == "runs on cuda, not cpu"


def test_supports_reason_excludes_kernel_and_is_reported(registry, monkeypatch):
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    registry.add_backend("vendor", plugin(
        ("silu_and_mul", _silu_mul, dict(name="small_only", priority=10,
                                         supports=lambda x: None if x.shape[0] <= 4 else f"T={x.shape[0]} > 4")),
    ))
    assert registry.select("silu_and_mul", x_args(T=4)).chosen.key == "vendor:small_only"
    sel = registry.select("silu_and_mul", x_args(T=64))
    assert sel.chosen.key == "reference:torch"
    assert {c.record.key: c.reason for c in sel.candidates}["vendor:small_only"] == "T=64 > 4"


def test_capability_bounds_exclude_on_cpu_devices_only_by_device(registry):
    rec = registry.kernels("silu_and_mul")[0]
    assert rec.ineligibility(torch.device("cpu"), x_args()) is None


def test_choice_is_cached_per_shape_bucket(registry, monkeypatch):
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    calls = []

    def counting_supports(x):
        calls.append(x.shape[0])
        return None

    registry.add_backend("vendor", plugin(("silu_and_mul", _silu_mul, dict(name="k", priority=5, supports=counting_supports))))
    for T in (5, 6, 7, 8):  # one bucket (8)
        registry.select("silu_and_mul", x_args(T=T))
    registry.select("silu_and_mul", x_args(T=9))  # next bucket (16)
    assert calls == [5, 9]


def test_overrides_argument_then_context_then_environment(registry, monkeypatch):
    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    registry.add_backend("vendor", plugin(("silu_and_mul", _silu_mul, dict(name="fast", priority=10))))
    args = x_args()
    monkeypatch.setenv("TOKENYARD_KERNEL_SILU_AND_MUL", "reference:torch")
    assert registry.select("silu_and_mul", args).how == "override:environment"
    assert registry.select("silu_and_mul", args).chosen.key == "reference:torch"
    with use_kernel(silu_and_mul="vendor:fast"):
        sel = registry.select("silu_and_mul", args)
        assert (sel.chosen.key, sel.how) == ("vendor:fast", "override:context")
        sel = registry.select("silu_and_mul", args, kernel="reference")
        assert (sel.chosen.key, sel.how) == ("reference:torch", "override:argument")


def test_override_naming_unknown_or_ineligible_kernel_is_a_clear_error(registry):
    registry.add_backend("vendor", plugin(("silu_and_mul", _silu_mul, dict(name="gpu", devices=("cuda",)))))
    with pytest.raises(ValueError, match="'nope:k'.*registered: reference:torch, vendor:gpu"):
        registry.select("silu_and_mul", x_args(), kernel="nope:k")
    with pytest.raises(ValueError, match="vendor:gpu.*cannot run here: runs on cuda, not cpu"):
        registry.select("silu_and_mul", x_args(), kernel="vendor:gpu")


def test_fastest_picks_the_faster_correct_kernel_and_persists_it(registry, tmp_path):
    registry.add_backend("vendor", plugin(("silu_and_mul", _silu_mul, dict(name="fast", priority=-1))))
    sel = registry.select("silu_and_mul", x_args())
    assert (sel.chosen.key, sel.how) == ("vendor:fast", "fastest")
    times = {c.record.key: c.time_ms for c in sel.candidates}
    assert times["vendor:fast"] < times["reference:torch"]
    saved = json.load(open(decisions_path(registry)))
    assert saved[sel.key]["chosen"] == "vendor:fast"
    # a new process (registry) with the same cache reuses the decision without timing anything
    again = Registry(load_entry_points=False, cache_path=registry._cache_path)
    again.add_backend("reference", plugin(("silu_and_mul", _slow(_silu_mul), dict(name="torch"))))
    again.add_backend("vendor", plugin(("silu_and_mul", _silu_mul, dict(name="fast", priority=-1))))
    sel2 = again.select("silu_and_mul", x_args())
    assert (sel2.chosen.key, sel2.how) == ("vendor:fast", "persisted")


def test_fastest_excludes_a_wrong_kernel_with_the_reason(registry):
    wrong = lambda x: x.chunk(2, dim=-1)[0] * x.chunk(2, dim=-1)[1]  # noqa: E731  (forgot the silu)
    registry.add_backend("vendor", plugin(("silu_and_mul", wrong, dict(name="wrong", priority=10))))
    sel = registry.select("silu_and_mul", x_args())
    assert sel.chosen.key == "reference:torch"
    failure = {c.record.key: c.check_failure for c in sel.candidates}["vendor:wrong"]
    assert "relative L2 error" in failure and "exceeds tolerance" in failure


def test_fastest_trials_leave_mutated_inputs_untouched(tmp_path):
    """Kernels that write in place (kv_cache_write) are tuned on clones of what they mutate."""
    from tokenyard.backends.reference.attention import kv_cache_write as ref_write

    reg = Registry(load_entry_points=False, cache_path=str(tmp_path / "d.json"))
    reg.add_backend("reference", plugin(("kv_cache_write", _slow(ref_write), dict(name="torch"))))
    reg.add_backend("vendor", plugin(("kv_cache_write", ref_write, dict(name="copy"))))
    spec = reg.ops["kv_cache_write"]
    args = spec.example(torch.device("cpu"), torch.float32, **spec.shapes["small"])
    before = args["k_cache"].clone(), args["v_cache"].clone()
    sel = reg.select("kv_cache_write", args)
    assert all(c.time_ms is not None for c in sel.candidates)
    assert torch.equal(args["k_cache"], before[0]) and torch.equal(args["v_cache"], before[1])


def test_a_call_site_mutating_more_than_the_clone_limit_is_not_timed(tmp_path, monkeypatch):
    """An engine's kv_cache_write writes into its whole page pool (GBs): no trial clones it, the
    highest-priority eligible kernel runs, and the selection says why."""
    from tokenyard.backends.reference.attention import kv_cache_write as ref_write
    from tokenyard.registry import tuning

    reg = Registry(load_entry_points=False, cache_path=str(tmp_path / "d.json"))
    reg.add_backend("reference", plugin(("kv_cache_write", ref_write, dict(name="torch"))))
    reg.add_backend("vendor", plugin(("kv_cache_write", _slow(ref_write), dict(name="slow_copy", priority=10))))
    spec = reg.ops["kv_cache_write"]
    args = spec.example(torch.device("cpu"), torch.float32, **spec.shapes["small"])
    monkeypatch.setattr(tuning, "TRIAL_CLONE_LIMIT", tuning.trial_clone_bytes(spec, args) - 1)
    sel = reg.select("kv_cache_write", args)
    assert sel.chosen.key == "vendor:slow_copy" and "would clone" in sel.how
    assert all(c.time_ms is None for c in sel.candidates)


def test_a_backend_that_fails_to_import_is_reported_not_fatal(monkeypatch, tmp_path):
    eps = [
        importlib.metadata.EntryPoint("reference", "tokenyard.backends.reference", "tokenyard.backends"),
        importlib.metadata.EntryPoint("broken", "tokenyard_no_such_module_xyz", "tokenyard.backends"),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [e for e in eps if e.group == group])
    reg = Registry(cache_path=str(tmp_path / "d.json"))
    reg.ensure_loaded()
    assert "reference" in reg.backends
    assert reg.failed_backends["broken"].startswith("import failed: ModuleNotFoundError")
    assert reg.select("rms_norm", dict(x=torch.randn(2, 8), w=torch.randn(8), eps=1e-6, residual=None,
                                       weight_offset=0.0)).chosen.key == "reference:torch"


def test_a_backend_whose_hook_raises_is_reported_and_leaves_no_kernels(registry):
    def bad_fn(x):
        return x

    class Broken:
        @hookimpl
        def tokenyard_register_kernels(self, registry):
            registry.register("silu_and_mul", bad_fn, name="half")
            raise RuntimeError("driver too old")

    registry.add_backend("broken", Broken())
    assert "driver too old" in registry.failed_backends["broken"]
    assert [r.key for r in registry.kernels("silu_and_mul")] == ["reference:torch"]


def test_registering_the_same_kernel_twice_is_an_error(registry):
    with pytest.raises(ValueError, match="already registered"):
        registry.add_backend("reference", plugin(("silu_and_mul", _silu_mul, dict(name="torch"))))


def test_unknown_op_is_a_clear_error(registry):
    with pytest.raises(ValueError, match="'no_such_op' is not part of the op contract"):
        registry.select("no_such_op", {})


def test_kernel_api_dispatches_through_the_process_registry():
    x = torch.randn(4, 16)
    y = ops.silu_and_mul(x, kernel="reference")
    torch.testing.assert_close(y, torch.nn.functional.silu(x[:, :8]) * x[:, 8:])


def test_a_scalar_argument_is_part_of_the_call_site(tmp_path, monkeypatch):
    """supports() may depend on a scalar (here rms_norm's weight_offset): two calls with equal
    tensors but different scalars must not share a choice."""
    from tokenyard.backends.reference.norm import rms_norm as ref_rms_norm

    monkeypatch.setenv("TOKENYARD_KERNEL_POLICY", "priority")
    reg = Registry(load_entry_points=False, cache_path=str(tmp_path / "d.json"))
    reg.add_backend("reference", plugin(("rms_norm", ref_rms_norm, dict(name="torch"))))
    reg.add_backend("vendor", plugin(("rms_norm", ref_rms_norm, dict(
        name="no_offset", priority=10,
        supports=lambda weight_offset, **_: None if weight_offset == 0.0 else "no (1+w) norm"))))
    args = dict(x=torch.randn(4, 8), w=torch.randn(8), eps=1e-6, residual=None, weight_offset=0.0)
    assert reg.select("rms_norm", args).chosen.key == "vendor:no_offset"
    assert reg.select("rms_norm", {**args, "weight_offset": 1.0}).chosen.key == "reference:torch"


def test_fastest_ranks_a_kernel_that_syncs_with_the_host_last(registry, monkeypatch):
    """Timed alone, a kernel that waits for the GPU from the host can look fastest; in an engine it
    stalls the launch queue and rules out CUDA graphs, so every non-syncing correct kernel wins."""
    from tokenyard.registry import tuning

    fast_but_syncs = lambda x: _silu_mul(x)  # noqa: E731
    registry.add_backend("vendor", plugin(
        ("silu_and_mul", fast_but_syncs, dict(name="fast_syncing", priority=10)),
        ("silu_and_mul", _slow(_silu_mul, 0.001), dict(name="slower", priority=5)),
    ))
    monkeypatch.setattr(tuning, "syncs_with_host", lambda fn, args, device: fn is fast_but_syncs)
    sel = registry.select("silu_and_mul", x_args())
    assert (sel.chosen.key, sel.how) == ("vendor:slower", "fastest")
    times = {c.record.key: c.time_ms for c in sel.candidates}
    assert times["vendor:fast_syncing"] < times["vendor:slower"]
    saved = json.loads(open(decisions_path(registry)).read())
    assert saved[sel.key]["syncs"] == ["vendor:fast_syncing"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_syncs_are_detected_on_cuda():
    from tokenyard.registry.tuning import syncs_with_host

    x = torch.randn(64, device="cuda")
    assert syncs_with_host(lambda x: x.sum().item(), {"x": x}, x.device)
    assert syncs_with_host(lambda x: x.nonzero(), {"x": x}, x.device)
    assert not syncs_with_host(lambda x: x * 2, {"x": x}, x.device)
    assert torch.cuda.get_sync_debug_mode() == 0


def test_check_compares_where_the_reference_is_finite_and_fails_on_nan(registry):
    """Pools hold garbage (NaN, inf) in unused rows: the check compares the finite elements, and a
    kernel that turns a finite element into NaN, or is wrong on the finite ones, is excluded."""
    from tokenyard.registry.tuning import default_check

    spec = registry.ops["silu_and_mul"]
    ref = torch.randn(64)
    ref[::7] = float("nan")
    assert default_check(spec, [ref.clone()], [ref], {}) is None
    bad = ref.clone()
    bad[1] = float("nan")
    assert "non-finite" in default_check(spec, [bad], [ref], {})
    off = ref.clone()
    off[2] += 10
    assert "relative L2 error" in default_check(spec, [off], [ref], {})


def test_an_fp32_output_of_bf16_inputs_is_checked_at_the_bf16_tolerance(registry):
    """gdn_extend's fp32 state computed from bf16 q/k/v carries bf16 rounding: held to fp32's 1e-3
    it excluded every fast kernel (tokenyard's and FLA's alike, 2.5e-3) in an engine on the H100."""
    from tokenyard.registry.tuning import tolerance

    spec = registry.ops["gdn_extend"]
    bf16_args = {"q": torch.zeros(2, dtype=torch.bfloat16), "state": torch.zeros(2)}
    assert tolerance(spec, torch.float32, bf16_args) == spec.rtol[torch.bfloat16]
    assert tolerance(spec, torch.float32, {"q": torch.zeros(2), "state": torch.zeros(2)}) == spec.rtol[torch.float32]


def test_selections_lists_every_call_site_chosen(registry):
    first = registry.select("silu_and_mul", x_args(T=8))
    second = registry.select("silu_and_mul", x_args(T=4096))
    assert first.key != second.key
    assert sorted(s.key for s in registry.selections()) == sorted([first.key, second.key])
