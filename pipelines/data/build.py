"""Stage 1 — corpus to token shards: `python -m pipelines.data [objective=mlm_nsp] [data=files data.paths=[...]]`.

The recipe: locate the corpus (generate the built-in one if missing), train or reuse a sentencepiece tokenizer on a
sample streamed out of Ray Data, tokenize on a Ray Data actor pool, pack and write parquet shards with a manifest.
A later run whose config, tokenizer and input files match a manifest reuses the shards (`force=true` rebuilds).
Other stages call `prepare_shards(cfg)` directly; it returns the manifest.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time

import pyarrow as pa
import ray
from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines import storage
from pipelines.entry import stage_main
from pipelines.errors import BadRecordError, ConfigError, CorpusError, MissingPathError
from pipelines.data.reader import FORMATS, check_format, parse_rows, read_corpus
from pipelines.text import split_sentences
from pipelines.data.shards import MANIFEST, ClmPacker, SplitWriter, pairs_table, read_manifest
from pipelines.data.tokenize import (MAX_BAD_REPORTED, SPLITS, TokenizeBatch, warn_dropped_domains,
                                     write_negative_pool)

TOKENIZER, NEGATIVES = "tokenizer.model", "nsp_negatives.jsonl"

log = logging.getLogger(__name__)
SHARD_FORMATS = ("clm", "pairs", "sft", "classify", "preference")
# The records each shard format is built from (pipelines/data/records.py).
RECORDS = {"clm": ("text",), "pairs": ("text",), "sft": ("chat", "summarize"), "classify": ("labeled",),
           "preference": ("ranking",)}

# The built-in corpus's collections (data.subset) and where each lies in it.
SUBSETS = {"general": "general", "medical": "medical", "instruct": "instruct/train.jsonl",
           "summarize": "task/summarize_train.jsonl", "classify": "task/classify_train.jsonl",
           "preference": "preference/train.jsonl"}


# Shard formats whose examples use the MLM symbols (<cls> ... <sep>, <mask>): encoders only.
ENCODER_FORMATS = ("pairs", "classify")


def check_data_config(cfg: DictConfig) -> None:
    """The data settings that can be checked without reading anything: called before Ray starts."""
    data, shard_format = cfg.data, cfg.objective.shard_format
    if shard_format not in SHARD_FORMATS:
        raise ConfigError(f"objective.shard_format must be one of {SHARD_FORMATS}, got {shard_format!r}")
    if data.record not in RECORDS[shard_format]:
        raise ConfigError(f"{shard_format!r} shards are built from {' or '.join(RECORDS[shard_format])} records, but "
                          f"data.record is {data.record!r}")
    if data.record != "text":
        if data.source == "files" and data.format == "text":
            raise ConfigError(f"data.record={data.record} needs structured records: data.format=jsonl or parquet")
        if not cfg.tokenizer.path:
            raise ConfigError(f"data.record={data.record}: fine-tuning records are tokenized with a given tokenizer "
                              f"(tokenizer.path, the checkpoint's), never a newly trained one")
        if data.too_long not in ("drop", "truncate"):
            raise ConfigError(f"data.too_long must be drop or truncate, got {data.too_long!r}")
    if data.record == "labeled":
        record_labels(data)
    if data.source == "builtin":
        if data.subset not in SUBSETS:
            raise ConfigError(f"data.subset must be one of {sorted(SUBSETS)}, got {data.subset!r}")
    elif data.source == "files":
        check_format(data.format)
        if not data.paths:
            raise ConfigError("data=files needs data.paths: files, directories or globs (local or s3://...)")
    else:
        raise ConfigError(f"data.source must be 'builtin' or 'files', got {data.source!r}")
    storage.root(data.root, "data.root")


def record_labels(data: DictConfig) -> list[str]:
    """The label names of labelled records, index = class id: data.labels, or the built-in topics."""
    if data.labels:
        labels = [str(label) for label in data.labels]
        if len(set(labels)) != len(labels) or len(labels) < 2:
            raise ConfigError(f"data.labels must name at least two distinct labels, got {labels}")
        return labels
    if data.source == "builtin" and data.subset == "classify":
        from pipelines.corpus.tasks import TOPICS

        return list(TOPICS)
    raise ConfigError("data.record=labeled needs data.labels: the label names, e.g. data.labels='[sports,science]'")


def corpus_files(data: DictConfig) -> tuple[list[str], str, str, str]:
    """(files, format, field, fingerprint) of the configured corpus; generates the built-in corpus if needed.

    The fingerprint names everything that decides which texts are read — the files (names, sizes, times), the
    subset, the format and the field — so that tokenizers and shards are never reused for other text.
    """
    if data.source == "builtin":
        corpus_dir = builtin_corpus(data)
        files = storage.expand([storage.join(corpus_dir, SUBSETS[data.subset])], suffixes=FORMATS["jsonl"])
        return files, "jsonl", "text", storage.config_hash(["builtin", corpus_dir, data.subset])
    files = storage.expand(list(data.paths), suffixes=FORMATS[data.format])
    return files, data.format, data.field, storage.config_hash([storage.fingerprint(files), data.format, data.field])


def builtin_corpus(data: DictConfig) -> str:
    """The generated corpus under `{root}/corpus/...`, written once (locally, then copied when root is a URI)."""
    from pipelines.corpus.writer import corpus_is_complete, write_corpus

    params = dict(seed=data.corpus_seed, general_docs=data.general_docs, medical_docs=data.medical_docs,
                  safety_share=data.safety_share)
    name = f"builtin-{storage.config_hash(params)}"
    target = storage.join(storage.root(data.root, "data.root"), "corpus", name)
    if storage.is_uri(target):
        if not storage.exists(storage.join(target, "manifest.json")):
            with tempfile.TemporaryDirectory() as tmp:
                write_corpus(tmp, **params)
                storage.upload_dir(tmp, target)
    elif not corpus_is_complete(target, params):
        log.info("generating the built-in corpus in %s", target)
        write_corpus(target, **params)
    return target


def ensure_tokenizer(cfg: DictConfig, files: list[str], fmt: str, field: str, fingerprint: str,
                     force: bool) -> tuple[str, Tokenizer]:
    """(path, tokenizer): the configured file, a cached one trained on the same input, or a newly trained one."""
    tcfg = cfg.tokenizer
    if tcfg.path:
        path = storage.absolute(tcfg.path)
        if not storage.exists(path):
            raise MissingPathError(f"tokenizer.path={tcfg.path} does not exist (a sentencepiece .model file)")
        try:
            return path, Tokenizer(storage.read_bytes(path))
        except (ValueError, RuntimeError) as error:  # a foreign model: init_from=<HF dir> extends it, this does not
            raise ConfigError(f"tokenizer.path={tcfg.path}: {error}") from None
    settings = OmegaConf.to_container(tcfg) | {"input": fingerprint}
    path = storage.join(storage.root(cfg.data.root, "data.root"), "tokenizers",
                        f"{tcfg.model_type}-{storage.config_hash(settings)}", "tokenizer.model")
    if storage.exists(path) and not force:
        log.info("reusing tokenizer %s", path)
        return path, Tokenizer(storage.read_bytes(path))
    also = list(tcfg.also_subsets)
    if also and cfg.data.source != "builtin":
        raise ConfigError(f"tokenizer.also_subsets={also} adds built-in corpus subsets; with data=files train the "
                          f"tokenizer on a sample of all your text (or give tokenizer.path)")
    unknown = [name for name in also if name not in SUBSETS]
    if unknown:
        raise ConfigError(f"tokenizer.also_subsets: {unknown} not among the built-in subsets {sorted(SUBSETS)}")
    log.info("training a %s tokenizer (vocab <= %d) on up to %d documents%s", tcfg.model_type, tcfg.vocab_size,
             tcfg.sample_docs, f" and the training text of {', '.join(also)}" if also else "")
    start = time.perf_counter()
    corpus_dir = builtin_corpus(cfg.data) if also else None
    texts = itertools.chain(sample_documents(cfg.data, files, fmt, field, tcfg.sample_docs),
                            *(subset_texts(corpus_dir, name) for name in also))
    sentences = (s for text in texts for s in split_sentences(text))
    with surface_corpus_errors():
        first = next(sentences, None)
        if first is None:
            raise CorpusError(f"empty corpus: no documents in {_describe(files)}")
        model = train_sentencepiece(
            itertools.chain([first], sentences), model_type=tcfg.model_type, vocab_size=tcfg.vocab_size,
            character_coverage=tcfg.character_coverage, input_sentence_size=tcfg.input_sentence_size)
    storage.write_bytes(path, model)
    tok = Tokenizer(model)
    log.info("tokenizer: %d pieces in %.1fs -> %s", tok.vocab_size, time.perf_counter() - start, path)
    return path, tok


# The text fields of the built-in corpus's records (documents, chat messages, rankings, task records).
TEXT_FIELDS = ("text", "document", "summary", "prompt")


def subset_texts(corpus_dir: str, subset: str):
    """Every text of a built-in subset's training records, one at a time: documents, chat messages' contents,
    rankings' prompts and responses, task records' documents and summaries."""
    for path in storage.expand([storage.join(corpus_dir, SUBSETS[subset])], suffixes=FORMATS["jsonl"]):
        for record in storage.read_jsonl(path):
            yield from (record[key] for key in TEXT_FIELDS if isinstance(record.get(key), str))
            yield from (message["content"] for message in record.get("messages", ()))
            yield from record.get("responses", ())


def sample_documents(data: DictConfig, files: list[str], fmt: str, field: str, limit: int):
    """The first `limit` documents of the corpus stream (read and parsed by Ray Data), one text at a time."""
    docs = (read_corpus(files, fmt=fmt, field_name=field, chunk_bytes=data.chunk_bytes)
            .map_batches(_parse_to_text, fn_kwargs=dict(fmt=fmt, field_name=field, on_bad_record=data.on_bad_record),
                         batch_format="pyarrow", batch_size=1 if fmt != "parquet" else 1024, num_cpus=0.5)
            .limit(limit))
    docs.context.raise_original_map_exception = True
    docs.context.execution_options.preserve_order = True  # the same documents on every run
    for batch in docs.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from batch.column("text").to_pylist()


def _parse_to_text(batch: pa.Table, *, fmt: str, field_name: str, on_bad_record: str) -> pa.Table:
    return pa.table({"text": pa.array(parse_rows(batch, fmt=fmt, field_name=field_name,
                                                 on_bad_record=on_bad_record).texts, pa.large_string())})


def _describe(files: list[str]) -> str:
    return ", ".join(files[:3]) + (f" and {len(files) - 3} more files" if len(files) > 3 else "")


class surface_corpus_errors:
    """Re-raise a BadRecordError/CorpusError raised inside a Ray task as itself, without Ray's wrapping."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        error = exc
        while error is not None:
            for kind in (BadRecordError, CorpusError):
                if isinstance(error, kind):
                    if type(error) is kind and error is exc:
                        return False  # raised here, already clean
                    cause = getattr(error, "cause", None)  # RayTaskError(kind) keeps the original here
                    # Our messages are one line; Ray appends its retry advice to the text after it.
                    message = str(cause if isinstance(cause, kind) else error).splitlines()[0]
                    raise kind(message) from None
            error = error.__cause__ or error.__context__
        if exc is not None and "BadRecordError: " in str(exc):  # sentencepiece re-raises an iterator's error as text
            raise BadRecordError(str(exc).rsplit("BadRecordError: ", 1)[-1].strip().splitlines()[0]) from None
        return False


def prepare_shards(cfg: DictConfig, *, force: bool | None = None) -> dict:
    """Build (or reuse) the token shards the config asks for; returns the manifest."""
    force = cfg.force if force is None else force
    data, shard_format = cfg.data, cfg.objective.shard_format
    check_data_config(cfg)
    files, fmt, field, fingerprint = corpus_files(data)
    tok_path, tok = ensure_tokenizer(cfg, files, fmt, field, fingerprint, force)
    if shard_format in ENCODER_FORMATS and not tok.has_mlm_symbols:
        raise ConfigError(f"{shard_format!r} shards are for encoders and need <mask>, <cls> and <sep>, which the "
                          f"tokenizer {tok_path} lacks (a decoder's tokenizer)")
    # Everything that changes the shards' content. chunk_bytes is not: CLM blocks are packed across chunks in
    # corpus order, and NSP negatives come from a corpus-wide pool, not from the chunk (pipelines/data/tokenize.py).
    settings = dict(format=shard_format, seq_len=data.seq_len, valid_fraction=data.valid_fraction,
                    seed=data.seed, on_bad_record=data.on_bad_record, input=fingerprint, tokenizer=tok.sha256)
    if shard_format == "pairs":
        settings["nsp_negative_docs"] = data.nsp_negative_docs
    if data.record != "text":
        settings |= {"record": data.record, "too_long": data.too_long}
    if data.record == "labeled":
        settings |= {"labels": record_labels(data), "label_field": data.label_field}
    if data.record == "ranking":
        settings["max_responses"] = data.max_responses
    key = storage.config_hash(settings)
    shard_dir = storage.join(storage.root(data.root, "data.root"), "shards", f"{shard_format}-{key}")
    manifest = read_manifest(shard_dir)
    if manifest and manifest["key"] == key and not force:
        log.info("reusing shards %s (manifest matches)", shard_dir)
        warn_dropped_domains({s: v.get("dropped_by_domain", {}) for s, v in manifest["splits"].items()},
                             cfg.data.seq_len, cfg.data.warn_dropped_share)
        return manifest
    storage.delete_dir(shard_dir)
    # The actors read the tokenizer (and the NSP negatives) from shared storage: constructor arguments this large
    # would travel through the object store, once per actor.
    storage.write_bytes(storage.join(shard_dir, TOKENIZER), tok.model_proto)
    with surface_corpus_errors():
        negatives = None
        if shard_format == "pairs":
            negatives = storage.join(shard_dir, NEGATIVES)
            write_negative_pool(sample_documents(data, files, fmt, field, data.nsp_negative_docs), negatives)
        manifest = build_shards(cfg, files, fmt, field, tok, shard_dir, shard_format, negatives)
    manifest |= {"key": key, "settings": settings, "dir": shard_dir, "source_fingerprint": fingerprint,
                 "tokenizer": {"path": storage.join(shard_dir, TOKENIZER), "trained_at": tok_path,
                               "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                               "first_ordinary_id": tok.first_ordinary_id,
                               "model_type": cfg.tokenizer.model_type, "special_ids": tok.special_ids},
                 "record": data.record}
    if data.record == "labeled":
        manifest["labels"] = settings["labels"]
    storage.write_json(storage.join(shard_dir, MANIFEST), manifest)
    return manifest


def record_table(shard_format: str, row: pa.Table, split: str, seq_len: int, max_responses: int) -> pa.Table:
    """The `sft`, `classify` or `preference` examples of one tokenizer output row as a shard table."""
    ids = row.column(f"{split}_ids")[0].values
    if shard_format == "preference":
        width = max_responses * seq_len
        return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(ids, width),
                         "loss_mask": pa.FixedSizeListArray.from_arrays(row.column(f"{split}_mask")[0].values, width),
                         "num_responses": row.column(f"{split}_n")[0].values})
    if shard_format == "sft":
        return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(ids, seq_len + 1),
                         "loss_mask": pa.FixedSizeListArray.from_arrays(row.column(f"{split}_mask")[0].values,
                                                                        seq_len + 1)})
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(ids, seq_len),
                     "label": row.column(f"{split}_label")[0].values})


def check_examples(splits: dict, shard_format: str, seq_len: int, files: list[str]) -> None:
    """No training examples is an error that says why; no validation examples is a warning."""
    train, valid = splits["train"], splits["valid"]
    if not train["examples"]:
        what = {"clm": f"{train['dropped_tail_tokens']} tokens, fewer than one block of data.seq_len + 1 = "
                       f"{seq_len + 1}; add text or lower data.seq_len",
                "pairs": "no document with two sentences to pair; add documents of several sentences",
                "sft": f"no usable record ({train.get('dropped_too_long', 0)} longer than data.seq_len={seq_len} "
                       f"dropped); check the records, or raise data.seq_len or set data.too_long=truncate",
                "classify": "no usable labelled record",
                "preference": f"no usable ranking ({train.get('dropped_too_long', 0)} with a response too long for "
                              f"data.seq_len={seq_len} dropped)"}[shard_format]
        raise CorpusError(f"no training examples: {train['documents']} training documents in {_describe(files)} "
                          f"give {what}")
    if not valid["examples"]:
        log.warning("the validation split is empty (%d documents at data.valid_fraction); training runs without "
                    "validation metrics — raise data.valid_fraction or add text", valid["documents"])


class Progress:
    """One log line every `every_s` seconds while shards are built: a sign of life with a rate, and the share done
    when the input's size is comparable (text/jsonl bytes; parquet files are compressed)."""

    def __init__(self, *, total_bytes: int | None, every_s: float = 10.0):
        self.total, self.every_s = total_bytes, every_s
        self.start = self.last = time.perf_counter()

    def show(self, nbytes: int, docs: int) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        share = f" of {self.total / 1e6:.1f} MB ({100 * nbytes / self.total:.0f}%)" if self.total else ""
        log.info("tokenized %.1f MB%s, %d documents, %.1f MB/s", nbytes / 1e6, share, docs,
                 nbytes / 1e6 / (now - self.start))


def pool_size(files: list[str], fmt: str, data: DictConfig) -> int:
    """Tokenizer actors: as configured, but no more than there are chunks (or parquet files) to feed them, and
    leaving a CPU for the read tasks that feed them (else the pipeline waits forever)."""
    if fmt == "parquet":
        pieces = len(files)
    else:
        pieces = sum(-(-storage.file_size(f) // data.chunk_bytes) for f in files)
    room = int((ray.cluster_resources().get("CPU", 1) - data.read_cpus) / data.tokenize_cpus)
    return max(1, min(data.tokenize_actors, pieces, room))


def build_shards(cfg: DictConfig, files: list[str], fmt: str, field: str, tok: Tokenizer, shard_dir: str,
                 shard_format: str, negatives: str | None) -> dict:
    data = cfg.data
    start = time.perf_counter()
    actors = pool_size(files, fmt, data)
    records = data.record != "text"
    tokenized = read_corpus(files, fmt=fmt, field_name=field, chunk_bytes=data.chunk_bytes,
                            read_tasks=min(len(files), data.read_tasks_per_actor * actors),
                            read_cpus=data.read_cpus, whole_records=records).map_batches(
        TokenizeBatch,
        fn_constructor_kwargs=dict(tokenizer_path=storage.join(shard_dir, TOKENIZER), negatives_path=negatives,
                                   fmt=fmt, field_name=field,
                                   shard_format=shard_format, seq_len=data.seq_len,
                                   valid_fraction=data.valid_fraction, seed=data.seed,
                                   on_bad_record=data.on_bad_record, record=data.record,
                                   labels=record_labels(data) if data.record == "labeled" else None,
                                   label_field=data.label_field, too_long=data.too_long,
                                   max_responses=data.max_responses),
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=data.tokenize_cpus,
        batch_size=1 if fmt != "parquet" else 2048,
        batch_format="pyarrow",
    )
    tokenized.context.execution_options.preserve_order = True  # deterministic shards
    # One block per chunk: Ray Data would otherwise gather a read task's chunks into one large block, and the
    # actors (and the writer behind them) would wait for the whole task's files before starting.
    tokenized.context.target_max_block_size = data.chunk_bytes
    tokenized.context.raise_original_map_exception = True  # a BadRecordError arrives as itself
    writers = {s: SplitWriter(shard_dir, s, rows_per_shard=data.rows_per_shard) for s in SPLITS}
    packers = {s: ClmPacker(writers[s], data.seq_len + 1) for s in SPLITS} if shard_format == "clm" else None
    stats = {"documents": dict.fromkeys(SPLITS, 0), "bytes": 0, "bad": 0, "bad_examples": [],
             "truncated": dict.fromkeys(SPLITS, 0), "dropped": dict.fromkeys(SPLITS, 0),
             "domains": {s: {} for s in SPLITS}}
    first_output = None
    progress = Progress(total_bytes=None if fmt == "parquet" else sum(storage.file_size(f) for f in files))
    batches = tokenized.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=4)
    for batch in batches:
        if data.on_bad_record == "fail" and any(batch.column("n_bad").to_pylist()):
            # The first bad record of the first chunk that has one (chunks arrive in order). Raised here,
            # leaving the loop, Ray Data shuts the tokenizer actors down at once.
            raise BadRecordError(next(b[0] for b in batch.column("bad").to_pylist() if b))
        first_output = first_output or time.perf_counter() - start
        for row in range(batch.num_rows):
            one = batch.slice(row, 1)
            for split in SPLITS:
                stats["documents"][split] += one.column(f"docs_{split}")[0].as_py()
                ids = one.column(f"{split}_ids")[0].values
                if packers:
                    packers[split].add(ids.to_numpy())
                elif records:
                    stats["truncated"][split] += one.column(f"{split}_truncated")[0].as_py()
                    stats["dropped"][split] += one.column(f"{split}_dropped")[0].as_py()
                    for domain, (lost, seen) in json.loads(one.column(f"{split}_domains")[0].as_py()).items():
                        counts = stats["domains"][split].setdefault(domain, [0, 0])
                        counts[0], counts[1] = counts[0] + lost, counts[1] + seen
                    if len(ids):
                        writers[split].add(record_table(shard_format, one, split, data.seq_len,
                                                        data.max_responses))
                elif len(ids):
                    writers[split].add(pairs_table(ids, one.column(f"{split}_types")[0].values,
                                                   one.column(f"{split}_is_next")[0].values, data.seq_len))
            stats["bytes"] += one.column("bytes")[0].as_py()
            stats["bad"] += one.column("n_bad")[0].as_py()
            room = MAX_BAD_REPORTED - len(stats["bad_examples"])
            stats["bad_examples"] += one.column("bad")[0].as_py()[:max(room, 0)]
        progress.show(stats["bytes"], sum(stats["documents"].values()))
    tails = {s: packers[s].close() if packers else writers[s].close() or 0 for s in SPLITS}
    if stats["bad"]:
        log.warning("skipped %d bad records, e.g.:\n  %s", stats["bad"], "\n  ".join(stats["bad_examples"][:5]))
    if not sum(stats["documents"].values()):
        raise CorpusError(f"empty corpus: no documents in {_describe(files)}"
                          + (f" ({stats['bad']} bad records skipped)" if stats["bad"] else ""))
    seconds = time.perf_counter() - start
    splits = {s: {"files": writers[s].files, "examples": writers[s].examples, "tokens": writers[s].tokens,
                  "documents": stats["documents"][s], "dropped_tail_tokens": tails[s]} for s in SPLITS}
    if records:  # examples longer than the shards' rows: cut, or left out (data.too_long)
        for s in SPLITS:
            splits[s] |= {"truncated": stats["truncated"][s], "dropped_too_long": stats["dropped"][s],
                          "dropped_by_domain": stats["domains"][s]}
        if sum(stats["dropped"].values()) or sum(stats["truncated"].values()):
            log.warning("records longer than data.seq_len=%d tokens (data.too_long=%s): %s", data.seq_len,
                        data.too_long, ", ".join(f"{s} {stats['dropped'][s]} dropped, {stats['truncated'][s]} "
                                                 f"truncated" for s in SPLITS))
        warn_dropped_domains(stats["domains"], data.seq_len, data.warn_dropped_share)
    check_examples(splits, shard_format, data.seq_len, files)
    log.info("wrote %s in %.1fs (%.1f MB/s): %s", shard_dir, seconds, stats["bytes"] / 1e6 / seconds,
             {s: {k: splits[s][k] for k in ("examples", "tokens", "documents")} for s in SPLITS})
    return {"format": shard_format, "seq_len": data.seq_len, "sources": files, "bytes": stats["bytes"],
            "bad_records": {"count": stats["bad"], "examples": stats["bad_examples"]}, "splits": splits,
            "seconds": round(seconds, 3), "seconds_to_first_batch": round(first_output or seconds, 3)}


@stage_main("data")
def main(cfg: DictConfig) -> None:
    check_data_config(cfg)
    connect(cfg.cluster)
    manifest = prepare_shards(cfg)
    train, valid = manifest["splits"]["train"], manifest["splits"]["valid"]
    print(f"shards: {manifest['dir']}\n  train: {train['examples']} examples, {train['tokens']} tokens"
          f"\n  valid: {valid['examples']} examples, {valid['tokens']} tokens"
          f"\n  tokenizer: {manifest['tokenizer']['path']} ({manifest['tokenizer']['vocab_size']} pieces)"
          f"\n  bad records skipped: {manifest['bad_records']['count']}")


if __name__ == "__main__":
    main()
