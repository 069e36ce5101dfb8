"""The fine-tuning sweep: Ray Tune trials that are real fine-tuning runs on Ray Train, the best final checkpoint
copied to best/, and a sweep killed mid-way that resumes without training its finished trial again.

One sweep serves the Ray tests (each trial costs ~20 s of Train start-up), fine-tuning the session's pre-trained
decoder: `python -m pipelines.sweep` as a user runs it, in its own process group, joined to the session's cluster
(RAY_ADDRESS); killed once its first trial's final checkpoint is on disk, then run again to the end.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.errors import ConfigError
from pipelines.sweep import check_same_sweep, check_sweep, saved_settings, search_space, sweep
from tests_conf import ROOT

# Trials of 10 steps, a report (and evaluation) every 5; ASHA's one rung at step 5. Two trials: the one that finishes
# before the kill and one that only the resumed run trains (seed 0 draws it the lower val_loss, so best/ is not simply
# the first trial's).
TINY_SWEEP = ["trainer.max_steps=10", "trainer.log_every=5", "trainer.ckpt_every=5", "trainer.eval_batches=2",
              "sweep.asha.grace_period=5", "sweep.asha.reduction_factor=3", "sweep.num_samples=2", "sweep.verbose=0"]


def run_sweep(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """`python -m pipelines.sweep args`, in its own process group, on the session's cluster (RAY_ADDRESS)."""
    import ray

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.sweep", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def resumed(pretrained_decoder, small_overrides, tmp_path_factory) -> SimpleNamespace:
    """A 2-trial sweep killed (its process group) once the first trial finished, then run again to its end."""
    root = tmp_path_factory.mktemp("sweeps")
    args = [*small_overrides, f"init_from={pretrained_decoder.run_dir}", f"run.root={root}", *TINY_SWEEP]
    sweep_dir = root / "sweep" / "sweep"

    first = run_sweep(args, root, root / "first.log")
    deadline = time.monotonic() + 300
    while not (finals := list(sweep_dir.glob("finetune/*/final/metrics.json"))):
        assert first.poll() is None and time.monotonic() < deadline, (root / "first.log").read_text()[-5000:]
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished = finals[0].parent.parent
    before = {"metrics": finals[0].read_bytes(), "mtime": finals[0].stat().st_mtime_ns,
              "checkpoints": sorted(p.name for p in finished.glob("checkpoint_*"))}

    second = run_sweep(args, root, root / "second.log")
    assert second.wait(timeout=400) == 0, (root / "second.log").read_text()[-5000:]
    return SimpleNamespace(root=root, args=args, sweep_dir=sweep_dir, finished=finished, before=before,
                           output=(root / "second.log").read_text())


def results(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def test_the_best_finished_trial_is_copied_to_best(resumed, compose_config):
    rows = results(resumed.sweep_dir)
    assert len(rows) == 2 and {r["status"] for r in rows} <= {"finished", "stopped"}, rows
    assert all(set(r) >= {"trial", "trainer.lr", "finetune.lora.rank", "val_loss", "best_val_loss", "steps"}
               for r in rows)
    finished = [r for r in rows if r["status"] == "finished"]
    assert finished and all(r["steps"] == "10" for r in finished)
    best = min(finished, key=lambda r: float(r["val_loss"]))["trial"]
    final = resumed.sweep_dir / "finetune" / best / "final"
    assert (resumed.sweep_dir / "best" / "model.safetensors").read_bytes() == (final / "model.safetensors").read_bytes()
    assert any(line.startswith(best) and line.endswith("<- best") for line in resumed.output.splitlines())

    # A finished sweep run again trains nothing: the same trials, the same table.
    outcome = sweep(compose_config("sweep", resumed.args))
    assert outcome.best_trial == best and [r["trial"] for r in outcome.rows] == [r["trial"] for r in rows]
    assert len(list((resumed.sweep_dir / "finetune").iterdir())) == 2


def test_a_killed_sweep_resumes_without_training_its_finished_trial_again(resumed):
    assert "resuming sweep" in resumed.output
    # The same two trials (Tune restored the experiment instead of drawing new ones)...
    trials = sorted(r["trial"] for r in results(resumed.sweep_dir))
    assert sorted(p.name for p in (resumed.sweep_dir / "finetune").iterdir()) == trials
    # Tune's own directory of each trial (a restarted trial's may carry a suffix).
    assert all(any(p.name.startswith(t) for p in resumed.sweep_dir.iterdir()) for t in trials)
    # ...and the trial that had finished before the kill was not trained again.
    metrics = resumed.finished / "final" / "metrics.json"
    assert metrics.read_bytes() == resumed.before["metrics"] and metrics.stat().st_mtime_ns == resumed.before["mtime"]
    assert sorted(p.name for p in resumed.finished.glob("checkpoint_*")) == resumed.before["checkpoints"]


def test_a_sweep_whose_trials_all_fail_says_why(pretrained_decoder, compose_config, small_overrides, tmp_path):
    # The driver's checks pass (the base config has rank 0); each trial's own fine-tuning checks refuse rank -1.
    cfg = compose_config("sweep", [*small_overrides, f"init_from={pretrained_decoder.run_dir}", f"run.root={tmp_path}",
                                   *[o for o in TINY_SWEEP if not o.startswith("sweep.num_samples")],
                                   "sweep.num_samples=1", "~sweep.space",
                                   "+sweep.space={finetune.lora.rank: {choice: [-1]}}"])
    with pytest.raises(ConfigError, match=r"\(1 of 1 failed; the first: .*finetune.lora.rank must be a whole number"):
        sweep(cfg)
    assert results(tmp_path / "sweep" / "sweep")[0]["status"] == "error"
    assert not (tmp_path / "sweep" / "sweep" / "best").exists()


@pytest.mark.parametrize("overrides,message", [
    (["+sweep.space.trainer.lrr={choice: [1]}"], "sweep.space: trainer.lrr is not a fine-tuning setting"),
    (["sweep.space.trainer.lr.loguniform=[1e-3]"], "sweep.space.trainer.lr: loguniform takes [low, high]"),
    (["+sweep.space.trainer.lr.choice=[1e-3]"], "sweep.space.trainer.lr: one distribution per key"),
    (["trainer.eval_every=20"], "sweep.metric=val_loss must be in every report: set trainer.eval_every"),
    (["sweep.scheduler=pbt"], "sweep.scheduler must be asha or fifo, got 'pbt'"),
])
def test_bad_sweep_settings_fail_before_ray(compose_config, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        check_sweep(compose_config("sweep", ["init_from=x", *overrides]))


def test_the_space_takes_nested_and_dotted_keys(compose_config):
    cfg = compose_config("sweep", ["init_from=x", "~sweep.space",
                                   "+sweep.space={trainer.lr: {loguniform: [1e-4, 1e-3]}, finetune: {lora: "
                                   "{rank: {grid: [0, 4]}}}, trainer.warmup_steps: 0}"])
    space = search_space(cfg)
    assert sorted(space) == ["finetune.lora.rank", "trainer.lr", "trainer.warmup_steps"]
    assert space["trainer.warmup_steps"] == 0 and space["finetune.lora.rank"] == {"grid_search": [0, 4]}


def test_a_sweep_resumes_only_with_the_settings_it_started_with(compose_config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(saved_settings(compose_config("sweep", ["init_from=x"]))))
    # The cluster may differ...
    check_same_sweep(compose_config("sweep", ["init_from=x", "cluster.num_cpus=1"]), str(tmp_path))
    # ...what the trials run may not.
    with pytest.raises(ConfigError, match=r"sweep.num_samples=5 \(was 3\); re-run it with the same settings"):
        check_same_sweep(compose_config("sweep", ["init_from=x", "sweep.num_samples=5"]), str(tmp_path))
