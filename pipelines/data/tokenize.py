"""The tokenizer actor of the shard pipeline: one batch of raw corpus rows in, token arrays per split out.

Each actor loads the sentencepiece model once (from shared storage), parses its batch (pipelines/data/reader.py),
assigns every document to train or validation by a hash of its text, encodes all documents of the batch in one
batched call and returns ONE row per batch holding flat Arrow arrays — the driver (pipelines/data/shards.py) packs
and writes them. Few, large rows are what keeps Ray Data's per-row overhead out of the tokenizer's way.

Layouts (`shard_format`):
- `clm`:   per split, all documents as `<bos> doc <eos>` concatenated, in order (packed into blocks later).
- `sft`:   fine-tuning records (`record` chat or summarize, pipelines/data/records.py) rendered with the chat
           template: per split, one example per record, `seq_len + 1` token ids padded with <pad> and a loss mask
           that is 1 on assistant tokens. Padded, not packed: an example is one conversation, so attention never
           crosses into another one and no conversation is ever split across examples (packing would need a
           block-diagonal attention mask for the same guarantee; the loss trims each batch to its longest example,
           so padding costs little compute). A record longer than `seq_len + 1` tokens is dropped or truncated
           (`too_long`) and counted.
- `classify`: labelled records: `<cls> text <sep>` padded to `seq_len`, and the label's index in `labels`.
- `preference`: rankings (`record` ranking): per record `max_responses` sequences of `seq_len` tokens, response k
           rendered as the chat exchange (prompt, response k) and padded, with its assistant mask, flattened into one
           row, and `num_responses` (columns past it are padding). A ranking with more responses keeps its best
           `max_responses` (counted as truncated); one whose exchange does not fit `seq_len` is dropped (cutting a
           response would change what is ranked).
- `pairs`: per split, sentence-pair examples `<cls> A <sep> B <sep>` padded to `seq_len`, segment ids 0/1, and
           `is_next` (1: B is the sentence after A; 0: B is a sentence of another document). The k-th pair of a
           document is a negative when k + crc32(document) is even, so every document alternates and both splits
           are balanced however small; a negative's B is drawn, by a hash of (seed, document, k), from a pool of
           sentences taken from the start of the whole corpus (`write_negative_pool`), not from the batch, which
           is one chunk of one file — and only from pool documents of A's own split, so no validation sentence
           reaches a training example or the reverse. The pairs depend on neither batching nor actor.
"""

from __future__ import annotations

import itertools
import json
import re
import logging
import zlib
from collections import Counter
from typing import Iterable

import numpy as np
import pyarrow as pa

from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.data.reader import parse_rows
from pipelines.data.records import (check_chat, check_labeled, check_ranking, check_summarize, classify_encoding,
                                    pad, response_encoding, summarize_messages)
from pipelines.errors import BadRecordError, CorpusError
from pipelines.text import split_sentences

log = logging.getLogger(__name__)
SPLITS = ("train", "valid")
MAX_BAD_REPORTED = 20


def doc_key(text: str) -> int:
    """A document's identity by content (crc32 of its text): the same wherever and in whichever batch it is read."""
    return zlib.crc32(text.encode())


def is_valid_doc(text: str, valid_fraction: float) -> bool:
    """Deterministic split by content: the same document always lands in the same split, wherever it lives."""
    return is_valid_key(doc_key(text), valid_fraction)


def is_valid_key(key: int, valid_fraction: float) -> bool:
    return key % 1_000_000 < valid_fraction * 1_000_000


def write_negative_pool(texts: Iterable[str], path: str) -> int:
    """Write the NSP negative pool — every sentence of `texts` as a jsonl line `{"doc": doc_key, "text": ...}` —
    to `path` (local or URI); returns the number of sentences. Raises CorpusError when the sentences come from
    fewer than two documents: a negative must come from another document than its A.

    Lines are ordered by document key (sentences in document order), so the pool, and the negatives drawn from it
    by index, do not depend on the order in which the documents arrived.
    """
    pool, read = [], 0
    for text in texts:
        read += 1
        key = doc_key(text)
        pool += [(key, sentence) for sentence in split_sentences(text)]
    docs = len({key for key, _ in pool})
    if docs < 2:
        raise CorpusError(f"NSP negatives need sentences from at least 2 different documents; the first {read} "
                          f"documents of the corpus give {docs} (data.nsp_negative_docs sets how many are read)")
    pool.sort(key=lambda entry: entry[0])  # stable: a document's sentences keep their order
    storage.write_bytes(path, "".join(json.dumps({"doc": key, "text": s}) + "\n" for key, s in pool).encode())
    return len(pool)


def _line_number(report: str) -> int:
    """The line of a `file:line: reason` report (0 when it names no line)."""
    found = re.search(r":(\d+): ", report)
    return int(found.group(1)) if found else 0


def _one_list(values: pa.Array) -> pa.Array:
    """A one-row list column holding `values` (no copy)."""
    return pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values)


def domain_of(record) -> str:
    """A record's "domain" (the built-in data's general / medical / unsafe), or "all" for records without one: what
    drops are counted by."""
    domain = record.get("domain") if isinstance(record, dict) else None
    return domain if isinstance(domain, str) and domain else "all"



def warn_dropped_domains(domains: dict, seq_len: int, share: float) -> list[str]:
    """A loud warning for each split and domain that lost more than `share` of its records to data.seq_len:
    {split: {domain: [dropped, seen]}} -> the warning lines (also logged)."""
    lines = [f"data.seq_len={seq_len} drops {lost} of {seen} {domain} records ({lost / seen:.0%}) of the {split} "
             f"split: the stage never learns from them; raise data.seq_len"
             for split, by_domain in domains.items() for domain, (lost, seen) in sorted(by_domain.items())
             if seen and lost / seen > share]
    for line in lines:
        log.warning("WARNING: %s", line)
    return lines

class TokenizeBatch:
    """Callable class for `Dataset.map_batches(..., compute=ActorPoolStrategy(...))`.

    `negatives_path` is the pool written by `write_negative_pool` (None for `clm`); it is read and encoded once.
    """

    def __init__(self, *, tokenizer_path: str, negatives_path: str | None, fmt: str, field_name: str,
                 shard_format: str, seq_len: int, valid_fraction: float, seed: int, on_bad_record: str,
                 record: str = "text", labels: list[str] | None = None, label_field: str = "label",
                 too_long: str = "drop", max_responses: int = 4):
        self.tok = Tokenizer(storage.read_bytes(tokenizer_path))
        self.record, self.labels, self.label_field, self.too_long = record, list(labels or []), label_field, too_long
        self.fmt, self.field_name, self.on_bad_record = fmt, field_name, on_bad_record
        self.shard_format, self.seq_len, self.max_responses = shard_format, seq_len, max_responses
        self.valid_fraction, self.seed = valid_fraction, seed
        if shard_format == "pairs":
            pool = [json.loads(line) for line in storage.read_bytes(negatives_path).decode().split("\n") if line]
            ids = self.tok.encode([entry["text"] for entry in pool])
            # Per split: (document key of each pool sentence, its token ids).
            self.pool = {split: ([e["doc"] for e in pool if self.split_of(e["doc"]) == split],
                                 [i for e, i in zip(pool, ids) if self.split_of(e["doc"]) == split])
                         for split in SPLITS}
            self.pool_documents = {split: set(docs) for split, (docs, _) in self.pool.items()}

    def split_of(self, key: int) -> str:
        return "valid" if is_valid_key(key, self.valid_fraction) else "train"

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.record != "text":
            return self.records(batch)
        # Bad records are reported, never raised here: with on_bad_record=fail the driver raises on the first one
        # after closing the stream (an error raised inside Ray Data keeps this actor pool alive for as long as
        # anything holds the error; see pipelines/data/build.py).
        parsed = parse_rows(batch, fmt=self.fmt, field_name=self.field_name, on_bad_record="skip")
        parsed.bad.sort(key=_line_number)
        by_split = {s: [] for s in SPLITS}
        for text in parsed.texts:
            by_split[self.split_of(doc_key(text))].append(text)
        row = {"docs_" + s: [len(by_split[s])] for s in SPLITS}
        row |= {"bytes": [parsed.bytes], "n_bad": [len(parsed.bad)], "bad": [parsed.bad[:MAX_BAD_REPORTED]]}
        for split, docs in by_split.items():
            if self.shard_format == "clm":
                row[f"{split}_ids"] = _one_list(self.pack_documents(docs))
            else:
                ids, types, is_next = self.sentence_pairs(docs, split)
                row |= {f"{split}_ids": _one_list(ids), f"{split}_types": _one_list(types),
                        f"{split}_is_next": _one_list(is_next)}
        return pa.table(row)

    def pack_documents(self, docs: list[str]) -> pa.Array:
        encoded = self.tok.encode(docs, bos=True, eos=True)
        total = sum(map(len, encoded))
        return pa.array(np.fromiter(itertools.chain.from_iterable(encoded), np.int32, count=total))

    def sentence_pairs(self, docs: list[str], split: str) -> tuple[pa.Array, pa.Array, pa.Array]:
        """(ids, segment ids, is_next) of every consecutive-sentence pair of `docs` (all of `split`), flat, in
        document order."""
        sentences = [split_sentences(d) for d in docs]
        flat = self.tok.encode([s for doc in sentences for s in doc])
        ids, types, labels = [], [], []
        start = 0
        for doc, doc_sentences in zip(docs, sentences):
            key = doc_key(doc)
            for k in range(len(doc_sentences) - 1):
                is_next = (k + key) % 2
                b = flat[start + k + 1] if is_next else self.negative(key, k, split)
                example, segment = self.pair(flat[start + k], b)
                ids.append(example)
                types.append(segment)
                labels.append(is_next)
            start += len(doc_sentences)
        n = len(labels)
        return (pa.array(np.asarray(ids, np.int32).reshape(n * self.seq_len)),
                pa.array(np.asarray(types, np.int8).reshape(n * self.seq_len)),
                pa.array(np.asarray(labels, np.int8)))

    def negative(self, key: int, k: int, split: str) -> list[int]:
        """Segment B of document `key`'s k-th pair when it is a negative: a pool sentence of another document of
        the same split, chosen by a hash of (seed, key, k, attempt) — cheap, and the same on every actor."""
        docs, ids = self.pool[split]
        distinct = self.pool_documents[split]
        if len(distinct) - (key in distinct) == 0:
            raise CorpusError(f"NSP negatives for the {split} split need pool sentences from another {split} "
                              f"document: the first data.nsp_negative_docs documents hold {len(distinct)}; raise "
                              f"data.nsp_negative_docs" + (" or data.valid_fraction" if split == "valid" else ""))
        for attempt in itertools.count():
            j = zlib.crc32(f"{self.seed}:{key}:{k}:{attempt}".encode()) % len(docs)
            if docs[j] != key:
                return ids[j]

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

    # Fine-tuning records ------------------------------------------------------------------------------------------

    def records(self, batch: pa.Table) -> pa.Table:
        """One row per batch: per split the examples of `sft` or `classify` shards (flat), and the counts."""
        # Unparsable lines and unusable records are gathered together, so that with on_bad_record=fail the error
        # is the first bad line of the chunk, whichever kind it is.
        parsed = parse_rows(batch, fmt=self.fmt, field_name=self.field_name, on_bad_record="skip",
                            whole_records=True)
        bad = list(parsed.bad)
        by_split = {s: [] for s in SPLITS}
        for where, record in parsed.records:
            reason = self.check(record)
            if reason:
                bad.append(f"{where}: {reason}")
                continue
            key = doc_key(json.dumps(record, sort_keys=True, ensure_ascii=False))
            by_split[self.split_of(key)].append(record)
        bad.sort(key=_line_number)  # the first is what on_bad_record=fail reports (the driver raises it)
        row = {"docs_" + s: [len(by_split[s])] for s in SPLITS}
        row |= {"bytes": [parsed.bytes], "n_bad": [len(bad)], "bad": [bad[:MAX_BAD_REPORTED]]}
        for split, records in by_split.items():
            dropped: Counter = Counter()
            if self.shard_format == "sft":
                ids, mask, truncated, dropped = self.chat_examples(records)
                row |= {f"{split}_ids": _one_list(ids), f"{split}_mask": _one_list(mask),
                        f"{split}_truncated": [truncated]}
            elif self.shard_format == "preference":
                ids, mask, counts, truncated, dropped = self.ranking_examples(records)
                row |= {f"{split}_ids": _one_list(ids), f"{split}_mask": _one_list(mask),
                        f"{split}_n": _one_list(counts), f"{split}_truncated": [truncated]}
            else:
                ids, labels, truncated = self.labeled_examples(records)
                row |= {f"{split}_ids": _one_list(ids), f"{split}_label": _one_list(labels),
                        f"{split}_truncated": [truncated]}
            by_domain = Counter(map(domain_of, records))
            row |= {f"{split}_dropped": [sum(dropped.values())],
                    f"{split}_domains": [json.dumps({d: [dropped[d], n] for d, n in sorted(by_domain.items())})]}
        return pa.table(row)

    def check(self, record) -> str | None:
        if self.record == "chat":
            return check_chat(record)
        if self.record == "summarize":
            return check_summarize(record)
        if self.record == "ranking":
            return check_ranking(record)
        return check_labeled(record, self.labels, self.field_name, self.label_field)

    def chat_examples(self, records: list) -> tuple[pa.Array, pa.Array, int, int]:
        """(ids, loss mask, truncated, dropped per domain): each record one example of seq_len + 1 tokens."""
        width = self.seq_len + 1
        ids, masks, truncated, dropped = [], [], 0, Counter()
        for record in records:
            cut = False
            if self.record == "chat":
                encoded = self.tok.encode_chat(record["messages"])
            else:
                encoded, cut = self.summarize_encoding(record, width)
            example, mask = encoded.ids, encoded.assistant_mask
            if len(example) > width:
                if self.too_long == "drop" or not any(mask[:width]) or self.record == "summarize":
                    # truncating would leave no assistant token (or no whole summary) to learn from
                    dropped[domain_of(record)] += 1
                    continue
                example, mask = example[:width], mask[:width]
                cut = True
            truncated += cut
            ids.append(pad(example, width, self.tok.pad_id))
            masks.append(pad(mask, width, 0))
        n = len(ids)
        return (pa.array(np.asarray(ids, np.int32).reshape(n * width)),
                pa.array(np.asarray(masks, np.int8).reshape(n * width)), truncated, dropped)

    def summarize_encoding(self, record: dict, width: int) -> tuple:
        """The summarize conversation; with too_long=truncate a long document is cut (at a token) until the
        conversation fits, so the summary — what is learned — stays whole."""
        encoded = self.tok.encode_chat(summarize_messages(record["document"], record["summary"]))
        if len(encoded.ids) <= width or self.too_long != "truncate":
            return encoded, False
        document = self.tok.encode(record["document"])
        keep = len(document) - (len(encoded.ids) - width)
        while keep > 0:
            encoded = self.tok.encode_chat(summarize_messages(self.tok.decode(document[:keep]), record["summary"]))
            if len(encoded.ids) <= width:
                return encoded, True
            keep -= len(encoded.ids) - width  # decoding and encoding again may merge pieces differently
        return encoded, True  # the summary alone is too long: dropped by the caller

    def ranking_examples(self, records: list) -> tuple[pa.Array, pa.Array, pa.Array, int, int]:
        """(ids, assistant masks, response counts, truncated, dropped per domain): one row of max_responses x
        seq_len tokens per ranking."""
        K, W = self.max_responses, self.seq_len
        ids, masks, counts, truncated, dropped = [], [], [], 0, Counter()
        for record in records:
            responses = record["responses"][:K]
            encoded = [response_encoding(self.tok, record["prompt"], r) for r in responses]
            if any(len(e.ids) > W for e in encoded):
                dropped[domain_of(record)] += 1
                continue
            truncated += len(record["responses"]) > K
            for e in encoded:
                ids += pad(e.ids, W, self.tok.pad_id)
                masks += pad(e.assistant_mask, W, 0)
            ids += [self.tok.pad_id] * (W * (K - len(encoded)))
            masks += [0] * (W * (K - len(encoded)))
            counts.append(len(encoded))
        return (pa.array(np.asarray(ids, np.int32)), pa.array(np.asarray(masks, np.int8)),
                pa.array(np.asarray(counts, np.int32)), truncated, dropped)

    def labeled_examples(self, records: list) -> tuple[pa.Array, pa.Array, int]:
        """(ids, label indices, truncated): `<cls> text <sep>` padded to seq_len."""
        ids, labels, truncated = [], [], 0
        for record in records:
            example, cut = classify_encoding(self.tok, record[self.field_name], self.seq_len)
            truncated += cut
            ids.append(pad(example, self.seq_len, self.tok.pad_id))
            labels.append(self.labels.index(record[self.label_field]))
        n = len(ids)
        return (pa.array(np.asarray(ids, np.int32).reshape(n * self.seq_len)),
                pa.array(np.asarray(labels, np.int32)), truncated)
