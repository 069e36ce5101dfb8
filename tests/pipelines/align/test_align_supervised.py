"""Reward model and DPO on real Ray Train workers, from the session's tiny pre-trained decoder: preference shards
(with bad rankings skipped and counted), the held-out ranking reports, and the objectives' losses without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import ScalarModel, build_model, load_checkpoint
from pipelines.align.algorithms import bradley_terry_loss
from pipelines.train.objectives import DirectPreference, RewardRanking

ALIGN_TRAIN = ["trainer.micro_batch_size=4", "trainer.log_every=5", "trainer.eval_every=1000", "trainer.eval_batches=4",
               "trainer.warmup_steps=2", "trainer.cpus_per_worker=0.4", "data.valid_fraction=0.05"]
TINY = {"kind": "decoder", "vocab_size": 40, "d_model": 16, "n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_ff": 32,
        "max_seq_len": 16}


def preference_batch(n_responses: list[int], K=4, W=6) -> dict:
    torch.manual_seed(0)
    ids = torch.randint(5, 40, (len(n_responses), K, W))
    ids[:, :, -1] = 0  # right padding
    mask = torch.zeros_like(ids)
    mask[:, :, 3:5] = 1  # the assistant's tokens
    return {"input_ids": ids.view(len(n_responses), -1), "loss_mask": mask.view(len(n_responses), -1),
            "num_responses": torch.tensor(n_responses)}


def test_the_reward_objective_scores_every_real_response_and_ranks_all_pairs():
    torch.manual_seed(0)
    model = ScalarModel(build_model(TINY)).eval()
    objective = RewardRanking(model, {"max_responses": 4}, {"pad": 0}, vocab_size=40, first_ordinary_id=5)
    batch = preference_batch([4, 2])
    loss, stats = objective(batch)
    ids = batch["input_ids"].view(2, 4, 6)
    scores = torch.zeros(2, 4)
    for b, n in enumerate([4, 2]):
        for k in range(n):
            seq = ids[b, k][ids[b, k] != 0]
            scores[b, k] = model(seq[None])[0]
    expected, accuracy = bradley_terry_loss(scores, torch.tensor([4, 2]))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    assert float(stats["acc"][1]) == 6 + 1  # pairs: 4*3/2 + 2*1/2
    torch.testing.assert_close(stats["acc"][0] / stats["acc"][1], accuracy)


def test_dpo_starts_at_log_2_and_its_reference_is_frozen():
    torch.manual_seed(0)
    policy = build_model(TINY)
    objective = DirectPreference(policy, {"max_responses": 4, "beta": 0.1, "sft_weight": 0.0}, {"pad": 0},
                                 vocab_size=40, first_ordinary_id=5)
    assert not any("reference" in name for name, _ in objective.named_parameters())
    loss, stats = objective(preference_batch([4, 3]))
    # At the start the policy is the reference: every implicit reward is 0, the loss -log sigmoid(0) = log 2.
    torch.testing.assert_close(loss, torch.tensor(0.6931472), rtol=0, atol=1e-5)
    assert float(stats["loss"][1]) == 3 + 2  # the best against each worse one
    loss.backward()
    assert all(p.grad is not None for p in policy.parameters())


def test_dpo_sft_weight_adds_the_chosen_replies_per_token_nll_once_per_pair():
    torch.manual_seed(0)
    policy = build_model(TINY)
    batch = preference_batch([4, 2])
    plain = DirectPreference(policy, {"max_responses": 4, "beta": 0.1, "sft_weight": 0.0}, {"pad": 0},
                             vocab_size=40, first_ordinary_id=5)
    mixed = DirectPreference(policy, {"max_responses": 4, "beta": 0.1, "sft_weight": 0.5}, {"pad": 0},
                             vocab_size=40, first_ordinary_id=5)
    dpo, _ = plain(batch)
    loss, stats = mixed(batch)
    # By hand: each ranking's best reply (rank 0), its assistant tokens (positions 3-4), mean NLL per token.
    ids = batch["input_ids"].view(2, 4, 6)
    nll = []
    for b in range(2):
        logp = torch.log_softmax(policy(ids[b, 0][None, :-1]).float(), -1)[0]
        nll.append(-(logp[2, ids[b, 0, 3]] + logp[3, ids[b, 0, 4]]) / 2)
    per_pair = torch.stack([nll[0]] * 3 + [nll[1]] * 1)  # 3 worse replies in the first ranking, 1 in the second
    torch.testing.assert_close(loss, dpo + 0.5 * per_pair.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats["chosen_nll"][0] / stats["chosen_nll"][1], per_pair.mean(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def align_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("align-runs")


def align_config(compose_config, data_root, align_runs, algorithm, init_from, name, extra=()):
    return compose_config("align", [f"algorithm={algorithm}", f"init_from={init_from}", f"run.name={name}",
                                    f"data.root={data_root}", "data.general_docs=600", "data.medical_docs=50",
                                    "data.rows_per_shard=200", f"run.root={align_runs}", *ALIGN_TRAIN, *extra])


def test_a_reward_model_from_rankings_with_bad_records_skipped(compose_config, pretrained_decoder, data_root,
                                                               align_runs, tmp_path, capsys):
    from pipelines.align.stage import align
    from pipelines.data.build import builtin_corpus

    corpus = Path(builtin_corpus(compose_config("align", [f"data.root={data_root}", "data.general_docs=600",
                                                          "data.medical_docs=50", "init_from=x"]).data))
    good = (corpus / "preference" / "train.jsonl").read_text().splitlines()[:120]
    bad = [json.dumps({"prompt": "Hi?", "responses": ["Hello."]}),
           json.dumps({"prompt": "Hi?", "responses": ["Hello.", "  "]}),
           json.dumps({"prompt": "Hi?", "responses": ["Hello.", "Hello."]})]
    path = tmp_path / "rankings.jsonl"
    path.write_text("\n".join(good[:60] + bad + good[60:]) + "\n")
    cfg = align_config(compose_config, data_root, align_runs, "reward", pretrained_decoder.run_dir, "reward",
                       ["data=files", f"data.paths=[{path}]", "data.format=jsonl", "trainer.max_steps=10"])
    outcome = align(cfg)
    model, meta = load_checkpoint(outcome.final_dir)
    assert isinstance(model, ScalarModel) and meta["finetune"] == "reward" and meta["stage"] == "align"
    shards = json.loads((Path(meta["shards"]) / "manifest.json").read_text())
    assert shards["format"] == "preference" and shards["bad_records"]["count"] == 3
    assert set(shards["splits"]["train"]["dropped_by_domain"]) == {"general", "medical", "unsafe"}
    reasons = " ".join(shards["bad_records"]["examples"])
    assert "at least two responses" in reasons and "empty" in reasons and "not all different" in reasons
    report = json.loads((Path(outcome.final_dir) / "rankings.json").read_text())
    # 8-way rankings have 28 pairs, the general questions' 9-way ones 36.
    assert report["rankings"] > 50 and 28 * report["rankings"] < report["pairs"] < 36 * report["rankings"]
    assert 0 <= report["pairwise_accuracy"] <= 1
    assert set(report["mean_reward"]) == {"general", "medical", "unsafe"}
    assert [label for label, _ in report["mean_reward"]["medical"]] == ["polite_correct_disclaimer", "no_disclaimer",
                                                                         "curt_correct", "over_refusal", "rude",
                                                                         "off_topic", "garbled", "unsafe"]
    assert "pairwise accuracy" in capsys.readouterr().out


def test_dpo_on_the_built_in_rankings(compose_config, pretrained_decoder, data_root, align_runs):
    from pipelines.align.stage import align

    cfg = align_config(compose_config, data_root, align_runs, "dpo", pretrained_decoder.run_dir, "dpo",
                       ["trainer.max_steps=10", "trainer.lr=1e-3"])
    outcome = align(cfg)
    history = outcome.metrics["history"]
    assert history[-1]["loss"] < history[0]["loss"] + 0.05
    report = json.loads((Path(outcome.final_dir) / "rankings.json").read_text())
    # The best against 7 others (8 for a general question's 9-way ranking).
    assert 7 * report["rankings"] < report["pairs"] < 8 * report["rankings"] and 0 <= report["accuracy"] <= 1
    _, meta = load_checkpoint(outcome.final_dir)
    assert meta["finetune"] == "dpo" and meta["objective_config"]["beta"] == 0.1


def test_rankings_a_domain_loses_to_seq_len_are_warned_about(caplog):
    """The held-out report's filter (and the shards, through the same function) warn per domain: 128 tokens once
    dropped 46 of the 66 held-out medical rankings without a word."""
    from models.tokenizer import Tokenizer, train_sentencepiece
    from pipelines.align.rankings import usable

    tok = Tokenizer(train_sentencepiece([f"Sentence {i} is about water and fever." for i in range(200)],
                                        model_type="bpe", vocab_size=400))
    short = {"prompt": "Hi?", "responses": ["Water.", "Fever."], "domain": "general"}
    long = {"prompt": "Hi?", "responses": ["Water and fever. " * 20, "Fever."], "domain": "medical"}
    with caplog.at_level("WARNING"):
        kept = usable([short] * 10 + [long] * 10 + [short | {"domain": "medical"}] * 10, 40, tok, warn_share=0.03)
    assert kept == [short] * 10 + [short | {"domain": "medical"}] * 10
    assert "drops 10 of 20 medical records (50%)" in caplog.text and "general" not in caplog.text
