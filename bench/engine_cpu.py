"""SmolLM2-135M on CPU: tokenyard's engine against transformers' `generate`, same machine, same run.

    python bench/engine_cpu.py [--prompt-len 512] [--decode-tokens 64] [--batch 8] [--repeats 3] [--threads N]

Both sides load the same weights (the embedded default's converted HF directory) in fp32 with the
same torch thread count. Prefill tok/s = prompt tokens / time to the first token; decode tok/s =
(N − 1) / (time for N tokens − time for 1), with eos ignored on both sides; each the best of
--repeats runs after one warm-up run. Decode also shows the weight bytes streamed per second (every decode step reads
all weights once): how close a step is to the memory-bandwidth bound. Prints a table and writes
out/engine_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch


def best_time(fn, repeats: int) -> float:
    fn()   # warm-up: first calls of a shape pick kernels, allocate, fault pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def engine_runner(engine):
    from tokenyard.engine import SamplingParams

    def run(prompts: list[list[int]], n: int) -> None:
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        for i, p in enumerate(prompts):
            engine.add_request(f"b{i}", p, params)
        while engine.has_unfinished_requests():
            engine.step()

    return run


def hf_runner(model):
    def run(prompts: list[list[int]], n: int) -> None:
        ids = torch.tensor(prompts)   # equal lengths: no padding on either side
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)

    return run


def measure(run, prompt_len: int, decode_tokens: int, batch: int, repeats: int, vocab: int) -> dict:
    rng = random.Random(0)
    long_prompt = [[rng.randrange(vocab) for _ in range(prompt_len)]]
    short = [[rng.randrange(vocab) for _ in range(32)] for _ in range(batch)]
    prefill = best_time(lambda: run(long_prompt, 1), repeats)
    result = {"prefill_tok_s": prompt_len / prefill}
    for b in sorted({1, batch}):
        first = best_time(lambda: run(short[:b], 1), repeats)
        full = best_time(lambda: run(short[:b], decode_tokens), repeats)
        result[f"decode_b{b}_tok_s"] = b * (decode_tokens - 1) / (full - first)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: torch's)")
    parser.add_argument("--out", default="out/engine_cpu.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from tokenyard.engine import LLMEngine
    from tokenyard.engine.default_model import default_model_path

    path = default_model_path()
    # no prefix cache: repeated runs of the same prompt must recompute it, as transformers does
    engine = LLMEngine(path, dtype="float32", device="cpu", kv_cache_memory=256 << 20, enable_prefix_caching=False)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    vocab = engine.vocab_size
    sides = {
        "tokenyard": measure(engine_runner(engine), args.prompt_len, args.decode_tokens, args.batch, args.repeats, vocab),
        "transformers": measure(hf_runner(hf), args.prompt_len, args.decode_tokens, args.batch, args.repeats, vocab),
    }
    metrics = list(sides["tokenyard"])
    print(f"SmolLM2-135M fp32, CPU, {torch.get_num_threads()} threads, prompt {args.prompt_len}, "
          f"{args.decode_tokens} decode tokens, best of {args.repeats}")
    print(f"{'metric (tok/s)':<18}{'tokenyard':>12}{'transformers':>14}{'ratio':>8}")
    for m in metrics:
        ours, theirs = sides["tokenyard"][m], sides["transformers"][m]
        print(f"{m:<18}{ours:>12.1f}{theirs:>14.1f}{ours / theirs:>8.2f}")
    bandwidth = {side: sides[side]["decode_b1_tok_s"] * weight_bytes / 1e9 for side in sides}
    print(f"batch-1 decode streams weights at {bandwidth['tokenyard']:.1f} GB/s (tokenyard), "
          f"{bandwidth['transformers']:.1f} GB/s (transformers)")
    report = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to fp32)",
        "machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "loadavg_before": os.getloadavg()},
        "args": vars(args), "weight_bytes": weight_bytes, "results": sides, "decode_b1_weight_gb_s": bandwidth,
        "ratio": {m: sides["tokenyard"][m] / sides["transformers"][m] for m in metrics},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
