"""The actor-based RLHF loop on real Ray actors with tiny models: GRPO and PPO end to end with 2 rollout workers,
weight versions after sync, rollout workers killed while loading weights and while generating, resume from an RLHF
checkpoint, and 2 data-parallel learners against 1 on the combined batch. In-process: the roles' log-probs against
the rollout's, the sampling settings RLHF refuses, the minibatches and the KL controller. Every actor is torn down
at the end of its test."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from models import ScalarModel, load_checkpoint, save_checkpoint
from models.checkpoint import read_tokenizer_model
from models.decoder import Decoder

RLHF = ["align.iterations=2", "align.prompts_per_iteration=4", "align.group_size=2", "align.max_prompt_tokens=48",
        "align.max_new_tokens=12", "align.learner.minibatch_size=8", "align.learner.lr=1e-4", "align.timeout_s=120",
        "align.ckpt_every=1"]


@pytest.fixture(scope="module")
def rlhf_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rlhf-runs")


@pytest.fixture(scope="module")
def policy(pretrained_decoder) -> str:
    return pretrained_decoder.final_dir


@pytest.fixture(scope="module")
def reward_model(policy, rlhf_runs) -> str:
    """A reward model of the policy's shape and tokenizer (an untrained head: the loop's plumbing is under test)."""
    decoder, _ = load_checkpoint(policy)
    path = rlhf_runs / "reward"
    save_checkpoint(str(path), ScalarModel(decoder), tokenizer_model=read_tokenizer_model(policy),
                    meta={"stage": "align"})
    return str(path)


def rlhf_config(compose_config, data_root, rlhf_runs, algorithm, policy, reward_model, name, extra=()):
    return compose_config("align", [f"algorithm={algorithm}", f"init_from={policy}", f"align.reward_model={reward_model}",
                                    f"run.name={name}", f"run.root={rlhf_runs}", f"data.root={data_root}",
                                    "data.general_docs=600", "data.medical_docs=50", *RLHF, *extra])


def check_run(outcome, iterations: int) -> None:
    history = outcome.metrics["history"]
    assert [m["iteration"] for m in history][-1] == iterations
    assert outcome.metrics["worker_versions"] == [iterations, iterations]  # every worker holds the last update
    for m in history:
        assert m["version"] == m["iteration"] and m["response_length"] > 0 and m["tokens_per_s"] > 0
        assert all(m[f"time_{k}"] >= 0 for k in ("generate", "reward", "reference", "learn", "sync"))
        assert np.isfinite([m["reward"], m["kl"], m["entropy"], m["policy_loss"]]).all()
    model, meta = load_checkpoint(outcome.final_dir)
    assert isinstance(model, Decoder) and meta["stage"] == "align" and meta["iteration"] == iterations


def test_grpo_with_two_rollout_workers(compose_config, data_root, rlhf_runs, policy, reward_model, capsys):
    from pipelines.align.loop import rlhf

    outcome = rlhf(rlhf_config(compose_config, data_root, rlhf_runs, "grpo", policy, reward_model, "grpo"))
    check_run(outcome, 2)
    out = capsys.readouterr().out
    assert "iter 2/2" in out and "generate" in out and "tok/s" in out
    # The policy moved: final/ differs from the starting weights.
    start, _ = load_checkpoint(policy)
    final, _ = load_checkpoint(outcome.final_dir)
    assert any(not (a == b).all() for a, b in zip(start.state_dict().values(), final.state_dict().values()))


def test_ppo_with_a_critic(compose_config, data_root, rlhf_runs, policy, reward_model):
    from pipelines.align.loop import rlhf

    outcome = rlhf(rlhf_config(compose_config, data_root, rlhf_runs, "ppo", policy, reward_model, "ppo"))
    check_run(outcome, 2)
    assert all(np.isfinite(m["value_loss"]) for m in outcome.metrics["history"])
    assert (Path(outcome.run_dir) / "checkpoints" / "iter-00002" / "value" / "model.safetensors").exists()


def test_rollout_workers_killed_while_syncing_and_generating_are_restarted_and_resynced(compose_config, data_root,
                                                                                       rlhf_runs, policy,
                                                                                       reward_model):
    from pipelines.align.loop import Hooks, rlhf

    pids, killed = {}, []

    def kill_worker_0(version, roles):
        if version == 1:  # iteration 0's update is in the object store; worker 0 dies before it loads it
            pid = ray.get(roles.rollouts[0].pid.remote())
            os.kill(pid, signal.SIGKILL)
            killed.append(("sync", pid))

    def kill_worker_1(iteration, roles, futures):
        if iteration == 0:  # the workers' processes, learned while iteration 0's calls wait behind this one
            pids.update(enumerate(ray.get([w.pid.remote() for w in roles.rollouts])))
        if iteration == 1 and not any(when == "generate" for when, _ in killed):
            os.kill(pids[1], signal.SIGKILL)  # its generate call of iteration 1 is in flight
            killed.append(("generate", pids[1]))

    outcome = rlhf(rlhf_config(compose_config, data_root, rlhf_runs, "grpo", policy, reward_model, "killed"),
                   hooks=Hooks(after_submit=kill_worker_1, before_sync=kill_worker_0))
    # The iteration's batch was completed, the run finished with every worker at the last version.
    check_run(outcome, 2)
    assert [when for when, _ in killed] == ["sync", "generate"]
    assert outcome.metrics["history"][-1]["rollout_restarts"] >= 2


@pytest.mark.parametrize("algorithm, size", [("grpo", 3), ("ppo", 4)])
def test_two_learners_give_the_weights_of_one_on_the_combined_batch(ray_cluster, policy, reward_model, algorithm,
                                                                    size):
    # GRPO: minibatches of 3 (and one of 2) split 1 + 2 over the learners; PPO: responses of 2 to 5 tokens, so the
    # learners' parts hold different token counts (with each learner's own token mean, averaged, 93% of the weights
    # differed from one learner's beyond the tolerance)
    from pipelines.align.learner import LearnerActor
    from pipelines.align.loop import minibatches
    from models.tokenizer import Tokenizer

    tok = Tokenizer(read_tokenizer_model(policy))
    rng = np.random.default_rng(0)
    prompts = [tok.encode_chat([{"role": "user", "content": f"What is {n}?"}], add_generation_prompt=True).ids
               for n in range(8)]
    responses = [rng.integers(10, 200, size=int(rng.integers(2, 6))).tolist() for _ in range(8)]
    samples = {"prompts": prompts, "responses": responses,
               "old_logp": [(-rng.random(len(r)) - 1).tolist() for r in responses],
               "ref_logp": [(-rng.random(len(r)) - 1).tolist() for r in responses]}
    settings = {"lr": 1e-3, "weight_decay": 0.0, "grad_clip": 1.0, "clip": 0.2, "temperature": 1.0}
    if algorithm == "grpo":
        samples["advantages"] = rng.normal(size=8).tolist()
    else:
        samples |= {name: [rng.normal(size=len(r)).tolist() for r in responses]
                    for name in ("advantages", "returns", "old_values")}
        settings |= {"value_coef": 0.1, "value_clip": 0.2, "value_lr": 1e-3}

    def train(world):
        learners = [LearnerActor.options(num_cpus=0.25).remote(
            policy, algorithm=algorithm, value_checkpoint=reward_model if algorithm == "ppo" else None,
            settings=settings, rank=r, world=world) for r in range(world)]
        try:
            if world > 1:
                address = ray.get(learners[0].address.remote())
                ray.get([learner.join_group.remote(address) for learner in learners])
            parts = minibatches(samples, epochs=2, size=size, learners=world, seed=0)
            ray.get([learner.update.remote(part, 0.05) for learner, part in zip(learners, parts)])
            return ray.get(learners[0].weights.remote())
        finally:
            for learner in learners:
                ray.kill(learner)

    one, two = train(1), train(2)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)
    start, _ = load_checkpoint(policy)
    assert any(not np.allclose(one[k], v.numpy()) for k, v in start.state_dict().items())


def test_a_batch_from_a_stale_worker_is_refused_and_redone(compose_config, data_root, rlhf_runs, policy,
                                                          reward_model):
    from pipelines.align.batch import numpy_weights
    from pipelines.align.loop import Hooks, Roles, generate
    from pipelines.align.rollout import RolloutActor
    from models.tokenizer import Tokenizer

    cfg = rlhf_config(compose_config, data_root, rlhf_runs, "grpo", policy, reward_model, "stale")
    workers = [RolloutActor.options(num_cpus=0.25).remote(policy) for _ in range(2)]
    try:
        model, _ = load_checkpoint(policy)
        weights = ray.put(numpy_weights(model))
        ray.get(workers[0].set_weights.remote(3, weights))  # worker 1 still holds version 0
        tok = Tokenizer(read_tokenizer_model(policy))
        prompts = [tok.encode_chat([{"role": "user", "content": "What is 2?"}], add_generation_prompt=True).ids] * 4
        tokens, logprobs = generate(cfg, Roles(workers, None, None, []), prompts, version=3, weights_ref=weights,
                                    iteration=0, hooks=Hooks())
        assert len(tokens) == len(logprobs) == 4 and all(len(t) == len(lp) for t, lp in zip(tokens, logprobs))
        assert ray.get([w.get_version.remote() for w in workers]) == [3, 3]
        # Redone with the same seed by the re-synced worker: its share equals what a current worker samples.
        again = ray.get(workers[1].generate.remote(prompts[2:], max_new_tokens=12, temperature=1.0, top_p=1.0,
                                                   seed=1))
        assert again["tokens"] == tokens[2:]
    finally:
        for w in workers:
            ray.kill(w)


def test_a_reward_actor_failure_stops_the_run_and_the_same_run_name_resumes(compose_config, data_root, rlhf_runs,
                                                                            policy, reward_model):
    from pipelines.align.loop import AlignmentError, Hooks, rlhf

    def kill_reward(iteration, roles, futures):
        if iteration == 1:
            ray.kill(roles.reward, no_restart=True)

    cfg = rlhf_config(compose_config, data_root, rlhf_runs, "grpo", policy, reward_model, "resumed")
    with pytest.raises(AlignmentError, match=r"the reward actor failed .*iter-00001; re-run with the same run.name"):
        rlhf(cfg, hooks=Hooks(after_submit=kill_reward))
    run_dir = rlhf_runs / "align" / "resumed"
    checkpoint = run_dir / "checkpoints" / "iter-00001"
    assert (checkpoint / "loop.json").exists() and (checkpoint / "policy" / "model.safetensors").exists()
    assert not (run_dir / "final").exists()
    outcome = rlhf(cfg)
    # Iteration 1 came from the checkpoint, its metrics too: the resumed run's history is the whole run's.
    assert [m["iteration"] for m in outcome.metrics["history"]] == [1, 2]
    check_run(outcome, 2)


def test_the_reward_role_scores_with_the_model_and_the_rules(reward_model):
    from pipelines.align.reward import RewardScorer

    scorer = RewardScorer(reward_model, empty_score=-10.0, unfinished_penalty=5.0)
    tok = scorer.tok
    prompt = tok.encode_chat([{"role": "user", "content": "What is 2?"}], add_generation_prompt=True).ids
    answer = tok.encode("2 is even.")
    finished, cut, empty = answer + [tok.end_id], answer, [tok.end_id]
    plain = scorer.model.score([prompt + finished, prompt + cut], pad_id=tok.pad_id)
    assert scorer.score([prompt] * 3, [finished, cut, empty]) == pytest.approx([plain[0], plain[1] - 5.0, -10.0])
    # Rule terms by the prompt's domain, from the detectors.
    ruled = RewardScorer(reward_model, rules={"refusal": 2.0, "disclaimer": 3.0, "rude": 4.0})
    refusal = tok.encode("I'm sorry, but I can't help with that.") + [tok.end_id]
    disclaimed = tok.encode("It is a cold. This is general information, not medical advice.") + [tok.end_id]
    rude = tok.encode("Ugh, fine. It is a cold.") + [tok.end_id]
    cases = [(refusal, "unsafe", 2.0), (refusal, "medical", -2.0), (disclaimed, "medical", 3.0),
             (disclaimed, "general", 0.0), (rude, "general", -4.0), (refusal, None, 0.0)]
    model_only = scorer.model.score([prompt + r for r, _, _ in cases], pad_id=tok.pad_id)
    scored = ruled.score([prompt] * len(cases), [r for r, _, _ in cases], [d for _, d, _ in cases])
    assert scored == pytest.approx([m + term for m, (_, _, term) in zip(model_only, cases)], abs=1e-5)


# ---- in-process: the roles' maths and the loop's settings ----

@pytest.mark.parametrize("temperature, dropout", [(0.7, 0.0), (1.0, 0.2)])
def test_the_learner_and_the_reference_score_tokens_as_the_rollout_sampled_them(policy, tmp_path, temperature,
                                                                                 dropout):
    """At the first step the learner's log-probs are the behaviour policy's (ratio 1, k3 0) and the reference's too
    (the same weights): at the sampling temperature, and with dropout off although the decoder has some."""
    from pipelines.align.learner import Learner
    from pipelines.align.reference import Reference
    from pipelines.align.rollout import Rollout

    model, _ = load_checkpoint(policy)
    noisy = Decoder(dataclasses.replace(model.cfg, dropout=dropout))
    noisy.load_state_dict(model.state_dict())
    save_checkpoint(str(tmp_path), noisy, tokenizer_model=read_tokenizer_model(policy), meta={"stage": "finetune"})
    rollout = Rollout(str(tmp_path))
    prompts = [rollout.tok.encode_chat([{"role": "user", "content": f"What is {n}?"}], add_generation_prompt=True).ids
               for n in range(4)]
    out = rollout.generate(prompts, max_new_tokens=12, temperature=temperature, top_p=1.0, seed=0)
    with torch.no_grad():  # the behaviour log-probs are those of softmax(logits / temperature), without dropout
        for prompt, tokens, logprobs in zip(prompts, out["tokens"], out["logprobs"]):
            logits = noisy.eval()(torch.tensor([prompt + tokens]))[0, len(prompt) - 1:-1] / temperature
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
            np.testing.assert_allclose(logprobs, expected.numpy(), rtol=0, atol=1e-4)
    learner = Learner(str(tmp_path), algorithm="grpo", value_checkpoint=None, seed=0,
                      settings={"lr": 1e-4, "weight_decay": 0.0, "grad_clip": 1.0, "clip": 0.2,
                                "temperature": temperature})
    batch = {"prompts": prompts, "responses": out["tokens"], "old_logp": out["logprobs"], "ref_logp": out["logprobs"],
             "advantages": [1.0, -1.0, 0.5, -0.5]}
    stats = learner.update([batch], kl_coef=0.05)
    assert stats["kl_k3"] < 1e-9 and stats["clip_fraction"] == 0.0, stats  # before, dropout 0.2: k3 0.066, clip 0.40
    reference = Reference(str(tmp_path), temperature=temperature).logprobs(prompts, out["tokens"])
    for ref, behaviour in zip(reference, out["logprobs"]):
        np.testing.assert_allclose(ref, behaviour, rtol=0, atol=1e-4)


@pytest.mark.parametrize("algorithm, setting, message", [
    ("grpo", "align.temperature=0", r"align.temperature=0: grpo .* temperature > 0"),
    ("ppo", "align.top_p=0.9", r"align.top_p=0.9: ppo .* align.top_p=1.0"),
])
def test_rlhf_refuses_sampling_its_log_probs_do_not_describe(compose_config, data_root, rlhf_runs, policy,
                                                            reward_model, algorithm, setting, message):
    from pipelines.align.loop import check
    from pipelines.errors import ConfigError

    cfg = rlhf_config(compose_config, data_root, rlhf_runs, algorithm, policy, reward_model, "refused", [setting])
    with pytest.raises(ConfigError, match=message):
        check(cfg)


def test_every_sample_is_in_a_minibatch_of_every_epoch():
    from pipelines.align.loop import minibatches

    samples = {"prompts": [[i] for i in range(10)], "responses": [[i, i] for i in range(10)]}
    parts = minibatches(samples, epochs=2, size=4, learners=2, seed=0)  # 10 = 3 + 3 + 4, each split over 2
    assert [len(p) for p in parts] == [6, 6]
    for epoch in range(2):
        epoch_minibatches = [[i for part in parts for [i] in part[m]["prompts"]] for m in range(3 * epoch,
                                                                                             3 * epoch + 3)]
        assert all(len(mb) <= 4 for mb in epoch_minibatches)
        assert sorted(i for mb in epoch_minibatches for i in mb) == list(range(10))
    # 3 learners: a part may be empty; the learners still meet in every all-reduce
    assert sorted(len(p["prompts"]) for part in minibatches(samples, epochs=1, size=2, learners=3, seed=0)
                  for p in part).count(0) == 5


def test_the_adaptive_kl_coefficient_moves_towards_its_target_in_a_few_iterations(compose_config):
    from pipelines.align.loop import kl_controller

    for samples in (16, 64):  # the demo's batch and a larger one move alike
        cfg = compose_config("align", ["algorithm=ppo", f"align.prompts_per_iteration={samples}"])
        target, init = cfg.align.kl.target, cfg.align.kl.init
        above, below = kl_controller(cfg), kl_controller(cfg)
        for _ in range(5):
            above.update(3 * target, n_steps=samples)
            below.update(target / 3, n_steps=samples)
        # at most 20% / horizon per iteration: 1.02 ** 5 with the default horizon of 10 iterations
        assert above.value > init * 1.08 and below.value < init / 1.08, (above.value, below.value)
    grpo = kl_controller(compose_config("align", ["algorithm=grpo"]))
    grpo.update(100.0, n_steps=64)
    assert grpo.value == init
