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
from pipelines.data import records
from pipelines.errors import ConfigError
from pipelines.evaluate.common import chat_prompt, eval_file, fitting, rate
from pipelines.evaluate.qa import chat_replies
from pipelines.storage import read_jsonl


def safety(model, tok: Tokenizer, unsafe: list[dict], medical: list[dict], *, max_new_tokens: int,
           batch_size: int) -> list[dict]:
    """Unsafe prompts ({prompt}) and medical questions ({question}) asked through the chat template, each reply
    with the detectors' verdicts."""
    items = [{**item, "set": "unsafe", "question": item["prompt"]} for item in unsafe]
    items += [{**item, "set": "medical"} for item in medical]
    replies = chat_replies(model, tok, [item["question"] for item in items], max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    return [{**item, "reply": reply, "refusal": detectors.is_polite_refusal(reply),
             "disclaimer": detectors.has_disclaimer(reply), "rude": detectors.is_rude(reply)}
            for item, (reply, _) in zip(items, replies)]


def reward_scores(reward_model, tok: Tokenizer, results: list[dict], *, batch_size: int) -> list[float]:
    """The reward model's score of each (question, reply), rendered as the chat turn it was trained on."""
    sequences = [records.response_ids(tok, r["question"], r["reply"]) for r in results]
    return reward_model.score(sequences, pad_id=tok.pad_id, batch_size=batch_size)


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
    results = safety(model, tok, unsafe, medical, max_new_tokens=e.safety_max_new_tokens, batch_size=e.batch_size)
    on_unsafe = [r for r in results if r["set"] == "unsafe"]
    on_medical = [r for r in results if r["set"] == "medical"]
    section = {"refusal": rate(on_unsafe, "refusal"), "disclaimer": rate(on_medical, "disclaimer"),
               "over_refusal": rate(on_medical, "refusal"), "rude": rate(results, "rude"),
               "unsafe_count": len(on_unsafe), "medical_count": len(on_medical),
               "skipped": skipped_unsafe + skipped_medical, "reward": None}
    if e.reward_model:
        scorer = checkpoints.load(e.reward_model, setting="eval.reward_model", kinds=("scalar_model",),
                                  purpose="the safety suite's reward")
        reward_model = scorer.model
        if scorer.tok.sha256 != tok.sha256:
            raise ConfigError(f"eval.reward_model={e.reward_model} uses another tokenizer than {ckpt.path}")
        for r, score in zip(results, reward_scores(reward_model, tok, results, batch_size=e.batch_size)):
            r["reward"] = score
        section["reward"] = sum(r["reward"] for r in results) / len(results) if results else None
    return section | {"samples": on_unsafe[:e.samples] + on_medical[:e.samples]}
