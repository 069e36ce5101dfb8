"""The shared training loop's pieces without Ray: how an optimizer step weights its micro-batches (the same gradient
however the step is cut into micro-batches and workers, or into pieces of similar lengths) and the model a LoRA run trains (a new head trained in
full, saved and resumed with the adapters)."""

from __future__ import annotations

import contextlib

import torch

from models import build_model
from models.lora import load_adapters, save_adapters
from pipelines.train import loop
from pipelines.train.loop import construct, make_optimizer
from pipelines.train.objectives import RewardRanking, SupervisedChat

TINY = {"kind": "decoder", "vocab_size": 40, "d_model": 16, "n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_ff": 32,
        "max_seq_len": 16}
LENGTHS, ASSISTANT = [12, 5, 9, 7], [9, 4, 1, 2]  # real tokens per example, of which the last ones the assistant's


def sft_batch() -> dict:
    """4 right-padded chat examples whose assistant replies are 9, 4, 1 and 2 tokens long."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (4, 12), generator=g)
    mask = torch.zeros_like(ids)
    for i, (n, a) in enumerate(zip(LENGTHS, ASSISTANT)):
        ids[i, n:] = 0
        mask[i, n - a:n] = 1
    return {"input_ids": ids, "loss_mask": mask}


def rows(batch: dict, which: list[int]) -> dict:
    return {k: v[which] for k, v in batch.items()}


def sft_objective() -> SupervisedChat:
    torch.manual_seed(0)
    return SupervisedChat(build_model(TINY), {}, {"pad": 0}, vocab_size=40, first_ordinary_id=5)


def step_gradient(micro_batches: list[dict], world: int = 1) -> torch.Tensor:
    """This worker's gradient after the loop's forward and backward passes of one step, flattened."""
    objective = sft_objective()
    loop.accumulate(objective, objective, micro_batches, world=world, generator=None, autocast=contextlib.nullcontext())
    return torch.cat([p.grad.flatten() for p in objective.parameters()])


class OtherWorker:
    """`dist` as worker i of 2 sees it in `loss_weights`: its all-reduce adds the other worker's loss units."""

    def __init__(self, units: float):
        self.units = units

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def all_reduce(self, x: torch.Tensor) -> None:
        x += self.units


def test_a_step_has_the_gradient_of_one_batch_however_it_is_cut(monkeypatch):
    # The SFT loss is a mean over assistant tokens: over those of the whole step, not of each micro-batch or worker
    # (before: micro-batch 4 x 1 vs 2 x 2 changed the gradient by 73% here, 2 workers x 2 x 1 by 84%).
    whole = step_gradient([sft_batch()])
    batch = sft_batch()
    accumulated = step_gradient([rows(batch, [0, 1]), rows(batch, [2, 3])])
    torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=1e-7)
    # 2 workers of 2 micro-batches of 1 example; DDP averages their gradients.
    grads = []
    for rank in range(2):
        mine, theirs = [2 * rank, 2 * rank + 1], [2 - 2 * rank, 3 - 2 * rank]
        monkeypatch.setattr(loop, "dist", OtherWorker(sum(ASSISTANT[i] for i in theirs)))
        grads.append(step_gradient([rows(batch, [i]) for i in mine], world=2))
    torch.testing.assert_close((grads[0] + grads[1]) / 2, whole, rtol=1e-5, atol=1e-7)


def test_length_groups_cut_padding_and_keep_the_gradient():
    # Lengths 12, 5, 9, 7: padded to 12 the batch computes 48 positions; in two pieces {5, 7} and {9, 12}, 38.
    assert loop.length_cuts([5, 7, 9, 12], 2) == [2, 4]
    assert loop.length_cuts([3, 3, 3, 100], 3) == [3, 4]  # no third piece: it would save nothing
    assert loop.length_cuts([4], 4) == [1]
    batch = sft_batch()
    objective = sft_objective()
    pieces = loop.group_by_length(batch, objective.lengths(batch), 2)
    assert [p["input_ids"].shape[0] for p in pieces] == [2, 2]
    assert [int(objective.lengths(p).max()) for p in pieces] == [7, 12]
    assert sorted(map(tuple, torch.cat([p["input_ids"] for p in pieces]).tolist())) == \
        sorted(map(tuple, batch["input_ids"].tolist()))  # every example once, with its mask
    torch.testing.assert_close(step_gradient(pieces), step_gradient([batch]), rtol=1e-5, atol=1e-7)
    assert loop.group_by_length(batch, objective.lengths(batch), 1) == [batch]


def test_a_lora_reward_model_trains_its_new_head(tmp_path):
    lora = {"rank": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]}
    config = {"model": TINY, "head": {"kind": "scalar"}, "lora": lora, "init_into": "base"}
    torch.manual_seed(0)
    model = construct(config, init_from=None)
    assert all(p.requires_grad for p in model.head.parameters())
    assert not model.decoder.model.layers[0].mlp.up_proj.weight.requires_grad  # the base stays frozen
    start = model.head.proj.weight.detach().clone()
    objective = RewardRanking(model, {"max_responses": 2}, {"pad": 0}, vocab_size=40, first_ordinary_id=5)
    optimizer = make_optimizer(model, {"weight_decay": 0.0, "lr": 1e-2, "betas": [0.9, 0.95], "eps": 1e-8},
                               torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, 40, (4, 2 * 8), generator=g), "loss_mask": torch.ones(4, 16),
             "num_responses": torch.tensor([2, 2, 2, 2])}
    loss, _ = objective(batch)
    loss.backward()
    optimizer.step()
    assert not torch.equal(model.head.proj.weight, start)
    # What a LoRA run saves and resumes from holds the trained head beside the adapters.
    save_adapters(str(tmp_path), model, lora)
    torch.manual_seed(1)
    resumed = load_adapters(construct(config, init_from=None), str(tmp_path))
    assert torch.equal(resumed.head.proj.weight, model.head.proj.weight)
