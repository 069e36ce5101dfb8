"""Stage 5 — serving: `python -m pipelines.serve checkpoint=<run or checkpoint dir> [serve.x=...]`.

Joins the cluster (embedded by default), deploys the chat app (pipelines/serve/app.py), prints its URL and an
example request, and serves until Ctrl-C; then the app is deleted and Serve shut down cleanly.
"""

from __future__ import annotations

import signal
import threading

from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from pipelines.entry import stage_main
from pipelines import checkpoints


def example(url: str, model_hint: str) -> str:
    return (f"curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
            f"-d '{{\"messages\": [{{\"role\": \"user\", \"content\": \"What is the capital of France?\"}}], "
            f"\"stream\": true}}'{model_hint}")


def serve_until_stopped(cfg: DictConfig) -> None:
    """Deploy the app `cfg` describes, print how to reach it, and serve until SIGINT/SIGTERM; then delete it."""
    from ray import serve

    from pipelines.serve.app import SERVABLE, check_backend, deploy, settings_of, undeploy

    # Before Ray starts: a missing path, a reward model or a backend that cannot run is one line here, not replicas
    # that fail and are retried.
    _, spec = checkpoints.check(None if OmegaConf.is_missing(cfg, "checkpoint") else cfg.checkpoint, **SERVABLE)
    check_backend(settings_of(cfg), spec)

    connect(cfg.cluster)
    url = deploy(cfg)
    key = f"  (add -H 'Authorization: Bearer ${cfg.serve.api_key_env}')" if cfg.serve.api_key_env else ""
    print(f"serving {cfg.checkpoint} at {url}\n  chat page: {url}/\n  try: {example(url, key)}\n  Ctrl-C stops",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down the app", flush=True)
    undeploy(cfg)
    serve.shutdown()


@stage_main("serve")
def main(cfg: DictConfig) -> None:
    serve_until_stopped(cfg)


if __name__ == "__main__":
    main()
