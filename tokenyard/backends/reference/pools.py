"""Reading and writing rows of caches and state pools by slot index (-1 = none).

Owns only the slot conventions shared by the paged caches and the GDN state pools: a read slot
of -1 reads zeros, a write slot of -1 writes nothing.
"""

from __future__ import annotations

import torch


def flat_rows(cache: torch.Tensor) -> torch.Tensor:
    """A [pages, page_size, ...] cache as a [slots, ...] view (writes land in the cache)."""
    return cache.view(-1, *cache.shape[2:])


def write_slots(slots: torch.Tensor, *writes: tuple[torch.Tensor, torch.Tensor]) -> None:
    """rows[slots[i]] = values[i] for each (rows, values) of writes and every i whose slot is not -1."""
    keep = (slots >= 0).nonzero()[:, 0]
    index = slots.index_select(0, keep).long()
    for rows, values in writes:
        rows.index_copy_(0, index, values.index_select(0, keep).to(rows.dtype))


def read_slots(rows: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """rows[slots[i]] as a new fp32 tensor, zeros where the slot is -1."""
    picked = rows[slots.clamp(min=0).long()].float()
    missing = (slots < 0).view(-1, *[1] * (picked.dim() - 1))
    return picked.masked_fill(missing, 0.0)
