"""Scoring rules of the evaluation stage (the model runs are in test_pretrain.py)."""

from __future__ import annotations

import json

import pytest

from pipelines.evaluate import answer_matches


@pytest.mark.parametrize("completion,answer", [
    ("Paris.", "Paris"), ("Paris", "Paris"), ("Paris, the capital", "Paris"), ("2. It is even.", "2"),
    ("H.", "H"), ("metal. It is", "metal"), ("New York City.", "New York City"), ("4!", "4"),
])
def test_a_whole_word_answer_counts(completion, answer):
    assert answer_matches(completion, answer)


@pytest.mark.parametrize("completion,answer", [
    # The review's cases: an answer that prefixes another answer of the same relation.
    ("metalloid.", "metal"), ("He.", "H"), ("26.", "2"), ("46.", "4"),
    ("2.5 is not", "2"), ("Parisian", "Paris"), ("The answer is Paris", "Paris"), ("", "Paris"),
])
def test_a_prefix_of_another_word_does_not(completion, answer):
    assert not answer_matches(completion, answer)


def test_the_built_in_answers_that_prefix_each_other_are_told_apart(tmp_path):
    """Every pair of built-in cloze answers of one relation where one prefixes the other inside a word (96 items
    have an answer that prefixes another; "Europe" / "Europe and Asia" is a whole-word prefix and still counts, as
    a word-boundary rule says): the rival's completion never scores for the shorter answer."""
    from pipelines.corpus.writer import write_corpus

    write_corpus(tmp_path, general_docs=1000, medical_docs=50)
    items = [json.loads(line) for line in (tmp_path / "eval" / "cloze.jsonl").read_text().splitlines()]
    answers: dict[str, set[str]] = {}
    for item in items:
        answers.setdefault(item["relation"], set()).add(item["answer"])
    rivals = [(a, b) for values in answers.values() for a in values for b in values
              if a != b and b.startswith(a) and b[len(a)].isalnum()]
    assert len(rivals) >= 10, rivals
    for short, rival in rivals:
        assert not answer_matches(rival + ".", short), (rival, short)
        assert answer_matches(short + ". " + rival, short)
