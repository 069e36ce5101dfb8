"""The lifecycle's wiring, without training: each later stage is composed from its own config with the run's corpus
and storage settings, and the thesis table shows what each checkpoint measured."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from pipelines.lifecycle import stage_config, thesis_table
from tests_conf import CONF


def test_the_instruction_stage_is_the_finetune_app_on_the_same_corpus_and_storage(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="lifecycle", overrides=[f"data.root={tmp_path}/data", "data.general_docs=700",
                                                          f"run.root={tmp_path}/runs", "run.name=life"])
        stage = stage_config(cfg, "finetune", [*cfg.lifecycle.instruct, "run.name=life-instruct"], "/ckpt")
    assert stage.finetune.kind == "instruct" and stage.objective.name == "sft"
    assert stage.init_from == "/ckpt" and stage.run.name == "life-instruct"
    assert stage.data.root == f"{tmp_path}/data" and stage.data.general_docs == 700  # the corpus pre-training read
    assert stage.run.root == f"{tmp_path}/runs"
    assert stage.trainer.max_steps == int(next(o for o in cfg.lifecycle.instruct
                                               if o.startswith("trainer.max_steps=")).split("=")[1])


def test_the_thesis_table_has_a_row_per_checkpoint_and_a_column_per_measure():
    table = thesis_table({"pretrained": {"cloze": {"accuracy": 0.93}, "qa": {"seen": 0.0, "held_out": 0.01,
                                                                           "plain_held_out": 0.4, "format_ok": 0.0}},
                          "instruction-tuned": {"cloze": {"accuracy": 0.9}, "qa": {"seen": 0.9, "held_out": None}}})
    header, pretrained, tuned = table.splitlines()
    assert header.split() == ["cloze", "QA", "seen", "QA", "held-out", "QA", "plain", "format", "ok", "refusal",
                              "disclaimer", "over-refusal", "rude", "reward"]
    assert pretrained.split() == ["pretrained", "93.0%", "0.0%", "1.0%", "40.0%", "0.0%", "-", "-", "-", "-", "-"]
    assert tuned.split() == ["instruction-tuned", "90.0%", "90.0%", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_the_alignment_stages_are_the_align_app_from_the_instruction_tuned_model(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="lifecycle", overrides=[f"data.root={tmp_path}/data", f"run.root={tmp_path}/runs"])
        reward = stage_config(cfg, "align", [*cfg.lifecycle.reward, "run.name=r"], "/instruct")
        rlhf = stage_config(cfg, "align", [*cfg.lifecycle.rlhf, "run.name=g", "align.reward_model=/reward"],
                            "/instruct")
    assert reward.algorithm.name == "reward" and reward.objective.name == "reward" and reward.init_from == "/instruct"
    assert rlhf.algorithm.name == "grpo" and rlhf.align.reward_model == "/reward" and rlhf.init_from == "/instruct"
    assert reward.data.safety_share == rlhf.data.safety_share == cfg.data.safety_share > 0  # one corpus
