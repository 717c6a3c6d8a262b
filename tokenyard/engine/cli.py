"""`tokenyard generate` and `tokenyard chat`: the engine from the terminal, streaming tokens.

Owns these two commands' flags and their terminal loops. With no --model, the embedded default
(SmolLM2-135M-Instruct) is used. Prompts go through the model's chat template unless --raw; the
engine flags are the same as `tokenyard serve`'s (one definition, in the server's cli module).
"""

from __future__ import annotations

import argparse
import itertools
import sys

from tokenyard.engine.server.cli import _add_engine_flags, _engine_args


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="HF model directory or .gguf file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens to generate per answer")
    parser.add_argument("--temperature", type=float, default=0.2, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=0, help="<= 0: off")
    parser.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    parser.add_argument("--system", default=None, help="a system message to start the conversation with")
    _add_engine_flags(parser)


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

    return LLMEngine(args.model, **_engine_args(args))


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
