"""Qwen3.5 / Qwen3-Coder tool calls, XML with one element per parameter:

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Parameter values are text; each is converted to the type its tool's JSON schema declares
(integer, number, boolean, object, array, null). A value that does not convert stays a string, as
does a parameter the schema does not name.
"""

from __future__ import annotations

import json
import re

from .base import ToolCall, ToolParser

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)</function>", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)


def _schema_types(schema: dict) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    types: list[str] = []
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        if isinstance(option, dict):
            types += _schema_types(option)
    return types


def _convert(value: str, types: list[str]) -> object:
    if "null" in types and value.strip().lower() in ("null", "none"):
        return None
    if not types or "string" in types:
        return value
    text = value.strip()
    for kind in types:
        if kind == "integer":
            try:
                return int(text)
            except ValueError:
                continue
        if kind == "number":
            for number_type in (int, float):
                try:
                    return number_type(text)
                except ValueError:
                    pass
            continue
        if kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind in ("object", "array"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict if kind == "object" else list):
                return parsed
    return value


def _parameter_schemas(tools: list[dict], function_name: str) -> dict:
    for tool in tools:
        function = tool.get("function", tool)
        if function.get("name") == function_name:
            return (function.get("parameters") or {}).get("properties") or {}
    return {}


class Qwen3XMLToolParser(ToolParser):
    name = "qwen3_xml"
    block_start = "<tool_call>"
    block_end = "</tool_call>"

    def parse_block(self, block: str, tools: list[dict]) -> list[ToolCall] | None:
        calls: list[ToolCall] = []
        rest = block
        for match in _FUNCTION.finditer(block):
            function_name = match.group(1).strip()
            schemas = _parameter_schemas(tools, function_name)
            body = match.group(2)
            arguments: dict[str, object] = {}
            for parameter in _PARAMETER.finditer(body):
                key = parameter.group(1).strip()
                # The template writes each value between newlines; those are not part of it.
                value = parameter.group(2).removeprefix("\n").removesuffix("\n")
                arguments[key] = _convert(value, _schema_types(schemas.get(key, {})))
            if _PARAMETER.sub("", body).strip():
                return None
            calls.append(ToolCall(name=function_name, arguments=json.dumps(arguments, ensure_ascii=False)))
            rest = rest.replace(match.group(0), "", 1)
        if not calls or rest.strip():
            return None
        return calls

    def forced_prefix(self, function_name: str | None) -> str:
        if function_name is None:
            return "<tool_call>\n<function="
        return f"<tool_call>\n<function={function_name}>\n"
