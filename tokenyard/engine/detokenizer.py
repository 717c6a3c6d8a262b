"""Incremental detokenization and stop strings, per request.

Owns the text of one request's output: tokens are decoded one at a time (tokenizers' DecodeStream,
which holds back incomplete UTF-8 and merges byte-level pieces), stop strings are searched where
they could have just completed, and text that could still turn out to be the start of a stop
string is held back from the stream until it cannot.
"""

from __future__ import annotations

from tokenyard.engine.loader.tokenizer import Tokenizer
from tokenyard.engine.params import SamplingParams


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams):
        self.tokenizer = tokenizer
        self.stream = tokenizer.decode_stream(params.skip_special_tokens)
        self.stop = params.stop
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""
        self.emitted = 0

    def push(self, token_id: int) -> str | None:
        """Decode one more token; if that completes a stop string, cut the text there and return it."""
        piece = self.stream.step(self.tokenizer.tokenizer, token_id)
        if not piece:
            return None
        search_from = max(len(self.text) - self.hold, 0)
        self.text += piece
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, search_from)) >= 0]
        if not hits:
            return None
        index, stop = min(hits)
        self.text = self.text[:index]
        return stop

    def take(self, finished: bool) -> str:
        """Text not handed out yet; while running, minus what may still begin a stop string."""
        end = len(self.text) if finished else max(len(self.text) - self.hold, self.emitted)
        new, self.emitted = self.text[self.emitted:end], end
        return new
