"""How many pages the page pool gets: a memory budget divided by what one page costs.

Owns the budget arithmetic only. The budget is given (`kv_cache_memory` bytes) or taken from the
device: a fraction of the free GPU memory after the weights are loaded, or a fixed default on CPU,
where free memory says little about what the user wants to give up.
"""

from __future__ import annotations

import torch

from tokenyard.engine.models.base import CacheSpec

CPU_DEFAULT_BUDGET = 1 << 30


def memory_budget(device: torch.device, gpu_memory_utilization: float) -> int:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # keep (1 - utilization) of the whole device for activations, graphs and the allocator
        return max(int(free - total * (1 - gpu_memory_utilization)), 0)
    return CPU_DEFAULT_BUDGET


def num_pages_for_budget(spec: CacheSpec, dtype: torch.dtype, page_size: int, num_slots: int, budget: int) -> int:
    """Pages that fit in `budget` bytes once `num_slots` GDN state slots are set aside."""
    slot_bytes = num_slots * spec.bytes_per_slot(dtype)
    page_bytes = page_size * spec.bytes_per_token(dtype)
    if page_bytes == 0:
        raise ValueError(f"cache spec {spec} has no attention layers; the engine needs at least one")
    pages = (budget - slot_bytes) // page_bytes
    if pages < 1:
        raise ValueError(
            f"kv_cache_memory={budget} bytes: {num_slots} state slots take {slot_bytes} bytes and one page of "
            f"{page_size} tokens takes {page_bytes}; give a larger budget or fewer num_state_slots"
        )
    return int(pages)
