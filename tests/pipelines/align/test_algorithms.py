"""Alignment maths against values computed by hand or with explicit Python loops over scalars (math, not torch)."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.align.algorithms import (AdaptiveKLController, bradley_terry_loss, dpo_loss, entropy_from_logits,
                                        gae, group_advantages, grpo_loss, kl_k1, kl_k3, logprobs_from_logits,
                                        masked_mean, masked_whiten, ppo_policy_loss, ppo_value_loss, token_rewards)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype))  # tolerances by dtype


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


# ---- masked statistics ----

def test_masked_mean_hand_values_and_empty_mask():
    x = t([[1.0, 2.0, 30.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    close(masked_mean(x, mask), (1 + 2 + 4) / 3)
    close(masked_mean(x, mask, dim=1), [1.5, 4.0])
    close(masked_mean(x, torch.zeros(2, 3)), 0.0)
    close(masked_mean(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), dim=1), [1.0, 0.0])


def test_masked_whiten_ignores_padding():
    x, mask = t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]])
    std = math.sqrt(((1 - 2) ** 2 + 0 + (3 - 2) ** 2) / 3)  # biased, over the three real tokens
    close(masked_whiten(x, mask), [[-1 / (std + 1e-8), 0.0, 1 / (std + 1e-8), 0.0]])
    close(masked_whiten(x, mask, shift_mean=False), [[2 - 1 / (std + 1e-8), 2.0, 2 + 1 / (std + 1e-8), 0.0]])


# ---- token statistics ----

def test_logprobs_from_logits_against_hand_softmax():
    rows, tokens = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]], [2, 1]
    expected = [math.log(math.exp(row[tok]) / sum(math.exp(v) for v in row)) for row, tok in zip(rows, tokens)]
    logp = logprobs_from_logits(t([rows]), torch.tensor([tokens]))
    assert logp.dtype == torch.float32 and logp.shape == (1, 2)
    close(logp.double(), [expected])
    # logits near 1000 overflow exp in float32; shifted by 999 by hand the softmax is [e, 1, 1] / (e + 2)
    close(logprobs_from_logits(torch.tensor([[[1000.0, 999.0, 999.0]]]), torch.tensor([[1]])),
          [[-math.log(math.e + 2)]])
    assert logprobs_from_logits(torch.zeros(1, 2, 3, dtype=torch.bfloat16), torch.tensor([[0, 1]])).dtype == \
        torch.float32


def test_entropy_uniform_is_log_vocab_and_two_way_by_hand():
    close(entropy_from_logits(torch.full((2, 3, 7), 4.2)), torch.full((2, 3), math.log(7)))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    close(entropy_from_logits(torch.tensor([[[0.0, math.log(3.0)]]])), [[h]])


def test_token_statistics_at_a_sampling_temperature():
    # softmax([1, 2, 3] / 0.5) = softmax([2, 4, 6]): what a rollout at temperature 0.5 samples from
    row = [2.0, 4.0, 6.0]
    z = sum(math.exp(v) for v in row)
    expected = [math.log(math.exp(v) / z) for v in row]
    logp = logprobs_from_logits(t([[[1.0, 2.0, 3.0]] * 3]), torch.tensor([[0, 1, 2]]), temperature=0.5)
    close(logp, [expected])  # float32
    close(entropy_from_logits(t([[[1.0, 2.0, 3.0]]]), temperature=0.5),
          [[-sum(math.exp(v) * v for v in expected)]])


# ---- KL estimators ----

def test_kl_k3_nonnegative_zero_when_equal_and_k1_sign():
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(64, generator=g) * 5, -torch.rand(64, generator=g) * 5
    assert (kl_k3(logp, ref) >= 0).all()
    close(kl_k3(logp, logp), torch.zeros(64))
    close(kl_k3(t([0.0]), t([math.log(2.0)])), [2 - math.log(2.0) - 1])
    assert kl_k1(t([-1.0]), t([-2.0])).item() == 1.0 and kl_k1(t([-2.0]), t([-1.0])).item() == -1.0


def test_k1_and_k3_expectations_under_pi_are_the_exact_kl():
    pi, ref = [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]
    kl = sum(p * math.log(p / r) for p, r in zip(pi, ref))
    logp, ref_logp = t([math.log(p) for p in pi]), t([math.log(r) for r in ref])
    close((t(pi) * kl_k1(logp, ref_logp)).sum(), kl)
    close((t(pi) * kl_k3(logp, ref_logp)).sum(), kl)


# ---- PPO ----

def test_token_rewards_score_on_last_real_token():
    kl = t([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    mask = t([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    rewards = token_rewards(t([2.0, -1.0, 5.0]), kl, mask, kl_coef=0.5)
    close(rewards, [[-0.05, -0.1, -0.15 + 2.0], [-0.2, -0.25 - 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_gae_by_hand_with_a_padded_row():
    gamma, lam = 0.9, 0.8
    rewards = t([[0.0, 0.0, 1.0], [0.2, -0.5, 9.0]])  # 9.0 and 7.0 sit on padding
    values = t([[0.5, 0.4, 0.6], [0.1, 0.3, 7.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    # row 0: deltas 1 - 0.6 = 0.4; 0.9 * 0.6 - 0.4 = 0.14; 0.9 * 0.4 - 0.5 = -0.14; gamma * lam = 0.72
    a0 = [-0.14 + 0.72 * (0.14 + 0.72 * 0.4), 0.14 + 0.72 * 0.4, 0.4]  # 0.16816, 0.428, 0.4
    # row 1 ends at token 1, so V after it is 0: deltas -0.5 - 0.3 = -0.8; 0.2 + 0.9 * 0.3 - 0.1 = 0.37
    a1 = [0.37 + 0.72 * -0.8, -0.8, 0.0]  # -0.206, -0.8, 0
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    close(advantages, [a0, a1])
    close(advantages[0], [0.16816, 0.428, 0.4])
    close(returns, [[0.66816, 0.828, 1.0], [-0.106, -0.5, 0.0]])
    alone, _ = gae(rewards[:1], values[:1], mask[:1], gamma, lam)
    close(alone, [a0])


def test_ppo_policy_loss_one_clipped_token_one_not():
    clip = 0.2
    # token 0: ratio 1.5, A = 1 -> clipped to 1.2, loss -1.2; token 1: ratio 0.9, A = 2 -> -1.8; token 2 padding
    logp = t([[math.log(1.5), math.log(0.9), 3.0]]).requires_grad_()
    old_logp, advantages, mask = t([[0.0, 0.0, -3.0]]), t([[1.0, 2.0, 100.0]]), t([[1, 1, 0]])
    loss, clip_fraction = ppo_policy_loss(logp, old_logp, advantages, mask, clip)
    close(loss.detach(), (-1.2 - 1.8) / 2)
    close(clip_fraction, 0.5)
    loss.backward()
    close(logp.grad, [[0.0, -2.0 * 0.9 / 2, 0.0]])  # no gradient through the clipped token


def test_ppo_policy_loss_keeps_the_pessimistic_unclipped_term():
    # ratio 1.5 with A = -1: -A r = 1.5 beats -A clip(r) = 1.2; it still counts as outside the clip range
    loss, clip_fraction = ppo_policy_loss(t([[math.log(1.5)]]), t([[0.0]]), t([[-1.0]]), t([[1]]), 0.2)
    close(loss, 1.5)
    close(clip_fraction, 1.0)


def split_gradients(loss_of, tensors: dict, parts: list[list[int]], **kwargs) -> torch.Tensor:
    """d loss / d logp with the rows cut into data-parallel parts, each part's loss given `kwargs` (the global
    count) and the parts' gradients summed, as the learners' all-reduce sums them; back in row order."""
    grad = torch.zeros_like(tensors["logp"])
    for rows in parts:
        piece = {k: v[rows].clone() for k, v in tensors.items()}
        piece["logp"].requires_grad_()
        loss_of(piece, **kwargs).backward()
        grad[rows] += piece["logp"].grad
    return grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_data_parallel_parts_with_the_global_count_give_the_one_learner_gradient():
    g = torch.Generator().manual_seed(0)
    # PPO: one learner holds a 4-token response, the other a 20-token one
    lengths = [4, 20]
    mask = t([[1.0] * n + [0.0] * (20 - n) for n in lengths])
    ppo = {"logp": -torch.rand(2, 20, generator=g, dtype=torch.float64), "old": -torch.rand(2, 20, generator=g,
           dtype=torch.float64), "adv": torch.randn(2, 20, generator=g, dtype=torch.float64), "mask": mask,
           "values": torch.randn(2, 20, generator=g, dtype=torch.float64)}

    def ppo_loss(x, total=None):
        policy, _ = ppo_policy_loss(x["logp"], x["old"], x["adv"], x["mask"], 0.2, total=total)
        value, _ = ppo_value_loss(x["logp"] * 2, x["values"], x["adv"], x["mask"], 0.2, total=total)
        return policy + 0.1 * value

    whole = split_gradients(ppo_loss, ppo, [[0, 1]])
    torch.testing.assert_close(split_gradients(ppo_loss, ppo, [[0], [1]], total=24.0), whole)
    # each learner's own token mean, averaged over the 2 learners (the defect): relative gradient error 0.73 here
    naive = split_gradients(ppo_loss, ppo, [[0], [1]]) / 2
    assert relative_error(naive, whole) > 0.3

    # GRPO: parts of 1 and 2 sequences (a minibatch that does not split evenly)
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    grpo = {"logp": -torch.rand(3, 4, generator=g, dtype=torch.float64), "old": -torch.rand(3, 4, generator=g,
            dtype=torch.float64), "ref": -torch.rand(3, 4, generator=g, dtype=torch.float64),
            "adv": torch.randn(3, generator=g, dtype=torch.float64), "mask": mask}

    def grpo_of(x, total=None):
        return grpo_loss(x["logp"], x["old"], x["ref"], x["adv"], x["mask"], 0.2, 0.1, total=total)[0]

    whole = split_gradients(grpo_of, grpo, [[0, 1, 2]])
    torch.testing.assert_close(split_gradients(grpo_of, grpo, [[0], [1, 2]], total=3), whole)
    assert relative_error(split_gradients(grpo_of, grpo, [[0], [1, 2]]) / 2, whole) > 0.1  # 0.25 here


def test_ppo_value_loss_clipping():
    clip = 0.2
    values, old_values = t([[1.0, 0.6, 0.0, 9.0]]), t([[0.5, 0.5, 0.5, 0.0]])
    returns, mask = t([[1.0, 0.0, 1.0, -9.0]]), t([[1, 1, 1, 0]])
    # token 0: plain 0, clipped V 0.7 -> 0.09 (clip larger); token 1: V within range -> 0.36 both;
    # token 2: plain 1.0 beats clipped V 0.3 -> 0.49; token 3 padding
    loss, clip_fraction = ppo_value_loss(values, old_values, returns, mask, clip)
    close(loss, 0.5 * (0.09 + 0.36 + 1.0) / 3)
    close(clip_fraction, 1 / 3)


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(7.0, n_steps=100)
    assert ctl.value == pytest.approx(0.1 * (1 + (7 / 6 - 1) * 100 / 10000)) and ctl.value > 0.1
    for kl, error in ((3.0, -0.2), (12.0, 0.2), (torch.tensor(6.3), 0.05)):  # errors of -0.5 and 1 are clipped
        before = ctl.value
        ctl.update(kl, n_steps=100)
        assert ctl.value == pytest.approx(before * (1 + error * 100 / 10000))
    restored = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value and all(isinstance(v, float) for v in ctl.state_dict().values())
    fixed = AdaptiveKLController(0.05, target=None, horizon=None)
    fixed.update(100.0, n_steps=1000)
    assert fixed.value == 0.05
    with pytest.raises(ValueError):
        AdaptiveKLController(0.1, target=6.0, horizon=None)


# ---- GRPO ----

def test_group_advantages_two_groups_of_three():
    eps = 1e-6
    std0, std1 = math.sqrt(2 / 3), math.sqrt(2.0)  # [1, 2, 3]: mean 2, var 2/3; [0, 0, 3]: mean 1, var 6/3
    expected = [-1 / (std0 + eps), 0.0, 1 / (std0 + eps), -1 / (std1 + eps), -1 / (std1 + eps), 2 / (std1 + eps)]
    close(group_advantages(t([1.0, 2.0, 3.0, 0.0, 0.0, 3.0]), 3), expected)
    close(group_advantages(t([5.0, 5.0]), 2), [0.0, 0.0])  # a group that all scored alike teaches nothing


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(t([1.0, 2.0, 3.0, 4.0, 5.0]), 3)
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(t([1.0, 2.0]), 1)


def test_grpo_loss_averages_each_row_then_rows():
    # ratio 1 and pi == ref: each token's loss is -A; row 0 has 3 tokens, row 1 one (its padding is garbage)
    logp = t([[-1.0, -2.0, -0.5], [-1.5, 4.0, 4.0]])
    ref = t([[-1.0, -2.0, -0.5], [-1.5, -9.0, -9.0]])
    mask = t([[1, 1, 1], [1, 0, 0]])
    loss, stats = grpo_loss(logp, logp.clone(), ref, t([1.0, -2.0]), mask, clip=0.2, kl_coef=0.1)
    close(loss, ((-1 - 1 - 1) / 3 + 2 / 1) / 2)  # 0.5; pooling tokens would give (-3 + 2) / 4
    assert stats == {"policy_loss": pytest.approx(0.5), "kl": 0.0, "clip_fraction": 0.0}


def test_grpo_loss_against_a_scalar_loop():
    clip, kl_coef = 0.2, 0.05
    logp = [[-1.0, -2.0, -0.5, 7.0], [-1.5, -0.3, 9.0, 9.0]]
    old = [[-1.3, -2.0, -0.4, 0.0], [-1.5, -0.6, 0.0, 0.0]]
    ref = [[-0.8, -2.5, -0.5, -9.0], [-2.0, -0.3, -9.0, -9.0]]
    lengths, adv = [3, 2], [0.7, -1.1]
    rows = []
    for b in range(2):
        terms = []
        for i in range(lengths[b]):
            ratio = math.exp(logp[b][i] - old[b][i])
            surrogate = max(-adv[b] * ratio, -adv[b] * min(max(ratio, 1 - clip), 1 + clip))
            log_r = ref[b][i] - logp[b][i]
            terms.append((surrogate, math.exp(log_r) - log_r - 1, abs(ratio - 1) > clip))
        rows.append([sum(term[k] for term in terms) / lengths[b] for k in range(3)])
    policy, kl, clipped = (sum(row[k] for row in rows) / 2 for k in range(3))
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]])
    loss, stats = grpo_loss(t(logp), t(old), t(ref), t(adv), mask, clip, kl_coef)
    close(loss, policy + kl_coef * kl)
    assert stats == {"policy_loss": pytest.approx(policy), "kl": pytest.approx(kl),
                     "clip_fraction": pytest.approx(clipped)}
    assert clipped > 0 and kl > 0  # the example exercises the clip and the KL term


# ---- preference losses ----

def pair_losses(scores: list[float], n: int) -> list[tuple[float, bool]]:
    """(-log sigmoid(s_i - s_j), s_i > s_j) for every i < j < n, by loops."""
    return [(softplus(scores[j] - scores[i]), scores[i] > scores[j]) for i in range(n) for j in range(i + 1, n)]


def test_bradley_terry_four_way_ranking_all_six_pairs():
    scores = [2.0, 1.0, 1.5, -0.5]
    pairs = pair_losses(scores, 4)
    assert len(pairs) == 6
    loss, accuracy = bradley_terry_loss(t([scores]), torch.tensor([4]))
    close(loss, sum(p for p, _ in pairs) / 6)
    close(accuracy, 5 / 6)  # only (1.0, 1.5) is ordered wrongly


def test_bradley_terry_mixed_batch_weights_rankings_equally():
    four, two = [2.0, 1.0, 1.5, -0.5], [0.3, 0.8, 99.0, -99.0]  # the last two columns of row 1 are padding
    pairs4, pairs2 = pair_losses(four, 4), pair_losses(two, 2)
    assert len(pairs2) == 1
    loss, accuracy = bradley_terry_loss(t([four, two]), torch.tensor([4, 2]))
    expected = (sum(p for p, _ in pairs4) / 6 + pairs2[0][0]) / 2
    close(loss, expected)
    pooled = (sum(p for p, _ in pairs4) + pairs2[0][0]) / 7
    assert abs(expected - pooled) > 1e-3  # the example tells the two weightings apart
    close(accuracy, (5 + 0) / 7)  # accuracy pools pairs: 0.3 < 0.8 is wrong
    with pytest.raises(ValueError):
        bradley_terry_loss(t([four, two]), torch.tensor([4, 1]))
    with pytest.raises(ValueError):
        bradley_terry_loss(t([four, two]), torch.tensor([5, 2]))


def test_dpo_loss_at_a_known_point():
    beta = 0.1
    # pair 0: chosen log-ratio +2, rejected -1 -> rewards 0.2 and -0.1, margin 0.3
    # pair 1: chosen log-ratio 0, rejected +2 -> rewards 0 and 0.2, margin -0.2
    loss, stats = dpo_loss(t([-10.0, -5.0]), t([-15.0, -4.0]), t([-12.0, -5.0]), t([-14.0, -6.0]), beta)
    close(loss, (softplus(-0.3) + softplus(0.2)) / 2)
    close(stats["chosen_reward"], 0.1)
    close(stats["rejected_reward"], 0.05)
    close(stats["margin"], 0.05)
    close(stats["accuracy"], 0.5)
    single, _ = dpo_loss(t([-10.0]), t([-15.0]), t([-12.0]), t([-14.0]), beta)
    close(single, -math.log(1 / (1 + math.exp(-0.1 * ((-10 + 12) - (-15 + 14))))))


def test_inputs_are_left_unchanged():
    g = torch.Generator().manual_seed(1)
    logp, old, ref, values = (torch.randn(2, 4, generator=g) for _ in range(4))
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]]).float()
    inputs = [logp, old, ref, values, mask]
    copies = [x.clone() for x in inputs]
    rewards = token_rewards(torch.tensor([1.0, -1.0]), kl_k1(logp, ref), mask, 0.1)
    advantages, returns = gae(rewards, values, mask, 1.0, 0.95)
    masked_whiten(advantages, mask)
    ppo_policy_loss(logp, old, advantages, mask, 0.2)
    ppo_value_loss(values, old, returns, mask, 0.2)
    grpo_loss(logp, old, ref, torch.tensor([0.5, -0.5]), mask, 0.2, 0.04)
    for x, copy in zip(inputs, copies):
        assert torch.equal(x, copy)
