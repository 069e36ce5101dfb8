"""Read a corpus with Ray Data: text, jsonl or parquet files, local or on any pyarrow filesystem (s3://, gs://).

Text and jsonl files are streamed in chunks of whole lines (`LineChunks`): one Ray row per few MB, so Ray's
per-row cost is paid once per chunk, not once per line, and every chunk knows its file and first line number —
which is how a bad record is reported as `file:line: what was wrong`. Parquet files are read by Ray's own reader
(column pruned to the text field) after their schemas are checked up front.

`parse_rows` turns one batch of either kind into documents and a list of bad records; it runs inside the
tokenizer actors (pipelines/tokenize.py) and in the tokenizer-training sampler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.datasource import FileBasedDatasource

from pipelines import storage
from pipelines.errors import BadRecordError, ConfigError

FORMATS = {"text": (".txt", ".text"), "jsonl": (".jsonl", ".json"), "parquet": (".parquet",)}


class LineChunks(FileBasedDatasource):
    """Rows of `{path, first_line, data}`: each `data` a run of whole lines of about `chunk_bytes` bytes."""

    def __init__(self, paths: list[str], *, chunk_bytes: int):
        super().__init__(paths)
        self.chunk_bytes = chunk_bytes

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        line, carry = 1, b""
        while True:
            data = f.read(self.chunk_bytes)
            if not data:
                break
            data = carry + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a chunk: keep reading until it ends
                carry = data
                continue
            chunk, carry = data[:cut], data[cut:]
            yield _chunk_row(path, line, chunk)
            line += chunk.count(b"\n")
        if carry:
            yield _chunk_row(path, line, carry)


def _chunk_row(path: str, line: int, data: bytes) -> pa.Table:
    return pa.table({"path": [path], "first_line": pa.array([line], pa.int64()),
                     "data": pa.array([data], pa.large_binary())})


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"data.format must be one of {sorted(FORMATS)}, got {fmt!r}")


def read_corpus(files: list[str], *, fmt: str, field_name: str, chunk_bytes: int, read_tasks: int | None = None,
                read_cpus: float = 1.0, whole_records: bool = False) -> ray.data.Dataset:
    """A lazy Ray Dataset over the corpus files (chunks of lines, or parquet rows of the text column).

    `read_tasks` groups the files into that many read tasks (None: Ray's choice); reading is cheap next to
    tokenizing, and on a small machine each extra task costs more in scheduling than it reads.
    """
    check_format(fmt)
    if fmt == "parquet":
        for path in files:
            fs, p = storage.filesystem(path)
            try:
                schema = pq.read_schema(p, filesystem=fs)
            except pa.ArrowInvalid as e:
                raise BadRecordError(f"{path}: not a parquet file ({e})") from None
            if not whole_records and field_name not in schema.names:
                raise BadRecordError(f"{path}: no column {field_name!r} (columns: {schema.names}); set data.field")
        return ray.data.read_parquet(files, columns=None if whole_records else [field_name], include_paths=True,
                                     num_cpus=read_cpus, override_num_blocks=read_tasks)
    return ray.data.read_datasource(LineChunks(files, chunk_bytes=chunk_bytes), num_cpus=read_cpus,
                                    override_num_blocks=read_tasks)


@dataclass
class Parsed:
    """Documents parsed from a batch, and what was skipped (as `file:line: reason` strings)."""

    texts: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    bytes: int = 0
    # With `whole_records`: (where, record) pairs, `where` being `file:line` (jsonl) or `file` (parquet).
    records: list[tuple[str, object]] = field(default_factory=list)


def parse_rows(batch: pa.Table, *, fmt: str, field_name: str, on_bad_record: str,
               whole_records: bool = False) -> Parsed:
    """Documents (the string `field_name` of each record) or, with `whole_records`, every record as parsed — for
    fine-tuning records whose shape the caller checks (pipelines/data/records.py)."""
    out = Parsed()
    if whole_records and fmt == "parquet":
        paths = batch.column("path").to_pylist()
        out.records = list(zip(paths, batch.drop_columns(["path"]).to_pylist()))
        return out
    if fmt == "parquet":
        paths, values = batch.column("path").to_pylist(), batch.column(field_name).to_pylist()
        for path, value in zip(paths, values):
            if isinstance(value, str) and value.strip():
                out.texts.append(value)
                out.bytes += len(value)
            elif not isinstance(value, str):
                _bad(out, f"{path}: column {field_name!r} holds {type(value).__name__}, expected a string",
                     on_bad_record)
        return out
    for path, first_line, data in zip(batch.column("path").to_pylist(), batch.column("first_line").to_pylist(),
                                      batch.column("data").to_pylist()):
        out.bytes += len(data)
        for lineno, line in _decode_lines(data, path, first_line, out, on_bad_record):
            if not line.strip():
                continue
            if fmt == "text":
                out.texts.append(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                _bad(out, f"{path}:{lineno}: not valid JSON: {e.msg} (column {e.colno})", on_bad_record)
                continue
            if whole_records:
                out.records.append((f"{path}:{lineno}", record))
                continue
            value = record.get(field_name) if isinstance(record, dict) else None
            if not isinstance(value, str):
                what = "no field" if not isinstance(record, dict) or field_name not in record else "a non-string field"
                _bad(out, f"{path}:{lineno}: {what} {field_name!r} (expected a JSON object with a string "
                          f"{field_name!r}; set data.field)", on_bad_record)
            elif value.strip():
                out.texts.append(value)
    return out


def _decode_lines(data: bytes, path: str, first_line: int, out: Parsed, on_bad_record: str):
    """(line number, text) for each line; lines that are not UTF-8 are reported as bad records."""
    try:
        yield from enumerate(data.decode("utf-8").split("\n"), start=first_line)
        return
    except UnicodeDecodeError:
        pass
    for lineno, raw in enumerate(data.split(b"\n"), start=first_line):
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            _bad(out, f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})",
                 on_bad_record)


def _bad(out: Parsed, message: str, on_bad_record: str) -> None:
    if on_bad_record == "fail":
        raise BadRecordError(message)
    out.bad.append(message)
