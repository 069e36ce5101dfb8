"""Join a Ray cluster from the `cluster` config group — the one function every stage calls first.

- Inside a Ray job (`ray job submit ... -- python -m pipelines.X`) or with `RAY_ADDRESS` set: join that cluster.
- With `cluster.address` set: join it (`auto`, `host:port` or `ray://host:10001`).
- Otherwise: start an embedded local cluster sized for this machine (`cluster.num_cpus`, default all cores).
- Already connected (a test session, a notebook): reuse the connection, start nothing twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import ray
import ray.data

log = logging.getLogger(__name__)


def connect(cfg: Mapping[str, Any]) -> dict:
    """Connect to Ray as `cfg` (the `cluster` group) says; returns the cluster's resources."""
    # Ray Data's per-operator progress bars flood logs that are not a terminal (jobs, CI, Train workers).
    ray.data.DataContext.get_current().enable_progress_bars = cfg["progress_bars"]
    if ray.is_initialized():
        return ray.cluster_resources()
    runtime_env = {"env_vars": dict(cfg["env_vars"] or {})} if cfg["env_vars"] else None
    address = cfg["address"] or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, namespace=cfg["namespace"], runtime_env=runtime_env, log_to_driver=True)
    else:
        log.info("starting an embedded local Ray cluster")
        ray.init(
            address="local",  # never silently join another cluster running on this host
            num_cpus=cfg["num_cpus"],
            num_gpus=cfg["num_gpus"],
            object_store_memory=cfg["object_store_memory"],
            include_dashboard=cfg["include_dashboard"],
            namespace=cfg["namespace"],
            runtime_env=runtime_env,
        )
    resources = ray.cluster_resources()
    log.info("Ray resources: %s", {k: v for k, v in resources.items() if not k.startswith("node:")})
    return resources
