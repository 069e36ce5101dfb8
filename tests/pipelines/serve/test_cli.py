"""`python -m pipelines.serve` with a checkpoint that cannot be served: one `error:` line, exit status 2, within
seconds and before Ray starts (no replicas that fail and are retried, no Serve tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from models import save_checkpoint
from models.decoder import Decoder, DecoderConfig
from models.heads import ScalarModel

RAY_STARTED = ("starting an embedded local Ray cluster", "Started a local Ray instance", "joining the Ray cluster")


def serve_command(tmp_path, checkpoint: str) -> tuple[subprocess.CompletedProcess, float]:
    environ = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.serve", f"checkpoint={checkpoint}",
                           f"hydra.run.dir={tmp_path}/outputs"], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=120)
    return done, time.monotonic() - start


def tiny_decoder() -> Decoder:
    return Decoder(DecoderConfig(vocab_size=64, d_model=16, n_layer=1, n_head=2, n_kv_head=1, d_ff=32,
                                 max_seq_len=32))


def test_a_checkpoint_that_cannot_be_served_is_one_line_before_ray(tmp_path):
    reward_run = tmp_path / "runs" / "align" / "reward"
    save_checkpoint(str(reward_run / "final"), ScalarModel(tiny_decoder()), tokenizer_model=b"unused")
    for checkpoint, expected in [(tmp_path / "nowhere", "does not exist"), (reward_run, "holds a reward model: serving needs a causal LM")]:
        done, seconds = serve_command(tmp_path, str(checkpoint))
        output = done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert done.returncode == 2 and len(errors) == 1 and expected in errors[0], output[-3000:]
        assert "Traceback" not in output and not any(sign in output for sign in RAY_STARTED), output[-3000:]
        assert seconds < 30, f"{checkpoint}: {seconds:.1f} s"  # ~4 s of imports here; generous: a shared machine

