"""Every stage's config composes, with every option of every group, and resolves (torchtune's test_configs)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests_conf import CONF

STAGES = {"data": [], "pretrain": [], "lifecycle": [], "evaluate": ["checkpoint=runs/pretrain/x"],
          "finetune": ["init_from=runs/pretrain/x"], "sweep": ["init_from=runs/pretrain/x"],
          "align": ["init_from=runs/finetune/x", "align.reward_model=runs/align/x"],
          "serve": ["checkpoint=runs/align/x"], "export": ["checkpoint=runs/align/x", "out=exports/x"],
          "chat": ["checkpoint=runs/align/x"]}
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_composes_and_resolves(compose_config, stage):
    cfg = compose_config(stage, STAGES[stage])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=stage != "data")


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_into_pretrain(compose_config, group, option):
    stage = {"eval": "evaluate", "finetune": "finetune", "algorithm": "align", "generation": "chat"}.get(group,
                                                                                                         "pretrain")
    overrides = [f"{group}={option}", *STAGES[stage]]
    if group == "data" and option == "files":
        overrides.append("data.paths=[corpus.jsonl]")
    cfg = compose_config(stage, overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group == "finetune":
        assert resolved["finetune"]["kind"] == option and resolved["objective"]["shard_format"]
    if group == "algorithm":
        assert resolved["algorithm"]["name"] == resolved["finetune"]["kind"] == option
    if group == "model":
        assert resolved["model"]["vocab_size"] == resolved["tokenizer"]["vocab_size"]


def test_evaluation_reports_the_reward_as_rlhf_pays_it(compose_config):
    """The safety suite's reward and the RLHF reward share their empty and unfinished terms (one rule, two
    configs: evaluation does not compose alignment's)."""
    evaluate = compose_config("evaluate", ["checkpoint=x"]).eval
    reward = compose_config("align", ["algorithm=grpo", "init_from=x", "align.reward_model=y"]).align.reward
    assert (evaluate.reward_empty_score, evaluate.reward_unfinished_penalty) == (reward.empty_score,
                                                                                 reward.unfinished_penalty)


def test_the_server_and_the_terminal_chat_share_one_set_of_generation_defaults(compose_config):
    """conf/generation/: what the evaluation measured (greedy, no system prompt), for the API, the page and the
    terminal chat alike."""
    serve = compose_config("serve", ["checkpoint=x"]).serve.generation
    chat = compose_config("chat", ["checkpoint=x"]).generation
    assert serve == chat and serve.temperature == 0 and serve.system_prompt is None
