"""The load progress bar: bytes read, shown only once a load has taken more than two seconds."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress(total_bytes: int, description: str) -> tqdm:
    return tqdm(total=total_bytes, desc=description, unit="B", unit_scale=True, delay=2.0, leave=False)
