"""The engine on the GPU with real model shapes and random weights (`load_format="dummy"`): prefill
throughput, batch-1 decode against the weight-streaming roofline, batched decode, and an agentic
conversation (a long first turn, then short turns served from the prefix cache), beside
transformers' generate() on the same config in the same run.

    python bench/gpu/engine_gpu.py --out DIR [--model qwen3.5-9b|qwen3-8b] [--no-peer] [--profile]

Models (config only; weights are transformers' initialisation, drawn on the GPU):
  qwen3.5-9b  transformers' default Qwen3_5TextConfig: hidden 4096, 32 layers (24 Gated DeltaNet,
              16 k / 32 v heads × 128; 8 gated attention, 16 q / 4 kv × 256, partial RoPE), dense MLP
  qwen3-8b    Qwen3-8B: hidden 4096, 36 layers, 32 q / 8 kv × 128 with q/k norm, MLP 12288
Prompts are random token ids; every request runs to max_tokens (ignore_eos). The roofline of a
batch-1 decode step is the model's weight bytes over the device's copy bandwidth measured here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_ops import ceilings  # noqa: E402
from tests.engine.conftest import write_byte_tokenizer  # noqa: E402
from tokenyard.engine import LLMEngine, SamplingParams  # noqa: E402


def model_config(name: str) -> dict:
    if name == "qwen3.5-9b":
        from transformers.models.qwen3_5 import Qwen3_5TextConfig

        config = Qwen3_5TextConfig().to_dict()
        config["architectures"] = ["Qwen3_5ForCausalLM"]
        return config
    if name == "qwen3-8b":
        from transformers import Qwen3Config

        config = Qwen3Config(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                             num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                             rope_theta=1e6, tie_word_embeddings=False).to_dict()
        config["architectures"] = ["Qwen3ForCausalLM"]
        return config
    raise SystemExit(f"--model {name!r}: expected qwen3.5-9b or qwen3-8b")


def model_dir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="tokenyard-bench-"))
    (path / "config.json").write_text(json.dumps(model_config(name)))
    write_byte_tokenizer(path)   # ids beyond its 260 tokens decode to nothing: ids are what is timed
    return path


def streamed_weight_bytes(path: Path) -> int:
    """bf16 bytes a decode step reads: every weight but the embedding table (a few rows of it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = json.loads((path / "config.json").read_text())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields))
    return sum(2 * t.numel() for name, t in model.state_dict().items() if "embed_tokens" not in name)


def chosen_kernels() -> dict:
    """op -> {kernel: how chosen} over every call site the run selected a kernel for; where the
    reference kernel won a timed choice, why each other kernel lost (its time or its check)."""
    from tokenyard.registry import get_registry

    chosen: dict = {}
    for sel in get_registry().selections():
        chosen.setdefault(sel.op, {})[sel.chosen.key] = sel.how
        if sel.how == "fastest" and sel.chosen.backend == "reference":
            losers = {c.record.key: c.check_failure or (f"{c.time_ms:.3f} ms" if c.time_ms is not None else c.reason)
                      for c in sel.candidates if c.record is not sel.chosen}
            ref = next(c.time_ms for c in sel.candidates if c.record is sel.chosen)
            chosen[sel.op][f"at {sel.key}"] = f"reference {ref:.3f} ms; " + "; ".join(f"{k}: {v}" for k, v in losers.items())
    return chosen


def random_prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(256) for _ in range(n)]


def run_requests(engine: LLMEngine, prompts: list[list[int]], max_tokens: int) -> dict:
    """Run to completion; per request the time of its first token and of its last."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    first, last, cached = {}, {}, {}
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter() - t0
        for o in outs:
            if o.token_ids and o.request_id not in first:
                first[o.request_id] = now
                cached[o.request_id] = o.cached_tokens
            if o.finished:
                last[o.request_id] = now
    return dict(first=first, last=last, cached=cached, wall=time.perf_counter() - t0)


def engine_numbers(path: Path, rng: random.Random, turns: int, first_turn: int, profile: bool = False) -> dict:
    engine = LLMEngine(str(path), load_format="dummy", dtype="bfloat16", device="cuda", max_num_seqs=64,
                       max_model_len=max(8192, first_turn + turns * 1000) + 1024)
    # Warm-up with the measured shapes: the first call of an op at a new shape bucket compiles its
    # Triton kernel and, under the default `fastest` policy, times every eligible kernel once.
    run_requests(engine, [random_prompt(rng, 8192)], 1)
    run_requests(engine, [random_prompt(rng, 512)], 4)
    for batch in (8, 32):
        run_requests(engine, [random_prompt(rng, 512) for _ in range(batch)], 4)
    warm = random_prompt(rng, first_turn)
    for _ in range(3):
        run_requests(engine, [warm], 4)
        warm = warm + random_prompt(rng, 864)
    out = {"weight_bytes": streamed_weight_bytes(path), "kernels": chosen_kernels()}
    r = run_requests(engine, [random_prompt(rng, 8192)], 1)
    out["prefill_8k_s"] = r["first"]["r0"]
    r = run_requests(engine, [random_prompt(rng, 512)], 257)
    out["decode_b1_tok_s"] = 256 / (r["last"]["r0"] - r["first"]["r0"])
    for batch in (8, 32):
        r = run_requests(engine, [random_prompt(rng, 512) for _ in range(batch)], 129)
        span = max(r["last"].values()) - max(r["first"].values())
        out[f"decode_b{batch}_tok_s"] = batch * 128 / span
    history, ttfts, cached = random_prompt(rng, first_turn), [], []
    for turn in range(turns):
        r = run_requests(engine, [history], 65)
        ttfts.append(r["first"]["r0"])
        cached.append(r["cached"]["r0"])
        if turn == 0:
            out["agentic_decode_tok_s"] = 64 / (r["last"]["r0"] - r["first"]["r0"])
        history = history + random_prompt(rng, 64) + random_prompt(rng, 800)   # its answer, then the next message
    out["agentic_ttft_s"] = ttfts
    out["agentic_cached_tokens"] = cached
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run_requests(engine, [history], 2)    # one more turn: its prefill and one decode step
        print("profile of one agentic turn (prefill of ~864 new tokens + 1 decode step):")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    return out


def transformers_numbers(name: str, rng: random.Random) -> dict:
    """transformers' generate() on the same config (its fast paths: FLA for Gated DeltaNet when
    installed, SDPA attention), random weights, batch 1."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = model_config(name)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)   # the same config.json as the engine's
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()

    def generate(n_prompt: int, n_new: int) -> float:
        ids = torch.tensor([random_prompt(rng, n_prompt)], device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    generate(700, 8)
    out = {"prefill_8k_s": generate(8192, 1)}
    t1, t257 = generate(512, 1), generate(512, 257)
    out["decode_b1_tok_s"] = 256 / (t257 - t1)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "out"))
    ap.add_argument("--model", default="qwen3.5-9b")
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--first-turn", type=int, default=16384)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one agentic turn")
    args = ap.parse_args()
    rng = random.Random(0)
    path = model_dir(args.model)
    ceiling = ceilings()["copy_TBps"]
    ours = engine_numbers(path, rng, args.turns, args.first_turn, args.profile)
    print(json.dumps(ours), flush=True)
    peer = None if args.no_peer else transformers_numbers(args.model, rng)
    result = dict(model=args.model, device=torch.cuda.get_device_name(), copy_tb_s=ceiling, tokenyard=ours,
                  transformers=peer, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"engine_gpu_{args.model}.json").write_text(json.dumps(result, indent=1))
    for op, kernels in sorted(ours["kernels"].items()):
        print(f"  {op:22s} " + ", ".join(f"{k} ({how})" for k, how in kernels.items()))

    print(f"{args.model} on {result['device']}, copy {ceiling:.2f} TB/s, {result['date']}")
    roof = ours["weight_bytes"] / (ceiling * 1e12) if ours["weight_bytes"] else None
    rows = [("prefill 8K tokens", f"{ours['prefill_8k_s'] * 1e3:.0f} ms", f"{8192 / ours['prefill_8k_s']:.0f} tok/s",
             peer and f"{peer['prefill_8k_s'] * 1e3:.0f} ms", peer and f"{peer['prefill_8k_s'] / ours['prefill_8k_s']:.2f}"),
            ("decode batch 1", f"{ours['decode_b1_tok_s']:.1f} tok/s",
             roof and f"{ours['decode_b1_tok_s'] * roof:.0%} of weight roofline ({1 / roof:.0f} tok/s)",
             peer and f"{peer['decode_b1_tok_s']:.1f} tok/s", peer and f"{ours['decode_b1_tok_s'] / peer['decode_b1_tok_s']:.2f}")]
    for b in (8, 32):
        rows.append((f"decode batch {b}", f"{ours[f'decode_b{b}_tok_s']:.0f} tok/s",
                     f"{ours[f'decode_b{b}_tok_s'] / b:.1f} tok/s per user", None, None))
    for i, (t, c) in enumerate(zip(ours["agentic_ttft_s"], ours["agentic_cached_tokens"])):
        rows.append((f"agentic turn {i + 1} TTFT", f"{t * 1e3:.0f} ms", f"{c} tokens from cache", None, None))
    rows.append(("agentic decode", f"{ours['agentic_decode_tok_s']:.1f} tok/s", "at 16K context", None, None))
    print("| measure | tokenyard | | transformers | ratio |\n|---|---:|---|---:|---:|")
    for r in rows:
        print("| " + " | ".join("" if x is None else str(x) for x in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
