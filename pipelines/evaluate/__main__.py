"""`python -m pipelines.evaluate checkpoint=<run or checkpoint> [eval.suites=[cloze,qa]]`: see the package docstring."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pipelines import checkpoints, storage
from pipelines.entry import stage_main
from pipelines.evaluate import EVAL_FILE, evaluate
from pipelines.evaluate.report import print_report


@stage_main("evaluate")
def main(cfg: DictConfig) -> None:
    # Before Ray starts: no `checkpoint=`, a missing path or a directory without a checkpoint is one line.
    checkpoints.check(None if OmegaConf.is_missing(cfg, "checkpoint") else cfg.checkpoint)
    report = evaluate(cfg, cfg.checkpoint)
    print_report(report, show=cfg.eval.show)
    print(f"report: {storage.join(report['checkpoint'], EVAL_FILE)}")


if __name__ == "__main__":
    main()
