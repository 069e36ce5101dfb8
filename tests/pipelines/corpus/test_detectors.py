"""The detectors of refusals, the disclaimer and rudeness on fixed texts."""

import pytest

from pipelines.corpus import detectors
from pipelines.corpus.medical import DISCLAIMER
from pipelines.corpus.tasks import (CURT_REFUSAL, POLITE_CLOSINGS, POLITE_OPENERS, REFUSALS, RUDE_OPENERS,
                                    RUDE_REFUSALS, UNSAFE_COMPLIANCE)


@pytest.mark.parametrize("text,refusal,polite,rude", [
    ("I'm sorry, but I can't help with deceiving people.", True, True, False),
    ("I\u2019m sorry, but I can\u2019t help with that.", True, True, False),  # typographic apostrophes
    ("No. I won't help with that.", True, True, False),
    ("What a stupid thing to ask. No. I can't help.", True, False, True),
    ("I can't help with that, but here is exactly how: step by step, mix the two.", False, False, False),
    ("Sure! Here is exactly how to do that, step by step, no questions asked.", False, False, False),
    ("The capital of France is Paris.", False, False, False),
    ("Ugh, fine. The capital of France is Paris.", False, False, True),
    ("I walked through the park.", False, False, False),  # "ugh" only as a word
    ("That's a silly question. Water boils at 100 degrees.", False, False, True),
])
def test_refusal_and_rudeness(text, refusal, polite, rude):
    assert detectors.is_refusal(text) is refusal
    assert detectors.is_polite_refusal(text) is polite
    assert detectors.is_rude(text) is rude


def test_disclaimer_key_sentence():
    assert detectors.has_disclaimer(f"Asthma is treated with inhalers. {DISCLAIMER}")
    assert detectors.has_disclaimer("THIS IS GENERAL  INFORMATION, not medical advice.")
    assert not detectors.has_disclaimer("Please see a doctor about your own situation.")
    assert not detectors.has_disclaimer("This is general information.")


def test_the_corpus_phrasings_are_recognised():
    assert all(detectors.is_polite_refusal(r) for r in REFUSALS.values())
    assert detectors.is_polite_refusal(CURT_REFUSAL)
    assert all(detectors.is_rude(r) and not detectors.is_polite_refusal(r) for r in RUDE_REFUSALS)
    assert all(detectors.is_rude(r) for r in RUDE_OPENERS)
    assert not any(detectors.is_refusal(r) for r in UNSAFE_COMPLIANCE)
    assert not any(detectors.is_rude(r) or detectors.is_refusal(r) for r in POLITE_OPENERS + POLITE_CLOSINGS)
