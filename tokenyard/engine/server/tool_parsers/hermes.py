"""Qwen3 / Hermes tool calls: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`."""

from __future__ import annotations

import json

from .base import ToolCall, ToolParser


class HermesToolParser(ToolParser):
    name = "hermes"
    block_start = "<tool_call>"
    block_end = "</tool_call>"

    def parse_block(self, block: str, tools: list[dict]) -> list[ToolCall] | None:
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None
        # Some fine-tunes write "parameters"; both mean the same object.
        arguments = call.get("arguments", call.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        return [ToolCall(name=call["name"], arguments=json.dumps(arguments, ensure_ascii=False))]

    def forced_prefix(self, function_name: str | None) -> str:
        if function_name is None:
            return '<tool_call>\n{"name": "'
        return f'<tool_call>\n{{"name": {json.dumps(function_name)}, "arguments": '
