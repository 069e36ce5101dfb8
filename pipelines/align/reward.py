"""The reward role: the trained reward model (`align.reward_model`, a ScalarModel checkpoint from
`algorithm=reward`) scoring (prompt, response) samples. `RewardScorer` works in-process; `RewardActor` hosts it.
A sample is scored as the token sequence the policy produced (prompt, then response up to and including <|end|>),
the same chat exchange the reward model was trained on."""

from __future__ import annotations

import ray

from pipelines.align.batch import load_role_model, pick_device


class RewardScorer:
    def __init__(self, checkpoint: str, *, num_gpus: float = 0, torch_threads: int | None = None,
                 batch_size: int = 32):
        self.model, self.tok, _ = load_role_model(checkpoint, pick_device(num_gpus), torch_threads)
        self.batch_size = batch_size

    def score(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        return self.model.score([p + r for p, r in zip(prompts, responses)], pad_id=self.tok.pad_id,
                                batch_size=self.batch_size)


RewardActor = ray.remote(RewardScorer)
