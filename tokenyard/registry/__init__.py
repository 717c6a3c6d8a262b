"""The kernel registry: pluggy hookspecs, entry-point discovery, kernel records, selection
(priority | fastest), overrides, the tuning cache, and explanations of its choices.

Backends register through the ``tokenyard.backends`` entry-point group only; nothing here imports a
backend by name.
"""

from tokenyard.registry.core import (
    REFERENCE_BACKEND,
    BackendRegistrar,
    Registry,
    call_site_key,
    define_op,
    dispatch,
    get_registry,
    use_kernel,
)
from tokenyard.registry.hookspecs import ENTRY_POINT_GROUP, hookimpl, hookspec
from tokenyard.registry.records import Candidate, KernelRecord, OpSpec, Selection

__all__ = [
    "REFERENCE_BACKEND",
    "ENTRY_POINT_GROUP",
    "BackendRegistrar",
    "Candidate",
    "KernelRecord",
    "OpSpec",
    "Registry",
    "Selection",
    "call_site_key",
    "define_op",
    "dispatch",
    "get_registry",
    "hookimpl",
    "hookspec",
    "use_kernel",
]
