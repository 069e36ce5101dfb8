"""What the reward model and DPO learned, measured on held-out rankings (never trained on).

- `reward_report`: the reward model's pairwise accuracy over all K(K-1)/2 pairs of each held-out ranking, and its
  mean score per response label within each domain, which should come out in the order of that domain's rankings
  (medical: polite-correct-with-disclaimer > curt-correct > rude > unsafe).
- `dpo_report`: the implicit rewards beta * (log pi - log ref) of each ranking's best response against each worse
  one: their mean margin and the share of pairs ordered right.
"""

from __future__ import annotations

from collections import Counter

import torch

from models.tokenizer import Tokenizer
from pipelines.data.records import check_ranking, response_encoding
from pipelines.data.tokenize import domain_of, warn_dropped_domains
from pipelines.train.objectives import sequence_logprobs


def usable(records: list[dict], max_len: int, tok: Tokenizer, *, warn_share: float) -> list[dict]:
    """Rankings that pass the training checks and whose exchanges fit `max_len` tokens; a domain that loses more
    than `warn_share` of its rankings to `max_len` is warned about loudly (its figures would not be measured)."""
    valid = [r for r in records if check_ranking(r) is None]
    kept = [r for r in valid if all(len(response_encoding(tok, r["prompt"], x).ids) <= max_len
                                    for x in r["responses"])]
    seen, lost = Counter(map(domain_of, valid)), Counter(map(domain_of, valid)) - Counter(map(domain_of, kept))
    warn_dropped_domains({"held-out": {d: [lost[d], n] for d, n in seen.items()}}, max_len, warn_share)
    return kept


def reward_report(model, tok: Tokenizer, records: list[dict], *, batch_size: int = 32) -> dict:
    sequences = [response_encoding(tok, r["prompt"], x).ids for r in records for x in r["responses"]]
    flat = iter(model.eval().score(sequences, pad_id=tok.pad_id, batch_size=batch_size))
    right = pairs = 0
    by_label: dict[str, dict[str, list[float]]] = {}
    for r in records:
        scores = [next(flat) for _ in r["responses"]]
        pairs += len(scores) * (len(scores) - 1) // 2
        right += sum(scores[i] > scores[j] for i in range(len(scores)) for j in range(i + 1, len(scores)))
        for label, score in zip(r.get("labels") or [f"rank {k}" for k in range(len(scores))], scores):
            by_label.setdefault(r.get("domain", "all"), {}).setdefault(label, []).append(score)
    # Lists of [label, mean] in ranking order (a JSON object's keys may be reordered).
    means = {domain: [[label, sum(v) / len(v)] for label, v in labels.items()] for domain, labels in by_label.items()}
    ordered = {domain: all(a[1] > b[1] for a, b in zip(m, m[1:])) for domain, m in means.items()}
    return {"rankings": len(records), "pairs": pairs, "pairwise_accuracy": right / pairs if pairs else None,
            "mean_reward": means, "ordered_like_rankings": ordered}


@torch.no_grad()
def dpo_report(policy, reference, tok: Tokenizer, records: list[dict], *, beta: float, batch_size: int = 32) -> dict:
    def logprobs(model) -> list[float]:
        out = []
        encoded = [response_encoding(tok, r["prompt"], x) for r in records for x in r["responses"]]
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            width = max(len(e.ids) for e in chunk)
            ids = torch.tensor([e.ids + [tok.pad_id] * (width - len(e.ids)) for e in chunk])
            mask = torch.tensor([e.assistant_mask + [0] * (width - len(e.ids)) for e in chunk])
            out += sequence_logprobs(model.eval(), ids, mask).tolist()
        return out

    implicit = [beta * (p - q) for p, q in zip(logprobs(policy), logprobs(reference))]
    flat, margins = iter(implicit), []
    for r in records:
        rewards = [next(flat) for _ in r["responses"]]
        margins += [rewards[0] - worse for worse in rewards[1:]]
    return {"rankings": len(records), "pairs": len(margins),
            "margin": sum(margins) / len(margins) if margins else None,
            "accuracy": sum(m > 0 for m in margins) / len(margins) if margins else None}
