"""Tokens -> text as they arrive: never a broken character, never the start of a stop string that may still match.

sentencepiece decodes a whole id list better than pieces one by one (leading-space markers, byte-fallback pieces
that form one UTF-8 character together), so the reply is decoded whole after every batch of tokens and the new
suffix is released — except a trailing U+FFFD (a multi-byte character whose last bytes have not come yet) and a
trailing piece that could be the start of a stop string.
"""

from __future__ import annotations

from typing import Callable, Sequence

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, decode: Callable[[Sequence[int]], str], *, stop: Sequence[str] = (), skip_ids=()):
        self.decode = decode
        self.stop = [s for s in stop if s]
        self.skip = set(skip_ids)  # control tokens (<|end|>) that end the reply and are not text
        self.ids: list[int] = []
        self.sent = ""  # text already released
        self.stopped = False  # a stop string was found: the reply ends before it
        self.pushed = 0  # tokens received, control tokens included
        self.used = 0  # with a stop string: the tokens that spell the returned text

    def push(self, tokens: Sequence[int]) -> str:
        """Add tokens; return the text that can be released now ("" if none)."""
        if self.stopped:
            return ""
        self.pushed += len(tokens)
        self.ids.extend(t for t in tokens if t not in self.skip)
        new = self._release(final=False)
        if self.stopped:
            self.used = self._tokens_spelling(self.sent)
        return new

    def finish(self) -> str:
        """The reply ended: release what was held back (a stop-string prefix that never completed)."""
        return "" if self.stopped else self._release(final=True)

    @property
    def text(self) -> str:
        return self.sent

    @property
    def completion_tokens(self) -> int:
        """The reply's tokens for `usage`: every token received, or, when a stop string cut the reply, the tokens
        of the returned text (tokens decoded after it, before the model replica heard of the stop, are not part of
        the reply — their number depends on timing)."""
        return self.used if self.stopped else self.pushed

    def _tokens_spelling(self, text: str) -> int:
        """The fewest leading tokens whose decoding starts with `text` (binary search: a longer prefix of the
        tokens decodes to a longer prefix of the reply)."""
        low, high = 0, len(self.ids)
        if not self.decode(self.ids).startswith(text):
            return high
        while low < high:
            mid = (low + high) // 2
            if self.decode(self.ids[:mid]).startswith(text):
                high = mid
            else:
                low = mid + 1
        return low

    def _release(self, *, final: bool) -> str:
        text = self.decode(self.ids)
        if not final:
            text = text.rstrip(REPLACEMENT)  # wait for the rest of a multi-byte character
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped = text[:cut], True
        elif not final:
            text = text[:len(text) - self._held(text)]
        if not text.startswith(self.sent):  # a later token re-spelled earlier text (rare): keep what was sent
            return ""
        new, self.sent = text[len(self.sent):], text
        return new

    def _held(self, text: str) -> int:
        """Length of the longest end of `text` that is a proper prefix of a stop string."""
        held = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:n]):
                    held = n
                    break
        return held
