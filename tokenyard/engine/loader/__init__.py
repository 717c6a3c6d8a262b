"""Loaders: a model path (HF directory or GGUF file) -> config, weights, tokenizer, eos ids.

Owns choosing the format and the one record every format produces. No network access: a model is
a local path (the packaged default is resolved by tokenyard.engine.default_model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from tokenyard.engine.loader.dummy import dummy_weights
from tokenyard.engine.loader.gguf_file import GGUFCheckpoint
from tokenyard.engine.loader.hf_dir import HFDirCheckpoint
from tokenyard.engine.loader.tokenizer import Tokenizer


@dataclass
class Checkpoint:
    path: Path
    config: dict                                               # config.json's keys
    weights: Callable[[], Iterator[tuple[str, torch.Tensor]]]  # (hf_name, tensor), lazily
    tokenizer: Tokenizer
    eos_token_ids: list[int]                                   # ids that end generation unless ignore_eos


def _ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


LOAD_FORMATS = ("auto", "dummy")


def load_checkpoint(path: str | Path, load_format: str = "auto", dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> Checkpoint:
    """"auto": the weights of the GGUF file or HF directory; "dummy": the directory's config and
    tokenizer with random weights, drawn in `dtype` on `device` when the model loads them."""
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format={load_format!r}: expected one of {LOAD_FORMATS}")
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf" and load_format == "auto":
        source = GGUFCheckpoint(path)
        generation = {}
    elif path.is_dir():
        source = HFDirCheckpoint(path, weights_needed=load_format == "auto")
        generation = source.generation_config()
    else:
        raise FileNotFoundError(f"model={str(path)!r}: expected a Hugging Face model directory"
                                + (" (with config.json)" if load_format == "dummy" else " or a .gguf file"))
    weights = source.weights
    if load_format == "dummy":
        config = source.config
        weights = lambda: dummy_weights(config, dtype, torch.device(device))  # noqa: E731
    tokenizer = source.tokenizer()
    eos = _ids(generation.get("eos_token_id")) or _ids(source.config.get("eos_token_id"))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    return Checkpoint(path, source.config, weights, tokenizer, eos)


__all__ = ["LOAD_FORMATS", "Checkpoint", "Tokenizer", "load_checkpoint"]
