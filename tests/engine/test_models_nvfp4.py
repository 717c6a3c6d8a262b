"""NVFP4 checkpoints (ModelOpt and compressed-tensors) of tiny Qwen3-Next and DeepSeek-V3 models:
loaded into NVFP4Weight, they give the logits of transformers running the dequantized weights.

The checkpoints are written here the way the two exporters write them: every projection of the
decoder layers quantized (attention, GDN, MLA's kv_b included, dense MLPs, shared and routed
experts; routers, embeddings and lm_head left dense), each expert's gate and up quantized
together (one global scale, as ModelOpt exports layers that run fused), activation scales present
(tokenyard ignores them), and a module's parts spread over two shards. The reference dequantizes
the stored bytes with its own E2M1 table, following each format's convention for the global
scale (ModelOpt: multiplier; compressed-tensors: divisor).
"""

from __future__ import annotations

import copy
import json
import random
import re
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tests.engine.conftest import engine, hf_prompt_logprobs, run
from tests.engine.tiny_configs import BUILDERS, one_thread  # noqa: F401 (autouse fixture)
from tokenyard.engine import SamplingParams
from tokenyard.engine.loader.nvfp4 import assemble, cat_rows
from tokenyard.kernel_api import NVFP4Weight, nvfp4_quantize

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
QUANTIZED = re.compile(r"model\.layers\.\d+\..*_proj\.weight")
EXPERT_GATE = re.compile(r"(.*\.experts\.\d+\.)gate_proj\.weight")


def e2m1_values(packed: torch.Tensor) -> torch.Tensor:
    codes = torch.stack((packed & 0xF, packed >> 4), dim=-1).flatten(-2).long()  # even column = low nibble
    return torch.where(codes >= 8, -E2M1[codes & 7], E2M1[codes & 7])


def dequantize(packed: torch.Tensor, scales: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    blocks = e2m1_values(packed).unflatten(-1, (-1, 16)) * scales.float()[..., None]
    return blocks.flatten(-2) * multiplier


def quantize_checkpoint(plain: dict[str, torch.Tensor]) -> dict[str, NVFP4Weight]:
    """The decoder layers' projections quantized; each expert's gate and up with one global scale."""
    quantized = {}
    for name, w in plain.items():
        if not QUANTIZED.fullmatch(name) or name in quantized:
            continue
        gate = EXPERT_GATE.fullmatch(name)
        if gate:
            up = gate.group(1) + "up_proj.weight"
            q = nvfp4_quantize(torch.cat((w, plain[up])))
            n = w.shape[0]
            quantized[name] = NVFP4Weight(q.packed[:n], q.scales[:n], q.global_scale)
            quantized[up] = NVFP4Weight(q.packed[n:], q.scales[n:], q.global_scale)
        else:
            quantized[name] = nvfp4_quantize(w)
    return quantized


def write(fmt: str, src, dst, plain: dict[str, torch.Tensor], quantized: dict[str, NVFP4Weight]) -> dict[str, torch.Tensor]:
    """Write the `fmt` checkpoint to dst; return the dense weights it stands for (the reference's)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors*"), dirs_exist_ok=True)
    shards: tuple[dict, dict] = ({}, {})
    reference = {}
    for name, w in plain.items():
        q = quantized.get(name)
        if q is None:
            shards[0][name] = w
            reference[name] = w
            continue
        module = name.removesuffix(".weight")
        if fmt == "modelopt":
            shards[0].update({f"{module}.weight": q.packed, f"{module}.weight_scale": q.scales})
            shards[1].update({f"{module}.weight_scale_2": q.global_scale.reshape(()), f"{module}.input_scale": torch.tensor(0.01)})
            reference[name] = dequantize(q.packed, q.scales, q.global_scale)
        else:
            divisor = (1.0 / q.global_scale).reshape(1)
            shards[0].update({f"{module}.weight_scale": q.scales, f"{module}.weight_global_scale": divisor})
            shards[1].update({f"{module}.weight_packed": q.packed, f"{module}.input_global_scale": torch.tensor([100.0])})
            reference[name] = dequantize(q.packed, q.scales, 1.0) / divisor
    files = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    for shard, file in zip(shards, files):
        save_file({k: v.contiguous().clone() for k, v in shard.items()}, str(dst / file))
    weight_map = {k: f for shard, f in zip(shards, files) for k in shard}
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = (
        {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["lm_head"]}
        if fmt == "modelopt" else
        {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized", "ignore": ["lm_head"]})
    (dst / "config.json").write_text(json.dumps(config))
    return reference


@pytest.fixture(scope="module", params=["qwen3_next", "deepseek_v3"])
def checkpoints(request, tmp_path_factory):
    """{format: (checkpoint dir, transformers float64 model on the dequantized weights)}."""
    src = tmp_path_factory.mktemp(request.param)
    hf = BUILDERS[request.param](src)
    with safe_open(str(src / "model.safetensors"), "pt") as f:
        plain = {k: f.get_tensor(k) for k in f.keys()}
    quantized = quantize_checkpoint(plain)
    out = {}
    for fmt in ("modelopt", "compressed-tensors"):
        dst = tmp_path_factory.mktemp(f"{request.param}-{fmt}")
        reference = write(fmt, src, dst, plain, quantized)
        exact = copy.deepcopy(hf)
        exact.load_state_dict(_hf_state(exact, reference))
        exact = exact.double()
        exact.set_experts_implementation("eager")
        out[fmt] = (dst, exact)
    return out


def _hf_state(model, checkpoint: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' in-memory state from per-expert checkpoint tensors (experts fused as [E, 2I, H] / [E, H, I])."""
    state = dict(checkpoint)
    for key in model.state_dict():
        m = re.fullmatch(r"(.*\.experts)\.(gate_up_proj|down_proj)", key)
        if not m:
            continue
        experts = sorted({int(k.split(".")[-3]) for k in checkpoint if k.startswith(m.group(1) + ".")})
        if m.group(2) == "down_proj":
            state[key] = torch.stack([state.pop(f"{m.group(1)}.{e}.down_proj.weight") for e in experts])
        else:
            state[key] = torch.stack([torch.cat((state.pop(f"{m.group(1)}.{e}.gate_proj.weight"),
                                                 state.pop(f"{m.group(1)}.{e}.up_proj.weight"))) for e in experts])
    state |= {k: v for k, v in model.state_dict().items() if k not in state}  # buffers transformers keeps unsaved
    return state


@pytest.mark.parametrize("fmt", ["modelopt", "compressed-tensors"])
def test_nvfp4_checkpoint_matches_transformers_on_dequantized_weights(checkpoints, fmt):
    path, exact = checkpoints[fmt]
    rng = random.Random(8)
    prompt = [rng.randrange(256) for _ in range(30)]
    eng = engine(path)
    assert isinstance(eng.model.layers[-1].mlp.experts.w13, NVFP4Weight)
    out = run(eng, [prompt], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, prompt_logprobs=0))["r0"]
    ours = torch.tensor([entry[t] for entry, t in zip(out.prompt_logprobs[1:], prompt[1:])])
    torch.testing.assert_close(ours, hf_prompt_logprobs(exact, prompt), atol=1e-4, rtol=0)
    with torch.no_grad():
        logits = exact(torch.tensor([prompt + out.token_ids])).logits[0]
    assert out.token_ids == logits[len(prompt) - 1: -1].argmax(dim=-1).tolist()


def test_joining_nvfp4_matrices_with_different_global_scales_rescales_the_smaller():
    a, b = torch.randn(32, 64), 10 * torch.randn(16, 64)
    qa, qb = nvfp4_quantize(a), nvfp4_quantize(b)
    with pytest.warns(UserWarning, match="different global scales"):
        joined = cat_rows([qa, qb])
    assert torch.equal(joined.global_scale, qb.global_scale)
    w = dequantize(joined.packed, joined.scales, joined.global_scale)
    assert torch.equal(w[32:], dequantize(qb.packed, qb.scales, qb.global_scale))
    before = dequantize(qa.packed, qa.scales, qa.global_scale)
    # each block scale moves by at most one e4m3 rounding step (relative 2^-4)
    assert ((w[:32] - before).abs() <= before.abs() * 2 ** -4 + 1e-12).all()


def test_incomplete_nvfp4_module_is_named():
    q = nvfp4_quantize(torch.randn(16, 32))
    parts = [("model.layers.0.mlp.down_proj.weight", q.packed), ("model.layers.0.mlp.down_proj.weight_scale", q.scales)]
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.down_proj: has \['weight', 'weight_scale'\]"):
        list(assemble(parts))


def test_fp8_checkpoint_is_refused_by_name():
    w = torch.randn(16, 32).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.down_proj\.weight: is FP8-quantized"):
        list(assemble([("model.layers.0.mlp.down_proj.weight", w)]))
