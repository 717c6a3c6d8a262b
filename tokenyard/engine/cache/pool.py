"""A pool of integer ids with no sharing: the GDN state-slot pool.

Owns which ids are free. Who holds the others is recorded on the requests (`Request.slot`); the
scheduler's invariant checker reconciles the two. No tensors here: the ids index the state tensors
of `ModelCaches`. (Pages, which requests share through the prefix cache, have `PagePool`.)
"""

from __future__ import annotations

from collections import deque


class IdPool:
    def __init__(self, name: str, capacity: int):
        if capacity < 0:
            raise ValueError(f"{name} pool capacity={capacity}: expected >= 0")
        self.name = name
        self.capacity = capacity
        self._free: deque[int] = deque(range(capacity))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def free_ids(self) -> list[int]:
        return list(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"{self.name} pool: asked for {n}, {len(self._free)} free of {self.capacity}")
        return [self._free.popleft() for _ in range(n)]

    def release(self, ids: list[int]) -> None:
        self._free.extend(ids)
