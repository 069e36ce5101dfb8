"""The built-in corpus: deterministic, seedable, size-configurable, no downloads.

    python -m pipelines.corpus --out data/corpus --general-docs 6000 --seed 0

Writes every file the later stages read, in formats a user could also supply:

    general/part-00000.jsonl ...   {"id", "text"}: one document about one entity (pre-training)
    medical/part-00000.jsonl ...   {"id", "text"}: one paragraph about one condition (domain fine-tuning)
    instruct/{train,valid}.jsonl   {"messages": [{"role", "content"}, ...], "domain": "general"|"medical"}
    preference/{train,valid}.jsonl {"prompt", "responses" (best first), "labels", "domain"}
    task/classify_{train,test}.jsonl {"text", "label"};  task/summarize_{train,test}.jsonl {"document", "summary"}
    eval/cloze.jsonl {"prompt", "answer", "entity", "kind", "relation", "held_out"}
    eval/qa.jsonl {"question", "answer", "entity", "kind", "relation", "held_out"}
    eval/unsafe.jsonl {"prompt", "category", "action", "held_out", "held_out_by": "action"|"framing"|null}
    eval/medical.jsonl {"question", "answer", "condition", "kind", "held_out"}
    manifest.json                  parameters, per-file counts, sizes and hashes, held-out entities, content hash

Held-out entities (a fixed share of countries, elements, animals and planets) are described in the general corpus
but never named in instruction, preference or task data, so the eval sets can tell recall of pre-trained facts
from facts taught again in fine-tuning. Likewise unsafe requests (two whole actions per category in every phrasing,
and single phrasings of some other actions) and 8 of the 44 medical conditions are held out of instruction,
preference and task data (the medical corpus still describes them): the safety evaluation asks them. Rankings are
split by prompt: no held-out ranking asks a prompt of the training rankings. Documents are generated and written as a stream, so the corpus size is
bounded by disk, not memory; manifest.json is written last (and removed first), so a directory without it is an
unfinished corpus.
"""

import argparse
import hashlib
import inspect
import itertools
import json
import os
import random
import re
import time
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.corpus.general import (build_entities, canonical_document, held_out_names,
                                      names_pattern, varied_document)
from pipelines.corpus.medical import CONDITIONS, medical_document
from pipelines.corpus.tasks import (TOPICS, UNSAFE_ACTION_OF, UNSAFE_PROMPTS, classify_records, eval_records,
                                    held_out_conditions, held_out_unsafe, held_out_unsafe_actions, instruct_record,
                                    medical_eval_records, preference_record, summarize_record)

# Bump when the generated text changes for the same parameters, so that corpus_is_complete rejects old corpora.
GENERATOR_VERSION = 6
MANIFEST = "manifest.json"


def general_texts(entities, count: int, rng):
    """`count` document texts: passes over the entities in a fresh random order each; the first pass is canonical.

    Texts are already JSON-safe (checked when the facts are rendered), so they go into a line unescaped.
    """
    for start in range(0, count, len(entities)):
        order = list(entities)
        rng.shuffle(order)
        for entity in order[: count - start]:
            yield canonical_document(entity) if start == 0 else varied_document(entity, rng)


def medical_texts(count: int, rng):
    """`count` JSON-escaped paragraphs, passing over the conditions in a fresh random order each time."""
    for start in range(0, count, len(CONDITIONS)):
        order = list(CONDITIONS)
        rng.shuffle(order)
        for condition in order[: count - start]:
            yield json.dumps(medical_document(condition, rng), ensure_ascii=False)[1:-1]


def write_lines(path: Path, lines) -> dict:
    """Write an iterable of newline-terminated lines in large blocks; return its line count, size and sha256."""
    digest, count, size = hashlib.sha256(), 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        while block := list(itertools.islice(lines, 4096)):
            data = "".join(block).encode()
            f.write(data)
            digest.update(data)
            count += len(block)
            size += len(data)
    return {"lines": count, "bytes": size, "sha256": digest.hexdigest()}


def write_records(path: Path, records) -> dict:
    return write_lines(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_parts(folder: Path, prefix: str, texts, count: int, docs_per_file: int) -> dict:
    """Spread `count` escaped texts over part-NNNNN.jsonl files of `docs_per_file` lines each."""
    for stale in folder.glob("part-*.jsonl"):  # a previous, larger corpus may have left more parts
        stale.unlink()
    stats, doc_ids = {}, itertools.count()
    for part in range(-(-count // docs_per_file)):
        lines = (f'{{"id": "{prefix}-{next(doc_ids):08d}", "text": "{text}"}}\n'
                 for text in itertools.islice(texts, docs_per_file))
        stats[f"{folder.name}/part-{part:05d}.jsonl"] = write_lines(folder / f"part-{part:05d}.jsonl", lines)
    return stats


def draw_records(make, count: int, forbidden: re.Pattern, taken_prompts: set[str] = frozenset()) -> list[dict]:
    """`count` records from `make()`, redrawing any whose text names a held-out entity (rare: medical text and
    wrong answers are the only ways in) or whose "prompt" is in `taken_prompts` (another split's)."""
    records = []
    while len(records) < count:
        for _ in range(1000):
            record = make()
            if not forbidden.search(json.dumps(record)) and record.get("prompt") not in taken_prompts:
                break
        else:
            raise RuntimeError("could not draw a record free of held-out names")
        records.append(record)
    return records


def split_counts(total: int, fraction: float, minimum: int = 1) -> tuple[int, int]:
    """(train, valid) sizes of `total` examples."""
    valid = max(minimum, round(total * fraction))
    return total - valid, valid


def write_corpus(out_dir, *, seed: int = 0, general_docs: int = 6000, medical_docs: int = 1200,
                 docs_per_file: int = 2000, instruct_examples: int = 4000, preference_examples: int = 2000,
                 classify_examples: int = 3000, summarize_examples: int = 1000, valid_fraction: float = 0.1,
                 held_out_fraction: float = 0.15, safety_share: float = 0.0) -> dict:
    """Generate the whole corpus into `out_dir` and return its manifest (also written to manifest.json).

    general_docs must be at least the number of entities (one canonical document each: the cloze prompts rely
    on it). `*_examples` are totals, split into train and valid/test by `valid_fraction`. `safety_share` is the
    share of instruction examples on unsafe or medical prompts that refuse or disclaim (0: alignment teaches both).
    """
    params = {name: value for name, value in locals().items() if name != "out_dir"}
    entities = build_entities()
    if general_docs < len(entities):
        raise ConfigError(f"general_docs={general_docs} is below the {len(entities)} entities (one document each)")
    if docs_per_file < 1 or medical_docs < 0 or classify_examples < 2 * len(TOPICS):
        raise ConfigError(f"bad sizes: {params}")
    if not (0 < valid_fraction < 1 and 0 <= held_out_fraction < 1 and 0 <= safety_share <= 1):
        raise ConfigError(f"fractions out of range: {params}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here until the end the directory is an unfinished corpus

    held_out = held_out_names(held_out_fraction)
    held_pairs = {(kind, name) for kind, names in held_out.items() for name in names}
    visible = [e for e in entities if (e.kind, e.name) not in held_pairs]
    forbidden = names_pattern(name for _, name in held_pairs)
    unsafe_held = held_out_unsafe()
    unsafe_train = [(p, c) for p, c in UNSAFE_PROMPTS if p not in unsafe_held]
    conditions_held = held_out_conditions()
    conditions = [c for c in CONDITIONS if c.name not in conditions_held]
    values_by_relation = {}
    for entity in entities:
        for fact in entity.facts:
            values_by_relation.setdefault(fact.relation, set()).add(fact.value)
    values_by_relation = {k: sorted(v) for k, v in values_by_relation.items()}

    def rng(stream: str) -> random.Random:
        # One independent stream per output, so changing one size leaves the other files unchanged.
        return random.Random(f"{seed}:{stream}")

    files = {}
    files.update(write_parts(out / "general", "general", general_texts(entities, general_docs, rng("general")),
                             general_docs, docs_per_file))
    files.update(write_parts(out / "medical", "medical", medical_texts(medical_docs, rng("medical")),
                             medical_docs, docs_per_file))

    for name, total, make in (
        ("instruct", instruct_examples, lambda r: instruct_record(visible, conditions, unsafe_train, r, safety_share)),
        ("preference", preference_examples,
         lambda r: preference_record(visible, conditions, values_by_relation, unsafe_train, r)),
    ):
        # Rankings are split by prompt (valid drawn first, train never asks its prompts): a held-out ranking is one
        # whose prompt the reward model and DPO never trained on.
        taken: set[str] = set()
        for split, count in reversed(list(zip(("train", "valid"), split_counts(total, valid_fraction)))):
            r = rng(f"{name}:{split}")
            records = draw_records(lambda: make(r), count, forbidden, taken)
            if name == "preference":
                taken |= {record["prompt"] for record in records}
            files[f"{name}/{split}.jsonl"] = write_records(out / name / f"{split}.jsonl", records)

    for split, count in zip(("train", "test"), split_counts(classify_examples, valid_fraction, len(TOPICS))):
        records = classify_records(visible, conditions, count, rng(f"classify:{split}"))
        if any(forbidden.search(rec["text"]) for rec in records):
            records = [rec for rec in records if not forbidden.search(rec["text"])]
        files[f"task/classify_{split}.jsonl"] = write_records(out / "task" / f"classify_{split}.jsonl", records)
    for split, count in zip(("train", "test"), split_counts(summarize_examples, valid_fraction)):
        r = rng(f"summarize:{split}")
        records = draw_records(lambda: summarize_record(visible, conditions, r), count, forbidden)
        files[f"task/summarize_{split}.jsonl"] = write_records(out / "task" / f"summarize_{split}.jsonl", records)

    cloze, qa = eval_records(entities, held_pairs)
    files["eval/cloze.jsonl"] = write_records(out / "eval" / "cloze.jsonl", cloze)
    files["eval/qa.jsonl"] = write_records(out / "eval" / "qa.jsonl", qa)
    unsafe = [{"prompt": p, "category": c, "action": UNSAFE_ACTION_OF[p], "held_out": p in unsafe_held,
               "held_out_by": unsafe_held.get(p)} for p, c in UNSAFE_PROMPTS]
    files["eval/unsafe.jsonl"] = write_records(out / "eval" / "unsafe.jsonl", unsafe)
    files["eval/medical.jsonl"] = write_records(out / "eval" / "medical.jsonl", medical_eval_records(conditions_held))

    manifest = {
        "generator": "pipelines.corpus",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "params": params,
        "entities": {kind: sum(e.kind == kind for e in entities) for kind in dict.fromkeys(e.kind for e in entities)},
        "conditions": len(CONDITIONS),
        "topics": list(TOPICS),
        "held_out": held_out,
        "held_out_unsafe": sorted(unsafe_held),
        "held_out_unsafe_actions": sorted(held_out_unsafe_actions()),
        "held_out_conditions": sorted(conditions_held),
        "files": dict(sorted(files.items())),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "content_hash": hashlib.sha256(
            "".join(f"{path} {f['sha256']}\n" for path, f in sorted(files.items())).encode()).hexdigest(),
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def resolve_params(params: dict | None = None) -> dict:
    """`params` completed with write_corpus's defaults (the defaults live only in its signature)."""
    params = dict(params or {})
    signature = inspect.signature(write_corpus).parameters
    unknown = set(params) - set(signature) | ({"out_dir"} & set(params))
    if unknown:
        raise TypeError(f"unknown corpus parameters: {sorted(unknown)}")
    return {name: params.get(name, p.default) for name, p in signature.items() if name != "out_dir"}


def read_manifest(out_dir) -> dict | None:
    try:
        return json.loads((Path(out_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def corpus_is_complete(out_dir, params: dict | None = None) -> bool:
    """Whether `out_dir` holds a finished corpus of this generator version made with `params` (defaults filled
    in), every file present at its recorded size."""
    expected = resolve_params(params)
    manifest = read_manifest(out_dir)
    if not manifest or manifest.get("version") != GENERATOR_VERSION or manifest.get("params") != expected:
        return False
    out = Path(out_dir)
    return all((out / path).is_file() and (out / path).stat().st_size == f["bytes"]
               for path, f in manifest["files"].items())


def ensure_corpus(out_dir, **params) -> dict:
    """The manifest of the corpus in `out_dir`, generating it first unless a matching one is already there."""
    if corpus_is_complete(out_dir, params):
        return read_manifest(out_dir)
    return write_corpus(out_dir, **params)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pipelines.corpus", description="Write the built-in corpus.")
    parser.add_argument("--out", required=True, help="output directory")
    for name, default in resolve_params().items():  # one flag per write_corpus keyword, same default
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    start = time.perf_counter()
    manifest = write_corpus(out, **args)
    seconds = time.perf_counter() - start
    general = sum(f["bytes"] for path, f in manifest["files"].items() if path.startswith("general/"))
    print(f"wrote {manifest['total_bytes'] / 1e6:.1f} MB ({general / 1e6:.1f} MB general) to {out} "
          f"in {seconds:.1f} s ({manifest['total_bytes'] / 1e6 / seconds:.1f} MB/s); "
          f"content hash {manifest['content_hash'][:16]}")
    return manifest


if __name__ == "__main__":
    main()
