"""The `safety` suite (decoder): is the model a safe and helpful medical assistant? Judged by the judge
(pipelines/evaluate/judge.py), which no reward uses, on prompts no fine-tuning or alignment stage trains on:

- the held-out unsafe requests (eval/unsafe.jsonl): `refusal` is the clean-refusal rate on the actions held out
  whole (every phrasing of a request never seen), `refusal_framing` on the single phrasings held out of actions
  seen in other words (the easier test);
- the questions about the held-out medical conditions (eval/medical.jsonl): `medical_correct` (the asked fact of
  that condition), `disclaimer` (the disclaimer's meaning), `safe_and_helpful` (correct, disclaimed and polite) and
  `over_refusal` (refused); `medical_correct_seen` on questions about conditions the instruction data covers;
- `rude` over every reply;
- with `eval.reward_model`, `reward`: the reward model's mean score of the replies, as the RLHF reward pays it.

Every sample keeps the judge's verdicts and, under "rules", the rule that decided each.
"""

from __future__ import annotations

from omegaconf import DictConfig

from models.tokenizer import Tokenizer
from pipelines import checkpoints
from pipelines.checkpoints import Loaded
from pipelines.errors import ConfigError
from pipelines.evaluate import judge
from pipelines.evaluate.common import chat_prompt, eval_file, fitting, greedy, rate
from pipelines.storage import read_jsonl


def safety(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int,
           batch_size: int) -> tuple[list[dict], list[list[int]], list[list[int]]]:
    """Each item ({prompt} unsafe, {question, condition, kind} medical) asked through the chat template: (each
    reply with the judge's verdicts, the prompts' ids, the replies' generated ids with their stop token)."""
    prompts = [chat_prompt(tok, item["question"]) for item in items]
    outputs = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        reply = tok.decode(tokens).strip()
        results.append({**item, "reply": reply, **judge.verdicts(item, reply)})
    return results, prompts, [tokens + ([stop] if stop is not None else []) for tokens, stop in outputs]


def spread(items: list[dict], limit: int | None) -> list[dict]:
    """At most `limit` of `items`, taken evenly through the list (every condition, not the first few)."""
    if not limit or len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def questions(cfg: DictConfig, tok: Tokenizer, model) -> tuple[dict[str, list[dict]], int]:
    """{set name: items} of the suite and how many prompts leave no room for a reply (skipped)."""
    e = cfg.eval
    unsafe = read_jsonl(eval_file(cfg, "unsafe_path", "eval/unsafe.jsonl", "prompt, category, held_out"))
    medical = read_jsonl(eval_file(cfg, "medical_path", "eval/medical.jsonl", "question, condition, kind, held_out"))
    sets = {"unsafe": [{**u, "question": u["prompt"]} for u in unsafe if u.get("held_out")],
            "medical": [m for m in medical if m.get("held_out")],
            "medical_seen": spread([m for m in medical if not m.get("held_out")], e.medical_seen_limit)}
    skipped = 0
    for name, items in sets.items():
        items = items if name == "medical_seen" else items[:e.safety_limit] if e.safety_limit else items
        sets[name], lost = fitting(model, items, lambda item: chat_prompt(tok, item["question"]),
                                   e.safety_max_new_tokens, f"safety ({name})")
        skipped += lost
    return sets, skipped


def run_safety(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e, model, tok = cfg.eval, ckpt.model, ckpt.tok
    sets, skipped = questions(cfg, tok, model)
    items = [{**item, "set": name} for name, group in sets.items() for item in group]
    results, prompts, replies = safety(model, tok, items, max_new_tokens=e.safety_max_new_tokens,
                                       batch_size=e.batch_size)
    of = {name: [r for r in results if r["set"] == name] for name in sets}
    by_action = [r for r in of["unsafe"] if r.get("held_out_by", "action") == "action"]
    by_framing = [r for r in of["unsafe"] if r.get("held_out_by") == "framing"]
    asked = of["unsafe"] + of["medical"]
    section = {"refusal": rate(by_action, "clean_refusal"), "refusal_framing": rate(by_framing, "clean_refusal"),
               "refusal_any": rate(by_action, "refusal"), "medical_correct": rate(of["medical"], "medical_correct"),
               "medical_correct_seen": rate(of["medical_seen"], "medical_correct"),
               "disclaimer": rate(of["medical"], "disclaims"), "safe_and_helpful": rate(of["medical"],
                                                                                        "safe_and_helpful"),
               "over_refusal": rate(of["medical"], "refusal"), "rude": rate(asked, "rude"),
               "unsafe_count": len(by_action), "framing_count": len(by_framing), "medical_count": len(of["medical"]),
               "medical_seen_count": len(of["medical_seen"]), "skipped": skipped, "reward": None}
    if e.reward_model:
        scorer = checkpoints.load(e.reward_model, setting="eval.reward_model", kinds=("scalar_model",),
                                  purpose="the safety suite's reward")
        if scorer.tok.sha256 != tok.sha256:
            raise ConfigError(f"eval.reward_model={e.reward_model} uses another tokenizer than {ckpt.path}")
        # Scored as the RLHF reward scores a rollout (the tokens generated, the empty and unfinished terms), without
        # rule terms: the same cut-off reply no longer reads -3.4 here and -17.7 in RLHF.
        held = [i for i, r in enumerate(results) if r["set"] != "medical_seen"]
        scores = scorer.model.score_replies([prompts[i] for i in held], [replies[i] for i in held], tok=tok,
                                            empty_score=e.reward_empty_score,
                                            unfinished_penalty=e.reward_unfinished_penalty, batch_size=e.batch_size)
        for i, score in zip(held, scores):
            results[i]["reward"] = score
        section["reward"] = sum(scores) / len(scores) if scores else None
    return section | {"samples": by_action[:e.samples] + of["medical"][:e.samples] + by_framing[:e.samples // 4]}
