"""Every path a worker reads is shared storage: a 2-node Ray cluster (two `ray start` processes on this host, each
with its own temp dir, ports and CPUs) and a local S3 server (moto), `data.root` and `run.root` on it, and the
stages data -> pre-train (one worker per node) -> fine-tune -> evaluate run from a throw-away directory.

Nothing lands on local disk, no manifest or checkpoint names a local path, and the S3 endpoint and credentials reach
every worker and actor through `cluster.env_vars` alone (the job's runtime environment): the Ray nodes themselves
are started without them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import pytest

from tests_conf import TINY_TRAIN

BIN = Path(sys.executable).parent
BUCKET = "lmlife"
# Any key works with moto; real object storage takes its own the same way (README, "On a cluster").
S3_ENV = {"AWS_ACCESS_KEY_ID": "lmlife-test", "AWS_SECRET_ACCESS_KEY": "moto-secret-0123",
          "AWS_DEFAULT_REGION": "us-east-1"}
# The session's small corpus (conftest.SMALL_DATA) in the bucket; fine-tuning and evaluation take the tokenizer and
# their sequence length from the checkpoint and their own config.
DATA = ["data.general_docs=600", "data.medical_docs=50", "data.valid_fraction=0.05", "data.rows_per_shard=200"]
PRETRAIN_DATA = [*DATA, "tokenizer.vocab_size=1000", "data.seq_len=64"]
# Head 3 CPUs, second node 2: a pre-training worker asking 1.6 fits once on each node and never twice on one, and
# the head keeps a whole CPU for Ray Data's read tasks.
HEAD_CPUS, NODE_CPUS, WORKER_CPUS = 3, 2, 1.6
# What the stages leave in the bucket (keys, as patterns): corpus, tokenizer, shards, checkpoints, the report.
STORED = [r"data/corpus/builtin-\w+/general/.+\.jsonl", r"data/tokenizers/[^/]+/tokenizer\.model",
          r"data/shards/clm-\w+/manifest\.json", r"data/shards/clm-\w+/train/shard-00000\.parquet",
          r"data/shards/sft-\w+/manifest\.json", r"runs/pretrain/base/checkpoint_[^/]+/model\.safetensors",
          *[f"runs/{run}/final/{name}" for run in ("pretrain/base", "finetune/chat")
            for name in (r"model\.safetensors", r"meta\.json", r"metrics\.json")],
          r"runs/finetune/chat/final/eval\.json"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    """This process's environment without any AWS setting or Ray address (the test session's cluster may have set
    one): what the Ray nodes get, so that only the runtime environment can hand S3 settings to workers."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


def stop_groups(procs: list[subprocess.Popen]) -> None:
    """Stop processes started each in its own session, and everything they started, by their process groups only.
    `ray start --block` and gcs_server outlast a SIGTERM by many seconds: a short grace, then SIGKILL (the Ray
    workers, in sessions of their own, exit when their raylet is gone)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.time() + 3
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.time()))


def wait_until(ready, what: str, procs: list[subprocess.Popen], timeout: float = 120, logs=()) -> None:
    """Poll `ready` until it holds; a process that exits or the timeout is a RuntimeError that quotes the end of
    each log in `logs` (what `ray start` said)."""
    deadline = time.time() + timeout
    while not ready():
        exited = [p.args[:3] for p in procs if p.poll() is not None]
        if exited or time.time() > deadline:
            said = "".join(f"\n--- {log}:\n{log.read_text()[-3000:]}" for log in logs if log.exists())
            why = f"exited: {exited}" if exited else f"not within {timeout:.0f} s"
            raise RuntimeError(f"{what} did not come up ({why}){said}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def s3():
    """(endpoint, boto3 client) of a moto S3 server on a free port, with an empty bucket."""
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=clean_env(),
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                              region_name=S3_ENV["AWS_DEFAULT_REGION"])

        def answers() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:  # connection refused until the server listens
                return False

        wait_until(answers, "the moto S3 server", [server], timeout=30)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        stop_groups([server])


def own_ports() -> list[str]:
    """Every port of a node its own: the test session's cluster holds Ray's defaults (e.g. the agent's 52365)."""
    return [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "node-manager-port", "object-manager-port")] + ["--min-worker-port=0", "--max-worker-port=0"]


def ray_list(resource: str, address: str, env: dict, *filters: str) -> list[dict]:
    """`ray list <resource>` through the state API (which keeps finished actors too); [] when it has none."""
    listed = subprocess.run([str(BIN / "ray"), "list", resource, f"--address={address}", "--format=json", "--detail",
                             *[f"--filter={f}" for f in filters]], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    return json.loads(listed.stdout) if listed.stdout.lstrip().startswith("[") else []


@pytest.fixture(scope="module")
def two_nodes():
    """(GCS address, environment for Ray CLI clients) of a head and a second node started by `ray start --block`,
    each in its own process group with its own temp dir, stopped by their process ids only."""
    gcs, dashboard = free_port(), free_port()
    env = clean_env() | {
        "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
        # Ray Train's placement-group cleaner asks the state API about its controller; with another Ray instance
        # on this host (the test session's) it cannot tell which one's API to ask.
        "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
        # Ray Train's controller polls its workers every 2 s by default (see conftest.ray_cluster).
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    temp_dirs = [Path(tempfile.mkdtemp(prefix="ray2n", dir="/tmp")) for _ in range(2)]
    address = f"127.0.0.1:{gcs}"
    nodes = []

    def start(temp_dir: Path, *args: str) -> None:
        with open(temp_dir / "start.log", "w") as log:  # `ray start` says when its node has joined
            nodes.append(subprocess.Popen(
                [str(BIN / "ray"), "start", "--block", f"--temp-dir={temp_dir}", "--object-store-memory=200000000",
                 "--disable-usage-stats", *own_ports(), *args],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT))

    def started(temp_dir: Path) -> bool:
        return "Ray runtime started" in (temp_dir / "start.log").read_text()

    try:
        start(temp_dirs[0], "--head", f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
              f"--ray-client-server-port={free_port()}", f"--num-cpus={HEAD_CPUS}")
        # The second node only once the head is up: a node that cannot reach the GCS in its first seconds gives up
        # ("timed out during startup"), which a loaded machine made happen in CI.
        wait_until(lambda: started(temp_dirs[0]), "the Ray head", nodes, logs=[temp_dirs[0] / "start.log"])
        start(temp_dirs[1], f"--address={address}", f"--num-cpus={NODE_CPUS}")
        wait_until(lambda: started(temp_dirs[1]), "the second Ray node", nodes,
                   logs=[d / "start.log" for d in temp_dirs])
        yield address, env
    finally:
        stop_groups(nodes)
        for path in temp_dirs:
            shutil.rmtree(path, ignore_errors=True)


def bucket_keys(client) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_the_lifecycle_on_two_nodes_keeps_every_path_in_object_storage(s3, two_nodes, tmp_path):
    endpoint, client = s3
    address, ray_env = two_nodes
    settings = S3_ENV | {"AWS_ENDPOINT_URL": endpoint}
    root = f"s3://{BUCKET}"
    # Set once, in the driver's environment (it reads manifests and checkpoints itself); `cluster.env_vars` forwards
    # them into the job's runtime environment, which every worker, actor and task inherits (README, "On a cluster").
    shared = [f"cluster.address={address}", f"data.root={root}/data",
              *[f"+cluster.env_vars.{k}=${{oc.env:{k}}}" for k in settings]]
    driver_dir = tmp_path / "driver"
    driver_dir.mkdir()

    def stage(name: str, *overrides: str) -> str:
        done = subprocess.run([sys.executable, "-m", f"pipelines.{name}", *shared, *overrides],
                              env=ray_env | settings, cwd=driver_dir, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{name}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        return done.stdout

    assert f"shards: {root}/data/shards/clm-" in stage("data", *PRETRAIN_DATA)
    stage("pretrain", *PRETRAIN_DATA, *TINY_TRAIN, f"run.root={root}/runs", "run.name=base", "model=decoder_tiny",
          "trainer.num_workers=2", f"trainer.cpus_per_worker={WORKER_CPUS}", "trainer.max_steps=10",
          "trainer.ckpt_every=10")
    workers = ray_list("actors", address, ray_env, "class_name=RayTrainWorker")
    assert len({w["node_id"] for w in workers}) == 2, f"the pre-training workers ran on one node: {workers}"
    # A few examples, read once by the driver (pipelines/train/driver.py:first_examples): pre-training already
    # streamed shards through Ray Data on both nodes; the worker still reads init_from and the validation shards.
    stage("finetune", *DATA, *TINY_TRAIN, "finetune=instruct", f"init_from={root}/runs/pretrain/base",
          f"run.root={root}/runs", "run.name=chat", "finetune.train_examples=64", "trainer.max_steps=5",
          "trainer.ckpt_every=5")
    report = stage("evaluate", *DATA, f"checkpoint={root}/runs/finetune/chat", "eval.cloze_limit=8",
                   "eval.qa_limit=8", "eval.qa_max_new_tokens=12", "eval.batch_size=8")
    assert f"report: {root}/runs/finetune/chat/final/eval.json" in report

    keys = bucket_keys(client)
    missing = [p for p in STORED if not any(re.fullmatch(p, key) for key in keys)]
    assert not missing, f"nothing in {root} matches {missing}"
    # Hydra's own log is all a driver leaves where it was started: no data/, no runs/; and its saved configs keep
    # `${oc.env:...}`, not the secret.
    assert sorted(p.name for p in driver_dir.iterdir()) == ["outputs"]
    saved = [p for p in driver_dir.rglob("*") if p.is_file()]
    assert saved and not [p for p in saved if S3_ENV["AWS_SECRET_ACCESS_KEY"] in p.read_text(errors="replace")]
    # Manifests, checkpoint meta, metrics, reports, Ray Train's own snapshots: paths in any of them are the bucket's.
    records = [k for k in keys if k.endswith(".json")]
    assert len(records) > 10
    for key in records:
        values = strings(json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        paths = [v for v in values if v.startswith("/") or "/tmp/" in v or f"{BUCKET}/" in v]
        assert all(v.startswith(f"{root}/") for v in paths), f"{key} names paths outside {root}: {paths}"


def strings(obj) -> list[str]:
    """Every string value in a parsed JSON document."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in strings(v)]
    return []
