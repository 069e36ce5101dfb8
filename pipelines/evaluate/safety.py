"""The `safety` suite (decoder): the held-out unsafe prompts (eval/unsafe.jsonl) and the questions about held-out
medical conditions (eval/medical.jsonl), asked through the chat template: the polite-refusal rate on unsafe prompts,
the disclaimer rate on medical answers, the over-refusal rate (medical questions refused), the rude rate over all
replies and, with `eval.reward_model`, the reward model's mean score of the replies. Held-out prompts only: no
alignment stage trains on them."""

from __future__ import annotations

from omegaconf import DictConfig

from models.tokenizer import Tokenizer
from pipelines import checkpoints
from pipelines.checkpoints import Loaded
from pipelines.corpus import detectors
from pipelines.errors import ConfigError
from pipelines.evaluate.common import chat_prompt, eval_file, fitting, greedy, rate
from pipelines.storage import read_jsonl


def safety(model, tok: Tokenizer, unsafe: list[dict], medical: list[dict], *, max_new_tokens: int,
           batch_size: int) -> tuple[list[dict], list[list[int]], list[list[int]]]:
    """Unsafe prompts ({prompt}) and medical questions ({question}) asked through the chat template: (each reply
    with the detectors' verdicts, the prompts' ids, the replies' generated ids with their stop token)."""
    items = [{**item, "set": "unsafe", "question": item["prompt"]} for item in unsafe]
    items += [{**item, "set": "medical"} for item in medical]
    prompts = [chat_prompt(tok, item["question"]) for item in items]
    outputs = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        reply = tok.decode(tokens).strip()
        results.append({**item, "reply": reply, "refusal": detectors.is_polite_refusal(reply),
                        "disclaimer": detectors.has_disclaimer(reply), "rude": detectors.is_rude(reply)})
    return results, prompts, [tokens + ([stop] if stop is not None else []) for tokens, stop in outputs]


def run_safety(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e, model, tok = cfg.eval, ckpt.model, ckpt.tok
    unsafe = [item for item in read_jsonl(eval_file(cfg, "unsafe_path", "eval/unsafe.jsonl", "prompt, held_out"))
              if item.get("held_out")][:e.safety_limit]
    medical = [item for item in read_jsonl(eval_file(cfg, "medical_path", "eval/medical.jsonl",
                                                     "question, condition, held_out")) if item.get("held_out")]
    medical = medical[:e.safety_limit]
    unsafe, skipped_unsafe = fitting(model, unsafe, lambda item: chat_prompt(tok, item["prompt"]),
                                     e.safety_max_new_tokens, "safety (unsafe)")
    medical, skipped_medical = fitting(model, medical, lambda item: chat_prompt(tok, item["question"]),
                                       e.safety_max_new_tokens, "safety (medical)")
    results, prompts, replies = safety(model, tok, unsafe, medical, max_new_tokens=e.safety_max_new_tokens,
                                       batch_size=e.batch_size)
    on_unsafe = [r for r in results if r["set"] == "unsafe"]
    on_medical = [r for r in results if r["set"] == "medical"]
    section = {"refusal": rate(on_unsafe, "refusal"), "disclaimer": rate(on_medical, "disclaimer"),
               "over_refusal": rate(on_medical, "refusal"), "rude": rate(results, "rude"),
               "unsafe_count": len(on_unsafe), "medical_count": len(on_medical),
               "skipped": skipped_unsafe + skipped_medical, "reward": None}
    if e.reward_model:
        scorer = checkpoints.load(e.reward_model, setting="eval.reward_model", kinds=("scalar_model",),
                                  purpose="the safety suite's reward")
        if scorer.tok.sha256 != tok.sha256:
            raise ConfigError(f"eval.reward_model={e.reward_model} uses another tokenizer than {ckpt.path}")
        # Scored as the RLHF reward scores a rollout (the tokens generated, the empty and unfinished terms), without
        # rule terms: the same cut-off reply no longer reads -3.4 here and -17.7 in RLHF.
        scores = scorer.model.score_replies(prompts, replies, tok=tok, empty_score=e.reward_empty_score,
                                            unfinished_penalty=e.reward_unfinished_penalty, batch_size=e.batch_size)
        for r, score in zip(results, scores):
            r["reward"] = score
        section["reward"] = sum(r["reward"] for r in results) / len(results) if results else None
    return section | {"samples": on_unsafe[:e.samples] + on_medical[:e.samples]}
