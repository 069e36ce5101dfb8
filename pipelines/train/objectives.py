"""Training objectives: each one wraps a model and turns a batch into a loss and summable statistics.

An objective is an `nn.Module` whose `forward(batch, generator)` returns `(loss, stats)`, where `stats` maps a
metric name to `(sum, count)` tensors — sums add up across micro-batches, evaluation batches and workers, and
the loop divides once. Wrapping the model lets DDP/FSDP see every head an objective uses inside one `forward`.
Every objective lists its `stat_names` (the same on every worker, so they can be summed with one all-reduce),
counts its `flops_per_token` (for MFU: only the heads it runs, where it runs them) and its `loss_units(batch)`:
what its loss is a mean over (tokens, assistant tokens, examples, rankings, pairs), so that the loop weights each
micro-batch by its share of the whole optimizer step's units — every micro-batch of every worker — and the step's
gradient is that of one batch holding them all.
Adding an objective is a class here, an entry in OBJECTIVES and a conf/objective/*.yaml; the loop never changes.

- `clm`: next-token cross-entropy over packed blocks (decoder).
- `mlm`: BERT dynamic masking, drawn anew every step from the given generator: `mask_prob` of the non-special
  tokens are chosen; of those `mask_token_frac` become <mask>, `random_token_frac` a random ordinary token (from
  the tokenizer's `first_ordinary_id`: no special or byte-fallback piece), the rest stay — the model predicts
  the originals at all chosen positions (encoder).
- `nsp`: is segment B the next sentence after A? (encoder, pooled first token).
- `mlm_nsp`: the sum of both, on the same batch (BERT pre-training). The encoder objectives weight micro-batches
  by their examples (the masked positions are drawn in the forward pass).
- `sft`: next-token cross-entropy on the assistant tokens of padded chat examples only (`loss_mask`), averaged over
  those tokens — all of the optimizer step's, through `loss_units` (decoder; instruction tuning and generative
  tasks). Each batch is trimmed to its longest example.
- `classify`: cross-entropy of a sequence classifier's logits against the example's label (encoder plus head).
- `reward`: a reward model (decoder plus scalar head) on rankings: the Bradley-Terry loss over all K(K-1)/2 ordered
  pairs of each K-way ranking, every ranking weighted equally (InstructGPT); `acc` is the pairwise accuracy.
- `dpo`: direct preference optimisation on rankings, the best response against each worse one. The reference
  log-probabilities come from a frozen copy of the starting model held by each worker (made when the objective is
  built, before any checkpoint is resumed): one extra forward pass per step, and shards that stay independent of
  the model — a precomputed pass would tie every shard build to one reference checkpoint.
The alignment losses are the pure functions of pipelines/align/algorithms.py.
"""

from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from pipelines.align.algorithms import bradley_terry_loss, dpo_loss
from pipelines.errors import ConfigError

IGNORE = -100
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]


def mask_tokens(input_ids: torch.Tensor, *, maskable: torch.Tensor, mask_prob: float, mask_token_frac: float,
                random_token_frac: float, mask_id: int, random_low: int, vocab_size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked inputs, labels): labels hold the original id at chosen positions and IGNORE elsewhere."""
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = (draw < mask_prob) & maskable
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    how = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = chosen & (how < mask_token_frac)
    to_random = chosen & (how >= mask_token_frac) & (how < mask_token_frac + random_token_frac)
    random_ids = torch.randint(random_low, vocab_size, input_ids.shape, generator=generator,
                               device=input_ids.device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


def _stat(total: torch.Tensor, count) -> tuple[torch.Tensor, torch.Tensor]:
    return total.detach().float(), torch.as_tensor(count, dtype=torch.float32, device=total.device)


def _units(count, like: torch.Tensor) -> torch.Tensor:
    """A loss's unit count as a float64 scalar on the batch's device (summed over a step without a host sync)."""
    return torch.as_tensor(count, device=like.device).to(torch.float64)


class CausalLM(nn.Module):
    model_kind, shard_format, ppl_of = "decoder", "clm", "loss"
    stat_names = ("loss",)
    unused_parameters = False

    def __init__(self, model: nn.Module, cfg: Mapping, special_ids: Mapping[str, int], *, vocab_size: int,
                 first_ordinary_id: int):
        """Every objective takes the same arguments, so the loop builds any of them alike; CLM needs only the model
        (and the padding id, for the padded objectives built on it)."""
        super().__init__()
        self.model = model
        self.pad_id = special_ids["pad"]

    def flops_per_token(self, seq_len: int) -> float:
        return self.model.flops_per_token(seq_len)

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        ids = batch["input_ids"].long()  # (B, T + 1)
        logits = self.model(ids[:, :-1])  # (B, T, V)
        targets = ids[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return loss, {"loss": _stat(loss * targets.numel(), targets.numel())}

    @staticmethod
    def tokens(batch) -> int:
        return batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1)

    def loss_units(self, batch) -> torch.Tensor:
        return _units(self.tokens(batch), batch["input_ids"])


def masked_token_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(mean cross-entropy over the positions where `mask` is set, their count): a target where the mask is 0
    has no effect on the loss at all. logits (B, T, V), targets and mask (B, T)."""
    weights = mask.float()
    losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    count = weights.sum()
    return (losses * weights.flatten()).sum() / count.clamp(min=1), count


def unpadded_lengths(batch: Mapping[str, torch.Tensor], pad_id: int) -> torch.Tensor:
    """(B,) the examples' lengths without their right padding (what `trainer.length_groups` groups by)."""
    return (batch["input_ids"] != pad_id).sum(dim=1)


def trim_padding(batch: Mapping[str, torch.Tensor], pad_id: int, names: tuple[str, ...]) -> dict:
    """The token columns `names` cut to the batch's longest example (examples are right-padded with pad_id)."""
    ids = batch["input_ids"]
    length = int(unpadded_lengths(batch, pad_id).max()) if ids.numel() else 0
    length = max(length, 2)
    return {name: batch[name][:, :length] for name in names}


class SupervisedChat(CausalLM):
    shard_format = "sft"

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        cut = trim_padding(batch, self.pad_id, ("input_ids", "loss_mask"))
        ids, mask = cut["input_ids"].long(), cut["loss_mask"]  # (B, L + 1)
        logits = self.model(ids[:, :-1])  # (B, L, V): right padding never reaches an earlier position
        loss, count = masked_token_loss(logits, ids[:, 1:], mask[:, 1:])
        return loss, {"loss": _stat(loss * count, count)}

    def tokens(self, batch) -> int:
        return int(self.lengths(batch).sum())

    def lengths(self, batch) -> torch.Tensor:
        return unpadded_lengths(batch, self.pad_id)

    def loss_units(self, batch) -> torch.Tensor:
        """The assistant tokens the loss is over: the targets where `loss_mask` is set."""
        return _units(batch["loss_mask"][:, 1:].sum(), batch["loss_mask"])


class Classification(nn.Module):
    model_kind, shard_format, ppl_of = "encoder", "classify", None
    stat_names = ("loss", "acc")
    unused_parameters = True  # the encoder's MLM and NSP heads

    def __init__(self, model: nn.Module, cfg: Mapping, special_ids: Mapping[str, int], *, vocab_size: int,
                 first_ordinary_id: int):
        super().__init__()
        self.model = model
        self.pad_id = special_ids["pad"]

    def flops_per_token(self, seq_len: int) -> float:
        return self.model.encoder.flops_per_token(seq_len, decoded_fraction=0.0)

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        ids = trim_padding(batch, self.pad_id, ("input_ids",))["input_ids"].long()
        attention_mask = ids != self.pad_id
        logits = self.model(ids, token_type_ids=torch.zeros_like(ids), attention_mask=attention_mask)
        target = batch["label"].long()
        loss = F.cross_entropy(logits.float(), target)
        n = len(target)
        return loss, {"loss": _stat(loss * n, n), "acc": _stat((logits.argmax(-1) == target).sum(), n)}

    def tokens(self, batch) -> int:
        return int(self.lengths(batch).sum())

    def lengths(self, batch) -> torch.Tensor:
        return unpadded_lengths(batch, self.pad_id)

    def loss_units(self, batch) -> torch.Tensor:
        return _units(len(batch["label"]), batch["label"])


def rankings(batch: Mapping[str, torch.Tensor], max_responses: int, pad_id: int):
    """A batch of `preference` rows -> (ids (N, L), assistant masks (N, L), owner (N,), rank (N,), num_responses
    (B,)): the real responses only (N of B x K), cut to the longest one."""
    n = batch["num_responses"].long()  # (B,)
    B = n.shape[0]
    ids = batch["input_ids"].long().view(B, max_responses, -1)  # (B, K, W)
    mask = batch["loss_mask"].view(B, max_responses, -1)
    real = torch.arange(max_responses, device=n.device)[None, :] < n[:, None]  # (B, K)
    owner, rank = real.nonzero(as_tuple=True)  # (N,), (N,)
    ids, mask = ids[owner, rank], mask[owner, rank]  # (N, W)
    length = max(int((ids != pad_id).sum(dim=1).max()), 2)
    return ids[:, :length], mask[:, :length], owner, rank, n


def sequence_logprobs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, L) right-padded sequences -> (N,) summed log-probabilities of the tokens where `mask` is 1."""
    logits = model(ids[:, :-1])  # (N, L-1, V)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * mask[:, 1:].float()).sum(dim=1)


class RewardRanking(nn.Module):
    model_kind, shard_format, ppl_of = "decoder", "preference", None
    stat_names = ("loss", "acc")
    unused_parameters = True  # the decoder's LM head

    def __init__(self, model: nn.Module, cfg: Mapping, special_ids: Mapping[str, int], *, vocab_size: int,
                 first_ordinary_id: int):
        super().__init__()
        self.model = model  # a ScalarModel
        self.pad_id, self.max_responses = special_ids["pad"], cfg["max_responses"]

    def flops_per_token(self, seq_len: int) -> float:
        return self.model.decoder.flops_per_token(seq_len)

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        ids, _, owner, rank, n = rankings(batch, self.max_responses, self.pad_id)
        flat = self.model(ids, attention_mask=(ids != self.pad_id).long())  # (N,)
        scores = flat.new_zeros(n.shape[0], self.max_responses).index_put((owner, rank), flat.float())  # (B, K)
        loss, acc = bradley_terry_loss(scores, n)
        pairs = int((n * (n - 1) // 2).sum())
        return loss, {"loss": _stat(loss * len(n), len(n)), "acc": _stat(acc * pairs, pairs)}

    def tokens(self, batch) -> int:
        return int((batch["input_ids"] != self.pad_id).sum())

    def loss_units(self, batch) -> torch.Tensor:
        """Rankings: each weighs the same in the Bradley-Terry loss."""
        return _units(len(batch["num_responses"]), batch["num_responses"])


class DirectPreference(nn.Module):
    model_kind, shard_format, ppl_of = "decoder", "preference", None
    stat_names = ("loss", "acc", "margin", "chosen_reward", "rejected_reward", "chosen_nll")
    unused_parameters = False

    def __init__(self, model: nn.Module, cfg: Mapping, special_ids: Mapping[str, int], *, vocab_size: int,
                 first_ordinary_id: int):
        super().__init__()
        self.model = model
        self.pad_id, self.max_responses, self.beta = special_ids["pad"], cfg["max_responses"], cfg["beta"]
        self.sft_weight = float(cfg["sft_weight"])
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.__dict__["reference"] = reference  # not a submodule: no gradients, no optimizer state, not saved

    def flops_per_token(self, seq_len: int) -> float:
        return self.model.flops_per_token(seq_len) * 4 / 3  # and the reference's forward pass

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        ids, mask, owner, rank, n = rankings(batch, self.max_responses, self.pad_id)
        reference = self.__dict__["reference"]
        if next(reference.parameters()).device != ids.device:
            reference.to(ids.device)
        policy = sequence_logprobs(self.model, ids, mask)  # (N,)
        with torch.no_grad():
            ref = sequence_logprobs(reference, ids, mask)
        # Each ranking's best response (rank 0) against each of its others.
        best = torch.full((n.shape[0],), -1, dtype=torch.long, device=ids.device)
        best[owner[rank == 0]] = (rank == 0).nonzero(as_tuple=True)[0]
        worse = (rank > 0).nonzero(as_tuple=True)[0]  # (P,)
        chosen = best[owner[worse]]
        loss, stats = dpo_loss(policy[chosen], policy[worse], ref[chosen], ref[worse], self.beta)
        # The chosen response's per-token negative log-likelihood, once per pair (so it weighs with the pairs in
        # the global normalisation): DPO alone only moves the margin, and may lower the chosen response's own
        # probability with the rejected one's; this term keeps the preferred replies likely (RPO; Llama 3's DPO).
        chosen_nll = -policy[chosen] / mask[chosen, 1:].sum(dim=1).clamp(min=1)  # (P,)
        if self.sft_weight:
            loss = loss + self.sft_weight * chosen_nll.mean()
        P = len(worse)
        return loss, {"loss": _stat(loss * P, P)} | {k: _stat(stats[k] * P, P) for k in
                                                      ("margin", "chosen_reward", "rejected_reward")} | {
            "acc": _stat(stats["accuracy"] * P, P), "chosen_nll": _stat(chosen_nll.detach().sum(), P)}

    def tokens(self, batch) -> int:
        return int((batch["input_ids"] != self.pad_id).sum())

    def loss_units(self, batch) -> torch.Tensor:
        """Pairs: the best response against each worse one."""
        return _units((batch["num_responses"].long() - 1).sum(), batch["num_responses"])


class PairObjective(nn.Module):
    """Shared by the encoder objectives: sentence-pair batches, masking settings, the encoder pass."""

    model_kind, shard_format = "encoder", "pairs"
    use_mlm = use_nsp = False
    ppl_of: str | None = None
    unused_parameters = False

    def __init__(self, model: nn.Module, cfg: Mapping, special_ids: Mapping[str, int], *, vocab_size: int,
                 first_ordinary_id: int):
        super().__init__()
        self.model = model
        self.cfg = dict(cfg)
        self.special = special_ids
        # Random replacements are ordinary pieces of the tokenizer: after the special tokens and the byte-fallback
        # pieces (rare in text, so replacing with them would teach little), below the tokenizer's vocabulary size
        # (the model's embedding may be larger).
        self.random_low, self.vocab_size = first_ordinary_id, vocab_size

    def flops_per_token(self, seq_len: int) -> float:
        """The encoder's training FLOPs per token, its MLM head counted only at the masked share of positions."""
        decoded = self.cfg["mask_prob"] if self.use_mlm else 0.0
        return self.model.flops_per_token(seq_len, decoded_fraction=decoded)

    def forward(self, batch: Mapping[str, torch.Tensor], generator=None) -> tuple[torch.Tensor, Stats]:
        ids = batch["input_ids"].long()  # (B, T)
        attention_mask = ids != self.special["pad"]
        labels = None
        if self.use_mlm:
            maskable = attention_mask & (ids != self.special["cls"]) & (ids != self.special["sep"])
            ids, labels = mask_tokens(ids, maskable=maskable, mask_prob=self.cfg["mask_prob"],
                                      mask_token_frac=self.cfg["mask_token_frac"],
                                      random_token_frac=self.cfg["random_token_frac"], mask_id=self.special["mask"],
                                      random_low=self.random_low, vocab_size=self.vocab_size, generator=generator)
        hidden = self.model(ids, token_type_ids=batch["token_type_ids"].long(), attention_mask=attention_mask)
        loss, stats = hidden.new_zeros(()), {}
        if self.use_mlm:
            chosen = labels != IGNORE
            logits = self.model.mlm_logits(hidden[chosen])  # (N_masked, V): decode only the chosen positions
            n = int(chosen.sum())
            mlm = F.cross_entropy(logits.float(), labels[chosen]) if n else logits.sum() * 0.0
            loss = loss + mlm
            stats["mlm_loss"] = _stat(mlm * n, n)
            stats["mlm_acc"] = _stat((logits.argmax(-1) == labels[chosen]).sum(), n)
        if self.use_nsp:
            target = batch["is_next"].long()
            logits = self.model.nsp_logits(hidden)  # (B, 2)
            nsp = F.cross_entropy(logits.float(), target)
            loss = loss + nsp
            stats["nsp_loss"] = _stat(nsp * len(target), len(target))
            stats["nsp_acc"] = _stat((logits.argmax(-1) == target).sum(), len(target))
        stats["loss"] = _stat(loss * len(ids), len(ids))
        return loss, stats

    @staticmethod
    def tokens(batch) -> int:
        return batch["input_ids"].numel()

    @staticmethod
    def loss_units(batch) -> torch.Tensor:
        return _units(len(batch["input_ids"]), batch["input_ids"])


class MaskedLM(PairObjective):
    use_mlm, ppl_of = True, "mlm_loss"
    stat_names = ("loss", "mlm_acc", "mlm_loss")
    unused_parameters = True  # the pooler and NSP head


class NextSentence(PairObjective):
    use_nsp, ppl_of = True, None
    stat_names = ("loss", "nsp_acc", "nsp_loss")
    unused_parameters = True  # the MLM head's transform and bias


class MaskedLMNextSentence(PairObjective):
    use_mlm = use_nsp = True
    ppl_of = "mlm_loss"
    stat_names = ("loss", "mlm_acc", "mlm_loss", "nsp_acc", "nsp_loss")


OBJECTIVES: dict[str, type[nn.Module]] = {
    "clm": CausalLM, "mlm": MaskedLM, "nsp": NextSentence, "mlm_nsp": MaskedLMNextSentence,
    "sft": SupervisedChat, "classify": Classification, "reward": RewardRanking, "dpo": DirectPreference,
}


def objective_class(name: str) -> type[nn.Module]:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)} (objective=...)")
    return OBJECTIVES[name]


def summarize(stats: Mapping[str, tuple[torch.Tensor, torch.Tensor]], ppl_of: str | None) -> dict[str, float]:
    """Divide summed statistics; `ppl` is exp of the language-modelling loss named `ppl_of`."""
    out = {k: float(s / c) if float(c) else float("nan") for k, (s, c) in stats.items()}
    if ppl_of in out:
        out["ppl"] = float(torch.tensor(out[ppl_of]).clamp(max=50).exp())
    return out
