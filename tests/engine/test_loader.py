"""Loading checkpoints: sharded safetensors, chat templates with tools, and errors that name what
is wrong (missing file, unknown architecture, shape mismatch, unknown tensor)."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from tests.engine.conftest import engine, hf_greedy, make_tiny, run
from tests.engine.test_dense_vs_transformers import GREEDY, prompts
from tokenyard.engine.loader import load_checkpoint

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris? é ✓"}]


def test_sharded_checkpoint_loads_like_transformers(tmp_path):
    hf = make_tiny("llama", tmp_path / "src")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "src" / f, tmp_path / "sharded" / f)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    prompt = prompts(1, seed=21)[0]
    assert run(engine(tmp_path / "sharded"), [prompt], GREEDY)["r0"].token_ids == hf_greedy(hf, prompt, 32)


def test_chat_template_with_tools_matches_transformers(tiny_llama):
    from transformers import AutoTokenizer

    path, _ = tiny_llama
    ours = load_checkpoint(path).tokenizer
    theirs = AutoTokenizer.from_pretrained(str(path))
    expected = theirs.apply_chat_template(MESSAGES, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert ours.render_chat(MESSAGES, TOOLS) == expected
    assert ours.apply_chat_template(MESSAGES, TOOLS) == theirs.encode(expected, add_special_tokens=False)
    assert ours.decode(ours.encode("Weather in Paris? é ✓")) == "Weather in Paris? é ✓"


def _copy(tiny_llama, tmp_path):
    path, _ = tiny_llama
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def test_missing_config_is_named(tiny_llama, tmp_path):
    dst = _copy(tiny_llama, tmp_path)
    (dst / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        engine(dst)


def test_missing_weights_are_named(tiny_llama, tmp_path):
    dst = _copy(tiny_llama, tmp_path)
    (dst / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        engine(dst)


def test_missing_model_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        engine(tmp_path / "nowhere")


def test_unknown_architecture_is_named(tiny_llama, tmp_path):
    dst = _copy(tiny_llama, tmp_path)
    config = json.loads((dst / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="FancyNewForCausalLM"):
        engine(dst)


@pytest.mark.parametrize("edit, match", [
    (lambda w: w.update({"model.layers.0.mlp.up_proj.weight": w["model.layers.0.mlp.up_proj.weight"][:-1]}),
     r"model.layers.0.mlp.up_proj.weight.*shape"),
    (lambda w: w.update({"model.layers.9.mlp.up_proj.weight": w["model.layers.0.mlp.up_proj.weight"].clone()}),
     "model.layers.9.mlp.up_proj.weight"),
    (lambda w: w.pop("model.layers.1.self_attn.k_proj.weight"), "missing"),
])
def test_bad_tensors_are_named(tiny_llama, tmp_path, edit, match):
    dst = _copy(tiny_llama, tmp_path)
    weights = load_file(str(dst / "model.safetensors"))
    edit(weights)
    save_file(weights, str(dst / "model.safetensors"))
    with pytest.raises(ValueError, match=match):
        engine(dst)
