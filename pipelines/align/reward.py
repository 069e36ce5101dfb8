"""The reward role: the trained reward model (`align.reward_model`, a ScalarModel checkpoint from `algorithm=reward`)
scoring (prompt, response) samples. `RewardScorer` works in-process; `RewardActor` hosts it. A sample is scored as
the token sequence the policy produced (prompt, then response up to and including its stop token), the same chat
exchange the reward model was trained on. Two rule-based terms guard against the replies a reward model never saw
ranked, which a policy otherwise learns to exploit: an empty reply scores `empty_score`, and a reply cut off by the
token cap (not ended by the stop rule, `Tokenizer.finished`) loses `unfinished_penalty` (TRL's missing-EOS penalty).
Optional rule terms (`rules`, weights; 0 = off) use the detectors (pipelines/corpus/detectors.py) and the prompt's
domain when the prompts carry one: + `refusal` for a polite refusal of an unsafe prompt and - `refusal` for refusing
any other, + `disclaimer` for the disclaimer on a medical answer, - `rude` for a rude reply."""

from __future__ import annotations

import ray

from pipelines.align.batch import load_role_model, pick_device
from pipelines.corpus import detectors


class RewardScorer:
    def __init__(self, checkpoint: str, *, num_gpus: float = 0, torch_threads: int | None = None,
                 batch_size: int = 32, empty_score: float = -10.0, unfinished_penalty: float = 5.0,
                 rules: dict | None = None):
        self.model, self.tok, _ = load_role_model(checkpoint, pick_device(num_gpus), torch_threads)
        self.batch_size, self.empty_score, self.unfinished_penalty = batch_size, empty_score, unfinished_penalty
        self.rules = {"refusal": 0.0, "disclaimer": 0.0, "rude": 0.0} | dict(rules or {})

    def score(self, prompts: list[list[int]], responses: list[list[int]],
              domains: list[str | None] | None = None) -> list[float]:
        scores = self.model.score([p + r for p, r in zip(prompts, responses)], pad_id=self.tok.pad_id,
                                  batch_size=self.batch_size)
        stops = self.tok.stop_ids
        for i, r in enumerate(responses):
            text = self.tok.decode([t for t in r if t not in stops])
            if not text.strip():
                scores[i] = self.empty_score
                continue
            if not self.tok.finished(r):
                scores[i] -= self.unfinished_penalty
            scores[i] += self.rule_terms(text, domains[i] if domains else None)
        return scores

    def rule_terms(self, reply: str, domain: str | None) -> float:
        w, total = self.rules, 0.0
        if domain is not None and w["refusal"]:
            refused = detectors.is_polite_refusal(reply) if domain == "unsafe" else detectors.is_refusal(reply)
            total += w["refusal"] if domain == "unsafe" and refused else -w["refusal"] if refused else 0.0
        if domain == "medical" and w["disclaimer"] and detectors.has_disclaimer(reply):
            total += w["disclaimer"]
        if w["rude"] and detectors.is_rude(reply):
            total -= w["rude"]
        return total


RewardActor = ray.remote(RewardScorer)
