"""The `summarize` suite (decoder): ROUGE-L F1 of greedy summaries of the summarisation test set."""

from __future__ import annotations

from omegaconf import DictConfig
from rouge_score import rouge_scorer

from models.tokenizer import Tokenizer
from pipelines.checkpoints import Loaded
from pipelines.data import records
from pipelines.errors import ConfigError
from pipelines.evaluate.common import eval_file, greedy
from pipelines.storage import read_jsonl


def summary_prompt(tok: Tokenizer, document: str, room: int) -> tuple[list[int], bool]:
    """The chat prompt asking for `document`'s summary in at most `room` tokens, and whether the document had to be
    cut (at a token, as fine-tuning with data.too_long=truncate cuts it) to fit."""
    ids = tok.encode_chat(records.summarize_messages(document), add_generation_prompt=True).ids
    if len(ids) <= room:
        return ids, False
    pieces = tok.encode(document)
    for keep in range(len(pieces) - (len(ids) - room), 0, -1):  # decoding and re-encoding may shift a token
        ids = tok.encode_chat(records.summarize_messages(tok.decode(pieces[:keep])), add_generation_prompt=True).ids
        if len(ids) <= room:
            return ids, True
    raise ConfigError(f"summarize: the instruction alone fills the {room} tokens that max_seq_len leaves beside "
                      f"eval.summarize_max_new_tokens; lower it")


def summaries(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy summaries of `items` ({document, summary}) asked through the chat template, with ROUGE-L F1; a
    document too long for the model's max_seq_len is cut ("truncated")."""
    room = model.cfg.max_seq_len - max_new_tokens
    encoded = [summary_prompt(tok, item["document"], room) for item in items]
    outputs = greedy(model, tok, [ids for ids, _ in encoded], max_new_tokens=max_new_tokens, batch_size=batch_size)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    results = []
    for item, (_, cut), (tokens, _) in zip(items, encoded, outputs):
        reply = tok.decode(tokens).strip()
        results.append({**item, "reply": reply, "rougeL": scorer.score(item["summary"], reply)["rougeL"].fmeasure,
                        "truncated": cut})
    return results


def run_summarize(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e = cfg.eval
    items = read_jsonl(eval_file(cfg, "summarize_path", "task/summarize_test.jsonl", "document, summary"),
                       e.summarize_limit)
    results = summaries(ckpt.model, ckpt.tok, items, max_new_tokens=e.summarize_max_new_tokens,
                        batch_size=e.batch_size)
    mean = sum(r["rougeL"] for r in results) / len(results) if results else None
    return {"rougeL": mean, "count": len(results), "truncated": sum(r["truncated"] for r in results),
            "samples": results[:e.samples]}
