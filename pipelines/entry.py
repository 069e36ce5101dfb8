"""The one wrapper every stage's entry point uses: Hydra composition, quiet logs, one-line user errors.

    @stage_main("pretrain")
    def main(cfg): ...

- The config is composed from `conf/<config_name>.yaml` (Hydra: overrides, `-m` multirun, `--cfg job`).
- The project's error kinds (pipelines/errors.py: config, corpus, bad record, checkpoint, missing path; and
  cluster/errors.py's ClusterError) print one
  line — `error: <what, where, what to do>` — and exit with status 2, without a traceback. Other exceptions are
  bugs: they keep Hydra's traceback (the whole of it with HYDRA_FULL_ERROR=1, which also shows user errors' traces).
- A run that already finished (RunFinishedError) is no mistake: its message is printed as `notice: ...` and the
  stage exits with status 0, so a script or pipeline can re-run a stage safely (the lifecycle keeps such runs too).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import hydra
from omegaconf import DictConfig

from cluster.errors import ClusterError  # not cluster.connect: a stage without Ray must not import it
from pipelines.errors import RunFinishedError, UserError

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXIT_USER_ERROR = 2


def stage_main(config_name: str) -> Callable:
    """Decorate a stage's `main(cfg)`: `python -m pipelines.<stage> key=value ...` composes `config_name`."""

    def decorate(fn: Callable[[DictConfig], object]) -> Callable:
        @functools.wraps(fn)
        def task(cfg: DictConfig):
            try:
                return fn(cfg)
            except RunFinishedError as done:
                print(f"notice: {one_line(done)}", file=sys.stderr, flush=True)
                return None
            except (UserError, ClusterError) as error:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
                sys.exit(EXIT_USER_ERROR)

        return hydra.main(config_path=CONF_DIR, config_name=config_name, version_base=None)(task)

    return decorate


def one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())

