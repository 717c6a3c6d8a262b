"""Input validation shared by every op of the contract.

Owns the error messages: each names the op, the argument, the value found and what was expected.
Shapes are written as comma-separated symbols ("T,Hq,D"); a symbol binds on first sight and every
later use must agree, so "k_cache's D is 64, expected 128 (as in q)" comes out by itself.
Index *values* (slots, pages, lengths) are checked when they live on the CPU, or everywhere when
``TOKENYARD_VALIDATE_INDICES=1``: reading a GPU tensor on the host would stall the stream on every
decode step and cannot happen inside CUDA-graph capture.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterable, Optional

import torch

FLOAT_TYPES = (torch.float32, torch.bfloat16, torch.float16)
ACTIVATION_TYPES = (torch.float32, torch.bfloat16, torch.float16)
INDEX_TYPES = (torch.int32, torch.int64)


def _dtype_name(dtypes: Iterable[torch.dtype]) -> str:
    return " or ".join(str(d).removeprefix("torch.") for d in dtypes)


@functools.lru_cache(maxsize=1024)
def _parse_shape(shape: str) -> tuple[tuple[str, Optional[int]], ...]:
    """"T,Hq,D" -> (("T", None), ("Hq", None), ("D", None)); a digit symbol carries its fixed size."""
    dims = [d.strip() for d in shape.split(",")] if shape else []
    return tuple((d, int(d) if d.isdigit() else None) for d in dims)


# Index tensors up to this many elements are read on the host as a list: a decode step's (a few
# rows) costs less that way than through tensor reductions.
SMALL = 256


def _min_max(t: torch.Tensor) -> tuple[int, int]:
    if t.numel() <= SMALL:
        values = t.reshape(-1).tolist()
        return min(values), max(values)
    lo, hi = torch.aminmax(t)
    return int(lo), int(hi)


class Validator:
    """Checks the arguments of one call of one op; raises ValueError on the first violation."""

    def __init__(self, op: str):
        self.op = op
        self.sizes: dict[str, tuple[int, str]] = {}
        self.device: Optional[torch.device] = None
        self.device_from: Optional[str] = None

    def fail(self, name: str, message: str) -> None:
        raise ValueError(f"{self.op}: argument '{name}' {message}")

    def tensor(
        self,
        name: str,
        value: Any,
        shape: str,
        dtypes: Optional[Iterable[torch.dtype]] = None,
        *,
        like: Optional[str] = None,
        like_value: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``value`` must be a tensor of the symbolic ``shape``, one of ``dtypes`` (or ``like``'s dtype)."""
        if not isinstance(value, torch.Tensor):
            self.fail(name, f"is {type(value).__name__}, expected a torch.Tensor of shape [{shape}]")
        dims = _parse_shape(shape)
        sizes = value.shape
        if len(sizes) != len(dims):
            self.fail(name, f"has shape {tuple(sizes)} ({value.dim()} dims), expected [{shape}]")
        if like_value is not None and value.dtype != like_value.dtype:
            self.fail(name, f"has dtype {value.dtype}, expected {like_value.dtype} (the dtype of '{like}')")
        if dtypes is not None:
            dtypes = dtypes if isinstance(dtypes, tuple) else tuple(dtypes)
            if value.dtype not in dtypes:
                self.fail(name, f"has dtype {value.dtype}, expected {_dtype_name(dtypes)}")
        device = value.device
        if self.device is None:
            self.device, self.device_from = device, name
        elif device != self.device:
            self._device(name, device)
        bound = self.sizes
        for i, (sym, fixed) in enumerate(dims):
            size = sizes[i]
            # the success path is one comparison per dim; dim() words the failure
            if fixed is not None:
                if size != fixed:
                    self.dim(name, value, i, sym, size)
            elif sym in bound:
                if size != bound[sym][0]:
                    self.dim(name, value, i, sym, size)
            else:
                bound[sym] = (size, name)
        return value

    def dim(self, name: str, value: torch.Tensor, i: int, sym: str, size: int) -> None:
        if sym.isdigit():
            if size != int(sym):
                self.fail(name, f"has shape {tuple(value.shape)}: dim {i} is {size}, expected {sym}")
            return
        if sym in self.sizes:
            expected, source = self.sizes[sym]
            if size != expected:
                self.fail(name, f"has shape {tuple(value.shape)}: dim {i} ({sym}) is {size}, expected {expected} (as in '{source}')")
        else:
            self.sizes[sym] = (size, name)

    def bind(self, sym: str, size: int, source: str) -> None:
        self.sizes[sym] = (int(size), source)

    def size(self, sym: str) -> int:
        return self.sizes[sym][0]

    def _device(self, name: str, device: torch.device) -> None:
        if self.device is None:
            self.device, self.device_from = device, name
        elif device != self.device:
            self.fail(name, f"is on {device}, expected {self.device} (the device of '{self.device_from}')")

    def number(self, name: str, value: Any, *, low: Optional[float] = None, high: Optional[float] = None,
               low_open: bool = False, integer: bool = False) -> Any:
        ok_type = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_type):
            self.fail(name, f"is {value!r}, expected {'an int' if integer else 'a number'}")
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(name, f"is {value!r}, expected {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            self.fail(name, f"is {value!r}, expected <= {high}")
        return value

    def choice(self, name: str, value: Any, choices: tuple) -> Any:
        if value not in choices:
            self.fail(name, f"is {value!r}, expected one of {choices}")
        return value

    def flag(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(name, f"is {value!r}, expected True or False")
        return value

    # -- index values --------------------------------------------------------------------
    @staticmethod
    def values_checkable(t: torch.Tensor) -> bool:
        if t.is_cpu:
            return True
        if os.environ.get("TOKENYARD_VALIDATE_INDICES") == "1":
            return not (t.device.type == "cuda" and torch.cuda.is_current_stream_capturing())
        return False

    def index_range(self, name: str, t: torch.Tensor, low: int, high: int, what: str) -> None:
        """Every element in [low, high)."""
        if t.numel() == 0 or not self.values_checkable(t):
            return
        lo, hi = _min_max(t)
        if lo < low or hi >= high:
            bad = lo if lo < low else hi
            self.fail(name, f"holds {bad}, expected {what} in [{low}, {high})")

    def pages_in_use(self, name: str, page_table: torch.Tensor, seqlens_k: torch.Tensor, page_size: int,
                     num_pages: int) -> None:
        """Every page a sequence uses (the first ceil(seqlens_k[b] / page_size) of its row) in [0, num_pages);
        the padding past them is never read and may hold anything."""
        if page_table.numel() == 0 or not (self.values_checkable(page_table) and self.values_checkable(seqlens_k)):
            return
        if page_table.numel() <= SMALL:
            rows, lengths = page_table.tolist(), seqlens_k.tolist()
            used = [p for row, n in zip(rows, lengths) for p in row[:(n + page_size - 1) // page_size]]
            if used and (min(used) < 0 or max(used) >= num_pages):
                bad = min(used) if min(used) < 0 else max(used)
                self.fail(name, f"holds {bad}, expected page ids of pages in use in [0, {num_pages})")
            return
        pages_used = (seqlens_k.long() + page_size - 1) // page_size
        mask = torch.arange(page_table.shape[1], device=page_table.device)[None, :] < pages_used[:, None]
        self.index_range(name, page_table[mask], 0, num_pages, "page ids of pages in use")

    def cu_seqlens(self, name: str, t: torch.Tensor, total: int, total_name: str) -> None:
        if not self.values_checkable(t):
            return
        if int(t[0]) != 0:
            self.fail(name, f"starts at {int(t[0])}, expected 0")
        if int(t[-1]) != total:
            self.fail(name, f"ends at {int(t[-1])}, expected {total} (the length of '{total_name}')")
        if t.numel() > 1 and bool((t[1:] < t[:-1]).any()):
            self.fail(name, f"is {t.tolist()[:16]}..., expected a non-decreasing sequence")

    def distinct_slots(self, name: str, t: torch.Tensor) -> None:
        if not self.values_checkable(t):
            return
        used = t[t >= 0]
        if used.numel() != torch.unique(used).numel():
            self.fail(name, f"is {t.tolist()[:16]}, expected distinct slots (or -1): two sequences would write one slot")
