"""`tokenyard generate` and `tokenyard chat`: the engine from the terminal, streaming tokens; and
the engine's flags, which every command that builds an engine adds (`serve` and `bench agentic`
too, from tokenyard.engine.server.cli).

Owns these two commands' flags and their terminal loops, and `add_engine_flags` / `engine_args`.
With no --model, the embedded default (SmolLM2-135M-Instruct) is used. Prompts go through the
model's chat template unless --raw.
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys

from tokenyard.engine.loader import LOAD_FORMATS

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from '1073741824', '512M', '4GiB', '1.5G' (K/M/G/T are powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 2G, 512M or 1073741824")
    unit = (match.group(2) or "B")[0].upper()
    return int(float(match.group(1)) * 1024 ** "BKMGT".index(unit))


_ENGINE_FLAGS = ("max_model_len", "kv_cache_memory", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
                 "page_size", "dtype", "device", "enable_prefix_caching", "checkpoint_interval", "cuda_graphs",
                 "load_format")


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """The LLMEngine arguments as flags; a flag left out keeps the engine's default."""
    group = parser.add_argument_group("engine")
    group.add_argument("--max-model-len", type=int, help="longest prompt + output (default: what the model and cache allow)")
    group.add_argument("--kv-cache-memory", type=parse_size,
                       help="bytes for the KV page pool and state slots, e.g. 2G (default: CPU 1G, GPU from --gpu-memory-utilization)")
    group.add_argument("--gpu-memory-utilization", type=float, help="fraction of GPU memory the engine may use (default 0.85)")
    group.add_argument("--max-num-seqs", type=int, help="most requests in one batch")
    group.add_argument("--max-num-batched-tokens", type=int, help="token budget of one step")
    group.add_argument("--page-size", type=int, help="tokens per KV page (default 64 on CUDA, 16 on CPU)")
    group.add_argument("--dtype", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")
    group.add_argument("--device", help="cpu or cuda[:N] (default: cuda if available)")
    group.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction,
                       help="reuse computed pages and GDN state checkpoints across requests (default: on)")
    group.add_argument("--checkpoint-interval", type=int,
                       help="tokens between GDN state checkpoints, a multiple of --page-size (default 4096)")
    group.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction,
                       help="replay decode steps through CUDA graphs captured at start-up (default: on)")
    group.add_argument("--load-format", choices=LOAD_FORMATS,
                       help="auto: the model's weights; dummy: random weights for the model directory's config "
                            "(benchmarks of real shapes without the weights)")


def engine_args(args: argparse.Namespace) -> dict:
    """LLMEngine keyword arguments from the flags of `add_engine_flags` that were given."""
    return {name: getattr(args, name) for name in _ENGINE_FLAGS if getattr(args, name) is not None}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="HF model directory or .gguf file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens to generate per answer")
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0, help="<= 0: off")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    parser.add_argument("--system", default=None, help="a system message to start the conversation with")
    add_engine_flags(parser)


def add_commands(subparsers) -> None:
    generate = subparsers.add_parser("generate", help="answer one prompt, streaming the answer")
    generate.add_argument("prompt", nargs="?", help="the prompt (default: read standard input)")
    generate.add_argument("--raw", action="store_true", help="complete the text as is, without the chat template")
    _add_common(generate)
    generate.set_defaults(func=_generate)
    chat = subparsers.add_parser("chat", help="talk to a model interactively, streaming its answers")
    _add_common(chat)
    chat.set_defaults(func=_chat)


def _engine(args: argparse.Namespace):
    from tokenyard.engine.engine import LLMEngine

    return LLMEngine(args.model, **engine_args(args))


def _params(args: argparse.Namespace):
    from tokenyard.engine.params import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, seed=args.seed)


def _stream(engine, request_id: str, prompt_token_ids: list[int], params) -> str:
    """Run one request to the end, printing its text as it comes; Ctrl-C aborts it."""
    engine.add_request(request_id, prompt_token_ids, params)
    text = ""
    try:
        while engine.has_unfinished_requests():
            for out in engine.step():
                sys.stdout.write(out.new_text)
                sys.stdout.flush()
                text = out.text
                if out.finish_reason == "error":
                    print(f"\n[error: {out.error}]", file=sys.stderr)
    except KeyboardInterrupt:
        engine.abort_request(request_id)
        engine.step()
        print("\n[interrupted]", file=sys.stderr)
    print()
    return text


def _system(args: argparse.Namespace) -> list[dict]:
    return [{"role": "system", "content": args.system}] if args.system else []


def _generate(args: argparse.Namespace) -> int:
    params = _params(args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    engine = _engine(args)
    if args.raw or not engine.tokenizer.chat_template:
        ids = engine.tokenizer.encode(prompt)
    else:
        ids = engine.apply_chat_template(_system(args) + [{"role": "user", "content": prompt}])
    _stream(engine, "generate", ids, params)
    return 0


def _chat(args: argparse.Namespace) -> int:
    params = _params(args)
    engine = _engine(args)
    if not engine.tokenizer.chat_template:
        print(f"{engine.model_path} has no chat template; use `tokenyard generate --raw`", file=sys.stderr)
        return 2
    print(f"tokenyard chat: {engine.model_path} on {engine.device}. /reset clears the conversation, "
          "/exit (or Ctrl-D) quits.", file=sys.stderr)
    history = _system(args)
    for turn in itertools.count():
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if line in ("/exit", "/quit"):
            return 0
        if line == "/reset":
            history = _system(args)
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        try:
            answer = _stream(engine, f"chat-{turn}", engine.apply_chat_template(history), params)
        except ValueError as error:   # the conversation outgrew max_model_len
            history.pop()
            print(f"[{error}; /reset to start over]", file=sys.stderr)
            continue
        history.append({"role": "assistant", "content": answer})
