"""Plain-text helpers shared by the corpus generator and the shard pipeline (no Ray, no I/O)."""

from __future__ import annotations

import re

# A sentence ends at . ! or ? followed by whitespace and a capital letter or digit.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of a document, also split at newlines. Exact for the generated corpus (no abbreviations or
    decimals); a reasonable segmentation for ordinary prose."""
    return [s for line in text.split("\n") if line.strip() for s in _SENTENCE_END.split(line.strip())]
