"""Stage entry points as a user runs them: a mistake is one line on stderr and exit status 2, found before Ray
starts wherever it can be (the point is speed: no cluster start-up, no shard building)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from models import build_model, save_checkpoint

RAY_STARTED = ("starting an embedded local Ray cluster", "Started a local Ray instance", "joining the Ray cluster")


def run_stage(module: str, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environ | (env or {}),
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], output[-3000:]
    assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def decoder_checkpoint(tmp_path_factory, compose_config) -> Path:
    """A real decoder_tiny checkpoint (as `python -m pipelines.pretrain model=decoder_tiny` would write it)."""
    cfg = compose_config("pretrain", ["model=decoder_tiny"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    path = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(str(path), build_model(model_cfg), meta={"stage": "pretrain", "step": 20})
    return path


def finished_run(tmp: Path, checkpoint: Path) -> None:
    """runs/pretrain/done: a run whose latest checkpoint is at step 20 (the decoder_checkpoint's)."""
    run = tmp / "runs" / "pretrain" / "done" / "checkpoint_2026-01-01_00-00-00.000000"
    run.mkdir(parents=True)
    for name in ("config.json", "meta.json"):
        (run / name).write_text((checkpoint / name).read_text())


def early_cases(tmp: Path, checkpoint: Path) -> list[tuple[list[str], dict, str]]:
    return [
        (["objective=mlm", "model=decoder_tiny"], {}, "error: objective=mlm trains encoder models, but model.kind is "
                                                      "'decoder' (pick e.g. model=encoder_tiny)"),
        (["model=decoder_tiny", f"init_from={tmp}/nowhere"], {}, f"init_from={tmp}/nowhere does not exist"),
        (["model=decoder_tiny", "model.d_model=32", f"init_from={checkpoint}"], {},
         "holds another model's shape: model.d_model=32 (checkpoint: 64)"),
        (["model=decoder_tiny", "run.root=runs"], {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"},
         "run.root=runs is relative, and inside a Ray job it would land in the job's temporary working directory"),
        (["model=decoder_tiny", "data.subset=legal"], {}, "data.subset must be one of ['classify', 'general', 'instruct', 'medical', 'preference', 'summarize'], got 'legal'"),
        (["model=encoder_tiny", "objective=mlm", "model.max_seq_len=32"], {},
         "model.max_seq_len=32 is shorter than data.seq_len=128"),
        (["model=decoder_tiny"], {"RAY_ADDRESS": "http://127.0.0.1:8265"},
         "RAY_ADDRESS=http://127.0.0.1:8265 is the dashboard's HTTP address"),
    ]


def test_mistakes_are_one_line_before_ray_starts(tmp_path, decoder_checkpoint):
    checkpoint = decoder_checkpoint
    for args, env, expected in early_cases(tmp_path, checkpoint):
        done = run_stage("pipelines.pretrain", [*args, f"data.root={tmp_path}/data"], tmp_path, env)
        assert_one_line_error(done, expected)
        assert not any(sign in done.stdout + done.stderr for sign in RAY_STARTED), done.stderr[-2000:]
        assert not (tmp_path / "data").exists()  # no corpus, tokenizer or shards were built


def test_rerunning_a_finished_run_is_a_notice_and_exit_status_0(tmp_path, decoder_checkpoint):
    finished_run(tmp_path, decoder_checkpoint)
    done = run_stage("pipelines.pretrain", ["model=decoder_tiny", f"run.root={tmp_path}/runs", "run.name=done",
                                            "trainer.max_steps=20", f"data.root={tmp_path}/data"], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert done.stderr.splitlines() == [f"notice: run {tmp_path}/runs/pretrain/done finished at step 20; raise "
                                        f"trainer.max_steps (now 20) to continue or choose a new run.name"], output
    assert not any(sign in output for sign in RAY_STARTED) and not (tmp_path / "data").exists()


def test_a_bad_record_is_one_line_without_ray_tracebacks(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Line {i} is fine. It has words."}) + "\n" for i in range(50))
                      + '{"text": "unterminated\n')
    done = run_stage("pipelines.data", ["data=files", f"data.paths=[{corpus}]", f"data.root={tmp_path}/data",
                                        "data.on_bad_record=fail", "tokenizer.vocab_size=300"], tmp_path)
    assert_one_line_error(done, f"error: {corpus}:51: not valid JSON: Unterminated string starting at (column 10)")
    assert "retried_map_errors" not in done.stdout + done.stderr
