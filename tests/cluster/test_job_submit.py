"""Jobs on a cluster from `ray start --head` (one head for the module): `ray job submit --working-dir . -- python -m
pipelines.pretrain ...`, and `python -m cluster.submit` (overrides checked before submitting, logs followed, the
job's exit code returned, --no-wait / status / logs / stop, --address over the variables, one-line mistakes); a
stage's driver joining the head by its GCS address with the token file and no RAY_AUTH_MODE."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head_node():
    """A separate Ray head started by the CLI in its own process group, stopped by its process ids only."""
    gcs, dashboard = free_port(), free_port()
    # Every port of its own: the test session's cluster already holds Ray's defaults (e.g. the agent's 52365).
    own_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port", "ray-client-server-port")]
    temp_dir = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")
    env = os.environ | {"PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", f"--dashboard-port={dashboard}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *own_ports],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401 without a token: the dashboard is up
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError("the Ray head did not come up") from None
                time.sleep(1)
        yield address, env, f"127.0.0.1:{gcs}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # gcs_server may ignore SIGTERM
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_pretrain_runs_as_a_ray_job(head_node, clm_manifest, small_overrides, tmp_path):
    address, env, _ = head_node
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
           "python", "-m", "pipelines.pretrain", *small_overrides, "model=decoder_tiny", "trainer.max_steps=10",
           "trainer.log_every=5", "trainer.ckpt_every=10", "trainer.micro_batch_size=8",
           f"run.root={tmp_path}", "run.name=job"]
    for _ in range(30):  # the job agent registers a few seconds after the dashboard answers
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        if "No available agent" not in done.stderr + done.stdout:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    assert "step 10/10" in done.stdout
    final = tmp_path / "pretrain" / "job" / "final"
    assert (final / "model.safetensors").exists() and (final / "metrics.json").exists()


def submit(args: list[str], env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.submit", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cluster_submit_follows_the_logs_returns_the_jobs_exit_code_and_obeys_address(head_node, clm_manifest, small_overrides):
    address, env, _ = head_node
    env = env | {"RAY_API_SERVER_ADDRESS": address}
    # The data stage finds the session's shards by their manifest: a real stage, done in seconds.
    done = submit(["data", *small_overrides], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted raysubmit_" in done.stderr and "succeeded (exit code 0)" in done.stderr
    assert "shards" in done.stdout  # the job's own output, followed to the terminal
    # --no-wait prints the id; logs --follow, status and stop take it. A stage that fails with a user error: its
    # one line, and its exit code (2) as ours.
    # --env hands this shell's variable to the job: the checkpoint setting is resolved from it inside the job.
    # --address wins over the variables, which name a dashboard where nothing listens.
    nowhere = "http://127.0.0.1:9"
    env = env | {"RAY_API_SERVER_ADDRESS": nowhere, "RAY_ADDRESS": nowhere}
    at = ["--address", address]
    queued = submit(["evaluate", "checkpoint=${oc.env:LMLIFE_PROBE}", "--env", "LMLIFE_PROBE", "--no-wait", *at],
                    env | {"LMLIFE_PROBE": "/nonexistent/run"})
    job_id = queued.stdout.strip()
    assert queued.returncode == 0 and job_id.startswith("raysubmit_"), queued.stderr
    said = queued.stderr.splitlines()  # where it goes, said before it goes
    submitted = next(i for i, line in enumerate(said) if line.startswith("submitted raysubmit_"))
    assert said.index(f"submitting to the Ray cluster at {address} (from --address)") < submitted, queued.stderr
    followed = submit(["logs", job_id, "--follow", *at], env)
    assert followed.returncode == 2, followed.stdout[-3000:] + followed.stderr[-3000:]
    assert "error: checkpoint=/nonexistent/run does not exist" in followed.stdout
    assert "error: checkpoint" not in followed.stderr  # the logs once: not again in the closing line
    status = submit(["status", job_id, *at], env)
    assert status.returncode == 0 and status.stdout.splitlines() == [
        f"{job_id}: FAILED (Job entrypoint command failed with exit code 2)"]
    assert "already ended" in submit(["stop", job_id, *at], env).stdout
    unknown = submit(["status", "raysubmit_nosuchjob", *at], env, timeout=60)
    assert unknown.returncode == 2 and unknown.stdout == "", unknown.stderr[-3000:]
    assert unknown.stderr.splitlines() == [f"error: no job raysubmit_nosuchjob on the cluster at {address} (ray job "
                                           f"list --address {address} lists them)"]


def test_a_driver_joins_a_token_cluster_with_the_token_file_alone(head_node, clm_manifest, small_overrides):
    _, env, gcs = head_node
    env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}  # ~/.ray/auth_token only
    # The data stage finds the session's shards by their manifest: it joins, checks and ends in seconds.
    done = subprocess.run([sys.executable, "-m", "pipelines.data", *small_overrides, f"cluster.address={gcs}"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert f"joining the Ray cluster at {gcs}" in output and "reusing shards" in output


def test_cluster_submit_checks_the_overrides_before_submitting():
    env = os.environ | {"RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9"}  # nothing listens: nothing is submitted
    typo = submit(["pretrain", "trainer.max_stepz=10"], env, timeout=60)
    assert typo.returncode == 2 and "error: pretrain trainer.max_stepz=10:" in typo.stderr
    unknown = submit(["pretrian"], env, timeout=60)
    assert unknown.returncode == 2 and "no stage 'pretrian'; stages: align, data, evaluate, export," in unknown.stderr
    chat = submit(["chat"], env, timeout=60)  # a conversation at a terminal is not a job
    assert chat.returncode == 2 and "no stage 'chat'" in chat.stderr
