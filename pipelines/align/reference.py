"""The reference role: the frozen instruction-tuned model. Its log-probabilities of the sampled response tokens
are the other half of the KL term that keeps the policy near what it started from, taken at the rollouts' sampling
temperature like the policy's. `Reference` works in-process; `ReferenceActor` hosts it."""

from __future__ import annotations

import ray
import torch

from pipelines.align.algorithms import logprobs_from_logits
from pipelines.align.batch import layout, load_role_model, pick_device, response_view


class Reference:
    def __init__(self, checkpoint: str, *, num_gpus: float = 0, torch_threads: int | None = None,
                 batch_size: int = 32, temperature: float = 1.0):
        self.device = pick_device(num_gpus)
        self.model, self.tok, _ = load_role_model(checkpoint, self.device, torch_threads)
        self.batch_size, self.temperature = batch_size, temperature

    @torch.no_grad()
    def logprobs(self, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """log p_ref(token) at the sampling temperature of every response token, one list per response."""
        out: list[list[float]] = []
        for i in range(0, len(prompts), self.batch_size):
            p, r = prompts[i:i + self.batch_size], responses[i:i + self.batch_size]
            ids, _, _ = layout(p, r, self.tok.pad_id, self.device)
            logp = logprobs_from_logits(self.model(ids[:, :-1]), ids[:, 1:], self.temperature)  # (B, L - 1)
            out += response_view(logp, p, r)
        return out


ReferenceActor = ray.remote(Reference)
