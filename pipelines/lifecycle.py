"""The whole life so far, one command: `python -m pipelines.lifecycle` (what `make demo` runs).

Builds the built-in corpus, tokenizer and shards (reused when present), pre-trains the decoder on the embedded
Ray cluster, then prints greedy completions of cloze prompts from the built-in facts and the cloze accuracy.
"""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig

from cluster.connect import connect
from pipelines.evaluate import evaluate, print_report
from pipelines.pretrain import load_shards
from pipelines.trainer import print_summary, run_training


@hydra.main(config_path="../conf", config_name="lifecycle", version_base=None)
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    connect(cfg.cluster)
    manifest = load_shards(cfg)
    outcome = run_training(cfg, stage="pretrain", manifest=manifest, init_from=cfg.init_from)
    print_summary(outcome)
    report = evaluate(cfg, outcome.final_dir, valid_files=manifest["splits"]["valid"]["files"])
    print_report(report, show=cfg.eval.show)
    print(f"lifecycle finished in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
