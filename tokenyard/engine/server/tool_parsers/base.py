"""What every tool-call parser shares: finding tool-call blocks in model output, complete or streamed.

A parser names the markers that open and close a block of calls and parses one block's inner
text. This module turns that into two operations that always agree:

- `ToolParser.parse(text, tools)` for a finished output;
- `ToolCallStream.feed(delta)` / `.finish()` for streamed output, emitting content as soon as it is
  certain not to be part of a block, and each block's calls once the block has closed.

Text outside blocks is content. A block that does not parse, or one left unclosed when the output
ends, is content too: malformed model output is returned as text, never raised. Concatenating the
streamed content and calls gives exactly what `parse` returns for the whole text.

Owns no model, tokenizer or HTTP knowledge.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass
class ToolCall:
    """One parsed call; `arguments` is a JSON object serialised as a string, as OpenAI sends it."""

    name: str
    arguments: str
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass
class ParsedOutput:
    content: str
    tool_calls: list[ToolCall]


@dataclass
class StreamDelta:
    """One streamed piece: either content text or a finished tool call with its index."""

    content: str | None = None
    tool_call: ToolCall | None = None
    index: int = 0


class ToolParser:
    """Subclasses set `name`, `block_start`, `block_end` and implement `parse_block` and
    `forced_prefix`."""

    name: str = ""
    block_start: str = ""
    block_end: str = ""

    def parse_block(self, block: str, tools: list[dict]) -> list[ToolCall] | None:
        """Calls in one block's inner text, or None if it is malformed."""
        raise NotImplementedError

    def forced_prefix(self, function_name: str | None) -> str:
        """Text that starts a call (to `function_name`, or to any tool when None).

        The server appends it to the prompt for tool_choice "required" or a named tool, and
        prepends it to the generated text before parsing. Without constrained decoding this makes
        a call very likely, not certain: if the model does not finish it, the output is text.
        """
        raise NotImplementedError

    def parse(self, text: str, tools: list[dict]) -> ParsedOutput:
        stream = ToolCallStream(self, tools)
        deltas = stream.feed(text) + stream.finish()
        content = "".join(d.content for d in deltas if d.content is not None)
        calls = [d.tool_call for d in deltas if d.tool_call is not None]
        return ParsedOutput(content=content, tool_calls=calls)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ToolCallStream:
    """Incremental parsing of one output. Feed text deltas; call `finish` once at the end."""

    def __init__(self, parser: ToolParser, tools: list[dict]):
        self.parser = parser
        self.tools = tools
        self._buffer = ""
        self._in_block = False
        self._calls = 0

    def feed(self, delta: str) -> list[StreamDelta]:
        self._buffer += delta
        out: list[StreamDelta] = []
        start, end = self.parser.block_start, self.parser.block_end
        while True:
            if not self._in_block:
                i = self._buffer.find(start)
                if i < 0:
                    # Hold back a tail that may be the start of a marker still arriving.
                    keep = _partial_suffix(self._buffer, start)
                    self._emit_content(out, self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                self._emit_content(out, self._buffer[:i])
                self._buffer = self._buffer[i:]
                self._in_block = True
            j = self._buffer.find(end, len(start))
            if j < 0:
                return out
            whole = self._buffer[: j + len(end)]
            calls = self.parser.parse_block(self._buffer[len(start) : j], self.tools)
            if calls is None:
                self._emit_content(out, whole)
            for call in calls or []:
                out.append(StreamDelta(tool_call=call, index=self._calls))
                self._calls += 1
            self._buffer = self._buffer[j + len(end) :]
            self._in_block = False

    def finish(self) -> list[StreamDelta]:
        """Whatever is left (an unclosed block, a partial marker) is content."""
        out: list[StreamDelta] = []
        self._emit_content(out, self._buffer)
        self._buffer = ""
        self._in_block = False
        return out

    @staticmethod
    def _emit_content(out: list[StreamDelta], text: str) -> None:
        if text:
            out.append(StreamDelta(content=text))
