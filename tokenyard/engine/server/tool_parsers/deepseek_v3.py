"""DeepSeek-V3 tool calls:

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

One block (calls begin .. calls end) holds one or more calls.
"""

from __future__ import annotations

import json
import re

from .base import ToolCall, ToolParser

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"

_CALL = re.compile(
    re.escape(CALL_BEGIN) + r"(?P<type>[^<\n]*)" + re.escape(SEP) + r"(?P<name>[^\n]+)\n"
    r"```(?:json)?\n(?P<arguments>.*?)\n```\s*" + re.escape(CALL_END),
    re.DOTALL,
)


class DeepSeekV3ToolParser(ToolParser):
    name = "deepseek_v3"
    block_start = CALLS_BEGIN
    block_end = CALLS_END

    def parse_block(self, block: str, tools: list[dict]) -> list[ToolCall] | None:
        calls: list[ToolCall] = []
        for match in _CALL.finditer(block):
            try:
                arguments = json.loads(match.group("arguments"))
            except json.JSONDecodeError:
                return None
            if match.group("type").strip() != "function" or not isinstance(arguments, dict):
                return None
            calls.append(ToolCall(name=match.group("name").strip(), arguments=json.dumps(arguments, ensure_ascii=False)))
        if not calls or _CALL.sub("", block).strip():
            return None
        return calls

    def forced_prefix(self, function_name: str | None) -> str:
        prefix = f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}"
        if function_name is None:
            return prefix
        return f"{prefix}{function_name}\n```json\n"
