"""Random weights for a model directory's config (`load_format="dummy"`, as vLLM's
`--load-format dummy`): real model shapes for benchmarks, without the weights.

Owns naming and initialising those tensors. Names and shapes come from transformers' own model
class for the config, built on the meta device, so every tensor a real checkpoint of that config
holds is produced under the name it has there (and the model's loader checks them exactly as it
checks a checkpoint's); values are transformers' own initialisation (its `init_weights`), drawn
on the engine's device in the engine's dtype, one model's worth at a time.
"""

from __future__ import annotations

from typing import Iterator

import torch


def dummy_weights(config: dict, dtype: torch.dtype, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise ValueError("load_format='dummy': config.json has no model_type, so its model class is unknown")
    hf_config = AutoConfig.for_model(model_type, **fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    model.to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        model.init_weights()
    state = model.state_dict()
    del model
    for name in list(state):
        yield name, state.pop(name)
