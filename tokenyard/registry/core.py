"""The kernel registry: backend discovery, kernel records, selection, overrides and dispatch.

Owns: loading backends through the ``tokenyard.backends`` entry points (never by name), the
records they register, the per-call-site choice of kernel and its cache. Timing and reference
checks live in :mod:`tokenyard.registry.tuning`; op specifications are declared by
:mod:`tokenyard.kernel_api`, which this module imports only lazily to make sure they exist.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from typing import Any, Callable, Iterator, Optional

import pluggy
import torch

from tokenyard.registry.hookspecs import ENTRY_POINT_GROUP, PROJECT, BackendSpec
from tokenyard.registry.records import Candidate, KernelRecord, OpSpec, Selection

REFERENCE_BACKEND = "reference"
POLICIES = ("priority", "fastest")
MAX_SIGNATURES = 4096   # exact call signatures remembered (many share one shape bucket's choice)

# Op specifications are declared once per process by tokenyard.kernel_api and shared by registries.
OP_SPECS: dict[str, OpSpec] = {}

_OVERRIDES: contextvars.ContextVar[dict] = contextvars.ContextVar("tokenyard_kernel_overrides", default={})


class BackendRegistrar:
    """The registration API handed to one backend's hook: ``register`` and nothing else."""

    def __init__(self, registry: "Registry", backend: str):
        self._registry = registry
        self.backend = backend

    def register(
        self,
        op: str,
        fn: Callable[..., Any],
        *,
        name: str,
        priority: int = 0,
        devices: tuple[str, ...] = ("cpu", "cuda"),
        min_capability: Optional[tuple[int, int]] = None,
        max_capability: Optional[tuple[int, int]] = None,
        supports: Optional[Callable[..., Optional[str]]] = None,
    ) -> KernelRecord:
        record = KernelRecord(
            op=op,
            backend=self.backend,
            name=name,
            fn=fn,
            priority=int(priority),
            devices=tuple(devices),
            min_capability=tuple(min_capability) if min_capability else None,
            max_capability=tuple(max_capability) if max_capability else None,
            supports=supports,
        )
        self._registry.add(record)
        return record


def _bucket(n: int) -> int:
    """Next power of two: call sites whose sizes share a bucket share a kernel choice."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def call_site_key(op: str, device: torch.device, args: dict) -> str:
    """(op, device, dtypes, shape bucket) of one call, as a string usable in JSON."""
    parts = [op, str(device)]
    for name, value in args.items():
        if isinstance(value, torch.Tensor):
            shape = "x".join(str(_bucket(s)) for s in value.shape)
            parts.append(f"{name}={str(value.dtype).removeprefix('torch.')}[{shape}]")
        elif hasattr(value, "packed") and isinstance(getattr(value, "packed"), torch.Tensor):
            parts.append(f"{name}=nvfp4[{'x'.join(str(_bucket(s)) for s in value.packed.shape)}]")
        elif isinstance(value, (str, bool, int, float)) or value is None:
            parts.append(f"{name}={value}")  # scalars (rotary_dim, top_k, ...) can decide supports()
    return "|".join(parts)


def call_signature(op: str, args: dict) -> tuple:
    """What call_site_key depends on, unbucketed and unformatted: cheap enough to build on every
    call, and a dict key for the selection already made for that call site."""
    sig: list = [op]
    for name, value in args.items():
        if isinstance(value, torch.Tensor):
            sig.append((name, value.dtype, value.shape, value.device))
        elif isinstance(value, (str, bool, int, float)) or value is None:
            sig.append((name, value))
        else:
            packed = getattr(value, "packed", None)
            sig.append((name, packed.shape, packed.device) if isinstance(packed, torch.Tensor) else name)
    return tuple(sig)


def args_device(args: dict) -> torch.device:
    for value in args.values():
        if isinstance(value, torch.Tensor):
            return value.device
        packed = getattr(value, "packed", None)
        if isinstance(packed, torch.Tensor):
            return packed.device
    return torch.device("cpu")


class Registry:
    """All kernels of all loaded backends, and the choice of one per call site."""

    def __init__(self, *, load_entry_points: bool = True, cache_path: Optional[str] = None):
        self.records: dict[str, list[KernelRecord]] = {}
        self.ops = OP_SPECS
        self.backends: list[str] = []
        self.failed_backends: dict[str, str] = {}
        self._load_entry_points = load_entry_points
        self._loaded = False
        self._lock = threading.RLock()
        self._choices: dict[str, Selection] = {}
        self._by_signature: dict[tuple, Selection] = {}   # call_signature -> the selection of its key
        self._cache_path = cache_path
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(BackendSpec)

    # -- records ---------------------------------------------------------------------------
    def add(self, record: KernelRecord) -> None:
        with self._lock:
            existing = self.records.setdefault(record.op, [])
            if any(r.key == record.key for r in existing):
                raise ValueError(f"kernel {record.key!r} is already registered for op {record.op!r}")
            existing.append(record)
            self.clear_choices()

    def kernels(self, op: str) -> list[KernelRecord]:
        self.ensure_loaded()
        return list(self.records.get(op, []))

    def find(self, op: str, key: str) -> KernelRecord:
        """The kernel named ``backend:name`` (or just ``backend`` when it has one kernel for op)."""
        candidates = self.kernels(op)
        exact = [r for r in candidates if r.key == key]
        if not exact and ":" not in key:
            exact = [r for r in candidates if r.backend == key]
        if len(exact) != 1:
            known = ", ".join(r.key for r in candidates) or "none"
            raise ValueError(f"kernel override {key!r} for op {op!r} matches {len(exact)} kernels; registered: {known}")
        return exact[0]

    # -- backends --------------------------------------------------------------------------
    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            import tokenyard.kernel_api  # noqa: F401  (declares the op specifications)

            if self._load_entry_points:
                self._load_backends()
            self._loaded = True

    def _load_backends(self) -> None:
        from importlib.metadata import entry_points

        allowed = os.environ.get("TOKENYARD_BACKENDS")
        allowed_set = {b.strip() for b in allowed.split(",") if b.strip()} if allowed else None
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if allowed_set is not None and ep.name not in allowed_set and ep.name != REFERENCE_BACKEND:
                continue
            if ep.name in self.backends or ep.name in self.failed_backends:
                continue
            try:
                module = ep.load()
            except Exception as exc:  # e.g. no Triton on a CPU machine: report, don't fail
                self.failed_backends[ep.name] = f"import failed: {type(exc).__name__}: {exc}"
                continue
            self.add_backend(ep.name, module)

    def add_backend(self, name: str, plugin: Any) -> None:
        """Register one backend plugin object (a module or class with the hook)."""
        with self._lock:
            self.pm.register(plugin, name=name)
            impls = [i for i in self.pm.hook.tokenyard_register_kernels.get_hookimpls() if i.plugin_name == name]
            try:
                for impl in impls:
                    impl.function(registry=BackendRegistrar(self, name))
            except Exception as exc:
                self.failed_backends[name] = f"registration failed: {type(exc).__name__}: {exc}"
                for recs in self.records.values():
                    recs[:] = [r for r in recs if r.backend != name]
                self.pm.unregister(name=name)
                return
            self.backends.append(name)
            self.clear_choices()

    # -- selection -------------------------------------------------------------------------
    def policy(self) -> str:
        policy = os.environ.get("TOKENYARD_KERNEL_POLICY", "fastest")
        if policy not in POLICIES:
            raise ValueError(f"TOKENYARD_KERNEL_POLICY={policy!r}: expected one of {POLICIES}")
        return policy

    def candidates(self, op: str, args: dict, device: Optional[torch.device] = None) -> list[Candidate]:
        device = device or args_device(args)
        return [Candidate(r, r.ineligibility(device, args)) for r in self.kernels(op)]

    def override_for(self, op: str) -> Optional[tuple[str, str]]:
        scoped = _OVERRIDES.get()
        if op in scoped:
            return scoped[op], "context"
        env = os.environ.get(f"TOKENYARD_KERNEL_{op.upper()}")
        if env:
            return env, "environment"
        return None

    def select(self, op: str, args: dict, kernel: Optional[str] = None) -> Selection:
        self.ensure_loaded()
        if op not in self.ops:
            raise ValueError(f"op {op!r} is not part of the op contract; known ops: {sorted(self.ops)}")
        override = (kernel, "argument") if kernel else self.override_for(op)
        if override is not None:
            device = args_device(args)
            record = self.find(op, override[0])
            reason = record.ineligibility(device, args)
            if reason:
                raise ValueError(f"kernel {record.key!r} chosen by {override[1]} for op {op!r} cannot run here: {reason}")
            return Selection(op, call_site_key(op, device, args), record, f"override:{override[1]}")

        # The hot path: one dict lookup on the call's unbucketed signature.
        signature = call_signature(op, args)
        cached = self._by_signature.get(signature)
        if cached is not None:
            return cached
        device = args_device(args)
        key = call_site_key(op, device, args)
        with self._lock:
            cached = self._choices.get(key)
            if cached is None:
                cached = self._choices[key] = self._select_uncached(op, key, device, args)
            if len(self._by_signature) >= MAX_SIGNATURES:   # shapes that keep changing: start over
                self._by_signature.clear()
            self._by_signature[signature] = cached
            return cached

    def _select_uncached(self, op: str, key: str, device: torch.device, args: dict) -> Selection:
        from tokenyard.registry import tuning

        candidates = self.candidates(op, args, device)
        eligible = [c for c in candidates if c.reason is None]
        if not eligible:
            reasons = "; ".join(f"{c.record.key}: {c.reason}" for c in candidates) or "no kernel registered"
            raise RuntimeError(f"no kernel can run op {op!r} for these arguments on {device}: {reasons}")
        by_priority = sorted(eligible, key=lambda c: (-c.record.priority, c.record.key))
        policy = self.policy()
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        if len(eligible) == 1:
            return Selection(op, key, eligible[0].record, "only eligible kernel", candidates)
        if policy == "priority" or capturing:
            # Never tune inside graph capture: the runner warms up every shape before capturing.
            how = "priority" if policy == "priority" else "priority (inside graph capture: no tuning)"
            return Selection(op, key, by_priority[0].record, how, candidates)
        clone_bytes = tuning.trial_clone_bytes(self.ops[op], args)
        if clone_bytes > tuning.TRIAL_CLONE_LIMIT:
            return Selection(op, key, by_priority[0].record,
                             f"priority (a trial would clone {clone_bytes >> 20} MiB of mutated arguments)", candidates)
        persisted = tuning.load_decision(self, key)
        if persisted is not None:
            match = [c for c in eligible if c.record.key == persisted]
            if match:
                return Selection(op, key, match[0].record, "persisted", candidates)
        tuning.tune(self, self.ops[op], candidates, args)
        usable = [c for c in eligible if c.usable and c.time_ms is not None]
        if not usable:
            ref = [c for c in eligible if c.record.backend == REFERENCE_BACKEND]
            chosen = ref[0] if ref else by_priority[0]
            return Selection(op, key, chosen.record, "fastest (no kernel passed; fell back)", candidates)
        # a kernel that syncs with the host ranks after every one that does not, however fast it
        # timed alone: in a running engine it stalls the launch queue and prevents CUDA graphs
        best = min(usable, key=lambda c: (c.syncs, c.time_ms, -c.record.priority))
        tuning.store_decision(self, key, best, candidates)
        return Selection(op, key, best.record, "fastest", candidates)

    def dispatch(self, op: str, args: dict, kernel: Optional[str] = None) -> Any:
        return self.select(op, args, kernel).chosen.fn(**args)

    def selections(self) -> list[Selection]:
        """Every kernel choice made so far, one per call site (for reports and benchmarks)."""
        with self._lock:
            return list(self._choices.values())

    def clear_choices(self) -> None:
        self._choices.clear()
        self._by_signature.clear()


_REGISTRY: Optional[Registry] = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, with backends loaded from entry points on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = Registry()
    return _REGISTRY


def define_op(spec: OpSpec) -> OpSpec:
    OP_SPECS[spec.name] = spec
    return spec


def dispatch(op: str, args: dict, kernel: Optional[str] = None) -> Any:
    return get_registry().dispatch(op, args, kernel)


@contextlib.contextmanager
def use_kernel(**choices: str) -> Iterator[None]:
    """Within the block, run each named op on the given kernel: ``use_kernel(rms_norm="nvidia:rms_norm")``."""
    merged = {**_OVERRIDES.get(), **choices}
    token = _OVERRIDES.set(merged)
    try:
        yield
    finally:
        _OVERRIDES.reset(token)
