"""The lifecycle: each stage is its own Hydra app's config with the run's shared settings, runs are named by their
config's hash (a change reruns that stage and every later one), and the whole chain on tiny sizes on the real
stack — then re-run (everything kept), changed at its last stage (only that reruns), and broken (one line)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pipelines.errors import ConfigError
from pipelines.lifecycle import (STAGES, StageFailed, columns, lifecycle, serve_config, stage_config,
                                 thesis_table)
from tests_conf import CONF, LIFECYCLE_TINY


def configs(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="lifecycle", overrides=[f"data.root={tmp_path}/data", f"run.root={tmp_path}/runs",
                                                          "data.general_docs=700", *overrides])
        pretrain = stage_config(cfg, "pretrain", None)
        domain = stage_config(cfg, "domain", "/pre/final")
        instruct = stage_config(cfg, "instruct", f"/runs/finetune/{domain.run.name}/final")
        reward = stage_config(cfg, "reward", "/instruct")
        dpo = stage_config(cfg, "dpo", "/instruct")
        rlhf = stage_config(cfg, "rlhf", "/dpo", {"align.reward_model": "/reward"})
    return cfg, pretrain, domain, instruct, reward, dpo, rlhf


def test_each_stage_is_its_own_app_on_the_same_corpus_and_storage(tmp_path):
    cfg, pretrain, domain, instruct, reward, dpo, rlhf = configs(tmp_path, "lifecycle.domain.trainer.lr=1e-4")
    assert pretrain.model.d_model == 256 and pretrain.trainer.max_steps == cfg.lifecycle.pretrain.trainer.max_steps
    assert domain.finetune.kind == "domain" and domain.data.subset == "medical" and domain.trainer.lr == 1e-4
    assert instruct.finetune.kind == "instruct" and instruct.finetune.replay == cfg.lifecycle.instruct.finetune.replay
    assert reward.algorithm.name == "reward" and rlhf.algorithm.name == "grpo"
    assert dpo.algorithm.name == "dpo" and dpo.init_from == reward.init_from == "/instruct"
    assert rlhf.align.reward_model == "/reward" and rlhf.init_from == "/dpo"
    assert not any(rlhf.align.reward.rules.values())  # the demo's lesson comes from the rankings alone
    assert domain.init_from == "/pre/final"
    for stage in (pretrain, domain, instruct, reward, dpo, rlhf):
        assert stage.data.root == f"{tmp_path}/data" and stage.data.general_docs == 700  # one corpus
        assert stage.run.root == f"{tmp_path}/runs" and stage.data.safety_share == cfg.data.safety_share
    names = [s.run.name for s in (pretrain, domain, instruct, reward, dpo, rlhf)]
    assert [n.rsplit("-", 1)[0] for n in names] == [f"demo-{stage}" for stage in STAGES]
    assert all(len(n.rsplit("-", 1)[1]) == 8 for n in names)


def test_lifecycle_serve_serves_the_aligned_checkpoint_on_the_same_cluster(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="lifecycle", overrides=["cluster.num_cpus=2", "lifecycle.serve=true"])
        served = serve_config(cfg, "/runs/align/demo-rlhf-0123abcd/final")
    assert served.checkpoint == "/runs/align/demo-rlhf-0123abcd/final" and served.cluster.num_cpus == 2
    assert served.serve.port == 8000  # conf/serve.yaml, as `python -m pipelines.serve` composes it


def test_a_changed_stage_renames_it_and_every_later_stage_but_not_the_earlier_ones(tmp_path):
    _, *before = configs(tmp_path)
    _, *changed = configs(tmp_path, "lifecycle.domain.trainer.max_steps=41")
    _, *elsewhere = configs(tmp_path, "cluster.num_cpus=1", "cluster.address=auto")  # where, not what
    names = lambda stages: [s.run.name for s in stages]  # noqa: E731
    assert names(changed)[0] == names(before)[0]
    assert names(changed)[1] != names(before)[1] and names(changed)[2] != names(before)[2]
    assert names(elsewhere) == names(before)


def test_an_unknown_setting_of_a_stage_is_one_config_error(tmp_path):
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"lifecycle.domain: .*trainer.*max_stepz"):
        configs(tmp_path, "++lifecycle.domain.trainer.max_stepz=3")


def test_the_thesis_table_has_a_row_per_checkpoint_and_a_column_per_measure():
    reports = {"pretrained": {"cloze": {"accuracy": 0.93}, "ppl": {"medical": 40.123, "general": 20.0},
                              "qa": {"seen": 0.0, "held_out": 0.01, "plain_held_out": 0.4, "format_ok": 0.0}},
               "aligned": {"cloze": {"accuracy": 0.9}, "safety": {"refusal": 0.5, "medical_correct": 0.25,
                                                                  "reward": 1.5}}}
    header, pretrained, aligned = thesis_table(reports, columns({})).splitlines()
    assert header.split() == ["cloze", "medical", "ppl", "general", "ppl", "QA", "seen", "QA", "held-out", "QA",
                              "plain", "format", "ok", "med", "correct", "correct", "seen", "disclaimer",
                              "safe&helpful", "refusal", "refusal", "phr", "over-refusal", "rude", "reward", "*"]
    assert pretrained.split() == ["pretrained", "93.0%", "40.12", "20.00", "0.0%", "1.0%", "40.0%", "0.0%"] + ["-"] * 9
    assert aligned.split() == ["aligned", "90.0%"] + ["-"] * 6 + ["25.0%", "-", "-", "-", "50.0%"] + ["-"] * 3 + [
        "+1.500"]
    # A rule term's columns are marked as what the reward paid for; without rule terms only the reward is.
    marked = [title for title, _, _ in columns({"refusal": 5, "disclaimer": 0, "rude": 1}) if title.endswith(" *")]
    assert marked == ["refusal *", "refusal phr *", "over-refusal *", "rude *", "reward *"]


@pytest.fixture(scope="module")
def tiny_life(ray_cluster, data_root, tmp_path_factory):
    """The whole chain run once on tiny sizes: (run(*overrides) for more runs, root, the first run's state)."""
    root = tmp_path_factory.mktemp("life")

    def run(*overrides, logs="logs"):
        # Inside the Hydra context: lifecycle() composes the stages' configs.
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            # The session's corpus, tokenizer settings and pre-training shards (conftest.SMALL_DATA): reused.
            cfg = compose(config_name="lifecycle",
                          overrides=[f"data.root={data_root}", f"run.root={root}/runs", *LIFECYCLE_TINY,
                                     "++lifecycle.pretrain.data.valid_fraction=0.05", *overrides])
            return lifecycle(cfg, root / logs)

    return run, root, run()


def test_the_whole_life_runs_every_stage_and_evaluates_every_checkpoint(tiny_life, capsys):
    _, root, state = tiny_life
    assert list(state["stages"]) == list(STAGES) and not any(s["skipped"] for s in state["stages"].values())
    for stage, info in state["stages"].items():
        assert Path(info["run_dir"]).name == f"demo-{stage}-{info['hash']}"
        assert (Path(info["final_dir"]) / "model.safetensors").exists() and info["seconds"] > 0
    saved = json.loads((root / "runs" / "lifecycle" / "demo" / "lifecycle.json").read_text())
    assert saved["checkpoints"] == state["checkpoints"] and saved["order"]["stages"] == list(STAGES)
    for checkpoint, final in state["checkpoints"].items():
        report = json.loads((Path(final) / "eval.json").read_text())
        assert set(state["evaluations"][checkpoint]["suites"]) <= set(report)
        assert report["ppl"]["medical"] > 1 and report["ppl"]["general"] > 1
    pretrained = json.loads((Path(state["checkpoints"]["pretrained"]) / "meta.json").read_text())
    assert pretrained["mix"]["subset"] == "medical" and Path(pretrained["mix"]["shards"]).is_dir()  # conf: mix
    meta = json.loads((Path(state["checkpoints"]["domain-adapted"]) / "meta.json").read_text())
    assert meta["init_from"] == state["checkpoints"]["pretrained"]  # the chain: each from the previous final/
    # Both fine-tuning stages rehearse the general pre-training text: into the medical blocks, into the chats.
    assert meta["replay"] == 0.5 and meta["replay_from"] == state["checkpoints"]["pretrained"]
    chat = json.loads((Path(state["checkpoints"]["instruction-tuned"]) / "meta.json").read_text())
    assert chat["init_from"] == state["checkpoints"]["domain-adapted"]
    assert chat["replay"] == 0.3 and chat["replay_from"] == state["checkpoints"]["pretrained"]
    assert chat["replay_mix"] == {"subset": "medical", "share": 0.2}  # and the medical text pre-training mixed in
    pretrain_log = (root / "logs" / "pretrain.log").read_text()
    assert "step 30/30" in pretrain_log and "| ETA " in pretrain_log  # the stage's own log holds its output
    for log in (root / "logs").glob("*.log"):  # trainer.ray_log_level (WARNING) reaches the workers of every stage
        assert "Reporting training result" not in log.read_text(), log
    assert saved["started_at"] and saved["commit"] is None or len(saved["commit"]) == 40
    assert saved["stages"]["instruct"]["effective"]["trainer"]["max_steps"] == 6  # what the report's settings show
    report = root / "runs" / "lifecycle" / "demo" / "report" / "index.html"  # the report card (test_report.py)
    assert report.exists() and 'data-checkpoint="aligned"' in report.read_text()


def test_a_rerun_keeps_everything_and_a_change_reruns_only_what_it_touches(tiny_life, capsys):
    run, root, first = tiny_life
    again = run(logs="logs-again")
    assert all(s["skipped"] for s in again["stages"].values())
    assert again["checkpoints"] == first["checkpoints"] and again["evaluations"] == first["evaluations"]
    assert "(kept; took" in capsys.readouterr().out
    changed = run("lifecycle.rlhf.align.iterations=1", logs="logs-changed")
    assert [s for s, info in changed["stages"].items() if not info["skipped"]] == ["rlhf"]
    said = capsys.readouterr().out  # where it is, and what is left by the times the first run kept
    assert re.search(r"== stage 6/7 rlhf: .*demo-rlhf-\w+  \(elapsed [0-9hms]+; about [0-9hms]+ left, by the "
                     r"earlier run's times\)", said), said[-3000:]
    assert "== stage 1/7 pretrain: finished earlier" in said and "== stage 7/7 evaluate aligned: " in said
    assert changed["checkpoints"]["aligned"] != first["checkpoints"]["aligned"]
    assert changed["evaluations"]["aligned"]["hash"] != first["evaluations"]["aligned"]["hash"]
    assert changed["evaluations"]["pretrained"] == first["evaluations"]["pretrained"]


def test_until_stops_the_chain_after_that_stage_and_keeps_what_ran(tiny_life, capsys):
    run, root, first = tiny_life
    early = run("lifecycle.until=domain", logs="logs-until")
    assert list(early["stages"]) == ["pretrain", "domain"] and all(s["skipped"] for s in early["stages"].values())
    assert list(early["evaluations"]) == ["pretrained", "domain-adapted"]
    assert early["evaluations"]["domain-adapted"] == first["evaluations"]["domain-adapted"]  # kept, not redone
    table = capsys.readouterr().out.split("What each stage added")[1]
    assert "domain-adapted" in table and "instruction-tuned" not in table
    with pytest.raises(ConfigError, match="lifecycle.until=nope: not a stage"):
        run("lifecycle.until=nope", logs="logs-until-bad")


def test_a_failing_stage_stops_the_chain_with_one_line_naming_it(tiny_life):
    run, root, _ = tiny_life
    with pytest.raises(StageFailed) as failed:
        run("lifecycle.rlhf.align.iterations=3", f"++lifecycle.rlhf.align.prompts.paths=[{root}/missing.jsonl]",
            logs="logs-failed")
    message = str(failed.value)
    assert "\n" not in message and message.startswith("lifecycle stage 'rlhf' failed: ")
    assert "missing.jsonl" in message and f"{root}/runs/align/demo-rlhf-" in message
    log = root / "logs-failed" / "rlhf.log"
    assert f"log {log}" in message and "Traceback" in log.read_text()


def test_the_chain_is_deterministic_a_stage_run_again_gives_the_same_evaluation(tiny_life):
    """The README's tables are reproducible because the chain is: the RLHF stage (actors, sampling, two learners'
    worth of seeds) run again from scratch on the same config gives an identical eval.json."""
    run, root, first = tiny_life
    aligned = Path(first["checkpoints"]["aligned"])
    before = json.loads((aligned / "eval.json").read_text())
    shutil.move(aligned.parent, root / "first-rlhf-run")  # its run directory gone: the stage runs again
    again = run(logs="logs-again-from-scratch")
    assert [s for s, info in again["stages"].items() if not info["skipped"]] == ["rlhf"]
    assert again["checkpoints"]["aligned"] == str(aligned)
    assert json.loads((aligned / "eval.json").read_text()) == before
