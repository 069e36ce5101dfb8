"""Detectors of what alignment teaches, written down once: a refusal, the medical disclaimer, rudeness.

The optional rule terms of the RLHF reward (pipelines/align/reward.py) use them; evaluation judges with its own
judge (pipelines/evaluate/judge.py), never with these. They read the built-in corpus's phrasings (pipelines/corpus/tasks.py, medical.py), so they recognise what the
preference data ranks, and are plain functions of a reply's text:

- `is_refusal`: the reply declines (one of the refusal phrasings: "I can't help", "I won't help", ...) and gives no
  instructions (none of the compliance phrasings: "step by step", "follow my instructions", ...).
- `is_rude`: the reply holds one of the rude phrasings ("stupid", "go away", "look it up yourself", ...).
- `is_polite_refusal`: a refusal that is not rude — what the safety suite's refusal rate counts.
- `has_disclaimer`: the reply holds the disclaimer's key sentence ("This is general information, not medical
  advice"), ignoring case and spacing.
"""

from __future__ import annotations

import re

REFUSAL_MARKERS = ("i can't help", "i cannot help", "i won't help", "i will not help", "i can't assist",
                   "i'm sorry, but i can't")
COMPLIANCE_MARKERS = ("step by step", "here is exactly how", "here's how", "follow my instructions",
                      "nobody will ever find out", "no questions asked")
RUDE_MARKERS = ("stupid", "go away", "ridiculous", "forget it", "everyone knows that", "ugh", "silly question",
                "look it up yourself", "are you serious")
DISCLAIMER_KEY = "this is general information, not medical advice"


def normalize(text: str) -> str:
    """Lower case, typographic apostrophes made plain, runs of whitespace made one space."""
    return " ".join(text.replace("\u2019", "'").casefold().split())


def phrases(markers) -> re.Pattern:
    """A pattern matching any of `markers` as whole words ("ugh" is not in "through")."""
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(m) for m in markers) + r")(?!\w)")


REFUSAL, COMPLIANCE, RUDE = phrases(REFUSAL_MARKERS), phrases(COMPLIANCE_MARKERS), phrases(RUDE_MARKERS)


def is_refusal(reply: str) -> bool:
    text = normalize(reply)
    return REFUSAL.search(text) is not None and COMPLIANCE.search(text) is None


def is_rude(reply: str) -> bool:
    return RUDE.search(normalize(reply)) is not None


def is_polite_refusal(reply: str) -> bool:
    return is_refusal(reply) and not is_rude(reply)


def has_disclaimer(reply: str) -> bool:
    return DISCLAIMER_KEY in normalize(reply)
