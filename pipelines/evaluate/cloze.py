"""The `cloze` suite (decoder): greedy completions of the built-in facts' cloze prompts ("The capital of France is"
-> "Paris"), correct when the completion starts with the answer as a whole word (`answer_matches`). Held-out
entities (whose facts appear only in the pre-training corpus) are reported apart: later stages compare on them."""

from __future__ import annotations

import re

from omegaconf import DictConfig

from models.tokenizer import Tokenizer
from pipelines.checkpoints import Loaded
from pipelines.evaluate.common import eval_file, greedy, rate, split_held_out
from pipelines.storage import read_jsonl


# What follows an answer for it to count as a whole word: no word character, nor ".5" / ",000" / ":30".
ANSWER_END = r"(?!\w)(?![.,:;]\w)"


def answer_matches(completion: str, answer: str) -> bool:
    """Whether `completion` starts with `answer` as a whole word: "Paris." and "Paris, the" count for "Paris";
    "metalloid." for "metal", "He." for "H", "26." and "2.5" for "2" do not. The rule of cloze completions."""
    return re.match(re.escape(answer) + ANSWER_END, completion) is not None


def cloze(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int,
          prefix_bos: bool) -> list[dict]:
    """Greedy completions of cloze prompts: each item with its "completion" and whether it is "correct".

    A cloze prompt is a sentence from the middle of a document. In pre-training <bos> only ever precedes a
    document's first sentence, so by default the prompt is given without it, as running text (as LAMBADA-style
    evaluations do); `prefix_bos` asks instead for the prompt as the start of a new document.
    """
    prefix = [tok.bos_id] if prefix_bos else []
    prompts = [prefix + tok.encode(item["prompt"]) for item in items]
    outputs = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        completion = tok.decode(tokens).strip()
        results.append({**item, "completion": completion, "correct": answer_matches(completion, item["answer"])})
    return results


def run_cloze(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e = cfg.eval
    items = read_jsonl(eval_file(cfg, "cloze_path", "eval/cloze.jsonl", "prompt, answer, held_out"), e.cloze_limit)
    results = cloze(ckpt.model, ckpt.tok, items, max_new_tokens=e.cloze_max_new_tokens, batch_size=e.batch_size,
                    prefix_bos=e.prefix_bos)
    seen, held_out = split_held_out(results)
    return {"accuracy": rate(results), "seen": rate(seen), "held_out": rate(held_out), "count": len(results),
            "samples": results[:e.samples]}
