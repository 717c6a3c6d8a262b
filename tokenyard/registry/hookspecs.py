"""The one hook a backend implements. Owns the pluggy markers; knows nothing about kernels."""

from __future__ import annotations

import pluggy

PROJECT = "tokenyard"
ENTRY_POINT_GROUP = "tokenyard.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class BackendSpec:
    @hookspec
    def tokenyard_register_kernels(self, registry):  # pragma: no cover - a specification
        """Register this backend's kernels by calling ``registry.register(op, fn, name=..., ...)``.

        ``registry`` is a small registration API bound to the calling backend (its entry-point
        name); see :class:`tokenyard.registry.core.BackendRegistrar`.
        """
