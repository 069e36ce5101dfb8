"""The tokenizer actor of the shard pipeline: one batch of raw corpus rows in, token arrays per split out.

Each actor loads the sentencepiece model once, parses its batch (pipelines/reader.py), assigns every document to
train or validation by a hash of its text, encodes all documents of the batch in one batched call and returns ONE
row per batch holding flat Arrow arrays — the driver (pipelines/shards.py) packs and writes them. Few, large rows
are what keeps Ray Data's per-row overhead out of the tokenizer's way.

Layouts (`shard_format`):
- `clm`:   per split, all documents as `<bos> doc <eos>` concatenated, in order (packed into blocks later).
- `pairs`: per split, sentence-pair examples `<cls> A <sep> B <sep>` padded to `seq_len`, segment ids 0/1, and
           `is_next` (1: B is the sentence after A; 0: B is a random sentence of another document, 50% each).
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pyarrow as pa

from models.tokenizer import Tokenizer
from pipelines.reader import parse_rows
from pipelines.text import split_sentences

SPLITS = ("train", "valid")
MAX_BAD_REPORTED = 20


def is_valid_doc(text: str, valid_fraction: float) -> bool:
    """Deterministic split by content: the same document always lands in the same split, wherever it lives."""
    return zlib.crc32(text.encode()) % 1_000_000 < valid_fraction * 1_000_000


def _one_list(values: pa.Array) -> pa.Array:
    """A one-row list column holding `values` (no copy)."""
    return pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values)


class TokenizeBatch:
    """Callable class for `Dataset.map_batches(..., compute=ActorPoolStrategy(...))`."""

    def __init__(self, *, tokenizer_model: bytes, fmt: str, field_name: str, shard_format: str, seq_len: int,
                 valid_fraction: float, seed: int, on_bad_record: str):
        self.tok = Tokenizer(tokenizer_model)
        self.fmt, self.field_name, self.on_bad_record = fmt, field_name, on_bad_record
        self.shard_format, self.seq_len = shard_format, seq_len
        self.valid_fraction, self.seed = valid_fraction, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        parsed = parse_rows(batch, fmt=self.fmt, field_name=self.field_name, on_bad_record=self.on_bad_record)
        by_split = {s: [] for s in SPLITS}
        for text in parsed.texts:
            by_split["valid" if is_valid_doc(text, self.valid_fraction) else "train"].append(text)
        row = {"docs_" + s: [len(by_split[s])] for s in SPLITS}
        row |= {"bytes": [parsed.bytes], "n_bad": [len(parsed.bad)], "bad": [parsed.bad[:MAX_BAD_REPORTED]]}
        for split, docs in by_split.items():
            if self.shard_format == "clm":
                row[f"{split}_ids"] = _one_list(self.pack_documents(docs))
            else:
                ids, types, is_next = self.sentence_pairs(docs)
                row |= {f"{split}_ids": _one_list(ids), f"{split}_types": _one_list(types),
                        f"{split}_is_next": _one_list(is_next)}
        return pa.table(row)

    def pack_documents(self, docs: list[str]) -> pa.Array:
        encoded = self.tok.encode(docs, bos=True, eos=True)
        total = sum(map(len, encoded))
        return pa.array(np.fromiter(itertools.chain.from_iterable(encoded), np.int32, count=total))

    def sentence_pairs(self, docs: list[str]) -> tuple[pa.Array, pa.Array, pa.Array]:
        sentences = [split_sentences(d) for d in docs]
        flat = self.tok.encode([s for doc in sentences for s in doc])
        starts = np.cumsum([0] + [len(doc) for doc in sentences])
        seed_material = zlib.crc32("\n".join(docs[:1]).encode())
        rng = np.random.default_rng([self.seed, seed_material])
        ids, types, labels = [], [], []
        for d in range(len(docs)):
            for i in range(starts[d], starts[d + 1] - 1):
                b, is_next = i + 1, 1
                if rng.random() < 0.5 and len(docs) > 1:
                    other = (d + 1 + int(rng.integers(len(docs) - 1))) % len(docs)
                    if starts[other + 1] > starts[other]:
                        b, is_next = int(rng.integers(starts[other], starts[other + 1])), 0
                example, segment = self.pair(flat[i], flat[b])
                ids.append(example)
                types.append(segment)
                labels.append(is_next)
        n = len(labels)
        return (pa.array(np.asarray(ids, np.int32).reshape(n * self.seq_len)),
                pa.array(np.asarray(types, np.int8).reshape(n * self.seq_len)),
                pa.array(np.asarray(labels, np.int8)))

    def pair(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """`<cls> a <sep> b <sep>` padded to seq_len; the longer segment is cut first when too long."""
        a, b = list(a), list(b)
        while len(a) + len(b) > self.seq_len - 3:
            (a if len(a) >= len(b) else b).pop()
        tok = self.tok
        ids = [tok.cls_id, *a, tok.sep_id, *b, tok.sep_id]
        segment = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        pad = self.seq_len - len(ids)
        return ids + [tok.pad_id] * pad, segment + [0] * pad
