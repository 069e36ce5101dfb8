"""Evaluation: `python -m pipelines.evaluate checkpoint=runs/pretrain/<run>` — what does the model know?

- A decoder: cloze accuracy on the built-in facts (`eval/cloze.jsonl`: "The capital of France is" -> "Paris"):
  greedy KV-cache completion of each prompt, counted correct when the completion starts with the answer as a whole
  word (`answer_matches`); held-out entities (whose facts appear only in the pre-training corpus) are reported
  separately — later stages compare against them. Plus perplexity on the validation split of the shards.
- An encoder: its pre-training objective's validation metrics (MLM accuracy and perplexity, NSP accuracy).

The shards are those the checkpoint was trained on (recorded in its meta) unless `shards=DIR` names others. The
report is printed and written as `eval.json` beside the checkpoint's weights.
"""

from __future__ import annotations

import json
import logging
import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from models import load_checkpoint
from models.build import model_spec
from models.generate import generate
from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.data.shards import read_manifest
from pipelines.entry import stage_main
from pipelines.errors import ConfigError, MissingPathError
from pipelines.train.driver import resolve_init_from
from pipelines.train.objectives import objective_class, summarize

log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"


def load_model(checkpoint: str) -> tuple[torch.nn.Module, Tokenizer, dict]:
    """(model in eval mode, its tokenizer, meta) from a checkpoint directory (local or URI)."""
    with storage.local_dir(checkpoint) as path:
        model, meta = load_checkpoint(path)
        tok = Tokenizer(storage.read_bytes(storage.join(path, "tokenizer.model")))
    return model.eval(), tok, meta


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
    lines = storage.read_bytes(path).decode().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return items[:limit] if limit else items


def answer_matches(completion: str, answer: str) -> bool:
    """Whether `completion` starts with `answer` as a whole word: "Paris." and "Paris, the" count for "Paris";
    "metalloid." for "metal", "He." for "H", "26." and "2.5" for "2" do not. The rule of every exact-answer
    evaluation here (cloze, question answering)."""
    return re.match(re.escape(answer) + r"(?!\w)(?![.,:;]\w)", completion) is not None


@torch.no_grad()
def cloze(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int,
          prefix_bos: bool) -> dict:
    """Greedy completions of cloze prompts; accuracy overall and for seen / held-out entities.

    A cloze prompt is a sentence from the middle of a document. In pre-training <bos> only ever precedes a
    document's first sentence, so by default the prompt is given without it, as running text (as LAMBADA-style
    evaluations do); `prefix_bos` asks instead for the prompt as the start of a new document.
    """
    results = []
    prefix = [tok.bos_id] if prefix_bos else []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        prompts = [prefix + tok.encode(item["prompt"]) for item in chunk]
        out = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=[tok.eos_id],
                       pad_id=tok.pad_id)
        for item, tokens in zip(chunk, out.tokens):
            completion = tok.decode([t for t in tokens if t != tok.eos_id]).strip()
            results.append({**item, "completion": completion, "correct": answer_matches(completion, item["answer"])})
    report = {"cloze_accuracy": _accuracy(results), "cloze_count": len(results), "examples": results}
    for name, held in (("seen", False), ("held_out", True)):
        subset = [r for r in results if bool(r.get("held_out")) == held]
        if subset:
            report[f"cloze_accuracy_{name}"] = _accuracy(subset)
    return report


def _accuracy(results: list[dict]) -> float:
    return sum(r["correct"] for r in results) / max(1, len(results))


def shard_batches(files: list[str], columns: list[str], batch_size: int, max_batches: int | None):
    """{column: LongTensor} batches read from parquet shard files, at most `max_batches` (None = all)."""
    batches = 0
    for path in files:
        fs, p = storage.filesystem(path)
        table = pq.read_table(p, filesystem=fs, columns=columns)
        arrays = {}
        for name in columns:
            column = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(column.type):  # token columns: (rows, length)
                values = column.flatten().to_numpy().reshape(table.num_rows, -1)
            else:  # per-example labels: (rows,)
                values = column.to_numpy()
            arrays[name] = torch.from_numpy(values.astype("int64"))
        for i in range(0, table.num_rows, batch_size):
            if max_batches and batches >= max_batches:
                return
            batches += 1
            yield {name: values[i:i + batch_size] for name, values in arrays.items()}


@torch.no_grad()
def perplexity(model, files: list[str], *, batch_size: int, max_batches: int | None) -> float:
    """Token-level perplexity of a causal LM over CLM shard files (blocks of seq_len + 1 tokens)."""
    total, count = 0.0, 0
    for batch in shard_batches(files, ["input_ids"], batch_size, max_batches):
        ids = batch["input_ids"]
        logits = model(ids[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return math.exp(total / max(1, count))


@torch.no_grad()
def encoder_metrics(model, meta: dict, manifest: dict, *, batch_size: int, max_batches: int | None) -> dict:
    """The encoder's pre-training objective on the validation pairs: MLM accuracy/perplexity, NSP accuracy."""
    name = meta["objective"]
    objective = objective_class(name)(model, meta["objective_config"], manifest["tokenizer"]["special_ids"],
                                      vocab_size=manifest["tokenizer"]["vocab_size"],
                                      first_ordinary_id=manifest["tokenizer"]["first_ordinary_id"]).eval()
    generator = torch.Generator().manual_seed(0)  # the same masks on every evaluation
    sums: dict[str, list[float]] = {}
    for batch in shard_batches(manifest["splits"]["valid"]["files"], ["input_ids", "token_type_ids", "is_next"],
                               batch_size, max_batches):
        _, stats = objective(batch, generator)
        for k, (s, c) in stats.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
    totals = {k: (torch.tensor(s), torch.tensor(c)) for k, (s, c) in sums.items()}
    return {f"val_{k}": v for k, v in summarize(totals, objective.ppl_of).items()}


def checkpoint_shards(meta: dict, shards: str | None, *, checkpoint: str) -> dict | None:
    """The manifest of `shards`, else of the shards the checkpoint was trained on; None when neither is known."""
    where = storage.absolute(shards) if shards else meta.get("shards")
    if not where:
        return None
    manifest = read_manifest(where)
    if manifest is None:
        what = f"shards={shards}" if shards else f"the shards {checkpoint} was trained on ({where})"
        raise MissingPathError(f"{what}: no manifest.json there; pass shards=DIR with the validation shards")
    return manifest


def builtin_eval_file(cfg: DictConfig, name: str) -> str:
    from pipelines.data.build import builtin_corpus

    return storage.join(builtin_corpus(cfg.data), "eval", name)


def evaluate(cfg: DictConfig, checkpoint: str, *, shards: str | None = None) -> dict:
    """Evaluate the checkpoint (or run directory) `checkpoint`; writes and returns the report."""
    ecfg = cfg.eval
    checkpoint = resolve_init_from(checkpoint, setting="checkpoint")
    model, tok, meta = load_model(checkpoint)
    kind = model_spec(model)["kind"]
    manifest = checkpoint_shards(meta, shards or cfg.shards, checkpoint=checkpoint)
    check_shards(kind, manifest, checkpoint)
    valid = manifest["splits"]["valid"]["files"] if manifest else []
    if manifest and not valid:
        log.warning("%s has no validation examples: no perplexity", manifest["dir"])
    report = {"checkpoint": checkpoint, "step": meta.get("step"), "stage": meta.get("stage"), "kind": kind}
    if kind == "decoder":
        cloze_path = ecfg.cloze_path or builtin_eval_file(cfg, "cloze.jsonl")
        if not storage.exists(cloze_path):
            raise MissingPathError(f"eval.cloze_path={cloze_path} does not exist (jsonl: prompt, answer, held_out)")
        report |= cloze(model, tok, read_jsonl(cloze_path, ecfg.cloze_limit), max_new_tokens=ecfg.max_new_tokens,
                        batch_size=ecfg.batch_size, prefix_bos=ecfg.prefix_bos)
        if valid:
            report["val_ppl"] = perplexity(model, valid, batch_size=ecfg.batch_size, max_batches=ecfg.ppl_batches)
    else:
        report |= encoder_metrics(model, meta, manifest, batch_size=ecfg.batch_size, max_batches=ecfg.ppl_batches)
    if manifest:
        report["shards"] = manifest["dir"]
    storage.write_json(storage.join(checkpoint, EVAL_FILE), report)
    return report


def check_shards(kind: str, manifest: dict | None, checkpoint: str) -> None:
    """The model can be evaluated on these shards (before any evaluation runs)."""
    if kind == "decoder":
        if manifest and manifest["format"] != "clm":
            raise ConfigError(f"{manifest['dir']} holds {manifest['format']!r} shards: a decoder's perplexity "
                              f"needs causal-LM (clm) shards; pass shards=DIR")
    elif kind == "encoder":
        if not manifest or manifest["format"] != "pairs" or not manifest["splits"]["valid"]["files"]:
            raise ConfigError(f"evaluating the encoder {checkpoint} needs sentence-pair shards with a validation "
                              f"split: pass shards=DIR (built with python -m pipelines.data objective=mlm_nsp)")
    else:
        raise ConfigError(f"{checkpoint} holds a {kind}; this stage evaluates decoders and encoders")


def print_report(report: dict, *, show: int) -> None:
    if report["kind"] == "encoder":
        print(" | ".join(f"{k} {v:.4g}" for k, v in sorted(report.items()) if k.startswith("val_")))
        return
    for r in report["examples"][:show]:
        mark = "ok " if r["correct"] else "MISS"
        print(f"  [{mark}] {r['prompt']} -> {r['completion']!r} (answer: {r['answer']})")
    line = f"cloze accuracy: {report['cloze_accuracy']:.1%} of {report['cloze_count']}"
    for name in ("seen", "held_out"):
        if f"cloze_accuracy_{name}" in report:
            line += f" | {name}: {report[f'cloze_accuracy_{name}']:.1%}"
    if "val_ppl" in report:
        line += f" | validation perplexity: {report['val_ppl']:.2f}"
    print(line)


@stage_main("evaluate")
def main(cfg: DictConfig) -> None:
    report = evaluate(cfg, cfg.checkpoint)
    print_report(report, show=cfg.eval.show)
    print(f"report: {storage.join(report['checkpoint'], EVAL_FILE)}")


if __name__ == "__main__":
    main()
