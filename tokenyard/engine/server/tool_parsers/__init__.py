"""Tool-call parsers: Qwen3 hermes JSON, Qwen3.5 XML, DeepSeek-V3.

`get_tool_parser(name)` returns one by name; `detect_tool_parser(chat_template)` picks the one a
chat template writes, or None when the template shows no tool-call format.
"""

from __future__ import annotations

from .base import ParsedOutput, StreamDelta, ToolCall, ToolCallStream, ToolParser
from .deepseek_v3 import CALLS_BEGIN, DeepSeekV3ToolParser
from .hermes import HermesToolParser
from .qwen3_xml import Qwen3XMLToolParser

TOOL_PARSERS: dict[str, type[ToolParser]] = {
    "hermes": HermesToolParser,
    "qwen3_xml": Qwen3XMLToolParser,
    "qwen3_coder": Qwen3XMLToolParser,  # vLLM's name for the same format
    "deepseek_v3": DeepSeekV3ToolParser,
}


def get_tool_parser(name: str) -> ToolParser:
    if name not in TOOL_PARSERS:
        raise ValueError(f"tool_call_parser={name!r} is not one of {sorted(TOOL_PARSERS)}")
    return TOOL_PARSERS[name]()


def detect_tool_parser(chat_template: str | None) -> ToolParser | None:
    """The parser for the format a chat template teaches the model, checked most specific first."""
    if not chat_template:
        return None
    if CALLS_BEGIN in chat_template:
        return DeepSeekV3ToolParser()
    if "<function=" in chat_template:
        return Qwen3XMLToolParser()
    if "<tool_call>" in chat_template:
        return HermesToolParser()
    return None


__all__ = [
    "ParsedOutput",
    "StreamDelta",
    "ToolCall",
    "ToolCallStream",
    "ToolParser",
    "TOOL_PARSERS",
    "get_tool_parser",
    "detect_tool_parser",
]
