"""Sentencepiece tokenizer: training from an iterator of sentences, encode/decode, special tokens, chat template.

Every tokenizer we train has the same special ids: pad=0, unk=1, bos=2, eos=3, then the control symbols <mask>,
<cls>, <sep> (MLM / NSP) and the chat markers <|system|>, <|user|>, <|assistant|>, <|end|>. A `Tokenizer` reads
the ids from the model itself (unk/bos/eos/pad from its trainer spec, the markers by piece name), so a foreign
sentencepiece model works too once `add_special_tokens` has appended what it lacks — the chat markers and a pad
piece (Llama-2's has unk=0, bos=1, eos=2 and neither) — as new control pieces after its vocabulary; the MLM
symbols only encoders need. Control symbols are never produced by encoding user text, so a user cannot forge a
chat turn by typing "<|assistant|>"; the chat template inserts their ids directly.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Iterable, Sequence

import sentencepiece as spm

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # in the tokenizers this project trains
MLM_SYMBOLS = ("<mask>", "<cls>", "<sep>")  # encoders only (MLM, NSP, classification)
CHAT_SYMBOLS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CONTROL_SYMBOLS = MLM_SYMBOLS + CHAT_SYMBOLS
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


def _control_ids(sp: spm.SentencePieceProcessor, symbols: Sequence[str]) -> dict[str, int | None]:
    """Each symbol's id where the model has it as a control piece, else None; a symbol that is an ordinary or
    user-defined piece raises ValueError: encoding user text could produce it, and a user could forge a turn."""
    ids = {}
    for sym in symbols:
        i = sp.piece_to_id(sym)
        found = sp.id_to_piece(i) == sym
        if found and not sp.is_control(i):
            raise ValueError(f"the piece {sym} (id {i}) is not a control symbol: typing it in text would produce it")
        ids[sym] = i if found else None
    return ids


def _model_proto(model_proto: bytes):
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf; only to read or extend a model

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    return proto


def missing_special_tokens(model_proto: bytes) -> list[str]:
    """The pieces a decoder needs that the model lacks: a pad piece (named as its trainer spec says) and the chat
    markers. bos and eos are not added: a model without them was not trained to start or end a text."""
    return _missing(spm.SentencePieceProcessor(model_proto=model_proto), model_proto)


def _missing(sp: spm.SentencePieceProcessor, model_proto: bytes) -> list[str]:
    chat = [sym for sym, i in _control_ids(sp, CHAT_SYMBOLS).items() if i is None]
    if sp.pad_id() >= 0 and sp.pad_id() != sp.eos_id():
        return chat
    # No pad, or pad is eos: a new piece, named as the trainer spec says unless that name is taken.
    for name in (_model_proto(model_proto).trainer_spec.pad_piece, "<pad>"):
        if name and sp.id_to_piece(sp.piece_to_id(name)) != name:
            return [name, *chat]
    raise ValueError("the sentencepiece model has no pad id and its pad piece names are taken by other pieces")


def add_special_tokens(model_proto: bytes) -> tuple[bytes, dict[str, int]]:
    """(the model with its missing pad and chat markers appended as control pieces after its vocabulary,
    {piece: new id}). A model that lacks none comes back unchanged (same bytes, same sha256). Existing ids never
    move, so every old id keeps its meaning for a model trained with them; the new pad is its own id, never eos,
    because padding trims count pad ids."""
    missing = missing_special_tokens(model_proto)
    if not missing:
        return model_proto, {}
    proto = _model_proto(model_proto)
    added = {}
    for piece in missing:
        added[piece] = len(proto.pieces)
        proto.pieces.add(piece=piece, type=proto.SentencePiece.CONTROL, score=0.0)
    if missing[0] not in CHAT_SYMBOLS:  # the pad piece comes first
        proto.trainer_spec.pad_piece, proto.trainer_spec.pad_id = missing[0], added[missing[0]]
    return proto.SerializeToString(), added


@dataclass(frozen=True)
class ChatEncoding:
    """Token ids of a rendered conversation and, per token, whether it is assistant output (trained on)."""

    ids: list[int]
    assistant_mask: list[int]


class Tokenizer:
    """A loaded sentencepiece model, its special ids (read from the model) and the chat template."""

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.sha256 = hashlib.sha256(model_proto).hexdigest()
        self.unk_id, self.bos_id, self.eos_id, self.pad_id = sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise ValueError("the sentencepiece model has no bos or eos piece")
        missing = _missing(sp, model_proto)
        if missing:
            raise ValueError(f"the sentencepiece model lacks {', '.join(missing)} (add_special_tokens appends them)")
        ids = _control_ids(sp, CONTROL_SYMBOLS)
        # None where absent: a foreign decoder's tokenizer has no MLM symbols (prepare_shards refuses encoder data)
        self.mask_id, self.cls_id, self.sep_id = ids["<mask>"], ids["<cls>"], ids["<sep>"]
        self.role_ids = {role: ids[f"<|{role}|>"] for role in ROLES}
        self.end_id = ids["<|end|>"]

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        with open(path, "rb") as f:
            return cls(f.read())

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
        return (self.end_id, self.eos_id)

    def finished(self, generated: Sequence[int]) -> bool:
        """Whether `generated` ended by the stop rule (its last token is a stop id), not by running into a token
        cap: an unfinished reply."""
        return bool(generated) and generated[-1] in self.stop_ids

    @property
    def special_ids(self) -> dict[str, int]:
        mlm = {"mask": self.mask_id, "cls": self.cls_id, "sep": self.sep_id}
        return {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id,
                **{k: v for k, v in mlm.items() if v is not None}, "end": self.end_id, **self.role_ids}

    @property
    def has_mlm_symbols(self) -> bool:
        """Whether the encoder objectives' <mask>, <cls>, <sep> exist (every tokenizer this project trains)."""
        return None not in (self.mask_id, self.cls_id, self.sep_id)

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
        ids, mask = [self.bos_id], [0]
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
