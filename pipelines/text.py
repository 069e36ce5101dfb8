"""Plain-text helpers shared by the corpus generator, the shard pipeline and the progress lines (no Ray, no I/O)."""

from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by whitespace and a capital letter or digit.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a document, also split at newlines. Exact for the generated corpus (no abbreviations or
    decimals); a reasonable segmentation for ordinary prose."""
    return [s for line in text.split("\n") if line.strip() for s in _SENTENCE_END.split(line.strip())]


def duration(seconds: float) -> str:
    """A time span as a person reads it: 45s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
