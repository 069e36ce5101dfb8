"""The rollout role: a copy of the policy that samples responses to prompts.

`Rollout` works in-process (tests, a notebook); `RolloutActor` hosts it as a Ray actor, N of them per run
(`align.rollout.num_workers`). A worker samples with the KV-cache batched generator (models/generate.py) and
returns each response's tokens and their log-probabilities under the policy it holds, with that policy's version:
the driver refuses a batch made by a version other than the current one. Weights arrive as numpy arrays through
the object store (`set_weights`), put there once per update by the driver and read zero-copy by every worker.
A restarted worker (after its process died) comes back with the starting weights at version 0 until re-synced.
"""

from __future__ import annotations

import os
import time

import ray

from models.generate import generate
from pipelines.align.batch import load_numpy_weights, load_role_model, pick_device


class Rollout:
    def __init__(self, checkpoint: str, *, num_gpus: float = 0, torch_threads: int | None = None):
        self.device = pick_device(num_gpus)
        self.model, self.tok, _ = load_role_model(checkpoint, self.device, torch_threads)
        self.version = 0

    def pid(self) -> int:
        return os.getpid()

    def get_version(self) -> int:
        return self.version

    def set_weights(self, version: int, weights: dict) -> float:
        """Load the learner's weights (numpy arrays) as policy `version`; returns the seconds it took."""
        start = time.perf_counter()
        load_numpy_weights(self.model, weights)
        self.version = version
        return time.perf_counter() - start

    def generate(self, prompts: list[list[int]], *, max_new_tokens: int, temperature: float, top_p: float,
                 seed: int) -> dict:
        """Sample one response per prompt, ending by the stop rule (<|end|> or eos, `Tokenizer.stop_ids`) or at
        max_new_tokens."""
        start = time.perf_counter()
        out = generate(self.model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       stop_ids=self.tok.stop_ids, pad_id=self.tok.pad_id, seed=seed)
        return {"tokens": out.tokens, "logprobs": out.logprobs, "finish_reasons": out.finish_reasons,
                "version": self.version, "seconds": time.perf_counter() - start}


RolloutActor = ray.remote(Rollout)
