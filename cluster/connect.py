"""Join a Ray cluster from the `cluster` config group — the one function every stage calls first.

- Inside a Ray job (`ray job submit ... -- python -m pipelines.X`) or with `RAY_ADDRESS` set: join that cluster.
- With `cluster.address` set: join it (`auto`, `host:port` or `ray://host:10001`). With token authentication
  (Ray's default) the driver sends this machine's token when RAY_AUTH_MODE is unset and one exists
  (~/.ray/auth_token), as `cluster.submit` does; a refused token is one line saying what to set.
- Otherwise: start an embedded local cluster sized for this machine (`cluster.num_cpus`, default all cores).
- Already connected (a test session, a notebook): reuse the connection, start nothing twice.

`RAY_ADDRESS=http://host:8265` (the dashboard, which `ray job submit` talks to) cannot be joined by a driver: it is
refused with a message naming the variables for each use. `wait_for_resources` checks that what a stage asks for
(GPUs, CPUs) exists before any worker is scheduled, instead of Ray waiting for it forever.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Any, Mapping

import ray
import ray.data
from ray.autoscaler.sdk import request_resources

from cluster.errors import ClusterError  # noqa: F401 - raised here, and imported from here by callers

log = logging.getLogger(__name__)


def connect(cfg: Mapping[str, Any]) -> dict:
    """Connect to Ray as `cfg` (the `cluster` group) says; returns the cluster's resources."""
    quiet_ray(progress_bars=cfg["progress_bars"])
    if ray.is_initialized():
        return ray.cluster_resources()
    runtime_env = {"env_vars": dict(cfg["env_vars"] or {})} if cfg["env_vars"] else None
    address = cfg["address"] or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        setting = "cluster.address" if cfg["address"] else "RAY_ADDRESS"
        raise ClusterError(f"{setting}={address} is the dashboard's HTTP address, which only `ray job submit` uses: "
                          f"put it in RAY_API_SERVER_ADDRESS for job submission, and give drivers the cluster's "
                          f"address instead (RAY_ADDRESS=<head>:6379, or auto on a cluster node)")
    if address:
        log.info("joining the Ray cluster at %s", address)
        token = use_token_file()
        try:
            ray.init(address=address, namespace=cfg["namespace"], runtime_env=runtime_env, log_to_driver=True)
        except ConnectionError as error:
            if not refused_token(error):
                raise
            fix = ("put the cluster's token (`ray get-auth-token` on its head) in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                   if token else "export RAY_AUTH_MODE=token, with the cluster's token (`ray get-auth-token` on its "
                                 "head) in ~/.ray/auth_token or RAY_AUTH_TOKEN")
            raise ClusterError(f"the Ray cluster at {address} uses token authentication and refused "
                              f"{'this token' if token else 'a driver without one'}: {fix}") from None
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


def use_token_file() -> bool:
    """Send this machine's Ray token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) when joining a
    cluster, unless RAY_AUTH_MODE says otherwise; returns whether token authentication is on.

    Token authentication is Ray's default, and a driver without RAY_AUTH_MODE=token is refused by such a cluster
    (after 20 s of retries). Ray turns it on by itself only for a cluster it finds on this machine (address auto);
    this does it for a named address too, as cluster.submit does for the job client."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    from ray._private.authentication.authentication_token_setup import _enable_token_auth
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        return False
    _enable_token_auth()  # RAY_AUTH_MODE=token for this process and its children, Ray's cached config refreshed
    return True


def refused_token(error: BaseException) -> bool:
    """`ray.init` failed because the cluster refused the driver's (missing or wrong) token: Ray says so only in the
    text of the error under its ConnectionError."""
    while error is not None:
        if isinstance(error, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def quiet_ray(*, progress_bars: bool) -> None:
    """Ray settings that keep a stage's output to its own progress lines (Ray's logs on disk stay complete)."""
    context = ray.data.DataContext.get_current()
    # Per-operator progress bars flood logs that are not a terminal (jobs, CI, Train workers); the data stage
    # logs its own progress. The execution plan printed at every dataset start is for debugging.
    context.enable_progress_bars = progress_bars
    context.print_on_execution_start = False
    # A failed dataset (e.g. a bad record with data.on_bad_record=fail) is logged by two Ray Data loggers with
    # every frame of Ray's task machinery, then raised to the caller anyway: the stage reports it once (one line
    # for a user error, the traceback for a bug).
    for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # "Progress bars disabled. To enable, ..." answers the setting above.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # Ray Train's default ingest options set a deprecated field of Ray Data's own: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*exclude_resources.*is deprecated")


def wait_for_resources(cfg: Mapping[str, Any], wanted: Mapping[str, float], *, what: str) -> None:
    """Fail at once when the cluster lacks `wanted` (e.g. {"GPU": 8, "CPU": 4}), saying what it has; with
    `cluster.autoscaling` ask the autoscaler for them (Ray's autoscaler only adds nodes for demand it sees, and a
    stage that waits has not asked yet) and wait up to `cluster.resource_wait_s` for the nodes."""
    deadline = time.monotonic() + (cfg["resource_wait_s"] if cfg["autoscaling"] else 0)
    announced = requested = False
    while True:
        have = ray.cluster_resources()
        short = {k: (v, have.get(k, 0.0)) for k, v in wanted.items() if v and have.get(k, 0.0) < v}
        if not short:
            if requested:  # the stage's own workers hold the nodes now; a standing request would keep them forever
                request_resources(num_cpus=0, bundles=[])
            return
        if cfg["autoscaling"] and not requested:
            # One bundle per GPU (a worker holds one), the CPUs as a total: shapes any GPU node type can satisfy.
            request_resources(num_cpus=int(wanted.get("CPU", 0)), bundles=[{"GPU": 1}] * int(wanted.get("GPU", 0)))
            requested = True
        needs = ", ".join(f"{k} {need:g} (the cluster has {got:g})" for k, (need, got) in short.items())
        if time.monotonic() >= deadline:
            if requested:
                request_resources(num_cpus=0, bundles=[])  # no standing demand for nodes nobody will use
            hint = ("the autoscaler added none in cluster.resource_wait_s" if cfg["autoscaling"] else
                    "set cluster.autoscaling=true if an autoscaler (KubeRay, the cluster launcher) can add nodes")
            raise ClusterError(f"{what} needs {needs}: ask for less (e.g. trainer=cpu or fewer trainer.num_workers) "
                              f"or add nodes; {hint}")
        if not announced:
            log.warning("%s needs %s: waiting up to %ds for the autoscaler to add nodes", what, needs,
                        cfg["resource_wait_s"])
            announced = True
        time.sleep(5)
