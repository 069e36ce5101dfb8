"""The learner role: the policy (and for PPO the value model) and their optimizers.

`Learner` works in-process; `LearnerActor` hosts it, M of them per run (`align.learner.num_workers`, 1 by
default) doing data-parallel updates: each gets its part of every minibatch (parts may differ in size, one may be
empty), divides its loss by the minibatch's token count (sequence count for GRPO) summed over all learners, and
after each backward pass the gradients are summed over `torch.distributed` (gloo on CPU, nccl on GPU) before
clipping and the optimizer step, so M learners end with the weights one learner would have on the combined
minibatches. The statistics are summed the same way: each is the whole minibatch's.

Log-probabilities are those of the distribution the rollouts sample, softmax(logits / `temperature`), and are
taken with dropout off: the models stay in eval mode for training too (as OpenRLHF and veRL disable dropout in
RLHF), so that at the first step the learner's log-probs are the rollout's and the ratio is exactly 1.

An update receives minibatches of samples — prompt ids, response tokens, and per response the behaviour policy's
log-probs, the reference's, and the advantages (per token for PPO, per sequence for GRPO) with PPO's returns and
old values — and runs the algorithm's loss (pipelines/align/algorithms.py) on each, in order.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

import ray
import torch
import torch.distributed as dist

from models import load_checkpoint, load_state, save_checkpoint, save_state
from models.heads import ScalarModel
from pipelines import storage
from pipelines.align.algorithms import (entropy_from_logits, grpo_loss, kl_k3, logprobs_from_logits, masked_mean,
                                        ppo_policy_loss, ppo_value_loss)
from pipelines.align.batch import layout, load_role_model, numpy_weights, pick_device, response_view

STATE = "learner_state.safetensors"


class Learner:
    def __init__(self, checkpoint: str, *, algorithm: str, value_checkpoint: str | None, settings: dict,
                 num_gpus: float = 0, torch_threads: int | None = None, rank: int = 0, world: int = 1,
                 seed: int = 0):
        torch.manual_seed(seed)
        self.device = pick_device(num_gpus)
        self.policy, self.tok, self.meta = load_role_model(checkpoint, self.device, torch_threads)  # eval mode
        self.algorithm, self.s, self.rank, self.world = algorithm, settings, rank, world
        self.value = None
        if algorithm == "ppo":
            self.value, _, _ = load_role_model(value_checkpoint, self.device, None)
            if not isinstance(self.value, ScalarModel):
                raise ValueError(f"{value_checkpoint} is not a scalar (reward) model: PPO's critic starts from one")
        self.optimizers = {"policy": self.optimizer(self.policy, settings["lr"])}
        if self.value is not None:
            self.optimizers["value"] = self.optimizer(self.value, settings["value_lr"])

    def optimizer(self, model, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=self.s["weight_decay"])

    # ---- the process group of M learners ----

    def address(self) -> str:
        """host:port where rank 0 listens for the other learners."""
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def join_group(self, address: str) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{address}", rank=self.rank, world_size=self.world)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """`x` summed over the learners (the tensor itself when there is one)."""
        if self.world > 1:
            x = x.to(self.device)
            dist.all_reduce(x)
        return x.cpu()

    def sum_gradients(self, model) -> None:
        """Each learner's loss is its share of the minibatch's: the gradients add up (a learner with an empty part
        adds zeros, so that every learner joins every all-reduce)."""
        if self.world == 1:
            return
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)

    # ---- what the driver asks ----

    def pid(self) -> int:
        return os.getpid()

    def weights(self) -> dict:
        return numpy_weights(self.policy)

    @torch.no_grad()
    def values(self, prompts: list[list[int]], responses: list[list[int]]) -> list[list[float]]:
        """The critic's value of the state before each response token (PPO)."""
        ids, _, _ = layout(prompts, responses, self.tok.pad_id, self.device)
        values = self.value(ids[:, :-1], per_token=True).float()  # (N, L - 1)
        return response_view(values, prompts, responses)

    def update(self, minibatches: list[dict], kl_coef: float) -> dict:
        """One optimizer step per minibatch; returns the mean of each statistic over them."""
        start, totals = time.perf_counter(), {}
        for mb in minibatches:
            stats = self.step(mb, kl_coef)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
        out = {k: v / max(1, len(minibatches)) for k, v in totals.items()}
        return out | {"seconds": time.perf_counter() - start}

    def stat_names(self) -> list[str]:
        names = ["loss", "policy_loss", "clip_fraction", "entropy", "kl_k3"]
        return names + (["value_loss", "value_clip_fraction"] if self.algorithm == "ppo" else [])

    def step(self, mb: dict, kl_coef: float) -> dict:
        """One optimizer step on this learner's part of a minibatch; returns the whole minibatch's statistics."""
        local = torch.tensor([sum(len(r) for r in mb["responses"]), len(mb["responses"])], dtype=torch.float64)
        tokens, sequences = self.all_reduce(local).tolist()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        stats = {}
        if mb["responses"]:
            loss, stats = self.loss(mb, kl_coef, tokens, sequences)
            loss.backward()
        for model in (self.policy, self.value):
            if model is not None:
                self.sum_gradients(model)
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.s["grad_clip"])
        for optimizer in self.optimizers.values():
            optimizer.step()
        names = self.stat_names()
        totals = self.all_reduce(torch.tensor([stats.get(k, 0.0) for k in names], dtype=torch.float64))
        return dict(zip(names, totals.tolist()))

    def loss(self, mb: dict, kl_coef: float, tokens: float, sequences: float) -> tuple[torch.Tensor, dict]:
        """The algorithm's loss on this part, divided by the whole minibatch's `tokens` (PPO) or `sequences`
        (GRPO), and its statistics likewise (shares that sum over the learners to the minibatch's values)."""
        per_token = {"old_logp": mb["old_logp"], "ref_logp": mb["ref_logp"]}
        if self.algorithm == "ppo":
            per_token |= {"advantages": mb["advantages"], "returns": mb["returns"], "old_values": mb["old_values"]}
        ids, mask, t = layout(mb["prompts"], mb["responses"], self.tok.pad_id, self.device, per_token)
        temperature = self.s["temperature"]
        logits = self.policy(ids[:, :-1])  # (N, L - 1, V)
        logp = logprobs_from_logits(logits, ids[:, 1:], temperature)
        with torch.no_grad():
            entropy = float(masked_mean(entropy_from_logits(logits, temperature), mask, total=tokens))
            k3 = float(masked_mean(kl_k3(logp, t["ref_logp"]), mask, total=tokens))
        if self.algorithm == "grpo":
            advantages = torch.as_tensor(mb["advantages"], dtype=torch.float32, device=self.device)
            loss, stats = grpo_loss(logp, t["old_logp"], t["ref_logp"], advantages, mask, self.s["clip"], kl_coef,
                                    total=sequences)
            stats = {"policy_loss": stats["policy_loss"], "clip_fraction": stats["clip_fraction"]}
        else:
            policy_loss, clipped = ppo_policy_loss(logp, t["old_logp"], t["advantages"], mask, self.s["clip"],
                                                   total=tokens)
            values = self.value(ids[:, :-1], per_token=True).float()
            value_loss, value_clipped = ppo_value_loss(values, t["old_values"], t["returns"], mask,
                                                       self.s["value_clip"], total=tokens)
            loss = policy_loss + self.s["value_coef"] * value_loss
            stats = {"policy_loss": policy_loss.item(), "clip_fraction": clipped.item(),
                     "value_loss": value_loss.item(), "value_clip_fraction": value_clipped.item()}
        return loss, stats | {"loss": loss.item(), "entropy": entropy, "kl_k3": k3}

    # ---- checkpoints ----

    def save(self, path: str, meta: dict) -> None:
        """Rank 0 writes the policy (a plain checkpoint serving loads), the value model and the optimizers."""
        if self.rank != 0:
            return
        with tempfile.TemporaryDirectory() as local:
            save_checkpoint(os.path.join(local, "policy"), self.policy, tokenizer_model=self.tok.model_proto,
                            meta=meta)
            if self.value is not None:
                save_checkpoint(os.path.join(local, "value"), self.value, tokenizer_model=self.tok.model_proto,
                                meta=meta)
            save_state(os.path.join(local, STATE), {k: o.state_dict() for k, o in self.optimizers.items()})
            storage.upload_dir(local, path)

    def load(self, path: str) -> None:
        with storage.local_dir(path) as local:
            for name, model in (("policy", self.policy), ("value", self.value)):
                if model is not None:
                    saved, _ = load_checkpoint(os.path.join(local, name))
                    model.load_state_dict(saved.state_dict())
            state = load_state(os.path.join(local, STATE))
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state[name])


LearnerActor = ray.remote(Learner)
