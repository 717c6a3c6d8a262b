"""The engine's flags: one definition (tokenyard.engine.cli) that `generate`, `chat`, `serve` and
`bench agentic` all take, turned into LLMEngine arguments; a flag left out keeps the engine's default."""

from __future__ import annotations

import inspect

from tokenyard.cli import build_parser
from tokenyard.engine import LLMEngine
from tokenyard.engine.cli import engine_args

COMMANDS = (["generate"], ["chat"], ["serve"], ["bench", "agentic"])


def test_every_engine_command_takes_the_same_flags_and_leaves_defaults_to_the_engine():
    for command in COMMANDS:
        assert engine_args(build_parser().parse_args(command)) == {}, command
        given = ["--no-enable-prefix-caching", "--checkpoint-interval", "64", "--no-cuda-graphs",
                 "--page-size", "8", "--kv-cache-memory", "4M", "--gpu-memory-utilization", "0.5"]
        assert engine_args(build_parser().parse_args(command + given)) == {
            "enable_prefix_caching": False, "checkpoint_interval": 64, "cuda_graphs": False, "page_size": 8,
            "kv_cache_memory": 4 << 20, "gpu_memory_utilization": 0.5}, command
    on = engine_args(build_parser().parse_args(["serve", "--enable-prefix-caching", "--cuda-graphs"]))
    assert on == {"enable_prefix_caching": True, "cuda_graphs": True}


def test_every_flag_names_an_engine_argument(tiny_llama):
    path, _ = tiny_llama
    every = ["--max-model-len", "256", "--kv-cache-memory", "4M", "--gpu-memory-utilization", "0.5",
             "--max-num-seqs", "4", "--max-num-batched-tokens", "64", "--page-size", "8", "--dtype", "float32",
             "--device", "cpu", "--no-enable-prefix-caching", "--checkpoint-interval", "64", "--no-cuda-graphs"]
    args = engine_args(build_parser().parse_args(["generate", *every]))
    assert len(args) == sum(f.startswith("--") for f in every) and set(args) <= set(inspect.signature(LLMEngine).parameters)
    eng = LLMEngine(str(path), **args)
    s = eng.scheduler
    assert (s.prefix_caching, s.checkpoint_interval, s.page_size, s.max_num_seqs, eng.max_model_len) == (False, 64, 8, 4, 256)
