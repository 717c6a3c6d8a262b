"""Loading the hybrid and DeepSeek models: a missing, unknown or misshapen checkpoint tensor is an
error that names it; tensors the text model does not use (multi-token prediction, vision) are
skipped; Qwen3.5's text-only and multimodal layouts load alike."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.engine.conftest import engine, run
from tests.engine.tiny_configs import BUILDERS, one_thread  # noqa: F401 (autouse fixture)
from tokenyard.engine import SamplingParams
from tokenyard.engine.models import model_class


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory):
    """(config, checkpoint tensors in file order) of the tiny DeepSeek-V2."""
    path = tmp_path_factory.mktemp("deepseek_v2")
    BUILDERS["deepseek_v2"](path)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        weights = [(k, f.get_tensor(k)) for k in f.keys()]
    return json.loads((path / "config.json").read_text()), weights


def load(config, weights):
    model = model_class(config)(config, torch.float32, torch.device("cpu"))
    model.load_weights(iter(weights))
    return model


def test_missing_expert_tensor_is_named(deepseek):
    config, weights = deepseek
    gone = "model.layers.2.mlp.experts.5.up_proj.weight"
    with pytest.raises(ValueError, match=rf"lacks 1 tensor.*{gone}"):
        load(config, [(k, w) for k, w in weights if k != gone])


def test_misshapen_tensor_is_named_with_both_shapes(deepseek):
    config, weights = deepseek
    name = "model.layers.1.self_attn.kv_b_proj.weight"
    bad = [(k, w[:, :-1] if k == name else w) for k, w in weights]
    with pytest.raises(ValueError, match=rf"{name}: is a tensor of shape \(128, 31\), expected \(128, 32\)"):
        load(config, bad)


def test_unknown_tensor_is_named(deepseek):
    config, weights = deepseek
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_norm\.weight: unknown"):
        load(config, weights + [("model.layers.0.self_attn.q_norm.weight", torch.ones(24))])


def test_multi_token_prediction_layers_are_skipped(deepseek):
    config, weights = deepseek
    extra = [(k.replace("model.layers.2.", "model.layers.3."), w) for k, w in weights if k.startswith("model.layers.2.")]
    model = load(config, weights + extra + [("mtp.norm.weight", torch.ones(64))])
    assert len(model.layers) == config["num_hidden_layers"]


def test_qwen3_5_text_only_checkpoint_runs_like_the_multimodal_one(tmp_path):
    """Qwen3_5ForCausalLM's layout (`model.` prefix, flat config) and the multimodal
    Qwen3_5ForConditionalGeneration one (`model.language_model.`, `text_config`, a vision tower)."""
    multimodal = tmp_path / "multimodal"
    multimodal.mkdir()
    BUILDERS["qwen3_5"](multimodal)
    text = tmp_path / "text"
    shutil.copytree(multimodal, text, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    config = json.loads((multimodal / "config.json").read_text())
    (text / "config.json").write_text(json.dumps(config["text_config"] | {"architectures": ["Qwen3_5ForCausalLM"]}))
    with safe_open(str(multimodal / "model.safetensors"), "pt") as f:
        weights = {k.replace("model.language_model.", "model."): f.get_tensor(k) for k in f.keys() if "visual" not in k}
    save_file(weights, str(text / "model.safetensors"))
    prompt = list(range(3, 40, 2))
    params = SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, prompt_logprobs=0)
    a, b = (run(engine(p), [prompt], params)["r0"] for p in (multimodal, text))
    assert a.token_ids == b.token_ids and a.prompt_logprobs == b.prompt_logprobs
