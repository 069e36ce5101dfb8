"""The built-in corpus: deterministic, seedable, no downloads — `python -m pipelines.corpus --out DIR`.

- `facts.py`: the tables (countries, elements, animals, planets, numbers) every generated sentence is true to;
- `general.py`: entity documents for pre-training, with held-out entities;
- `medical.py`: condition paragraphs (domain fine-tuning) and the medical disclaimer;
- `tasks.py`: instruction, preference, classification, summarisation and evaluation records;
- `writer.py`: writes them all as jsonl files plus a manifest (`write_corpus`, `ensure_corpus`).
"""

from pipelines.corpus.writer import corpus_is_complete, ensure_corpus, write_corpus

__all__ = ["corpus_is_complete", "ensure_corpus", "write_corpus"]
