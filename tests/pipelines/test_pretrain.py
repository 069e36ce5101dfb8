"""Pre-training on real Ray Train workers: objectives learn, DDP matches one worker, resume is exact, faults heal."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from cluster.connect import ClusterError
from models.checkpoint import load_state
from pipelines.errors import CheckpointError, ConfigError, RunFinishedError
from pipelines.evaluate import evaluate
from pipelines.evaluate.cloze import answer_matches
from pipelines.pretrain import check_mix
from pipelines.train.driver import run_training
from pipelines.train.loop import TRAIN_STATE

from tests_conf import TINY_TRAIN


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def pretrain_cfg(compose_config, small_overrides, runs_root, name, extra=()):
    return compose_config("pretrain", [*small_overrides, *TINY_TRAIN, f"run.root={runs_root}", f"run.name={name}",
                                       *extra])


def losses(outcome) -> list[float]:
    return [m["loss"] for m in outcome.metrics["history"]]


@pytest.mark.parametrize("objective,trained,manifest_fixture", [
    ("clm", "pretrained_decoder", "clm_manifest"),  # the session's shared runs (tests/conftest.py)
    ("mlm", None, "pairs_manifest"),
    ("mlm_nsp", "pretrained_encoder", "pairs_manifest"),
])
def test_loss_goes_down(request, compose_config, small_overrides, runs_root, objective, trained, manifest_fixture):
    manifest = request.getfixturevalue(manifest_fixture)
    if trained:
        outcome = request.getfixturevalue(trained)
    else:
        cfg = pretrain_cfg(compose_config, small_overrides, runs_root, f"down-{objective}",
                           [f"objective={objective}", "model=encoder_tiny", "trainer.max_steps=40",
                            "trainer.ckpt_every=40"])
        outcome = run_training(cfg, stage="pretrain", manifest=manifest)
    steps = outcome.metrics["step"]
    # Windows of 5 steps at batch 8 are noisy: compare the first window with the better of the last two.
    assert min(losses(outcome)[-2:]) < losses(outcome)[0] * 0.9, losses(outcome)
    final = Path(outcome.final_dir)
    assert (final / "model.safetensors").exists() and (final / "tokenizer.model").exists()
    assert not (final / TRAIN_STATE).exists()
    metrics = json.loads((final / "metrics.json").read_text())
    assert metrics["step"] == steps and "val_loss" in metrics
    if objective == "mlm_nsp":
        assert {"val_mlm_acc", "val_nsp_acc", "val_ppl"} <= set(metrics)
    # The checkpoint is what the evaluation stage loads. An encoder's suite finds the shards it was trained on by
    # itself; a decoder's ppl suite tokenizes the same corpus with the checkpoint's tokenizer, so its general
    # perplexity is measured on the shards the loop validated on.
    ecfg = compose_config("evaluate", [*small_overrides, f"checkpoint={outcome.run_dir}", "eval.cloze_limit=16"])
    report = evaluate(ecfg, ecfg.checkpoint, suites=["cloze", "ppl"] if objective == "clm" else None)
    assert report["step"] == steps and json.loads((final / "eval.json").read_text())["step"] == steps
    if objective == "clm":
        cloze = report["cloze"]
        assert cloze["count"] == len(cloze["samples"]) == 16
        assert [r["correct"] for r in cloze["samples"]] == [
            answer_matches(r["completion"], r["answer"]) for r in cloze["samples"]]
        assert cloze["accuracy"] == sum(r["correct"] for r in cloze["samples"]) / 16
        assert 1 < report["ppl"]["general"] < metrics["val_ppl"] * 1.5
        assert set(report["ppl"]) <= {"general", "medical"}
    else:  # an encoder: its objective's validation metrics, on the same shards the loop validated on
        encoder = report["encoder"]
        assert "cloze" not in report and encoder["shards"] == manifest["dir"]
        assert abs(encoder["val_mlm_acc"] - metrics["val_mlm_acc"]) < 0.12, (report, metrics)
        if objective == "mlm_nsp":
            assert abs(encoder["val_nsp_acc"] - metrics["val_nsp_acc"]) < 0.12, (report, metrics)


def constant_shards(manifest: dict, tmp: Path) -> dict:
    """A copy of the manifest whose training split is one block repeated: every split of it is the same batch."""
    row = pq.read_table(manifest["splits"]["train"]["files"][0]).slice(0, 1)
    path = tmp / "constant.parquet"
    pq.write_table(pa.concat_tables([row] * 64), path)
    splits = {"train": dict(manifest["splits"]["train"], files=[str(path)]),
              "valid": dict(manifest["splits"]["valid"], files=[])}
    return dict(manifest, splits=splits)


def test_two_ddp_workers_match_one_worker_on_the_same_global_batch(compose_config, small_overrides, runs_root,
                                                                   clm_manifest, tmp_path):
    manifest = constant_shards(clm_manifest, tmp_path)
    common = ["model=decoder_tiny", "trainer.max_steps=3", "trainer.log_every=1", "trainer.ckpt_every=3"]
    one = run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "ddp-1",
                                    [*common, "trainer.num_workers=1", "trainer.micro_batch_size=8"]),
                       stage="pretrain", manifest=manifest)
    two = run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "ddp-2",
                                    [*common, "trainer.num_workers=2", "trainer.micro_batch_size=2",
                                     "trainer.grad_accum=2"]),
                       stage="pretrain", manifest=manifest)
    # The same global batch of 8: one worker x 8, or two workers x 2 micro-batches of 2 accumulated (no_sync on the
    # first). Step 1 is the same data and weights; steps 2-3 agree only if accumulation and DDP's averaging are right.
    assert losses(one) == pytest.approx(losses(two), rel=1e-4)


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(compose_config, small_overrides, runs_root,
                                                                     clm_manifest):
    # The default local shuffle is on, and 20 steps x 8 examples span several passes over the shards: the resumed
    # run must restore weights, optimizer, LR schedule and the data position inside the shuffled stream.
    base = ["model=decoder_tiny", "trainer.max_steps=20", "trainer.ckpt_every=10"]
    straight = run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "straight",
                                         [*base, "logger=wandb"]), stage="pretrain", manifest=clm_manifest)
    # logger=wandb: rank 0 logged offline into the run directory.
    assert list((runs_root / "pretrain" / "straight" / "wandb").glob("offline-run-*/run-*.wandb"))
    # The first attempt dies at step 15, after its step-10 checkpoint, with no retries: the run stops there...
    with pytest.raises(Exception, match="injected fault at step 15"):
        run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "resume",
                                  [*base, "trainer.fail_at_step=15", "trainer.max_failures=0"]),
                     stage="pretrain", manifest=clm_manifest)
    # ...and the same command again resumes it from step 10 in a new fit().
    resumed = run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "resume", base),
                           stage="pretrain", manifest=clm_manifest)
    assert resumed.metrics["resumed_from_step"] == 10
    assert [m["step"] for m in resumed.metrics["history"]] == [15, 20]
    for key in ("loss", "lr", "grad_norm"):
        assert [m[key] for m in resumed.metrics["history"]] == pytest.approx(
            [m[key] for m in straight.metrics["history"][-2:]], rel=1e-6), key
    a, b = load_file(Path(straight.final_dir) / "model.safetensors"), load_file(Path(resumed.final_dir) / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a), "resumed weights differ from the uninterrupted run's"
    state = load_state(str(Path(json.loads((Path(resumed.final_dir) / "metrics.json").read_text())["checkpoint"])
                           / TRAIN_STATE))
    assert int(state["optimizer"]["state"][0]["step"]) == 20 and state["position"]["step"] == 20

    # A finished run is left untouched: no training, final metrics kept.
    metrics = (Path(resumed.final_dir) / "metrics.json").read_text()
    with pytest.raises(RunFinishedError, match=r"run .*/resume finished at step 20; raise trainer.max_steps"):
        run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "resume", base),
                     stage="pretrain", manifest=clm_manifest)
    assert (Path(resumed.final_dir) / "metrics.json").read_text() == metrics
    with pytest.raises(CheckpointError, match=r"model.d_model=32 \(checkpoint: 64\).*already holds checkpoints of "
                                              r"another model"):
        run_training(pretrain_cfg(compose_config, small_overrides, runs_root, "resume",
                                  [*base, "trainer.max_steps=30", "model.d_model=32"]),
                     stage="pretrain", manifest=clm_manifest)


def test_a_failed_worker_resumes_from_the_last_checkpoint(compose_config, small_overrides, runs_root, pairs_manifest):
    # MLM on two DDP workers also proves DDP copes with the NSP head this objective leaves unused.
    cfg = pretrain_cfg(compose_config, small_overrides, runs_root, "fault",
                       ["objective=mlm", "model=encoder_tiny", "trainer.max_steps=20", "trainer.ckpt_every=10",
                        "trainer.num_workers=2", "trainer.micro_batch_size=4", "trainer.fail_at_step=15",
                        "trainer.fail_rank=1", "trainer.max_failures=1"])
    outcome = run_training(cfg, stage="pretrain", manifest=pairs_manifest)
    assert outcome.metrics["step"] == 20
    assert outcome.metrics["resumed_from_step"] == 10  # restarted once, from the step-10 checkpoint
    redone = 15 - outcome.metrics["resumed_from_step"]
    assert redone <= 10  # at most one checkpoint interval of steps redone


@pytest.mark.parametrize("overrides,message", [
    (["objective=mlm", "model=decoder_tiny"], "objective=mlm trains encoder models, but model.kind is 'decoder'"),
    (["model=decoder_tiny", "model.vocab_size=100"], "model.vocab_size=100 is smaller than the tokenizer's"),
    (["model=decoder_tiny", "data.seq_len=128", "model.max_seq_len=128"], "data.seq_len=128 is larger than the shards' 64"),
])
def test_bad_config_fails_before_any_worker_starts(compose_config, small_overrides, runs_root, clm_manifest,
                                                   pairs_manifest, overrides, message):
    cfg = pretrain_cfg(compose_config, small_overrides, runs_root, "bad", overrides)
    manifest = pairs_manifest if "objective=mlm" in overrides else clm_manifest
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_training(cfg, stage="pretrain", manifest=manifest)
    assert not (runs_root / "pretrain" / "bad").exists()


@pytest.mark.parametrize("overrides,message", [
    (["mix.subset=medical", "mix.share=1.5"], r"mix.share=1.5: the share of training blocks from mix.subset"),
    (["mix.subset=general", "mix.share=0.2"], r"another built-in document subset than data.subset='general'"),
    (["mix.subset=medical", "mix.share=0.2", "objective=mlm", "model=encoder_tiny"], r"causal-LM pre-training"),
    (["mix.subset=medical", "mix.share=0.2", "data=files", "data.paths=[x.txt]"], r"with data=files or shards="),
])
def test_a_bad_mix_is_refused_before_ray(compose_config, small_overrides, runs_root, overrides, message):
    cfg = pretrain_cfg(compose_config, small_overrides, runs_root, "badmix", overrides)
    with pytest.raises(ConfigError, match=message):
        check_mix(cfg)


def test_more_gpus_than_the_cluster_has_fails_with_the_numbers(compose_config, small_overrides, runs_root,
                                                               clm_manifest):
    cfg = pretrain_cfg(compose_config, small_overrides, runs_root, "gpu", ["trainer=gpu", "model=decoder_tiny",
                                                                         "trainer.num_workers=2"])
    with pytest.raises(ClusterError, match=r"needs .*GPU 2 \(the cluster has 0\).*set cluster.autoscaling=true"):
        run_training(cfg, stage="pretrain", manifest=clm_manifest)
    assert not (runs_root / "pretrain" / "gpu").exists()


def test_fsdp2_checkpoints_and_resumes_after_a_failure(compose_config, small_overrides, runs_root, clm_manifest):
    # FSDP2 on CPU (gloo): the full-state gather at the checkpoint and the sharded optimizer-state load on restart.
    cfg = pretrain_cfg(compose_config, small_overrides, runs_root, "fsdp",
                       ["model=decoder_tiny", "trainer.strategy=fsdp", "trainer.num_workers=2",
                        "trainer.micro_batch_size=4", "trainer.max_steps=10", "trainer.ckpt_every=5",
                        "trainer.fail_at_step=7", "trainer.fail_rank=0", "trainer.max_failures=1"])
    outcome = run_training(cfg, stage="pretrain", manifest=clm_manifest)
    assert outcome.metrics["step"] == 10 and outcome.metrics["resumed_from_step"] == 5
    state = load_state(str(Path(json.loads((Path(outcome.final_dir) / "metrics.json").read_text())["checkpoint"])
                           / TRAIN_STATE))
    # Under FSDP the full optimizer state is keyed by parameter name; AdamW's step count survived the restart.
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {10}, steps
