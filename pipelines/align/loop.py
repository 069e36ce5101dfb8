"""The actor-based RLHF loop (`algorithm=ppo|grpo`): separate Ray actors per role, driven from here.

    for each iteration:
        prompts   <- the next prompts of the Ray Dataset (G copies of each for GRPO)
        samples   <- rollout workers generate (N actors, each its share; tokens + behaviour log-probs)
        scores    <- reward actor scores every (prompt, response)
        ref_logp  <- reference actor: the frozen starting model's log-probs of the sampled tokens
        GRPO: advantages = group-normalised scores;  PPO: values from the learner's critic, per-token rewards
              = score at the last token - kl_coef * KL, GAE, whitened
        learners  <- epochs x minibatches of the batch (M actors, data parallel)
        weights   -> every rollout worker (one `ray.put` of numpy arrays, read zero-copy), version + 1
        every `ckpt_every` iterations: policy, value model, optimizers, KL coefficient, iteration, prompt position

Weight sync: the learner's state dict as numpy arrays put once in the object store; each worker loads it. The
measured options on this stack (RAY_NOTES "Actors for RLHF", 10 M parameters on CPU): torch state dicts through
the object store 170-200 ms, numpy arrays 32-62 ms, a gloo broadcast 85-91 ms (and a collective group to keep
alive across worker restarts), Ray Direct Transport alpha and able to hang. Numpy through the object store is the
cheapest and needs nothing from a restarted worker but one call.

No hangs, no lost work: every remote call has `align.timeout_s`. Rollout workers have `max_restarts`; a worker
that dies (or times out, and is then killed to be restarted) while generating is re-synced to the current weights
and its share of the batch is generated again with the same seed; one that dies while loading new weights is
re-synced likewise; a batch made by another policy version is refused and redone.
The reward, reference and learner actors are not restarted: their failure ends the run with one line that names
the role and the last checkpoint, which a re-run with the same run.name resumes from.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import ray
import ray.exceptions
import torch
from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from models.tokenizer import Tokenizer
from pipelines import checkpoints, storage
from pipelines.align.algorithms import (AdaptiveKLController, gae, group_advantages, kl_k1, masked_mean,
                                        masked_whiten, token_rewards)
from pipelines.align.batch import padded
from pipelines.align.learner import LearnerActor
from pipelines.align.reference import ReferenceActor
from pipelines.align.reward import RewardActor
from pipelines.align.rollout import RolloutActor
from pipelines.errors import CheckpointError, ConfigError, RunFinishedError, UserError
from pipelines.train.driver import TrainOutcome, run_directory

log = logging.getLogger(__name__)
LOOP_STATE = "loop.json"


class AlignmentError(UserError):
    """A role of the RLHF loop failed for good; the message names it and the last checkpoint."""


@dataclass
class Roles:
    rollouts: list
    reward: object
    reference: object
    learners: list
    restarts: int = 0


@dataclass
class Hooks:
    """Test and tooling hooks: `after_submit(iteration, roles, futures)` runs once the rollout calls are sent,
    `before_sync(version, roles)` once new weights are in the object store, before the workers load them."""

    after_submit: object = None
    before_sync: object = None


@dataclass
class Progress:
    iteration: int = 0
    epoch: int = 0
    position: int = 0  # prompts consumed in this epoch
    kl: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # every iteration's metrics: a resumed run's metrics.json has them all


# ---- prompts ----

def prompt_files(cfg: DictConfig) -> tuple[list[str], str]:
    a = cfg.align
    if a.prompts.paths:
        return storage.expand([storage.absolute(p) for p in a.prompts.paths], suffixes=(".jsonl", ".json")), \
            a.prompts.field
    from pipelines.data.build import builtin_corpus

    return [storage.join(builtin_corpus(cfg.data), "preference", "train.jsonl")], "prompt"


class PromptStream:
    """Chat prompts from a Ray Dataset, read once (before the actors take the CPUs) and streamed epoch after epoch
    in a fresh seeded order; the position (epoch, prompts consumed) is what a checkpoint records."""

    def __init__(self, cfg: DictConfig, tok: Tokenizer, progress: Progress):
        files, column = prompt_files(cfg)
        rows = ray.data.read_json(files, num_cpus=0.25).take_all()
        if rows and column not in rows[0]:
            raise ConfigError(f"align.prompts: {files[0]} has no field {column!r} (align.prompts.field)")
        domain = cfg.align.prompts.domain_field
        encoded = [(tok.encode_chat([{"role": "user", "content": row[column]}], add_generation_prompt=True).ids,
                    row.get(domain) if domain else None)
                   for row in rows if isinstance(row.get(column), str) and row[column].strip()]
        limit = cfg.align.max_prompt_tokens
        self.prompts = [(ids, d) for ids, d in encoded if len(ids) <= limit]
        if len(self.prompts) < len(encoded):
            log.warning("%d of %d prompts are longer than align.max_prompt_tokens=%d tokens: skipped",
                        len(encoded) - len(self.prompts), len(encoded), limit)
        if not self.prompts:
            raise ConfigError(f"no usable prompt in {files} (field {column!r}, at most {limit} tokens)")
        self.seed, self.progress = cfg.align.seed, progress
        self.order = self.shuffled(progress.epoch)

    def shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.prompts)))
        random.Random(self.seed * 7919 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[tuple[list[int], str | None]]:
        """The next `n` (prompt ids, domain or None)."""
        out = []
        while len(out) < n:
            if self.progress.position >= len(self.order):
                self.progress.epoch, self.progress.position = self.progress.epoch + 1, 0
                self.order = self.shuffled(self.progress.epoch)
            out.append(self.prompts[self.order[self.progress.position]])
            self.progress.position += 1
        return out


# ---- the roles ----

def start_roles(cfg: DictConfig, init_from: str, reward_model: str) -> Roles:
    a, algorithm = cfg.align, cfg.algorithm.name
    threads = a.torch_threads
    rollouts = [RolloutActor.options(num_cpus=a.rollout.num_cpus, num_gpus=a.rollout.num_gpus,
                                     max_restarts=a.rollout.max_restarts, max_task_retries=0,
                                     name=None).remote(init_from, num_gpus=a.rollout.num_gpus, torch_threads=threads)
                for _ in range(a.rollout.num_workers)]
    reward = RewardActor.options(num_cpus=a.reward.num_cpus, num_gpus=a.reward.num_gpus, max_restarts=0).remote(
        reward_model, num_gpus=a.reward.num_gpus, torch_threads=threads, empty_score=a.reward.empty_score,
        unfinished_penalty=a.reward.unfinished_penalty, rules=OmegaConf.to_container(a.reward.rules, resolve=True))
    reference = ReferenceActor.options(num_cpus=a.reference.num_cpus, num_gpus=a.reference.num_gpus,
                                       max_restarts=0).remote(init_from, num_gpus=a.reference.num_gpus,
                                                              torch_threads=threads, temperature=a.temperature)
    settings = OmegaConf.to_container(a.learner, resolve=True) | {"clip": a.clip, "temperature": a.temperature}
    if algorithm == "ppo":
        settings |= {"value_coef": a.ppo.value_coef, "value_clip": a.ppo.value_clip, "value_lr": a.ppo.value_lr}
    M = a.learner.num_workers
    learners = [LearnerActor.options(num_cpus=a.learner.num_cpus, num_gpus=a.learner.num_gpus, max_restarts=0).remote(
        init_from, algorithm=algorithm, value_checkpoint=reward_model if algorithm == "ppo" else None,
        settings=settings, num_gpus=a.learner.num_gpus, torch_threads=threads, rank=r, world=M, seed=a.seed)
        for r in range(M)]
    if M > 1:
        address = ray.get(learners[0].address.remote(), timeout=a.timeout_s)
        ray.get([learner.join_group.remote(address) for learner in learners], timeout=a.timeout_s)
    return Roles(rollouts, reward, reference, learners)


def stop_roles(roles: Roles | None) -> None:
    if roles is None:
        return
    for actor in [*roles.rollouts, roles.reward, roles.reference, *roles.learners]:
        ray.kill(actor, no_restart=True)


def call(ref, role: str, timeout: float, checkpoint: str | None):
    """ray.get for a role that is not restarted: a failure ends the run with one line."""
    try:
        return ray.get(ref, timeout=timeout)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
        where = f"the last checkpoint is {checkpoint}; re-run with the same run.name to resume" if checkpoint \
            else "no checkpoint was written yet"
        raise AlignmentError(f"the {role} actor failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                             f"{where}") from None


def sync(roles: Roles, version: int, weights_ref, timeout: float, workers=None) -> float:
    """Every (or the given) rollout worker loads `weights_ref` as `version`; returns the longest load time."""
    workers = roles.rollouts if workers is None else workers
    return max(ray.get([w.set_weights.remote(version, weights_ref) for w in workers], timeout=timeout))


def generate(cfg: DictConfig, roles: Roles, prompts: list[list[int]], *, version: int, weights_ref, iteration: int,
             hooks: Hooks) -> tuple[list[list[int]], list[list[float]]]:
    """Each worker samples its contiguous share of `prompts`; a failed or stale share is redone (same seed)."""
    a = cfg.align
    N = len(roles.rollouts)
    bounds = [round(i * len(prompts) / N) for i in range(N + 1)]
    kwargs = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p)

    def submit(i):
        return roles.rollouts[i].generate.remote(prompts[bounds[i]:bounds[i + 1]],
                                                 seed=a.seed * 1_000_003 + iteration * 101 + i, **kwargs)

    futures = [submit(i) for i in range(N)]
    if hooks.after_submit:
        hooks.after_submit(iteration, roles, futures)
    tokens, logprobs = [], []
    for i in range(N):
        for attempt in range(a.rollout.max_restarts + 2):
            try:
                out = ray.get(futures[i], timeout=a.timeout_s)
                if out["version"] == version:
                    break
                log.warning("rollout worker %d answered with policy version %d, not %d: re-synced, redone", i,
                            out["version"], version)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
                restart(roles, i, error)
                log.warning("rollout worker %d failed (%s): restarted, re-synced to version %d, its share of "
                            "iteration %d redone", i, type(error).__name__, version, iteration)
            sync_restarted(roles, i, version, weights_ref, a.timeout_s)
            futures[i] = submit(i)
        else:
            raise AlignmentError(f"rollout worker {i} failed {a.rollout.max_restarts + 2} times in iteration "
                                 f"{iteration}; see its log (ray logs) — align.rollout.max_restarts")
        tokens += out["tokens"]
        logprobs += out["logprobs"]
    return tokens, logprobs


def restart(roles: Roles, i: int, error: Exception) -> None:
    """Rollout worker i failed: one that hung is killed for Ray to restart it (a dead one restarts by itself)."""
    if isinstance(error, ray.exceptions.GetTimeoutError):
        ray.kill(roles.rollouts[i], no_restart=False)
    roles.restarts += 1


def sync_restarted(roles: Roles, i: int, version: int, weights_ref, timeout: float) -> None:
    """Wait for worker i to be back (a restart reloads the starting weights) and give it the current ones."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sync(roles, version, weights_ref, timeout, [roles.rollouts[i]])
            return
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline:
                raise AlignmentError(f"rollout worker {i} did not come back within {timeout} s") from None
            time.sleep(0.5)


# ---- the maths between the roles ----

def minibatches(samples: dict, *, epochs: int, size: int, learners: int, seed: int) -> list[list[dict]]:
    """Per learner, its part of every minibatch: each epoch a seeded order of all the samples, cut into
    ceil(n / size) minibatches of near-equal sizes (at most `size`; every sample is used once per epoch), each cut
    into `learners` contiguous parts as equal as they can be (the learners normalise by the whole minibatch, so
    unequal or empty parts give the same update)."""
    n = len(samples["prompts"])
    count = math.ceil(n / size)
    parts: list[list[dict]] = [[] for _ in range(learners)]
    for epoch in range(epochs):
        order = list(range(n))
        random.Random(seed + epoch).shuffle(order)
        for m in range(count):
            chosen = order[m * n // count:(m + 1) * n // count]
            for r in range(learners):
                piece = chosen[r * len(chosen) // learners:(r + 1) * len(chosen) // learners]
                parts[r].append({k: [v[j] for j in piece] for k, v in samples.items()})
    return parts


def ppo_targets(samples: dict, scores: torch.Tensor, values: list[list[float]], kl_coef: float, a) -> dict:
    """Per-token rewards (score at the last token, -kl_coef * KL everywhere), GAE advantages (whitened over the
    batch) and returns, as one list per response."""
    old, mask = padded(samples["old_logp"])
    ref, _ = padded(samples["ref_logp"])
    v, _ = padded(values)
    rewards = token_rewards(scores, kl_k1(old, ref), mask, kl_coef)
    advantages, returns = gae(rewards, v, mask, a.ppo.gamma, a.ppo.lam)
    advantages = masked_whiten(advantages, mask)
    lengths = [len(r) for r in samples["responses"]]
    return {"advantages": [advantages[i, :n].tolist() for i, n in enumerate(lengths)],
            "returns": [returns[i, :n].tolist() for i, n in enumerate(lengths)],
            "old_values": values}


# ---- checkpoints ----

def checkpoints_dir(run_dir: str) -> str:
    return storage.join(run_dir, "checkpoints")


def latest_checkpoint(run_dir: str) -> str | None:
    root = checkpoints_dir(run_dir)
    if not storage.exists(root):
        return None
    done = sorted(p for p in storage.list_dir(root) if storage.exists(storage.join(root, p, LOOP_STATE)))
    return storage.join(root, done[-1]) if done else None


def save(cfg, roles: Roles, run_dir: str, progress: Progress, meta: dict) -> str:
    """Learner state first, the loop's state last: a directory without loop.json is unfinished and ignored."""
    path = storage.join(checkpoints_dir(run_dir), f"iter-{progress.iteration:05d}")
    # An RLHF checkpoint's step is its iteration (what evaluation reports and headers print as "step").
    call(roles.learners[0].save.remote(path, meta | {"iteration": progress.iteration, "step": progress.iteration}),
         "learner", cfg.align.timeout_s, None)
    storage.write_json(storage.join(path, LOOP_STATE), {"iteration": progress.iteration, "epoch": progress.epoch,
                                                        "position": progress.position, "kl": progress.kl,
                                                        "history": progress.history})
    keep = cfg.align.keep_checkpoints
    old = sorted(p for p in storage.list_dir(checkpoints_dir(run_dir)))[:-keep] if keep else []
    for name in old:
        storage.delete_dir(storage.join(checkpoints_dir(run_dir), name))
    return path


# ---- the run ----

def check(cfg: DictConfig) -> tuple[str, str, Tokenizer]:
    """Checks that need no Ray: (init_from checkpoint, reward model checkpoint, the tokenizer both use)."""
    a = cfg.algorithm.name
    if not cfg.align.temperature > 0:
        raise ConfigError(f"align.temperature={cfg.align.temperature}: {a} samples its rollouts, and the ratios and "
                          f"KL it learns from need a temperature > 0 (1.0 = the model's own distribution)")
    if cfg.align.top_p != 1:
        raise ConfigError(f"align.top_p={cfg.align.top_p}: {a} scores the sampled tokens under the whole "
                          f"distribution at align.temperature, which top-p sampling is not; use align.top_p=1.0")
    if OmegaConf.is_missing(cfg, "init_from") or not cfg.init_from:
        raise ConfigError(f"algorithm={a} needs init_from= (the instruction-tuned run)")
    if OmegaConf.is_missing(cfg.align, "reward_model") or not cfg.align.reward_model:
        raise ConfigError(f"algorithm={a} needs align.reward_model= (a run of algorithm=reward)")
    init_from, policy_spec = checkpoints.check(cfg.init_from, setting="init_from", kinds=("decoder",),
                                               purpose="RLHF")
    reward_model, _ = checkpoints.check(cfg.align.reward_model, setting="align.reward_model", kinds=("scalar_model",),
                                        purpose="the RLHF reward (train one with algorithm=reward)")
    tok = checkpoints.read_tokenizer(init_from)
    if checkpoints.read_tokenizer(reward_model, setting="align.reward_model").sha256 != tok.sha256:
        raise CheckpointError(f"align.reward_model={reward_model} uses another tokenizer than init_from={init_from}")
    room = cfg.align.max_prompt_tokens + cfg.align.max_new_tokens
    if room > policy_spec["config"]["max_seq_len"]:
        raise ConfigError(f"align.max_prompt_tokens + align.max_new_tokens = {room} exceeds the policy's "
                          f"max_seq_len={policy_spec['config']['max_seq_len']}")
    if cfg.algorithm.name == "grpo" and cfg.align.group_size < 2:
        raise ConfigError(f"align.group_size={cfg.align.group_size}: GRPO compares at least 2 samples per prompt")
    return init_from, reward_model, tok


def kl_controller(cfg: DictConfig) -> AdaptiveKLController:
    """PPO's KL coefficient, steered towards `align.kl.target` over `align.kl.horizon` iterations (the controller
    counts samples: the horizon is that many iterations' samples, so it moves as fast whatever the batch size);
    GRPO's coefficient is fixed."""
    a = cfg.align
    if cfg.algorithm.name != "ppo":
        return AdaptiveKLController(a.kl.init, None, None)
    return AdaptiveKLController(a.kl.init, a.kl.target, a.kl.horizon * a.prompts_per_iteration)


@dataclass
class Policy:
    """The driver's view of the policy: its version, where its weights are in the object store, the last
    checkpoint (named in failure messages)."""

    version: int
    weights_ref: object
    checkpoint: str | None


def publish(cfg: DictConfig, roles: Roles, policy: Policy, hooks: Hooks) -> None:
    """The learner's current weights into the object store once, and into every rollout worker; a worker that
    fails to load them (its process died, or it hung and is killed) is restarted and re-synced."""
    timeout = cfg.align.timeout_s
    weights = call(roles.learners[0].weights.remote(), "learner", timeout, policy.checkpoint)
    policy.weights_ref = ray.put(weights)
    if hooks.before_sync:
        hooks.before_sync(policy.version, roles)
    futures = [w.set_weights.remote(policy.version, policy.weights_ref) for w in roles.rollouts]
    for i, future in enumerate(futures):
        try:
            ray.get(future, timeout=timeout)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as error:
            restart(roles, i, error)
            log.warning("rollout worker %d failed while loading policy version %d (%s): restarted and re-synced", i,
                        policy.version, type(error).__name__)
            sync_restarted(roles, i, policy.version, policy.weights_ref, timeout)


def iteration(cfg: DictConfig, roles: Roles, prompts: PromptStream, kl_ctl: AdaptiveKLController, policy: Policy,
              it: int, hooks: Hooks) -> tuple[dict, tuple]:
    """Generate, score, reference, learn, sync: one iteration; returns its metrics and (prompts, responses,
    scores)."""
    a, algorithm = cfg.align, cfg.algorithm.name
    G = a.group_size if algorithm == "grpo" else 1
    times, began = {}, time.perf_counter()

    def remote(ref, role):
        return call(ref, role, a.timeout_s, policy.checkpoint)

    taken = [p for p in prompts.take(a.prompts_per_iteration) for _ in range(G)]
    batch, domains = [ids for ids, _ in taken], [d for _, d in taken]
    responses, old_logp = generate(cfg, roles, batch, version=policy.version, weights_ref=policy.weights_ref,
                                   iteration=it, hooks=hooks)
    times["generate"] = time.perf_counter() - began
    t = time.perf_counter()
    scores = torch.tensor(remote(roles.reward.score.remote(batch, responses, domains), "reward"))
    times["reward"] = time.perf_counter() - t
    t = time.perf_counter()
    ref_logp = remote(roles.reference.logprobs.remote(batch, responses), "reference")
    times["reference"] = time.perf_counter() - t
    t = time.perf_counter()
    samples = {"prompts": batch, "responses": responses, "old_logp": old_logp, "ref_logp": ref_logp}
    if algorithm == "grpo":
        samples["advantages"] = group_advantages(scores, G).tolist()
    else:
        values = remote(roles.learners[0].values.remote(batch, responses), "learner")
        samples |= ppo_targets(samples, scores, values, kl_ctl.value, a)
    parts = minibatches(samples, epochs=a.learner.epochs, size=a.learner.minibatch_size,
                        learners=len(roles.learners), seed=a.seed * 31 + it)
    stats = remote([learner.update.remote(part, kl_ctl.value) for learner, part in zip(roles.learners, parts)],
                   "learner")[0]
    times["learn"] = time.perf_counter() - t
    t = time.perf_counter()
    policy.version += 1
    publish(cfg, roles, policy, hooks)
    times["sync"] = time.perf_counter() - t
    old, mask = padded(old_logp)
    ref, _ = padded(ref_logp)
    kl = kl_k1(old, ref)
    if algorithm == "ppo":
        kl_ctl.update(float((kl * mask).sum(1).mean()), len(responses))
    generated = sum(len(r) for r in responses)
    metrics = {"iteration": it + 1, "reward": float(scores.mean()), "kl": float(masked_mean(kl, mask)),
               "kl_k3": stats["kl_k3"], "kl_coef": kl_ctl.value, "entropy": stats["entropy"],
               "response_length": generated / len(responses), "clip_fraction": stats["clip_fraction"],
               "policy_loss": stats["policy_loss"], "tokens_per_s": generated / times["generate"],
               "version": policy.version, "rollout_restarts": roles.restarts,
               **{f"time_{k}": v for k, v in times.items()}, "time_total": time.perf_counter() - began}
    if "value_loss" in stats:
        metrics["value_loss"] = stats["value_loss"]
    return metrics, (batch, responses, scores)


def rlhf(cfg: DictConfig, *, hooks: Hooks | None = None) -> TrainOutcome:
    """Run (or resume) PPO or GRPO; returns the outcome with `final/` (the policy) and the per-iteration history."""
    hooks = hooks or Hooks()
    a, algorithm = cfg.align, cfg.algorithm.name
    init_from, reward_model, tok = check(cfg)
    run_dir = run_directory(cfg, "align")
    final_dir = storage.join(run_dir, "final")
    if storage.exists(storage.join(final_dir, "model.safetensors")):
        raise RunFinishedError(f"{run_dir} has finished ({final_dir}); choose a new run.name")
    connect(cfg.cluster)
    resume = latest_checkpoint(run_dir)
    progress = Progress(**storage.read_json(storage.join(resume, LOOP_STATE))) if resume else \
        Progress(kl={"value": a.kl.init})
    prompts = PromptStream(cfg, tok, progress)
    kl_ctl = kl_controller(cfg)
    kl_ctl.load_state_dict(progress.kl)
    meta = {"stage": "align", "algorithm": algorithm, "init_from": init_from, "reward_model": reward_model,
            "run": cfg.run.name, "config": OmegaConf.to_container(a, resolve=True)}
    logger = make_logger(cfg, run_dir)
    history, roles, policy = progress.history, None, Policy(progress.iteration, None, resume)
    try:
        roles = start_roles(cfg, init_from, reward_model)
        if resume:
            call([learner.load.remote(resume) for learner in roles.learners], "learner", a.timeout_s, resume)
            print(f"resuming from {resume} (iteration {progress.iteration})", flush=True)
        publish(cfg, roles, policy, hooks)
        while progress.iteration < a.iterations:
            it = progress.iteration
            metrics, (batch, responses, scores) = iteration(cfg, roles, prompts, kl_ctl, policy, it, hooks)
            progress.iteration, progress.kl = it + 1, kl_ctl.state_dict()
            history.append(metrics)
            print_line(metrics, a.iterations)
            if a.sample_every and (it + 1) % a.sample_every == 0:
                print_samples(tok, batch, responses, scores)
            if logger:
                logger.log(metrics, step=it + 1)
            if (it + 1) % a.ckpt_every == 0 or it + 1 == a.iterations:
                policy.checkpoint = save(cfg, roles, run_dir, progress, meta)
        versions = ray.get([w.get_version.remote() for w in roles.rollouts], timeout=a.timeout_s)
    finally:
        stop_roles(roles)
        if logger:
            logger.finish()
    finish(policy.checkpoint, final_dir, history, versions)
    return TrainOutcome(run_dir=run_dir, final_dir=final_dir,
                        metrics={"history": history, "worker_versions": versions, **(history[-1] if history else {})})


def finish(checkpoint: str, final_dir: str, history: list[dict], versions: list[int]) -> None:
    """final/ = the last checkpoint's policy (a plain decoder checkpoint) with the run's metrics in meta.json."""
    with tempfile.TemporaryDirectory() as tmp:
        with storage.local_dir(storage.join(checkpoint, "policy")) as policy:
            shutil.copytree(policy, tmp, dirs_exist_ok=True)
        meta = json.loads(open(os.path.join(tmp, "meta.json")).read())
        meta["metrics"] = {k: v for k, v in (history[-1] if history else {}).items() if isinstance(v, float)}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
        storage.upload_dir(tmp, final_dir)
    storage.write_json(storage.join(final_dir, "metrics.json"), {"history": history, "worker_versions": versions})


def print_line(m: dict, total: int) -> None:
    split = " ".join(f"{k[5:]} {m[k]:.1f}s" for k in ("time_generate", "time_reward", "time_reference", "time_learn",
                                                       "time_sync"))
    print(f"iter {m['iteration']}/{total} | reward {m['reward']:+.3f} | kl {m['kl']:.4f} | entropy {m['entropy']:.3f} "
          f"| len {m['response_length']:.1f} | clip {m['clip_fraction']:.2f} | {split} | "
          f"{m['tokens_per_s']:.0f} tok/s", flush=True)


def print_samples(tok: Tokenizer, prompts: list[list[int]], responses: list[list[int]], scores: torch.Tensor) -> None:
    """The iteration's best and worst scored sample: what the reward model is teaching, in words."""
    special = set(tok.special_ids.values())
    for label, i in (("best", int(scores.argmax())), ("worst", int(scores.argmin()))):
        prompt = tok.decode([t for t in prompts[i] if t not in special])
        reply = tok.decode([t for t in responses[i] if t not in special])
        print(f"  {label} ({float(scores[i]):+.2f}): {prompt!r} -> {reply!r}", flush=True)


def make_logger(cfg: DictConfig, run_dir: str):
    lcfg = cfg.logger
    if lcfg.name != "wandb":
        return None
    import wandb

    return wandb.init(project=lcfg.project, entity=lcfg.entity, mode=lcfg.mode, tags=list(lcfg.tags),
                      dir=lcfg.dir or (run_dir if not storage.is_uri(run_dir) else tempfile.mkdtemp()),
                      name=cfg.run.name, config=OmegaConf.to_container(cfg.align, resolve=True))
