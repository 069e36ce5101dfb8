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


def tiny_decoder() -> Decoder:
    return Decoder(DecoderConfig(vocab_size=64, d_model=16, n_layer=1, n_head=2, n_kv_head=1, d_ff=32,
                                 max_seq_len=32))


def test_a_checkpoint_that_cannot_be_served_is_one_line_before_ray(tmp_path):
    reward_run = tmp_path / "runs" / "align" / "reward"  # an easy mistake: reward and policy runs live side by side
    save_checkpoint(str(reward_run / "final"), ScalarModel(tiny_decoder()), tokenizer_model=b"unused")
    cases = [(tmp_path / "nowhere", "does not exist"), (reward_run, "holds a reward model: serving needs a causal LM")]
    environ = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    start = time.monotonic()
    commands = [subprocess.Popen([sys.executable, "-m", "pipelines.serve", f"checkpoint={checkpoint}",
                                  f"hydra.run.dir={tmp_path}/outputs{i}"], cwd=tmp_path, env=environ, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for i, (checkpoint, _) in enumerate(cases)]  # side by side: the suite waits for the slower one
    for command, (checkpoint, expected) in zip(commands, cases):
        stdout, stderr = command.communicate(timeout=120)
        seconds = time.monotonic() - start
        output = stdout + stderr
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert command.returncode == 2 and len(errors) == 1 and expected in errors[0], output[-3000:]
        assert "Traceback" not in output and not any(sign in output for sign in RAY_STARTED), output[-3000:]
        # ~4 s of imports on an idle 2-core machine (Ray and Serve would add ~10 s, the replicas' retries minutes);
        # generous because the test machine is shared.
        assert seconds < 40, f"{checkpoint}: {seconds:.1f} s"
