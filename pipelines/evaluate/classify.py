"""The `classify` suite (sequence_classifier): accuracy on the classification test set; label names and sequence
length come from the checkpoint's meta.json."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from models.tokenizer import Tokenizer
from pipelines.checkpoints import Loaded
from pipelines.data import records
from pipelines.errors import CheckpointError
from pipelines.evaluate.common import eval_file, rate
from pipelines.storage import read_jsonl


@torch.no_grad()
def classify(model, tok: Tokenizer, items: list[dict], *, labels: list[str], seq_len: int,
             batch_size: int) -> list[dict]:
    """Each {text, label} item with the "predicted" label of a sequence classifier and whether it is "correct"."""
    results = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        ids = torch.tensor([records.pad(records.classify_ids(tok, item["text"], seq_len), seq_len, tok.pad_id)
                            for item in chunk])  # (B, seq_len)
        predicted = model(ids, attention_mask=ids != tok.pad_id).argmax(dim=-1)  # (B,)
        results += [{**item, "predicted": labels[p], "correct": labels[p] == item["label"]}
                    for item, p in zip(chunk, predicted.tolist())]
    return results


def run_classify(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    labels, seq_len = ckpt.meta.get("labels"), ckpt.meta.get("seq_len")
    if not labels or not seq_len:
        raise CheckpointError(f"{ckpt.path}/meta.json has no \"labels\" (class names) or \"seq_len\": the classify "
                              f"suite needs the checkpoint of a classification fine-tune")
    items = read_jsonl(eval_file(cfg, "classify_path", "task/classify_test.jsonl", "text, label"))
    known = [item for item in items if item["label"] in labels]
    results = classify(ckpt.model, ckpt.tok, known, labels=list(labels), seq_len=seq_len,
                       batch_size=cfg.eval.batch_size)
    return {"accuracy": rate(results), "count": len(results), "skipped": len(items) - len(known)}
