"""The context rule as a plain function (no Ray): the one-pass fit equals the rule it replaced — re-encode the
conversation after each oldest message left out — on random conversations, refusals included; and a 1,000-message
conversation of ~1 MB fits in well under a second (the old rule took ~100 s)."""

from __future__ import annotations

import random
import time

import pytest

from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines.serve.context import ContextExceeded, fit_chat, fit_reply, with_system_prompt

WORDS = "the capital of france is paris water boils at degrees a cold needs rest and fluids".split()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    sentences = [" ".join(random.Random(i).choices(WORDS, k=12)) for i in range(300)]
    return Tokenizer(train_sentencepiece(sentences, model_type="bpe", vocab_size=400))


def quadratic_rule(tok, messages, *, context, want):
    """The rule as the server had it (pipelines/serve/app.py before the one-pass fit): -> (ids, dropped) or None
    for a refusal."""
    system = messages[:1] if messages[0]["role"] == "system" else []
    rest = messages[len(system):]
    dropped = 0
    while True:
        prompt = tok.encode_chat(system + rest[dropped:], add_generation_prompt=True).ids
        if len(prompt) + want <= context:
            return prompt, dropped
        if dropped >= len(rest) - 1:
            return None
        dropped += 1


def random_conversation(rng: random.Random) -> list[dict]:
    roles = ["system"] if rng.random() < 0.5 else []
    roles += [rng.choice(["user", "assistant", "system"]) for _ in range(rng.randint(0 if roles else 1, 12))]
    return [{"role": role, "content": " ".join(rng.choices(WORDS + ["é", "東京", "<|end|>"], k=rng.randint(0, 30)))}
            for role in roles]


def test_one_pass_equals_the_quadratic_rule_on_random_conversations(tok):
    rng = random.Random(0)
    refused = fitted = 0
    for _ in range(400):
        messages = random_conversation(rng)
        context, want = rng.randint(8, 200), rng.randint(1, 40)
        expected = quadratic_rule(tok, messages, context=context, want=want)
        if expected is None:
            with pytest.raises(ContextExceeded):
                fit_chat(tok, messages, context=context, want=want)
            refused += 1
        else:
            got = fit_chat(tok, messages, context=context, want=want)
            assert (got.ids, got.dropped) == expected, messages
            fitted += got.dropped > 0
    assert refused > 20 and fitted > 50  # both outcomes, and real drops, were exercised


def test_a_megabyte_of_messages_fits_in_one_pass(tok):
    messages = [{"role": "system", "content": "Be brief."}]
    messages += [{"role": ("user", "assistant")[i % 2], "content": ("paris water " * 84)[:1000]} for i in range(998)]
    messages.append({"role": "user", "content": "And tomorrow?"})
    start = time.perf_counter()
    got = fit_chat(tok, messages, context=192, want=16)
    seconds = time.perf_counter() - start
    assert got.dropped == 998 and len(got.ids) + 16 <= 192
    assert seconds < 2, f"{seconds:.2f} s"  # ~0.1 s measured; generous for a shared machine


def test_the_default_system_prompt_goes_first_only_when_there_is_none():
    user = [{"role": "user", "content": "hi"}]
    own = [{"role": "system", "content": "Be brief."}, *user]
    assert with_system_prompt(user, None) == with_system_prompt(user, "") == user  # as evaluated: none
    assert with_system_prompt(user, "Be kind.") == [{"role": "system", "content": "Be kind."}, *user]
    assert with_system_prompt(own, "Be kind.") == own


def test_the_reply_budget_follows_the_generation_settings(tok):
    messages = [{"role": "user", "content": "the capital of france is paris"}] * 3
    alone = len(tok.encode_chat(messages[-1:], add_generation_prompt=True).ids)
    whole = len(tok.encode_chat(messages, add_generation_prompt=True).ids)
    # No max_tokens: room for min_reply_tokens at least, then the default budget cut to what the context leaves.
    fitted, budget = fit_reply(tok, messages, context=whole + 5, max_tokens=None, default_max_tokens=96,
                               min_reply_tokens=16)
    assert fitted.dropped >= 1 and budget == whole + 5 - len(fitted.ids) >= 16
    fitted, budget = fit_reply(tok, messages, context=whole + 100, max_tokens=None, default_max_tokens=96,
                               min_reply_tokens=16)
    assert (fitted.dropped, budget) == (0, 96)
    fitted, budget = fit_reply(tok, messages, context=alone + 8, max_tokens=8, default_max_tokens=96,
                               min_reply_tokens=16)
    assert (fitted.dropped, budget, len(fitted.ids)) == (2, 8, alone)
