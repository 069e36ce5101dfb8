"""Sentencepiece tokenizer: training from an iterator of sentences, encode/decode, special tokens, chat template.

Special tokens have fixed ids in every tokenizer we train, so models and data shards agree on them:
pad=0, unk=1, bos=2, eos=3, then the control symbols <mask>, <cls>, <sep> (MLM / NSP) and the chat markers
<|system|>, <|user|>, <|assistant|>, <|end|>. Control symbols are never produced by encoding user text, so a user
cannot forge a chat turn by typing "<|assistant|>"; the chat template inserts their ids directly.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Iterable, Sequence

import sentencepiece as spm

PAD, UNK, BOS, EOS = 0, 1, 2, 3
CONTROL_SYMBOLS = ("<mask>", "<cls>", "<sep>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
ROLES = ("system", "user", "assistant")
MODEL_TYPES = ("bpe", "unigram", "char")


def train_sentencepiece(
    sentences: Iterable[str],
    *,
    model_type: str,
    vocab_size: int,
    character_coverage: float = 1.0,
    input_sentence_size: int = 0,
    num_threads: int = 1,
    seed: int = 0,
) -> bytes:
    """Train a sentencepiece model from `sentences` (streamed, no temp files); returns the serialized model."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"tokenizer model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        # The size is an upper bound: a small corpus (or a char model's alphabet) may give fewer pieces.
        hard_vocab_limit=False,
        character_coverage=character_coverage,
        input_sentence_size=input_sentence_size,
        shuffle_input_sentence=True,
        byte_fallback=model_type != "char",
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        control_symbols=list(CONTROL_SYMBOLS),
        num_threads=num_threads,
        minloglevel=2,
    )
    return model.getvalue()


@dataclass(frozen=True)
class ChatEncoding:
    """Token ids of a rendered conversation and, per token, whether it is assistant output (trained on)."""

    ids: list[int]
    assistant_mask: list[int]


class Tokenizer:
    """A loaded sentencepiece model with the project's special tokens and chat template."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.sha256 = hashlib.sha256(model_proto).hexdigest()
        ids = {sym: self.sp.piece_to_id(sym) for sym in CONTROL_SYMBOLS}
        missing = [sym for sym, i in ids.items() if i == self.sp.unk_id()]
        if missing or self.sp.pad_id() != PAD or self.sp.eos_id() != EOS:
            raise ValueError(f"not a tokenizer of this project: special tokens missing or moved ({missing})")
        self.mask_id, self.cls_id, self.sep_id = ids["<mask>"], ids["<cls>"], ids["<sep>"]
        self.role_ids = {role: ids[f"<|{role}|>"] for role in ROLES}
        self.end_id = ids["<|end|>"]

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        with open(path, "rb") as f:
            return cls(f.read())

    pad_id, unk_id, bos_id, eos_id = PAD, UNK, BOS, EOS

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def first_ordinary_id(self) -> int:
        """The first piece after the special tokens and the byte-fallback pieces `<0x00>`..`<0xFF>` (a `char`
        model has none): ids from here up are the pieces learned from text, e.g. for MLM's random replacements."""
        sp, i = self.sp, 0
        while i < self.vocab_size and (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)):
            i += 1
        return i

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The one stop rule of generated text — in evaluation, serving, RLHF rollouts and reward scoring alike: it
        ends at <|end|> (the end of a chat turn) or at eos (the end of a document, which is how a pre-trained model
        that never saw a chat turn ends one)."""
        return (self.end_id, EOS)

    def finished(self, generated: Sequence[int]) -> bool:
        """Whether `generated` ended by the stop rule (its last token is a stop id), not by running into a token
        cap: an unfinished reply."""
        return bool(generated) and generated[-1] in self.stop_ids

    @property
    def special_ids(self) -> dict[str, int]:
        return {"pad": PAD, "unk": UNK, "bos": BOS, "eos": EOS, "mask": self.mask_id, "cls": self.cls_id,
                "sep": self.sep_id, "end": self.end_id, **self.role_ids}

    def encode(self, text: str | Sequence[str], *, bos: bool = False, eos: bool = False):
        """Text -> ids; a list of texts is encoded in one batched call (much faster than a loop)."""
        return self.sp.encode(text if isinstance(text, str) else list(text), add_bos=bos, add_eos=eos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def encode_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> ChatEncoding:
        """Render `[{"role", "content"}, ...]` as `<bos><|role|>content<|end|>...`.

        The assistant mask covers each assistant message's content and its <|end|> (what the model must learn
        to say, and to stop); with `add_generation_prompt` the ids end in `<|assistant|>` for the model to answer.
        """
        ids, mask = [BOS], [0]
        for message in messages:
            role = message["role"]
            if role not in self.role_ids:
                raise ValueError(f"chat role must be one of {ROLES}, got {role!r}")
            content = self.sp.encode(message["content"]) + [self.end_id]
            ids += [self.role_ids[role]] + content
            mask += [0] + [int(role == "assistant")] * len(content)
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
            mask.append(0)
        return ChatEncoding(ids, mask)

    def render_chat(self, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> str:
        """The chat template as readable text (for logs and docs; models see `encode_chat`'s ids)."""
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")
