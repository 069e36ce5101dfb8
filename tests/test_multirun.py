"""Hydra multirun as a user types it: `python -m pipelines.data -m data.seq_len=32,48` builds two shard sets, one
job directory each under multirun/data/<time>/.

A real subprocess with its own embedded Ray cluster (not the test session's), run in a temporary directory so
that multirun/ lands there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests_conf import ROOT

SMALL = ["data.general_docs=600", "data.medical_docs=50", "tokenizer.vocab_size=1000", "data.valid_fraction=0.05",
         "data.rows_per_shard=200"]


def test_data_multirun_builds_one_shard_set_per_job(tmp_path):
    # Not the session's cluster: RAY_ADDRESS (set by ray.init in this process) would make the jobs join it.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "pipelines.data", "-m", "data.seq_len=32,48", f"data.root={tmp_path / 'data'}",
           *SMALL, "cluster.include_dashboard=false"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    manifests = [json.loads(p.read_text()) for p in sorted((tmp_path / "data" / "shards").glob("*/manifest.json"))]
    assert sorted(m["seq_len"] for m in manifests) == [32, 48], done.stdout[-3000:]
    assert len({m["dir"] for m in manifests}) == 2

    sweeps = list((tmp_path / "multirun" / "data").iterdir())
    assert len(sweeps) == 1, sweeps
    for job in ("0", "1"):  # each job's directory holds the stage's own log (README: Errors and logs)
        assert (sweeps[0] / job / "data.log").is_file(), list(sweeps[0].iterdir())
