"""Corpus -> tokenizer -> token shards — `python -m pipelines.data [objective=mlm_nsp] [data=files ...]`.

- `reader.py`: the corpus as a Ray Dataset (text/jsonl in chunks of whole lines, parquet), bad records as
  `file:line: reason`;
- `tokenize.py`: the tokenizer actor of the Ray Data actor pool (one sentencepiece model per actor);
- `shards.py`: the driver-side packer and parquet writer, and the manifest;
- `build.py`: the stage itself — `prepare_shards(cfg) -> manifest`, keyed so that a matching build is reused.

`prepare_shards` is exported lazily, so that the tokenizer actors importing `pipelines.data.tokenize` do not pay
for the driver's imports.
"""

import importlib

_EXPORTS = {"prepare_shards": "build", "builtin_corpus": "build", "corpus_files": "build"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pipelines.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pipelines.data' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
