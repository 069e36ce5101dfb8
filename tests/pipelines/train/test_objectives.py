"""Objectives on known tiny batches: exact maths, fixed seeds, no Ray."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import build_model
from pipelines.train.objectives import IGNORE, OBJECTIVES, CausalLM, MaskedLM, mask_tokens, objective_class, summarize

SPECIAL = {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "mask": 4, "cls": 5, "sep": 6, "system": 7, "user": 8,
           "assistant": 9, "end": 10}
MLM = {"name": "mlm", "mask_prob": 0.15, "mask_token_frac": 0.8, "random_token_frac": 0.1}
TOKENIZER = {"vocab_size": 64, "first_ordinary_id": 11}  # the tiny encoder's vocabulary, no byte pieces


def encoder(vocab=64):
    torch.manual_seed(0)
    return build_model({"kind": "encoder", "vocab_size": vocab, "d_model": 32, "n_layer": 1, "n_head": 2,
                        "d_ff": 64, "max_seq_len": 16, "type_vocab_size": 2, "norm_eps": 1e-12, "dropout": 0.0,
                        "init_std": 0.02, "pad_id": 0})


def pair_batch(n=4, t=16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(11, 64, (n, t), generator=g)
    ids[:, 0], ids[:, 6], ids[:, 12] = SPECIAL["cls"], SPECIAL["sep"], SPECIAL["sep"]
    ids[:, 13:] = SPECIAL["pad"]
    types = torch.zeros_like(ids)
    types[:, 7:13] = 1
    return {"input_ids": ids, "token_type_ids": types, "is_next": torch.tensor([1, 0, 1, 0])}


def test_masking_proportions_and_exact_reproducibility():
    ids = torch.randint(11, 1000, (1024, 128), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :8] = False
    kwargs = dict(maskable=maskable, mask_prob=0.15, mask_token_frac=0.8, random_token_frac=0.1, mask_id=4,
                  random_low=11, vocab_size=1000)
    inputs, labels = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **kwargs)
    again, labels2 = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **kwargs)
    assert torch.equal(inputs, again) and torch.equal(labels, labels2)
    chosen = labels != IGNORE
    assert not chosen[:, :8].any()
    assert torch.equal(labels[chosen], ids[chosen])
    n = int(chosen.sum())
    assert abs(n / maskable.sum().item() - 0.15) < 0.005
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # "Random" may draw the original id by chance (1 in ~989), so kept is ~10% plus a hair.
    assert abs(kept.sum().item() / n - 0.1) < 0.01
    assert abs((n - masked.sum().item() - kept.sum().item()) / n - 0.1) < 0.01
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_clm_loss_is_next_token_cross_entropy():
    torch.manual_seed(0)
    model = build_model({"kind": "decoder", "vocab_size": 50, "d_model": 32, "n_layer": 1, "n_head": 2,
                         "n_kv_head": 1, "d_ff": 64, "max_seq_len": 16, "tie_embeddings": True})
    ids = torch.randint(0, 50, (3, 9))
    loss, stats = CausalLM(model, {"name": "clm"}, SPECIAL, vocab_size=50, first_ordinary_id=11)({"input_ids": ids})
    expected = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(loss, expected)
    assert stats["loss"][1].item() == 24
    assert CausalLM.tokens({"input_ids": ids}) == 24


def test_nsp_uses_the_labels_and_mlm_nsp_is_the_sum():
    model, batch = encoder(), pair_batch()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    nsp_loss, nsp_stats = objective_class("nsp")(model, {"name": "nsp"}, SPECIAL, **TOKENIZER)(batch, g())
    flipped = dict(batch, is_next=1 - batch["is_next"])
    flipped_loss, _ = objective_class("nsp")(model, {"name": "nsp"}, SPECIAL, **TOKENIZER)(flipped, g())
    hidden = model(batch["input_ids"], token_type_ids=batch["token_type_ids"])
    torch.testing.assert_close(nsp_loss, F.cross_entropy(model.nsp_logits(hidden), batch["is_next"]))
    assert not torch.isclose(nsp_loss, flipped_loss)
    mlm_loss, mlm_stats = MaskedLM(model, MLM, SPECIAL, **TOKENIZER)(batch, g())
    both, stats = objective_class("mlm_nsp")(model, MLM | {"name": "mlm_nsp"}, SPECIAL, **TOKENIZER)(batch, g())
    torch.testing.assert_close(both, mlm_loss + nsp_loss)
    assert set(stats) == set(objective_class("mlm_nsp").stat_names)
    assert mlm_stats["mlm_loss"][1] > 0  # some tokens were masked, never cls/sep/pad
    metrics = summarize(stats, "mlm_loss")
    assert metrics["ppl"] == pytest.approx(torch.tensor(metrics["mlm_loss"]).exp().item(), rel=1e-5)


def test_random_replacements_are_ordinary_pieces_of_the_tokenizer():
    # A model vocabulary larger than the tokenizer's, whose ids 11..266 are byte pieces (as in a bpe tokenizer).
    model, batch = encoder(vocab=512), pair_batch(n=64)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    mostly_random = MLM | {"mask_token_frac": 0.2, "random_token_frac": 0.8}
    objective = MaskedLM(model, mostly_random, SPECIAL, vocab_size=400, first_ordinary_id=267)
    objective(batch, torch.Generator().manual_seed(0))
    ids = batch["input_ids"]  # originals are all below 64, so every changed non-mask token is a replacement
    replaced = seen[0][(seen[0] != ids) & (seen[0] != SPECIAL["mask"])]
    assert len(replaced) > 40  # ~64 x 10 maskable x 0.15 x 0.8
    assert replaced.min() >= 267 and replaced.max() < 400


def test_flops_count_what_each_objective_runs():
    model = encoder()
    assert MaskedLM(model, MLM, SPECIAL, **TOKENIZER).flops_per_token(16) == \
        model.flops_per_token(16, decoded_fraction=0.15)
    assert objective_class("mlm_nsp")(model, MLM, SPECIAL, **TOKENIZER).flops_per_token(16) == \
        model.flops_per_token(16, decoded_fraction=0.15)
    assert objective_class("nsp")(model, {"name": "nsp"}, SPECIAL, **TOKENIZER).flops_per_token(16) == \
        model.flops_per_token(16, decoded_fraction=0.0)
    decoder = build_model({"kind": "decoder", "vocab_size": 50, "d_model": 32, "n_layer": 1, "n_head": 2,
                           "n_kv_head": 1, "d_ff": 64, "max_seq_len": 16, "tie_embeddings": True})
    assert CausalLM(decoder, {"name": "clm"}, SPECIAL, vocab_size=50, first_ordinary_id=11).flops_per_token(16) \
        == decoder.flops_per_token(16)


def test_unknown_objective_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown objective 'gpt'; choose one of "
                                         r"\['classify', 'clm', 'dpo', 'mlm', 'mlm_nsp', 'nsp', 'reward', 'sft'\]"):
        objective_class("gpt")
    assert set(OBJECTIVES) == {"clm", "mlm", "nsp", "mlm_nsp", "sft", "classify", "reward", "dpo"}
