"""Evaluation: `python -m pipelines.evaluate checkpoint=runs/pretrain/<run>` — does the model know the facts?

Reports the validation perplexity of a causal-LM checkpoint on its validation shards and cloze accuracy on the
built-in facts (`eval/cloze.jsonl`: "The capital of France is" -> "Paris"): greedy KV-cache completion of each
prompt, counted correct when the completion starts with the answer. Held-out entities (whose facts appear only
in the pre-training corpus) are reported separately — later stages compare against them.
"""

from __future__ import annotations

import json
import logging
import math

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from models import load_checkpoint
from models.generate import generate
from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.trainer import resolve_init_from

log = logging.getLogger(__name__)


def load_model(checkpoint: str) -> tuple[torch.nn.Module, Tokenizer, dict]:
    """(model in eval mode, its tokenizer, meta) from a checkpoint or run directory (local or URI)."""
    with storage.local_dir(resolve_init_from(checkpoint)) as path:
        model, meta = load_checkpoint(path)
        tok = Tokenizer(storage.read_bytes(storage.join(path, "tokenizer.model")))
    return model.eval(), tok, meta


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
    lines = storage.read_bytes(path).decode().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return items[:limit] if limit else items


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
            results.append({**item, "completion": completion, "correct": completion.startswith(item["answer"])})
    report = {"cloze_accuracy": _accuracy(results), "cloze_count": len(results), "examples": results}
    for name, held in (("seen", False), ("held_out", True)):
        subset = [r for r in results if bool(r.get("held_out")) == held]
        if subset:
            report[f"cloze_accuracy_{name}"] = _accuracy(subset)
    return report


def _accuracy(results: list[dict]) -> float:
    return sum(r["correct"] for r in results) / max(1, len(results))


@torch.no_grad()
def perplexity(model, files: list[str], *, batch_size: int, max_batches: int | None) -> float:
    """Token-level perplexity of a causal LM over CLM shard files (blocks of seq_len + 1 tokens)."""
    import pyarrow.parquet as pq

    total, count, batches = 0.0, 0, 0
    for path in files:
        fs, p = storage.filesystem(path)
        table = pq.read_table(p, filesystem=fs)
        blocks = torch.from_numpy(table.column("input_ids").combine_chunks().flatten().to_numpy()
                                  .reshape(table.num_rows, -1).astype("int64"))
        for i in range(0, len(blocks), batch_size):
            if max_batches and batches >= max_batches:
                return math.exp(total / count)
            batches += 1
            ids = blocks[i:i + batch_size]
            logits = model(ids[:, :-1])
            total += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
            count += ids[:, 1:].numel()
    return math.exp(total / max(1, count))


def builtin_eval_file(cfg: DictConfig, name: str) -> str:
    from pipelines.data import builtin_corpus

    return storage.join(builtin_corpus(cfg.data), "eval", name)


def evaluate(cfg: DictConfig, checkpoint: str, *, valid_files: list[str] | None = None) -> dict:
    ecfg = cfg.eval
    model, tok, meta = load_model(checkpoint)
    items = read_jsonl(ecfg.cloze_path or builtin_eval_file(cfg, "cloze.jsonl"), ecfg.cloze_limit)
    report = cloze(model, tok, items, max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size,
                   prefix_bos=ecfg.prefix_bos)
    if valid_files:
        report["val_ppl"] = perplexity(model, valid_files, batch_size=ecfg.batch_size, max_batches=ecfg.ppl_batches)
    report["checkpoint"], report["step"] = checkpoint, meta.get("step")
    return report


def print_report(report: dict, *, show: int) -> None:
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


@hydra.main(config_path="../conf", config_name="evaluate", version_base=None)
def main(cfg: DictConfig) -> None:
    valid = None
    if cfg.shards:
        valid = storage.read_json(storage.join(storage.absolute(cfg.shards), "manifest.json"))["splits"]["valid"]["files"]
    report = evaluate(cfg, cfg.checkpoint, valid_files=valid)
    print_report(report, show=cfg.eval.show)


if __name__ == "__main__":
    main()
