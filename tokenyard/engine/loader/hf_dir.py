"""Hugging Face model directories: config.json, safetensors (single or sharded), tokenizer.

Owns reading such a directory; a missing or unreadable file gets an error naming it. Weights are
yielded lazily, one tensor at a time, under their names in the checkpoint, as stored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from tokenizers import Tokenizer as HFTokenizer

from tokenyard.engine.loader.progress import progress
from tokenyard.engine.loader.tokenizer import Tokenizer


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from None


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class HFDirCheckpoint:
    def __init__(self, path: str | Path, weights_needed: bool = True):
        self.path = Path(path)
        self.config = _read_json(self.path / "config.json")
        self.weight_files = self._weight_files() if weights_needed else []

    def _weight_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            files = sorted(set(_read_json(index)["weight_map"].values()))
            missing = [f for f in files if not (self.path / f).exists()]
            if missing:
                raise FileNotFoundError(f"{str(index)!r} names shards that do not exist: {missing}")
            return [self.path / f for f in files]
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{str(self.path)!r} has no model.safetensors, sharded index or *.safetensors; "
                "tokenyard reads safetensors checkpoints (and GGUF files)"
            )
        return files

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        total = sum(f.stat().st_size for f in self.weight_files)
        with progress(total, f"loading {self.path.name}") as bar:
            for file in self.weight_files:
                with safe_open(str(file), framework="pt") as f:
                    for name in f.keys():
                        tensor = f.get_tensor(name)
                        bar.update(tensor.numel() * tensor.element_size())
                        yield name, tensor

    def tokenizer(self) -> Tokenizer:
        tokenizer_file = self.path / "tokenizer.json"
        if not tokenizer_file.exists():
            raise FileNotFoundError(f"{str(tokenizer_file)!r} does not exist; tokenyard needs a fast (tokenizers) tokenizer")
        config_file = self.path / "tokenizer_config.json"
        tok_config = _read_json(config_file) if config_file.exists() else {}
        template = tok_config.get("chat_template")
        if isinstance(template, list):   # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        jinja_file = self.path / "chat_template.jinja"
        if template is None and jinja_file.exists():
            template = jinja_file.read_text()
        return Tokenizer(HFTokenizer.from_file(str(tokenizer_file)), chat_template=template,
                         bos_token=_token_text(tok_config.get("bos_token")),
                         eos_token=_token_text(tok_config.get("eos_token")))

    def generation_config(self) -> dict:
        file = self.path / "generation_config.json"
        return _read_json(file) if file.exists() else {}
