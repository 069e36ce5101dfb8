"""The shard pipeline on the real stack: Ray Data, sentencepiece, parquet files, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.tokenizer import Tokenizer
from pipelines.data import prepare_shards
from pipelines.data.tokenize import is_valid_doc
from pipelines.errors import BadRecordError, ConfigError, CorpusError


def read_split(manifest: dict, split: str) -> pa.Table:
    files = manifest["splits"][split]["files"]
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def corpus_docs(manifest: dict) -> list[str]:
    docs = []
    for path in manifest["sources"]:
        docs += [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
    return docs


def test_tokenizer_also_subsets_make_the_chat_words_pieces(clm_manifest, small_overrides, compose_config, tmp_path):
    """Trained on general text alone, the chat and medical words are spelled in small pieces; with the subsets the
    later stages read in its sample, they are whole pieces (fewer tokens for the same text)."""
    from pipelines.data.build import builtin_corpus, ensure_tokenizer, subset_texts

    compose = compose_config
    cfg = compose("data", [*small_overrides, "tokenizer.also_subsets=[medical,instruct,preference]"])
    chat = list(subset_texts(builtin_corpus(cfg.data), "preference"))[:300]
    assert chat and all(isinstance(text, str) and text for text in chat)
    manifest = prepare_shards(cfg)
    assert manifest["tokenizer"]["path"] != clm_manifest["tokenizer"]["path"]  # another tokenizer, cached apart
    general_only, mixed = (Tokenizer(Path(m["tokenizer"]["path"]).read_bytes()) for m in (clm_manifest, manifest))
    count = lambda tok: sum(len(ids) for ids in tok.encode(chat))  # noqa: E731
    assert count(mixed) < 0.8 * count(general_only), (count(mixed), count(general_only))
    files = compose("data", [f"data.root={tmp_path}", "data=files", f"data.paths=[{tmp_path}/a.txt]",
                             "data.format=text", "tokenizer.also_subsets=[instruct]"])
    with pytest.raises(ConfigError, match="also_subsets=.*with data=files"):
        ensure_tokenizer(files, [f"{tmp_path}/a.txt"], "text", "text", "x", False)
    with pytest.raises(ConfigError, match=r"\['chats'\] not among the built-in subsets"):
        ensure_tokenizer(compose("data", [*small_overrides, "tokenizer.also_subsets=[chats]"]), [], "jsonl", "text",
                         "y", False)


def test_clm_shards_hold_every_token_once_in_order(clm_manifest):
    tok = Tokenizer(Path(clm_manifest["tokenizer"]["path"]).read_bytes())
    docs = corpus_docs(clm_manifest)
    for split in ("train", "valid"):
        chosen = [d for d in docs if is_valid_doc(d, 0.05) == (split == "valid")]
        expected = np.concatenate([np.asarray(ids, np.int32) for ids in tok.encode(chosen, bos=True, eos=True)])
        table = read_split(clm_manifest, split)
        blocks = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False))
        assert blocks.shape[1] == clm_manifest["seq_len"] + 1
        got = blocks.reshape(-1)
        tail = clm_manifest["splits"][split]["dropped_tail_tokens"]
        assert tail < clm_manifest["seq_len"] + 1
        assert len(got) + tail == len(expected)
        np.testing.assert_array_equal(got, expected[:len(got)])
        assert clm_manifest["splits"][split]["documents"] == len(chosen)


def shard_documents(manifest: dict, split: str) -> list[tuple[int, ...]]:
    """The documents written to a split, read back from its packed blocks (each `<bos> ... <eos>`)."""
    stream = np.stack(read_split(manifest, split).column("input_ids").to_numpy(zero_copy_only=False)).reshape(-1)
    bos, eos = 2, 3
    starts, ends = np.flatnonzero(stream == bos), np.flatnonzero(stream == eos)
    after = np.searchsorted(ends, starts)
    return [tuple(stream[s + 1:ends[i]]) for s, i in zip(starts, after) if i < len(ends)]


def test_no_document_is_in_both_splits(clm_manifest):
    # Read from the shards themselves, not from the predicate that chose the split.
    train, valid = (set(shard_documents(clm_manifest, s)) for s in ("train", "valid"))
    assert len(valid) > 5 and len(train) > 5 * len(valid)
    assert not train & valid
    corpus = len(set(corpus_docs(clm_manifest)))
    assert len(train) + len(valid) >= 0.99 * corpus  # every distinct document but those cut by the last blocks


def test_every_setting_that_changes_the_text_gets_its_own_shards(ray_cluster, compose_config, data_root,
                                                                tmp_path, clm_manifest, small_overrides):
    """subset, field and format decide which text is read: each one changed gives another shard set."""
    medical = prepare_shards(compose_config("data", [*small_overrides, "data.subset=medical"]))
    assert medical["dir"] != clm_manifest["dir"] and medical["tokenizer"]["sha256"] != clm_manifest["tokenizer"]["sha256"]
    assert all("/medical/" in f for f in medical["sources"])

    records = [{"text": f"Text number {i} is here. It has words.", "body": f"Body {i} differs. Quite a lot."}
               for i in range(300)]
    corpus = tmp_path / "two_fields.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    built = {}
    for name, extra in (("text", []), ("body", ["data.field=body"]), ("as_text", ["data.format=text"])):
        fmt = "text" if name == "as_text" else "jsonl"
        built[name] = prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(corpus)], fmt=fmt,
                                                                            extra=extra)))
    assert len({m["dir"] for m in built.values()}) == 3
    tok = Tokenizer(Path(built["body"]["tokenizer"]["path"]).read_bytes())
    first = tok.decode(read_split(built["body"], "train").column("input_ids")[0].as_py())
    assert "Body" in first and "Text number" not in first


def test_pair_shards_are_bert_shaped_and_balanced(pairs_manifest):
    tok = Tokenizer(Path(pairs_manifest["tokenizer"]["path"]).read_bytes())
    table = read_split(pairs_manifest, "train")
    ids = np.stack(table.column("input_ids").to_numpy(zero_copy_only=False))
    types = np.stack(table.column("token_type_ids").to_numpy(zero_copy_only=False))
    is_next = table.column("is_next").to_numpy()
    assert ids.shape[1] == pairs_manifest["seq_len"] == 64
    assert (ids[:, 0] == tok.cls_id).all()
    assert ((ids == tok.sep_id).sum(axis=1) == 2).all()
    assert set(np.unique(is_next)) == {0, 1}  # the balance is tested in test_pairs.py, in both splits
    for row, seg in zip(ids[:50], types[:50]):
        first_sep = int(np.argmax(row == tok.sep_id))
        assert (seg[:first_sep + 1] == 0).all() and seg[first_sep + 1] == 1
        assert (seg[row == tok.pad_id] == 0).all()
    # A true next sentence in the built-in corpus is about the same entity as the first one.
    text = tok.decode(ids[np.argmax(is_next == 1)].tolist())
    assert text


def test_manifest_reuse_and_force(compose_config, small_overrides, clm_manifest):
    cfg = compose_config("data", small_overrides)
    files = clm_manifest["splits"]["train"]["files"]
    mtimes = [Path(f).stat().st_mtime_ns for f in files]
    again = prepare_shards(cfg)
    assert again["key"] == clm_manifest["key"]
    assert [Path(f).stat().st_mtime_ns for f in files] == mtimes  # nothing rewritten
    rebuilt = prepare_shards(cfg, force=True)
    assert rebuilt["splits"]["train"]["examples"] == clm_manifest["splits"]["train"]["examples"]
    assert [Path(f).stat().st_mtime_ns for f in files] != mtimes


def test_tokenizer_and_shards_record_each_other(clm_manifest):
    manifest = clm_manifest
    tok = Tokenizer(Path(manifest["tokenizer"]["path"]).read_bytes())
    assert manifest["tokenizer"]["sha256"] == tok.sha256
    assert manifest["tokenizer"]["vocab_size"] == tok.vocab_size <= 1000
    assert manifest["splits"]["train"]["tokens"] == manifest["splits"]["train"]["examples"] * 65


# ---- user files and bad input ----

def files_overrides(root: Path, paths: list[str], fmt: str = "jsonl", extra=()) -> list[str]:
    return ["data=files", f"data.root={root}", f"data.paths=[{','.join(paths)}]", f"data.format={fmt}",
            "tokenizer.vocab_size=400", "data.seq_len=32", *extra]


def write_jsonl(path: Path, n: int, extra_lines: list[bytes] = ()) -> Path:
    with open(path, "wb") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"Document {i} is short. It has two sentences about {i % 7}."}).encode()
                    + b"\n")
        for line in extra_lines:
            f.write(line + b"\n")
    return path


@pytest.fixture
def bad_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "bad.jsonl", 300, [b"{not json", b'{"body": "no text field"}',
                                                    b'{"text": "caf\xe9 latin-1"}', b'{"text": 7}'])


def test_bad_records_are_skipped_and_reported(ray_cluster, compose_config, tmp_path, bad_jsonl):
    manifest = prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(bad_jsonl)])))
    bad = manifest["bad_records"]
    assert bad["count"] == 4
    assert bad["examples"] == [
        f"{bad_jsonl}:301: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{bad_jsonl}:302: no field 'text' (expected a JSON object with a string 'text'; set data.field)",
        f"{bad_jsonl}:303: not valid UTF-8 (byte 0xe9 at offset 13)",
        f"{bad_jsonl}:304: a non-string field 'text' (expected a JSON object with a string 'text'; set data.field)",
    ]
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["valid"]["documents"] == 300


def test_bad_record_fails_with_file_and_line(ray_cluster, compose_config, tmp_path, bad_jsonl):
    cfg = compose_config("data", files_overrides(tmp_path / "out", [str(bad_jsonl)], extra=["data.on_bad_record=fail"]))
    with pytest.raises(BadRecordError, match=rf"^{bad_jsonl}:301: not valid JSON"):
        prepare_shards(cfg)


def test_missing_path_and_empty_corpus(ray_cluster, compose_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus path not found: .*nowhere.jsonl"):
        prepare_shards(compose_config("data", files_overrides(tmp_path, [str(tmp_path / "nowhere.jsonl")])))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(CorpusError, match="empty corpus: no documents in .*empty.jsonl"):
        prepare_shards(compose_config("data", files_overrides(tmp_path, [str(empty)])))


def test_text_and_parquet_sources_and_uri_root(ray_cluster, compose_config, tmp_path):
    lines = [f"Line {i} is a document. It talks about number {i % 11}." for i in range(200)]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n")
    text = prepare_shards(compose_config("data", files_overrides(f"file://{tmp_path}/out", [str(tmp_path / "a.txt")],
                                                                 fmt="text")))
    assert text["dir"].startswith("file://")
    assert text["splits"]["train"]["documents"] + text["splits"]["valid"]["documents"] == 200

    pq.write_table(pa.table({"body": lines}), tmp_path / "a.parquet")
    with pytest.raises(BadRecordError, match=r"a.parquet: no column 'text' \(columns: \['body'\]\); set data.field"):
        prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(tmp_path / "a.parquet")],
                                                              fmt="parquet")))
    parquet = prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(tmp_path / "a.parquet")],
                                                                    fmt="parquet", extra=["data.field=body"])))
    assert parquet["splits"]["train"]["documents"] + parquet["splits"]["valid"]["documents"] == 200


def test_too_little_text_says_why(ray_cluster, compose_config, tmp_path, caplog):
    short = write_jsonl(tmp_path / "short.jsonl", 3)
    with pytest.raises(CorpusError, match=r"no training examples: \d+ training documents in .*short.jsonl give \d+ "
                                          r"tokens, fewer than one block of data.seq_len \+ 1 = 513; add text or "
                                          r"lower data.seq_len"):
        prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(short)],
                                                              extra=["data.seq_len=512", "data.valid_fraction=0"])))
    enough = write_jsonl(tmp_path / "enough.jsonl", 200)
    with caplog.at_level("WARNING", logger="pipelines.data.build"):
        manifest = prepare_shards(compose_config("data", files_overrides(tmp_path / "out", [str(enough)],
                                                                         extra=["data.valid_fraction=0"])))
    assert manifest["splits"]["train"]["examples"] > 0 and manifest["splits"]["valid"]["examples"] == 0
    assert "the validation split is empty" in caplog.text
