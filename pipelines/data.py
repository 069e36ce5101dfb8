"""Stage 1 — corpus to token shards: `python -m pipelines.data [objective=mlm_nsp] [data=files data.paths=[...]]`.

The recipe: locate the corpus (generate the built-in one if missing), train or reuse a sentencepiece tokenizer on a
sample streamed out of Ray Data, tokenize on a Ray Data actor pool, pack and write parquet shards with a manifest.
A later run whose config, tokenizer and input files match a manifest reuses the shards (`force=true` rebuilds).
Other stages call `prepare_shards(cfg)` directly; it returns the manifest.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import time

import hydra
import pyarrow as pa
import ray
from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines import storage
from pipelines.reader import FORMATS, BadRecordError, check_format, parse_rows, read_corpus
from pipelines.text import split_sentences
from pipelines.shards import MANIFEST, ClmPacker, SplitWriter, pairs_table, read_manifest
from pipelines.tokenize import MAX_BAD_REPORTED, SPLITS, TokenizeBatch

log = logging.getLogger(__name__)
SHARD_FORMATS = ("clm", "pairs")


class CorpusError(ValueError):
    """The corpus cannot be used as configured (nothing readable, or a bad record with on_bad_record=fail)."""


def corpus_files(data: DictConfig) -> tuple[list[str], str, str, str]:
    """(files, format, field, fingerprint) of the configured corpus; generates the built-in corpus if needed."""
    if data.source == "builtin":
        corpus_dir = builtin_corpus(data)
        files = storage.expand([storage.join(corpus_dir, data.subset)], suffixes=FORMATS["jsonl"])
        return files, "jsonl", "text", storage.config_hash(["builtin", corpus_dir])
    if data.source != "files":
        raise ValueError(f"data.source must be 'builtin' or 'files', got {data.source!r}")
    check_format(data.format)
    if not data.paths:
        raise ValueError("data=files needs data.paths: files, directories or globs (local or s3://...)")
    files = storage.expand(list(data.paths), suffixes=FORMATS[data.format])
    return files, data.format, data.field, storage.fingerprint(files)


def builtin_corpus(data: DictConfig) -> str:
    """The generated corpus under `{root}/corpus/...`, written once (locally, then copied when root is a URI)."""
    from pipelines.corpus import corpus_is_complete, write_corpus

    params = dict(seed=data.corpus_seed, general_docs=data.general_docs, medical_docs=data.medical_docs)
    name = f"builtin-{storage.config_hash(params)}"
    target = storage.join(storage.absolute(data.root), "corpus", name)
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
        return path, Tokenizer(storage.read_bytes(path))
    settings = OmegaConf.to_container(tcfg) | {"input": fingerprint}
    path = storage.join(storage.absolute(cfg.data.root), "tokenizers",
                        f"{tcfg.model_type}-{storage.config_hash(settings)}", "tokenizer.model")
    if storage.exists(path) and not force:
        log.info("reusing tokenizer %s", path)
        return path, Tokenizer(storage.read_bytes(path))
    log.info("training a %s tokenizer (vocab <= %d) on up to %d documents", tcfg.model_type, tcfg.vocab_size,
             tcfg.sample_docs)
    start = time.perf_counter()
    docs = (read_corpus(files, fmt=fmt, field_name=field, chunk_bytes=cfg.data.chunk_bytes)
            .map_batches(_parse_to_text, fn_kwargs=dict(fmt=fmt, field_name=field,
                                                        on_bad_record=cfg.data.on_bad_record),
                         batch_format="pyarrow", batch_size=1 if fmt != "parquet" else 1024, num_cpus=0.5)
            .limit(tcfg.sample_docs))
    docs.context.raise_original_map_exception = True
    sentences = _sentences(docs)
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


def _parse_to_text(batch: pa.Table, *, fmt: str, field_name: str, on_bad_record: str) -> pa.Table:
    return pa.table({"text": pa.array(parse_rows(batch, fmt=fmt, field_name=field_name,
                                                 on_bad_record=on_bad_record).texts, pa.large_string())})


def _sentences(docs: ray.data.Dataset):
    for batch in docs.iter_batches(batch_format="pyarrow", batch_size=None):
        for text in batch.column("text").to_pylist():
            yield from split_sentences(text)


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
                    raise kind(*(cause if isinstance(cause, kind) else error).args) from None
            error = error.__cause__ or error.__context__
        if exc is not None and "BadRecordError: " in str(exc):  # sentencepiece re-raises an iterator's error as text
            raise BadRecordError(str(exc).rsplit("BadRecordError: ", 1)[-1].strip().splitlines()[0]) from None
        return False


def prepare_shards(cfg: DictConfig, *, force: bool | None = None) -> dict:
    """Build (or reuse) the token shards the config asks for; returns the manifest."""
    force = cfg.force if force is None else force
    data, shard_format = cfg.data, cfg.objective.shard_format
    if shard_format not in SHARD_FORMATS:
        raise ValueError(f"objective.shard_format must be one of {SHARD_FORMATS}, got {shard_format!r}")
    files, fmt, field, fingerprint = corpus_files(data)
    tok_path, tok = ensure_tokenizer(cfg, files, fmt, field, fingerprint, force)
    settings = dict(format=shard_format, seq_len=data.seq_len, valid_fraction=data.valid_fraction,
                    seed=data.seed, on_bad_record=data.on_bad_record, input=fingerprint, tokenizer=tok.sha256)
    key = storage.config_hash(settings)
    shard_dir = storage.join(storage.absolute(data.root), "shards", f"{shard_format}-{key}")
    manifest = read_manifest(shard_dir)
    if manifest and manifest["key"] == key and not force:
        log.info("reusing shards %s (manifest matches)", shard_dir)
        return manifest
    storage.delete_dir(shard_dir)
    with surface_corpus_errors():
        manifest = build_shards(cfg, files, fmt, field, tok, shard_dir, shard_format)
    manifest |= {"key": key, "settings": settings, "dir": shard_dir, "source_fingerprint": fingerprint,
                 "tokenizer": {"path": storage.join(shard_dir, "tokenizer.model"), "trained_at": tok_path,
                               "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                               "model_type": cfg.tokenizer.model_type, "special_ids": tok.special_ids}}
    storage.write_bytes(storage.join(shard_dir, "tokenizer.model"), tok.model_proto)
    storage.write_json(storage.join(shard_dir, MANIFEST), manifest)
    return manifest


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
                 shard_format: str) -> dict:
    data = cfg.data
    start = time.perf_counter()
    actors = pool_size(files, fmt, data)
    tokenized = read_corpus(files, fmt=fmt, field_name=field, chunk_bytes=data.chunk_bytes,
                            read_tasks=min(len(files), data.read_tasks_per_actor * actors),
                            read_cpus=data.read_cpus).map_batches(
        TokenizeBatch,
        fn_constructor_kwargs=dict(tokenizer_model=tok.model_proto, fmt=fmt, field_name=field,
                                   shard_format=shard_format, seq_len=data.seq_len,
                                   valid_fraction=data.valid_fraction, seed=data.seed,
                                   on_bad_record=data.on_bad_record),
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
    stats = {"documents": dict.fromkeys(SPLITS, 0), "bytes": 0, "bad": 0, "bad_examples": []}
    first_output = None
    for batch in tokenized.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=4):
        first_output = first_output or time.perf_counter() - start
        for row in range(batch.num_rows):
            one = batch.slice(row, 1)
            for split in SPLITS:
                stats["documents"][split] += one.column(f"docs_{split}")[0].as_py()
                ids = one.column(f"{split}_ids")[0].values
                if packers:
                    packers[split].add(ids.to_numpy())
                elif len(ids):
                    writers[split].add(pairs_table(ids, one.column(f"{split}_types")[0].values,
                                                   one.column(f"{split}_is_next")[0].values, data.seq_len))
            stats["bytes"] += one.column("bytes")[0].as_py()
            stats["bad"] += one.column("n_bad")[0].as_py()
            room = MAX_BAD_REPORTED - len(stats["bad_examples"])
            stats["bad_examples"] += one.column("bad")[0].as_py()[:max(room, 0)]
    tails = {s: packers[s].close() if packers else writers[s].close() or 0 for s in SPLITS}
    if stats["bad"]:
        log.warning("skipped %d bad records, e.g.:\n  %s", stats["bad"], "\n  ".join(stats["bad_examples"][:5]))
    if not sum(stats["documents"].values()):
        raise CorpusError(f"empty corpus: no documents in {_describe(files)}"
                          + (f" ({stats['bad']} bad records skipped)" if stats["bad"] else ""))
    seconds = time.perf_counter() - start
    splits = {s: {"files": writers[s].files, "examples": writers[s].examples, "tokens": writers[s].tokens,
                  "documents": stats["documents"][s], "dropped_tail_tokens": tails[s]} for s in SPLITS}
    log.info("wrote %s in %.1fs (%.1f MB/s): %s", shard_dir, seconds, stats["bytes"] / 1e6 / seconds,
             {s: {k: splits[s][k] for k in ("examples", "tokens", "documents")} for s in SPLITS})
    return {"format": shard_format, "seq_len": data.seq_len, "sources": files, "bytes": stats["bytes"],
            "bad_records": {"count": stats["bad"], "examples": stats["bad_examples"]}, "splits": splits,
            "seconds": round(seconds, 3), "seconds_to_first_batch": round(first_output or seconds, 3)}


@hydra.main(config_path="../conf", config_name="data", version_base=None)
def main(cfg: DictConfig) -> None:
    connect(cfg.cluster)
    manifest = prepare_shards(cfg)
    train, valid = manifest["splits"]["train"], manifest["splits"]["valid"]
    print(f"shards: {manifest['dir']}\n  train: {train['examples']} examples, {train['tokens']} tokens"
          f"\n  valid: {valid['examples']} examples, {valid['tokens']} tokens"
          f"\n  tokenizer: {manifest['tokenizer']['path']} ({manifest['tokenizer']['vocab_size']} pieces)"
          f"\n  bad records skipped: {manifest['bad_records']['count']}")


if __name__ == "__main__":
    main()
