"""What the suites share: batched greedy generation under the one stop rule, the chat prompt, fitting prompts into
the model's context, rates over results, and the files a suite reads (eval.<setting> or the built-in corpus)."""

from __future__ import annotations

import logging
from typing import Callable

from omegaconf import DictConfig

from models.generate import generate
from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.errors import MissingPathError

log = logging.getLogger(__name__)


def greedy(model, tok: Tokenizer, prompts: list[list[int]], *, max_new_tokens: int,
           batch_size: int) -> list[tuple[list[int], int | None]]:
    """Greedy continuations of `prompts` in batches, each ended by the one stop rule (`tok.stop_ids`) or the token
    cap: per prompt, (new tokens without the stop token, the stop token that ended it or None)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gen = generate(model, prompts[i:i + batch_size], max_new_tokens=max_new_tokens, temperature=0.0,
                       stop_ids=tok.stop_ids, pad_id=tok.pad_id)
        for tokens, reason in zip(gen.tokens, gen.finish_reasons):
            out.append((tokens[:-1], tokens[-1]) if reason == "stop" else (tokens, None))
    return out


def fitting(model, items: list[dict], prompt: Callable[[dict], list[int]], max_new_tokens: int,
            what: str) -> tuple[list[dict], int]:
    """The items whose prompt leaves room for `max_new_tokens` in the model's max_seq_len, and how many do not
    (logged: they are left out)."""
    room = model.cfg.max_seq_len - max_new_tokens
    kept = [item for item in items if len(prompt(item)) <= room]
    if len(kept) < len(items):
        log.warning("%s: %d of %d prompts leave no room for %d new tokens in max_seq_len=%d; skipped", what,
                    len(items) - len(kept), len(items), max_new_tokens, model.cfg.max_seq_len)
    return kept, len(items) - len(kept)


def chat_prompt(tok: Tokenizer, question: str) -> list[int]:
    return tok.encode_chat([{"role": "user", "content": question}], add_generation_prompt=True).ids


def rate(results: list[dict], key: str = "correct") -> float | None:
    """The share of `results` whose `key` is true; None when there are none."""
    return sum(bool(r[key]) for r in results) / len(results) if results else None


def split_held_out(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(results about entities that fine-tuning data names, results about held-out ones: described only in the
    pre-training corpus)."""
    return [r for r in results if not r.get("held_out")], [r for r in results if r.get("held_out")]


def builtin_file(cfg: DictConfig, *parts: str) -> str:
    from pipelines.data.build import builtin_corpus  # imports Ray: only when the built-in corpus is used

    return storage.join(builtin_corpus(cfg.data), *parts)


def eval_file(cfg: DictConfig, setting: str, builtin: str, fields: str) -> str:
    """The file `eval.<setting>` names, else the built-in corpus's `builtin`."""
    path = cfg.eval[setting] or builtin_file(cfg, builtin)
    if not storage.exists(path):
        raise MissingPathError(f"eval.{setting}={path} does not exist (jsonl: {fields})")
    return path
