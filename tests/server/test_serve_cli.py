"""`tokenyard serve` as an operator runs it: a subprocess on a loopback port, answering curl-style
HTTP; and the flag parsing both commands share."""

import argparse
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tokenyard.cli import build_parser
from tokenyard.engine.cli import parse_size


def test_sizes_parse_as_powers_of_1024():
    assert parse_size("1073741824") == 1 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("1.5g") == 3 << 29
    with pytest.raises(argparse.ArgumentTypeError, match="'lots'"):
        parse_size("lots")


def test_serve_binds_loopback_unless_told_otherwise():
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.tool_call_parser) == ("127.0.0.1", 8000, None, "auto")


def test_bench_agentic_turn_ranges():
    assert build_parser().parse_args(["bench", "agentic", "--turns", "10-15"]).turns == (10, 15)
    assert build_parser().parse_args(["bench", "agentic", "--turns", "3"]).turns == (3, 3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tokenyard_serve_answers_a_chat_request_and_requires_its_key():
    port = _free_port()
    command = [sys.executable, "-m", "tokenyard.cli", "serve", "--port", str(port), "--api-key", "k",
               "--max-model-len", "512", "--kv-cache-memory", "64M", "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=os.environ | {"PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "server did not come up in 180 s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(f"{url}/v1/chat/completions", json=body).status_code == 401
        response = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k"}, timeout=60)
        assert response.status_code == 200
        assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
