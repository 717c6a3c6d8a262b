"""`tokenyard generate` and `tokenyard chat` print what the engine generates, streamed."""

from __future__ import annotations

import io

from tests.engine.conftest import engine, run
from tokenyard.cli import main
from tokenyard.engine import SamplingParams

FLAGS = ["--max-tokens", "12", "--temperature", "0", "--kv-cache-memory", "8M", "--device", "cpu", "--dtype", "float32"]


def test_generate_prints_the_greedy_completion(tiny_llama, capsys):
    path, _ = tiny_llama
    assert main(["generate", "--model", str(path), "--raw", "hello there", *FLAGS]) == 0
    eng = engine(path)
    expected = run(eng, [eng.tokenizer.encode("hello there")], SamplingParams(max_tokens=12, temperature=0))["r0"].text
    assert capsys.readouterr().out == expected + "\n"


def test_chat_keeps_the_conversation_and_exits(tiny_llama, capsys, monkeypatch):
    path, _ = tiny_llama
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\nand again\n/exit\n"))
    assert main(["chat", "--model", str(path), *FLAGS]) == 0
    eng = engine(path)
    greedy = SamplingParams(max_tokens=12, temperature=0)
    history = [{"role": "user", "content": "hi"}]
    first = run(eng, [eng.apply_chat_template(history)], greedy)["r0"].text
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "and again"}]
    second = run(eng, [eng.apply_chat_template(history)], greedy)["r0"].text
    assert capsys.readouterr().out == f"> {first}\n> {second}\n> "
