"""`python -m pipelines.evaluate` without `checkpoint=`: one `error:` line, exit status 2, no traceback, before Ray
(it was a MissingMandatoryValue traceback, exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys

RAY_STARTED = ("starting an embedded local Ray cluster", "Started a local Ray instance", "joining the Ray cluster")


def test_no_checkpoint_is_one_line_before_ray(tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-m", "pipelines.evaluate", f"hydra.run.dir={tmp_path}/outputs"],
                          cwd=tmp_path, env=environ, text=True, capture_output=True, timeout=120)
    output = done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and "checkpoint= is required" in errors[0], output[-3000:]
    assert "Traceback" not in output and not any(sign in output for sign in RAY_STARTED), output[-3000:]
