"""The tensor maths of alignment: plain functions of torch tensors, no Ray, no Hydra, tested on hand-computed values.

Responses are right-padded token sequences and `mask` is (B, T), 1 on real response tokens and 0 on padding
(float or bool). Every function works on any device, returns new tensors and never modifies its inputs.

- Masked statistics: `masked_mean`, `masked_whiten` (over real tokens only; an empty mask gives 0, not NaN).
- Token statistics from logits (in float32) at a sampling temperature: `logprobs_from_logits`,
  `entropy_from_logits` (RLHF takes the behaviour, learner and reference log-probs all from the distribution the
  rollouts sample: softmax(logits / temperature)).
- Data parallelism: the losses average over the real tokens (sequences for GRPO) of a whole minibatch when given
  its `total` count across every learner, so that each learner's loss on its part sums, over learners, to the loss
  of one learner on the whole minibatch (and the summed gradients to its gradient).
- KL estimators per token (Schulman, "Approximating KL divergence"): `kl_k1` (log-ratio, unbiased, can be
  negative) and `kl_k3` (unbiased and never negative).
- PPO (Ziegler et al. 2019, InstructGPT): `token_rewards` (KL penalty on every token, the score on the last),
  `gae` (generalised advantage estimation), `ppo_policy_loss` (clipped surrogate), `ppo_value_loss` (clipped
  value loss), `AdaptiveKLController` (the KL coefficient steered towards a target, checkpointable).
- GRPO (DeepSeekMath): `group_advantages` (scores normalised within each prompt's group) and `grpo_loss`
  (clipped surrogate plus a k3 KL term, averaged over each sequence's tokens and then over sequences).
- Preference losses: `bradley_terry_loss` (reward model on every pair of a K-way ranking, each ranking weighted
  equally, as in InstructGPT) and `dpo_loss` (Rafailov et al. 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None,
                total: float | torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is 1, over `dim` (every position if None); 0 where the mask is empty. `total`
    replaces the count as the divisor: the count of a larger batch this one is a part of."""
    mask = mask.to(x.dtype)
    summed = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    count = torch.as_tensor(total, dtype=x.dtype, device=x.device) if total is not None else \
        mask.sum() if dim is None else mask.sum(dim)
    return summed / count.clamp_min(1)  # an empty mask has a sum of 0, so 0 / 1


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / (std + 1e-8) over the masked positions, 0 elsewhere; `shift_mean=False` keeps the mean."""
    mean = masked_mean(x, mask)
    std = masked_mean((x - mean) ** 2, mask).sqrt()  # biased variance, as PPO implementations use
    whitened = (x - mean) / (std + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature)[token]: (B, T, V), (B, T) -> (B, T) float32."""
    logits = logits.float() / temperature
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)  # no second (B, T, V) tensor for the log-softmax


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature): (B, T, V) -> (B, T) float32."""
    logits = logits.float() / temperature
    probs = logits.softmax(-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)  # H = log Z - E_p[logit]


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """log pi - log ref per token: unbiased for KL(pi || ref) on samples of pi, negative on some tokens."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """r - log r - 1 with r = ref / pi per token: unbiased for KL(pi || ref), never negative, lower variance."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """PPO rewards (B, T): -kl_coef * kl on every real token, plus each row's score (B,) on its last real token."""
    mask = mask.to(kl.dtype)
    # the last real token is where the running count reaches the row's total (and the token itself is real)
    is_last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()  # (B, T)
    return -kl_coef * kl * mask + score.to(kl.dtype).unsqueeze(1) * is_last


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each row's real tokens (a prefix of ones).

    A_t = delta_t + gamma * lam * A_{t+1} with delta_t = r_t + gamma * V_{t+1} - V_t, and V = 0 after the last
    real token. Returns (advantages, returns = advantages + values), both (B, T) and 0 on padding.
    """
    mask = mask.to(values.dtype)
    next_value = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, T)
    deltas = rewards + gamma * next_value - values  # (B, T)
    running = torch.zeros_like(values[:, 0])  # (B,) A_{t+1}: 0 past the end of every row
    advantages = []
    for t in reversed(range(values.shape[1])):
        running = (deltas[:, t] + gamma * lam * running) * mask[:, t]
        advantages.append(running)
    advantages = torch.stack(advantages[::-1], dim=1)  # (B, T)
    return advantages, (advantages + values) * mask


def _clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate loss max(-A r, -A clip(r)) and whether r left [1 - clip, 1 + clip]."""
    ratio = torch.exp(logp - old_logp)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return loss, ((ratio - 1).abs() > clip).to(logp.dtype)


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float, total: float | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate averaged over all real tokens of the batch (or over `total` tokens, the whole
    minibatch's across learners): (loss, fraction of tokens clipped)."""
    loss, clipped = _clipped_surrogate(logp, old_logp, advantages, clip)
    return masked_mean(loss, mask, total=total), masked_mean(clipped, mask, total=total)


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float, total: float | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * max((V - R)^2, (V clipped to old +- clip - R)^2) over real tokens (or over `total` tokens, as the
    policy loss): (loss, fraction where the clip term is the larger)."""
    clipped_values = torch.clamp(values, old_values - clip, old_values + clip)
    loss_plain = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_plain, loss_clipped), mask, total=total)
    return loss, masked_mean((loss_clipped > loss_plain).to(values.dtype), mask, total=total)


class AdaptiveKLController:
    """Ziegler et al. 2019: the KL coefficient grows when the policy drifts past `target` and shrinks below it,
    by at most 20% of n_steps / horizon per update (both in samples: an update after n_steps samples, a horizon of
    `horizon` samples). `target=None` keeps the coefficient fixed."""

    def __init__(self, init_coef: float, target: float | None, horizon: float | None):
        if target is not None and (target <= 0 or horizon is None or horizon <= 0):
            raise ValueError(f"adaptive KL needs target > 0 and horizon > 0, got {target} and {horizon}")
        self.value = float(init_coef)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO advantages: each score (N,) normalised by the mean and std of its group of `group_size` consecutive
    samples of one prompt."""
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 to compare samples, got {group_size}")
    if scores.numel() % group_size:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size}")
    groups = scores.reshape(-1, group_size)  # (prompts, group_size)
    mean = groups.mean(1, keepdim=True)
    std = groups.std(1, unbiased=False, keepdim=True)
    return ((groups - mean) / (std + eps)).reshape(-1)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip: float, kl_coef: float,
              total: float | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO (Shao et al. 2024): clipped surrogate with each sequence's advantage (B,) on all its tokens, plus
    kl_coef * k3(pi, ref); averaged over each sequence's real tokens (1/|o_i|), then over the B sequences (or over
    `total` sequences, the whole minibatch's across learners).

    The stats use the same averaging, so loss == policy_loss + kl_coef * kl.
    """
    policy, clipped = _clipped_surrogate(logp, old_logp, advantages.unsqueeze(1), clip)  # (B, T)
    kl = kl_k3(logp, ref_logp)  # (B, T)
    sequences = mask.shape[0] if total is None else total

    def per_sequence(x: torch.Tensor) -> torch.Tensor:
        return masked_mean(x, mask, dim=1).sum() / max(sequences, 1)

    loss = per_sequence(policy + kl_coef * kl)
    stats = {"policy_loss": per_sequence(policy).item(), "kl": per_sequence(kl).item(),
             "clip_fraction": per_sequence(clipped).item()}
    return loss, stats


def bradley_terry_loss(scores: torch.Tensor, num_responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward-model loss over every pair of each ranking: scores (B, K), best first, row b's first
    num_responses[b] columns real. -log sigmoid(s_i - s_j) over pairs i < j, averaged per ranking and then over
    rankings. Returns (loss, accuracy: the share of all valid pairs where s_i > s_j)."""
    n = num_responses.to(scores.device)
    if bool((n < 2).any()) or bool((n > scores.shape[1]).any()):
        raise ValueError(f"each ranking needs 2 to {scores.shape[1]} responses, got {n.tolist()}")
    better, worse = torch.triu_indices(scores.shape[1], scores.shape[1], offset=1, device=scores.device)  # (P,)
    margins = scores[:, better] - scores[:, worse]  # (B, P)
    valid = (worse.unsqueeze(0) < n.unsqueeze(1)).to(scores.dtype)  # (B, P) both responses real
    per_ranking = (-F.logsigmoid(margins) * valid).sum(1) / valid.sum(1)  # (B,) n(n-1)/2 pairs each
    accuracy = ((margins > 0).to(scores.dtype) * valid).sum() / valid.sum()
    return per_ranking.mean(), accuracy


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO on summed sequence log-probs (N,): -log sigmoid of the difference of the implicit rewards
    beta * (log pi - log ref) of chosen and rejected. Stats are detached batch means."""
    chosen_reward = beta * (policy_chosen - ref_chosen)  # (N,)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    stats = {"chosen_reward": chosen_reward.detach().mean(), "rejected_reward": rejected_reward.detach().mean(),
             "margin": margin.detach().mean(), "accuracy": (margin > 0).float().mean()}
    return loss, stats
