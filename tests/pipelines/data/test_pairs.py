"""NSP sentence pairs: negatives from the corpus-wide pool, exact balance, independent of batching.

The unit tests call the tokenizer actor's class in-process on reader-shaped rows (no Ray); the last test reads the
real pair shards built by the session's Ray cluster.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.tokenizer import train_sentencepiece
from pipelines import storage
from pipelines.data.reader import _chunk_row
from pipelines.data.tokenize import SPLITS, TokenizeBatch, doc_key, is_valid_doc, write_negative_pool
from pipelines.errors import CorpusError
from pipelines.text import split_sentences

WORDS = ("river", "stone", "cloud", "lamp", "forest", "copper", "violin", "harbor", "meadow", "signal")
SEQ_LEN = 64


def document(i: int) -> str:
    """A document of 2 to 7 sentences, each naming its document and place, so every sentence is unique."""
    return " ".join(f"Item {i} note {j} mentions {WORDS[(i + j) % 10]} and {WORDS[(3 * i + j) % 10]}."
                    for j in range(2 + i % 6))


DOCS = [document(i) for i in range(40)]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    """The tokenizer and a negative pool written from the same documents (as the pipeline does)."""
    root = tmp_path_factory.mktemp("pairs")
    model = train_sentencepiece([s for d in DOCS for s in split_sentences(d)], model_type="bpe", vocab_size=400)
    storage.write_bytes(str(root / "tokenizer.model"), model)
    write_negative_pool(iter(DOCS), str(root / "negatives.jsonl"))
    return {"tokenizer_path": str(root / "tokenizer.model"), "negatives_path": str(root / "negatives.jsonl")}


@pytest.fixture(scope="module")
def tokenize(paths) -> TokenizeBatch:
    return TokenizeBatch(**paths, fmt="jsonl", field_name="text", shard_format="pairs", seq_len=SEQ_LEN,
                         valid_fraction=0.5, seed=0, on_bad_record="fail")


def rows(docs: list[str]) -> pa.Table:
    """One reader row (a chunk of a jsonl file) holding `docs`."""
    return _chunk_row("corpus.jsonl", 1, "".join(json.dumps({"text": d}) + "\n" for d in docs).encode())


def pairs(tokenize: TokenizeBatch, *batches: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per split: (ids (N, SEQ_LEN), is_next (N,), documents) of the batches' outputs, concatenated."""
    outputs = [tokenize(rows(docs)) for docs in batches]
    return {split: (np.concatenate([o.column(f"{split}_ids")[0].values.to_numpy() for o in outputs])
                    .reshape(-1, SEQ_LEN),
                    np.concatenate([o.column(f"{split}_is_next")[0].values.to_numpy() for o in outputs]),
                    sum(o.column(f"docs_{split}")[0].as_py() for o in outputs))
            for split in SPLITS}


def canonical(ids: np.ndarray, is_next: np.ndarray) -> list[bytes]:
    """The examples (ids and label) in a canonical order."""
    return sorted(map(bytes, np.column_stack([ids, is_next])))


def test_the_pool_holds_every_sentence_by_document(paths):
    lines = [json.loads(line) for line in storage.read_bytes(paths["negatives_path"]).decode().splitlines()]
    assert len(lines) == sum(len(split_sentences(d)) for d in DOCS)
    by_doc = {}
    for line in lines:
        by_doc.setdefault(line["doc"], []).append(line["text"])
    assert by_doc == {doc_key(d): split_sentences(d) for d in DOCS}
    assert [line["doc"] for line in lines] == sorted(line["doc"] for line in lines)  # not arrival order


def test_a_pool_needs_two_documents(tmp_path):
    for docs in ([], [DOCS[3]], [DOCS[3], DOCS[3]]):
        with pytest.raises(CorpusError, match="at least 2 different documents"):
            write_negative_pool(iter(docs), str(tmp_path / "pool.jsonl"))
    assert write_negative_pool(iter(DOCS[2:4]), str(tmp_path / "pool.jsonl")) == 4 + 5


def test_one_document_batch_has_positives_and_negatives(tokenize):
    doc = DOCS[5]  # 7 sentences: 6 pairs
    is_next = np.concatenate([is_next for _, is_next, _ in pairs(tokenize, [doc]).values()])
    assert len(is_next) == 6 and is_next.sum() == 3


def test_both_splits_are_balanced(tokenize):
    for split, (_, is_next, documents) in pairs(tokenize, DOCS).items():
        assert documents > 5, split
        # Each document alternates, so it is off balance by half a pair at most.
        assert abs(is_next.sum() - len(is_next) / 2) <= documents / 2, split


def test_negatives_come_from_other_documents_and_positives_follow(tokenize):
    tok = tokenize.tok
    where = {s: (d, j) for d, doc in enumerate(DOCS) for j, s in enumerate(split_sentences(doc))}
    pool = {s for doc in DOCS for s in split_sentences(doc)}
    negatives = 0
    for ids, is_next, _ in pairs(tokenize, DOCS).values():
        for row, label in zip(ids, is_next):
            first, second = np.flatnonzero(row == tok.sep_id)[:2]
            a, b = tok.decode(row[1:first]), tok.decode(row[first + 1:second])
            d, j = where[a]
            if label:
                assert b == split_sentences(DOCS[d])[j + 1]
            else:
                negatives += 1
                assert b in pool and b not in split_sentences(DOCS[d])
                # ...and from a document of A's own split: no validation text in training examples.
                assert is_valid_doc(DOCS[where[b][0]], 0.5) == is_valid_doc(DOCS[d], 0.5)
    assert negatives > 20


def test_pairs_do_not_depend_on_batching_or_actor(tokenize, paths):
    whole = pairs(tokenize, DOCS)
    in_three = pairs(tokenize, DOCS[:7], DOCS[7:25], DOCS[25:])
    another_actor = TokenizeBatch(**paths, fmt="jsonl", field_name="text", shard_format="pairs", seq_len=SEQ_LEN,
                                  valid_fraction=0.5, seed=0, on_bad_record="fail")
    reordered = pairs(another_actor, DOCS[25:], DOCS[:25])
    for split in SPLITS:
        np.testing.assert_array_equal(in_three[split][0], whole[split][0])
        np.testing.assert_array_equal(in_three[split][1], whole[split][1])
        assert canonical(*reordered[split][:2]) == canonical(*whole[split][:2])


def test_pair_shards_are_balanced_in_both_splits(pairs_manifest):
    for split in SPLITS:
        files = pairs_manifest["splits"][split]["files"]
        is_next = pa.concat_tables([pq.read_table(f, columns=["is_next"]) for f in files]).column("is_next")
        mean = float(np.mean(is_next.to_numpy()))
        assert 0.45 <= mean <= 0.55, (split, mean)
