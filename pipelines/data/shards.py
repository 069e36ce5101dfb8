"""Token shards on disk: the driver-side writer that packs the tokenizer actors' output, and the manifest.

Causal-LM packing is sequential by nature (a block takes the tail of one batch and the head of the next), so the
driver consumes the tokenized stream in order and packs it into blocks of `seq_len + 1` tokens: every token of the
corpus lands in exactly one block, in corpus order, with no padding; only the final partial block of each split
(fewer than `seq_len + 1` tokens) is dropped and counted in the manifest. Packing is a numpy reshape and writing is
Arrow, so the driver keeps up with many tokenizer actors; tokenizing is where the time goes.

A shard directory holds `train/shard-NNNNN.parquet`, `valid/shard-NNNNN.parquet` and `manifest.json` (written
last: a directory without it is an unfinished build and is rebuilt).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage

MANIFEST = "manifest.json"


class SplitWriter:
    """Buffers examples of one split and writes them as parquet files of `rows_per_shard` rows."""

    def __init__(self, out_dir: str, split: str, *, rows_per_shard: int):
        self.dir = storage.join(out_dir, split)
        self.rows_per_shard = rows_per_shard
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.files: list[str] = []
        self.examples = 0
        self.tokens = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending).combine_chunks()
        head, rest = table.slice(0, rows), table.slice(rows)
        path = storage.join(self.dir, f"shard-{len(self.files):05d}.parquet")
        fs, p = storage.filesystem(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        pq.write_table(head, p, filesystem=fs, row_group_size=min(rows, 4096))
        self.files.append(path)
        self.examples += head.num_rows
        self.tokens += int(np.count_nonzero(head.column("input_ids").combine_chunks().flatten().to_numpy()))
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows


class ClmPacker:
    """Packs a stream of token arrays into rows of exactly `block` tokens (seq_len + 1)."""

    def __init__(self, writer: SplitWriter, block: int):
        self.writer, self.block = writer, block
        self.carry = np.zeros(0, np.int32)

    def add(self, ids: np.ndarray) -> None:
        stream = np.concatenate([self.carry, ids]) if len(self.carry) else ids
        full = len(stream) // self.block * self.block
        if full:
            blocks = pa.FixedSizeListArray.from_arrays(pa.array(stream[:full]), self.block)
            self.writer.add(pa.table({"input_ids": blocks}))
        self.carry = stream[full:].copy()

    def close(self) -> int:
        """Flush; returns how many tail tokens did not fill a block."""
        self.writer.close()
        return len(self.carry)


def pairs_table(ids: pa.Array, types: pa.Array, is_next: pa.Array, seq_len: int) -> pa.Table:
    return pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(ids, seq_len),
        "token_type_ids": pa.FixedSizeListArray.from_arrays(types, seq_len),
        "is_next": is_next,
    })


def read_manifest(shard_dir: str) -> dict | None:
    path = storage.join(shard_dir, MANIFEST)
    return storage.read_json(path) if storage.exists(path) else None
