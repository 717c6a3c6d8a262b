"""Example-input makers for paged caches (shared by the attention and MLA ops)."""

from __future__ import annotations

import torch


def paged_layout(seqlens_k: list[int], page_size: int, device, shuffle: bool = True):
    """A page table that gives each sequence its own pages (scattered when ``shuffle``).

    Returns (page_table int32 [B, max_pages], num_pages)."""
    pages_per_seq = [max(1, -(-n // page_size)) for n in seqlens_k]
    total = sum(pages_per_seq)
    order = torch.randperm(total) if shuffle else torch.arange(total)
    table = torch.zeros(len(seqlens_k), max(pages_per_seq), dtype=torch.int32)
    at = 0
    for b, n in enumerate(pages_per_seq):
        table[b, :n] = order[at:at + n].to(torch.int32)
        at += n
    return table.to(device), total


def cu_seqlens(lengths: list[int], device) -> torch.Tensor:
    out = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    out[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return out.to(device)
