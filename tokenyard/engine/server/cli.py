"""`tokenyard serve` and `tokenyard bench agentic`.

Owns the command-line flags of both (the engine's come from tokenyard.engine.cli, shared with
`generate` and `chat`) and turning them into an engine, an app and a benchmark run.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from tokenyard.engine import cli as engine_cli
from tokenyard.engine.server.tool_parsers import TOOL_PARSERS


def build_server_app(model: str | None, engine_args: dict, api_key: str | None = None,
                     tool_call_parser: str = "auto", served_model_name: str | None = None):
    """Load the engine and build the app around it (what `tokenyard serve` runs)."""
    from tokenyard.engine.engine import LLMEngine
    from tokenyard.engine.server.app import build_app
    from tokenyard.engine.server.tool_parsers import detect_tool_parser, get_tool_parser

    engine = LLMEngine(model, **engine_args)
    if tool_call_parser == "auto":
        parser = detect_tool_parser(engine.tokenizer.chat_template)
    elif tool_call_parser == "none":
        parser = None
    else:
        parser = get_tool_parser(tool_call_parser)
    name = served_model_name or Path(engine.model_path).name.removesuffix(".gguf")
    return build_app(engine, name, engine.max_model_len, api_key=api_key, tool_parser=parser)


def _serve(args: argparse.Namespace) -> int:
    from tokenyard.engine.server.launch import serve_forever

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = args.api_key or os.environ.get("TOKENYARD_API_KEY")
    app = build_server_app(args.model, engine_cli.engine_args(args), api_key, args.tool_call_parser, args.served_model_name)
    state = app.state.server
    print(f"tokenyard: serving {state.model_name} (max_model_len {state.max_model_len}, tool-call parser "
          f"{state.tool_parser.name if state.tool_parser else 'none'}) on http://{args.host}:{args.port}/v1"
          + (" (API key required)" if api_key else ""), flush=True)
    serve_forever(app, args.host, args.port, args.log_level)
    return 0


def _turns(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--turns {text!r}: expected a count (12) or a range (10-15)") from None


def _bench_agentic(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tokenyard.engine.server import bench_agentic as bench

    workload = bench.PRESETS[args.preset]
    overrides = {
        "first_turn_tokens": args.first_turn_tokens, "turn_tokens": args.turn_tokens,
        "output_tokens": args.output_tokens, "users": args.users, "seed": args.seed,
    }
    if args.turns is not None:
        overrides["min_turns"], overrides["max_turns"] = args.turns
    workload = replace(workload, **{k: v for k, v in overrides.items() if v is not None})
    if args.base_url:
        report = bench.run(args.base_url, args.model, workload, args.api_key, args.gpus)
    else:
        from tokenyard.engine.server.launch import ServerThread

        print("tokenyard bench agentic: no --base-url; starting a server on this machine", flush=True)
        app = build_server_app(args.model, engine_cli.engine_args(args))
        with ServerThread(app) as server:
            report = bench.run(f"{server.url}/v1", None, workload, gpus=args.gpus)
    print(bench.format_report(report))
    json_path, png_path = bench.write_outputs(report, Path(args.out))
    print(f"wrote {json_path} and {png_path}")
    return 0


def add_commands(subparsers) -> None:
    serve = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server")
    serve.add_argument("--model", default=None, help="HF directory or GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    serve.add_argument("--served-model-name", default=None, help="the model id clients send (default: the model's file name)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set TOKENYARD_API_KEY)")
    serve.add_argument("--tool-call-parser", default="auto", choices=["auto", "none", *TOOL_PARSERS],
                       help="tool-call format (default: detected from the chat template)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    engine_cli.add_engine_flags(serve)
    serve.set_defaults(func=_serve)

    bench = subparsers.add_parser("bench", help="end-to-end benchmarks")
    kinds = bench.add_subparsers(dest="bench", required=True)
    agentic = kinds.add_parser(
        "agentic", help="multi-turn agent workload over HTTP",
        description="Replay a multi-turn agent workload against an OpenAI-compatible endpoint "
                    "(or, without --base-url, against a tokenyard server started here).",
    )
    agentic.add_argument("--base-url", default=None, help="endpoint, e.g. http://127.0.0.1:8000/v1 (default: start one here)")
    agentic.add_argument("--model", default=None,
                         help="model id at --base-url (default: the first in /v1/models); without --base-url, the model to serve")
    agentic.add_argument("--api-key", default=None)
    agentic.add_argument("--preset", default="agentic", choices=["agentic", "cpu"],
                         help="agentic: 50K first turn, 10-15 turns of 800 tokens; cpu: small enough for SmolLM2 on a CPU")
    agentic.add_argument("--first-turn-tokens", type=int, default=None, help="N: tokens in the first turn")
    agentic.add_argument("--turn-tokens", type=int, default=None, help="M: new tokens each further turn")
    agentic.add_argument("--turns", type=_turns, default=None, help="T: further turns per user, a count or a range (10-15)")
    agentic.add_argument("--output-tokens", type=int, default=None, help="O: output tokens per turn")
    agentic.add_argument("--users", type=int, default=None, help="C: concurrent users")
    agentic.add_argument("--seed", type=int, default=None)
    agentic.add_argument("--gpus", type=int, default=None, help="GPUs behind the endpoint: also report output tokens/min per GPU")
    agentic.add_argument("--out", default="out/bench", help="folder for agentic.json and agentic.png")
    engine_cli.add_engine_flags(agentic)
    agentic.set_defaults(func=_bench_agentic)
