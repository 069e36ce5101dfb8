"""The sentencepiece wrapper: training, round trips, fixed special ids, the chat template."""

from __future__ import annotations

import pytest

from models.tokenizer import CONTROL_SYMBOLS, Tokenizer, train_sentencepiece

SENTENCES = [f"The capital of country {i} is city {i * 7 % 13}. Water boils at {i} degrees." for i in range(400)]


@pytest.fixture(scope="module", params=["bpe", "unigram", "char"])
def tokenizer(request) -> Tokenizer:
    return Tokenizer(train_sentencepiece(SENTENCES, model_type=request.param, vocab_size=400))


def test_round_trip_and_batched_encode(tokenizer):
    text = "The capital of country 12 is city 5. Water boils at 12 degrees."
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode([text, text]) == [ids, ids]
    assert tokenizer.encode(text, bos=True, eos=True) == [tokenizer.bos_id, *ids, tokenizer.eos_id]


def test_special_ids_are_fixed_and_not_forgeable(tokenizer):
    assert tokenizer.special_ids == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "mask": 4, "cls": 5, "sep": 6,
                                     "system": 7, "user": 8, "assistant": 9, "end": 10}
    assert len(CONTROL_SYMBOLS) == 7
    # Typing a role marker is just text: it never becomes the control token.
    assert tokenizer.role_ids["assistant"] not in tokenizer.encode("<|assistant|> hi")


def test_chat_template_masks_only_assistant_turns(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Water boils at"},
                {"role": "assistant", "content": "100 degrees."}]
    enc = tokenizer.encode_chat(messages)
    assert enc.ids[0] == tokenizer.bos_id and len(enc.ids) == len(enc.assistant_mask)
    answer = tokenizer.encode("100 degrees.") + [tokenizer.end_id]
    start = enc.ids.index(tokenizer.role_ids["assistant"]) + 1
    assert enc.ids[start:] == answer
    assert enc.assistant_mask == [0] * start + [1] * len(answer)
    prompt = tokenizer.encode_chat(messages[:2], add_generation_prompt=True)
    assert prompt.ids[-1] == tokenizer.role_ids["assistant"] and sum(prompt.assistant_mask) == 0
    assert tokenizer.render_chat(messages[1:2], add_generation_prompt=True) == \
        "<|user|>Water boils at<|end|><|assistant|>"
    with pytest.raises(ValueError, match="chat role must be one of"):
        tokenizer.encode_chat([{"role": "robot", "content": "x"}])


def test_unknown_model_type_and_foreign_model():
    with pytest.raises(ValueError, match="model_type must be one of"):
        train_sentencepiece(SENTENCES, model_type="wordpiece", vocab_size=100)
    with pytest.raises(Exception):
        Tokenizer(b"not a model")


def test_first_ordinary_id_skips_special_and_byte_pieces(tokenizer, request):
    sp, first = tokenizer.sp, tokenizer.first_ordinary_id
    if request.node.callspec.params["tokenizer"] == "char":  # no byte fallback: right after the specials
        assert first == len(tokenizer.special_ids) == 11
    else:  # the 256 byte-fallback pieces <0x00>..<0xFF> follow the 11 specials
        assert first == 11 + 256 and sp.id_to_piece(first - 1) == "<0xFF>"
    assert all(sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) for i in range(first))
    assert not any(sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) for i in range(first, tokenizer.vocab_size))
