"""Tool-call parsers on complete and streamed model output, malformed output included.

Expected calls are written out by hand from each format's documentation; streaming is checked by
feeding every output in many different chunkings and comparing with the hand-written result.
"""

import json
import random

import pytest

from tokenyard.engine.server.tool_parsers import (
    ToolCallStream,
    detect_tool_parser,
    get_tool_parser,
)
from tokenyard.engine.server.tool_parsers.deepseek_v3 import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "hourly": {"type": "boolean"},
                    "threshold": {"type": "number"},
                    "units": {"type": ["string", "null"]},
                    "options": {"type": "object"},
                    "tags": {"type": "array"},
                },
            },
        },
    },
    {"type": "function", "function": {"name": "list_files", "parameters": {"type": "object", "properties": {}}}},
]


def _calls(parsed):
    return [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls]


def _streamed(parser, text, rng):
    """Feed `text` in random pieces (single characters up to a dozen) and collect the result."""
    stream = ToolCallStream(parser, TOOLS)
    deltas, pos = [], 0
    while pos < len(text):
        step = rng.randint(1, 12)
        deltas += stream.feed(text[pos : pos + step])
        pos += step
    deltas += stream.finish()
    content = "".join(d.content for d in deltas if d.content)
    calls = [(d.tool_call.name, json.loads(d.tool_call.arguments)) for d in deltas if d.tool_call]
    indexes = [d.index for d in deltas if d.tool_call]
    assert indexes == list(range(len(calls))), "tool call indexes count up from 0"
    return content, calls


HERMES = [
    ("plain answer", "The sky is blue.", "The sky is blue.", []),
    (
        "one call after text",
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
        "Let me check.\n",
        [("get_weather", {"city": "Paris", "days": 3})],
    ),
    (
        "two calls",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "list_files", "arguments": {}}\n</tool_call>',
        "\n",
        [("get_weather", {"city": "Oslo"}), ("list_files", {})],
    ),
    (
        "arguments given as a JSON string",
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}</tool_call>',
        "",
        [("get_weather", {"city": "Rome"})],
    ),
    (
        "broken JSON is text",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call>',
        [],
    ),
    (
        "unclosed block is text",
        'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
        'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
        [],
    ),
    (
        "JSON without a name is text",
        '<tool_call>{"arguments": {}}</tool_call>',
        '<tool_call>{"arguments": {}}</tool_call>',
        [],
    ),
    ("stray closing tag is text", "a </tool_call> b <tool_", "a </tool_call> b <tool_", []),
    (
        "malformed block then good block",
        '<tool_call>oops</tool_call>ok<tool_call>{"name": "list_files", "arguments": {}}</tool_call>',
        "<tool_call>oops</tool_call>ok",
        [("list_files", {})],
    ),
]

QWEN_XML = [
    (
        "typed parameters",
        "I will look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n"
        "<parameter=days>\n7\n</parameter>\n<parameter=hourly>\nTrue\n</parameter>\n"
        "<parameter=threshold>\n0.5\n</parameter>\n<parameter=units>\nnull\n</parameter>\n"
        '<parameter=options>\n{"lang": "en"}\n</parameter>\n<parameter=tags>\n[1, 2]\n</parameter>\n'
        "</function>\n</tool_call>",
        "I will look.\n",
        [
            (
                "get_weather",
                {
                    "city": "New York",
                    "days": 7,
                    "hourly": True,
                    "threshold": 0.5,
                    "units": None,
                    "options": {"lang": "en"},
                    "tags": [1, 2],
                },
            )
        ],
    ),
    (
        "string stays a string even when it looks like a number; multi-line values keep inner lines",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n"
        "<parameter=note>\nline one\nline two\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", {"city": "42", "note": "line one\nline two"})],
    ),
    (
        "value that does not fit its type stays text",
        "<tool_call>\n<function=get_weather>\n<parameter=days>\nseven\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", {"days": "seven"})],
    ),
    (
        "no parameters",
        "<tool_call>\n<function=list_files>\n</function>\n</tool_call>",
        "",
        [("list_files", {})],
    ),
    (
        "missing function element is text",
        "<tool_call>\n<parameter=city>\nParis\n</parameter>\n</tool_call>",
        "<tool_call>\n<parameter=city>\nParis\n</parameter>\n</tool_call>",
        [],
    ),
    (
        "unclosed function is text",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</tool_call>",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</tool_call>",
        [],
    ),
    (
        "truncated output is text",
        "<tool_call>\n<function=get_weather>\n<parameter=ci",
        "<tool_call>\n<function=get_weather>\n<parameter=ci",
        [],
    ),
]


def _ds_call(name, args_json):
    return f"{CALL_BEGIN}function{SEP}{name}\n```json\n{args_json}\n```{CALL_END}"


DEEPSEEK = [
    (
        "two calls in one block",
        "Checking.\n"
        + CALLS_BEGIN
        + _ds_call("get_weather", '{"city": "Tokyo"}')
        + "\n"
        + _ds_call("list_files", "{}")
        + CALLS_END,
        "Checking.\n",
        [("get_weather", {"city": "Tokyo"}), ("list_files", {})],
    ),
    (
        "bad JSON makes the block text",
        CALLS_BEGIN + _ds_call("get_weather", '{"city": Tokyo}') + CALLS_END,
        CALLS_BEGIN + _ds_call("get_weather", '{"city": Tokyo}') + CALLS_END,
        [],
    ),
    (
        "stray text inside the block makes it text",
        CALLS_BEGIN + "hmm" + _ds_call("list_files", "{}") + CALLS_END,
        CALLS_BEGIN + "hmm" + _ds_call("list_files", "{}") + CALLS_END,
        [],
    ),
    (
        "unterminated block is text",
        "x" + CALLS_BEGIN + _ds_call("list_files", "{}"),
        "x" + CALLS_BEGIN + _ds_call("list_files", "{}"),
        [],
    ),
]

CASES = (
    [("hermes",) + c for c in HERMES]
    + [("qwen3_xml",) + c for c in QWEN_XML]
    + [("deepseek_v3",) + c for c in DEEPSEEK]
)


@pytest.mark.parametrize("parser_name,title,text,content,calls", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_complete_output_gives_the_hand_written_calls_and_content(parser_name, title, text, content, calls):
    parsed = get_tool_parser(parser_name).parse(text, TOOLS)
    assert parsed.content == content
    assert _calls(parsed) == calls


@pytest.mark.parametrize("parser_name,title,text,content,calls", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_streamed_output_in_any_chunking_gives_the_same_result(parser_name, title, text, content, calls):
    parser = get_tool_parser(parser_name)
    rng = random.Random(title)
    for _ in range(25):
        assert _streamed(parser, text, rng) == (content, calls)


def test_stream_emits_plain_content_before_the_output_ends():
    stream = ToolCallStream(get_tool_parser("hermes"), TOOLS)
    assert [d.content for d in stream.feed("Hello wor")] == ["Hello wor"]
    # A tail that could open a block is held back until it is known not to.
    assert [d.content for d in stream.feed("ld <tool")] == ["ld "]
    assert [d.content for d in stream.feed("box")] == ["<toolbox"]


def test_each_call_is_emitted_as_soon_as_its_block_closes():
    stream = ToolCallStream(get_tool_parser("hermes"), TOOLS)
    assert stream.feed('<tool_call>{"name": "list_files", "arguments": {}}') == []
    deltas = stream.feed("</tool_call>\n<tool_call>")
    assert [d.tool_call.name for d in deltas if d.tool_call] == ["list_files"]


def test_call_ids_are_unique():
    text = '<tool_call>{"name": "list_files", "arguments": {}}</tool_call>' * 3
    ids = [c.id for c in get_tool_parser("hermes").parse(text, TOOLS).tool_calls]
    assert len(set(ids)) == 3 and all(i.startswith("call_") for i in ids)


@pytest.mark.parametrize("parser_name", ["hermes", "qwen3_xml", "deepseek_v3"])
def test_forced_prefix_for_a_named_tool_completes_into_a_call_to_it(parser_name):
    parser = get_tool_parser(parser_name)
    rest = {
        "hermes": '{"city": "Lima"}}\n</tool_call>',
        "qwen3_xml": "<parameter=city>\nLima\n</parameter>\n</function>\n</tool_call>",
        "deepseek_v3": '{"city": "Lima"}\n```' + CALL_END + CALLS_END,
    }[parser_name]
    parsed = parser.parse(parser.forced_prefix("get_weather") + rest, TOOLS)
    assert _calls(parsed) == [("get_weather", {"city": "Lima"})]
    assert parsed.content == ""


def test_template_detection_picks_the_format_the_template_writes(qwen_tokenizer_dir):
    config = json.loads((qwen_tokenizer_dir / "tokenizer_config.json").read_text())
    assert detect_tool_parser(config["chat_template"]).name == "hermes"
    assert detect_tool_parser("{{ '<tool_call>\\n<function=' + name + '>' }}").name == "qwen3_xml"
    assert detect_tool_parser("{{'<｜tool▁calls▁begin｜>'}}").name == "deepseek_v3"
    assert detect_tool_parser("{% for m in messages %}{{ m.content }}{% endfor %}") is None
    assert detect_tool_parser(None) is None


def test_unknown_parser_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="tool_call_parser='nope'"):
        get_tool_parser("nope")
